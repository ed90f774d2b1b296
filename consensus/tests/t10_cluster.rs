//! Three servers on loopback TCP: formation, writes, reads, leader loss, restart, partitions.

mod common;

use std::time::Duration;

use common::{Cluster, default_config, get, wait_until};
use tribune_consensus::{BootstrapStatus, ConsensusError, ReadMode};

const T: Duration = Duration::from_secs(10);

/// bootstrap_expect: servers fed their peers in different orders and at different times form
/// exactly one cluster, initialized by exactly one server (the lowest id), with all as voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_expect_forms_one_cluster_whatever_the_discovery_order() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let all = c.discovered_all();
    // Server 3 sees only itself and 2 at first: not enough.
    let partial = c.server(3).discovered(&all[1..]).await.unwrap();
    assert_eq!(
        partial,
        BootstrapStatus::Waiting {
            known: 2,
            expected: 3
        }
    );
    // Every server sees all three, each in its own order.
    let orders = [vec![2usize, 0, 1], vec![1, 2, 0], vec![0, 1, 2]];
    let mut statuses = Vec::new();
    for (server, order) in [3u64, 2, 1].into_iter().zip(orders) {
        let list: Vec<_> = order.iter().map(|&i| all[i].clone()).collect();
        statuses.push(c.server(server).discovered(&list).await.unwrap());
    }
    assert_eq!(statuses[0], BootstrapStatus::NotChosen { bootstrapper: 1 });
    assert_eq!(statuses[1], BootstrapStatus::NotChosen { bootstrapper: 1 });
    assert_eq!(
        statuses[2],
        BootstrapStatus::Bootstrapped {
            voters: vec![1, 2, 3]
        }
    );
    let leader = c.wait_leader(T).await;
    for s in c.running() {
        let peers: Vec<_> = s.peers().into_iter().map(|(id, _)| id).collect();
        wait_until(T, "membership replicated", || {
            (s.peers().len() == 3).then_some(())
        })
        .await;
        assert!(peers.len() <= 3);
        // Once a server has state, discovery never bootstraps it again.
        assert_eq!(
            s.discovered(&all).await.unwrap(),
            BootstrapStatus::AlreadyInitialized
        );
    }
    assert!(
        c.running().iter().filter(|s| s.is_leader()).count() == 1,
        "one leader: {leader}"
    );
}

/// A bootstrapper that finds a peer already holding Raft state backs off instead of forming a
/// second cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_backs_off_when_a_peer_has_state() {
    let mut c = Cluster::new(4, default_config);
    c.start_all().await;
    let all = c.discovered_all();
    // Servers 2, 3, 4 form a cluster among themselves (2 is their lowest id).
    c.server(2).discovered(&all[1..]).await.unwrap();
    c.server(2)
        .raft()
        .wait(Some(T))
        .current_leader(2, "2 leads")
        .await
        .unwrap();
    wait_until(T, "3 and 4 have state", || {
        (c.server(3).leader().is_some() && c.server(4).leader().is_some()).then_some(())
    })
    .await;
    // Server 1, pristine, now sees all four and would be the bootstrapper: it must not.
    let status = c.server(1).discovered(&all).await.unwrap();
    assert!(
        matches!(status, BootstrapStatus::PeerHasState { .. }),
        "{status:?}"
    );
    assert!(!c.server(1).raft().is_initialized().await.unwrap());
}

/// Writes on the leader and on a follower (forwarded) commit; the three read modes behave as
/// documented on leader and follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_in_each_mode() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (l, f) = (c.server(leader), c.server(follower));

    let w1 = l.write(b"a=1".as_slice()).await.unwrap();
    assert_eq!(w1.response.as_ref(), b"");
    let w2 = f.write(b"a=2".as_slice()).await.unwrap();
    assert_eq!(
        w2.response.as_ref(),
        b"1",
        "forwarded write returns the state machine's answer"
    );
    assert!(w2.index > w1.index);
    let bad = f.write(b"no-equals-sign".as_slice()).await.unwrap();
    assert_eq!(bad.response.as_ref(), b"bad command");

    // Consistent on the leader: sees the last acknowledged write.
    assert_eq!(
        l.read(ReadMode::Consistent, get("a")).await.unwrap().as_deref(),
        Some("2")
    );
    // Default on the leader: allowed.
    assert_eq!(
        l.read(ReadMode::Default, get("a")).await.unwrap().as_deref(),
        Some("2")
    );
    // Default and consistent on a follower: refused with a leader hint.
    for mode in [ReadMode::Default, ReadMode::Consistent] {
        match f.read(mode, get("a")).await {
            Err(ConsensusError::NotLeader {
                leader: hint,
                leader_info,
            }) => {
                assert_eq!(hint, Some(leader));
                assert_eq!(leader_info.unwrap().rpc_addr, l.local_addr().to_string());
            }
            other => panic!("{mode:?} on a follower: {other:?}"),
        }
    }
    // Stale on a follower: local state, which catches up.
    c.wait_applied(bad.log_index, T).await;
    assert_eq!(
        f.read(ReadMode::Stale, get("a")).await.unwrap().as_deref(),
        Some("2")
    );
    // Status queries.
    assert_eq!(f.leader().map(|(id, _)| id), Some(leader));
    assert_eq!(f.peers().len(), 3);
    assert_eq!(l.last_contact(), Some(Duration::ZERO));
    assert!(f.last_contact().is_some_and(|d| d < Duration::from_secs(2)));
}

