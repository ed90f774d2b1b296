//! Operating one agent as Consul's operators do: `tribune reload` and SIGHUP replace the services
//! and watches the configuration files define (and keep the API's), `tribune monitor` streams the agent's log
//! lines (debug ones too from an agent at info), `/v1/agent/host` describes the machine,
//! `tribune services register FILE` reads definition files, and DNS listens on Consul's port 8600
//! unless told otherwise.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::process::{AgentProcess, binary};
use common::{request, tribune_cli, wait_for};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A `tribune agent -dev` process on free ports, with `extra` flags.
fn dev_agent(extra: &[&str]) -> AgentProcess {
    let mut args = vec![
        "-dev",
        "-http-port=0",
        "-server-port=0",
        "-serf-lan-port=0",
        "-serf-wan-port=0",
    ];
    args.extend_from_slice(extra);
    AgentProcess::spawn(&args)
}

/// The agent's own services, by ID.
async fn services(http: SocketAddr) -> Vec<String> {
    let reply = request(http, "GET", "/v1/agent/services", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut ids: Vec<String> = reply.json().as_object().unwrap().keys().cloned().collect();
    ids.sort();
    ids
}

async fn wait_for_services(http: SocketAddr, expected: &[&str]) {
    wait_for(
        &format!("the agent's services to be {expected:?}"),
        LIMIT,
        || async { services(http).await == expected },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_and_sighup_replace_the_files_services_and_keep_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.hcl");
    std::fs::write(&file, "service {\n  name = \"web\"\n  port = 80\n}\n").unwrap();
    let config = format!("-config-file={}", file.display());
    let mut agent = dev_agent(&[&config]);
    wait_for_services(agent.http, &["web"]).await;
    let api = request(
        agent.http,
        "PUT",
        "/v1/agent/service/register",
        &[],
        br#"{"Name": "api"}"#,
    )
    .await;
    assert_eq!(api.status, 200, "{}", api.text());

    std::fs::write(
        &file,
        "services = [{ name = \"db\" }, { name = \"cache\", id = \"cache-1\" }]\n",
    )
    .unwrap();
    let (ok, out) = tribune_cli(agent.http, &["reload"]).await;
    assert!(ok && out.contains("Configuration reload triggered"), "{out}");
    assert_eq!(
        services(agent.http).await,
        ["api", "cache-1", "db"],
        "the API's service stays"
    );

    std::fs::write(&file, "service { name = \"queue\" }\n").unwrap();
    agent.signal("HUP");
    agent.wait_line("Caught signal: hangup");
    wait_for_services(agent.http, &["api", "queue"]).await;

    // A file the agent cannot read fails the reload, naming the file, and changes nothing.
    std::fs::write(&file, "servce { name = \"typo\" }\n").unwrap();
    let (ok, out) = tribune_cli(agent.http, &["reload"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("Failed to reload configs") && out.contains("services.hcl"),
        "{out}"
    );
    assert_eq!(services(agent.http).await, ["api", "queue"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn monitor_streams_log_lines_at_the_level_asked() {
    let agent = dev_agent(&["-log-level=info"]);
    let (ok, out) = tribune_cli(agent.http, &["monitor", "-log-level=bogus"]).await;
    assert!(!ok && out.contains("Unknown log level: bogus"), "{out}");

    for (flags, expect) in [
        (
            vec!["monitor"],
            "[INFO]  tribune::http::agent_ops: reloaded the configuration's services and checks",
        ),
        (
            vec!["monitor", "-log-json"],
            "\"@message\":\"reloaded the configuration's services and checks\"",
        ),
        // Below the agent's own level (info): the monitor's filter lets debug lines through.
        (
            vec!["monitor", "-log-level=debug"],
            "[DEBUG] tribune::http::metrics: Request finished: method=PUT url=/v1/agent/reload",
        ),
    ] {
        let mut monitor = binary()
            .arg(format!("-http-addr={}", agent.http))
            .args(&flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = monitor.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        // The monitor subscribes when its request arrives: reload until a reload's line shows up.
        let mut seen = None;
        for _ in 0..50 {
            let (ok, out) = tribune_cli(agent.http, &["reload"]).await;
            assert!(ok, "{out}");
            if let Some(line) = received.try_iter().find(|line| line.contains(expect)) {
                seen = Some(line);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = monitor.kill();
        let _ = monitor.wait();
        let line = seen.unwrap_or_else(|| panic!("`tribune {flags:?}` never printed {expect:?}"));
        if flags.contains(&"-log-json") {
            let json: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(json["@level"], "info", "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn host_describes_the_machine_in_consuls_shape() {
    let agent = dev_agent(&[]);
    let host = request(agent.http, "GET", "/v1/agent/host", &[], b"").await;
    assert_eq!(host.status, 200, "{}", host.text());
    let host = host.json();
    assert!(host["Memory"]["total"].as_u64().unwrap() > 0, "{host}");
    assert!(!host["CPU"].as_array().unwrap().is_empty(), "{host}");
    assert!(!host["Host"]["hostname"].as_str().unwrap().is_empty(), "{host}");
    assert!(host["Disk"]["total"].as_u64().unwrap() > 0, "{host}");
    assert_eq!(host["Errors"], serde_json::json!([]), "{host}");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_register_and_deregister_read_definition_files() {
    let agent = dev_agent(&[]);
    let dir = tempfile::tempdir().unwrap();
    let hcl = dir.path().join("web.hcl");
    std::fs::write(
        &hcl,
        "service {\n  name = \"web\"\n  port = 80\n  check {\n    ttl = \"30s\"\n  }\n}\n",
    )
    .unwrap();
    let json = dir.path().join("more.json");
    std::fs::write(
        &json,
        r#"{"services": [{"name": "db", "id": "db-1", "port": 5432}]}"#,
    )
    .unwrap();
    let (hcl, json) = (hcl.display().to_string(), json.display().to_string());

    let (ok, out) = tribune_cli(agent.http, &["services", "register", &hcl, &json]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("Registered service: web") && out.contains("Registered service: db"),
        "{out}"
    );
    assert_eq!(services(agent.http).await, ["db-1", "web"]);
    let checks = request(agent.http, "GET", "/v1/agent/checks", &[], b"")
        .await
        .json();
    assert_eq!(checks["service:web"]["Type"], "ttl", "{checks}");

    let (ok, out) = tribune_cli(agent.http, &["services", "register", "-name=x", &hcl]).await;
    assert!(!ok && out.contains("cannot be mixed"), "{out}");
    let (ok, out) = tribune_cli(agent.http, &["services", "deregister", &json]).await;
    assert!(ok && out.contains("Deregistered service: db-1"), "{out}");
    assert_eq!(services(agent.http).await, ["web"]);
}

/// With no `ports.dns` and no `-dns-port`, DNS answers on Consul's 8600 of the client address
/// (one of loopback's own, so nothing else on the machine is likely to hold it).
#[tokio::test(flavor = "multi_thread")]
async fn dns_listens_on_consuls_port_by_default() {
    let client_ip = "127.0.86.1";
    let agent = AgentProcess::spawn_exact(&[
        "-dev",
        &format!("-client={client_ip}"),
        "-bind=127.0.0.1",
        "-http-port=0",
        "-server-port=0",
        "-serf-lan-port=0",
        "-serf-wan-port=0",
    ]);
    let mut question = Message::new();
    question
        .set_id(11)
        .set_message_type(MessageType::Query)
        .add_query(Query::query(
            Name::from_ascii("consul.service.consul.").unwrap(),
            RecordType::A,
        ));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server: SocketAddr = format!("{client_ip}:8600").parse().unwrap();
    // The leader registers its `consul` service just after it is elected: ask until it answers.
    wait_for("consul.service.consul on port 8600", LIMIT, || async {
        socket.send_to(&question.to_vec().unwrap(), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        else {
            return false;
        };
        Message::from_vec(&buf[..n])
            .unwrap()
            .answers()
            .iter()
            .any(|r| matches!(r.data(), RData::A(a) if a.0.to_string() == "127.0.0.1"))
    })
    .await;
    drop(agent);
}

/// Accepts HTTP requests on loopback and hands each one's head and body to the test; answers 200.
async fn http_sink() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (requests, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let _ = requests.send((head.to_owned(), body.to_owned()));
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    (addr, received)
}

/// The agent runs the `watches` of its configuration: a script handler gets a key's entry on stdin,
/// an HTTP handler gets the critical checks as the request body with `X-Consul-Index`.
#[tokio::test(flavor = "multi_thread")]
async fn configured_watches_run_script_and_http_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let (sink, mut requests) = http_sink().await;
    let file = dir.path().join("watches.json");
    let config = serde_json::json!({
        "watches": [
            {"type": "key", "key": "alerts/level", "args": ["sh", "-c", format!("cat >> {}", seen.display())]},
            {"type": "checks", "state": "critical", "handler_type": "http",
             "http_handler_config": {"path": format!("http://{sink}/hook"), "method": "POST",
                                     "header": {"x-team": ["core"]}, "timeout": "5s"}}
        ]
    });
    std::fs::write(&file, config.to_string()).unwrap();
    let config = format!("-config-file={}", file.display());
    let agent = dev_agent(&[&config]);

    let put = request(agent.http, "PUT", "/v1/kv/alerts/level", &[], b"red").await;
    assert_eq!(put.status, 200);
    wait_for("the key watch's script to see the entry", LIMIT, || async {
        std::fs::read_to_string(&seen).is_ok_and(|text| {
            text.contains("\"Key\":\"alerts/level\"") && text.contains("\"Value\":\"cmVk\"")
        })
    })
    .await;

    // A TTL check starts critical; the catalog's critical checks change and the hook hears of it.
    let check = request(
        agent.http,
        "PUT",
        "/v1/agent/check/register",
        &[],
        br#"{"Name": "disk", "TTL": "60s"}"#,
    )
    .await;
    assert_eq!(check.status, 200, "{}", check.text());
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (head, body) = tokio::time::timeout_at(deadline, requests.recv())
            .await
            .expect("the HTTP handler was called with the critical check")
            .unwrap();
        assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("x-team: core") && lower.contains("x-consul-index:"),
            "{head}"
        );
        let checks: Value = serde_json::from_str(&body).unwrap();
        if checks.as_array().unwrap().iter().any(|c| c["CheckID"] == "disk") {
            break;
        }
    }
}

/// A reload with another `watches` list stops the old watches and starts the new ones, as Consul's
/// reload replaces its watch plans.
#[tokio::test(flavor = "multi_thread")]
async fn reload_replaces_the_configured_watches() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let file = dir.path().join("watches.json");
    let watch_on = |key: &str| {
        serde_json::json!({"watches": [
            {"type": "key", "key": key, "args": ["sh", "-c", format!("cat >> {}; echo >> {}", seen.display(), seen.display())]}
        ]})
        .to_string()
    };
    std::fs::write(&file, watch_on("deploy/first")).unwrap();
    let config = format!("-config-file={}", file.display());
    let agent = dev_agent(&[&config]);
    let put = |key: &'static str, value: &'static [u8]| async move {
        let reply = request(agent.http, "PUT", &format!("/v1/kv/{key}"), &[], value).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    let seen_text = || std::fs::read_to_string(&seen).unwrap_or_default();
    // base64 of the values below, as the handler sees them.
    put("deploy/first", b"one").await;
    wait_for("the first watch to see its key", LIMIT, || async {
        seen_text().contains("\"Value\":\"b25l\"")
    })
    .await;

    std::fs::write(&file, watch_on("deploy/second")).unwrap();
    let (ok, out) = tribune_cli(agent.http, &["reload"]).await;
    assert!(ok, "{out}");
    put("deploy/second", b"two").await;
    wait_for("the new watch to see its key", LIMIT, || async {
        seen_text().contains("\"Value\":\"dHdv\"")
    })
    .await;
    // The old watch is gone: a change to its key, followed by one to the new key, reaches the
    // handler only through the new watch.
    put("deploy/first", b"old").await;
    put("deploy/second", b"new").await;
    wait_for("the new watch to see the later change", LIMIT, || async {
        seen_text().contains("\"Value\":\"bmV3\"")
    })
    .await;
    assert!(
        !seen_text().contains("\"Value\":\"b2xk\""),
        "the replaced watch still ran: {}",
        seen_text()
    );
}
