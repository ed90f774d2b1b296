//! Three Tribune servers of one datacenter on loopback, narrated.
//!
//! The servers start with `bootstrap_expect = 3`, each with its own data directory (temporary
//! unless `--data-dir` is given), find each other in the LAN gossip pool through `retry_join` and
//! elect a leader. The
//! narration then writes a key through one follower and reads it through the other, stops the
//! leader abruptly, times how long the datacenter takes to accept writes again, reads the key on a
//! survivor, and restarts the stopped server from its disk to show it catch up. Then the three keep
//! serving Consul's HTTP API until Ctrl-C; `--exit-after-narration` stops there instead.
//!
//! Run with `cargo run --example three_server_dc` (the README's first command does).

#[path = "support/narration.rs"]
mod narration;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use narration::{Reply, say};
use tribune::config::Config;
use tribune::{Node, NodeHandle};

const SERVERS: usize = 3;
/// How long the narration waits for any one step before it gives up.
const STEP_DEADLINE: Duration = Duration::from_secs(30);

struct Options {
    data_dir: Option<PathBuf>,
    exit_after_narration: bool,
    first_http_port: u16,
}

fn usage() -> String {
    r"usage: three_server_dc [--data-dir DIR] [--http-port PORT] [--exit-after-narration]

  --data-dir DIR           keep the servers' state in DIR/s1, DIR/s2, DIR/s3 (default: temporary)
  --http-port PORT         HTTP API of s1 on PORT, s2 on PORT+1, s3 on PORT+2 (default 8500), raft
                           on 8300/8310/8320, LAN gossip on 8301/8311/8321; 0 picks free ports
  --exit-after-narration   stop once the narration is done instead of serving until Ctrl-C"
        .to_owned()
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        data_dir: None,
        exit_after_narration: false,
        first_http_port: 8500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data-dir" => options.data_dir = Some(args.next().ok_or_else(usage)?.into()),
            "--http-port" => {
                let port = args.next().ok_or_else(usage)?;
                options.first_http_port = port
                    .parse()
                    .map_err(|_| format!("--http-port: {port:?} is not a port number\n\n{}", usage()))?;
            }
            "--exit-after-narration" => options.exit_after_narration = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n\n{}", usage())),
        }
    }
    Ok(options)
}

/// One server's settings: the ones that stay the same across a restart of it.
struct Slot {
    name: String,
    data_dir: PathBuf,
    http_port: u16,
    server_port: u16,
    serf_port: u16,
    handle: Option<NodeHandle>,
}