/// Kill the leader: a new one is elected, accepts writes, and every write acknowledged before
/// the kill is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_keeps_every_acknowledged_write() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let follower = c.server((1..=3).find(|&i| i != leader).unwrap());
    // Concurrent writers through a follower, some in flight when the leader dies.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let f = follower.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                match f.write(format!("k{w}-{i}=v").into_bytes()).await {
                    Ok(_) => acked.push(format!("k{w}-{i}")),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    // Let some writes commit, then kill the leader.
    wait_until(T, "some writes applied", || {
        (follower.applied_index() > 40).then_some(())
    })
    .await;
    c.stop(leader).await;
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty());
    let new_leader = c.wait_leader(T).await;
    assert_ne!(new_leader, leader);
    let nl = c.server(new_leader);
    nl.write(b"after=1".as_slice()).await.unwrap();
    let missing: Vec<_> = nl
        .read(ReadMode::Consistent, move |m| {
            acked
                .iter()
                .filter(|k| !m.map.contains_key(*k))
                .cloned()
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
}

/// Stop every server and start them again over the same disks: the state is intact and the
/// cluster works without bootstrapping again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_every_server_from_disk() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let mut last = 0;
    for i in 0..50 {
        last = c
            .server(leader)
            .write(format!("k{i}={i}").into_bytes())
            .await
            .unwrap()
            .log_index;
    }
    c.wait_applied(last, T).await;
    for id in 1..=3 {
        c.stop(id).await;
    }
    c.start_all().await;
    // No discovery input: the servers come back from their own state.
    let leader = c.wait_leader(T).await;
    let l = c.server(leader);
    let w = l.write(b"k50=50".as_slice()).await.unwrap();
    assert!(w.log_index > last);
    let all = l.read(ReadMode::Consistent, |m| m.map.len()).await.unwrap();
    assert_eq!(all, 51);
    c.wait_applied(w.log_index, T).await;
    for s in c.running() {
        let v = s.read(ReadMode::Stale, get("k7")).await.unwrap();
        assert_eq!(v.as_deref(), Some("7"));
        assert_eq!(
            s.discovered(&c.discovered_all()).await.unwrap(),
            BootstrapStatus::AlreadyInitialized
        );
    }
}

fn snapshot_often(id: u64) -> tribune_consensus::ConsensusConfig {
    let mut c = default_config(id);
    c.snapshot_after_logs = 40;
    c.logs_kept_after_snapshot = 0;
    c
}

/// A server added after the leader purged its log catches up by snapshot, then follows the log;
/// promoted, it votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_after_purge_catches_up_by_snapshot() {
    let mut c = Cluster::new(3, snapshot_often);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let l = c.server(leader);
    let mut last = 0;
    for i in 0..120 {
        last = l.write(format!("k{i}={i}").into_bytes()).await.unwrap().log_index;
    }
    // Automatic snapshots ran during the writes; trigger more (a trigger that lands while a
    // build is running is dropped) until the leader has purged a good part of its log.
    let mut purged = 0;
    for _ in 0..20 {
        l.raft().trigger().snapshot().await.unwrap();
        let waited = l
            .raft()
            .wait(Some(Duration::from_millis(500)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= 60),
                "leader purged its log",
            )
            .await;
        if let Ok(m) = waited {
            purged = m.purged.unwrap().index;
            break;
        }
    }
    assert!(purged >= 60, "the leader never purged its log");
    let new_id = c.add_slot();
    let n = c.start(new_id).await;
    l.add_server(new_id, n.node_info()).await.unwrap();
    let nm = n
        .raft()
        .wait(Some(T))
        .applied_index_at_least(Some(last), "new server caught up")
        .await
        .unwrap();
    assert!(
        nm.snapshot.is_some_and(|s| s.index >= purged),
        "caught up by snapshot: {:?}",
        nm.snapshot
    );
    assert_eq!(
        n.read(ReadMode::Stale, get("k3")).await.unwrap().as_deref(),
        Some("3")
    );
    assert_eq!(n.read(ReadMode::Stale, |m| m.map.len()).await.unwrap(), 120);
    // It follows the log after the snapshot too.
    let w = l.write(b"late=1".as_slice()).await.unwrap();
    n.raft()
        .wait(Some(T))
        .applied_index_at_least(Some(w.log_index), "late write")
        .await
        .unwrap();
    assert_eq!(
        n.read(ReadMode::Stale, get("late")).await.unwrap().as_deref(),
        Some("1")
    );
    assert!(l.peers().iter().any(|(id, _)| *id == new_id), "promoted to voter");
}

