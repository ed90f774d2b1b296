//! `/v1/agent/metrics` of a development server: after KV writes and reads over HTTP, the JSON
//! (go-metrics' shape) counts the writes under Consul's names and times the HTTP routes, the
//! Prometheus text parses line by line and carries the same series under underscored names;
//! Prometheus is refused without a retention time; `agent:read` is required under ACLs; and a
//! client agent answers with its own series, not a server's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::Value;
use tribune::config::{Config, DefaultPolicy};

const WRITES: u64 = 5;
const ROOT: &str = "0b7d7c1e-3b0e-4d43-9a3c-5e2f3f0c9a11";
const LIMIT: Duration = Duration::from_secs(20);

fn metrics_config() -> Config {
    let mut config = Config::dev();
    config.telemetry.prometheus_retention_time = Duration::from_secs(60);
    config.telemetry.disable_hostname = true;
    config
}

/// The entry named `name` (with `labels`, when given) of the JSON list `list`.
fn entry<'a>(json: &'a Value, list: &str, name: &str, labels: Option<&Value>) -> &'a Value {
    json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} list in {json}"))
        .iter()
        .find(|m| m["Name"] == name && labels.is_none_or(|l| &m["Labels"] == l))
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {list}: {json}"))
}

/// One sample line of the text format, split: the name, its labels, its value.
fn sample_line(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("value of {line:?} is not a number"));
    let (name, labels) = match series.split_once('{') {
        None => (series, ""),
        Some((name, rest)) => (
            name,
            rest.strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in {line:?}")),
        ),
    };
    let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    assert!(valid_name, "bad metric name in {line:?}");
    let labels = if labels.is_empty() {
        Vec::new()
    } else {
        labels
            .split("\",")
            .map(|pair| {
                let (key, value) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name in {line:?}"
                );
                (key.to_owned(), value.trim_end_matches('"').to_owned())
            })
            .collect()
    };
    (name.to_owned(), labels, value)
}

async fn get(http: &Client, path: &str, token: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Consul-Token", t)).into_iter().collect();
    request(http.0, "GET", path, &headers, b"").await
}

#[tokio::test]
async fn writes_and_requests_show_in_json_and_prometheus_text() {
    let node = start_leader(metrics_config()).await;
    let http = Client::of(&node);
    for i in 0..WRITES {
        let put = http.put(&format!("/v1/kv/metrics/k{i}"), b"v").await;
        assert_eq!((put.status, put.text().as_str()), (200, "true"));
        assert_eq!(http.get(&format!("/v1/kv/metrics/k{i}")).await.status, 200);
    }

    let reply = http.get("/v1/agent/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    for field in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    let kvs = entry(&json, "Samples", "consul.kvs.apply", None);
    assert!(kvs["Count"].as_u64().unwrap() >= WRITES, "{kvs}");
    for field in ["Rate", "Sum", "Min", "Max", "Mean", "Stddev"] {
        assert!(kvs[field].is_number(), "{field} in {kvs}");
    }
    assert!(kvs["Sum"].as_f64().unwrap() > 0.0, "writes take time: {kvs}");
    let applied = entry(&json, "Counters", "consul.raft.apply", None);
    assert!(applied["Count"].as_u64().unwrap() >= WRITES, "{applied}");
    let puts = entry(&json, "Samples", "consul.http.PUT.v1.kv._", None);
    assert_eq!(puts["Count"].as_u64(), Some(WRITES), "{puts}");
    let reads = serde_json::json!({"method": "GET", "path": "v1_kv_"});
    let timed_reads = entry(&json, "Samples", "consul.api.http", Some(&reads));
    assert_eq!(timed_reads["Count"].as_u64(), Some(WRITES), "{timed_reads}");
    let leader = entry(&json, "Gauges", "consul.server.isLeader", None);
    assert_eq!(leader["Value"], 1.0);

    let reply = http.get("/v1/agent/metrics?format=prometheus").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let mut typed = std::collections::BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "summary"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} typed twice"
            );
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            assert!(
                !line.is_empty() && !line.starts_with('#'),
                "unexpected line {line:?}"
            );
            samples.push(sample_line(line));
        }
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    assert_eq!(
        typed.get("consul_raft_apply").map(String::as_str),
        Some("counter")
    );
    assert_eq!(typed.get("consul_kvs_apply").map(String::as_str), Some("summary"));
    assert!(value("consul_raft_apply", &[]) >= WRITES as f64);
    assert!(value("consul_kvs_apply_count", &[]) >= WRITES as f64);
    assert!(value("consul_kvs_apply", &[("quantile", "0.5")]) > 0.0);
    let put_timings = value("consul_api_http_count", &[("method", "PUT"), ("path", "v1_kv_")]);
    assert_eq!(put_timings, WRITES as f64);
    assert_eq!(value("consul_http_PUT_v1_kv___count", &[]), WRITES as f64);
    assert_eq!(value("consul_server_isLeader", &[]), 1.0);
    // Every sample belongs to a typed family.
    for (name, _, _) in &samples {
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{name} has no # TYPE");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn prometheus_needs_a_retention_time_and_json_does_not() {
    let node = start_leader(Config::dev()).await;
    let http = Client::of(&node);
    // Current Consul's answer: an empty 200 with the reason in a header.
    let refused = http.get("/v1/agent/metrics?format=prometheus").await;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.text(), "");
    assert_eq!(
        refused.header("x-consul-reason"),
        Some("Prometheus is not enabled since its retention time is not positive")
    );
    let json = http.get("/v1/agent/metrics").await;
    assert_eq!(json.status, 200);
    // Without disable_hostname, gauges carry the node's name after the prefix, as Consul's do.
    entry(&json.json(), "Gauges", "consul.dev.server.isLeader", None);
    node.shutdown().await;
}

