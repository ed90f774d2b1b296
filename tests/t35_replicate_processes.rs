//! `tribune replicate` between datacenters of `tribune agent` processes, driven as a
//! consul-replicate user drives it: `-prefix src@dc1[:dest]`, `-exclude`, `-once`, `-lock`.
//!
//! - A large prefix (100,000 keys) is copied, the source leader is killed mid-pass, and updates,
//!   deletes and excluded keys written meanwhile end up exactly where they belong.
//! - `-once` replicates and exits; replicating from the local datacenter is refused.
//! - Two replicators race for one lock: one writes; when it is killed the other takes over.
//! - A source datacenter restarted empty (its data directory wiped) deletes nothing at the
//!   destination; `-force-deletes` then makes the destination follow it.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::federation::{Contents, Datacenter, Replicator, Write, contents, write_all};
use common::{Client, wait_for};
use serde_json::Value;

/// How long replication may take to converge after a change.
const CONVERGE: Duration = Duration::from_secs(120);

/// dc1 (`dc1_servers` servers) and dc2 (one server), WAN-joined and each with a leader.
async fn two_datacenters(root: &std::path::Path, dc1_servers: usize) -> (Datacenter, Datacenter) {
    let mut dc1 = Datacenter::new(root, "dc1", dc1_servers);
    let mut dc2 = Datacenter::new(root, "dc2", 1);
    dc2.join_wan(&dc1);
    dc1.join_wan(&dc2);
    dc1.start_all();
    dc2.start_all();
    dc1.wait_formed(&["dc1", "dc2"]).await;
    dc2.wait_formed(&["dc1", "dc2"]).await;
    (dc1, dc2)
}

/// `source` with `from` replaced by `to` in front of every key and `excluded` keys left out.
fn mapped(source: &Contents, from: &str, to: &str, excluded: &[&str]) -> Contents {
    source
        .iter()
        .filter(|(k, _)| !excluded.iter().any(|e| k.starts_with(e)))
        .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
        .collect()
}

