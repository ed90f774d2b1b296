//! `GET /v1/kv/<prefix>?recurse&changes-since=N`, Tribune's delta read: what it answers after puts,
//! deletes and tree deletes, blocking, the fall back to an ordinary recursive read when the delta
//! cannot be proven complete (after a snapshot restore), ACL filtering, and the same through `?dc=`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Reply, dev_server, request, start_leader, wait_for, wan_server};
use serde_json::json;
use tribune::config::{Config, DefaultPolicy};

const LIMIT: Duration = Duration::from_secs(30);
const HEADER: &str = "x-tribune-changes-since";

/// `(Key, ModifyIndex)` pairs.
type Pairs = Vec<(String, u64)>;

/// `(Key, ModifyIndex)` of the delta's `Changed` and `Deleted`, after checking it is one.
fn delta(reply: &Reply, since: u64) -> (Pairs, Pairs) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header(HEADER),
        Some(since.to_string().as_str()),
        "{reply:?}"
    );
    let body = reply.json();
    let pairs = |field: &str| -> Pairs {
        body[field]
            .as_array()
            .unwrap_or_else(|| panic!("no {field} in {body}"))
            .iter()
            .map(|e| {
                (
                    e["Key"].as_str().unwrap().to_owned(),
                    e["ModifyIndex"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    (pairs("Changed"), pairs("Deleted"))
}

fn keys_of(reply: &Reply) -> Vec<String> {
    reply
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("an ordinary recursive read: {}", reply.text()))
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_owned())
        .collect()
}

fn owned(pairs: &[(&str, u64)]) -> Pairs {
    pairs.iter().map(|(k, i)| ((*k).to_owned(), *i)).collect()
}

async fn put(http: &Client, key: &str, value: &str) -> u64 {
    let reply = http.put(&format!("/v1/kv/{key}"), value.as_bytes()).await;
    assert_eq!(reply.text(), "true");
    http.get(&format!("/v1/kv/{key}")).await.index()
}

#[tokio::test]
async fn a_delta_after_puts_deletes_and_tree_deletes() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let a = put(&http, "app/a", "1").await;
    let b = put(&http, "app/b", "1").await;
    let d1 = put(&http, "app/d/1", "1").await;
    let d2 = put(&http, "app/d/2", "1").await;
    put(&http, "other/x", "1").await;

    // From 0: every entry, nothing deleted, the index of the recursive read.
    let full = http.get("/v1/kv/app/?recurse").await;
    let from_zero = http.get("/v1/kv/app/?recurse&changes-since=0").await;
    assert_eq!(
        delta(&from_zero, 0),
        (
            owned(&[("app/a", a), ("app/b", b), ("app/d/1", d1), ("app/d/2", d2)]),
            vec![]
        )
    );
    assert_eq!(from_zero.index(), full.index());
    assert_eq!(from_zero.header("x-consul-knownleader"), Some("true"));
    assert_eq!(
        from_zero.json()["Changed"][0]["Value"],
        "MQ==",
        "DirEntry as /v1/kv writes it"
    );
    let since = full.index();

    let a2 = put(&http, "app/a", "2").await;
    assert_eq!(http.delete("/v1/kv/app/b").await.text(), "true");
    // A missing key reads back with the index of the KV table: the delete's.
    let deleted_b = http.get("/v1/kv/app/b").await.index();
    assert_eq!(http.delete("/v1/kv/app/d/?recurse").await.text(), "true");
    let tree = http.get("/v1/kv/app/d/?recurse").await.index();
    put(&http, "other/y", "1").await;
    let after = http
        .get(&format!("/v1/kv/app/?recurse&changes-since={since}"))
        .await;
    assert_eq!(
        delta(&after, since),
        (
            owned(&[("app/a", a2)]),
            owned(&[("app/b", deleted_b), ("app/d/1", tree), ("app/d/2", tree)])
        )
    );
    assert_eq!(after.index(), tree);

    // Nothing new: 200 with empty lists (not a 404), the prefix's index.
    let quiet = http
        .get(&format!("/v1/kv/app/?recurse&changes-since={tree}"))
        .await;
    assert_eq!(delta(&quiet, tree), (vec![], vec![]));
    assert_eq!(quiet.index(), tree);
    let empty = http.get("/v1/kv/nothing/?recurse&changes-since=0").await;
    assert_eq!(delta(&empty, 0), (vec![], vec![]));

    // A malformed value is refused; without `recurse` the parameter means nothing.
    let bad = http.get("/v1/kv/app/?recurse&changes-since=x").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().starts_with("Invalid changes-since"), "{}", bad.text());
    let single = http.get("/v1/kv/app/a?changes-since=x").await;
    assert_eq!((single.status, single.header(HEADER)), (200, None));
    assert_eq!(single.json()[0]["Key"], "app/a");
    node.shutdown().await;
}

