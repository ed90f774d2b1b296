//! Starting a node: [`Node::start`] decides the advertised address, opens the state (in memory,
//! or RocksDB under `data_dir`), and assembles a server from its parts — consensus on the server
//! RPC port, the WAN pool (federation) and the LAN pool, the HTTP API — then spawns the tasks that
//! keep it running and returns a [`NodeHandle`]. A client agent is assembled by `start_client`.
//!
//! This module only wires; each part does its one job in its own file:
//! - `agent.rs` — [`Agent`], what every part of a running server shares, and the few operations
//!   that need several parts (propose, read barrier, leave);
//! - `handle.rs` — [`NodeHandle`], what the embedding program holds;
//! - `sessions.rs` — session keeping: lock-delays and their gate, TTL timers, failed nodes;
//! - `formation.rs` — `bootstrap_expect`: the servers seen in the LAN pool, until the cluster forms;
//! - `leader.rs` — the leader's duties loop, tombstone reaping, the initial management token;
//! - `app_rpc.rs` — the application calls between servers on the RPC port and their handler;
//! - `raft_id.rs` — a server's raft id, stable across restarts.
//!
//! Gossip adapters live in `membership.rs` (LAN) and `federation/` (WAN and routing), the HTTP API
//! in `http/`.

mod agent;
mod app_rpc;
mod formation;
mod handle;
mod leader;
mod raft_id;
mod reconcile;
mod sessions;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;
use tribune_consensus::openraft::storage::RaftLogStorage;
use tribune_consensus::{
    Consensus, ConsensusConfig, MemLogStore, NodeId, StateMachineStore, TcpTransport, TypeConfig,
};
use tribune_kvstore::{Backend, Store, StoreConfig};

pub(crate) use agent::{Agent, ProposeError};
pub(crate) use app_rpc::{AppCall, AppReply, ForwardedHttp, ForwardedResponse};
pub(crate) use formation::Peer;
pub use handle::NodeHandle;
pub(crate) use reconcile::is_server;
pub(crate) use sessions::{NodeHealth, SERF_HEALTH_CHECK};

use crate::client::ClientAgent;
use crate::config::Config;
use crate::error::NodeError;
use crate::federation::Federation;
use crate::fsm::{KvStateMachine, LockDelays};
use crate::http;
use crate::membership;
use crate::telemetry::Telemetry;
use crate::tokens::AgentTokens;
use app_rpc::AppService;
use formation::DiscoveredServers;
use handle::Control;
#[cfg(feature = "rocksdb")]
use raft_id::persistent_raft_id;
use raft_id::random_node_id;
use sessions::SessionKeeper;

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

