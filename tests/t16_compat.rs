//! Consul compatibility that real applications depend on: Go's duration syntax in query strings and
//! bodies (Patroni's `wait=1.8982439041137695s`), Consul's status and wording for a session TTL out of
//! range, and the fields of `/v1/agent/self` that clients read.

mod common;

use std::time::{Duration, Instant};

use common::{Client, dev_server};

#[tokio::test]
async fn a_blocking_read_takes_a_wait_with_many_decimals() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/patroni/leader", b"pg-0").await.text(), "true");
    let index = http.get("/v1/kv/patroni/leader").await.index();

    let started = Instant::now();
    let reply = http
        .get(&format!(
            "/v1/kv/patroni/leader?index={index}&wait=1.8982439041137695s"
        ))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.index(), index, "nothing changed, so the index is the same");
    // 1.898 s plus up to 1/16 of it as jitter; well under a second over in any case.
    assert!(
        took >= Duration::from_millis(1890) && took < Duration::from_secs(3),
        "the read waited {took:?}"
    );

    // Other forms Go accepts: a combined one, a leading `+`, microseconds with the micro sign.
    for wait in ["0h0m0.2s", "%2B150ms", "200000%C2%B5s", ".1s"] {
        let reply = http
            .get(&format!("/v1/kv/patroni/leader?index={index}&wait={wait}"))
            .await;
        assert_eq!(reply.status, 200, "wait={wait}: {}", reply.text());
    }
    // What Go refuses stays a 400 that names the text.
    for wait in ["1d", "1.5", "-1s", "soon"] {
        let reply = http
            .get(&format!("/v1/kv/patroni/leader?index={index}&wait={wait}"))
            .await;
        assert_eq!(reply.status, 400, "wait={wait}");
        assert!(reply.text().starts_with("Invalid wait time"), "{}", reply.text());
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_session_ttl_out_of_range_is_consuls_500() {
    let node = dev_server().await;
    let http = Client::of(&node);
    for (ttl, shown) in [
        ("5s", "5s"),
        ("9.999s", "9.999s"),
        ("24h0m0.001s", "24h0m0.001s"),
        ("25h", "25h0m0s"),
    ] {
        let reply = http
            .put("/v1/session/create", format!(r#"{{"TTL":"{ttl}"}}"#).as_bytes())
            .await;
        assert_eq!(reply.status, 500, "TTL {ttl}: {}", reply.text());
        assert_eq!(
            reply.text(),
            format!("Invalid Session TTL '{shown}', must be between [10s=24h0m0s]")
        );
    }
    let reply = http.put("/v1/session/create", br#"{"TTL":"soon"}"#).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().starts_with("Session TTL 'soon' invalid"),
        "{}",
        reply.text()
    );

    // The edges and Go's decimal forms are accepted, and so is a fractional LockDelay.
    for ttl in ["10s", "24h", "15.5s", "0.5m", "1h30m"] {
        let reply = http
            .put(
                "/v1/session/create",
                format!(r#"{{"TTL":"{ttl}","LockDelay":"1.5s"}}"#).as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 200, "TTL {ttl}: {}", reply.text());
        let id = reply.json()["ID"].as_str().unwrap().to_owned();
        let info = http.get(&format!("/v1/session/info/{id}")).await.json();
        assert_eq!(info[0]["LockDelay"], 1_500_000_000u64, "TTL {ttl}");
    }
    let reply = http.put("/v1/session/create", br#"{"LockDelay":"1.5 s"}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    node.shutdown().await;
}