/// Waits until `dest` under `dest_prefix` equals `expected`, reading with `?stale` so a large
/// prefix costs one read per round.
async fn wait_equal(dest: std::net::SocketAddr, dest_prefix: &str, expected: &Contents, what: &str) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let found = contents(dest, dest_prefix, "&stale").await;
        if &found == expected {
            return;
        }
        if Instant::now() > deadline {
            let missing = expected
                .keys()
                .filter(|k| !found.contains_key(*k))
                .take(5)
                .collect::<Vec<_>>();
            let extra = found
                .keys()
                .filter(|k| !expected.contains_key(*k))
                .take(5)
                .collect::<Vec<_>>();
            let differing = expected
                .iter()
                .filter(|(k, v)| found.get(*k).is_some_and(|f| f != *v))
                .map(|(k, _)| k)
                .take(5)
                .collect::<Vec<_>>();
            panic!(
                "{what}: after {CONVERGE:?} the destination has {} keys, {} expected; missing {missing:?}, \
                 extra {extra:?}, differing {differing:?}",
                found.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The status records under the default status directory in `addr`'s datacenter.
async fn statuses(addr: std::net::SocketAddr) -> Vec<Value> {
    let reply = Client(addr)
        .get("/v1/kv/service/consul-replicate/statuses/?recurse")
        .await;
    if reply.status == 404 {
        return Vec::new();
    }
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let raw = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                e["Value"].as_str().unwrap(),
            )
            .unwrap();
            let mut status: Value = serde_json::from_slice(&raw).unwrap();
            status["Key"] = e["Key"].clone();
            status
        })
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prefix_follows_its_source_through_a_leader_kill() {
    const KEYS: usize = 100_000;
    let root = tempfile::tempdir().unwrap();
    let (mut dc1, dc2) = two_datacenters(root.path(), 3).await;
    let source = dc1.any_http();
    let dest = dc2.any_http();

    let values: Vec<(String, Vec<u8>)> = (0..KEYS)
        .map(|i| (format!("big/k{i:06}"), format!("v0-{i}").into_bytes()))
        .collect();
    let writes: Vec<Write<'_>> = values
        .iter()
        .map(|(k, v)| Write::Set(k, v, 0))
        .chain((0..50).map(|_| Write::Set("big/skip/x", b"excluded", 0)))
        .collect();
    let started = Instant::now();
    write_all(source, &writes).await;
    println!("wrote {KEYS} keys into dc1 in {:?}", started.elapsed());
    // A key only the destination has (deleted: the destination follows the source) and one
    // outside the prefix (untouched).
    write_all(
        dest,
        &[
            Write::Set("big/dest-only", b"d", 0),
            Write::Set("other/keep", b"k", 0),
        ],
    )
    .await;

    let replicator = Replicator::spawn(
        &root.path().join("replicate.log"),
        &args(&[
            "-prefix",
            "big/@dc1",
            "-exclude",
            "big/skip/",
            "-consul",
            &dest.to_string(),
            "-log-level",
            "info",
        ]),
    );
    let first_pass = Instant::now();
    wait_for("the first keys in dc2", CONVERGE, || async {
        Client(dest).get("/v1/kv/big/k000000").await.status == 200
    })
    .await;
    // Kill dc1's leader while the pass is under way, then change the source through a survivor.
    let leader = dc1.leader().await.expect("dc1 has a leader");
    dc1.kill(leader);
    let copied = Client(dest)
        .get("/v1/kv/big/?keys")
        .await
        .json()
        .as_array()
        .map_or(0, Vec::len);
    println!("dc1's leader killed with {copied} of {KEYS} keys in dc2");
    let survivor = dc1.any_http();
    let updated: Vec<(String, Vec<u8>)> = (0..1_000)
        .map(|i| (format!("big/k{:06}", i * 7), format!("v1-{i}").into_bytes()))
        .collect();
    let deleted: Vec<String> = (0..1_000).map(|i| format!("big/k{:06}", i * 7 + 3)).collect();
    let mut changes: Vec<Write<'_>> = updated.iter().map(|(k, v)| Write::Set(k, v, 7)).collect();
    changes.extend(deleted.iter().map(|k| Write::Delete(k)));
    changes.push(Write::Set("big/skip/y", b"excluded too", 0));
    changes.push(Write::Set("big/new", b"new", 0));
    wait_for("dc1 to elect a new leader", CONVERGE, || async {
        Client(survivor).get("/v1/status/leader").await.text().trim() != "\"\""
    })
    .await;
    write_all(survivor, &changes).await;

    let expected = mapped(
        &contents(survivor, "big/", "").await,
        "big/",
        "big/",
        &["big/skip/"],
    );
    assert_eq!(expected.len(), KEYS - 1_000 + 1);
    wait_equal(dest, "big/", &expected, "after the leader kill").await;
    println!(
        "{KEYS} keys replicated and in step with the source after {:?}",
        first_pass.elapsed()
    );
    assert_eq!(
        contents(dest, "other/", "").await.len(),
        1,
        "keys outside the prefix stay"
    );

    let status = statuses(dest).await;
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(
        status[0]["Key"].as_str().unwrap().contains("/dc1/"),
        "the source datacenter is part of the status key: {status:?}"
    );
    assert_eq!(status[0]["SourceDatacenter"], "dc1");
    assert!(status[0]["LastReplicated"].as_u64().unwrap() > 0, "{status:?}");
    // The destination-only key was the whole destination at the first pass: deleting it was held
    // then (the log says why), and applied by a later pass once the prefix had filled.
    let log = replicator.output();
    assert!(
        log.contains("deletes held") && log.contains("exceed max_delete_fraction"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_locks_and_a_source_restarted_empty() {
    let root = tempfile::tempdir().unwrap();
    let (mut dc1, dc2) = two_datacenters(root.path(), 1).await;
    let source = dc1.any_http();
    let dest = dc2.any_http();
    let dest_arg = dest.to_string();

    // -once: replicates what is there and exits 0; a src@dc:dest mapping renames the prefix.
    let keys: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("app/k{i:03}"), format!("a{i}").into_bytes()))
        .collect();
    let writes: Vec<Write<'_>> = keys.iter().map(|(k, v)| Write::Set(k, v, 3)).collect();
    write_all(source, &writes).await;
    let once = common::process::binary()
        .args([
            "replicate",
            "-once",
            "-prefix",
            "app/@dc1:copy/",
            "-consul",
            &dest_arg,
        ])
        .output()
        .unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    assert_eq!(
        contents(dest, "copy/", "").await,
        mapped(&contents(source, "app/", "").await, "app/", "copy/", &[])
    );

    // The local datacenter cannot be the source.
    let local = common::process::binary()
        .args(["replicate", "-once", "-prefix", "app/@dc2", "-consul", &dest_arg])
        .output()
        .unwrap();
    assert!(!local.status.success());
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("local datacenter cannot be the source datacenter"),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );

    // Two replicators under one lock: the first writes, the second waits; the first killed, the
    // second takes over.
    let locked = args(&[
        "-prefix",
        "app/@dc1",
        "-consul",
        &dest_arg,
        "-lock",
        "locks/replicate",
        "-read-wait",
        "2s",
        "-log-level",
        "info",
    ]);
    let first = Replicator::spawn(&root.path().join("first.log"), &locked);
    wait_equal(
        dest,
        "app/",
        &contents(source, "app/", "").await,
        "under the first replicator",
    )
    .await;
    let holder = |reply: common::Reply| reply.json()[0]["Session"].as_str().map(str::to_owned);
    let first_session =
        holder(Client(dest).get("/v1/kv/locks/replicate/.lock").await).expect("the lock is held");
    let mut second = Replicator::spawn(&root.path().join("second.log"), &locked);
    write_all(source, &[Write::Set("app/k000", b"changed once", 3)]).await;
    wait_equal(
        dest,
        "app/",
        &contents(source, "app/", "").await,
        "a change under the first replicator",
    )
    .await;
    assert_eq!(
        holder(Client(dest).get("/v1/kv/locks/replicate/.lock").await).as_deref(),
        Some(first_session.as_str()),
        "the second replicator must wait"
    );
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "the second replicator waits, it does not exit"
    );
    drop(first); // SIGKILL: no clean release; its session expires.
    write_all(source, &[Write::Set("app/k001", b"changed after the kill", 3)]).await;
    wait_equal(
        dest,
        "app/",
        &contents(source, "app/", "").await,
        "after the lock holder died",
    )
    .await;
    let second_session =
        holder(Client(dest).get("/v1/kv/locks/replicate/.lock").await).expect("the lock is held");
    assert_ne!(
        second_session, first_session,
        "the second replicator holds the lock now"
    );

    // The source loses its data: wiped and restarted, dc1 answers an empty prefix at a low index.
    // Nothing may be deleted in dc2; new source keys still arrive; the held deletes are reported.
    let before = contents(dest, "app/", "").await;
    assert_eq!(before.len(), 200);
    dc1.kill(0);
    std::fs::remove_dir_all(&dc1.servers[0].data_dir).unwrap();
    dc1.start(0);
    dc1.wait_formed(&["dc1", "dc2"]).await;
    let source = dc1.any_http();
    wait_for("dc2 to see dc1's empty prefix", CONVERGE, || async {
        contents(dest, "app/", "&dc=dc1").await.is_empty()
    })
    .await;
    write_all(source, &[Write::Set("app/after-wipe", b"fresh", 0)]).await;
    wait_for("the new source key in dc2", CONVERGE, || async {
        Client(dest).get("/v1/kv/app/after-wipe").await.status == 200
    })
    .await;
    let after = contents(dest, "app/", "").await;
    assert_eq!(
        after.len(),
        201,
        "nothing deleted after the source came back empty"
    );
    wait_for("the held deletes in the status", CONVERGE, || async {
        statuses(dest)
            .await
            .iter()
            .any(|s| s["Source"] == "app/" && s["HeldDeletes"].as_u64().unwrap_or(0) > 0)
    })
    .await;
    second.signal("TERM");
    let stopped = Instant::now();
    while second.child.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "SIGTERM stops the replicator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        Client(dest).get("/v1/kv/locks/replicate/.lock").await.json()[0]["Session"],
        Value::Null,
        "a clean stop releases the lock"
    );

    // The operator decides the source is right: -force-deletes makes dc2 follow it.
    let forced = common::process::binary()
        .args([
            "replicate",
            "-once",
            "-force-deletes",
            "-prefix",
            "app/@dc1",
            "-consul",
            &dest_arg,
        ])
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(
        contents(dest, "app/", "").await,
        contents(source, "app/", "").await
    );
}
