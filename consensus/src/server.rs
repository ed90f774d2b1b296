//! A running consensus server: Raft, its RPC port, cluster formation, and the client-side API.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{
    CheckIsLeaderError, InitializeError, InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftLogStorage;
use openraft::{ChangeMembers, RaftNetwork, RaftNetworkFactory, ServerState};
use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::codec;
use crate::config::ConsensusConfig;
use crate::election::{ElectionDriver, ElectionTiming, Quiet, VoterView, grant_pre_vote};
use crate::error::ConsensusError;
use crate::lease::LeaseClock;
use crate::proposer::{BatchLimits, Proposer, write_error};
use crate::sm_store::StateMachineStore;
use crate::state_machine::StateMachine;
use crate::transport::{Transport, TransportError};
use crate::types::{Command, NodeId, NodeInfo, Raft, TypeConfig};
use crate::wire::{
    self, AppRequest, ForwardedWrite, KIND_REQUEST, KIND_RESPONSE, RemoteError, Request, Response,
    RpcRequest, RpcResponse, WriteResponse,
};

/// Handles opaque application requests arriving on the server RPC port.
///
/// The node registers one to serve forwarded reads and client-agent requests. Implementations
/// MUST be safe to call concurrently and SHOULD answer within the caller's request timeout.
pub trait AppHandler: Send + Sync + 'static {
    /// Answers one request; an `Err` message is returned to the caller as
    /// [`ConsensusError::App`].
    fn handle(&self, request: AppRequest) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// How fresh a read must be. Mirrors Consul's `?stale`, default and `?consistent` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Read this server's local state, whatever its role; may be arbitrarily stale.
    Stale,
    /// This server must be the leader (and have heard from a quorum within the leader lease);
    /// otherwise the read is refused with [`ConsensusError::NotLeader`].
    #[default]
    Default,
    /// Linearizable: the leader confirms its leadership with a quorum, then waits until its state
    /// machine has applied everything committed before the read.
    Consistent,
}

/// A server the discovery layer (gossip) knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredServer {
    /// The server's Raft id.
    pub id: NodeId,
    /// Its RPC address and name.
    pub info: NodeInfo,
}

/// What a call to [`Consensus::discovered`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootstrapStatus {
    /// `bootstrap_expect` is 0: the operator forms the cluster.
    Disabled,
    /// This server already has Raft state; bootstrap never runs again.
    AlreadyInitialized,
    /// Fewer than `bootstrap_expect` servers are known so far.
    Waiting {
        /// Servers known, including this one.
        known: usize,
        /// Servers expected.
        expected: usize,
    },
    /// Another server (the lowest id among the first `bootstrap_expect`) forms the cluster.
    NotChosen {
        /// The server that will bootstrap.
        bootstrapper: NodeId,
    },
    /// A discovered server already has Raft state: a cluster exists, join it instead.
    PeerHasState {
        /// The server that reported state.
        peer: NodeId,
    },
    /// A server that must take part could not be asked whether it has state; try again later.
    PeerUnreachable {
        /// The server that did not answer.
        peer: NodeId,
    },
    /// This server initialized the cluster with these voters.
    Bootstrapped {
        /// The initial voters.
        voters: Vec<NodeId>,
    },
}

/// A server's role in the cluster configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerRole {
    /// Votes and counts toward quorum.
    Voter,
    /// Receives the log but does not vote.
    Learner,
}

/// A member of the cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// The server's Raft id.
    pub id: NodeId,
    /// Its address and name.
    pub info: NodeInfo,
    /// Voter or learner.
    pub role: ServerRole,
}

