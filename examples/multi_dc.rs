//! Two datacenters on loopback, narrated: dc1 with three servers, dc2 with one.
//!
//! Each datacenter forms on its own (its own raft, its own data). The narration joins the WAN pool
//! once — dc2's server through one server of dc1 — and shows that every server of both
//! datacenters appears in every WAN member list. It writes a key in dc1 and shows that dc2 does
//! not have it, reads it through dc2 with `?dc=dc1`, and writes into dc2 from a follower of dc1.
//! Then it stops dc2's server: dc1 answers `Remote DC has no server currently reachable` at once,
//! and `No path to datacenter` for a datacenter nobody knows. dc2's server comes back over its data
//! directory and is routed to again. Then all four keep serving until Ctrl-C;
//! `--exit-after-narration` stops there instead.
//!
//! Run with `cargo run --example multi_dc`.

#[path = "support/narration.rs"]
mod narration;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use narration::{Reply, say};
use tribune::config::Config;
use tribune::{Node, NodeHandle};

/// How long the narration waits for any one step before it gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() {
    let exit_after_narration = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--exit-after-narration") => true,
        Some(_) => {
            eprintln!("usage: multi_dc [--exit-after-narration]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(exit_after_narration).await {
        eprintln!("multi_dc: {e}");
        std::process::exit(1);
    }
}

/// A server of `datacenter` on loopback with every port the OS's choice and the WAN pool on.
fn server(datacenter: &str, name: &str, data_dir: &Path, expect: u32, join: &[&NodeHandle]) -> Config {
    let mut config = Config::dev();
    config.datacenter = datacenter.to_owned();
    config.node_name = name.to_owned();
    config.data_dir = Some(data_dir.join(name));
    config.bootstrap_expect = expect;
    config.ports.serf_wan = Some(0);
    config.retry_join = join
        .iter()
        .filter_map(|n| n.serf_lan_addr())
        .map(|a| a.to_string())
        .collect();
    config.retry_interval = Duration::from_millis(200);
    // Loopback answers in microseconds: probe the WAN pool every 200 ms, not memberlist's 5 s, so
    // a stopped datacenter is noticed within the narration.
    config.gossip_wan.probe_interval = Some(Duration::from_millis(200));
    config.gossip_wan.probe_timeout = Some(Duration::from_millis(100));
    config
}

