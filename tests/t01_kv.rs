//! The KV endpoint of a development server, over HTTP: Consul's bodies, headers and status codes.

mod common;

use base64::Engine as _;
use common::{Client, dev_server};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn put_get_raw_and_missing_keys() {
    let node = dev_server().await;
    let http = Client::of(&node);

    let put = http.put("/v1/kv/app/config?flags=42", b"v1").await;
    assert_eq!((put.status, put.text().as_str()), (200, "true"));
    assert_eq!(put.header("x-consul-default-acl-policy"), Some("allow"));

    let got = http.get("/v1/kv/app/config").await;
    assert_eq!(got.status, 200);
    let entry = &got.json()[0];
    assert_eq!(entry["Key"], "app/config");
    assert_eq!(entry["Value"], b64("v1"));
    assert_eq!(entry["Flags"], 42);
    assert_eq!(entry["LockIndex"], 0);
    assert!(entry.get("Session").is_none());
    let modify = entry["ModifyIndex"].as_u64().unwrap();
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert_eq!(got.index(), modify);
    assert_eq!(got.header("x-consul-knownleader"), Some("true"));
    assert_eq!(got.header("x-consul-lastcontact"), Some("0"));
    assert_eq!(got.header("x-consul-default-acl-policy"), Some("allow"));
    assert_eq!(got.header("x-consul-effective-consistency"), Some("leader"));
    for (mode, name) in [("stale", "stale"), ("consistent", "consistent")] {
        let read = http.get(&format!("/v1/kv/app/config?{mode}")).await;
        assert_eq!(read.header("x-consul-effective-consistency"), Some(name));
    }

    let raw = http.get("/v1/kv/app/config?raw").await;
    assert_eq!((raw.status, raw.body.as_slice()), (200, b"v1".as_slice()));
    assert_eq!(raw.header("content-type"), Some("text/plain"));
    assert_eq!(raw.header("x-content-type-options"), Some("nosniff"));

    let missing = http.get("/v1/kv/app/nothing").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.is_empty());
    assert!(missing.index() >= 1, "X-Consul-Index is set (never 0) on a 404");

    let stale = http.get("/v1/kv/app/config?stale").await;
    assert_eq!(stale.status, 200);
    let consistent = http.get("/v1/kv/app/config?consistent").await;
    assert_eq!(consistent.status, 200);
    let both = http.get("/v1/kv/app/config?stale&consistent").await;
    assert_eq!(both.status, 400);

    // An empty value reads back as null.
    assert_eq!(http.put("/v1/kv/empty", b"").await.text(), "true");
    assert!(http.get("/v1/kv/empty").await.json()[0]["Value"].is_null());
    node.shutdown().await;
}

