//! Service discovery as Prometheus's `consul_sd_configs` does it, and the read options discovery
//! tools lean on:
//!
//! - a discovery loop on one datacenter's agent, configured with `datacenter: dc2`: blocking
//!   `catalog/services` then `health/service/<name>`, each with `stale`, `wait` and `index`, sees a
//!   service registered in dc2 and its check going critical within one blocking round each;
//! - `?near=_agent` puts the agent's own node first and nodes without a coordinate last;
//! - `X-Consul-Results-Filtered-By-ACLs: true` marks an answer a named token saw only part of, and
//!   never an anonymous caller's or a full answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Reply, request, start_leader, wait_for, wan_server};
use serde_json::{Value, json};
use tribune::config::{Config, DefaultPolicy};

const LIMIT: Duration = Duration::from_secs(30);
/// The blocking wait of one discovery round; a round that takes it all saw no change.
const ROUND: Duration = Duration::from_secs(20);
const ROOT: &str = "4b1a2c8e-0d6f-4e3a-9b7c-5f1e2d3c4b5a";

async fn put_ok(http: &Client, path: &str, body: &Value) {
    let reply = http.put(path, body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
}

fn api_registration(status: &str) -> Value {
    json!({
        "Datacenter": "dc2",
        "Node": "api-host",
        "Address": "192.0.2.20",
        "Service": {"ID": "api-1", "Service": "api", "Tags": ["http"], "Port": 9100},
        "Check": {"CheckID": "api-alive", "Name": "api alive", "ServiceID": "api-1", "Status": status},
    })
}

/// One blocking discovery read, as Prometheus makes it: `stale`, `wait`, `index`.
async fn blocking(http: &Client, path: &str, index: u64) -> (Reply, Duration) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let wait = ROUND.as_secs();
    let started = Instant::now();
    let reply = http
        .get(&format!("{path}{separator}stale&wait={wait}s&index={index}"))
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    (reply, started.elapsed())
}