#[tokio::test]
async fn a_blocking_delta_wakes_on_a_change_under_its_prefix() {
    let node = dev_server().await;
    let http = Client::of(&node);
    put(&http, "app/a", "1").await;
    let index = http.get("/v1/kv/app/?recurse").await.index();
    let waiter = tokio::spawn(async move {
        http.get(&format!(
            "/v1/kv/app/?recurse&changes-since={index}&index={index}&wait=20s"
        ))
        .await
    });
    wait_for("the delta read parked", LIMIT, || async {
        node.parked_blocking_queries() >= 1
    })
    .await;
    let b = put(&http, "app/b", "1").await;
    let woke = waiter.await.unwrap();
    assert_eq!(delta(&woke, index), (owned(&[("app/b", b)]), vec![]));
    assert_eq!(woke.index(), b);
    node.shutdown().await;
}

#[tokio::test]
async fn a_delta_the_server_cannot_prove_is_an_ordinary_recursive_read() {
    let node = dev_server().await;
    let http = Client::of(&node);
    put(&http, "app/a", "1").await;
    put(&http, "app/b", "1").await;
    assert_eq!(http.delete("/v1/kv/app/b").await.text(), "true");
    let before = http.get("/v1/kv/app/?recurse").await.index();
    // A restore replaces the state: no tombstone from before it is trusted any more.
    let saved = http.get("/v1/snapshot").await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    let restored = http.put("/v1/snapshot", &saved.body).await;
    assert_eq!(restored.status, 200, "{}", restored.text());

    let fallback = http
        .get(&format!("/v1/kv/app/?recurse&changes-since={}", before - 1))
        .await;
    assert_eq!((fallback.status, fallback.header(HEADER)), (200, None));
    assert_eq!(keys_of(&fallback), ["app/a"]);
    assert_eq!(fallback.index(), before);

    // After the restore, deltas are answered again.
    let c = put(&http, "app/c", "1").await;
    assert_eq!(c, http.get("/v1/kv/app/?recurse").await.index());
    let answered = http.get(&format!("/v1/kv/app/?recurse&changes-since={c}")).await;
    assert_eq!(delta(&answered, c), (vec![], vec![]));
    assert_eq!(http.delete("/v1/kv/app/a").await.text(), "true");
    let answered = http.get(&format!("/v1/kv/app/?recurse&changes-since={c}")).await;
    assert_eq!(delta(&answered, c).1.len(), 1);
    node.shutdown().await;
}

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &str) -> Reply {
    request(
        http.0,
        method,
        path,
        &[("X-Consul-Token", token)],
        body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn a_delta_is_filtered_by_key_read() {
    const ROOT: &str = "root-secret-for-t33";
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    let node = start_leader(config).await;
    let http = Client::of(&node);
    wait_for("the initial management token", LIMIT, || async {
        call(&http, "GET", "/v1/acl/token/self", ROOT, "").await.status == 200
    })
    .await;
    let rules =
        "key_prefix \"app/\" { policy = \"read\" }\nkey_prefix \"app/private/\" { policy = \"deny\" }\n";
    let policy = call(
        &http,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({"Name": "app-reader", "Rules": rules}).to_string(),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let token = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Policies": [{"Name": "app-reader"}]}).to_string(),
    )
    .await;
    let reader = token.json()["SecretID"].as_str().unwrap().to_owned();
    for key in ["app/a", "app/b", "app/private/p", "app/private/q"] {
        assert_eq!(
            call(&http, "PUT", &format!("/v1/kv/{key}"), ROOT, "1")
                .await
                .text(),
            "true"
        );
    }
    let since = call(&http, "GET", "/v1/kv/app/?recurse", ROOT, "").await.index();
    for key in ["app/a", "app/private/p"] {
        assert_eq!(
            call(&http, "PUT", &format!("/v1/kv/{key}"), ROOT, "2")
                .await
                .text(),
            "true"
        );
    }
    for key in ["app/b", "app/private/q"] {
        assert_eq!(
            call(&http, "DELETE", &format!("/v1/kv/{key}"), ROOT, "")
                .await
                .text(),
            "true"
        );
    }
    let path = format!("/v1/kv/app/?recurse&changes-since={since}");
    let (changed, deleted) = delta(&call(&http, "GET", &path, &reader, "").await, since);
    let names = |pairs: &[(String, u64)]| pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(
        (names(&changed), names(&deleted)),
        (vec!["app/a".to_owned()], vec!["app/b".to_owned()])
    );
    let (changed, deleted) = delta(&call(&http, "GET", &path, ROOT, "").await, since);
    assert_eq!(
        (names(&changed), names(&deleted)),
        (
            vec!["app/a".to_owned(), "app/private/p".to_owned()],
            vec!["app/b".to_owned(), "app/private/q".to_owned()]
        )
    );
    // Without `acl.enable_key_list_policy` there is no list gate: anonymous sees an empty delta.
    assert_eq!(delta(&http.get(&path).await, since), (vec![], vec![]));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_through_dc_carries_its_query_and_header_both_ways() {
    let dc1 = start_leader(wan_server("dc1", "a", &[])).await;
    let dc2 = start_leader(wan_server("dc2", "b", &[&dc1])).await;
    let (c1, c2) = (Client::of(&dc1), Client::of(&dc2));
    wait_for("dc1 routed to from dc2", LIMIT, || async {
        c2.get("/v1/kv/nothing?dc=dc1").await.status == 404
    })
    .await;
    put(&c1, "app/a", "1").await;
    put(&c1, "app/b", "1").await;
    let since = c1.get("/v1/kv/app/?recurse").await.index();
    let a2 = put(&c1, "app/a", "2").await;
    assert_eq!(c1.delete("/v1/kv/app/b").await.text(), "true");
    let deleted = c1.get("/v1/kv/app/?recurse").await.index();

    let path = format!("/v1/kv/app/?recurse&changes-since={since}&dc=dc1");
    let remote = c2.get(&path).await;
    assert_eq!(
        delta(&remote, since),
        (owned(&[("app/a", a2)]), owned(&[("app/b", deleted)]))
    );
    assert_eq!(remote.index(), deleted);
    // dc2's own prefix is empty: the answer came from dc1.
    assert_eq!(c2.get("/v1/kv/app/?recurse").await.status, 404);

    // Blocking in dc1, through dc2.
    let waiter = tokio::spawn(async move {
        c2.get(&format!(
            "/v1/kv/app/?recurse&changes-since={deleted}&index={deleted}&wait=20s&dc=dc1&stale"
        ))
        .await
    });
    wait_for("the delta read parked in dc1", LIMIT, || async {
        dc1.parked_blocking_queries() >= 1
    })
    .await;
    let c = put(&c1, "app/c", "1").await;
    let woke = waiter.await.unwrap();
    assert_eq!(delta(&woke, deleted), (owned(&[("app/c", c)]), vec![]));
    assert_eq!(woke.header("x-consul-effective-consistency"), Some("stale"));

    dc2.shutdown().await;
    dc1.shutdown().await;
}
