//! Shared test support: a small KV state machine and a loopback cluster harness.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tribune_consensus::{
    AppliedState, CommittedCommand, Consensus, ConsensusConfig, DiscoveredServer, Faults, FaultyTransport,
    NodeId, StateMachine, StateMachineError, StateMachineStore, StateSnapshot, TcpTransport,
};

/// Commands are `key=value`; the response is the previous value (empty if none). A command
/// without `=` is answered with `bad command` and changes nothing (deterministic rejection).
#[derive(Debug, Default)]
pub struct KvMachine {
    pub map: BTreeMap<String, String>,
    applied: Option<Vec<u8>>,
    /// Every index applied, to check nothing is applied twice.
    pub applied_indexes: Vec<u64>,
}

impl StateMachine for KvMachine {
    type Snapshot = KvSnapshot;

    fn apply(
        &mut self,
        commands: &[CommittedCommand],
        applied: &AppliedState,
    ) -> Result<Vec<Bytes>, StateMachineError> {
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            self.applied_indexes.push(c.index);
            let text = String::from_utf8_lossy(&c.data);
            match text.split_once('=') {
                Some((k, v)) => {
                    let prev = self.map.insert(k.to_string(), v.to_string()).unwrap_or_default();
                    out.push(Bytes::from(prev));
                }
                None => out.push(Bytes::from_static(b"bad command")),
            }
        }
        self.applied = Some(applied.encode());
        Ok(out)
    }

    fn applied_state(&self) -> Result<Option<AppliedState>, StateMachineError> {
        self.applied.as_deref().map(AppliedState::decode).transpose()
    }

    fn snapshot(&self) -> Result<KvSnapshot, StateMachineError> {
        Ok(KvSnapshot(self.map.clone()))
    }

    fn restore(&mut self, data: &mut dyn Read, applied: &AppliedState) -> Result<(), StateMachineError> {
        let mut map = BTreeMap::new();
        while let Some(k) = read_field(data)? {
            let v = read_field(data)?.ok_or_else(|| StateMachineError::corrupt("key without value"))?;
            map.insert(k, v);
        }
        self.map = map;
        self.applied = Some(applied.encode());
        Ok(())
    }
}

fn read_field(r: &mut dyn Read) -> Result<Option<String>, StateMachineError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut buf)?;
    String::from_utf8(buf)
        .map(Some)
        .map_err(StateMachineError::corrupt)
}

pub struct KvSnapshot(BTreeMap<String, String>);

impl StateSnapshot for KvSnapshot {
    fn write_to(self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        for (k, v) in &self.0 {
            for f in [k, v] {
                out.write_all(&(f.len() as u32).to_be_bytes())?;
                out.write_all(f.as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "rocksdb")]
pub type TestLog = tribune_consensus::RocksLogStore;
#[cfg(not(feature = "rocksdb"))]
pub type TestLog = tribune_consensus::MemLogStore;

pub type Server = Consensus<KvMachine>;

/// One server's disk (and, for the in-memory log, the log itself, which outlives a restart).
pub struct Slot {
    pub id: NodeId,
    pub dir: PathBuf,
    #[cfg(not(feature = "rocksdb"))]
    mem_log: tribune_consensus::MemLogStore,
    pub server: Option<Server>,
    pub addr: Option<std::net::SocketAddr>,
}

pub struct Cluster {
    pub _tmp: tempfile::TempDir,
    pub slots: Vec<Slot>,
    pub faults: Faults,
    pub config: fn(NodeId) -> ConsensusConfig,
}

pub fn default_config(id: NodeId) -> ConsensusConfig {
    let mut c = ConsensusConfig::lan(id, format!("server-{id}"));
    c.bootstrap_expect = 3;
    c
}

async fn open_log(slot: &Slot) -> TestLog {
    #[cfg(feature = "rocksdb")]
    {
        // A just-stopped server may still be releasing the RocksDB lock: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tribune_consensus::RocksLogStore::open(slot.dir.join("log")) {
                Ok(l) => return l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("open log: {e}"),
            }
        }
    }
    #[cfg(not(feature = "rocksdb"))]
    {
        slot.mem_log.clone()
    }
}

impl Cluster {
    pub fn new(n: usize, config: fn(NodeId) -> ConsensusConfig) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let slots = (1..=n as u64).map(|id| Self::slot(tmp.path(), id)).collect();
        Cluster {
            _tmp: tmp,
            slots,
            faults: Faults::new(),
            config,
        }
    }

