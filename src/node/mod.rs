//! `Node::start`: opens the state, starts consensus over it, binds the RPC and HTTP ports, forms the
//! cluster, runs the leader's duties, and stops all of it on `NodeHandle::shutdown`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tribune_consensus::openraft::storage::RaftLogStorage;
use tribune_consensus::{
    AppHandler, AppRequest, BootstrapStatus, Consensus, ConsensusConfig, ConsensusError, DiscoveredServer,
    MemLogStore, NodeId, NodeInfo, ReadMode, StateMachineStore, TcpTransport, TypeConfig,
};
use tribune_kvstore::{
    AclPolicy, AclToken, Backend, Command, GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME,
    GLOBAL_MANAGEMENT_RULES, PolicyLink, Session, Store, StoreConfig, encode_command,
};

use crate::client::ClientAgent;
use crate::config::Config;
use crate::error::NodeError;
use crate::federation::Federation;
use crate::fsm::{ApplyResponse, KvStateMachine, LockDelays, Rejection};
use crate::http;
use crate::membership;
use crate::tokens::AgentTokens;

/// Consul's session TTL multiplier: a session is invalidated after twice its TTL without a renewal.
pub(crate) const SESSION_TTL_MULTIPLIER: u32 = 2;

/// How long a deleted key's tombstone is kept before the leader reaps it (Consul's `TombstoneTTL`).
const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

/// How often the leader samples the applied index for tombstone reaping (Consul's granularity).
const TOMBSTONE_GRANULARITY: Duration = Duration::from_secs(30);

/// How often the leader's duty loop looks at session timers.
const LEADER_TICK: Duration = Duration::from_millis(100);

/// How often a server that waits for `bootstrap_expect` peers asks its `retry_join` addresses again.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(200);

/// The check every node has (Consul's `serfHealth`): with no catalog yet, its status is the node's
/// membership of the LAN pool (alive or suspect: passing; failed or left: critical).
pub(crate) const SERF_HEALTH_CHECK: &str = "serfHealth";

/// How often the leader looks for sessions of nodes the pool no longer holds alive. Failure events
/// act at once; this catches a session whose creation raced with its node's failure.
const SESSION_HEALTH_SWEEP: Duration = Duration::from_secs(10);

/// Most nodes whose failure waits for the leader's attention; beyond it the sweep still finds them.
const MAX_PENDING_NODE_FAILURES: usize = 65_536;

/// A node's `serfHealth` as the LAN pool reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeHealth {
    /// Alive or suspect.
    Passing,
    /// Failed or left.
    Critical,
    /// Not a member of the pool (Consul: no such check registered).
    Unknown,
}

/// Starts agents.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Starts a server agent described by `config` and returns once its listeners are bound.
    ///
    /// - `data_dir = None` (a development agent) keeps the state and the raft log in memory; otherwise they
    ///   live in RocksDB under `data_dir` (feature `rocksdb`).
    /// - The agent joins the LAN gossip pool on `ports.serf_lan` through `retry_join` (gossip addresses,
    ///   `host[:port]`, port 8301 by default), announcing its role, datacenter and RPC port in its tags.
    /// - `bootstrap_expect = 1` forms a one-server cluster at once. With more, the cluster forms once
    ///   `bootstrap_expect` servers of the datacenter are seen in the pool; later, the leader adds servers
    ///   that appear in the pool and removes those that left or failed (keeping a quorum).
    /// - Port 0 binds a free port: [`NodeHandle::http_addr`] and [`NodeHandle::rpc_addr`] report it.
    ///
    /// - Bound to every address (`bind_addr = 0.0.0.0`, the default of a loaded configuration) with no
    ///   `advertise_addr`, the node advertises the machine's one private IPv4 address, as Consul does;
    ///   none or several is [`NodeError::Advertise`].
    ///
    /// Client agents (`server = false`) join the LAN pool and hand every request to a server; with
    /// `acl.enabled` they give [`NodeError::Unsupported`] (they cannot check tokens on their own
    /// endpoints yet).
    pub async fn start(mut config: Config) -> Result<NodeHandle, NodeError> {
        // Decided once, before anything binds: gossip announces this address and raft records it,
        // so a server bound to 0.0.0.0 is never reached at 0.0.0.0.
        config.advertise_addr = Some(config.advertise_ip()?);
        if !config.server {
            return start_client(config).await;
        }
        match config.data_dir.clone() {
            None => {
                let store = Store::in_memory(StoreConfig::new(config.datacenter.clone()))?;
                let scratch = tempfile::tempdir().map_err(|source| NodeError::DataDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
                let snapshots = scratch.path().join("snapshots");
                let node_id = random_node_id(&config);
                start_with(
                    config,
                    store,
                    MemLogStore::new(),
                    &snapshots,
                    node_id,
                    Some(scratch),
                )
                .await
            }
            Some(dir) => start_on_disk(config, &dir).await,
        }
    }
}

#[cfg(feature = "rocksdb")]
async fn start_on_disk(config: Config, dir: &Path) -> Result<NodeHandle, NodeError> {
    let io = |source| NodeError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let node_id = persistent_raft_id(&config, dir).map_err(io)?;
    let store = Store::open_rocksdb(&dir.join("state"), StoreConfig::new(config.datacenter.clone()))?;
    let log = tribune_consensus::RocksLogStore::open(dir.join("raft"))?;
    start_with(config, store, log, &dir.join("snapshots"), node_id, None).await
}

#[cfg(not(feature = "rocksdb"))]
async fn start_on_disk(_config: Config, _dir: &Path) -> Result<NodeHandle, NodeError> {
    Err(NodeError::Unsupported {
        field: "data_dir",
        reason: "this build has no durable storage (feature `rocksdb`); leave data_dir unset for an in-memory agent"
            .into(),
    })
}

