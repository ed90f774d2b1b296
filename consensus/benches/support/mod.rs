//! Shared by the criterion bench and the load report: a three-server loopback cluster over a
//! counting state machine, with the durable log store when the `rocksdb` feature is on.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tribune_consensus::{
    AppliedState, CommittedCommand, Consensus, ConsensusConfig, DiscoveredServer, StateMachine,
    StateMachineError, StateMachineStore, StateSnapshot, TcpTransport,
};

/// Counts applied commands; answers each with the running count.
#[derive(Default)]
pub struct Counter {
    count: u64,
    applied: Option<Vec<u8>>,
}

pub struct CounterSnapshot(u64);

impl StateSnapshot for CounterSnapshot {
    fn write_to(self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        out.write_all(&self.0.to_be_bytes())?;
        Ok(())
    }
}

impl StateMachine for Counter {
    type Snapshot = CounterSnapshot;

    fn apply(
        &mut self,
        commands: &[CommittedCommand],
        applied: &AppliedState,
    ) -> Result<Vec<Bytes>, StateMachineError> {
        let mut out = Vec::with_capacity(commands.len());
        for _ in commands {
            self.count += 1;
            out.push(Bytes::copy_from_slice(&self.count.to_be_bytes()));
        }
        self.applied = Some(applied.encode());
        Ok(out)
    }

    fn applied_state(&self) -> Result<Option<AppliedState>, StateMachineError> {
        self.applied.as_deref().map(AppliedState::decode).transpose()
    }

    fn snapshot(&self) -> Result<CounterSnapshot, StateMachineError> {
        Ok(CounterSnapshot(self.count))
    }

    fn restore(&mut self, data: &mut dyn Read, applied: &AppliedState) -> Result<(), StateMachineError> {
        let mut b = [0u8; 8];
        data.read_exact(&mut b)?;
        self.count = u64::from_be_bytes(b);
        self.applied = Some(applied.encode());
        Ok(())
    }
}

pub type Server = Consensus<Counter>;

pub struct BenchCluster {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Option<Server>>,
    addrs: Vec<std::net::SocketAddr>,
    next_id: u64,
}

pub fn config(id: u64) -> ConsensusConfig {
    let mut c = ConsensusConfig::lan(id, format!("s{id}"));
    c.bootstrap_expect = 3;
    if let Ok(ms) = std::env::var("TRIBUNE_BENCH_HEARTBEAT_MS") {
        let ms: u64 = ms.parse().unwrap();
        c.heartbeat_interval = Duration::from_millis(ms);
        c.election_timeout = Duration::from_millis(ms * 5);
    }
    if let Ok(n) = std::env::var("TRIBUNE_BENCH_PROPOSALS_IN_FLIGHT") {
        c.max_proposals_in_flight = n.parse().unwrap();
    }
    c
}

async fn try_start(
    dir: &std::path::Path,
    id: u64,
    bind: std::net::SocketAddr,
) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
    let sm = StateMachineStore::open(Counter::default(), dir.join(format!("s{id}/snap")))?;
    #[cfg(feature = "rocksdb")]
    let log = tribune_consensus::RocksLogStore::open(dir.join(format!("s{id}/log")))?;
    #[cfg(not(feature = "rocksdb"))]
    let log = tribune_consensus::MemLogStore::new();
    Ok(Consensus::start(config(id), bind, log, sm, TcpTransport::new()).await?)
}

async fn start_one(dir: &std::path::Path, id: u64, bind: std::net::SocketAddr) -> Server {
    try_start(dir, id, bind).await.unwrap()
}

impl BenchCluster {
    /// Three servers bootstrapped through the discovery input; returns once a leader is known.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut servers = Vec::new();
        for id in 1..=3 {
            servers.push(Some(
                start_one(dir.path(), id, "127.0.0.1:0".parse().unwrap()).await,
            ));
        }
        let all: Vec<_> = servers
            .iter()
            .flatten()
            .map(|s| DiscoveredServer {
                id: s.id(),
                info: s.node_info(),
            })
            .collect();
        for s in servers.iter().flatten() {
            s.discovered(&all).await.unwrap();
        }
        let addrs = servers.iter().flatten().map(|s| s.local_addr()).collect();
        let c = BenchCluster {
            dir,
            servers,
            addrs,
            next_id: 4,
        };
        c.leader(Duration::from_secs(10)).await;
        c
    }

    /// Waits for a running server that leads and returns it.
    pub async fn leader(&self, timeout: Duration) -> Server {
        let deadline = Instant::now() + timeout;
        loop {
            for s in self.servers.iter().flatten() {
                if s.is_leader() {
                    return s.clone();
                }
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn any_follower(&self) -> Server {
        self.servers
            .iter()
            .flatten()
            .find(|s| !s.is_leader())
            .unwrap()
            .clone()
    }

    /// Stops server `id` (1-based).
    pub async fn kill(&mut self, id: u64) {
        if let Some(s) = self.servers[(id - 1) as usize].take() {
            s.shutdown().await.unwrap();
        }
    }

    /// Restarts server `id` over its disk on its old port.
    pub async fn restart(&mut self, id: u64) {
        let bind = self.addrs[(id - 1) as usize];
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            // The stopped server's RocksDB lock and port are released asynchronously.
            match try_start(self.dir.path(), id, bind).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("restart {id}: {e}"),
            }
        };
        self.servers[(id - 1) as usize] = Some(server);
    }
}

/// Runs `writers` concurrent writers through `target` until `total` writes are acknowledged;
/// returns the wall time and each write's latency.
pub async fn run_writes(target: &Server, writers: usize, total: usize) -> (Duration, Vec<Duration>) {
    let per = total.div_ceil(writers);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let s = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                s.write(b"x".as_slice()).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(per * writers);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (start.elapsed(), all)
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
