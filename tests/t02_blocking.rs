//! Blocking queries: a GET with `?index=` parks until the data changes past that index or `wait` passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, dev_server, wait_for};
use tokio::time::Instant;
use tribune::NodeHandle;

/// Waits until `count` blocking queries are parked on the node.
async fn parked(node: &NodeHandle, count: usize) {
    wait_for("the blocking read to park", Duration::from_secs(10), || async {
        node.parked_blocking_queries() == count
    })
    .await;
}

#[tokio::test]
async fn a_blocked_read_returns_when_the_key_changes() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/watched", b"v1").await.text(), "true");
    let index = http.get("/v1/kv/watched").await.index();

    let reader =
        tokio::spawn(async move { http.get(&format!("/v1/kv/watched?index={index}&wait=15s")).await });
    parked(&node, 1).await;
    // The reader must still be parked: nothing changed yet.
    assert!(
        !reader.is_finished(),
        "a blocking read returned before any change"
    );

    assert_eq!(http.put("/v1/kv/watched", b"v2").await.text(), "true");
    let woke = reader.await.unwrap();
    assert_eq!(woke.status, 200);
    assert!(woke.index() > index);
    assert_eq!(woke.json()[0]["ModifyIndex"].as_u64(), Some(woke.index()));
    node.shutdown().await;
}

/// A read parked on a key that does not exist yet, at the index its 404 answered, wakes when the
/// key is created (a missing key answers the KV table's index, as Consul) — on a fresh server too,
/// where the empty table answers 1 and the key's creation is the first KV write.
#[tokio::test]
async fn a_blocked_read_on_a_missing_key_wakes_when_the_key_is_created() {
    for write_first in [false, true] {
        a_missing_key_is_watched_into_existence(write_first).await;
    }
}

async fn a_missing_key_is_watched_into_existence(write_first: bool) {
    let node = dev_server().await;
    let http = Client::of(&node);
    if write_first {
        assert_eq!(http.put("/v1/kv/elsewhere", b"1").await.text(), "true");
    }
    let missing = http.get("/v1/kv/later").await;
    assert_eq!(missing.status, 404);
    let index = missing.index();
    let reader = tokio::spawn(async move { http.get(&format!("/v1/kv/later?index={index}&wait=15s")).await });
    let started = Instant::now();
    parked(&node, 1).await;
    assert!(
        !reader.is_finished(),
        "a read on a missing key returned before it was created"
    );
    assert_eq!(http.put("/v1/kv/later", b"now").await.text(), "true");
    let woke = reader.await.unwrap();
    assert_eq!(woke.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the read woke only at the wait's end"
    );
    assert!(woke.index() > index);
    node.shutdown().await;
}

#[tokio::test]
async fn a_blocked_prefix_read_sees_a_delete() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/dir/a", b"1").await.text(), "true");
    assert_eq!(http.put("/v1/kv/dir/b", b"2").await.text(), "true");
    let index = http.get("/v1/kv/dir/?recurse").await.index();
    let reader = tokio::spawn(async move {
        http.get(&format!("/v1/kv/dir/?recurse&index={index}&wait=15s"))
            .await
    });
    assert_eq!(http.delete("/v1/kv/dir/b").await.text(), "true");
    let woke = reader.await.unwrap();
    assert_eq!(woke.json().as_array().unwrap().len(), 1);
    assert!(woke.index() > index, "the tombstone raises the prefix's index");
    node.shutdown().await;
}

#[tokio::test]
async fn a_blocked_read_times_out_after_wait_plus_jitter() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/quiet", b"v").await.text(), "true");
    let index = http.get("/v1/kv/quiet").await.index();
    let started = Instant::now();
    let reply = http.get(&format!("/v1/kv/quiet?index={index}&wait=400ms")).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.index(), index);
    assert!(took >= Duration::from_millis(400), "returned after {took:?}");
    // wait + wait/16 of jitter, plus generous slack for a loaded machine.
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_blocked_readers() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/k", b"v").await.text(), "true");
    let index = http.get("/v1/kv/k").await.index();
    let reader = tokio::spawn(async move { http.get(&format!("/v1/kv/k?index={index}&wait=10m")).await });
    parked(&node, 1).await;
    let started = Instant::now();
    node.shutdown().await;
    let reply = reader.await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
}