/// A node with ACLs on (default deny), once its management token works.
async fn acl_node() -> (tribune::NodeHandle, Client) {
    let mut config = metrics_config();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    let node = start_leader(config).await;
    let http = Client::of(&node);
    wait_for("the initial management token", LIMIT, || async {
        get(&http, "/v1/agent/metrics", Some(ROOT)).await.status == 200
    })
    .await;
    (node, http)
}

#[tokio::test]
async fn agent_read_is_required_under_default_deny() {
    let (node, http) = acl_node().await;
    for path in ["/v1/agent/metrics", "/v1/agent/metrics?format=prometheus"] {
        // The anonymous token is written by the leader beside the management token: until it is,
        // a request without a token is refused as "ACL not found"; afterwards by its policy.
        wait_for("anonymous to be refused by policy", LIMIT, || async {
            let anonymous = get(&http, path, None).await;
            assert_eq!(anonymous.status, 403, "{path}: {}", anonymous.text());
            anonymous.text() == "Permission denied"
        })
        .await;
        assert_eq!(get(&http, path, Some(ROOT)).await.status, 200, "{path}");
    }
    node.shutdown().await;
}

/// The catalog, gossip, session, ACL cache series with Consul's names: a registration is timed
/// (`catalog.register`, `fsm.register`), the LAN pool's servers are counted, a session with a TTL
/// is timed by the leader, token resolutions hit or miss the cache, and member events are counted.
#[tokio::test]
async fn catalog_gossip_session_and_acl_cache_series() {
    let (node, http) = acl_node().await;
    let headers = [("X-Consul-Token", ROOT)];
    let register = br#"{"Node": "web-1", "Address": "10.0.0.5", "Service": {"Service": "web", "Port": 80}}"#;
    let reply = request(http.0, "PUT", "/v1/catalog/register", &headers, register).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let session = request(
        http.0,
        "PUT",
        "/v1/session/create",
        &headers,
        br#"{"TTL": "60s"}"#,
    )
    .await;
    assert_eq!(session.status, 200, "{}", session.text());

    let json = get(&http, "/v1/agent/metrics", Some(ROOT)).await.json();
    let count = |list: &str, name: &str| entry(&json, list, name, None)["Count"].as_u64().unwrap();
    assert!(count("Samples", "consul.catalog.register") >= 1, "{json}");
    assert!(count("Samples", "consul.fsm.register") >= 1, "{json}");
    assert!(count("Samples", "consul.acl.ResolveToken") >= 3, "{json}");
    assert!(count("Counters", "consul.acl.token.cache_miss") >= 1, "{json}");
    assert!(count("Counters", "consul.acl.token.cache_hit") >= 1, "{json}");
    // Series known before anything fed them are listed at zero.
    entry(&json, "Counters", "consul.serf.member.failed", None);
    entry(&json, "Samples", "consul.session_ttl.invalidate", None);
    assert_eq!(
        entry(&json, "Gauges", "consul.members.servers", None)["Value"],
        1.0
    );
    assert_eq!(
        entry(&json, "Gauges", "consul.members.clients", None)["Value"],
        0.0
    );
    assert_eq!(
        entry(&json, "Gauges", "consul.session_ttl.active", None)["Value"],
        1.0
    );
    node.shutdown().await;
}

