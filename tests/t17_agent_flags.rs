//! `tribune agent` accepts the command lines and configuration files written for Consul: the seeds'
//! keys (the UI and the gRPC ports warned about once each; DNS ports and script checks served), `-pid-file`, `-hcl`,
//! `-bootstrap`, `-log-file`/`-log-json`, and leaving the pool on signals as the keys decide.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::process::{AgentProcess, STEP, binary};
use common::{request, wait_for};

/// Loopback, and every port the OS's choice.
const PORTS: [&str; 7] = [
    "-bind=127.0.0.1",
    "-client=127.0.0.1",
    "-http-port=0",
    "-dns-port=0",
    "-server-port=0",
    "-serf-lan-port=0",
    "-serf-wan-port=0",
];

fn with_ports<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(PORTS).collect()
}

async fn wait_for_leader(http: SocketAddr) {
    wait_for("the agent to know its leader", STEP, || async move {
        let reply = request(http, "GET", "/v1/status/leader", &[], b"").await;
        reply.status == 200 && reply.json().as_str().is_some_and(|leader| !leader.is_empty())
    })
    .await;
}

fn stop(mut agent: AgentProcess, signal: &str) {
    agent.signal(signal);
    agent.wait_line("Shutdown complete");
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pid_file_is_written_at_start_and_removed_on_exit() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("run/tribune.pid");
    let flag = format!("-pid-file={}", pid_file.display());
    let agent = AgentProcess::spawn(&with_ports(&["-dev", &flag]));
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), agent.child.id().to_string());
    tokio::task::block_in_place(|| stop(agent, "TERM"));
    assert!(!pid_file.exists(), "the pid file is removed on a clean exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn hcl_fragments_merge_after_the_flags() {
    let agent = AgentProcess::spawn(&with_ports(&[
        "-dev",
        "-node=from-flag",
        "-hcl",
        "node_name = \"from-hcl\"",
        "-hcl=datacenter = \"hcl-dc\"\nnode_name = \"later-hcl\"",
    ]));
    let me = request(agent.http, "GET", "/v1/agent/self", &[], b"")
        .await
        .json();
    assert_eq!(me["Config"]["NodeName"], "later-hcl");
    assert_eq!(me["Config"]["Datacenter"], "hcl-dc");
    tokio::task::block_in_place(|| stop(agent, "INT"));

    let output = binary()
        .args(["agent", "-dev", "-hcl", "ui_colour = \"red\""])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("-hcl argument 1: unknown key `ui_colour`"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_mode_elects_a_single_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("-data-dir={}", dir.path().display());
    let agent = AgentProcess::spawn(&with_ports(&["-server", "-bootstrap", &data, "-node=solo"]));
    wait_for_leader(agent.http).await;
    let me = request(agent.http, "GET", "/v1/agent/self", &[], b"")
        .await
        .json();
    assert_eq!(me["Stats"]["consul"]["bootstrap"], "true");
    tokio::task::block_in_place(|| stop(agent, "INT"));

    let output = binary()
        .args(["agent", "-server", "-bootstrap", "-bootstrap-expect=3", &data])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("flag -bootstrap"), "{stderr}");
    assert!(stderr.contains("mutually exclusive"), "{stderr}");
}

/// A server configuration as Consul's seeds write it; the settings Tribune does not serve yet are
/// warned about once each, in the log file, as JSON lines.
fn seed_config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("server.hcl");
    let data = dir.join("data");
    std::fs::write(
        &file,
        format!(
            r#"
datacenter = "dc1"
data_dir = "{}"
server = true
bootstrap_expect = 1
ui = true
ui_config {{
  enabled = true
  content_path = "/ui/"
  metrics_provider = "prometheus"
}}
ports {{
  dns = 8600
  grpc = 8502
  https = -1
  grpc_tls = 8503
}}
enable_script_checks = false
enable_local_script_checks = true
leave_on_terminate = true
skip_leave_on_interrupt = false
"#,
            data.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_configuration_starts_and_warns_once_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("-config-file={}", seed_config(dir.path()).display());
    let logs = dir.path().join("logs/");
    let log_flag = format!("-log-file={}", logs.display());
    let mut agent = AgentProcess::spawn(&with_ports(&[&config, &log_flag, "-log-json", "-node=seed"]));
    wait_for_leader(agent.http).await;

    let log = std::fs::read_to_string(logs.join("tribune.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|line| line["level"] == "WARN")
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    for expected in [
        "ui: the web UI is not served yet",
        "ports.grpc: gRPC (xDS) is not served yet",
        "ports.grpc_tls: gRPC over TLS is not served yet",
    ] {
        let count = warnings.iter().filter(|w| w.starts_with(expected)).count();
        assert_eq!(count, 1, "{expected:?} in {warnings:#?}");
    }
    assert!(
        !warnings.iter().any(|w| w.starts_with("ports.https")),
        "-1 disables"
    );

    // skip_leave_on_interrupt = false: this server leaves the pool on Ctrl-C, unlike Consul's
    // default for servers.
    agent.signal("INT");
    agent.wait_line("Leaving the cluster");
    agent.wait_line("Shutdown complete");
    let status = tokio::task::block_in_place(|| agent.child.wait()).unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_keeps_its_seat_on_signals_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("-data-dir={}", dir.path().display());
    let mut agent = AgentProcess::spawn(&with_ports(&["-server", "-bootstrap-expect=1", &data]));
    wait_for_leader(agent.http).await;
    agent.signal("INT");
    // The line after "Gracefully shutting down" is "Leaving the cluster" only when leaving.
    agent.wait_line("Gracefully shutting down");
    let next = agent.wait_line("==>");
    assert!(next.contains("Shutdown complete"), "{next}");
}
