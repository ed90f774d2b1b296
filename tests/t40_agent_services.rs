//! The agent's own services and checks, synced to the catalog by anti-entropy, on a development
//! server and on a client agent joined to it:
//!
//! - `PUT /v1/agent/service/register` with a TTL check: the instance shows in `/v1/catalog/service`
//!   and `/v1/health/service`; `check/pass` makes it passing; the TTL running out makes it
//!   critical and drops it from `?passing`;
//! - service and node maintenance add and remove Consul's critical maintenance checks;
//! - drift is repaired: a service deregistered behind the agent's back comes back, a service the
//!   agent does not have is taken off its node, and `serfHealth` stays;
//! - deregistering through the agent takes the instance and its checks out of the catalog;
//! - Consul's answers: 404 texts for unknown IDs, 400 for a bad body, 200 for a Patroni-style
//!   registration with an HTTP check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Client, pool_agent, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::Node;
use tribune::config::Config;

const LIMIT: Duration = Duration::from_secs(20);

fn fast_sync(mut config: Config) -> Config {
    config.local.sync_interval = Duration::from_millis(500);
    config
}

async fn put_ok(http: &Client, path: &str, body: &Value) {
    let reply = http.put(path, body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
}

/// The check `id` of service `name` in `/v1/health/service/<name>` (read from `http`).
async fn health_check(http: &Client, name: &str, id: &str) -> Option<Value> {
    let found = http.get(&format!("/v1/health/service/{name}")).await.json();
    found.as_array()?.iter().find_map(|instance| {
        instance["Checks"]
            .as_array()?
            .iter()
            .find(|c| c["CheckID"] == id)
            .cloned()
    })
}

async fn node_check(http: &Client, node: &str, id: &str) -> Option<Value> {
    let found = http.get(&format!("/v1/health/node/{node}")).await.json();
    found.as_array()?.iter().find(|c| c["CheckID"] == id).cloned()
}

async fn instances(http: &Client, name: &str) -> Vec<Value> {
    http.get(&format!("/v1/catalog/service/{name}"))
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Registration, TTL check, maintenance and deregistration through `agent`, read back from the
/// catalog through `catalog`; the instance lives on node `node`.
async fn lifecycle(agent: &Client, catalog: &Client, node: &str, name: &str) {
    let id = format!("{name}-1");
    let check = format!("service:{id}");
    put_ok(
        agent,
        "/v1/agent/service/register",
        &json!({"Name": name, "ID": id, "Port": 8080, "Tags": ["primary"], "Meta": {"v": "1"},
                "Check": {"TTL": "2s"}}),
    )
    .await;

    // The agent's own view.
    let services = agent.get("/v1/agent/services").await.json();
    assert_eq!(services[&id]["Service"], name, "{services}");
    assert_eq!(services[&id]["Port"], 8080, "{services}");
    assert_eq!(services[&id]["Weights"], json!({"Passing": 1, "Warning": 1}));
    let checks = agent.get("/v1/agent/checks").await.json();
    assert_eq!(checks[&check]["Status"], "critical", "{checks}");
    assert_eq!(checks[&check]["Type"], "ttl", "{checks}");
    assert_eq!(checks[&check]["ServiceName"], name, "{checks}");
    let filtered = agent
        .get("/v1/agent/services?filter=Port%20%3D%3D%209")
        .await
        .json();
    assert_eq!(filtered, json!({}));

    // Synced to the catalog.
    wait_for("the instance in the catalog", LIMIT, || async {
        instances(catalog, name)
            .await
            .iter()
            .any(|i| i["ServiceID"] == id.as_str() && i["Node"] == node && i["ServicePort"] == 8080)
    })
    .await;
    wait_for("its check in health, critical", LIMIT, || async {
        health_check(catalog, name, &check)
            .await
            .is_some_and(|c| c["Status"] == "critical")
    })
    .await;

    // Passing at once after check/pass.
    let pass = agent
        .put(&format!("/v1/agent/check/pass/{check}?note=fine"), b"")
        .await;
    assert_eq!(pass.status, 200, "{}", pass.text());
    wait_for("the check passing in health", LIMIT, || async {
        health_check(catalog, name, &check)
            .await
            .is_some_and(|c| c["Status"] == "passing" && c["Output"] == "fine")
    })
    .await;
    // Then the TTL runs out: critical, and gone from ?passing.
    wait_for("the TTL to expire", LIMIT, || async {
        health_check(catalog, name, &check)
            .await
            .is_some_and(|c| c["Status"] == "critical")
    })
    .await;
    let passing = catalog
        .get(&format!("/v1/health/service/{name}?passing"))
        .await
        .json();
    assert_eq!(passing, json!([]), "{passing}");
    let health = agent.get(&format!("/v1/agent/health/service/id/{id}")).await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["AggregatedStatus"], "critical");

    // Service maintenance.
    let maint = format!("_service_maintenance:{id}");
    let on = agent
        .put(
            &format!("/v1/agent/service/maintenance/{id}?enable=true&reason=upgrading"),
            b"",
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.text());
    wait_for("the maintenance check in health", LIMIT, || async {
        health_check(catalog, name, &maint)
            .await
            .is_some_and(|c| c["Status"] == "critical" && c["Notes"] == "upgrading")
    })
    .await;
    assert_eq!(
        agent
            .get(&format!("/v1/agent/health/service/name/{name}?format=text"))
            .await
            .text(),
        "maintenance"
    );
    let off = agent
        .put(&format!("/v1/agent/service/maintenance/{id}?enable=false"), b"")
        .await;
    assert_eq!(off.status, 200, "{}", off.text());
    wait_for("the maintenance check gone", LIMIT, || async {
        health_check(catalog, name, &maint).await.is_none()
    })
    .await;

    // Node maintenance.
    assert_eq!(
        agent.put("/v1/agent/maintenance?enable=true", b"").await.status,
        200
    );
    wait_for("the node maintenance check", LIMIT, || async {
        node_check(catalog, node, "_node_maintenance")
            .await
            .is_some_and(|c| {
                c["Notes"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("Maintenance mode is enabled for this node"))
            })
    })
    .await;
    assert_eq!(
        agent.put("/v1/agent/maintenance?enable=false", b"").await.status,
        200
    );
    wait_for("the node maintenance check gone", LIMIT, || async {
        node_check(catalog, node, "_node_maintenance").await.is_none()
    })
    .await;

    // Deregistration through the agent.
    let gone = agent
        .put(&format!("/v1/agent/service/deregister/{id}"), b"")
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    wait_for("the instance gone from the catalog", LIMIT, || async {
        instances(catalog, name).await.is_empty() && health_check(catalog, name, &check).await.is_none()
    })
    .await;
    assert_eq!(agent.get("/v1/agent/services").await.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_s_services_are_synced_checked_and_repaired() {
    let node = start_leader(fast_sync(Config::dev())).await;
    let http = Client::of(&node);
    lifecycle(&http, &http, "dev", "web").await;

    // Consul's refusals.
    let unknown = http.put("/v1/agent/service/deregister/nope", b"").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.text().starts_with("Unknown service ID \"nope\""),
        "{}",
        unknown.text()
    );
    let unknown = http.put("/v1/agent/check/pass/nope", b"").await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.text().starts_with("Unknown check ID \"nope\""),
        "{}",
        unknown.text()
    );
    assert_eq!(http.get("/v1/agent/service/nope").await.status, 404);
    assert_eq!(
        http.put("/v1/agent/service/register", b"{not json").await.status,
        400
    );
    let nameless = http.put("/v1/agent/service/register", br#"{"Port": 1}"#).await;
    assert_eq!(nameless.status, 400);
    assert_eq!(nameless.text(), "Missing service name");
    assert_eq!(
        http.put("/v1/agent/maintenance", b"").await.status,
        400,
        "enable is required"
    );

    // A Patroni-style registration.
    put_ok(
        &http,
        "/v1/agent/service/register",
        &json!({"Name": "postgres", "ID": "postgres/pg-0", "Address": "127.0.0.1", "Port": 5432,
                "Tags": ["master"], "Meta": {"role": "master", "version": "16"},
                "Check": {"HTTP": "http://127.0.0.1:9/health", "Interval": "5s",
                          "DeregisterCriticalServiceAfter": "10m"}}),
    )
    .await;
    let single = http.get("/v1/agent/service/postgres%2Fpg-0").await;
    assert_eq!(single.status, 200, "{}", single.text());
    assert_eq!(single.json()["Meta"]["role"], "master");
    let checks = http.get("/v1/agent/checks").await.json();
    assert_eq!(checks["service:postgres/pg-0"]["Type"], "http", "{checks}");
    assert_eq!(checks["service:postgres/pg-0"]["Interval"], "5s", "{checks}");

    // Drift: deregistered behind the agent's back, the instance comes back.
    wait_for("postgres in the catalog", LIMIT, || async {
        !instances(&http, "postgres").await.is_empty()
    })
    .await;
    put_ok(
        &http,
        "/v1/catalog/deregister",
        &json!({"Node": "dev", "ServiceID": "postgres/pg-0"}),
    )
    .await;
    wait_for("anti-entropy to put postgres back", LIMIT, || async {
        instances(&http, "postgres")
            .await
            .iter()
            .any(|i| i["ServiceMeta"]["role"] == "master")
    })
    .await;
    // Drift: a service the agent does not have is taken off its node; serfHealth and the
    // `consul` service stay.
    put_ok(
        &http,
        "/v1/catalog/register",
        &json!({"Node": "dev", "Address": "127.0.0.1", "SkipNodeUpdate": true,
                "Service": {"ID": "stray", "Service": "stray", "Port": 1}}),
    )
    .await;
    wait_for("anti-entropy to remove the stray service", LIMIT, || async {
        instances(&http, "stray").await.is_empty()
    })
    .await;
    assert!(node_check(&http, "dev", "serfHealth").await.is_some());
    assert!(!instances(&http, "consul").await.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_s_services_are_synced_through_its_servers() {
    // One server that forms alone.
    let mut config = pool_agent("s1", true, &[]);
    config.bootstrap_expect = 1;
    let server = start_leader(fast_sync(config)).await;
    let client = Node::start(fast_sync(pool_agent("c1", false, &[&server])))
        .await
        .unwrap();
    let (s, c) = (Client::of(&server), Client::of(&client));
    wait_for("the client's node in the catalog", LIMIT, || async {
        node_check(&s, "c1", "serfHealth").await.is_some()
    })
    .await;
    lifecycle(&c, &s, "c1", "api").await;
    client.shutdown().await;
    server.shutdown().await;
}
