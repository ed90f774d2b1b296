//! What #17 is for, end to end: a service registered through a client agent, with a TTL check the
//! service keeps passing, is found by the client's DNS, by `health/service?passing` and by a
//! Prometheus-style blocking discovery read — and leaves all three once its check fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, pool_agent, start_leader, tribune_cli, wait_for};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tribune::Node;

const LIMIT: Duration = Duration::from_secs(30);
const ROUND: Duration = Duration::from_secs(20);

/// `name` A over UDP: the answer's code and addresses.
async fn lookup(server: SocketAddr, name: &str) -> (ResponseCode, Vec<String>) {
    let mut request = Message::new();
    request
        .set_id(7)
        .set_message_type(MessageType::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&request.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    let addresses = answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    (answer.response_code(), addresses)
}

fn ids(instances: &Value) -> Vec<String> {
    instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Service"]["ID"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agents_service_is_discovered_and_dropped_when_its_check_fails() {
    let mut server_config = pool_agent("s1", true, &[]);
    server_config.bootstrap_expect = 1;
    let server = start_leader(server_config).await;
    let client = Node::start(pool_agent("c1", false, &[&server])).await.unwrap();
    let dns = client.dns_addr().expect("the client agent serves DNS");
    let http = Client::of(&client);
    wait_for("the client to reach a server", LIMIT, || async {
        http.get("/v1/catalog/nodes").await.status == 200
    })
    .await;

    let registered = http
        .put(
            "/v1/agent/service/register",
            json!({"Name": "web", "ID": "web-1", "Address": "127.0.0.9", "Port": 8080,
                   "Check": {"CheckID": "web-ttl", "TTL": "60s", "Status": "passing"}})
            .to_string()
            .as_bytes(),
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());

    // Found three ways.
    wait_for("web passing in the catalog", LIMIT, || async {
        ids(&http.get("/v1/health/service/web?passing").await.json()) == ["web-1"]
    })
    .await;
    let (code, found) = lookup(dns, "web.service.consul.").await;
    assert_eq!(
        (code, found),
        (ResponseCode::NoError, vec!["127.0.0.9".to_owned()])
    );
    // The leader adds the client's serfHealth beside the agent's own check.
    wait_for("serfHealth and web-ttl on the instance", LIMIT, || async {
        let found = http.get("/v1/health/service/web?stale").await.json();
        found[0]["Checks"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    let discovered = http.get("/v1/health/service/web?stale").await;
    let instance = &discovered.json()[0];
    assert_eq!(instance["Node"]["Node"], "c1");
    assert_eq!(instance["Service"]["Port"], 8080);

    // The check fails: the discovery read parked on the index wakes within one round with it
    // critical, and the instance leaves `?passing` and DNS.
    let index = discovered.index();
    let parked = {
        let http = Client(http.0);
        tokio::spawn(async move {
            let started = Instant::now();
            let path = format!(
                "/v1/health/service/web?stale&index={index}&wait={}s",
                ROUND.as_secs()
            );
            (http.get(&path).await, started.elapsed())
        })
    };
    let failed = http.put("/v1/agent/check/fail/web-ttl?note=down", b"").await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    let (woken, took) = parked.await.unwrap();
    assert!(took < ROUND, "the discovery round timed out instead of waking");
    let checks = woken.json()[0]["Checks"].clone();
    let web_ttl = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "web-ttl")
        .cloned()
        .unwrap();
    assert_eq!(web_ttl["Status"], "critical", "{woken:?}", woken = woken.text());
    assert_eq!(web_ttl["Output"], "down");
    assert_eq!(http.get("/v1/health/service/web?passing").await.json(), json!([]));
    let (code, found) = lookup(dns, "web.service.consul.").await;
    assert!(found.is_empty(), "DNS still answers {found:?}");
    assert_eq!(
        code,
        ResponseCode::NXDomain,
        "no healthy instance: NXDOMAIN as Consul"
    );

    // Passing again: back everywhere.
    assert_eq!(http.put("/v1/agent/check/pass/web-ttl", b"").await.status, 200);
    wait_for("web back in DNS", LIMIT, || async {
        lookup(dns, "web.service.consul.").await.1 == ["127.0.0.9"]
    })
    .await;

    // The same through the command line: register, maintenance on and off, deregister.
    let addr = http.0;
    let (ok, out) = tribune_cli(
        addr,
        &[
            "services", "register", "-name", "api", "-port", "9000", "-tag", "v2",
        ],
    )
    .await;
    assert!(ok && out.contains("Registered service: api"), "{out}");
    assert_eq!(
        http.get("/v1/agent/service/api").await.json()["Tags"],
        json!(["v2"])
    );
    let (ok, out) = tribune_cli(addr, &["maint", "-enable", "-reason", "upgrade"]).await;
    assert!(ok && out.contains("Node maintenance is now enabled"), "{out}");
    let (ok, out) = tribune_cli(addr, &["maint"]).await;
    assert!(
        ok && out.contains("Name:   c1") && out.contains("Reason: upgrade"),
        "{out}"
    );
    wait_for("maintenance to empty ?passing", LIMIT, || async {
        http.get("/v1/health/service/web?passing").await.json() == json!([])
    })
    .await;
    let (ok, out) = tribune_cli(addr, &["maint", "-disable"]).await;
    assert!(ok && out.contains("Node maintenance is now disabled"), "{out}");
    let (ok, out) = tribune_cli(addr, &["services", "deregister", "-id", "api"]).await;
    assert!(ok && out.contains("Deregistered service: api"), "{out}");
    assert_eq!(http.get("/v1/agent/service/api").await.status, 404);

    client.shutdown().await;
    server.shutdown().await;
}