/// A raft id for a server without a data directory: from its configured `node_id`, else random.
fn random_node_id(config: &Config) -> NodeId {
    config
        .node_id
        .as_deref()
        .and_then(id_from_uuid)
        .unwrap_or_else(|| rand::random::<u64>() | 1)
}

/// A raft id that survives restarts. It is kept in `<data_dir>/raft-id` once chosen, so a change
/// of derivation never renames a server that already has raft state. A new server derives it from
/// its node ID: the configured `node_id`, else `<data_dir>/node-id`, written on first start. A data
/// directory whose raft state predates `raft-id` keeps the id it was given then (the UUID's first
/// eight bytes).
#[cfg(feature = "rocksdb")]
fn persistent_raft_id(config: &Config, dir: &Path) -> std::io::Result<NodeId> {
    let invalid = |path: &Path, what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not {what}", path.display()),
        )
    };
    let raft_id_path = dir.join("raft-id");
    match std::fs::read_to_string(&raft_id_path) {
        Ok(text) => {
            return text
                .trim()
                .parse::<NodeId>()
                .ok()
                .filter(|id| *id != 0 && *id != NodeId::MAX)
                .ok_or_else(|| invalid(&raft_id_path, "a raft id"));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let node_id = match config.node_id.clone() {
        Some(id) => id,
        None => {
            let path = dir.join("node-id");
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let uuid = uuid::Uuid::new_v4().to_string();
                    std::fs::write(&path, &uuid)?;
                    uuid
                }
                Err(e) => return Err(e),
            }
        }
    };
    let uuid = uuid::Uuid::parse_str(&node_id).map_err(|_| invalid(&dir.join("node-id"), "a UUID"))?;
    let id = if dir.join("raft").exists() {
        legacy_raft_id(&uuid)
    } else {
        raft_id_from_node_id(&uuid)
    };
    std::fs::write(&raft_id_path, id.to_string())?;
    Ok(id)
}

/// The raft id of a node ID: a digest of all sixteen bytes, so two node IDs that share a prefix
/// (hand-written ones, or ones minted by a tool that fills the tail) still get different ids. It
/// is odd, hence never 0, and never `NodeId::MAX`, which the consensus crate reserves for a
/// stepping-down leader's pledge.
fn raft_id_from_node_id(uuid: &uuid::Uuid) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, uuid.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(digest.as_ref().get(..8).unwrap_or(&[0; 8]));
    usable_raft_id(u64::from_be_bytes(head))
}

/// Makes `raw` odd (never 0) and keeps it off `NodeId::MAX`, which consensus reserves.
fn usable_raft_id(raw: u64) -> NodeId {
    let id = raw | 1;
    if id == NodeId::MAX { NodeId::MAX - 2 } else { id }
}

/// How raft ids were derived before `raft-id` files existed: the UUID's first eight bytes.
#[cfg(feature = "rocksdb")]
fn legacy_raft_id(uuid: &uuid::Uuid) -> NodeId {
    let (high, _) = uuid.as_u64_pair();
    usable_raft_id(high)
}

fn id_from_uuid(text: &str) -> Option<NodeId> {
    uuid::Uuid::parse_str(text)
        .ok()
        .map(|uuid| raft_id_from_node_id(&uuid))
}

