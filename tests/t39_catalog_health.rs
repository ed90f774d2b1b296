//! The catalog and health APIs of a development server, as discovery tools use them:
//!
//! - the leader registers its own node with a passing `serfHealth` check and the `consul` service;
//! - `PUT /v1/catalog/register` of an external node with a service and a check, read back through
//!   every catalog and health read with `tag`, `node-meta`, `filter` and `passing`;
//! - a Prometheus-style discovery loop (blocking `health/service` with `stale`, `wait`, `index`) sees
//!   the check go critical within one blocking round, and `?passing` drops the instance;
//! - a bad filter is a 400 with Consul's prefix, a bad state a 400;
//! - deregistering the service, then the node, takes them out of the reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::config::Config;

const LIMIT: Duration = Duration::from_secs(20);

async fn put(http: &Client, path: &str, body: &Value) -> String {
    let reply = request(http.0, "PUT", path, &[], body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.text()
}

fn web(status: &str) -> Value {
    json!({
        "Datacenter": "dc1",
        "Node": "web-1",
        "Address": "192.0.2.10",
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web-a", "Service": "web", "Tags": ["primary", "v1"], "Port": 8080,
                    "Meta": {"version": "1.2"}},
        "Check": {"CheckID": "web-alive", "Name": "web alive", "ServiceID": "web-a", "Status": status,
                  "Output": "HTTP GET http://192.0.2.10:8080/health: 200 OK",
                  "Definition": {"HTTP": "http://192.0.2.10:8080/health", "Interval": "10s"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_registered_found_and_followed_as_discovery_tools_do() {
    let node = start_leader(Config::dev()).await;
    let http = Client::of(&node);
    let me = http.get("/v1/agent/self").await.json()["Config"]["NodeName"]
        .as_str()
        .unwrap()
        .to_owned();

    // The leader reconciles its own node into the catalog.
    wait_for("the server's node with serfHealth passing", LIMIT, || async {
        let checks = http.get(&format!("/v1/health/node/{me}")).await.json();
        checks.as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "passing")
        })
    })
    .await;
    let services = http.get("/v1/catalog/services").await.json();
    assert_eq!(services["consul"], json!([]), "{services}");
    let consul = http.get("/v1/catalog/service/consul").await.json();
    assert_eq!(consul[0]["Node"], me.as_str(), "{consul}");
    assert!(consul[0]["ServicePort"].as_u64().unwrap() > 0, "{consul}");

    // An external node with a service and a check.
    assert_eq!(put(&http, "/v1/catalog/register", &web("passing")).await, "true");
    let names: Vec<String> = http
        .get("/v1/catalog/nodes")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "web-1") && names.contains(&me),
        "{names:?}"
    );
    let rack = http.get("/v1/catalog/nodes?node-meta=rack:r1").await.json();
    assert_eq!(rack.as_array().unwrap().len(), 1, "{rack}");
    assert_eq!(rack[0]["Datacenter"], "dc1");
    assert_eq!(rack[0]["Meta"]["rack"], "r1");

    let instances = http.get("/v1/catalog/service/web").await.json();
    assert_eq!(instances.as_array().unwrap().len(), 1, "{instances}");
    let instance = &instances[0];
    assert_eq!(instance["ServiceID"], "web-a");
    assert_eq!(instance["ServiceName"], "web");
    assert_eq!(instance["ServicePort"], 8080);
    assert_eq!(instance["ServiceTags"], json!(["primary", "v1"]));
    assert_eq!(instance["Address"], "192.0.2.10");
    assert_eq!(instance["NodeMeta"]["rack"], "r1");
    assert_eq!(instance["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
    for (query, expected) in [
        ("tag=primary", 1),
        ("tag=PRIMARY&tag=v1", 1),
        ("tag=primary&tag=v2", 0),
        ("node-meta=rack:r2", 0),
        ("filter=ServiceMeta.version%20%3D%3D%20%221.2%22", 1),
        ("filter=%22canary%22%20in%20ServiceTags", 0),
    ] {
        let found = http.get(&format!("/v1/catalog/service/web?{query}")).await.json();
        assert_eq!(found.as_array().unwrap().len(), expected, "{query}: {found}");
    }
    let bad = http
        .get("/v1/catalog/service/web?filter=ServiceTags%20contains")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text()
            .starts_with("Failed to create boolean expression evaluator"),
        "{}",
        bad.text()
    );

    let by_node = http.get("/v1/catalog/node/web-1").await.json();
    assert_eq!(by_node["Node"]["Address"], "192.0.2.10");
    assert_eq!(by_node["Services"]["web-a"]["Port"], 8080, "{by_node}");
    let listed = http.get("/v1/catalog/node-services/web-1").await.json();
    assert_eq!(listed["Services"][0]["ID"], "web-a", "{listed}");
    assert_eq!(http.get("/v1/catalog/node/nobody").await.json(), Value::Null);

    let health = http.get("/v1/health/service/web?passing").await.json();
    assert_eq!(health.as_array().unwrap().len(), 1, "{health}");
    assert_eq!(health[0]["Service"]["ID"], "web-a");
    assert_eq!(health[0]["Checks"][0]["CheckID"], "web-alive");
    assert_eq!(health[0]["Checks"][0]["Definition"]["Interval"], "10s");
    let checks = http.get("/v1/health/checks/web").await.json();
    assert_eq!(checks[0]["ServiceName"], "web", "{checks}");
    assert_eq!(checks[0]["ServiceTags"], json!(["primary", "v1"]));
    assert_eq!(http.get("/v1/health/state/bogus").await.status, 400);

    // The discovery loop: blocked on the service's index, woken by the check going critical.
    let first = http.get("/v1/health/service/web?stale").await;
    let index = first.index();
    let blocked = {
        let http = Client(http.0);
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = http
                .get(&format!("/v1/health/service/web?stale&wait=30s&index={index}"))
                .await;
            (reply, started.elapsed())
        })
    };
    // Give the read time to block; if the write still came first, the read returns at once with
    // the newer index, and the assertions below hold just the same.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(put(&http, "/v1/catalog/register", &web("critical")).await, "true");
    let (woken, waited) = blocked.await.unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "the blocking read waited {waited:?}"
    );
    assert!(woken.index() > index);
    assert_eq!(woken.json()[0]["Checks"][0]["Status"], "critical");
    assert_eq!(http.get("/v1/health/service/web?passing").await.json(), json!([]));
    let critical = http.get("/v1/health/state/critical").await.json();
    assert!(
        critical
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["CheckID"] == "web-alive"),
        "{critical}"
    );

    // Deregistration: the service, then the node.
    let body = json!({"Node": "web-1", "ServiceID": "web-a"});
    assert_eq!(put(&http, "/v1/catalog/deregister", &body).await, "true");
    let services = http.get("/v1/catalog/services").await.json();
    assert!(services.get("web").is_none(), "{services}");
    assert_eq!(http.get("/v1/health/checks/web").await.json(), json!([]));
    assert_eq!(
        put(&http, "/v1/catalog/deregister", &json!({"Node": "web-1"})).await,
        "true"
    );
    assert_eq!(http.get("/v1/catalog/node/web-1").await.json(), Value::Null);

    node.shutdown().await;
}
