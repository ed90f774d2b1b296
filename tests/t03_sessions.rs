//! Sessions and locks: create, info, acquire and release, lock-delay, behaviors, TTL invalidation.

mod common;

use std::time::Duration;

use common::{Client, dev_server, start_leader, wait_for};
use tribune::config::Config;

/// Sends a PUT that Consul answers with `true` or `false`, and checks the answer is `expected`.
async fn put_answers(http: &Client, path: &str, body: &[u8], expected: bool) {
    let reply = http.put(path, body).await;
    assert_eq!(reply.text(), expected.to_string(), "PUT {path}: {reply:?}");
}

/// The length of the JSON list that a GET of `path` returns.
async fn list_len(http: &Client, path: &str) -> usize {
    let reply = http.get(path).await;
    match reply.json().as_array() {
        Some(items) => items.len(),
        None => panic!("GET {path}: not a list: {}", reply.text()),
    }
}

/// What `/v1/session/info/{id}` returns.
async fn session_info(http: &Client, id: &str) -> serde_json::Value {
    http.get(&format!("/v1/session/info/{id}")).await.json()
}

#[tokio::test]
async fn locks_follow_consul_semantics() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let first = http.create_session(r#"{"Name":"first","LockDelay":"0s"}"#).await;
    let second = http.create_session("").await;

    let info = session_info(&http, &first).await;
    assert_eq!(info[0]["ID"], first.as_str());
    assert_eq!(info[0]["Name"], "first");
    assert_eq!(info[0]["Node"], "dev");
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["LockDelay"], 0);
    let info = session_info(&http, &second).await;
    assert_eq!(
        info[0]["LockDelay"].as_u64(),
        Some(15_000_000_000),
        "Consul's default lock-delay"
    );
    assert_eq!(session_info(&http, "unknown").await, serde_json::json!([]));
    assert_eq!(list_len(&http, "/v1/session/list").await, 2);
    assert_eq!(list_len(&http, "/v1/session/node/dev").await, 2);
    assert_eq!(
        http.get("/v1/session/node/other").await.json(),
        serde_json::json!([])
    );

    put_answers(&http, &format!("/v1/kv/lock?acquire={first}"), b"held", true).await;
    put_answers(&http, &format!("/v1/kv/lock?acquire={second}"), b"x", false).await;
    put_answers(&http, &format!("/v1/kv/lock?release={second}"), b"x", false).await;
    let entry = http.get("/v1/kv/lock").await.json();
    assert_eq!(entry[0]["Session"], first.as_str());
    assert_eq!(entry[0]["LockIndex"], 1);
    put_answers(&http, &format!("/v1/kv/lock?release={first}"), b"free", true).await;
    let entry = http.get("/v1/kv/lock").await.json();
    assert!(entry[0].get("Session").is_none());
    assert_eq!(entry[0]["LockIndex"], 1);

    let invalid = http.put("/v1/kv/lock?acquire=no-such-session", b"x").await;
    assert_eq!(
        (invalid.status, invalid.text().as_str()),
        (500, "invalid session")
    );
    node.shutdown().await;
}

#[tokio::test]
async fn destroying_a_session_puts_its_keys_under_lock_delay() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let holder = http.create_session(r#"{"LockDelay":"10s"}"#).await;
    let other = http.create_session("").await;
    put_answers(&http, &format!("/v1/kv/leader?acquire={holder}"), b"me", true).await;
    put_answers(&http, &format!("/v1/session/destroy/{holder}"), b"", true).await;
    assert_eq!(session_info(&http, &holder).await, serde_json::json!([]));
    // The key was released (behavior "release") but stays locked against new holders for 10 s.
    let entry = http.get("/v1/kv/leader").await.json();
    assert!(entry[0].get("Session").is_none());
    put_answers(&http, &format!("/v1/kv/leader?acquire={other}"), b"me2", false).await;
    // Destroying an unknown session is fine.
    put_answers(&http, "/v1/session/destroy/unknown", b"", true).await;
    node.shutdown().await;
}

/// A destroy and an acquire by another session, sent at the same moment, many times: whenever the
/// acquire succeeds it came after the destroy (the key was held until then), so it must have been
/// refused by the lock-delay. The leader's lock-delay check and the destroy's apply must not
/// interleave (a check made before the destroy applied, for an acquire ordered after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_racing_a_destroy_never_slips_inside_the_lock_delay() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let contender = http.create_session("{}").await;
    for round in 0..150 {
        let key = format!("/v1/kv/race/{round}");
        let holder = http.create_session(r#"{"LockDelay": "15s"}"#).await;
        put_answers(&http, &format!("{key}?acquire={holder}"), b"", true).await;
        let destroy =
            tokio::spawn(async move { http.put(&format!("/v1/session/destroy/{holder}"), b"").await });
        let acquire = http.put(&format!("{key}?acquire={contender}"), b"").await;
        assert_eq!(destroy.await.unwrap().status, 200);
        assert_eq!(
            acquire.text(),
            "false",
            "round {round}: an acquire right after the destroy got the key inside its 15 s lock-delay"
        );
    }
}

#[tokio::test]
async fn delete_behavior_removes_held_keys() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let session = http
        .create_session(r#"{"Behavior":"delete","LockDelay":0}"#)
        .await;
    put_answers(&http, &format!("/v1/kv/eph?acquire={session}"), b"x", true).await;
    put_answers(&http, &format!("/v1/session/destroy/{session}"), b"", true).await;
    assert_eq!(http.get("/v1/kv/eph").await.status, 404);
    let bad = http.put("/v1/session/create", br#"{"Behavior":"explode"}"#).await;
    assert_eq!(bad.status, 400);
    let short = http.put("/v1/session/create", br#"{"TTL":"1s"}"#).await;
    // Consul answers an out-of-range TTL with a 500 that clients match on.
    assert_eq!(short.status, 500, "below session_ttl_min (10s)");
    assert_eq!(
        short.text(),
        "Invalid Session TTL '1s', must be between [10s=24h0m0s]"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn ttl_sessions_expire_unless_renewed() {
    let mut config = Config::dev();
    config.session_ttl_min = Duration::from_millis(500);
    let node = start_leader(config).await;
    let http = Client::of(&node);
    let kept = http.create_session(r#"{"TTL":"1s","LockDelay":"0s"}"#).await;
    let dropped = http.create_session(r#"{"TTL":"1s","LockDelay":"0s"}"#).await;
    put_answers(&http, &format!("/v1/kv/ttl?acquire={dropped}"), b"x", true).await;
    let renewed = http.put(&format!("/v1/session/renew/{kept}"), b"").await;
    assert_eq!(renewed.status, 200);
    assert_eq!(renewed.json()[0]["TTL"], "1s");
    assert_eq!(http.put("/v1/session/renew/unknown", b"").await.status, 404);

    // Renew `kept` while waiting for `dropped` to be invalidated (after 2 × TTL).
    wait_for(
        "the unrenewed session to expire",
        Duration::from_secs(10),
        || async {
            http.put(&format!("/v1/session/renew/{kept}"), b"").await;
            session_info(&http, &dropped).await == serde_json::json!([])
        },
    )
    .await;
    assert_eq!(session_info(&http, &kept).await[0]["ID"], kept.as_str());
    let entry = http.get("/v1/kv/ttl").await.json();
    assert!(
        entry[0].get("Session").is_none(),
        "the expired session's lock was released"
    );
    node.shutdown().await;
}