async fn start_with<B, L>(
    config: Config,
    store: Store<B>,
    log: L,
    snapshot_dir: &Path,
    node_id: NodeId,
    scratch: Option<tempfile::TempDir>,
) -> Result<NodeHandle, NodeError>
where
    B: Backend,
    L: RaftLogStorage<TypeConfig>,
{
    let store = Arc::new(store);
    let lock_delays = Arc::new(LockDelays::default());
    let sm = StateMachineStore::open(
        KvStateMachine::new(Arc::clone(&store), Arc::clone(&lock_delays)),
        snapshot_dir,
    )?;
    let server_port = config.ports.server.ok_or(NodeError::Unsupported {
        field: "ports.server",
        reason: "a server needs its RPC port".into(),
    })?;
    let rpc_bind = SocketAddr::new(config.bind_addr, server_port);
    let mut consensus_config = ConsensusConfig::lan(node_id, config.node_name.clone());
    consensus_config.datacenter = config.datacenter.clone();
    consensus_config.advertise_ip = config.advertise_addr;
    consensus_config.bootstrap_expect = config.bootstrap_expect as usize;
    let consensus = Consensus::start(consensus_config, rpc_bind, log, sm, TcpTransport::new()).await?;

    let http_listener = match bind_http(&config).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = consensus.shutdown().await;
            return Err(e);
        }
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let mut tags = membership::server_tags(&config, node_id, consensus.local_addr().port());
    let (federation, wan_events) = match Federation::start(&config, tags.clone()).await {
        Ok(Some((federation, events))) => (Some(federation), Some(events)),
        Ok(None) => (None, None),
        Err(e) => {
            let _ = consensus.shutdown().await;
            return Err(e);
        }
    };
    if let Some(federation) = &federation {
        tags.insert(
            crate::federation::WAN_JOIN_PORT_TAG.into(),
            federation.wan().local_addr().port().to_string(),
        );
    }
    let (gossip, member_events) = match membership::start_lan(&config, tags).await {
        Ok(Some((gossip, events))) => (Some(gossip), Some(events)),
        Ok(None) => (None, None),
        Err(e) => {
            if let Some(federation) = &federation {
                federation.shutdown().await;
            }
            let _ = consensus.shutdown().await;
            return Err(e);
        }
    };
    let serf_lan_addr = gossip.as_ref().map(tribune_gossip::Gossip::local_addr);
    let serf_wan_addr = federation.as_ref().map(|f| f.wan().local_addr());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let resolver = crate::acl::resolver(&config.datacenter, &config.acl);
    let tokens = match AgentTokens::load(&config) {
        Ok(tokens) => tokens,
        Err(e) => {
            if let Some(gossip) = &gossip {
                gossip.shutdown().await;
            }
            if let Some(federation) = &federation {
                federation.shutdown().await;
            }
            let _ = consensus.shutdown().await;
            return Err(NodeError::AgentTokens {
                path: e.path().to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let agent = Arc::new(Agent {
        config,
        node_id,
        store,
        consensus: consensus.clone(),
        gossip,
        federation: federation.clone(),
        stop_tasks: Arc::clone(&shutdown_tx),
        lock_delays,
        lock_gate: tokio::sync::RwLock::new(()),
        session_timers: Mutex::new(HashMap::new()),
        node_failures: Mutex::new(HashMap::new()),
        discovered: Mutex::new(BTreeMap::new()),
        shutdown: shutdown_rx.clone(),
        resolver,
        router: Mutex::new(None),
        restore_lock: tokio::sync::Mutex::new(()),
        tokens,
    });
    let router = http::router(Arc::clone(&agent));
    *agent.router.lock() = Some(router.clone());
    consensus.set_app_handler(Arc::new(AppService {
        agent: Arc::downgrade(&agent),
    }));

    let mut tasks = Vec::new();
    if let Some(listener) = http_listener {
        tasks.push(tokio::spawn(serve_http(listener, router, shutdown_rx.clone())));
    }
    if let Some(events) = member_events {
        tasks.push(tokio::spawn(membership::watch_members(
            Arc::clone(&agent),
            events,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(membership::join_pool(
            Arc::clone(&agent),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(membership::reconcile(
            Arc::clone(&agent),
            shutdown_rx.clone(),
        )));
    }
    if let (Some(federation), Some(events)) = (federation, wan_events) {
        tasks.push(tokio::spawn(
            Arc::clone(&federation).watch(events, shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&federation).join_configured(agent.config.clone(), shutdown_rx.clone()),
        ));
        if let Some(lan) = agent.gossip.clone() {
            tasks.push(tokio::spawn(federation.flood(lan, shutdown_rx.clone())));
        }
    }
    tasks.push(tokio::spawn(form_cluster(
        Arc::clone(&agent),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(leader_duties(Arc::clone(&agent), shutdown_rx)));

    let control: Arc<dyn Control> = agent;
    Ok(NodeHandle {
        http_addr,
        serf_lan_addr,
        serf_wan_addr,
        rpc_addr: consensus.local_addr(),
        node_id,
        control,
        shutdown: shutdown_tx,
        tasks,
        stopped: false,
        _scratch: scratch,
    })
}

/// Binds the HTTP API's listener on the first `client_addr`, or nothing when `ports.http` is disabled.
async fn bind_http(config: &Config) -> Result<Option<tokio::net::TcpListener>, NodeError> {
    let Some(port) = config.ports.http else {
        return Ok(None);
    };
    let ip = config.client_addr.first().copied().unwrap_or(config.bind_addr);
    let addr = SocketAddr::new(ip, port);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(source) => Err(NodeError::Bind {
            listener: "http",
            addr: addr.to_string(),
            source,
        }),
    }
}

/// Serves the HTTP API until the agent stops; blocked requests end at once then.
async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Starts a client agent: a LAN pool member with no state that hands requests to servers.
async fn start_client(config: Config) -> Result<NodeHandle, NodeError> {
    if config.acl.enabled {
        return Err(NodeError::Unsupported {
            field: "acl.enabled",
            reason: "client agents cannot check ACLs on their own endpoints yet; run the client without ACLs"
                .into(),
        });
    }
    let node_id = random_node_id(&config);
    let tags = membership::server_tags(&config, node_id, 0);
    let Some((gossip, mut member_events)) = membership::start_lan(&config, tags).await? else {
        return Err(NodeError::Unsupported {
            field: "ports.serf_lan",
            reason: "a client agent finds servers through the LAN pool: it needs ports.serf_lan".into(),
        });
    };
    let serf_lan_addr = gossip.local_addr();
    let http_listener = match bind_http(&config).await {
        Ok(listener) => listener,
        Err(e) => {
            gossip.shutdown().await;
            return Err(e);
        }
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let agent = Arc::new(ClientAgent::new(config, gossip, Arc::clone(&shutdown_tx)));
    let mut tasks = Vec::new();
    if let Some(listener) = http_listener {
        let router = http::client::router(Arc::clone(&agent));
        tasks.push(tokio::spawn(serve_http(listener, router, shutdown_rx.clone())));
    }
    // A client acts on no member event but a changed keyring, which it saves; the channel is
    // drained so it does not grow.
    let mut stop = shutdown_rx.clone();
    let keyring_owner = Arc::clone(&agent);
    tasks.push(tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = member_events.recv() => event,
                _ = stop.wait_for(|stopped| *stopped) => None,
            };
            match event {
                None => return,
                Some(tribune_gossip::Event::KeyringChanged) => {
                    crate::gossip_keys::save(&keyring_owner.gossip, &keyring_owner.config).await;
                }
                Some(_) => {}
            }
        }
    }));
    tasks.push(tokio::spawn(membership::join_pool_with(
        agent.gossip.clone(),
        agent.config.clone(),
        shutdown_rx,
    )));
    let control: Arc<dyn Control> = agent;
    Ok(NodeHandle {
        http_addr,
        serf_lan_addr: Some(serf_lan_addr),
        serf_wan_addr: None,
        rpc_addr: serf_lan_addr,
        node_id,
        control,
        shutdown: shutdown_tx,
        tasks,
        stopped: false,
        _scratch: None,
    })
}

impl Control for ClientAgent {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.gossip.shutdown())
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.leave_pool())
    }

    fn leader_rpc_addr(&self) -> Option<String> {
        None
    }

    fn is_leader(&self) -> bool {
        false
    }

    fn parked_blocking_queries(&self) -> usize {
        0
    }
}

/// What the handle needs from the running agent, whatever its storage backend.
trait Control: Send + Sync {
    fn stop(&self) -> BoxFuture<'_, ()>;
    fn leave(&self) -> BoxFuture<'_, ()>;
    fn leader_rpc_addr(&self) -> Option<String>;
    fn is_leader(&self) -> bool;
    fn parked_blocking_queries(&self) -> usize;
}

/// A running agent. Dropping it stops its tasks without waiting (raft's shutdown is spawned on the
/// current runtime); [`NodeHandle::shutdown`] stops them and waits.
pub struct NodeHandle {
    http_addr: Option<SocketAddr>,
    serf_lan_addr: Option<SocketAddr>,
    serf_wan_addr: Option<SocketAddr>,
    rpc_addr: SocketAddr,
    node_id: NodeId,
    control: Arc<dyn Control>,
    shutdown: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
    /// Set once `shutdown` finished, so that dropping the handle does not stop anything twice.
    stopped: bool,
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("http_addr", &self.http_addr)
            .field("rpc_addr", &self.rpc_addr)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// The address the HTTP API is bound to, or `None` when `ports.http` is disabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address other agents join this one's LAN gossip pool at (`retry_join`), or `None` when
    /// `ports.serf_lan` is disabled.
    pub fn serf_lan_addr(&self) -> Option<SocketAddr> {
        self.serf_lan_addr
    }

    /// The WAN gossip address (a server with `ports.serf_wan` enabled), for `join -wan`.
    pub fn serf_wan_addr(&self) -> Option<SocketAddr> {
        self.serf_wan_addr
    }

    /// Resolves once the agent stopped on its own (`/v1/agent/leave`) or through
    /// [`NodeHandle::shutdown`]; an agent binary waits on it beside its signal handlers.
    pub async fn stopped(&self) {
        let mut stopped = self.shutdown.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Leaves the LAN pool gracefully (every member reports this agent as left, and the leader
    /// removes a server that left from the raft configuration), then stops like
    /// [`NodeHandle::shutdown`].
    pub async fn leave(self) {
        self.control.leave().await;
        self.shutdown().await;
    }

    /// The address the server RPC port (raft, forwarded requests) is bound to; for a client
    /// agent, which has no RPC port, its LAN gossip address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// This server's raft id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Whether this server is the raft leader now.
    pub fn is_leader(&self) -> bool {
        self.control.is_leader()
    }

    /// The RPC address of the leader this server knows, if any.
    pub fn leader(&self) -> Option<String> {
        self.control.leader_rpc_addr()
    }

    /// How many blocking queries are parked on this server now, waiting for a change (a gauge for
    /// metrics, and what tests wait on instead of sleeping while a reader parks).
    pub fn parked_blocking_queries(&self) -> usize {
        self.control.parked_blocking_queries()
    }

    /// Stops the agent: the HTTP server (blocked queries return at once), the background tasks and
    /// consensus, and waits for each.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.control.stop().await;
        self.stopped = true;
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
        // Raft cannot be stopped synchronously: hand its shutdown to the runtime, if one is running.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let control = Arc::clone(&self.control);
            runtime.spawn(async move { control.stop().await });
        }
    }
}

/// The state every part of a running server shares.
pub(crate) struct Agent<B: Backend> {
    pub(crate) config: Config,
    pub(crate) node_id: NodeId,
    pub(crate) store: Arc<Store<B>>,
    pub(crate) consensus: Consensus<KvStateMachine<B>>,
    /// The LAN gossip pool; `None` when `ports.serf_lan` is disabled.
    pub(crate) gossip: Option<tribune_gossip::Gossip>,
    /// The WAN pool and the routes to other datacenters; `None` when `ports.serf_wan` is disabled.
    pub(crate) federation: Option<Arc<Federation>>,
    /// Stops the agent's tasks; shared with the handle so that `/v1/agent/leave` can stop it.
    stop_tasks: Arc<watch::Sender<bool>>,
    /// Keys a destroyed session held, and until when the leader refuses to lock them again;
    /// shared with the state machine adapter, which records them as invalidations apply.
    lock_delays: Arc<LockDelays>,
    /// Orders lock-delay checks against session invalidations (see [`Agent::lock_delays_now`]).
    lock_gate: tokio::sync::RwLock<()>,
    /// Sessions with a TTL and when the leader invalidates them (leader only).
    session_timers: Mutex<HashMap<String, Instant>>,
    /// Nodes the LAN pool reported failed or left, with this server's applied index then: the
    /// leader destroys their sessions bound to `serfHealth` created up to that index. Kept on every
    /// server, so a failure seen while there was no leader is acted on by the next one.
    node_failures: Mutex<HashMap<String, u64>>,
    /// Servers of this datacenter seen in the LAN pool, for bootstrap_expect.
    discovered: Mutex<BTreeMap<NodeId, NodeInfo>>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Resolves request tokens to authorizers over the local state (used when ACLs are enabled).
    pub(crate) resolver: tribune_acl::Resolver,
    /// The agent's own router, for forwarded HTTP requests. The router holds the agent, so `stop`
    /// takes it out: otherwise the two keep each other (and the stores) alive forever.
    router: Mutex<Option<axum::Router>>,
    /// Held while this server proposes a snapshot restore, so that its own restores never interleave.
    pub(crate) restore_lock: tokio::sync::Mutex<()>,
    /// The agent's own ACL tokens (`default` serves requests without one), settable at run time.
    pub(crate) tokens: AgentTokens,
}

impl<B: Backend> Control for Agent<B> {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.router.lock().take();
            if let Some(gossip) = &self.gossip {
                gossip.shutdown().await;
            }
            if let Some(federation) = &self.federation {
                federation.shutdown().await;
            }
            if let Err(e) = self.consensus.shutdown().await {
                tracing::warn!(error = %e, "consensus shutdown");
            }
        })
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.leave_pool())
    }

    fn leader_rpc_addr(&self) -> Option<String> {
        self.consensus.leader().map(|(_, info)| info.rpc_addr)
    }

    fn is_leader(&self) -> bool {
        self.consensus.is_leader()
    }

    fn parked_blocking_queries(&self) -> usize {
        self.store.watch_hub().waiter_count()
    }
}