/// The leader cut off with no follower (a minority of one) cannot commit; the majority elects a
/// new leader and commits; after healing, the old leader's uncommitted write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition_cannot_commit() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    c.faults.partition(&[leader], &others);
    let old = c.server(leader);
    let attempt = tokio::time::timeout(Duration::from_secs(2), old.write(b"lost=1".as_slice())).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "a minority committed: {attempt:?}");
    // The majority side elects a leader among itself and commits.
    let majority = c.server(others[0]);
    let new_leader = wait_until(T, "majority leader", || {
        majority
            .leader()
            .map(|(id, _)| id)
            .filter(|id| *id != leader && c.server(*id).is_leader())
    })
    .await;
    let w = c.server(new_leader).write(b"kept=1".as_slice()).await.unwrap();
    c.faults.heal();
    let agreed = c.wait_leader(T).await;
    assert_ne!(agreed, leader);
    c.wait_applied(w.log_index, T).await;
    for s in c.running() {
        assert_eq!(s.read(ReadMode::Stale, get("lost")).await.unwrap(), None);
        assert_eq!(
            s.read(ReadMode::Stale, get("kept")).await.unwrap().as_deref(),
            Some("1")
        );
    }
}

/// One-way isolation: the leader can receive but not send. Followers stop hearing it, elect a
/// new leader, and the old one steps down when the new leader's messages reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_isolation_of_the_leader() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    c.faults.isolate_outbound(leader, &others);
    let follower = c.server(others[0]);
    let new_leader = wait_until(T, "new leader", || {
        follower
            .leader()
            .map(|(id, _)| id)
            .filter(|id| *id != leader && c.server(*id).is_leader())
    })
    .await;
    let old = c.server(leader);
    wait_until(T, "old leader steps down", || (!old.is_leader()).then_some(())).await;
    let w = c.server(new_leader).write(b"x=1".as_slice()).await.unwrap();
    old.raft()
        .wait(Some(T))
        .applied_index_at_least(Some(w.log_index), "old leader follows")
        .await
        .unwrap();
    assert_eq!(
        old.read(ReadMode::Stale, get("x")).await.unwrap().as_deref(),
        Some("1")
    );
}

/// Lossy, duplicating, slow links: writes still commit exactly once each, and servers converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_drops_duplicates_and_delay() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    c.faults
        .only_kind(Some(tribune_consensus::RpcKind::AppendEntries));
    c.faults.drop_every(Some(7));
    c.faults.set_duplicate(true);
    c.faults.set_delay(Some(Duration::from_millis(3)));
    let l = c.server(leader);
    let mut last = 0;
    for i in 0..30 {
        last = l.write(format!("k{i}={i}").into_bytes()).await.unwrap().log_index;
    }
    c.faults.heal();
    c.wait_applied(last, T).await;
    for s in c.running() {
        let (len, dup) = s
            .read(ReadMode::Stale, |m| {
                let mut idx = m.applied_indexes.clone();
                let n = idx.len();
                idx.dedup();
                (m.map.len(), n != idx.len())
            })
            .await
            .unwrap();
        assert_eq!(len, 30);
        assert!(!dup, "an index was applied twice");
    }
}

