//! ACL tokens as Consul manages them: the anonymous token as a stored record whose policies serve
//! requests without a token, clone, update (and what it may not change), `ExpirationTTL` /
//! `ExpirationTime` (expired tokens refused, then reaped by the leader), `Local`, and the
//! `/v1/acl/tokens` filters; then the same verbs through the `tribune acl token` command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::binary;
use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::config::{Config, DefaultPolicy};

const ROOT: &str = "4d1fd2b8-34a3-4b0a-9d4c-2a1f3c1c0001";
const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000002";

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &str) -> Reply {
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        Vec::new()
    } else {
        vec![("X-Consul-Token", token)]
    };
    request(http.0, method, path, &headers, body.as_bytes()).await
}

/// A dev server with ACLs on (default deny) and an initial management token; token lifetimes may be
/// as short as `min_ttl` so that expiry can be watched in a test.
fn acl_server(min_ttl: Duration) -> Config {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    config.acl.token_min_expiration_ttl = min_ttl;
    config
}

async fn tokens(http: &Client, query: &str) -> Vec<Value> {
    let reply = call(http, "GET", &format!("/v1/acl/tokens{query}"), ROOT, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().cloned().unwrap()
}

fn accessors(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|t| t["AccessorID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clone_update_filters_and_expiry() {
    let node = start_leader(acl_server(Duration::from_millis(500))).await;
    let http = Client::of(&node);
    wait_for(
        "the initial management and anonymous tokens",
        Duration::from_secs(10),
        || async {
            let reply = call(&http, "GET", "/v1/acl/tokens", ROOT, "").await;
            reply.status == 200 && reply.json().as_array().is_some_and(|l| l.len() == 2)
        },
    )
    .await;

    // The anonymous token is a record: listed, readable, Consul's identifiers and description.
    let anonymous = call(&http, "GET", &format!("/v1/acl/token/{ANONYMOUS}"), ROOT, "").await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    let record = anonymous.json();
    assert_eq!(
        (record["SecretID"].as_str(), record["Description"].as_str()),
        (Some("anonymous"), Some("Anonymous Token"))
    );
    // Its policies serve requests without a token: none yet, so default deny refuses a read ...
    assert_eq!(call(&http, "PUT", "/v1/kv/open/k", ROOT, "v").await.status, 200);
    assert_eq!(call(&http, "GET", "/v1/kv/open/k", "", "").await.status, 403);
    // ... and once a policy is linked to it (by name, as Consul takes it), the same read is allowed.
    let policy = call(
        &http,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({"Name": "open-read", "Rules": "key_prefix \"open/\" { policy = \"read\" }"}).to_string(),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let policy_id = policy.json()["ID"].as_str().unwrap().to_owned();
    let linked = call(
        &http,
        "PUT",
        &format!("/v1/acl/token/{ANONYMOUS}"),
        ROOT,
        &json!({"Description": "Anonymous Token", "Policies": [{"Name": "open-read"}]}).to_string(),
    )
    .await;
    assert_eq!(linked.status, 200, "{}", linked.text());
    assert_eq!(linked.json()["Policies"][0]["ID"], policy_id.as_str());
    assert_eq!(call(&http, "GET", "/v1/kv/open/k?raw", "", "").await.body, b"v");
    assert_eq!(call(&http, "PUT", "/v1/kv/open/k", "", "w").await.status, 403);
    // The anonymous token cannot be deleted; a request without a token has no token/self.
    assert_ne!(
        call(&http, "DELETE", &format!("/v1/acl/token/{ANONYMOUS}"), ROOT, "")
            .await
            .status,
        200
    );
    assert_eq!(call(&http, "GET", "/v1/acl/token/self", "", "").await.status, 403);

    // Create with chosen IDs, Local and a description; Consul's refusals for bad or taken IDs.
    let accessor = "7f0c8a52-0000-4000-8000-00000000a001";
    let created = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"AccessorID": accessor, "Description": "worker", "Local": true,
                "Policies": [{"ID": policy_id}]})
        .to_string(),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let worker = created.json();
    assert_eq!(
        (worker["Local"].as_bool(), worker["Description"].as_str()),
        (Some(true), Some("worker"))
    );
    let again = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"AccessorID": accessor}).to_string(),
    )
    .await;
    assert_eq!(
        (again.status, again.text().as_str()),
        (500, "Invalid Token: AccessorID is already in use")
    );
    let bad = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"SecretID": "not-a-uuid"}).to_string(),
    )
    .await;
    assert_eq!(
        (bad.status, bad.text().as_str()),
        (500, "Invalid Token: SecretID is not a valid UUID")
    );
    let missing_policy = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Policies": [{"Name": "nope"}]}).to_string(),
    )
    .await;
    assert_eq!(missing_policy.text(), "No such ACL policy with name \"nope\"");

    // Clone: new identifiers, same links and locality, the description overridden.
    let clone = call(
        &http,
        "PUT",
        &format!("/v1/acl/token/{accessor}/clone"),
        ROOT,
        &json!({"Description": "cloned"}).to_string(),
    )
    .await;
    assert_eq!(clone.status, 200, "{}", clone.text());
    let cloned = clone.json();
    assert_ne!(cloned["AccessorID"], worker["AccessorID"]);
    assert_ne!(cloned["SecretID"], worker["SecretID"]);
    assert_eq!(cloned["Description"], "cloned");
    assert_eq!(cloned["Local"], true);
    assert_eq!(cloned["Policies"], worker["Policies"]);
    let kept = call(&http, "PUT", &format!("/v1/acl/token/{accessor}/clone"), ROOT, "")
        .await
        .json();
    assert_eq!(kept["Description"], "worker");
    let unknown = call(
        &http,
        "PUT",
        "/v1/acl/token/7f0c8a52-0000-4000-8000-0000000fffff/clone",
        ROOT,
        "",
    )
    .await;
    assert_eq!((unknown.status, unknown.text().as_str()), (403, "ACL not found"));

    // Update: the body replaces description and links; identifiers, locality and expiry are fixed.
    let path = format!("/v1/acl/token/{accessor}");
    let updated = call(
        &http,
        "PUT",
        &path,
        ROOT,
        &json!({"Description": "renamed", "Local": true}).to_string(),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["Description"], "renamed");
    assert_eq!(updated.json()["Policies"], json!([]));
    assert_eq!(updated.json()["SecretID"], worker["SecretID"]);
    let refusals = [
        (
            json!({"Local": false}),
            500,
            format!("cannot toggle local mode of {accessor}"),
        ),
        (
            json!({"Local": true, "SecretID": "7f0c8a52-0000-4000-8000-00000000beef"}),
            500,
            "Changing a tokens SecretID is not permitted".to_owned(),
        ),
        (
            json!({"Local": true, "ExpirationTTL": "10m"}),
            500,
            format!("Cannot change expiration time of {accessor}"),
        ),
        (
            json!({"AccessorID": ANONYMOUS}),
            400,
            "Token Accessor ID in URL and payload do not match".to_owned(),
        ),
    ];
    for (body, status, message) in refusals {
        let reply = call(&http, "PUT", &path, ROOT, &body.to_string()).await;
        assert_eq!((reply.status, reply.text()), (status, message), "{body}");
    }
    let nowhere = call(
        &http,
        "PUT",
        "/v1/acl/token/7f0c8a52-0000-4000-8000-0000000fffff",
        ROOT,
        "{}",
    )
    .await;
    assert_eq!(
        nowhere.text(),
        "Cannot find token \"7f0c8a52-0000-4000-8000-0000000fffff\""
    );

    // Filters: by policy ID; by role and auth method nothing matches (no token has either).
    let by_policy = tokens(&http, &format!("?policy={policy_id}")).await;
    let mut expected = vec![
        ANONYMOUS.to_owned(),
        cloned["AccessorID"].as_str().unwrap().to_owned(),
        kept["AccessorID"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    let mut got = accessors(&by_policy);
    got.sort();
    assert_eq!(got, expected);
    assert!(
        tokens(&http, "?policy=00000000-0000-0000-0000-000000000099")
            .await
            .is_empty()
    );
    assert!(
        tokens(&http, "?role=00000000-0000-0000-0000-000000000099")
            .await
            .is_empty()
    );
    assert!(tokens(&http, "?authmethod=jwt").await.is_empty());

    // Expiration: Consul's bounds and exclusivity ...
    let both = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"ExpirationTTL": "10m", "ExpirationTime": "2099-01-01T00:00:00Z"}).to_string(),
    )
    .await;
    assert_eq!(
        both.text(),
        "Token Expiration TTL and Expiration Time cannot both be set"
    );
    let too_long = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"ExpirationTTL": "25h"}).to_string(),
    )
    .await;
    assert_eq!(
        (too_long.status, too_long.text().as_str()),
        (
            500,
            "ExpirationTime cannot be more than 24h0m0s in the future (was 25h0m0s)"
        )
    );
    let too_short = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"ExpirationTTL": "100ms"}).to_string(),
    )
    .await;
    assert_eq!(
        too_short.text(),
        "ExpirationTime cannot be less than 500ms in the future (was 100ms)"
    );
    // ... a token that lives 2 s works, shows its ExpirationTime, then is refused and reaped.
    let short = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"ExpirationTTL": "2s", "Policies": [{"ID": policy_id}]}).to_string(),
    )
    .await;
    assert_eq!(short.status, 200, "{}", short.text());
    let short = short.json();
    assert!(
        short["ExpirationTime"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{short}"
    );
    let secret = short["SecretID"].as_str().unwrap().to_owned();
    let short_accessor = short["AccessorID"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&http, "GET", "/v1/kv/open/k?raw", &secret, "").await.status,
        200
    );
    wait_for(
        "the short-lived token to be refused",
        Duration::from_secs(10),
        || async {
            let reply = call(&http, "GET", "/v1/kv/open/k?raw", &secret, "").await;
            reply.status == 403 && reply.text() == "ACL not found"
        },
    )
    .await;
    let read = call(&http, "GET", &format!("/v1/acl/token/{short_accessor}"), ROOT, "").await;
    assert_eq!((read.status, read.text().as_str()), (403, "ACL not found"));
    assert!(!accessors(&tokens(&http, "").await).contains(&short_accessor));
    // Reaped: deleted from the replicated state, not merely hidden by the read path. Nothing else
    // writes tokens now, so the token table's index moving past the token's own write is the delete.
    let written = short["ModifyIndex"].as_u64().unwrap();
    wait_for(
        "the leader to reap the expired token",
        Duration::from_secs(10),
        || async { call(&http, "GET", "/v1/acl/tokens", ROOT, "").await.index() > written },
    )
    .await;

    node.shutdown().await;
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn cli(addr: std::net::SocketAddr, args: &[&str]) -> Ran {
    let mut command = binary();
    command
        .arg(format!("-http-addr={addr}"))
        .args(args)
        .env("CONSUL_HTTP_TOKEN", ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output().expect("run tribune"))
        .await
        .unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(ran: Ran) -> String {
    assert_eq!(
        ran.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_verbs_on_the_command_line() {
    let node = start_leader(acl_server(Duration::from_secs(60))).await;
    let addr = node.http_addr().unwrap();
    let http = Client::of(&node);
    wait_for("the anonymous token", Duration::from_secs(10), || async {
        call(&http, "GET", &format!("/v1/acl/token/{ANONYMOUS}"), ROOT, "")
            .await
            .status
            == 200
    })
    .await;
    ok(cli(addr, &["acl", "policy", "create", "-name", "p1"]).await);
    ok(cli(addr, &["acl", "policy", "create", "-name", "p2"]).await);

    let anonymous = ok(cli(addr, &["acl", "token", "read", "-id", "anonymous"]).await);
    assert_eq!(field(&anonymous, "AccessorID:"), ANONYMOUS);
    assert_eq!(field(&anonymous, "Description:"), "Anonymous Token");

    let created = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "create",
            "-description",
            "ci",
            "-policy-name",
            "p1",
            "-expires-ttl",
            "1h",
        ],
    )
    .await);
    let accessor = field(&created, "AccessorID:").to_owned();
    // Go's layout, as Consul's CLI prints times.
    assert!(
        field(&created, "Expiration Time:").ends_with(" +0000 UTC"),
        "{created}"
    );
    assert!(created.contains(" - p1\n"), "{created}");

    // Update by a unique prefix: a new description, p2 appended, p1 kept.
    let prefix = &accessor[..8];
    let updated = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "update",
            "-id",
            prefix,
            "-description",
            "ci2",
            "-append-policy-name",
            "p2",
        ],
    )
    .await);
    assert_eq!(field(&updated, "Description:"), "ci2");
    assert!(
        updated.contains(" - p1\n") && updated.contains(" - p2\n"),
        "{updated}"
    );
    // -policy-name replaces the links.
    let replaced = ok(cli(
        addr,
        &["acl", "token", "update", "-id", &accessor, "-policy-name", "p2"],
    )
    .await);
    assert!(
        !replaced.contains(" - p1\n") && replaced.contains(" - p2\n"),
        "{replaced}"
    );
    assert_eq!(field(&replaced, "Description:"), "ci2");

    let cloned = ok(cli(
        addr,
        &["acl", "token", "clone", "-id", &accessor, "-description", "copy"],
    )
    .await);
    let clone_accessor = field(&cloned, "AccessorID:").to_owned();
    assert_ne!(clone_accessor, accessor);
    assert_eq!(field(&cloned, "Description:"), "copy");
    assert!(cloned.contains(" - p2\n"), "{cloned}");

    let own = ok(cli(addr, &["acl", "token", "read", "-self"]).await);
    assert_eq!(field(&own, "SecretID:"), ROOT);
    let list = ok(cli(addr, &["acl", "token", "list"]).await);
    for id in [ANONYMOUS, accessor.as_str(), clone_accessor.as_str()] {
        assert!(list.contains(id), "{id} not in {list}");
    }

    let deleted = ok(cli(addr, &["acl", "token", "delete", "-id", &clone_accessor]).await);
    assert_eq!(
        deleted.trim(),
        format!("Token {clone_accessor:?} deleted successfully")
    );
    let gone = cli(addr, &["acl", "token", "read", "-id", &clone_accessor]).await;
    assert_ne!(gone.code, Some(0));
    let none = cli(addr, &["acl", "token", "read", "-id", "ffffffff"]).await;
    assert_ne!(none.code, Some(0));
    assert!(
        none.stderr.contains("No such token ID with prefix: ffffffff"),
        "{}",
        none.stderr
    );
    node.shutdown().await;
}