/// The lock-delays as the leader enforces them now, with the gate that keeps invalidations out
/// until the vetted lock command has applied.
pub(crate) struct LockDelayCheck<'a> {
    _gate: tokio::sync::RwLockReadGuard<'a, ()>,
    delays: &'a LockDelays,
}

impl LockDelayCheck<'_> {
    /// Whether `key` is inside a lock-delay.
    pub(crate) fn active(&self, key: &str) -> bool {
        self.delays.active(key)
    }
}

/// Why a proposal failed.
#[derive(Debug)]
pub(crate) enum ProposeError {
    /// Consensus could not commit it (no leader, timeout, stopped).
    Consensus(ConsensusError),
    /// The command could not be encoded or the response not decoded.
    Codec(String),
}

impl<B: Backend> Agent<B> {
    /// Replicates a command and returns the state machine's response and the command's index.
    pub(crate) async fn propose(&self, command: &Command) -> Result<(ApplyResponse, u64), ProposeError> {
        // A session invalidation starts lock-delays: it waits until no vetted lock is in flight,
        // and holds the gate until it has applied (see `lock_delays_now`).
        let _gate = match command {
            Command::SessionDestroy { .. } => Some(self.lock_gate.write().await),
            _ => None,
        };
        let bytes = encode_command(command).map_err(|e| ProposeError::Codec(e.to_string()))?;
        let written = self
            .consensus
            .write(bytes)
            .await
            .map_err(ProposeError::Consensus)?;
        let response = ApplyResponse::decode(&written.response).map_err(ProposeError::Codec)?;
        Ok((response, written.index))
    }