async fn run(exit_after_narration: bool) -> Result<(), Error> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().to_owned();

    say("Starting datacenter dc1: three servers, bootstrap_expect = 3.");
    let s1 = Node::start(server("dc1", "s1", &root, 3, &[])).await?;
    let s2 = Node::start(server("dc1", "s2", &root, 3, &[&s1])).await?;
    let s3 = Node::start(server("dc1", "s3", &root, 3, &[&s1, &s2])).await?;
    let dc1 = [s1, s2, s3];
    wait_until("dc1 to elect a leader", || async {
        dc1.iter().any(NodeHandle::is_leader)
    })
    .await?;
    say("Starting datacenter dc2: one server, bootstrap_expect = 1.");
    let mut d1 = Some(Node::start(server("dc2", "d1", &root, 1, &[])).await?);
    let dc2 = d1.as_ref().ok_or("dc2 did not start")?;
    wait_until("dc2 to elect a leader", || async { dc2.is_leader() }).await?;

    let wan = dc1[0].serf_wan_addr().ok_or("s1 runs no WAN pool")?;
    let join = get(dc2, "PUT", &format!("/v1/agent/join/{wan}?wan=1"), "").await?;
    say(&format!(
        "PUT /v1/agent/join/{wan}?wan=1 on d1 (tribune join -wan) -> {}",
        join.status
    ));
    let started = Instant::now();
    for node in dc1.iter().chain([dc2]) {
        wait_until("every server in every WAN member list", || async {
            wan_members(node).await.len() == 4
        })
        .await?;
    }
    say(&format!(
        "Within {} ms every server lists the WAN pool as {:?}:",
        started.elapsed().as_millis(),
        wan_members(dc2).await
    ));
    say("  s2 and s3 were never told to join it: their datacenter's servers flooded them in.");
    let datacenters = get(&dc1[0], "GET", "/v1/catalog/datacenters", "").await?;
    say(&format!(
        "GET /v1/catalog/datacenters on s1 -> {}",
        datacenters.body.trim()
    ));

    let follower = dc1.iter().find(|n| !n.is_leader()).ok_or("dc1 has no follower")?;
    let put = get(follower, "PUT", "/v1/kv/app/color", "blue").await?;
    say(&format!(
        "PUT /v1/kv/app/color = blue in dc1 -> {} {}",
        put.status,
        put.body.trim()
    ));
    let absent = get(dc2, "GET", "/v1/kv/app/color", "").await?;
    say(&format!(
        "GET /v1/kv/app/color on d1 -> {}: each datacenter keeps its own data",
        absent.status
    ));
    let remote = get(dc2, "GET", "/v1/kv/app/color?dc=dc1&raw", "").await?;
    say(&format!(
        "GET /v1/kv/app/color?dc=dc1 on d1 -> {} {:?}, X-Consul-Index {} (dc1's), served by a dc1 server",
        remote.status,
        remote.body,
        remote.header("x-consul-index").unwrap_or("?")
    ));
    let write = get(follower, "PUT", "/v1/kv/app/color?dc=dc2", "green").await?;
    let there = get(dc2, "GET", "/v1/kv/app/color?raw", "").await?;
    say(&format!(
        "PUT ?dc=dc2 = green from a follower of dc1 -> {} {}; d1 now reads {:?}",
        write.status,
        write.body.trim(),
        there.body
    ));

    say("Stopping dc2's only server.");
    let d1_wan = dc2.serf_wan_addr();
    if let Some(handle) = d1.take() {
        handle.shutdown().await;
    }
    let down = get(&dc1[0], "GET", "/v1/kv/app/color?dc=dc2", "").await?;
    say(&format!(
        "GET ?dc=dc2 on s1 -> {} {:?}",
        down.status,
        down.body.trim()
    ));
    let nowhere = get(&dc1[0], "GET", "/v1/kv/app/color?dc=dc9", "").await?;
    say(&format!(
        "GET ?dc=dc9 on s1 -> {} {:?}",
        nowhere.status,
        nowhere.body.trim()
    ));
    wait_until("s1 to see d1 failed in the WAN pool", || async {
        wan_status(&dc1[0], "d1.dc2").await == Some(4)
    })
    .await?;
    say("The WAN pool reports d1.dc2 failed (status 4) on s1.");

    say("Restarting d1 over its data directory; it rejoins through retry_join_wan.");
    let mut again = server("dc2", "d1", &root, 1, &[]);
    again.retry_join_wan = vec![wan.to_string()];
    again.retry_interval_wan = Duration::from_millis(200);
    if let Some(port) = d1_wan.map(|a| a.port()) {
        again.ports.serf_wan = Some(port);
    }
    let restarted = start_again(again).await?;
    let back = Instant::now();
    wait_until("dc2 routed to again", || async {
        get(&dc1[0], "GET", "/v1/kv/app/color?dc=dc2&raw", "")
            .await
            .is_ok_and(|r| r.status == 200 && r.body == "green")
    })
    .await?;
    say(&format!(
        "{} ms later s1 reads dc2's app/color again: \"green\", kept on d1's disk.",
        back.elapsed().as_millis()
    ));
    d1 = Some(restarted);

    if exit_after_narration {
        say("Done; stopping the servers.");
    } else {
        say("Both datacenters keep serving Consul's HTTP API; try:");
        for (name, node) in [("s1", &dc1[0])].into_iter().chain(d1.iter().map(|n| ("d1", n))) {
            if let Some(addr) = node.http_addr() {
                say(&format!(
                    "  curl -s 'http://{addr}/v1/kv/app/color?dc=dc1&raw'   # through {name}"
                ));
            }
        }
        say("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
        say("Stopping the servers.");
    }
    if let Some(handle) = d1 {
        handle.shutdown().await;
    }
    for node in dc1 {
        node.shutdown().await;
    }
    Ok(())
}

/// Starts a stopped server again; its storage may still be held for a moment by the stop.
async fn start_again(config: Config) -> Result<NodeHandle, Error> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        match Node::start(config.clone()).await {
            Ok(handle) => return Ok(handle),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn get(node: &NodeHandle, method: &str, path: &str, body: &str) -> Result<Reply, Error> {
    let addr: SocketAddr = node.http_addr().ok_or("HTTP is disabled")?;
    narration::request(addr, &addr.to_string(), method, path, body).await
}

/// The names of the WAN members `node` sees alive.
async fn wan_members(node: &NodeHandle) -> Vec<String> {
    let Ok(reply) = get(node, "GET", "/v1/agent/members?wan=1", "").await else {
        return Vec::new();
    };
    let members: serde_json::Value = serde_json::from_str(&reply.body).unwrap_or_default();
    let mut names: Vec<String> = members
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Status"] == 1)
        .filter_map(|m| m["Name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The WAN status `node` reports for `member` (1 alive, 3 left, 4 failed).
async fn wan_status(node: &NodeHandle, member: &str) -> Option<u64> {
    let reply = get(node, "GET", "/v1/agent/members?wan=1", "").await.ok()?;
    let members: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    members.as_array()?.iter().find(|m| m["Name"] == member)?["Status"].as_u64()
}

/// Waits until `condition` holds, up to [`STEP_DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut condition: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STEP_DEADLINE;
    while !condition().await {
        if Instant::now() > deadline {
            return Err(format!("gave up waiting for {what} after {STEP_DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
