//! Three servers in one process form a cluster through `bootstrap_expect = 3` and `retry_join` (LAN gossip); writes
//! sent to any server are forwarded to the leader, and reads on followers follow the consistency modes.

mod common;

use std::time::Duration;

use common::{Client, three_server_dc, wait_for};
use tribune::NodeHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_form_a_cluster_and_serve_any_request() {
    let nodes = three_server_dc(Duration::from_secs(15)).await;
    assert_eq!(nodes.iter().filter(|n| n.is_leader()).count(), 1);
    let followers: Vec<&NodeHandle> = nodes.iter().filter(|n| !n.is_leader()).collect();
    let (f1, f2) = (Client::of(followers[0]), Client::of(followers[1]));

    let peers = f1.get("/v1/status/peers").await.json();
    assert_eq!(peers.as_array().unwrap().len(), 3);

    // A write on a follower goes through the leader; a default read on another follower waits for
    // the leader's read index, so it sees the write at once.
    assert_eq!(f1.put("/v1/kv/cluster/key", b"v1").await.text(), "true");
    let read = f2.get("/v1/kv/cluster/key").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-consul-knownleader"), Some("true"));
    let index = read.index();
    assert_eq!(f2.get("/v1/kv/cluster/key?consistent&raw").await.body, b"v1");

    // A blocking read on a follower wakes when a write through the other follower is applied there.
    let reader = tokio::spawn(async move {
        f2.get(&format!("/v1/kv/cluster/key?index={index}&wait=15s"))
            .await
    });
    assert_eq!(f1.put("/v1/kv/cluster/key", b"v2").await.text(), "true");
    let woke = reader.await.unwrap();
    assert!(woke.index() > index);

    // Sessions and locks through a follower: the leader owns lock-delay and timers.
    let session = f1.put("/v1/session/create", b"").await.json()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        f2.put(&format!("/v1/kv/cluster/lock?acquire={session}"), b"x")
            .await
            .text(),
        "true"
    );

    // Stale reads are served locally, without the leader.
    wait_for(
        "the stale read on a follower to catch up",
        Duration::from_secs(5),
        || async { f2.get("/v1/kv/cluster/lock?stale").await.status == 200 },
    )
    .await;

    for node in nodes {
        node.shutdown().await;
    }
}