    /// Makes sure a read in `mode` may be served from the local state: on the leader, consensus's
    /// read barrier; on a follower, the leader's read index, then waits until the local state has
    /// applied it (so blocked readers wait here, not on the leader).
    pub(crate) async fn read_barrier(&self, mode: ReadMode) -> Result<(), ConsensusError> {
        if mode == ReadMode::Stale {
            return Ok(());
        }
        let request = AppCall::ReadIndex {
            consistent: mode == ReadMode::Consistent,
        };
        let mut replaced_once = false;
        let reply = loop {
            if self.consensus.is_leader() {
                return self.consensus.read_barrier(mode).await.map(|_| ());
            }
            let asked = self
                .consensus
                .call_leader(AppRequest {
                    datacenter: None,
                    payload: request.encode(),
                })
                .await;
            match asked {
                // Asking for a read index changes nothing, so asking the new leader is safe.
                Err(ConsensusError::LeaderChanged { .. }) if !replaced_once => replaced_once = true,
                other => break other?,
            }
        };
        let index = match AppReply::decode(&reply) {
            Ok(AppReply::ReadIndex(index)) => index,
            Ok(_) | Err(_) => {
                return Err(ConsensusError::App {
                    reason: "unexpected answer to a read-index request".into(),
                });
            }
        };
        let wait = Duration::from_secs(5);
        self.consensus
            .raft()
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "the leader's read index")
            .await
            .map(|_| ())
            .map_err(|_| ConsensusError::Timeout {
                operation: "catching up with the leader's read index",
                after: wait,
            })
    }

    /// After a snapshot restore replaced the state: cached tokens may be gone, and the leader re-runs
    /// what it does on gaining leadership (session timers from the restored sessions, the initial
    /// management token), as Consul's leader reasserts itself after a restore.
    pub(crate) async fn after_restore(&self) {
        self.resolver.purge();
        if self.consensus.is_leader() {
            arm_all_session_timers(self);
            if let Err(e) = install_initial_management(self).await {
                tracing::warn!(error = ?e, "installing the initial management token after a restore");
            }
        }
    }

    /// The lock-delays the leader enforces now (it refuses to lock a key of an invalidated session).
    ///
    /// Delays are recorded as invalidations apply, so the leader first makes sure it has applied
    /// everything committed before its term (a consistent barrier waits for its own first entry):
    /// a new leader must not answer from a record that misses its predecessor's last invalidations.
    ///
    /// The returned check also holds the lock-delay gate until it is dropped: keep it until the
    /// lock command it vetted has been proposed and applied. An invalidation waits for the gate, so
    /// no lock command can be vetted before an invalidation applies yet be ordered after it in the
    /// log (where it would take the key the invalidation just freed, inside the delay).
    pub(crate) async fn lock_delays_now(&self) -> Result<LockDelayCheck<'_>, ConsensusError> {
        let gate = self.lock_gate.read().await;
        self.consensus.read_barrier(ReadMode::Consistent).await?;
        Ok(LockDelayCheck {
            _gate: gate,
            delays: &self.lock_delays,
        })
    }

    /// Arms (or re-arms, on renewal) a session's invalidation timer at `2 × ttl` (leader only).
    pub(crate) fn arm_session_timer(&self, id: &str, ttl: Duration) {
        let deadline = Instant::now() + ttl * SESSION_TTL_MULTIPLIER;
        self.session_timers.lock().insert(id.to_owned(), deadline);
    }

    pub(crate) fn clear_session_timer(&self, id: &str) {
        self.session_timers.lock().remove(id);
    }

    /// `node`'s `serfHealth`: its status in this server's view of the LAN pool. A server without a
    /// pool knows only itself.
    pub(crate) async fn node_health(&self, node: &str) -> NodeHealth {
        let Some(gossip) = &self.gossip else {
            return if node == self.config.node_name {
                NodeHealth::Passing
            } else {
                NodeHealth::Unknown
            };
        };
        let members = match gossip.members().await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(error = %e, "reading the LAN pool for a node's health");
                return NodeHealth::Unknown;
            }
        };
        match members.iter().find(|m| m.name == node) {
            Some(member) if member.status.is_live() => NodeHealth::Passing,
            Some(_) => NodeHealth::Critical,
            None => NodeHealth::Unknown,
        }
    }

    /// Records that the LAN pool declared `node` failed or left: its `serfHealth` went critical.
    pub(crate) fn note_node_down(&self, node: &str) {
        let applied = self.store.last_applied();
        let mut failures = self.node_failures.lock();
        if failures.len() >= MAX_PENDING_NODE_FAILURES && !failures.contains_key(node) {
            tracing::warn!(
                node,
                "too many node failures pending; the leader's sweep will find this one"
            );
            return;
        }
        let mark = failures.entry(node.to_owned()).or_insert(applied);
        *mark = (*mark).max(applied);
    }

    /// Leaves the LAN pool gracefully, and asks the agent's tasks to stop. A leader first hands
    /// its seat over: it removes itself from the raft configuration (the others elect a new leader),
    /// as the others' reconciliation would once they see it left.
    pub(crate) async fn leave_pool(&self) {
        if self.consensus.is_leader()
            && self.consensus.peers().len() > 1
            && let Err(e) = self.consensus.remove_server(self.node_id).await
        {
            tracing::warn!(error = %e, "leaving the raft configuration");
        }
        if let Some(gossip) = &self.gossip
            && let Err(e) = gossip.leave().await
        {
            tracing::warn!(error = %e, "leaving the LAN pool");
        }
        if let Some(federation) = &self.federation {
            federation.leave().await;
        }
        self.stop_tasks.send_replace(true);
    }

    /// Records a server of this datacenter for cluster formation.
    pub(crate) fn learn_peer(&self, peer: Peer) {
        if peer.datacenter != self.config.datacenter || peer.name == self.config.node_name {
            return;
        }
        let mut discovered = self.discovered.lock();
        let holder = if peer.id == self.node_id {
            Some(self.config.node_name.clone())
        } else {
            discovered
                .get(&peer.id)
                .filter(|known| known.name != peer.name)
                .map(|known| known.name.clone())
        };
        if let Some(holder) = holder {
            // Raft would take both for one server: a cluster that silently is not one.
            let conflict = crate::membership::RaftIdConflict {
                id: peer.id,
                holder,
                refused: peer.name,
            };
            tracing::error!("refusing a server: {conflict}; give one of them another node_id");
            return;
        }
        discovered.insert(peer.id, NodeInfo::new(peer.rpc_addr, peer.name));
    }

    /// Runs a forwarded HTTP request through this server's own router.
    async fn serve_forwarded(
        &self,
        request: ForwardedHttp,
        from: http::ForwardedFrom,
    ) -> Result<ForwardedResponse, String> {
        let router = self.router.lock().clone().ok_or("the HTTP API is not running")?;
        http::serve_forwarded(router, request, from).await
    }
}

