//! Three `tribune agent` processes on loopback form a datacenter with `bootstrap_expect = 3` and
//! `retry_join` to each other's LAN gossip addresses. The leader is killed with SIGKILL: writes
//! resume on a new leader; the killed server restarts from its disk and catches up; then all three
//! stop and restart, and every acknowledged write is still there.
#![cfg(all(feature = "cli", feature = "rocksdb"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::process::{AgentProcess, STEP};
use common::{request, wait_for};

const SERVERS: usize = 3;

/// One server's settings, the same across restarts.
struct Slot {
    name: String,
    data_dir: PathBuf,
    http_port: u16,
    rpc_port: u16,
    serf_port: u16,
}

impl Slot {
    fn serf_addr(&self) -> String {
        format!("127.0.0.1:{}", self.serf_port)
    }

    fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    fn start(&self, all: &[Slot]) -> AgentProcess {
        let mut args = vec![
            "-server".to_owned(),
            format!("-bootstrap-expect={SERVERS}"),
            format!("-node={}", self.name),
            format!("-data-dir={}", self.data_dir.display()),
            "-bind=127.0.0.1".to_owned(),
            "-client=127.0.0.1".to_owned(),
            format!("-http-port={}", self.http_port),
            format!("-server-port={}", self.rpc_port),
            format!("-serf-lan-port={}", self.serf_port),
            "-serf-wan-port=-1".to_owned(),
            "-retry-interval=200ms".to_owned(),
        ];
        for other in all.iter().filter(|other| other.name != self.name) {
            args.push(format!("-retry-join={}", other.serf_addr()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = AgentProcess::spawn(&args);
        assert_eq!(agent.http, self.http_addr());
        agent
    }
}

fn slots(root: &Path) -> Vec<Slot> {
    (1..=SERVERS)
        .map(|n| Slot {
            name: format!("s{n}"),
            data_dir: root.join(format!("s{n}")),
            http_port: common::ports::free_port(),
            rpc_port: common::ports::free_port(),
            serf_port: common::ports::free_port(),
        })
        .collect()
}

/// The leader's RPC address as `addr` reports it ("" when it knows none).
async fn leader_seen_by(addr: SocketAddr) -> String {
    let reply = request(addr, "GET", "/v1/status/leader", &[], b"").await;
    if reply.status != 200 {
        return String::new();
    }
    reply.json().as_str().unwrap_or_default().to_owned()
}

/// The running server every running server reports as leader, if they agree on one.
async fn try_agreed_leader(slots: &[Slot], running: &[bool]) -> Option<usize> {
    let mut seen = Vec::new();
    for (slot, _) in slots.iter().zip(running).filter(|(_, up)| **up) {
        seen.push(leader_seen_by(slot.http_addr()).await);
    }
    let first = seen.first()?.clone();
    let index = slots.iter().position(|slot| slot.rpc_addr() == first)?;
    (seen.iter().all(|addr| *addr == first) && running[index]).then_some(index)
}

/// Waits until every running server reports the same leader, one of the running servers; returns its index.
async fn agreed_leader(slots: &[Slot], running: &[bool]) -> usize {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Some(leader) = try_agreed_leader(slots, running).await {
            return leader;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the running servers did not agree on a running leader within {STEP:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Writes `key` through `addr` until the datacenter acknowledges it (`true`).
async fn write_acknowledged(addr: SocketAddr, key: &str, value: &str) {
    let path = format!("/v1/kv/{key}");
    wait_for(&format!("a write of {key} to be acknowledged"), STEP, || {
        let path = path.clone();
        async move {
            let reply = request(addr, "PUT", &path, &[], value.as_bytes()).await;
            reply.status == 200 && reply.text() == "true"
        }
    })
    .await;
}

/// Waits until `addr` serves `key` with `value` (stale reads: this server's own state).
async fn wait_value(addr: SocketAddr, key: &str, value: &str, what: &str) {
    let path = format!("/v1/kv/{key}?raw&stale");
    wait_for(what, STEP, || {
        let path = path.clone();
        async move {
            let reply = request(addr, "GET", &path, &[], b"").await;
            reply.status == 200 && reply.text() == value
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_survive_a_leader_kill_and_a_full_restart() {
    let root = tempfile::tempdir().unwrap();
    let slots = slots(root.path());
    let mut agents: Vec<Option<AgentProcess>> = slots.iter().map(|slot| Some(slot.start(&slots))).collect();
    let mut running = [true; SERVERS];
    let mut acknowledged = Vec::new();

    let leader = agreed_leader(&slots, &running).await;
    let follower = (leader + 1) % SERVERS;
    for n in 0..5 {
        let (key, value) = (format!("before/{n}"), format!("v{n}"));
        write_acknowledged(slots[follower].http_addr(), &key, &value).await;
        acknowledged.push((key, value));
    }

    // SIGKILL the leader: no goodbye, no flush beyond what raft already synced.
    let mut killed = agents[leader].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    drop(killed);
    running[leader] = false;
    let new_leader = agreed_leader(&slots, &running).await;
    assert_ne!(new_leader, leader);
    for n in 0..5 {
        let (key, value) = (format!("after/{n}"), format!("w{n}"));
        write_acknowledged(slots[new_leader].http_addr(), &key, &value).await;
        acknowledged.push((key, value));
    }

    // The killed server restarts from its data directory and catches up.
    agents[leader] = Some(slots[leader].start(&slots));
    let (last_key, last_value) = acknowledged.last().cloned().unwrap();
    wait_value(
        slots[leader].http_addr(),
        &last_key,
        &last_value,
        "the restarted server to catch up",
    )
    .await;

    // Stop everyone cleanly, then start everyone again: every acknowledged write is there.
    for agent in agents.iter_mut() {
        let mut agent = agent.take().unwrap();
        agent.signal("TERM");
        agent.wait_line("Shutdown complete");
        let status = tokio::task::block_in_place(|| agent.child.wait()).unwrap();
        assert!(status.success(), "{status}");
    }
    let _agents: Vec<AgentProcess> = slots.iter().map(|slot| slot.start(&slots)).collect();
    let running = [true; SERVERS];
    let leader = agreed_leader(&slots, &running).await;
    for (key, value) in &acknowledged {
        let reply = request(
            slots[leader].http_addr(),
            "GET",
            &format!("/v1/kv/{key}?raw"),
            &[],
            b"",
        )
        .await;
        assert_eq!((reply.status, reply.text()), (200, value.clone()), "{key}");
    }
}