struct Shared {
    id: NodeId,
    config: ConsensusConfig,
    raft: Raft,
    proposer: Proposer,
    transport: Arc<dyn Transport>,
    app_handler: RwLock<Option<Arc<dyn AppHandler>>>,
    last_contact: Mutex<Option<Instant>>,
    /// Acknowledgements of this server's leadership: the default-read lease and check-quorum.
    lease: Arc<LeaseClock>,
    /// When this server last heard from a leader or granted a vote: its election timeout's start.
    quiet: Arc<Quiet>,
    bootstrap_lock: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A running consensus server.
///
/// Owns openraft's [`Raft`], serves the RPC port (Raft, forwarded writes, application requests)
/// and offers the client side: [`write`](Self::write), [`read`](Self::read), membership changes
/// and status queries. Cheap to clone; every clone is the same server.
pub struct Consensus<S: StateMachine> {
    shared: Arc<Shared>,
    sm: StateMachineStore<S>,
    local_addr: SocketAddr,
}

impl<S: StateMachine> Clone for Consensus<S> {
    fn clone(&self) -> Self {
        Consensus {
            shared: Arc::clone(&self.shared),
            sm: self.sm.clone(),
            local_addr: self.local_addr,
        }
    }
}

fn stopped(e: impl std::fmt::Display) -> ConsensusError {
    ConsensusError::Stopped {
        reason: e.to_string(),
    }
}

impl<S: StateMachine> Consensus<S> {
    /// Starts a server: binds `bind` (port 0 picks a free port), opens Raft over `log_store` and
    /// `state_machine`, and serves the RPC port until [`shutdown`](Self::shutdown).
    ///
    /// A server restarted over the same stores resumes where it stopped; a pristine one waits to
    /// be bootstrapped ([`discovered`](Self::discovered)) or added by a leader.
    pub async fn start<L>(
        config: ConsensusConfig,
        bind: SocketAddr,
        log_store: L,
        state_machine: StateMachineStore<S>,
        transport: impl Transport,
    ) -> Result<Self, ConsensusError>
    where
        L: RaftLogStorage<TypeConfig>,
    {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| ConsensusError::Startup {
                reason: format!("bind {bind}: {e}"),
            })?;
        let local_addr = listener.local_addr().map_err(|e| ConsensusError::Startup {
            reason: format!("local addr: {e}"),
        })?;
        transport.bound_to(local_addr);
        let transport: Arc<dyn Transport> = Arc::new(transport);
        let lease = Arc::new(LeaseClock::default());
        let network = NetworkFactory {
            transport: Arc::clone(&transport),
            lease: Arc::clone(&lease),
        };
        let raft = Raft::new(config.id, raft_config, network, log_store, state_machine.clone())
            .await
            .map_err(|e| ConsensusError::Startup {
                reason: e.to_string(),
            })?;
        // Elections are started by the pre-vote driver (election.rs), never by openraft's timer.
        raft.runtime_config().elect(false);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let proposer = Proposer::start(
            raft.clone(),
            BatchLimits {
                max_commands: config.max_batch_commands,
                max_bytes: config.max_batch_bytes,
                max_in_flight: config.max_proposals_in_flight,
                max_queued: config.max_queued_writes,
            },
        );
        let shared = Arc::new(Shared {
            id: config.id,
            config,
            raft,
            proposer,
            transport,
            app_handler: RwLock::new(None),
            last_contact: Mutex::new(None),
            lease,
            quiet: Arc::new(Quiet::new(Instant::now())),
            bootstrap_lock: tokio::sync::Mutex::new(()),
            shutdown,
            accept_task: Mutex::new(None),
        });
        let election_timeout = shared.config.election_timeout;
        let driver = ElectionDriver {
            id: shared.id,
            raft: shared.raft.clone(),
            transport: Arc::clone(&shared.transport),
            lease: Arc::clone(&shared.lease),
            quiet: Arc::clone(&shared.quiet),
            timing: ElectionTiming {
                tick: shared.config.heartbeat_interval,
                // openraft's leader lease (election_timeout_max): voters refuse real votes that long.
                quiet: election_timeout + election_timeout / 2,
                jitter: election_timeout / 2,
                check_quorum: election_timeout,
            },
        };
        tokio::spawn(driver.run(shutdown_rx.clone()));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
        *shared.accept_task.lock() = Some(task);
        Ok(Consensus {
            shared,
            sm: state_machine,
            local_addr,
        })
    }

    /// This server's Raft id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the RPC port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This server as it should appear in the cluster configuration: its advertised address
    /// (see [`ConsensusConfig::advertise_ip`]) with the bound port.
    pub fn node_info(&self) -> NodeInfo {
        let ip = self.shared.config.advertise_ip.unwrap_or(self.local_addr.ip());
        NodeInfo::new(
            SocketAddr::new(ip, self.local_addr.port()).to_string(),
            self.shared.config.name.clone(),
        )
    }

    /// openraft's handle, for metrics and waits (`raft().wait(timeout).metrics(..)`).
    pub fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    /// Registers the handler for application requests arriving on the RPC port.
    pub fn set_app_handler(&self, handler: Arc<dyn AppHandler>) {
        *self.shared.app_handler.write() = Some(handler);
    }

