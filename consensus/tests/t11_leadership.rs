//! Leadership under partitions: check-quorum, pre-vote, and what a cut-off leader answers.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, default_config, get, wait_until};
use tribune_consensus::{ConsensusError, ReadMode};

const T: Duration = Duration::from_secs(10);

fn term_of(s: &common::Server) -> u64 {
    s.raft().metrics().borrow().current_term
}

/// A leader cut off from both followers steps down by itself (check-quorum) without raising its
/// term; while cut off it answers default reads with "no leader" quickly instead of serving its
/// old state; after the heal it follows the leader the majority elected, which keeps leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_steps_down_and_rejoins_as_a_follower() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let old = c.server(leader);
    old.write(b"x=1".as_slice()).await.unwrap();
    let term = term_of(&old);
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    c.faults.partition(&[leader], &others);

    wait_until(T, "the cut-off leader steps down", || {
        (!old.is_leader()).then_some(())
    })
    .await;
    assert_eq!(term_of(&old), term, "stepping down must not raise the term");

    let new_leader = wait_until(T, "the majority elects a leader", || {
        others.iter().copied().find(|id| c.server(*id).is_leader())
    })
    .await;
    c.server(new_leader).write(b"x=2".as_slice()).await.unwrap();

    // The old leader must not serve its stale x=1 as a default read, and must say so promptly.
    let started = Instant::now();
    let read = old.read(ReadMode::Default, get("x")).await;
    assert!(
        matches!(
            read,
            Err(ConsensusError::NotLeader { .. } | ConsensusError::NoLeader)
        ),
        "a cut-off former leader answered a default read: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    let new_term = term_of(&c.server(new_leader));
    c.faults.heal();
    wait_until(T, "the old leader follows the new one", || {
        (old.leader().map(|(id, _)| id) == Some(new_leader)).then_some(())
    })
    .await;
    // The healed server does not depose the leader: same leader, same term, for a while.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let l = c.server(new_leader);
        assert!(l.is_leader(), "the healed server deposed the leader");
        assert_eq!(term_of(&l), new_term, "the term moved after the heal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        old.read(ReadMode::Default, get("x")).await.ok(),
        None,
        "a follower does not serve default reads itself"
    );
}

/// Pre-vote: a follower cut off for many election timeouts does not raise its term, so when the
/// partition heals the leader keeps leading in the same term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_returning_from_a_partition_does_not_depose_the_leader() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let rest: Vec<u64> = (1..=3).filter(|&i| i != follower).collect();
    let term = term_of(&c.server(leader));
    c.faults.partition(&[follower], &rest);
    // Many election timeouts (250-375 ms each) pass without a leader for the follower.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        term_of(&c.server(follower)),
        term,
        "the cut-off follower raised its term"
    );
    assert!(c.server(leader).is_leader(), "the majority side lost its leader");
    let w = c.server(leader).write(b"y=1".as_slice()).await.unwrap();
    c.faults.heal();
    c.server(follower)
        .raft()
        .wait(Some(T))
        .applied_index_at_least(Some(w.log_index), "the follower catches up")
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let l = c.server(leader);
        assert!(l.is_leader(), "the returning follower deposed the leader");
        assert_eq!(term_of(&l), term);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A default read on the leader covers every write acknowledged before it, on every server that
/// answers it: a follower asks the leader for its read point and waits to apply up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_reads_see_every_acknowledged_write() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let l = c.server(leader);
    for i in 0..50 {
        l.write(format!("k={i}").into_bytes()).await.unwrap();
        let seen = l.read(ReadMode::Default, get("k")).await.unwrap();
        assert_eq!(seen.as_deref(), Some(i.to_string().as_str()));
    }
}