/// Assembles a server over an opened store and raft log: consensus on the server port, the HTTP
/// listener, the WAN pool (whose port the LAN tags announce), the LAN pool, the agent's tokens;
/// a failure stops what already started. Then the [`Agent`], its router, the handler of the
/// application calls, and the tasks: HTTP, the pools' watchers and join loops, LAN flooding into
/// the WAN pool, cluster formation and the leader's duties.
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
    let telemetry = Arc::new(Telemetry::new(&config.telemetry, &config.node_name));
    let sm = StateMachineStore::open(
        KvStateMachine::new(Arc::clone(&store), Arc::clone(&lock_delays))
            .with_telemetry(Arc::clone(&telemetry)),
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
    let transport = TcpTransport::new().with_network(config.network.clone());
    let consensus = Consensus::start(consensus_config, rpc_bind, log, sm, transport).await?;

    let http_listener = match bind_http(&config).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = consensus.shutdown().await;
            return Err(e);
        }
    };
    let http_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let dns_listeners = match crate::dns::DnsListeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = consensus.shutdown().await;
            return Err(e);
        }
    };
    let dns_addr = dns_listeners
        .as_ref()
        .and_then(crate::dns::DnsListeners::local_addr);
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
    let config_node_name = config.node_name.clone();
    let own_router: Arc<crate::local_api::RouterCell> = Arc::default();
    let local = crate::local::LocalAgent::new(&config, own_router.clone());
    let agent = Arc::new(Agent {
        discovered: DiscoveredServers::new(&config, node_id),
        sessions: SessionKeeper::new(lock_delays),
        config,
        node_id,
        store,
        consensus: consensus.clone(),
        gossip,
        federation: federation.clone(),
        resolver,
        tokens,
        acl_replication: crate::acl_replication::AclReplication::default(),
        restore_lock: tokio::sync::Mutex::new(()),
        shutdown: shutdown_rx.clone(),
        stop_tasks: Arc::clone(&shutdown_tx),
        own_router,
        telemetry: Arc::clone(&telemetry),
        events: Arc::new(crate::events::Events::new(config_node_name, local.state.clone())),
        local,
    });
    let router = http::router(Arc::clone(&agent));
    agent.own_router.set(router.clone());
    consensus.set_app_handler(Arc::new(AppService {
        agent: Arc::downgrade(&agent),
    }));

    let mut tasks = Vec::new();
    if let Some(listener) = http_listener {
        tasks.push(tokio::spawn(serve_http(listener, router, shutdown_rx.clone())));
    }
    if let Some(dns) = dns_listeners {
        let api: crate::local_api::SharedLocalApi = agent.own_router.clone();
        tasks.extend(dns.serve(&agent.config, api, shutdown_rx.clone()));
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
    tasks.push(tokio::spawn(crate::telemetry::watch_raft(
        telemetry,
        consensus.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(formation::form_cluster(
        Arc::clone(&agent),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::acl_replication::supervise(
        Arc::clone(&agent),
        shutdown_rx.clone(),
    )));
    let token_owner = Arc::downgrade(&agent);
    agent.local.watches.start(
        agent.config.local.watches.clone(),
        agent.own_router.clone(),
        shutdown_rx.clone(),
    );
    tasks.push(agent.local.spawn_sync(
        &agent.config,
        agent.own_router.clone(),
        advertised(&agent.config),
        Box::new(move || {
            token_owner
                .upgrade()
                .and_then(|agent| agent.tokens.get(crate::tokens::TokenKind::Agent))
        }),
        shutdown_rx.clone(),
    ));
    tasks.push(tokio::spawn(leader::leader_duties(
        Arc::clone(&agent),
        shutdown_rx,
    )));

    let control: Arc<dyn Control> = agent;
    Ok(NodeHandle {
        http_addr,
        dns_addr,
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

/// The address the agent's node is registered at: the advertised one, decided at start.
fn advertised(config: &Config) -> String {
    config.advertise_addr.unwrap_or(config.bind_addr).to_string()
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
    let dns_listeners = match crate::dns::DnsListeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            gossip.shutdown().await;
            return Err(e);
        }
    };
    let dns_addr = dns_listeners
        .as_ref()
        .and_then(crate::dns::DnsListeners::local_addr);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let agent = Arc::new(ClientAgent::new(config, gossip, Arc::clone(&shutdown_tx)));
    let mut tasks = Vec::new();
    // The router is the agent's own API (DNS, anti-entropy and alias checks call it in-process)
    // whether or not HTTP is served.
    let router = http::client::router(Arc::clone(&agent));
    agent.own_router.set(router.clone());
    if let Some(listener) = http_listener {
        tasks.push(tokio::spawn(serve_http(listener, router, shutdown_rx.clone())));
    }
    if let Some(dns) = dns_listeners {
        let api: crate::local_api::SharedLocalApi = agent.own_router.clone();
        tasks.extend(dns.serve(&agent.config, api, shutdown_rx.clone()));
    }
    agent.local.watches.start(
        agent.config.local.watches.clone(),
        agent.own_router.clone(),
        shutdown_rx.clone(),
    );
    tasks.push(agent.local.spawn_sync(
        &agent.config,
        agent.own_router.clone(),
        advertised(&agent.config),
        Box::new(|| None),
        shutdown_rx.clone(),
    ));
    // A client counts every member event, and acts on none but a changed keyring, which it saves,
    // and user events, which it keeps; the channel is drained so it does not grow.
    let mut stop = shutdown_rx.clone();
    let keyring_owner = Arc::clone(&agent);
    tasks.push(tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = member_events.recv() => event,
                _ = stop.wait_for(|stopped| *stopped) => None,
            };
            if let Some(event) = &event {
                crate::membership::count_member_event(&keyring_owner.telemetry, event);
            }
            match event {
                None => return,
                Some(tribune_gossip::Event::KeyringChanged) => {
                    crate::gossip_keys::save(&keyring_owner.gossip, &keyring_owner.config).await;
                }
                Some(tribune_gossip::Event::User(event)) => {
                    keyring_owner
                        .events
                        .receive(&event.name, &event.payload, event.ltime);
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
        dns_addr,
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