    /// Stops Raft and the RPC port. Open connections are closed; the stores are released.
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        let _ = self.shared.shutdown.send(true);
        // Wait for the listener to close, so the port can be bound again at once.
        let task = self.shared.accept_task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared.raft.shutdown().await.map_err(stopped)
    }

    // ----- writes -------------------------------------------------------------------------

    /// Replicates `command` and returns its index and the state machine's response once it is
    /// committed and applied.
    ///
    /// On a follower the write is forwarded to the leader over the RPC port. If the server it
    /// went to turns out not to be the leader (a leader change in flight), it waits for the new
    /// leader and retries once. A write that may or may not have been applied (the connection
    /// broke after sending) is not retried: the error says so and the caller decides.
    pub async fn write(&self, command: impl Into<Command>) -> Result<WriteResponse, ConsensusError> {
        let command = command.into();
        let mut retried = false;
        loop {
            let tried = self.wait_for_leader(self.leader_wait()).await;
            let result = match tried {
                Ok(leader) if leader == self.shared.id => self.local_write(command.clone()).await,
                Ok(leader) => self.forward_write(leader, command.clone()).await,
                Err(ref e) => Err(e.clone()),
            };
            match result {
                Err(ConsensusError::NotLeader { .. } | ConsensusError::NoLeader) if !retried => {}
                Err(ConsensusError::NotSent { .. }) if !retried => {}
                other => return other,
            }
            retried = true;
            if let Ok(refused) = tried {
                self.wait_for_other_leader(refused).await?;
            }
        }
    }

    async fn local_write(&self, command: Command) -> Result<WriteResponse, ConsensusError> {
        // A leader deposed with this write in flight learns its fate only when the new leader
        // commits or truncates it; the caller is told "unknown" after the request timeout instead
        // of waiting for a partition to heal.
        let timeout = self.shared.config.request_timeout;
        tokio::time::timeout(timeout, self.shared.proposer.write(command.0))
            .await
            .map_err(|_| ConsensusError::Timeout {
                operation: "write",
                after: timeout,
            })?
    }

    async fn forward_write(&self, leader: NodeId, command: Command) -> Result<WriteResponse, ConsensusError> {
        let info = self.node(leader).ok_or(ConsensusError::NoLeader)?;
        let req = RpcRequest(Request::Forward(ForwardedWrite {
            datacenter: Some(self.shared.config.datacenter.clone()),
            command,
        }));
        let resp = self.send_to_leader(leader, &info.rpc_addr, req).await?;
        match resp.0 {
            Response::Forward(Ok(w)) => Ok(w),
            Response::Forward(Err(e)) => Err(remote_to_error(e)),
            other => Err(unexpected(leader, &other)),
        }
    }

    async fn send(&self, target: NodeId, addr: &str, req: RpcRequest) -> Result<RpcResponse, ConsensusError> {
        self.send_within(target, addr, req, self.shared.config.request_timeout)
            .await
    }

    async fn send_within(
        &self,
        target: NodeId,
        addr: &str,
        req: RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, ConsensusError> {
        self.shared
            .transport
            .send(target, addr, req, timeout)
            .await
            .map_err(|e| match e {
                // A request that never left (no connection) is safe to retry; others are ambiguous.
                TransportError::Unreachable { .. } => ConsensusError::NotSent {
                    target,
                    reason: e.to_string(),
                },
                _ => ConsensusError::Transport {
                    target,
                    reason: e.to_string(),
                },
            })
    }

    /// Sends `req` to `leader`, giving up as soon as this server learns that `leader` no longer
    /// leads (an election started or another leader is known): a paused or cut-off leader would
    /// otherwise hold the request for the whole request timeout while a new leader already serves.
    /// The request may have reached the old leader, so the outcome is
    /// [`ConsensusError::LeaderChanged`], never a retry.
    async fn send_to_leader(
        &self,
        leader: NodeId,
        addr: &str,
        req: RpcRequest,
    ) -> Result<RpcResponse, ConsensusError> {
        let mut metrics = self.shared.raft.metrics();
        let replaced = async {
            loop {
                if metrics.borrow_and_update().current_leader != Some(leader) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    // Raft stopped: let the send finish or time out on its own.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            resp = self.send(leader, addr, req) => resp,
            () = replaced => Err(ConsensusError::LeaderChanged { target: leader }),
        }
    }

    /// How long a request waits for a leader to be known before failing with
    /// [`ConsensusError::NoLeader`]: long enough to ride out one election, short enough that a
    /// server cut off from its cluster answers "no leader" at once rather than hanging.
    fn leader_wait(&self) -> Duration {
        self.shared.config.election_timeout * 2
    }

    /// Waits up to `timeout` for a known leader.
    async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ConsensusError> {
        if let Some(l) = self.shared.raft.metrics().borrow().current_leader {
            return Ok(l);
        }
        let res = self
            .shared
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await;
        match res {
            Ok(m) => m.current_leader.ok_or(ConsensusError::NoLeader),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ConsensusError::NoLeader),
            Err(e) => Err(stopped(e)),
        }
    }

    // ----- reads --------------------------------------------------------------------------

    /// Checks that a read in `mode` may be served from this server's state now, and returns the
    /// index the local state machine has applied. After `Ok`, read the local state.
    pub async fn read_barrier(&self, mode: ReadMode) -> Result<u64, ConsensusError> {
        match mode {
            ReadMode::Stale => {}
            ReadMode::Default => {
                if !self.leader_lease_read()? {
                    // No lease, or entries of earlier terms may still be unapplied: confirm
                    // leadership with a quorum and wait for the read point, as a consistent read.
                    self.linearizable().await?;
                }
            }
            ReadMode::Consistent => self.linearizable().await?,
        }
        Ok(self.sm.applied().last_applied_index().unwrap_or(0))
    }

    /// Reads local state with `f` after the check `mode` requires (see [`ReadMode`]).
    pub async fn read<R>(&self, mode: ReadMode, f: impl FnOnce(&S) -> R) -> Result<R, ConsensusError> {
        self.read_barrier(mode).await?;
        Ok(self.sm.with_state(f))
    }

    /// Whether this leader may serve a default read from its local state right now: its lease
    /// (measured now, from the send times of acknowledged heartbeats) holds, and it has applied an
    /// entry of its own term, hence every entry committed by earlier leaders. Everything this
    /// leader acknowledged is applied before the acknowledgement, so the local state then covers
    /// every acknowledged write. `Err` when this server is not the leader.
    fn leader_lease_read(&self) -> Result<bool, ConsensusError> {
        let now = Instant::now();
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader || m.current_leader != Some(self.shared.id) {
            drop(m);
            return Err(self.not_leader());
        }
        let own_term_applied = m
            .last_applied
            .is_some_and(|applied| applied.leader_id.get_term() == m.current_term);
        let voters = m.membership_config.membership().get_joint_config();
        Ok(own_term_applied
            && self
                .shared
                .lease
                .lease_holds(self.shared.id, &m.vote, voters, self.read_lease(), now))
    }

    /// How long after a quorum acknowledged a heartbeat (counted from its sending) this leader
    /// serves default reads alone: the shortest election timeout, less a tenth for clock drift.
    fn read_lease(&self) -> Duration {
        self.shared.config.election_timeout * 9 / 10
    }

    async fn linearizable(&self) -> Result<(), ConsensusError> {
        // A leader that cannot confirm itself within a few election timeouts has lost its quorum
        // and steps down (check-quorum): waiting longer only delays the client's retry.
        let timeout = self
            .shared
            .config
            .request_timeout
            .min(self.shared.config.election_timeout * 4);
        match tokio::time::timeout(timeout, self.shared.raft.ensure_linearizable()).await {
            Err(_) => Err(ConsensusError::NoLeader),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ConsensusError::NotLeader {
                    leader: f.leader_id,
                    leader_info: f.leader_node,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)))) => {
                tracing::debug!(quorum = %q, "consistent read could not reach a quorum");
                Err(ConsensusError::NoLeader)
            }
            Ok(Err(RaftError::Fatal(f))) => Err(stopped(f)),
        }
    }

    fn not_leader(&self) -> ConsensusError {
        let leader = self.shared.raft.metrics().borrow().current_leader;
        ConsensusError::NotLeader {
            leader,
            leader_info: leader.and_then(|l| self.node(l)),
        }
    }

    // ----- status -------------------------------------------------------------------------

    /// The current leader, if this server knows one.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let leader = self.shared.raft.metrics().borrow().current_leader?;
        Some((leader, self.node(leader)?))
    }

    /// The voters of the current configuration (Consul's `status/peers`), sorted by id.
    pub fn peers(&self) -> Vec<(NodeId, NodeInfo)> {
        self.servers()
            .into_iter()
            .filter(|s| s.role == ServerRole::Voter)
            .map(|s| (s.id, s.info))
            .collect()
    }

    /// Every server of the current configuration with its role, sorted by id.
    pub fn servers(&self) -> Vec<ServerEntry> {
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| ServerEntry {
                id: *id,
                info: info.clone(),
                role: if voters.contains(id) {
                    ServerRole::Voter
                } else {
                    ServerRole::Learner
                },
            })
            .collect()
    }

    /// How long since this server last heard from the leader (Consul's `X-Consul-LastContact`):
    /// zero on the leader, `None` when it never has.
    pub fn last_contact(&self) -> Option<Duration> {
        if self.is_leader() {
            return Some(Duration::ZERO);
        }
        self.shared.last_contact.lock().map(|t| t.elapsed())
    }

    /// Whether this server believes it is the leader (Consul's `X-Consul-KnownLeader` is
    /// `leader().is_some()`).
    pub fn is_leader(&self) -> bool {
        let m = self.shared.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.shared.id)
    }

    /// The index the local state machine has applied.
    pub fn applied_index(&self) -> u64 {
        self.sm.applied().last_applied_index().unwrap_or(0)
    }

    fn node(&self, id: NodeId) -> Option<NodeInfo> {
        self.shared
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    // ----- application requests -----------------------------------------------------------

    /// Sends an opaque application request to server `target` at `addr` and returns its
    /// handler's answer.
    pub async fn call_app(
        &self,
        target: NodeId,
        addr: &str,
        request: AppRequest,
    ) -> Result<Bytes, ConsensusError> {
        self.call_app_within(target, addr, request, self.shared.config.request_timeout)
            .await
    }

    /// [`Self::call_app`] with its own deadline: a blocking query carried to another datacenter
    /// waits there for up to its `wait`, longer than any request timeout.
    pub async fn call_app_within(
        &self,
        target: NodeId,
        addr: &str,
        request: AppRequest,
        timeout: Duration,
    ) -> Result<Bytes, ConsensusError> {
        let resp = self
            .send_within(target, addr, RpcRequest(Request::App(request)), timeout)
            .await?;
        app_answer(target, resp)
    }

    /// Sends an application request to the leader (waiting briefly for one to be known). A
    /// request that could not be sent to the leader this server knows (it died, or a partition
    /// cut it off) goes to the next leader once one is known; one that may have been sent is
    /// never repeated.
    ///
    /// While the request is in flight, learning that the leader was replaced ends the wait with
    /// [`ConsensusError::LeaderChanged`]: the request may have reached the old leader.
    pub async fn call_leader(&self, request: AppRequest) -> Result<Bytes, ConsensusError> {
        let leader = self.wait_for_leader(self.leader_wait()).await?;
        match self.call_leader_once(leader, request.clone()).await {
            Err(ConsensusError::NotSent { .. }) => {
                let next = self.wait_for_other_leader(leader).await?;
                self.call_leader_once(next, request).await
            }
            other => other,
        }
    }

    async fn call_leader_once(&self, leader: NodeId, request: AppRequest) -> Result<Bytes, ConsensusError> {
        let info = self.node(leader).ok_or(ConsensusError::NoLeader)?;
        let resp = self
            .send_to_leader(leader, &info.rpc_addr, RpcRequest(Request::App(request)))
            .await?;
        app_answer(leader, resp)
    }

    /// Waits (up to the leader wait) for a leader other than `old`, and accepts `old` again once
    /// the wait is over (it may have been re-elected).
    async fn wait_for_other_leader(&self, old: NodeId) -> Result<NodeId, ConsensusError> {
        let deadline = Instant::now() + self.leader_wait();
        loop {
            let now = self.shared.raft.metrics().borrow().current_leader;
            match now {
                Some(l) if l != old => return Ok(l),
                Some(l) if Instant::now() >= deadline => return Ok(l),
                None if Instant::now() >= deadline => return Err(ConsensusError::NoLeader),
                _ => {}
            }
            let mut rx = self.shared.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
        }
    }

    // ----- cluster formation and change ---------------------------------------------------

    /// The discovery input: the node calls it with every server gossip currently knows
    /// (including or not this one). Forms the cluster when `bootstrap_expect` servers are
    /// known, exactly once, on exactly one server.
    ///
    /// The choice is the same on every server: sort the known servers by id, take the first
    /// `bootstrap_expect`; only the lowest of them initializes Raft, with all of them as voters.
    /// Before initializing it asks each of them whether it already has Raft state and backs off
    /// if any does (a cluster exists) or cannot be asked. A server with Raft state never
    /// bootstraps again.
    pub async fn discovered(&self, servers: &[DiscoveredServer]) -> Result<BootstrapStatus, ConsensusError> {
        let expected = self.shared.config.bootstrap_expect;
        if expected == 0 {
            return Ok(BootstrapStatus::Disabled);
        }
        let _guard = self.shared.bootstrap_lock.lock().await;
        if self.shared.raft.is_initialized().await.map_err(stopped)? {
            return Ok(BootstrapStatus::AlreadyInitialized);
        }
        let mut known: BTreeMap<NodeId, NodeInfo> = servers.iter().map(|s| (s.id, s.info.clone())).collect();
        known.entry(self.shared.id).or_insert_with(|| self.node_info());
        if known.len() < expected {
            return Ok(BootstrapStatus::Waiting {
                known: known.len(),
                expected,
            });
        }
        let chosen: BTreeMap<NodeId, NodeInfo> = known.into_iter().take(expected).collect();
        let bootstrapper = chosen.keys().next().copied().unwrap_or(self.shared.id);
        if bootstrapper != self.shared.id {
            return Ok(BootstrapStatus::NotChosen { bootstrapper });
        }
        for (&peer, info) in chosen.iter().filter(|(id, _)| **id != self.shared.id) {
            match self.send(peer, &info.rpc_addr, RpcRequest(Request::Probe)).await {
                Ok(RpcResponse(Response::Probe { initialized: false })) => {}
                Ok(RpcResponse(Response::Probe { initialized: true })) => {
                    return Ok(BootstrapStatus::PeerHasState { peer });
                }
                Ok(_) | Err(_) => return Ok(BootstrapStatus::PeerUnreachable { peer }),
            }
        }
        let voters: Vec<NodeId> = chosen.keys().copied().collect();
        match self.shared.raft.initialize(chosen).await {
            Ok(()) => {
                tracing::info!(?voters, "bootstrapped the cluster");
                Ok(BootstrapStatus::Bootstrapped { voters })
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Ok(BootstrapStatus::AlreadyInitialized)
            }
            Err(e) => Err(ConsensusError::Membership {
                reason: e.to_string(),
            }),
        }
    }

    /// Initializes a single-server or operator-formed cluster with exactly `voters` (ignored if
    /// this server already has Raft state).
    pub async fn initialize(&self, voters: BTreeMap<NodeId, NodeInfo>) -> Result<(), ConsensusError> {
        match self.shared.raft.initialize(voters).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ConsensusError::Membership {
                reason: e.to_string(),
            }),
        }
    }

    /// On the leader: adds server `id` as a learner and returns once it has caught up with the
    /// log (by entries or by snapshot).
    pub async fn add_learner(&self, id: NodeId, info: NodeInfo) -> Result<(), ConsensusError> {
        self.shared
            .raft
            .add_learner(id, info, true)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// On the leader: adds server `id` as a learner, waits until it has caught up, then promotes
    /// it to voter.
    pub async fn add_server(&self, id: NodeId, info: NodeInfo) -> Result<(), ConsensusError> {
        self.add_learner(id, info).await?;
        self.shared
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(())
    }

    /// On the leader: removes server `id` from the configuration (voter or learner).
    pub async fn remove_server(&self, id: NodeId) -> Result<(), ConsensusError> {
        let is_voter = self.peers().iter().any(|(v, _)| *v == id);
        if is_voter {
            self.shared
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        if self.servers().iter().any(|s| s.id == id) {
            self.shared
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// On the leader: dead-server cleanup (Consul autopilot's `CleanupDeadServers`). Removes the
    /// servers gossip reports `failed`, but never so many voters that fewer than a quorum of the
    /// current voters, or fewer than `bootstrap_expect`, would remain: a failed server of a
    /// datacenter sized by `bootstrap_expect` may come back, and removing it would only leave the
    /// cluster closer to losing its quorum. Learners always go. Returns the ids removed, lowest
    /// first.
    pub async fn remove_failed_servers(&self, failed: &[NodeId]) -> Result<Vec<NodeId>, ConsensusError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let failed: BTreeSet<NodeId> = failed
            .iter()
            .copied()
            .filter(|id| *id != self.shared.id)
            .collect();
        let servers = self.servers();
        let voters = servers.iter().filter(|s| s.role == ServerRole::Voter).count();
        let quorum = voters / 2 + 1;
        let floor = quorum.max(self.shared.config.bootstrap_expect);
        let mut removable_voters = voters.saturating_sub(floor);
        let mut removed = Vec::new();
        for s in servers.iter().filter(|s| failed.contains(&s.id)) {
            if s.role == ServerRole::Voter {
                if removable_voters == 0 {
                    tracing::warn!(
                        server = s.id,
                        "not removing failed voter: it would leave less than a quorum or fewer voters than bootstrap_expect"
                    );
                    continue;
                }
                removable_voters -= 1;
            }
            self.remove_server(s.id).await?;
            removed.push(s.id);
        }
        Ok(removed)
    }
}

pub(crate) fn remote_to_error(e: RemoteError) -> ConsensusError {
    match e {
        RemoteError::NotLeader { leader, leader_info } => ConsensusError::NotLeader { leader, leader_info },
        RemoteError::NoAppHandler => ConsensusError::NoAppHandler,
        RemoteError::App(reason) => ConsensusError::App { reason },
        RemoteError::Failed(reason) => ConsensusError::Stopped { reason },
        RemoteError::Overloaded { queued } => ConsensusError::Overloaded { queued },
    }
}

/// The application's answer in `resp`, from server `target`.
fn app_answer(target: NodeId, resp: RpcResponse) -> Result<Bytes, ConsensusError> {
    match resp.0 {
        Response::App(Ok(b)) => Ok(b),
        Response::App(Err(e)) => Err(remote_to_error(e)),
        other => Err(unexpected(target, &other)),
    }
}

fn unexpected(target: NodeId, resp: &Response) -> ConsensusError {
    match resp {
        Response::Failed(reason) => ConsensusError::Stopped {
            reason: reason.clone(),
        },
        _ => ConsensusError::Transport {
            target,
            reason: "mismatched response kind".into(),
        },
    }
}

// ----- the RPC port: server side ------------------------------------------------------------

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_conn(stream, Arc::clone(&shared), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(wire::write_frames(write_half, rx));
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, read_half);
    loop {
        let frame = tokio::select! {
            _ = shutdown.changed() => break,
            f = wire::read_frame(&mut reader) => f,
        };
        let frame = match frame {
            Ok(Some(f)) if f.kind == KIND_REQUEST => f,
            Ok(Some(_)) | Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "dropping RPC connection");
                break;
            }
        };
        let shared = Arc::clone(&shared);
        let tx = tx.clone();
        tokio::spawn(async move {
            let response = match codec::decode::<RpcRequest>(&frame.body) {
                Ok(req) => handle(&shared, req.0).await,
                Err(e) => Response::Failed(format!("bad request: {e}")),
            };
            match wire::encode_frame(frame.id, KIND_RESPONSE, &RpcResponse(response)) {
                Ok(bytes) => {
                    let _ = tx.send(bytes);
                }
                Err(e) => {
                    let fallback = RpcResponse(Response::Failed(format!("response too large: {e}")));
                    if let Ok(bytes) = wire::encode_frame(frame.id, KIND_RESPONSE, &fallback) {
                        let _ = tx.send(bytes);
                    }
                }
            }
        });
    }
    drop(tx);
    writer.abort();
}