#[tokio::test]
async fn keys_are_percent_decoded_including_slashes() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/dir%2Fsub%20key", b"x").await.text(), "true");
    let got = http.get("/v1/kv/dir/sub%20key").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()[0]["Key"], "dir/sub key");
    // Keys Consul refuses: a leading slash, path traversal.
    assert_eq!(http.put("/v1/kv//lead", b"x").await.status, 400);
    assert_eq!(http.put("/v1/kv/a/..%2Fb", b"x").await.status, 400);
    // No key at all.
    assert_eq!(http.put("/v1/kv/", b"x").await.status, 400);
    assert_eq!(http.get("/v1/kv/").await.status, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn recurse_keys_and_separator() {
    let node = dev_server().await;
    let http = Client::of(&node);
    for key in ["web/a", "web/b", "web/sub/c", "web/sub/d", "other"] {
        assert_eq!(
            http.put(&format!("/v1/kv/{key}"), key.as_bytes()).await.text(),
            "true"
        );
    }
    let listed = http.get("/v1/kv/web/?recurse").await;
    assert_eq!(listed.status, 200);
    let keys: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["web/a", "web/b", "web/sub/c", "web/sub/d"]);
    let max_modify = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(listed.index(), max_modify);

    let rolled = http.get("/v1/kv/web/?keys&separator=/").await;
    assert_eq!(rolled.json(), serde_json::json!(["web/a", "web/b", "web/sub/"]));
    let all = http.get("/v1/kv/?keys").await;
    assert_eq!(all.json().as_array().unwrap().len(), 5);

    assert_eq!(http.get("/v1/kv/nope/?recurse").await.status, 404);
    assert_eq!(http.get("/v1/kv/nope/?keys").await.status, 404);

    // Deleting a tree needs nothing more than recurse; the index of the prefix does not slide back.
    let before = http.get("/v1/kv/web/?recurse").await.index();
    assert_eq!(http.delete("/v1/kv/web/sub/?recurse").await.text(), "true");
    let after = http.get("/v1/kv/web/?recurse").await;
    assert_eq!(after.json().as_array().unwrap().len(), 2);
    assert!(
        after.index() > before,
        "a delete raises the prefix's index (tombstones)"
    );
    assert_eq!(http.get("/v1/kv/other").await.status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn cas_flags_and_conflicting_parameters() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/c?cas=0", b"first").await.text(), "true");
    assert_eq!(http.put("/v1/kv/c?cas=0", b"again").await.text(), "false");
    let index = http.get("/v1/kv/c").await.index();
    assert_eq!(
        http.put(&format!("/v1/kv/c?cas={}", index + 100), b"x")
            .await
            .text(),
        "false"
    );
    assert_eq!(
        http.put(&format!("/v1/kv/c?cas={index}"), b"second").await.text(),
        "true"
    );
    assert_eq!(http.get("/v1/kv/c?raw").await.body, b"second");

    let index = http.get("/v1/kv/c").await.index();
    assert_eq!(
        http.delete(&format!("/v1/kv/c?cas={}", index + 1)).await.text(),
        "false"
    );
    assert_eq!(http.delete(&format!("/v1/kv/c?cas={index}")).await.text(), "true");
    assert_eq!(http.get("/v1/kv/c").await.status, 404);
    assert_eq!(
        http.delete("/v1/kv/c").await.text(),
        "true",
        "deleting a missing key is fine"
    );

    let conflict = http.put("/v1/kv/c?cas=0&acquire=abc", b"x").await;
    assert_eq!(conflict.status, 400);
    assert!(
        conflict.text().contains("Conflicting flags"),
        "{}",
        conflict.text()
    );
    assert_eq!(http.delete("/v1/kv/c?recurse&cas=3").await.status, 400);
    assert_eq!(http.put("/v1/kv/c?flags=-1", b"x").await.status, 400);
    assert_eq!(
        http.put("/v1/kv/c?flags=18446744073709551615", b"x").await.text(),
        "true"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn values_over_512_kib_are_refused_with_413() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let limit = 512 * 1024;
    assert_eq!(http.put("/v1/kv/big", &vec![b'a'; limit]).await.text(), "true");
    let refused = http.put("/v1/kv/big", &vec![b'a'; limit + 1]).await;
    assert_eq!(refused.status, 413);
    assert_eq!(http.get("/v1/kv/big?raw").await.body.len(), limit);
    node.shutdown().await;
}

#[tokio::test]
async fn status_agent_and_catalog_endpoints() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let rpc = node.rpc_addr().to_string();
    assert_eq!(http.get("/v1/status/leader").await.json(), serde_json::json!(rpc));
    assert_eq!(
        http.get("/v1/status/peers").await.json(),
        serde_json::json!([rpc])
    );
    assert_eq!(
        http.get("/v1/catalog/datacenters").await.json(),
        serde_json::json!(["dc1"])
    );
    let me = http.get("/v1/agent/self").await.json();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Config"]["NodeName"], "dev");
    assert_eq!(me["Member"]["Tags"]["role"], "consul");
    assert_eq!(http.get("/v1/nothing/here").await.status, 404);
    node.shutdown().await;
}
