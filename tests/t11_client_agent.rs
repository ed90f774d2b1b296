//! A client agent joins the LAN pool, holds no state, and serves Consul's API by handing requests
//! to live servers — to another one when a server is gone.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, pool_agent, wait_for};
use tribune::Node;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_forwards_to_live_servers() {
    let s1 = Node::start(pool_agent("s1", true, &[])).await.unwrap();
    let s2 = Node::start(pool_agent("s2", true, &[&s1])).await.unwrap();
    let s3 = Node::start(pool_agent("s3", true, &[&s1])).await.unwrap();
    let c = Node::start(pool_agent("c1", false, &[&s2])).await.unwrap();
    let client = Client::of(&c);
    wait_for("the client sees three servers and a leader", LIMIT, || async {
        let members = client.get("/v1/agent/members").await.json();
        let servers = members
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["Tags"]["role"] == "consul").count());
        servers == 3
            && !client
                .get("/v1/status/leader")
                .await
                .json()
                .as_str()
                .unwrap_or("")
                .is_empty()
    })
    .await;
    let me = client.get("/v1/agent/self").await.json();
    assert_eq!(me["Config"]["Server"], false);
    assert_eq!(me["Member"]["Tags"]["role"], "node");

    // Writes and reads through the client; the state lives on the servers.
    assert_eq!(client.put("/v1/kv/from/client", b"hello").await.text(), "true");
    assert_eq!(client.get("/v1/kv/from/client?raw").await.body, b"hello");
    assert_eq!(
        Client::of(&s1).get("/v1/kv/from/client?raw&stale").await.status,
        200
    );
    assert_eq!(client.get("/v1/kv/missing").await.status, 404);

    // A follower goes away: the client's requests still succeed, whichever server it tries first
    // (the pool still lists the stopped one as alive for a while).
    let (gone, _kept) = if s3.is_leader() { (s2, s3) } else { (s3, s2) };
    gone.shutdown().await;
    for i in 0..9 {
        let put = client.put(&format!("/v1/kv/after/{i}"), b"x").await;
        assert_eq!(put.text(), "true", "write {i} through the client");
        assert_eq!(client.get(&format!("/v1/kv/after/{i}?raw")).await.body, b"x");
    }

    // The client leaves gracefully: the servers report it left.
    assert_eq!(client.put("/v1/agent/leave", b"").await.status, 200);
    c.stopped().await;
    let c1 = Client::of(&s1);
    wait_for("the client reported left", LIMIT, || async {
        c1.get("/v1/agent/members")
            .await
            .json()
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["Name"] == "c1" && m["Status"] == 3))
    })
    .await;
    c.shutdown().await;
    s1.shutdown().await;
}
