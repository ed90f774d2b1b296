//! Cluster formation with `bootstrap_expect`: the servers of this datacenter seen in the LAN pool
//! ([`DiscoveredServers`]) and the task that hands them to consensus until the cluster exists
//! ([`form_cluster`]).
//!
//! It is not membership (`membership.rs` reads the pool's events and calls
//! [`DiscoveredServers::learn`]; after formation the leader's reconciliation there adds and removes
//! servers) nor the bootstrap decision itself (consensus's `discovered`, which bootstraps once, on
//! the lowest id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tribune_consensus::{BootstrapStatus, DiscoveredServer, NodeId, NodeInfo};
use tribune_kvstore::Backend;

use super::agent::Agent;
use crate::config::Config;

/// How often a server that waits for `bootstrap_expect` peers asks its `retry_join` addresses again.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(200);

/// A server as the LAN pool describes it (its tags): for cluster formation here, and for a client
/// agent's choice of server.
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

/// The other servers of this datacenter seen in the LAN pool, by raft id.
pub(crate) struct DiscoveredServers {
    datacenter: String,
    node_name: String,
    node_id: NodeId,
    servers: Mutex<BTreeMap<NodeId, NodeInfo>>,
}

impl DiscoveredServers {
    /// None yet, for the server `node_id` described by `config`.
    pub(super) fn new(config: &Config, node_id: NodeId) -> Self {
        DiscoveredServers {
            datacenter: config.datacenter.clone(),
            node_name: config.node_name.clone(),
            node_id,
            servers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records a server of this datacenter (another datacenter's, and this server itself, are
    /// ignored). A server whose raft id another name already holds is refused, loudly.
    pub(crate) fn learn(&self, peer: Peer) {
        if peer.datacenter != self.datacenter || peer.name == self.node_name {
            return;
        }
        let mut discovered = self.servers.lock();
        let holder = if peer.id == self.node_id {
            Some(self.node_name.clone())
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

    /// The servers known now, as consensus's discovery takes them.
    fn known(&self) -> Vec<DiscoveredServer> {
        self.servers
            .lock()
            .iter()
            .map(|(id, info)| DiscoveredServer {
                id: *id,
                info: info.clone(),
            })
            .collect()
    }
}

/// Forms the cluster: feeds consensus's bootstrap_expect discovery with this server and the servers
/// of its datacenter seen in the LAN pool, until the cluster exists.
pub(super) async fn form_cluster<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    if agent.config.bootstrap_expect == 0 {
        return;
    }
    loop {
        let servers = agent.discovered.known();
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