/// Blocks on `path` from `index` until an answer satisfies `seen`; the change made by `change`
/// (run once the read is parked) must show in the first answer whose index covers it, which is
/// the first or, when an earlier change woke the round, the second.
async fn one_round_sees(
    http: &Client,
    path: &str,
    change: impl std::future::Future<Output = ()>,
    seen: impl Fn(&Value) -> bool,
) {
    let start = http
        .get(&format!(
            "{path}{}stale",
            if path.contains('?') { '&' } else { '?' }
        ))
        .await;
    let index = start.index();
    assert!(
        !seen(&start.json()),
        "{path} already shows the change: {}",
        start.text()
    );
    let parked = {
        let http = Client(http.0);
        let path = path.to_owned();
        tokio::spawn(async move { blocking(&http, &path, index).await })
    };
    change.await;
    let (first, took) = parked.await.unwrap();
    assert!(took < ROUND, "{path}: the round timed out instead of waking");
    assert!(first.index() > index, "{path}: woken without a new index");
    if seen(&first.json()) {
        return;
    }
    let (second, took) = blocking(http, path, first.index()).await;
    assert!(took < ROUND, "{path}: the second round timed out");
    assert!(
        seen(&second.json()),
        "{path}: two rounds and no change: {}",
        second.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_style_loop_follows_another_datacenter() {
    let dc1 = start_leader(wan_server("dc1", "dc1-server", &[])).await;
    let dc2 = start_leader(wan_server("dc2", "dc2-server", &[&dc1])).await;
    let http1 = Client::of(&dc1);
    let http2 = Client::of(&dc2);
    wait_for("dc1 routes to dc2", LIMIT, || async {
        let reply = http1.get("/v1/catalog/services?dc=dc2").await;
        reply.status == 200 && reply.json().get("consul").is_some()
    })
    .await;

    // Service discovery: the registration in dc2 shows in dc1's blocking read of dc2's services.
    one_round_sees(
        &http1,
        "/v1/catalog/services?dc=dc2",
        async { put_ok(&http2, "/v1/catalog/register", &api_registration("passing")).await },
        |services| services.get("api") == Some(&json!(["http"])),
    )
    .await;
    let targets = http1.get("/v1/health/service/api?dc=dc2&stale").await.json();
    assert_eq!(targets[0]["Service"]["Port"], 9100, "{targets}");
    assert_eq!(targets[0]["Node"]["Datacenter"], "dc2", "{targets}");
    assert_eq!(targets[0]["Checks"][0]["Status"], "passing", "{targets}");

    // Health: the check going critical shows within one round of the target's health read; the
    // registration goes through dc1 with a body `Datacenter`, as a tool in dc1 would send it.
    one_round_sees(
        &http1,
        "/v1/health/service/api?dc=dc2",
        async { put_ok(&http1, "/v1/catalog/register", &api_registration("critical")).await },
        |targets| targets[0]["Checks"][0]["Status"] == "critical",
    )
    .await;
    let passing = http1.get("/v1/health/service/api?dc=dc2&passing").await.json();
    assert_eq!(passing, json!([]), "critical instances are not passing");
    // dc1's own catalog never saw dc2's service.
    assert_eq!(http1.get("/v1/catalog/service/api").await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_sorts_by_round_trip_from_the_agent() {
    let mut config = Config::dev();
    config.node_name = "m-agent".into();
    let node = start_leader(config).await;
    let http = Client::of(&node);
    for name in ["zz-ext", "aa-ext"] {
        put_ok(
            &http,
            "/v1/catalog/register",
            &json!({"Node": name, "Address": "192.0.2.30",
                    "Service": {"ID": "web", "Service": "web", "Port": 80}}),
        )
        .await;
    }
    put_ok(
        &http,
        "/v1/catalog/register",
        &json!({"Node": "m-agent", "Address": "127.0.0.1",
                "Service": {"ID": "web", "Service": "web", "Port": 80}}),
    )
    .await;
    let names = |reply: Reply, field: &str| -> Vec<String> {
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.pointer(field).and_then(Value::as_str).unwrap().to_owned())
            .collect()
    };
    // The agent's own coordinate is known once its pool is running.
    wait_for("the agent's coordinate", LIMIT, || async {
        http.get("/v1/coordinate/node/m-agent").await.status == 200
    })
    .await;
    assert_eq!(
        names(http.get("/v1/catalog/nodes").await, "/Node"),
        ["aa-ext", "m-agent", "zz-ext"]
    );
    assert_eq!(
        names(http.get("/v1/catalog/nodes?near=_agent").await, "/Node"),
        ["m-agent", "aa-ext", "zz-ext"]
    );
    assert_eq!(
        names(http.get("/v1/catalog/service/web?near=m-agent").await, "/Node"),
        ["m-agent", "aa-ext", "zz-ext"]
    );
    assert_eq!(
        names(http.get("/v1/health/service/web?near=_agent").await, "/Node/Node"),
        ["m-agent", "aa-ext", "zz-ext"]
    );
    // A node with no coordinate leaves the order as it was.
    assert_eq!(
        names(http.get("/v1/catalog/nodes?near=zz-ext").await, "/Node"),
        ["aa-ext", "m-agent", "zz-ext"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_filtered_by_acls_say_so_to_named_tokens() {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    let node = start_leader(config).await;
    let http = Client::of(&node);
    let as_root = [("x-consul-token", ROOT)];
    wait_for("the initial management token", LIMIT, || async {
        request(http.0, "GET", "/v1/acl/token/self", &as_root, b"")
            .await
            .status
            == 200
    })
    .await;
    for node_name in ["web-1", "db-1"] {
        let body = json!({"Node": node_name, "Address": "192.0.2.40",
                          "Service": {"Service": node_name.trim_end_matches("-1"), "Port": 1}});
        let reply = request(
            http.0,
            "PUT",
            "/v1/catalog/register",
            &as_root,
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let policy = json!({"Name": "web-only",
                        "Rules": "node \"web-1\" { policy = \"read\" }\nservice \"web\" { policy = \"read\" }"});
    let reply = request(
        http.0,
        "PUT",
        "/v1/acl/policy",
        &as_root,
        policy.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = json!({"Policies": [{"Name": "web-only"}]});
    let reply = request(
        http.0,
        "PUT",
        "/v1/acl/token",
        &as_root,
        token.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let secret = reply.json()["SecretID"].as_str().unwrap().to_owned();
    let as_web = [("x-consul-token", secret.as_str())];
    const HEADER: &str = "x-consul-results-filtered-by-acls";

    for path in [
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/health/service/web",
    ] {
        let partial = request(http.0, "GET", path, &as_web, b"").await;
        assert_eq!(partial.status, 200, "{path}: {}", partial.text());
        let full = request(http.0, "GET", path, &as_root, b"").await;
        let anonymous = http.get(path).await;
        if path == "/v1/health/service/web" {
            // Everything web-only may see: nothing removed, nothing said.
            assert_eq!(partial.header(HEADER), None, "{path}");
        } else {
            assert_eq!(partial.header(HEADER), Some("true"), "{path}: {}", partial.text());
        }
        assert_eq!(full.header(HEADER), None, "{path}: the management token sees all");
        assert_eq!(
            anonymous.header(HEADER),
            None,
            "{path}: anonymous callers are told nothing"
        );
    }
    let nodes = request(http.0, "GET", "/v1/catalog/nodes", &as_web, b"")
        .await
        .json();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
}