/// After snapshots and purges, a full restart rebuilds each state machine from its snapshot file
/// plus the remaining log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_snapshot_restores_from_the_snapshot_file() {
    let mut c = Cluster::new(3, snapshot_often);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let mut last = 0;
    for i in 0..100 {
        last = c
            .server(leader)
            .write(format!("k{i}={i}").into_bytes())
            .await
            .unwrap()
            .log_index;
    }
    c.wait_applied(last, T).await;
    for s in c.running() {
        // A trigger that arrives while a policy-driven build runs is ignored: trigger again
        // until a snapshot covers the writes.
        let deadline = std::time::Instant::now() + T;
        loop {
            s.raft().trigger().snapshot().await.unwrap();
            let built = s
                .raft()
                .wait(Some(Duration::from_millis(500)))
                .metrics(|m| m.snapshot.is_some_and(|x| x.index >= 60), "snapshot built")
                .await;
            if built.is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no snapshot covers the writes"
            );
        }
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
    c.start_all().await;
    let leader = c.wait_leader(T).await;
    let w = c.server(leader).write(b"after=1".as_slice()).await.unwrap();
    c.wait_applied(w.log_index, T).await;
    for s in c.running() {
        assert_eq!(s.read(ReadMode::Stale, |m| m.map.len()).await.unwrap(), 101);
        assert_eq!(
            s.read(ReadMode::Stale, get("k99")).await.unwrap().as_deref(),
            Some("99")
        );
    }
}

/// Writes that arrive together share log entries (the leader's proposer batches them), yet each
/// command gets its own index, one more than the previous, on every server; the count carries on
/// across a full restart and into a server that caught up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_writes_get_consecutive_command_indexes_everywhere() {
    const WRITES: usize = 600;
    const SEQUENTIAL: u64 = 50;
    let mut c = Cluster::new(3, snapshot_often);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let mut tasks = Vec::new();
    for i in 0..WRITES {
        // A third go through a follower, which forwards them to the leader's proposer.
        let s = c.server(if i % 3 == 0 { follower } else { leader });
        tasks.push(tokio::spawn(async move {
            s.write(format!("k{i}={i}").into_bytes()).await.unwrap()
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    let mut indexes: Vec<u64> = written.iter().map(|w| w.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (1..=WRITES as u64).collect::<Vec<_>>());
    let mut entries: Vec<u64> = written.iter().map(|w| w.log_index).collect();
    entries.sort_unstable();
    entries.dedup();
    assert!(
        entries.len() <= WRITES / 2,
        "{WRITES} concurrent writes took {} log entries: not batched",
        entries.len()
    );
    let last_entry = *entries.last().unwrap();
    c.wait_applied(last_entry, T).await;
    for s in c.running() {
        let (len, applied) = s
            .read(ReadMode::Stale, |m| (m.map.len(), m.applied_indexes.clone()))
            .await
            .unwrap();
        assert_eq!(len, WRITES);
        assert_eq!(
            applied,
            (1..=WRITES as u64).collect::<Vec<_>>(),
            "server {}",
            s.id()
        );
    }

    // Every server takes a snapshot, so the restart restores from it and replays the rest.
    for s in c.running() {
        s.raft().trigger().snapshot().await.unwrap();
        s.raft()
            .wait(Some(T))
            .metrics(|m| m.snapshot.is_some(), "snapshot built")
            .await
            .unwrap();
    }
    for id in 1..=3 {
        c.stop(id).await;
    }
    c.start_all().await;
    let leader = c.wait_leader(T).await;
    let l = c.server(leader);
    // One at a time, so each takes an entry of its own: enough entries for the purge below.
    let mut w = None;
    for i in 1..=SEQUENTIAL {
        let written = l.write(format!("after{i}=restart").into_bytes()).await.unwrap();
        assert_eq!(written.index, WRITES as u64 + i);
        w = Some(written);
    }
    assert!(w.is_some());

    // A new server catches up by snapshot (logs_kept_after_snapshot is 0) and counts on from it.
    l.raft().trigger().snapshot().await.unwrap();
    l.raft()
        .wait(Some(T))
        .metrics(|m| m.purged.is_some_and(|p| p.index > 0), "leader purged its log")
        .await
        .unwrap();
    let new_id = c.add_slot();
    let n = c.start(new_id).await;
    l.add_server(new_id, n.node_info()).await.unwrap();
    let late = l.write(b"late=1".as_slice()).await.unwrap();
    let late_index = WRITES as u64 + SEQUENTIAL + 1;
    assert_eq!(late.index, late_index);
    let nm = n
        .raft()
        .wait(Some(T))
        .applied_index_at_least(Some(late.log_index), "new server caught up")
        .await
        .unwrap();
    assert!(nm.snapshot.is_some(), "the new server caught up by snapshot");
    let (len, applied) = n
        .read(ReadMode::Stale, |m| (m.map.len(), m.applied_indexes.clone()))
        .await
        .unwrap();
    assert_eq!(len, WRITES + SEQUENTIAL as usize + 1);
    // What the snapshot did not cover was applied from the log, numbered on from the snapshot.
    let first = applied[0];
    assert!(
        first > WRITES as u64,
        "the snapshot covered the batched writes: {applied:?}"
    );
    assert_eq!(applied, (first..=late_index).collect::<Vec<_>>());
}
