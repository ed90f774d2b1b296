//! The command line's federation verbs and `-datacenter` against a small fake agent that records
//! each request and answers in Consul's shapes (`members -wan`, `join -wan`, `force-leave -prune
//! -wan`, `catalog datacenters`, `rtt`), and `-datacenter` against a spawned `tribune agent -dev`.
#![cfg(feature = "cli")]
// The helpers below run only inside tests; a failed step should fail the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/process.rs"]
#[allow(dead_code)]
mod process;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use process::{AgentProcess, STEP, binary};
use serde_json::{Value, json};

/// Every request the fake agent received, as `METHOD path?query`.
type Log = Arc<Mutex<Vec<String>>>;

/// Serves Consul's answers for the paths the commands under test call, on 127.0.0.1:0.
async fn fake_agent() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let recorded = Arc::clone(&log);
    let app = Router::new().fallback(move |method: Method, uri: Uri| {
        let recorded = Arc::clone(&recorded);
        async move {
            recorded.lock().unwrap().push(format!("{method} {uri}"));
            answer(&method, &uri)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, log)
}

fn server_member(name: &str, dc: &str, port: u16, status: u8) -> Value {
    json!({
        "Name": name, "Addr": "127.0.0.1", "Port": port, "Status": status,
        "Tags": {"role": "consul", "dc": dc, "port": "8300", "vsn": "2", "build": "1.21.0:deadbeef"},
    })
}

fn coordinate(x: f64, height: f64) -> Value {
    json!({"Vec": [x, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 0.2, "Adjustment": 0.0, "Height": height})
}

fn answer(method: &Method, uri: &Uri) -> Response {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let ok = |body: Value| (StatusCode::OK, axum::Json(body)).into_response();
    match (method.as_str(), path) {
        ("GET", "/v1/agent/members") if query.contains("wan=1") => ok(json!([
            server_member("s2.dc2", "dc2", 9302, 4),
            server_member("s1.dc1", "dc1", 8302, 1),
        ])),
        ("GET", "/v1/agent/members") => ok(json!([server_member("s1", "dc1", 8301, 1)])),
        ("PUT", p) if p.starts_with("/v1/agent/join/") => {
            if p.ends_with("/bad") {
                (StatusCode::INTERNAL_SERVER_ERROR, "no route to host").into_response()
            } else {
                ok(Value::Null)
            }
        }
        ("PUT", p) if p.starts_with("/v1/agent/force-leave/") => ok(Value::Null),
        ("GET", "/v1/catalog/datacenters") => ok(json!(["dc2", "dc1", "dc3"])),
        ("GET", "/v1/agent/self") => ok(json!({"Config": {"NodeName": "s1", "Datacenter": "dc1"}})),
        ("GET", "/v1/coordinate/nodes") => ok(json!([
            {"Node": "s1", "Segment": "", "Coord": coordinate(0.0, 0.0001)},
            {"Node": "c1", "Segment": "", "Coord": coordinate(0.003, 0.0002)},
        ])),
        ("GET", "/v1/coordinate/datacenters") => ok(json!([
            {"Datacenter": "dc1", "AreaID": "wan", "Coordinates": [{"Node": "s1", "Coord": coordinate(0.0, 0.0001)}]},
            {"Datacenter": "dc2", "AreaID": "wan", "Coordinates": [{"Node": "s2", "Coord": coordinate(0.05, 0.0001)}]},
        ])),
        ("GET", p) if p.starts_with("/v1/kv/") => {
            if query.contains("dc=nowhere") {
                (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter").into_response()
            } else {
                ok(json!([{"Key": "foo", "Value": "YmFy", "Flags": 0, "CreateIndex": 5, "ModifyIndex": 5}]))
            }
        }
        _ => (StatusCode::NOT_FOUND, "unexpected request").into_response(),
    }
}

/// The result of one command.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary against `addr` with `args`.
async fn run(addr: SocketAddr, args: &[&str]) -> Ran {
    let mut command = binary();
    command.arg(format!("-http-addr={addr}")).args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run tribune"))
        .await
        .unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a command that must succeed and returns its output; checks the one request it sent.
async fn run_ok(addr: SocketAddr, log: &Log, args: &[&str], request: &str) -> String {
    log.lock().unwrap().clear();
    let ran = run(addr, args).await;
    assert_eq!(
        ran.code,
        Some(0),
        "{args:?}\nstdout: {}\nstderr: {}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(*log.lock().unwrap(), [request], "{args:?}");
    ran.stdout
}

#[tokio::test]
async fn members_wan_lists_every_datacenters_servers_in_consul_columns() {
    let (addr, log) = fake_agent().await;
    let out = run_ok(addr, &log, &["members", "-wan"], "GET /v1/agent/members?wan=1").await;
    assert_eq!(
        out,
        "Node    Address         Status  Type    Build   Protocol  DC   Partition  Segment\n\
         s1.dc1  127.0.0.1:8302  alive   server  1.21.0  2         dc1  default    <all>\n\
         s2.dc2  127.0.0.1:9302  failed  server  1.21.0  2         dc2  default    <all>\n"
    );
    let out = run_ok(
        addr,
        &log,
        &["members", "-wan", "-status=failed"],
        "GET /v1/agent/members?wan=1",
    )
    .await;
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("s2.dc2"), "{out}");
    run_ok(addr, &log, &["members"], "GET /v1/agent/members").await;
}

#[tokio::test]
async fn join_wan_and_force_leave_send_consul_parameters() {
    let (addr, log) = fake_agent().await;
    let out = run_ok(
        addr,
        &log,
        &["join", "-wan", "127.0.0.2:9302"],
        "PUT /v1/agent/join/127.0.0.2%3A9302?wan=1",
    )
    .await;
    assert_eq!(out, "Successfully joined cluster by contacting 1 nodes.\n");

    log.lock().unwrap().clear();
    let ran = run(addr, &["join", "-wan", "10.9.9.9", "bad"]).await;
    assert_eq!(ran.code, Some(0), "one address answered: {}", ran.stderr);
    assert_eq!(ran.stdout, "Successfully joined cluster by contacting 1 nodes.\n");
    assert!(
        ran.stderr.contains("Error joining address 'bad'"),
        "{}",
        ran.stderr
    );
    let ran = run(addr, &["join", "bad"]).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("Failed to join any nodes."), "{}", ran.stderr);

    let out = run_ok(
        addr,
        &log,
        &["force-leave", "-prune", "-wan", "s2.dc2"],
        "PUT /v1/agent/force-leave/s2.dc2?prune=1&wan=1",
    )
    .await;
    assert_eq!(out, "");
    run_ok(addr, &log, &["force-leave", "s3"], "PUT /v1/agent/force-leave/s3").await;
    run_ok(
        addr,
        &log,
        &["force-leave", "-wan", "s3.dc1"],
        "PUT /v1/agent/force-leave/s3.dc1?wan=1",
    )
    .await;
}

#[tokio::test]
async fn catalog_datacenters_prints_one_per_line_in_the_agents_order() {
    let (addr, log) = fake_agent().await;
    let out = run_ok(
        addr,
        &log,
        &["catalog", "datacenters"],
        "GET /v1/catalog/datacenters",
    )
    .await;
    assert_eq!(out, "dc2\ndc1\ndc3\n");
}

#[tokio::test]
async fn rtt_estimates_from_the_agents_coordinates() {
    let (addr, log) = fake_agent().await;
    // |3 ms| + 0.1 ms + 0.2 ms.
    let out = run_ok(addr, &log, &["rtt", "s1", "c1"], "GET /v1/coordinate/nodes").await;
    assert_eq!(out, "Estimated s1 <-> c1 rtt: 3.300 ms (using LAN coordinates)\n");

    // One name: the other is the agent's own node.
    log.lock().unwrap().clear();
    let ran = run(addr, &["rtt", "c1"]).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "Estimated c1 <-> s1 rtt: 3.300 ms (using LAN coordinates)\n"
    );
    assert_eq!(
        *log.lock().unwrap(),
        ["GET /v1/agent/self", "GET /v1/coordinate/nodes"]
    );

    let out = run_ok(
        addr,
        &log,
        &["rtt", "-wan", "s1.dc1", "s2.dc2"],
        "GET /v1/coordinate/datacenters",
    )
    .await;
    assert_eq!(
        out,
        "Estimated s1.dc1 <-> s2.dc2 rtt: 50.200 ms (using WAN coordinates)\n"
    );
    log.lock().unwrap().clear();
    let ran = run(addr, &["rtt", "-wan", "s2.dc2"]).await;
    assert_eq!(
        ran.stdout,
        "Estimated s2.dc2 <-> s1.dc1 rtt: 50.200 ms (using WAN coordinates)\n"
    );

    let ran = run(addr, &["rtt", "s1", "ghost"]).await;
    assert_eq!(ran.code, Some(1));
    assert_eq!(ran.stderr, "Could not find a coordinate for node \"ghost\"\n");
    let ran = run(addr, &["rtt", "-wan", "s1", "s2.dc2"]).await;
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stderr,
        "Node names must be specified as <node name>.<datacenter> with -wan\n"
    );
    let ran = run(addr, &["rtt", "a", "b", "c"]).await;
    assert_ne!(ran.code, Some(0), "at most two nodes");
}

#[tokio::test]
async fn the_datacenter_flag_reaches_every_request() {
    let (addr, log) = fake_agent().await;
    let out = run_ok(
        addr,
        &log,
        &["kv", "get", "-datacenter=dc2", "foo"],
        "GET /v1/kv/foo?dc=dc2",
    )
    .await;
    assert_eq!(out, "bar\n");
    run_ok(
        addr,
        &log,
        &["-datacenter", "dc2", "kv", "get", "-recurse", "foo"],
        "GET /v1/kv/foo?recurse&dc=dc2",
    )
    .await;
    run_ok(
        addr,
        &log,
        &["--datacenter=east/1 x", "catalog", "datacenters"],
        "GET /v1/catalog/datacenters?dc=east%2F1%20x",
    )
    .await;
    run_ok(
        addr,
        &log,
        &["force-leave", "-prune", "-datacenter=dc2", "s9"],
        "PUT /v1/agent/force-leave/s9?prune=1&dc=dc2",
    )
    .await;
    let ran = run(addr, &["kv", "get", "-datacenter=nowhere", "foo"]).await;
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr
            .contains("Unexpected response code: 500 (No path to datacenter)"),
        "{}",
        ran.stderr
    );
}