/// An application request between servers, on the RPC port.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AppCall {
    /// The leader's read index for a default (`consistent = false`) or consistent read.
    ReadIndex {
        /// Whether the leader must confirm its leadership with a quorum first.
        consistent: bool,
    },
    /// An HTTP request a follower forwards to the leader (writes and their leader-only checks).
    Http(ForwardedHttp),
    /// An HTTP request a client agent hands to a server, which serves it as its own.
    ClientHttp(ForwardedHttp),
    /// An HTTP request a server of another datacenter carries here (`?dc=`); served by this
    /// datacenter's own rules, as a request to this server.
    RemoteHttp(ForwardedHttp),
}

/// A server as discovery describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Peer {
    /// Raft id.
    pub(crate) id: NodeId,
    /// Node name.
    pub(crate) name: String,
    /// RPC address.
    pub(crate) rpc_addr: String,
    /// Datacenter.
    pub(crate) datacenter: String,
}

/// The answer to an [`AppCall`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AppReply {
    /// The index a follower must have applied before serving the read.
    ReadIndex(u64),
    /// The leader's HTTP response.
    Http(ForwardedResponse),
}

/// An HTTP request as forwarded between servers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardedHttp {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

/// An HTTP response as returned to the forwarding server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardedResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

const APP_DECODE_LIMIT: usize = 16 * 1024 * 1024;

fn app_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<APP_DECODE_LIMIT>()
}

impl AppCall {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(bincode::serde::encode_to_vec(self, app_config()).unwrap_or_default())
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(bytes, app_config())
            .map(|(call, _)| call)
            .map_err(|e| format!("undecodable application request: {e}"))
    }
}

impl AppReply {
    fn encode(&self) -> Bytes {
        Bytes::from(bincode::serde::encode_to_vec(self, app_config()).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(bytes, app_config())
            .map(|(reply, _)| reply)
            .map_err(|e| format!("undecodable application reply: {e}"))
    }
}

/// Serves [`AppCall`]s arriving on the RPC port.
struct AppService<B: Backend> {
    agent: Weak<Agent<B>>,
}

impl<B: Backend> AppHandler for AppService<B> {
    fn handle(&self, request: AppRequest) -> BoxFuture<'static, Result<Bytes, String>> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let agent = agent.upgrade().ok_or("the agent is shutting down")?;
            let reply = match AppCall::decode(&request.payload)? {
                AppCall::ReadIndex { consistent } => {
                    let mode = if consistent {
                        ReadMode::Consistent
                    } else {
                        ReadMode::Default
                    };
                    let index = agent
                        .consensus
                        .read_barrier(mode)
                        .await
                        .map_err(|e| e.to_string())?;
                    AppReply::ReadIndex(index)
                }
                AppCall::Http(request) => AppReply::Http(
                    agent
                        .serve_forwarded(request, http::ForwardedFrom::Server)
                        .await?,
                ),
                AppCall::ClientHttp(request) => AppReply::Http(
                    agent
                        .serve_forwarded(request, http::ForwardedFrom::ClientAgent)
                        .await?,
                ),
                AppCall::RemoteHttp(forwarded) => {
                    // Never carried further: a request for a third datacenter would be a loop.
                    if request.datacenter.as_deref() != Some(agent.config.datacenter.as_str()) {
                        return Err(format!(
                            "this server is in datacenter {:?}, not {:?}",
                            agent.config.datacenter, request.datacenter
                        ));
                    }
                    AppReply::Http(
                        agent
                            .serve_forwarded(forwarded, http::ForwardedFrom::OtherDatacenter)
                            .await?,
                    )
                }
            };
            Ok(reply.encode())
        })
    }
}