async fn handle(shared: &Shared, req: Request) -> Response {
    let raft = &shared.raft;
    match req {
        Request::AppendEntries(r) => match raft.append_entries(r).await {
            Ok(resp) => {
                if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                    let now = Instant::now();
                    *shared.last_contact.lock() = Some(now);
                    shared.quiet.heard(now);
                }
                Response::AppendEntries(resp)
            }
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Vote(r) => match raft.vote(r).await {
            Ok(resp) => {
                if resp.vote_granted {
                    // A granted vote restarts the election timeout, as in Raft: the candidate
                    // gets its chance before this server campaigns itself.
                    shared.quiet.heard(Instant::now());
                }
                Response::Vote(resp)
            }
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::InstallSnapshot(r) => match raft.install_snapshot(r).await {
            Ok(resp) => {
                let now = Instant::now();
                *shared.last_contact.lock() = Some(now);
                shared.quiet.heard(now);
                Response::InstallSnapshot(Ok(resp))
            }
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                Response::InstallSnapshot(Err(m))
            }
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::Forward(fw) => Response::Forward(match shared.proposer.write(fw.command.0).await {
            Ok(w) => Ok(w),
            Err(ConsensusError::NotLeader { leader, leader_info }) => {
                Err(RemoteError::NotLeader { leader, leader_info })
            }
            Err(ConsensusError::Overloaded { queued }) => Err(RemoteError::Overloaded { queued }),
            Err(e) => Err(RemoteError::Failed(e.to_string())),
        }),
        Request::App(r) => {
            let handler = shared.app_handler.read().clone();
            Response::App(match handler {
                Some(h) => h.handle(r).await.map_err(RemoteError::App),
                None => Err(RemoteError::NoAppHandler),
            })
        }
        Request::Probe => match raft.is_initialized().await {
            Ok(initialized) => Response::Probe { initialized },
            Err(e) => Response::Failed(e.to_string()),
        },
        Request::PreVote(r) => {
            let view = {
                let m = raft.metrics();
                let m = m.borrow();
                VoterView {
                    is_leader: m.state == ServerState::Leader,
                    current_term: m.current_term,
                    last_log_id: raft.data_metrics().borrow().last_log,
                    quiet_for: Some(shared.quiet.since().elapsed()),
                }
            };
            let quiet = shared.config.election_timeout + shared.config.election_timeout / 2;
            Response::PreVote {
                granted: grant_pre_vote(&view, &r, quiet),
            }
        }
    }
}

// ----- openraft's network over the transport ------------------------------------------------

struct NetworkFactory {
    transport: Arc<dyn Transport>,
    lease: Arc<LeaseClock>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            target,
            addr: node.rpc_addr.clone(),
            transport: Arc::clone(&self.transport),
            lease: Arc::clone(&self.lease),
        }
    }
}

