//! `PUT /v1/txn`: all-or-nothing KV transactions.

mod common;

use base64::Engine as _;
use common::{Client, dev_server};
use serde_json::json;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_transaction_commits_or_rolls_back_as_a_whole() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let body = json!([
        {"KV": {"Verb": "set", "Key": "t/a", "Value": b64("1")}},
        {"KV": {"Verb": "set", "Key": "t/b", "Value": b64("2"), "Flags": 7}},
        {"KV": {"Verb": "get", "Key": "t/a"}},
    ]);
    let reply = http.put("/v1/txn", body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json()["Results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert!(results[0]["KV"]["Value"].is_null(), "set results carry no value");
    assert_eq!(results[2]["KV"]["Value"], b64("1"));
    assert!(reply.json()["Errors"].is_null());

    let body = json!([
        {"KV": {"Verb": "set", "Key": "t/c", "Value": b64("3")}},
        {"KV": {"Verb": "check-not-exists", "Key": "t/a"}},
    ]);
    let reply = http.put("/v1/txn", body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let errors = reply.json()["Errors"].as_array().unwrap().clone();
    assert_eq!(errors[0]["OpIndex"], 1);
    assert!(reply.json()["Results"].is_null());
    assert_eq!(
        http.get("/v1/kv/t/c").await.status,
        404,
        "nothing of a rolled-back transaction is applied"
    );

    let tree = json!([{"KV": {"Verb": "delete-tree", "Key": "t/"}}]);
    assert_eq!(http.put("/v1/txn", tree.to_string().as_bytes()).await.status, 200);
    assert_eq!(http.get("/v1/kv/t/?recurse").await.status, 404);
    node.shutdown().await;
}

#[tokio::test]
async fn bad_transactions_are_refused_up_front() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let ops: Vec<_> = (0..129)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}"), "Value": b64("v")}}))
        .collect();
    let too_many = http.put("/v1/txn", json!(ops).to_string().as_bytes()).await;
    assert_eq!(too_many.status, 413);
    assert!(
        too_many.text().contains("too many operations"),
        "{}",
        too_many.text()
    );
    let unknown = json!([{"KV": {"Verb": "frobnicate", "Key": "k"}}]);
    assert_eq!(
        http.put("/v1/txn", unknown.to_string().as_bytes()).await.status,
        400
    );
    let node_op = json!([{"Node": {"Verb": "get", "Node": {"Node": "n"}}}]);
    assert_eq!(
        http.put("/v1/txn", node_op.to_string().as_bytes()).await.status,
        400
    );
    assert_eq!(http.put("/v1/txn", b"not json").await.status, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn a_read_only_transaction_is_served_without_a_log_entry() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/r/a", b"1").await.text(), "true");
    let index = http.get("/v1/kv/r/a").await.index();

    let reads = json!([
        {"KV": {"Verb": "get", "Key": "r/a"}},
        {"KV": {"Verb": "check-index", "Key": "r/a", "Index": index}},
        {"KV": {"Verb": "check-not-exists", "Key": "r/b"}},
        {"KV": {"Verb": "get-tree", "Key": "r/"}},
    ]);
    let reply = http.put("/v1/txn?stale", reads.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.index(), index);
    assert_eq!(reply.header("x-consul-knownleader"), Some("true"));
    let results = reply.json()["Results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["KV"]["Value"], b64("1"));
    assert!(results[1]["KV"]["Value"].is_null(), "checks carry no value");
    assert_eq!(results[2]["KV"]["Key"], "r/a");

    let failing = json!([{"KV": {"Verb": "get", "Key": "r/missing"}}]);
    let reply = http.put("/v1/txn", failing.to_string().as_bytes()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert_eq!(reply.json()["Errors"][0]["OpIndex"], 0);

    // Neither transaction took a log entry: the next write comes right after the first one.
    assert_eq!(http.put("/v1/kv/r/c", b"3").await.text(), "true");
    assert_eq!(http.get("/v1/kv/r/c").await.index(), index + 1);
    node.shutdown().await;
}