/// Forms the cluster: feeds consensus's bootstrap_expect discovery with this server and the servers
/// of its datacenter seen in the LAN pool, until the cluster exists.
async fn form_cluster<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    if agent.config.bootstrap_expect == 0 {
        return;
    }
    loop {
        let known = agent.discovered.lock().clone();
        let servers: Vec<DiscoveredServer> = known
            .iter()
            .map(|(id, info)| DiscoveredServer {
                id: *id,
                info: info.clone(),
            })
            .collect();
        match agent.consensus.discovered(&servers).await {
            Ok(BootstrapStatus::Bootstrapped { voters }) => {
                tracing::info!(?voters, "formed the cluster");
                return;
            }
            Ok(BootstrapStatus::AlreadyInitialized | BootstrapStatus::Disabled) => return,
            Ok(status) => tracing::debug!(?status, "waiting to form the cluster"),
            Err(e) => tracing::warn!(error = %e, "cluster formation"),
        }
        // A server that is not the bootstrapper is done once someone made it a member.
        if agent.consensus.leader().is_some() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// The leader's duties: session TTL invalidation and tombstone reaping. Runs on every server and acts
/// only while this server leads; timers are re-armed from the state on each new term of leadership.
async fn leader_duties<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    let mut was_leader = false;
    // (when sampled, applied index then): tombstones at or below the index can go once TOMBSTONE_TTL passed.
    let mut reap_marks: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut next_mark = Instant::now();
    let mut next_health_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEADER_TICK) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let leader = agent.consensus.is_leader();
        if !leader {
            if was_leader {
                agent.session_timers.lock().clear();
                reap_marks.clear();
            }
            was_leader = false;
            continue;
        }
        let now = Instant::now();
        if !was_leader {
            was_leader = true;
            arm_all_session_timers(&agent);
            next_mark = now;
            // Failures seen while another server led (or none did) are acted on by the sweep.
            next_health_sweep = now;
            if let Err(e) = install_initial_management(&agent).await {
                tracing::warn!(error = ?e, "installing the initial management token");
            }
        }
        let failures = std::mem::take(&mut *agent.node_failures.lock());
        for (node, created_up_to) in failures {
            invalidate_node_sessions(&agent, &node, created_up_to).await;
        }
        if now >= next_health_sweep {
            next_health_sweep = now + SESSION_HEALTH_SWEEP;
            sweep_unhealthy_sessions(&agent).await;
        }
        let expired: Vec<String> = {
            let timers = agent.session_timers.lock();
            timers
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            agent.clear_session_timer(&id);
            tracing::info!(session = %id, "session TTL expired: invalidating it");
            if let Err(e) = agent.propose(&Command::SessionDestroy { id }).await {
                tracing::warn!(error = ?e, "invalidating an expired session");
            }
        }
        if now >= next_mark {
            reap_marks.push_back((now, agent.store.last_applied()));
            next_mark = now + TOMBSTONE_GRANULARITY;
        }
        let mut reap_up_to = None;
        while let Some(&(at, index)) = reap_marks.front() {
            if at + TOMBSTONE_TTL > now {
                break;
            }
            reap_up_to = Some(index);
            reap_marks.pop_front();
        }
        if let Some(up_to_index) = reap_up_to
            && let Err(e) = agent.propose(&Command::ReapTombstones { up_to_index }).await
        {
            tracing::warn!(error = ?e, "reaping tombstones");
        }
    }
}

/// On gaining leadership in the primary datacenter, installs `acl.tokens.initial_management` as a
/// management token unless a token with that secret exists (as Consul's leader does).
async fn install_initial_management<B: Backend>(agent: &Agent<B>) -> Result<(), ProposeError> {
    let acl = &agent.config.acl;
    let Some(secret) = acl.tokens.initial_management.as_deref() else {
        return Ok(());
    };
    if !acl.enabled || agent.config.datacenter != agent.config.primary_datacenter {
        return Ok(());
    }
    let read = |e: tribune_kvstore::ReadError| ProposeError::Codec(e.to_string());
    if agent
        .store
        .acl_token_by_secret(secret)
        .map_err(read)?
        .value
        .is_some()
    {
        return Ok(());
    }
    if agent
        .store
        .acl_policy(GLOBAL_MANAGEMENT_POLICY_ID)
        .map_err(read)?
        .value
        .is_none()
    {
        let policy = AclPolicy {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
            description: "Builtin Policy that grants unlimited access".to_owned(),
            rules: GLOBAL_MANAGEMENT_RULES.to_owned(),
            datacenters: Vec::new(),
            create_index: 0,
            modify_index: 0,
        };
        agent.propose(&Command::AclPolicyUpsert(policy)).await?;
    }
    let token = AclToken {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: secret.to_owned(),
        description: "Initial Management Token".to_owned(),
        policies: vec![PolicyLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
        }],
        local: false,
        expiration_unix_ms: None,
        create_index: 0,
        modify_index: 0,
    };
    // As Consul's leader does, the initial management token *is* the bootstrap while bootstrap is
    // still open: afterwards `PUT /v1/acl/bootstrap` is refused instead of minting a second
    // management token for an anonymous caller. If an operator bootstrapped already, the token is
    // simply added.
    let bootstrap = Command::AclBootstrap {
        token: token.clone(),
        reset_index: None,
    };
    if let (
        ApplyResponse::Rejected {
            kind: Rejection::BootstrapNotAllowed,
            ..
        },
        _,
    ) = agent.propose(&bootstrap).await?
    {
        agent.propose(&Command::AclTokenUpsert(token)).await?;
    }
    Ok(())
}