/// Reads `/v1/agent/self` until it answers.
async fn agent_self(addr: SocketAddr) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let ran = get_json(addr, "/v1/agent/self").await;
        if let Some(value) = ran {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never answered /v1/agent/self"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET over a raw TCP connection, its body decoded when the status is 200.
async fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // Chunked bodies are not expected from these small answers; a body that fails to parse is retried.
    serde_json::from_str(body).ok()
}

/// The global flag still names the agent's own datacenter for `tribune agent`, before or after the
/// verb, and a command sent with the agent's own datacenter is served locally.
#[tokio::test]
async fn the_datacenter_flag_names_the_agents_datacenter() {
    let ports = [
        "-http-port=0",
        "-server-port=0",
        "-serf-lan-port=0",
        "-serf-wan-port=0",
    ];
    let mut args = vec!["-dev", "-datacenter=East"];
    args.extend(ports);
    let agent = AgentProcess::spawn(&args);
    let config = agent_self(agent.http).await;
    assert_eq!(config["Config"]["Datacenter"], "east", "{config}");

    let deadline = Instant::now() + STEP;
    loop {
        let ran = run(agent.http, &["-datacenter=east", "kv", "put", "greeting", "hi"]).await;
        if ran.code == Some(0) {
            assert_eq!(ran.stdout, "Success! Data written to: greeting\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kv put never succeeded: {}",
            ran.stderr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ran = run(agent.http, &["kv", "get", "-datacenter=east", "greeting"]).await;
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), "hi\n"),
        "{}",
        ran.stderr
    );
}