fn server_config(slot: &Slot, join: Vec<String>) -> Config {
    let mut config = Config::dev();
    config.node_name = slot.name.clone();
    config.data_dir = Some(slot.data_dir.clone());
    config.bootstrap_expect = SERVERS as u32;
    config.ports.http = Some(slot.http_port);
    config.ports.server = Some(slot.server_port);
    config.ports.serf_lan = Some(slot.serf_port);
    config.retry_join = join;
    config.retry_interval = Duration::from_millis(200);
    config
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(options).await {
        eprintln!("three_server_dc: {e}");
        std::process::exit(1);
    }
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let root = options
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().to_owned());
    let mut slots: Vec<Slot> = (0..SERVERS)
        .map(|i| Slot {
            name: format!("s{}", i + 1),
            data_dir: root.join(format!("s{}", i + 1)),
            http_port: match options.first_http_port {
                0 => 0,
                base => base.saturating_add(i as u16),
            },
            // Consul's server port is 8300 and its LAN gossip port 8301; servers here take
            // 8300/8310/8320 and 8301/8311/8321. Fixed ports let a later run reuse --data-dir.
            server_port: match options.first_http_port {
                0 => 0,
                _ => 8300u16.saturating_add(10 * i as u16),
            },
            serf_port: match options.first_http_port {
                0 => 0,
                _ => 8301u16.saturating_add(10 * i as u16),
            },
            handle: None,
        })
        .collect();

    say(&format!(
        "Starting {SERVERS} servers of datacenter dc1 with bootstrap_expect = {SERVERS}, state under {}",
        root.display()
    ));
    let started = Instant::now();
    let mut joined: Vec<String> = Vec::new();
    for slot in &mut slots {
        let handle = Node::start(server_config(slot, joined.clone()))
            .await
            .map_err(|e| {
                format!(
                    "{}: {e} (is port {} free? try --http-port 0)",
                    slot.name, slot.http_port
                )
            })?;
        // Pin the ports the OS picked, so a restarted server comes back where its peers expect it.
        slot.server_port = handle.rpc_addr().port();
        slot.http_port = handle.http_addr().map_or(0, |a| a.port());
        let serf = handle.serf_lan_addr().ok_or("the LAN gossip pool is disabled")?;
        slot.serf_port = serf.port();
        joined.push(serf.to_string());
        say(&format!(
            "  {} serves HTTP on {}, raft on {}, LAN gossip on {}",
            slot.name,
            describe_http(&handle),
            handle.rpc_addr(),
            serf
        ));
        slot.handle = Some(handle);
    }

    let leader = wait_for_leader(&slots).await?;
    say(&format!(
        "The datacenter formed in {} ms: {} is the leader, the others follow.",
        started.elapsed().as_millis(),
        slots[leader].name
    ));

    let followers: Vec<usize> = (0..SERVERS).filter(|&i| i != leader).collect();
    let (writer, reader) = (followers[0], followers[1]);
    let put = http(&slots[writer], "PUT", "/v1/kv/tribune/greeting", "hello from dc1").await?;
    say(&format!(
        "PUT /v1/kv/tribune/greeting on follower {} -> {} {} (forwarded to the leader, committed by a quorum)",
        slots[writer].name,
        put.status,
        put.body.trim()
    ));
    let get = http(&slots[reader], "GET", "/v1/kv/tribune/greeting?raw", "").await?;
    say(&format!(
        "GET on follower {} -> {} {:?}, X-Consul-Index {}",
        slots[reader].name,
        get.status,
        get.body,
        get.header("x-consul-index").unwrap_or("?")
    ));

    say(&format!("Stopping the leader {} abruptly.", slots[leader].name));
    let killed = Instant::now();
    drop(slots[leader].handle.take());
    let survivor = writer;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let put = http(
            &slots[survivor],
            "PUT",
            "/v1/kv/tribune/after-failover",
            "still here",
        )
        .await;
        if matches!(&put, Ok(r) if r.status == 200) {
            break;
        }
        if killed.elapsed() > STEP_DEADLINE {
            return Err("no write succeeded within 30 s of stopping the leader".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_leader = wait_for_leader(&slots).await?;
    say(&format!(
        "{} is the new leader; the first write after the stop succeeded {} ms later ({attempts} attempts).",
        slots[new_leader].name,
        killed.elapsed().as_millis()
    ));
    let get = http(&slots[survivor], "GET", "/v1/kv/tribune/greeting?raw", "").await?;
    say(&format!(
        "GET /v1/kv/tribune/greeting on {} -> {} {:?}: nothing acknowledged was lost.",
        slots[survivor].name, get.status, get.body
    ));

    say(&format!(
        "Restarting {} from its data directory.",
        slots[leader].name
    ));
    let others: Vec<String> = slots
        .iter()
        .filter_map(|s| {
            s.handle
                .as_ref()
                .and_then(|h| h.serf_lan_addr())
                .map(|a| a.to_string())
        })
        .collect();
    let restarted = start_again(&slots[leader], others).await?;
    slots[leader].handle = Some(restarted);
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let get = http(
            &slots[leader],
            "GET",
            "/v1/kv/tribune/after-failover?stale&raw",
            "",
        )
        .await;
        if let Ok(r) = &get
            && r.status == 200
        {
            say(&format!(
                "{} rejoined and caught up: a stale read of the write made while it was down -> {:?}",
                slots[leader].name, r.body
            ));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not catch up within 30 s", slots[leader].name).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    if options.exit_after_narration {
        say("Done; stopping the servers.");
    } else {
        say("The datacenter keeps serving Consul's HTTP API; try:");
        for slot in &slots {
            if let Some(handle) = &slot.handle {
                say(&format!(
                    "  curl -s http://{}/v1/kv/tribune/greeting?raw   # {}",
                    describe_http(handle),
                    slot.name
                ));
            }
        }
        say("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
        say("Stopping the servers.");
    }
    for slot in &mut slots {
        if let Some(handle) = slot.handle.take() {
            handle.shutdown().await;
        }
    }
    Ok(())
}

/// Starts a stopped server again over its data directory and ports. Its storage may still be
/// held for a moment by the tasks of the abrupt stop, so it retries until the deadline.
async fn start_again(slot: &Slot, join: Vec<String>) -> Result<NodeHandle, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        match Node::start(server_config(slot, join.clone())).await {
            Ok(handle) => return Ok(handle),
            Err(e) if Instant::now() > deadline => return Err(format!("{}: {e}", slot.name).into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until every running server agrees on one leader and returns its slot.
async fn wait_for_leader(slots: &[Slot]) -> Result<usize, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let running: Vec<&NodeHandle> = slots.iter().filter_map(|s| s.handle.as_ref()).collect();
        let leaders: Vec<Option<String>> = running.iter().map(|h| h.leader()).collect();
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| l.as_deref() == Some(first.as_str()))
            && let Some(index) = slots
                .iter()
                .position(|s| s.handle.as_ref().is_some_and(|h| h.is_leader()))
        {
            return Ok(index);
        }
        if Instant::now() > deadline {
            return Err("no leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe_http(handle: &NodeHandle) -> String {
    handle
        .http_addr()
        .map_or_else(|| "(disabled)".to_owned(), |a| a.to_string())
}

/// One request to `slot`'s HTTP API.
async fn http(
    slot: &Slot,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let addr = slot
        .handle
        .as_ref()
        .and_then(NodeHandle::http_addr)
        .ok_or_else(|| format!("{} is not serving HTTP", slot.name))?;
    narration::request(addr, &slot.name, method, path, body).await
}
