//! Operator endpoints: `/v1/snapshot` save and restore, `/v1/operator/raft/*`, `/v1/agent/token/*`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, Reply, pool_agent, request, start_leader, wait_for};
use serde_json::json;
use tribune::Node;
use tribune::config::{Config, DefaultPolicy};

const ROOT: &str = "d0c0ffee-0000-4000-8000-000000000001";

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &[u8]) -> Reply {
    request(http.0, method, path, &[("X-Consul-Token", token)], body).await
}

fn acl_server() -> Config {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    config
}

/// Waits until the leader installed the initial management token.
async fn management_ready(http: &Client) {
    wait_for(
        "the initial management token",
        Duration::from_secs(10),
        || async { call(http, "GET", "/v1/acl/token/self", ROOT, b"").await.status == 200 },
    )
    .await;
}

/// A token whose only policy is `rules`.
async fn token_with(http: &Client, name: &str, rules: &str) -> String {
    let policy = json!({"Name": name, "Rules": rules}).to_string();
    let created = call(http, "PUT", "/v1/acl/policy", ROOT, policy.as_bytes()).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let token = json!({"Policies": [{"Name": name}]}).to_string();
    let created = call(http, "PUT", "/v1/acl/token", ROOT, token.as_bytes()).await;
    assert_eq!(created.status, 200, "{}", created.text());
    created.json()["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_saved_snapshot_restores_the_state_it_was_taken_at() {
    let node = start_leader(acl_server()).await;
    let http = Client::of(&node);
    management_ready(&http).await;
    for (key, value) in [("app/a", "1"), ("app/b", "2")] {
        let put = call(&http, "PUT", &format!("/v1/kv/{key}"), ROOT, value.as_bytes()).await;
        assert_eq!(put.text(), "true");
    }
    let reader_token = token_with(&http, "kv-only", r#"key_prefix "" { policy = "write" }"#).await;

    // Snapshots need acl = "write": a KV-writer is refused, management is served.
    let denied = call(&http, "GET", "/v1/snapshot", &reader_token, b"").await;
    assert_eq!(
        (denied.status, denied.text().as_str()),
        (403, "Permission denied")
    );
    let saved = call(&http, "GET", "/v1/snapshot", ROOT, b"").await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    let inspection = tribune_snapshot::verify(saved.body.as_slice()).expect("a verified archive");
    assert_eq!(saved.index(), inspection.meta.index);
    assert_eq!(inspection.meta.datacenter, "dc1");
    let configuration = call(
        &http,
        "GET",
        "/v1/operator/raft/configuration",
        &reader_token,
        b"",
    )
    .await;
    assert_eq!(configuration.status, 403, "operator:read is needed");
    let configuration = call(&http, "GET", "/v1/operator/raft/configuration", ROOT, b"").await;
    assert_eq!(configuration.json()["Servers"][0]["Leader"], true);
    assert!(configuration.json()["Index"].as_u64().unwrap() > 0);
    let stale = call(&http, "GET", "/v1/snapshot?stale", ROOT, b"").await;
    assert_eq!(stale.status, 200);

    // Change the state after the save.
    assert_eq!(
        call(&http, "PUT", "/v1/kv/app/a", ROOT, b"changed").await.text(),
        "true"
    );
    assert_eq!(
        call(&http, "PUT", "/v1/kv/app/c", ROOT, b"3").await.text(),
        "true"
    );
    assert_eq!(
        call(&http, "DELETE", "/v1/kv/app/b", ROOT, b"").await.text(),
        "true"
    );

    // A tampered archive is refused before anything is proposed; so is a restore by a non-manager.
    let mut tampered = saved.body.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let refused = call(&http, "PUT", "/v1/snapshot", ROOT, &tampered).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    let refused = call(&http, "PUT", "/v1/snapshot", &reader_token, &saved.body).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        call(&http, "GET", "/v1/kv/app/a?raw", ROOT, b"").await.body,
        b"changed"
    );

    // A blocked reader is woken by the restore.
    let index = call(&http, "GET", "/v1/kv/app/?recurse", ROOT, b"").await.index();
    let blocked = tokio::spawn(async move {
        call(
            &http,
            "GET",
            &format!("/v1/kv/app/?recurse&index={index}&wait=30s"),
            ROOT,
            b"",
        )
        .await
    });
    let restored = call(&http, "PUT", "/v1/snapshot", ROOT, &saved.body).await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    assert!(restored.body.is_empty());
    let woke = blocked.await.unwrap();
    assert_eq!(woke.status, 200);

    let after = call(&http, "GET", "/v1/kv/app/?recurse", ROOT, b"").await.json();
    let keys: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["Key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/a", "app/b"]);
    assert_eq!(call(&http, "GET", "/v1/kv/app/a?raw", ROOT, b"").await.body, b"1");
    // Tokens come back with the state; writes go on after the restore.
    assert_eq!(
        call(&http, "GET", "/v1/kv/app/a", &reader_token, b"")
            .await
            .status,
        200
    );
    assert_eq!(
        call(&http, "PUT", "/v1/kv/app/d", ROOT, b"4").await.text(),
        "true"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn snapshots_work_without_acls_and_refuse_garbage() {
    let node = start_leader(Config::dev()).await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/k", b"v").await.text(), "true");
    let saved = http.get("/v1/snapshot").await;
    assert_eq!(saved.status, 200);
    assert!(http.put("/v1/snapshot", b"not an archive").await.status == 400);
    assert_eq!(http.put("/v1/snapshot?stale", &saved.body).await.status, 400);
    assert_eq!(
        http.put("/v1/snapshot", &saved.body[..saved.body.len() - 1])
            .await
            .status,
        400
    );
    assert_eq!(http.get("/v1/kv/k?raw").await.body, b"v");
    assert_eq!(http.put("/v1/snapshot", &saved.body).await.status, 200);
    assert_eq!(http.get("/v1/kv/k?raw").await.body, b"v");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_a_follower_reaches_every_server() {
    let s1 = Node::start(pool_agent("s1", true, &[])).await.unwrap();
    let s2 = Node::start(pool_agent("s2", true, &[&s1])).await.unwrap();
    let s3 = Node::start(pool_agent("s3", true, &[&s1, &s2])).await.unwrap();
    let nodes = [&s1, &s2, &s3];
    wait_for("a leader every server knows", Duration::from_secs(15), || async {
        let leaders: Vec<Option<String>> = nodes.iter().map(|n| n.leader()).collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    let follower = Client::of(nodes.iter().find(|n| !n.is_leader()).unwrap());
    assert_eq!(follower.put("/v1/kv/restored", b"before").await.text(), "true");
    let saved = follower.get("/v1/snapshot").await;
    assert_eq!(saved.status, 200);
    assert_eq!(follower.put("/v1/kv/restored", b"after").await.text(), "true");

    // Operator view of the configuration, from a follower.
    let configuration = follower.get("/v1/operator/raft/configuration").await;
    assert_eq!(configuration.status, 200, "{}", configuration.text());
    let servers = configuration.json()["Servers"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 3);
    assert_eq!(servers.iter().filter(|s| s["Leader"] == true).count(), 1);
    assert!(servers.iter().all(|s| s["Voter"] == true));

    assert_eq!(follower.put("/v1/snapshot", &saved.body).await.status, 200);
    for node in nodes {
        let http = Client::of(node);
        wait_for(
            "the restored value everywhere",
            Duration::from_secs(10),
            || async { http.get("/v1/kv/restored?stale&raw").await.body == b"before" },
        )
        .await;
    }

    // Removing a follower by address (sent to the other follower, which forwards to the leader).
    let leaving = nodes.iter().filter(|n| !n.is_leader()).nth(1).unwrap();
    let path = format!("/v1/operator/raft/peer?address={}", leaving.rpc_addr());
    let removed = request(follower.0, "DELETE", &path, &[], b"").await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    // It is still alive in the LAN pool, so the leader's reconciliation adds it back, as Consul's
    // does: a learner first, then a voter.
    let leader = Client::of(nodes.iter().find(|n| n.is_leader()).unwrap());
    wait_for(
        "the removed server back as a voter",
        Duration::from_secs(30),
        || async {
            let servers = leader.get("/v1/operator/raft/configuration").await.json()["Servers"].clone();
            servers
                .as_array()
                .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["Voter"] == true))
        },
    )
    .await;
    let missing = request(leader.0, "DELETE", "/v1/operator/raft/peer?id=12345", &[], b"").await;
    assert_eq!(missing.status, 500);
    for node in [s1, s2, s3] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn the_agent_s_default_token_serves_requests_without_one() {
    let node = start_leader(acl_server()).await;
    let http = Client::of(&node);
    management_ready(&http).await;
    assert_eq!(
        call(&http, "PUT", "/v1/kv/shared", ROOT, b"v").await.text(),
        "true"
    );
    let reader = token_with(&http, "reader", r#"key_prefix "" { policy = "read" }"#).await;
    assert_eq!(http.get("/v1/kv/shared").await.status, 403);

    let body = json!({ "Token": reader }).to_string();
    let refused = call(&http, "PUT", "/v1/agent/token/default", &reader, body.as_bytes()).await;
    assert_eq!(refused.status, 403, "acl:write is needed");
    let unknown = call(&http, "PUT", "/v1/agent/token/nonsense", ROOT, body.as_bytes()).await;
    assert_eq!(unknown.status, 404);
    let garbage = call(&http, "PUT", "/v1/agent/token/default", ROOT, b"{").await;
    assert_eq!(garbage.status, 400);
    let set = call(&http, "PUT", "/v1/agent/token/default", ROOT, body.as_bytes()).await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(http.get("/v1/kv/shared?raw").await.body, b"v");
    assert_eq!(http.put("/v1/kv/shared", b"w").await.status, 403, "read only");
    for legacy in ["acl_agent_token", "agent_recovery", "replication"] {
        let path = format!("/v1/agent/token/{legacy}");
        assert_eq!(call(&http, "PUT", &path, ROOT, body.as_bytes()).await.status, 200);
    }
    // Clearing the default token brings back the anonymous token.
    let clear = json!({ "Token": "" }).to_string();
    assert_eq!(
        call(&http, "PUT", "/v1/agent/token/default", ROOT, clear.as_bytes())
            .await
            .status,
        200
    );
    assert_eq!(http.get("/v1/kv/shared").await.status, 403);
    node.shutdown().await;
}
