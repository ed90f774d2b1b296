//! [`NodeHandle`], what an embedding program holds for a running agent: its bound addresses, its
//! raft id and leadership, and the ways to stop it (`leave`, `shutdown`, or dropping the handle).
//!
//! It is not the agent: the handle reaches a server [`Agent`](super::agent::Agent) or a
//! [`ClientAgent`] only through the small [`Control`] trait, whatever the agent's storage backend.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tribune_consensus::NodeId;

use crate::client::ClientAgent;
use crate::replicate::{NodeSink, NodeSource, ReplicationPort, ReplicationSetupError};

/// What the handle needs from the running agent, whatever its storage backend.
pub(super) trait Control: Send + Sync {
    fn stop(&self) -> BoxFuture<'_, ()>;
    fn leave(&self) -> BoxFuture<'_, ()>;
    fn leader_rpc_addr(&self) -> Option<String>;
    fn is_leader(&self) -> bool;
    fn parked_blocking_queries(&self) -> usize;
    /// The server's state and cross-datacenter path for replication; `None` on a client agent.
    fn replication_port(self: Arc<Self>) -> Option<Arc<dyn ReplicationPort>>;
    /// The agent's own services and checks.
    fn local(&self) -> &crate::local::LocalAgent;
}

impl Control for ClientAgent {
    fn stop(&self) -> BoxFuture<'_, ()> {
        self.own_router.take();
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

    fn replication_port(self: Arc<Self>) -> Option<Arc<dyn ReplicationPort>> {
        None
    }

    fn local(&self) -> &crate::local::LocalAgent {
        &self.local
    }
}

/// A running agent. Dropping it stops its tasks without waiting (raft's shutdown is spawned on the
/// current runtime); [`NodeHandle::shutdown`] stops them and waits.
pub struct NodeHandle {
    pub(super) http_addr: Option<SocketAddr>,
    pub(super) dns_addr: Option<SocketAddr>,
    pub(super) serf_lan_addr: Option<SocketAddr>,
    pub(super) serf_wan_addr: Option<SocketAddr>,
    pub(super) rpc_addr: SocketAddr,
    pub(super) node_id: NodeId,
    pub(super) control: Arc<dyn Control>,
    pub(super) shutdown: Arc<watch::Sender<bool>>,
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// Set once `shutdown` finished, so that dropping the handle does not stop anything twice.
    pub(super) stopped: bool,
    pub(super) _scratch: Option<tempfile::TempDir>,
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
    /// Where a reload reads the configuration from (`tribune agent` re-reads its files and
    /// flags); it may also apply settings the node does not own, such as the log level.
    pub fn reload_with(&self, source: crate::local::ReloadSource) {
        self.control.local().set_reload_source(source);
    }

    /// Reloads what can change without a restart, as `SIGHUP` and `/v1/agent/reload` do: the
    /// configuration's services and checks, from the source [`NodeHandle::reload_with`] set (the
    /// configuration the node started with when none was set).
    pub fn reload(&self) -> Result<(), crate::local::ReloadError> {
        self.control.local().reload_from_source()
    }

    /// The address the DNS interface is bound to (UDP and TCP), or `None` when `ports.dns` is
    /// disabled.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns_addr
    }

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

    /// A replication [`Source`](tribune_replicate::Source) that reads prefixes of other datacenters
    /// through this server (see [`NodeSource`]). `token` travels with every read and is checked by the
    /// datacenter that answers; `None` leaves it to that server's default token. A client agent has
    /// none.
    pub fn replication_source(&self, token: Option<&str>) -> Result<NodeSource, ReplicationSetupError> {
        let port = Arc::clone(&self.control)
            .replication_port()
            .ok_or(ReplicationSetupError::NotAServer)?;
        Ok(NodeSource::new(port, token.map(str::to_owned)))
    }

    /// A replication [`Sink`](tribune_replicate::Sink) over this datacenter's state (see
    /// [`NodeSink`]), acting with `token` (`None`: the agent's default token). With ACLs enabled the
    /// token must resolve now, and every call checks its rights again. A client agent has none.
    pub fn replication_sink(&self, token: Option<&str>) -> Result<NodeSink, ReplicationSetupError> {
        let port = Arc::clone(&self.control)
            .replication_port()
            .ok_or(ReplicationSetupError::NotAServer)?;
        port.check_token(token)?;
        Ok(NodeSink::new(port, token.map(str::to_owned)))
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
