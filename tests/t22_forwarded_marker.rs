//! The mark that a request was forwarded by another server comes only from the server-to-server
//! channel: a client that sends the old `X-Tribune-Forwarded` header to a follower still has its
//! write carried to the leader, which keeps the leader-only duties (session timers) in one place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, request, three_server_dc_with, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_forwarded_header_cannot_make_a_follower_serve_a_write() {
    let nodes = three_server_dc_with(LIMIT, |config| {
        // Short TTLs, so that the leader's session timer shows within the test's limits.
        config.session_ttl_min = Duration::from_secs(1);
    })
    .await;
    let follower = Client::of(nodes.iter().find(|n| !n.is_leader()).unwrap());
    let forged = [("X-Tribune-Forwarded", "1")];

    // A plain write with the header: carried to the leader, applied, readable on every server.
    let put = request(follower.0, "PUT", "/v1/kv/forged/key", &forged, b"v").await;
    assert_eq!((put.status, put.text().as_str()), (200, "true"));
    for node in &nodes {
        let http = Client::of(node);
        wait_for("the write on every server", LIMIT, || async {
            http.get("/v1/kv/forged/key?stale&raw").await.body == b"v"
        })
        .await;
    }

    // A session with a TTL created through the follower with the header is created like any
    // other and expires at twice its TTL. (This part passes with or without the fix: the leader's
    // timers are re-armed from the stored sessions; the unit test on the forwarding decision in
    // src/http/mod.rs is the one that fails without it.)
    let created = request(
        follower.0,
        "PUT",
        "/v1/session/create",
        &forged,
        br#"{"TTL": "1s", "LockDelay": "0s"}"#,
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["ID"].as_str().unwrap().to_owned();
    let leader = Client::of(nodes.iter().find(|n| n.is_leader()).unwrap());
    wait_for("the session's TTL to expire on the leader", LIMIT, || async {
        leader.get(&format!("/v1/session/info/{id}")).await.json() == serde_json::json!([])
    })
    .await;

    for node in nodes {
        node.shutdown().await;
    }
}