    fn slot(root: &Path, id: NodeId) -> Slot {
        Slot {
            id,
            dir: root.join(format!("s{id}")),
            #[cfg(not(feature = "rocksdb"))]
            mem_log: tribune_consensus::MemLogStore::new(),
            server: None,
            addr: None,
        }
    }

    pub fn add_slot(&mut self) -> NodeId {
        let id = self.slots.len() as u64 + 1;
        self.slots.push(Self::slot(self._tmp.path(), id));
        id
    }

    /// Starts server `id` (again) over its own disk; keeps its port across restarts when it can.
    pub async fn start(&mut self, id: NodeId) -> Server {
        let faults = self.faults.clone();
        let config = (self.config)(id);
        let slot = &mut self.slots[(id - 1) as usize];
        let log = open_log(slot).await;
        let sm = StateMachineStore::open(KvMachine::default(), slot.dir.join("snapshots")).unwrap();
        let transport = FaultyTransport::new(TcpTransport::new(), id, faults);
        let bind = slot.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let server = Consensus::start(config, bind, log, sm, transport).await.unwrap();
        slot.addr = Some(server.local_addr());
        slot.server = Some(server.clone());
        server
    }

    pub async fn start_all(&mut self) {
        for id in 1..=self.slots.len() as u64 {
            self.start(id).await;
        }
    }

    pub fn server(&self, id: NodeId) -> Server {
        self.slots[(id - 1) as usize]
            .server
            .clone()
            .expect("server running")
    }

    pub fn running(&self) -> Vec<Server> {
        self.slots.iter().filter_map(|s| s.server.clone()).collect()
    }

    pub async fn stop(&mut self, id: NodeId) {
        if let Some(s) = self.slots[(id - 1) as usize].server.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub fn discovered_all(&self) -> Vec<DiscoveredServer> {
        self.running()
            .iter()
            .map(|s| DiscoveredServer {
                id: s.id(),
                info: s.node_info(),
            })
            .collect()
    }

    /// Feeds every running server the full member list and waits for one agreed leader.
    pub async fn bootstrap(&mut self) -> NodeId {
        let all = self.discovered_all();
        for s in self.running() {
            s.discovered(&all).await.unwrap();
        }
        self.wait_leader(Duration::from_secs(10)).await
    }

    /// Waits until every running server agrees on one leader, which is itself running.
    pub async fn wait_leader(&self, timeout: Duration) -> NodeId {
        wait_until(timeout, "one agreed leader", || {
            let servers = self.running();
            let leaders: Vec<_> = servers.iter().map(|s| s.leader().map(|(l, _)| l)).collect();
            let first = leaders.first().copied().flatten()?;
            let leader = servers.iter().find(|s| s.id() == first)?;
            (leaders.iter().all(|l| *l == Some(first)) && leader.is_leader()).then_some(first)
        })
        .await
    }

    /// Waits until every running server has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) {
        for s in self.running() {
            s.raft()
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), "applied")
                .await
                .unwrap();
        }
    }
}

/// Polls `f` (cheap, in-memory checks) until it yields `Some`, failing after `timeout`.
pub async fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn get(key: &str) -> impl FnOnce(&KvMachine) -> Option<String> + use<> {
    let key = key.to_string();
    move |m: &KvMachine| m.map.get(&key).cloned()
}
