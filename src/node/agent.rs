//! [`Agent`], a running server as every part of it sees it: the configuration, the store and
//! consensus, the two gossip pools, and the parts with one job each — [`SessionKeeper`] (session
//! duties), [`DiscoveredServers`] (cluster formation), the ACL resolver and the agent's own tokens.
//! Its own methods are the few that need several parts at once: [`Agent::propose`],
//! [`Agent::read_barrier`], [`Agent::after_restore`], [`Agent::node_health`] and
//! [`Agent::leave_pool`].
//!
//! It is not where the parts are built and their tasks spawned (`mod.rs`), nor the HTTP API,
//! which adds its request helpers in `http/mod.rs`, nor federation's cross-datacenter call
//! (`federation/forward.rs`). A client agent is another type (`client.rs`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tribune_consensus::{AppRequest, Consensus, ConsensusError, NodeId, ReadMode};
use tribune_kvstore::{Backend, Command, Store, encode_command};

use super::app_rpc::{AppCall, AppReply};
use super::formation::DiscoveredServers;
use super::handle::Control;
use super::leader;
use super::sessions::{NodeHealth, SessionKeeper};
use crate::config::Config;
use crate::federation::Federation;
use crate::fsm::{ApplyResponse, KvStateMachine};
use crate::tokens::AgentTokens;

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
    /// Session TTL timers, lock-delays and the sessions of failed nodes.
    pub(crate) sessions: SessionKeeper,
    /// Servers of this datacenter seen in the LAN pool, for bootstrap_expect.
    pub(crate) discovered: DiscoveredServers,
    /// Resolves request tokens to authorizers over the local state (used when ACLs are enabled).
    pub(crate) resolver: tribune_acl::Resolver,
    /// The agent's own ACL tokens (`default` serves requests without one), settable at run time.
    pub(crate) tokens: AgentTokens,
    /// ACLs across datacenters: replication status and the tokens resolved at the primary.
    pub(crate) acl_replication: crate::acl_replication::AclReplication,
    /// Held while this server proposes a snapshot restore, so that its own restores never interleave.
    pub(crate) restore_lock: tokio::sync::Mutex<()>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Stops the agent's tasks; shared with the handle so that `/v1/agent/leave` can stop it.
    pub(super) stop_tasks: Arc<watch::Sender<bool>>,
    /// The agent's own router, which serves the requests other agents forward here.
    pub(crate) own_router: Arc<crate::local_api::RouterCell>,
    /// The agent's metrics (`/v1/agent/metrics`).
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
    /// The user events this agent kept (`/v1/event/list`).
    pub(crate) events: Arc<crate::events::Events>,
    /// The services and checks registered on this agent, synced to the catalog by anti-entropy.
    pub(crate) local: crate::local::LocalAgent,
}

impl<B: Backend> Control for Agent<B> {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.own_router.take();
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

    fn replication_port(self: Arc<Self>) -> Option<Arc<dyn crate::replicate::ReplicationPort>> {
        Some(crate::replicate::port(&self))
    }

    fn local(&self) -> &crate::local::LocalAgent {
        &self.local
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
        // and holds the gate until it has applied (see `SessionKeeper::lock_delays_now`).
        let _gate = match command {
            Command::SessionDestroy { .. } => Some(self.sessions.invalidation_gate().await),
            _ => None,
        };
        let _timing = self.telemetry.time_write(command);
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
            self.sessions.arm_all_timers(&self.store);
            if let Err(e) = leader::install_initial_management(self).await {
                tracing::warn!(error = ?e, "installing the initial management token after a restore");
            }
        }
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
}