/// After the leader is killed, the new leader answers default reads only once it has applied
/// everything the old one acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_serves_default_reads_only_after_applying_earlier_terms() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let l = c.server(leader);
    let mut last = String::new();
    for i in 0..100 {
        last = i.to_string();
        l.write(format!("z={i}").into_bytes()).await.unwrap();
    }
    c.stop(leader).await;
    let next = c.wait_leader(T).await;
    let read = wait_until(T, "a default read succeeds", || Some(c.server(next))).await;
    let value = loop {
        match read.read(ReadMode::Default, get("z")).await {
            Ok(v) => break v,
            Err(ConsensusError::NotLeader { .. } | ConsensusError::NoLeader) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(value.as_deref(), Some(last.as_str()));
}

/// The leader's write queue is bounded: a burst beyond it is refused at once with `Overloaded`,
/// and every write it accepted commits (none is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_write_queue_is_refused_and_nothing_accepted_is_lost() {
    fn small_queue(id: u64) -> tribune_consensus::ConsensusConfig {
        let mut c = default_config(id);
        c.max_queued_writes = 4;
        c.max_proposals_in_flight = 1;
        c
    }
    let mut c = Cluster::new(3, small_queue);
    c.start_all().await;
    let leader = c.bootstrap().await;
    // Slow replication so that proposals stay in flight while the burst arrives.
    c.faults
        .only_kind(Some(tribune_consensus::RpcKind::AppendEntries));
    c.faults.set_delay(Some(Duration::from_millis(30)));
    let l = c.server(leader);
    let writes: Vec<_> = (0..100)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move { (i, l.write(format!("b{i}=1").into_bytes()).await) })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for w in writes {
        let (i, result) = w.await.unwrap();
        match result {
            Ok(r) => accepted.push((i, r.log_index)),
            Err(ConsensusError::Overloaded { queued }) => {
                assert_eq!(queued, 4);
                refused.push(i);
            }
            Err(e) => panic!("write {i}: {e}"),
        }
    }
    c.faults.heal();
    assert!(!refused.is_empty(), "the burst never filled the queue");
    assert!(!accepted.is_empty());
    let last = accepted.iter().map(|(_, idx)| *idx).max().unwrap();
    c.wait_applied(last, T).await;
    for s in c.running() {
        for (i, _) in &accepted {
            assert_eq!(
                s.read(ReadMode::Stale, get(&format!("b{i}")))
                    .await
                    .unwrap()
                    .as_deref(),
                Some("1")
            );
        }
        for i in &refused {
            assert_eq!(
                s.read(ReadMode::Stale, get(&format!("b{i}"))).await.unwrap(),
                None
            );
        }
    }
}

/// A follower forwarding a write to a leader that went silent (paused, or cut off) gives up as
/// soon as it learns that the majority moved on, with "leader changed" (the write may or may not
/// have reached the old leader), instead of holding the client for the whole request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_silent_leader_ends_when_a_new_leader_is_known() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let follower_id = (1..=3).find(|&i| i != leader).unwrap();
    let follower = c.server(follower_id);
    follower.write(b"w=1".as_slice()).await.unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    c.faults.partition(&[leader], &others);

    let request_timeout = default_config(follower_id).request_timeout;
    let started = Instant::now();
    let result = follower.write(b"w=2".as_slice()).await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(ConsensusError::LeaderChanged { target }) if target == leader),
        "the forwarded write ended with {result:?}"
    );
    assert!(
        took < request_timeout / 2,
        "the forwarded write waited {took:?} (request timeout {request_timeout:?})"
    );
    let new_leader = follower.leader().map(|(id, _)| id);
    assert!(
        new_leader.is_none() || new_leader != Some(leader),
        "the follower still follows the silent leader"
    );
    // The next write goes to the new leader and succeeds.
    let mut written = None;
    let deadline = Instant::now() + T;
    while written.is_none() && Instant::now() < deadline {
        match follower.write(b"w=3".as_slice()).await {
            Ok(r) => written = Some(r),
            Err(ConsensusError::NoLeader | ConsensusError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        written.is_some(),
        "no write through the follower succeeded after the failover"
    );
}
