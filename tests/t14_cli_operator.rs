//! The `tribune` binary's operator verbs against a development server: `snapshot save|restore|agent`
//! through `/v1/snapshot`, `operator raft list-peers`, `acl set-agent-token`, and the gossip pool's
//! `members` and `leave`.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::mpsc;

use common::process::{AgentProcess, STEP, binary};
use common::{dev_server, request, start_leader};
use tribune::config::{Config, DefaultPolicy};

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

async fn run(addr: SocketAddr, token: Option<&str>, args: &[&str]) -> Ran {
    let mut command = binary();
    command.arg(format!("-http-addr={addr}")).args(args);
    if let Some(token) = token {
        command.env("TRIBUNE_HTTP_TOKEN", token);
    }
    let ran = Ran::from(
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(
        ran.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        ran.stdout,
        ran.stderr
    );
    ran
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_save_inspect_restore() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    for key in ["a", "b", "c"] {
        let reply = request(addr, "PUT", &format!("/v1/kv/snap/{key}"), &[], b"before").await;
        assert_eq!(reply.status, 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let file_arg = file.to_str().unwrap();
    let saved = run(addr, None, &["snapshot", "save", file_arg]).await;
    assert!(
        saved.stdout.starts_with("Saved and verified snapshot to index "),
        "{}",
        saved.stdout
    );
    assert!(!dir.path().join("backup.snap.unverified").exists());

    let inspected = run(addr, None, &["snapshot", "inspect", file_arg]).await;
    let kvs = inspected
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix(" KVS"))
        .unwrap_or_else(|| panic!("{}", inspected.stdout));
    assert!(kvs.trim_start().starts_with("3 "), "{}", inspected.stdout);

    // Change the state, restore, and find it as it was saved.
    request(addr, "PUT", "/v1/kv/snap/a", &[], b"after").await;
    request(addr, "DELETE", "/v1/kv/snap/b", &[], b"").await;
    let restored = run(addr, None, &["snapshot", "restore", file_arg]).await;
    assert_eq!(restored.stdout, "Restored snapshot\n");
    for key in ["a", "b", "c"] {
        let reply = request(addr, "GET", &format!("/v1/kv/snap/{key}?raw"), &[], b"").await;
        assert_eq!((reply.status, reply.text()), (200, "before".to_owned()), "{key}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_agent_saves_periodically_and_keeps_the_newest() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .arg(format!("-http-addr={addr}"))
        .args(["snapshot", "agent", "-interval=50ms", "-retain=2"])
        .arg(format!("-local-path={}", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, output) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut saves = 0;
    while saves < 4 {
        let line = output.recv_timeout(STEP).expect("a line from the snapshot agent");
        if line.starts_with("Saved snapshot ") {
            saves += 1;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "{status}");
    let mut kept: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter()
            .all(|name| name.starts_with("tribune-") && name.ends_with(".snap")),
        "{kept:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_peers_shows_the_leader() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    let peers = run(addr, None, &["operator", "raft", "list-peers"]).await;
    let mut lines = peers.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "dev");
    assert_eq!(row[1], node.node_id().to_string());
    assert_eq!(row[2], node.rpc_addr().to_string());
    assert_eq!(&row[3..], ["leader", "true", "3"]);
    assert!(lines.next().is_none());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn set_agent_token_changes_the_default_token() {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    let node = start_leader(config).await;
    let addr = node.http_addr().unwrap();
    let boot = request(addr, "PUT", "/v1/acl/bootstrap", &[], b"").await;
    let management = boot.json()["SecretID"].as_str().unwrap().to_owned();
    assert_eq!(request(addr, "PUT", "/v1/kv/x", &[], b"1").await.status, 403);

    let set = run(
        addr,
        Some(&management),
        &["acl", "set-agent-token", "default", &management],
    )
    .await;
    assert_eq!(set.stdout, "ACL token \"default\" set successfully\n");
    // Requests without a token now run as the default token.
    assert_eq!(request(addr, "PUT", "/v1/kv/x", &[], b"1").await.status, 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn members_lists_the_pool() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    let members = run(addr, None, &["members"]).await;
    let mut lines = members.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "dev");
    assert_eq!(row[1], node.serf_lan_addr().unwrap().to_string());
    assert_eq!(&row[2..4], ["alive", "server"]);
    assert_eq!(row[6], "dc1");
    let detailed = run(addr, None, &["members", "-detailed"]).await;
    assert!(detailed.stdout.contains("role=consul"), "{}", detailed.stdout);
    // Nothing matches: Consul's exit code 2.
    let mut command = binary();
    command
        .arg(format!("-http-addr={addr}"))
        .args(["members", "-status=failed"]);
    let status = tokio::task::spawn_blocking(move || command.status().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(2));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leave_stops_the_agent() {
    let mut agent = AgentProcess::spawn_dev();
    let left = run(agent.http, None, &["leave"]).await;
    assert_eq!(left.stdout, "Graceful leave complete\n");
    agent.wait_line("Agent left the cluster");
    let status = tokio::task::block_in_place(|| agent.child.wait()).unwrap();
    assert!(status.success(), "{status}");
}
