//! ACLs on a development server: bootstrap, policies and tokens, enforcement and filtering.

mod common;

use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::json;
use std::time::Duration;
use tribune::config::{Config, DefaultPolicy};

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

fn acl_server(initial_management: Option<&str>) -> Config {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = initial_management.map(str::to_owned);
    config
}

#[tokio::test]
async fn bootstrap_policies_tokens_and_enforcement() {
    let node = start_leader(acl_server(None)).await;
    let http = Client::of(&node);

    // Anonymous requests are denied under default_policy = deny; unknown tokens are "ACL not found".
    let denied = http.put("/v1/kv/app/x", b"v").await;
    assert_eq!(
        (denied.status, denied.text().as_str()),
        (403, "Permission denied")
    );
    assert_eq!(denied.header("x-consul-default-acl-policy"), Some("deny"));
    let unknown = call(&http, "GET", "/v1/kv/app/x", "no-such-secret", "").await;
    assert_eq!((unknown.status, unknown.text().as_str()), (403, "ACL not found"));

    let boot = http.put("/v1/acl/bootstrap", b"").await;
    assert_eq!(boot.status, 200, "{}", boot.text());
    let root = boot.json()["SecretID"].as_str().unwrap_or_default().to_owned();
    assert_eq!(boot.json()["Policies"][0]["Name"], "global-management");
    assert_eq!(
        http.put("/v1/acl/bootstrap", b"").await.status,
        403,
        "bootstrap works once"
    );

    // The management token may do everything.
    for key in ["app/a", "app/b", "secret/s"] {
        assert_eq!(
            call(&http, "PUT", &format!("/v1/kv/{key}"), &root, "v")
                .await
                .text(),
            "true"
        );
    }
    let me = call(&http, "GET", "/v1/acl/token/self", &root, "").await;
    assert_eq!(me.json()["SecretID"], root.as_str());

    // A policy that reads app/ and writes app/a only.
    let rules = "key_prefix \"app/\" {\n  policy = \"read\"\n}\nkey \"app/a\" {\n  policy = \"write\"\n}\n";
    let policy = call(
        &http,
        "PUT",
        "/v1/acl/policy",
        &root,
        &json!({"Name": "app-reader", "Rules": rules}).to_string(),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let bad = call(
        &http,
        "PUT",
        "/v1/acl/policy",
        &root,
        &json!({"Name": "bad", "Rules": "nonsense {"}).to_string(),
    )
    .await;
    assert_eq!(bad.status, 400);
    let token = call(
        &http,
        "PUT",
        "/v1/acl/token",
        &root,
        &json!({"Description": "app", "Policies": [{"Name": "app-reader"}]}).to_string(),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let app = token.json()["SecretID"].as_str().unwrap_or_default().to_owned();
    let accessor = token.json()["AccessorID"].as_str().unwrap_or_default().to_owned();

    assert_eq!(call(&http, "GET", "/v1/kv/app/b?raw", &app, "").await.body, b"v");
    assert_eq!(call(&http, "GET", "/v1/kv/secret/s", &app, "").await.status, 403);
    assert_eq!(call(&http, "PUT", "/v1/kv/app/a", &app, "w").await.text(), "true");
    assert_eq!(call(&http, "PUT", "/v1/kv/app/b", &app, "w").await.status, 403);
    // Recursive reads are filtered to readable keys.
    let all = call(&http, "GET", "/v1/kv/?recurse", &app, "").await;
    let listed = all.json();
    let keys: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["Key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["app/a", "app/b"]);
    assert_eq!(
        call(&http, "GET", "/v1/kv/secret/?recurse", &app, "")
            .await
            .status,
        404
    );
    // Deleting a tree needs write on the whole subtree.
    assert_eq!(
        call(&http, "DELETE", "/v1/kv/app/?recurse", &app, "")
            .await
            .status,
        403
    );
    // Other ways to present a token.
    let bearer = request(
        http.0,
        "GET",
        "/v1/kv/app/b",
        &[("Authorization", &format!("Bearer {app}"))],
        b"",
    )
    .await;
    assert_eq!(bearer.status, 200);
    assert_eq!(http.get(&format!("/v1/kv/app/b?token={app}")).await.status, 200);
    // ACL management needs acl = write.
    assert_eq!(call(&http, "GET", "/v1/acl/tokens", &app, "").await.status, 403);
    let listed = call(&http, "GET", "/v1/acl/policies", &root, "").await;
    assert!(
        listed
            .json()
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["Name"] == "app-reader"))
    );

    // A deleted token no longer resolves.
    assert_eq!(
        call(&http, "DELETE", &format!("/v1/acl/token/{accessor}"), &root, "")
            .await
            .text(),
        "true"
    );
    assert_eq!(
        call(&http, "GET", "/v1/kv/app/b", &app, "").await.text(),
        "ACL not found"
    );
    // Status needs no token.
    assert_eq!(http.get("/v1/status/leader").await.status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn the_initial_management_token_is_installed_by_the_leader() {
    let node = start_leader(acl_server(Some("root-secret"))).await;
    let http = Client::of(&node);
    wait_for(
        "the initial management token",
        Duration::from_secs(10),
        || async { call(&http, "PUT", "/v1/kv/k", "root-secret", "v").await.status == 200 },
    )
    .await;
    assert_eq!(
        http.get("/v1/acl/token/self?token=root-secret").await.json()["Policies"][0]["Name"],
        "global-management"
    );
    // The initial management token was the bootstrap: an anonymous caller gets no second one.
    let again = http.put("/v1/acl/bootstrap", b"").await;
    assert_eq!(again.status, 403, "{}", again.text());
    assert!(
        again.text().contains("ACL bootstrap no longer allowed"),
        "{}",
        again.text()
    );
    node.shutdown().await;
}

#[tokio::test]
async fn acl_endpoints_say_so_when_acls_are_disabled() {
    let node = start_leader(Config::dev()).await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/acl/bootstrap", b"").await.status, 401);
    assert_eq!(http.get("/v1/kv/anything").await.status, 404, "no token needed");
    node.shutdown().await;
}