/// Whether a session is invalidated when its node's `serfHealth` goes critical.
fn bound_to_serf_health(session: &Session) -> bool {
    session.node_checks.iter().any(|c| c == SERF_HEALTH_CHECK)
}

/// Destroys a session whose node's `serfHealth` went critical, as a TTL expiry does: its locks are
/// released or deleted per its behavior and every server records the lock-delay as it applies.
async fn invalidate_unhealthy<B: Backend>(agent: &Agent<B>, session: &Session) {
    tracing::info!(session = %session.id, node = %session.node, "node failed: invalidating its session");
    agent.clear_session_timer(&session.id);
    let command = Command::SessionDestroy {
        id: session.id.clone(),
    };
    if let Err(e) = agent.propose(&command).await {
        tracing::warn!(error = ?e, session = %session.id, "invalidating a session of a failed node");
    }
}

/// Acts on a failure event: the node's sessions bound to `serfHealth` that existed when the pool
/// reported it (a later one was created after the node came back).
async fn invalidate_node_sessions<B: Backend>(agent: &Agent<B>, node: &str, created_up_to: u64) {
    let sessions = match agent.store.node_sessions(node) {
        Ok(found) => found.value,
        Err(e) => {
            tracing::warn!(error = %e, node, "reading the sessions of a failed node");
            return;
        }
    };
    for session in sessions
        .iter()
        .filter(|s| s.create_index <= created_up_to && bound_to_serf_health(s))
    {
        invalidate_unhealthy(agent, session).await;
    }
}

/// Destroys every session bound to `serfHealth` whose node the pool holds failed or left now.
async fn sweep_unhealthy_sessions<B: Backend>(agent: &Agent<B>) {
    let Some(gossip) = &agent.gossip else {
        return;
    };
    let Ok(members) = gossip.members().await else {
        return;
    };
    let down: HashSet<&str> = members
        .iter()
        .filter(|m| !m.status.is_live())
        .map(|m| m.name.as_str())
        .collect();
    if down.is_empty() {
        return;
    }
    let sessions = match agent.store.sessions() {
        Ok(found) => found.value,
        Err(e) => {
            tracing::warn!(error = %e, "reading sessions to check their nodes' health");
            return;
        }
    };
    for session in sessions
        .iter()
        .filter(|s| down.contains(s.node.as_str()) && bound_to_serf_health(s))
    {
        invalidate_unhealthy(agent, session).await;
    }
}

/// On gaining leadership, every session with a TTL gets a fresh full timer (as Consul's leader does).
fn arm_all_session_timers<B: Backend>(agent: &Agent<B>) {
    let sessions = match agent.store.sessions() {
        Ok(sessions) => sessions.value,
        Err(e) => {
            tracing::warn!(error = %e, "reading sessions to arm their timers");
            return;
        }
    };
    let mut timers = agent.session_timers.lock();
    timers.clear();
    let now = Instant::now();
    for session in sessions {
        if let Some(ttl) = session.ttl {
            timers.insert(session.id, now + ttl * SESSION_TTL_MULTIPLIER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_uuids_are_stable_and_non_zero() {
        let uuid = "6f1d8a43-7c0e-4d8b-9a43-0b1f3c2d5e6f";
        assert_eq!(id_from_uuid(uuid), id_from_uuid(uuid));
        assert_eq!(id_from_uuid(uuid).map(|id| id & 1), Some(1));
        assert_eq!(id_from_uuid("not a uuid"), None);
    }

    #[test]
    fn node_ids_sharing_their_first_eight_bytes_get_different_raft_ids() {
        let a = id_from_uuid("6f1d8a43-7c0e-4d8b-0000-000000000001").unwrap();
        let b = id_from_uuid("6f1d8a43-7c0e-4d8b-0000-000000000002").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, NodeId::MAX);
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_raft_id_once_chosen_is_kept_and_old_data_dirs_keep_theirs() {
        let config = Config::dev();
        let fresh = tempfile::tempdir().unwrap();
        let id = persistent_raft_id(&config, fresh.path()).unwrap();
        assert_eq!(persistent_raft_id(&config, fresh.path()).unwrap(), id);
        let node_id = std::fs::read_to_string(fresh.path().join("node-id")).unwrap();
        let uuid = uuid::Uuid::parse_str(node_id.trim()).unwrap();
        assert_eq!(id, raft_id_from_node_id(&uuid));

        // A data directory from before raft-id files: raft state exists, the id stays as it was.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("node-id"), node_id.trim()).unwrap();
        std::fs::create_dir(old.path().join("raft")).unwrap();
        assert_eq!(
            persistent_raft_id(&config, old.path()).unwrap(),
            legacy_raft_id(&uuid)
        );
        std::fs::write(fresh.path().join("raft-id"), "0").unwrap();
        assert!(persistent_raft_id(&config, fresh.path()).is_err());
    }

    #[test]
    fn app_messages_round_trip_and_garbage_is_an_error() {
        let reply = AppReply::ReadIndex(42);
        assert!(matches!(
            AppReply::decode(&reply.encode()),
            Ok(AppReply::ReadIndex(42))
        ));
        assert!(AppCall::decode(b"\xff\xff\xff").is_err());
        assert!(AppReply::decode(b"").is_err());
    }
}