struct PeerNetwork {
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
    lease: Arc<LeaseClock>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

fn transport_to_rpc<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, NodeInfo, E> {
    match e {
        TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("server {target}: {reason}")]
struct RemoteFailure {
    target: NodeId,
    reason: String,
}

impl PeerNetwork {
    async fn call(&self, req: Request, option: &RPCOption) -> Result<Response, TransportError> {
        // openraft gives each replication RPC its deadline (the heartbeat interval for
        // AppendEntries, the snapshot timeout for chunks) and retries on expiry.
        let timeout = option.hard_ttl();
        let resp = self
            .transport
            .send(self.target, &self.addr, RpcRequest(req), timeout)
            .await?;
        Ok(resp.0)
    }

    fn failed<E: std::error::Error>(&self, resp: Response) -> RPCError<NodeId, NodeInfo, E> {
        let reason = match resp {
            Response::Failed(r) => r,
            _ => "mismatched response kind".into(),
        };
        // A server whose Raft stopped will not answer soon: back off like an unreachable one.
        RPCError::Unreachable(Unreachable::new(&RemoteFailure {
            target: self.target,
            reason,
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        let vote = rpc.vote;
        if let Some(pledge) = self.lease.step_down_answer(&vote) {
            // Check-quorum asked this leader to step down: answer for the peer, locally.
            return Ok(AppendEntriesResponse::HigherVote(pledge));
        }
        let sent_at = Instant::now();
        match self
            .call(Request::AppendEntries(rpc), &option)
            .await
            .map_err(transport_to_rpc)?
        {
            Response::AppendEntries(r) => {
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                    self.lease.record_ack(self.target, vote, sent_at);
                }
                Ok(r)
            }
            other => Err(self.failed(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .call(Request::InstallSnapshot(rpc), &option)
            .await
            .map_err(transport_to_rpc)?
        {
            Response::InstallSnapshot(Ok(r)) => Ok(r),
            Response::InstallSnapshot(Err(mismatch)) => {
                Err(RPCError::RemoteError(openraft::error::RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )))
            }
            other => Err(self.failed(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self
            .call(Request::Vote(rpc), &option)
            .await
            .map_err(transport_to_rpc)?
        {
            Response::Vote(r) => Ok(r),
            other => Err(self.failed(other)),
        }
    }

    fn backoff(&self) -> Backoff {
        // Retry an unreachable peer every 100 ms: a restarted server rejoins quickly, and the
        // transport's own reconnect backoff keeps a dead one from costing more than a refusal.
        Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}