/// A client agent answers with its own series, never a server's: the requests it served (handed
/// to a server or not) under their routes' names, its calls to servers, its pool's events, and no
/// raft, state machine or ACL series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_keeps_its_own_series() {
    let mut config = common::pool_agent("s1", true, &[]);
    config.bootstrap_expect = 1;
    let server = start_leader(config).await;
    let mut config = common::pool_agent("c1", false, &[&server]);
    config.telemetry.prometheus_retention_time = Duration::from_secs(60);
    config.telemetry.disable_hostname = true;
    let client = tribune::Node::start(config).await.unwrap();
    let (s, c) = (Client::of(&server), Client::of(&client));
    wait_for("the client to reach a server", LIMIT, || async {
        c.put("/v1/kv/metrics/through-client", b"v").await.text() == "true"
    })
    .await;
    for _ in 0..WRITES {
        assert_eq!(c.get("/v1/kv/metrics/through-client").await.status, 200);
    }
    assert_eq!(c.get("/v1/agent/members").await.status, 200);

    let json = c.get("/v1/agent/metrics").await.json();
    let count = |list: &str, name: &str, labels: Option<&Value>| {
        entry(&json, list, name, labels)["Count"].as_u64().unwrap()
    };
    let reads = serde_json::json!({"method": "GET", "path": "v1_kv_"});
    assert_eq!(
        count("Samples", "consul.api.http", Some(&reads)),
        WRITES,
        "{json}"
    );
    assert!(count("Samples", "consul.http.PUT.v1.kv._", None) >= 1, "{json}");
    assert!(
        count("Samples", "consul.http.GET.v1.agent.members", None) >= 1,
        "{json}"
    );
    assert!(count("Counters", "consul.client.rpc", None) > WRITES, "{json}");
    assert!(count("Counters", "consul.serf.member.join", None) >= 1, "{json}");
    for server_only in ["consul.raft.apply", "consul.kvs.apply", "consul.acl.ResolveToken"] {
        let names = json.to_string();
        assert!(
            !names.contains(&format!("\"{server_only}\"")),
            "{server_only} in {json}"
        );
    }
    // Lifeguard's score, from the client's own pool member: 0 healthy, at most 7 (the default cap).
    let score = entry(&json, "Gauges", "consul.memberlist.health.score", None)["Value"]
        .as_f64()
        .unwrap();
    assert!((0.0..8.0).contains(&score), "{score}");
    let text = c.get("/v1/agent/metrics?format=prometheus").await.text();
    assert!(text.contains("\n# TYPE consul_client_rpc counter\n"), "{text}");
    assert!(
        text.contains("\n# TYPE consul_memberlist_health_score gauge\n"),
        "{text}"
    );

    // The server's own reading is unchanged by the client's: it has no client series.
    let server_json = s.get("/v1/agent/metrics").await.json();
    assert!(
        !server_json.to_string().contains("consul.client.rpc"),
        "{server_json}"
    );
    client.shutdown().await;
    server.shutdown().await;
}
