//! A client agent (`server = false`): a member of the LAN pool that holds no state. It answers
//! the agent endpoints about itself and hands every other request to a live server of its
//! datacenter, which serves it as its own (forwarding a write to its leader); when a server
//! cannot be reached, the request goes to the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tribune_consensus::{AppRequest, RpcRequest, TcpTransport, Transport, TransportError};
use tribune_gossip::{Gossip, MemberStatus};

use crate::config::Config;
use crate::membership::server_peer;
use crate::node::{AppCall, AppReply, ForwardedHttp, ForwardedResponse, Peer};

/// How long a server may take to answer a forwarded request, beyond the blocking wait the
/// request itself asks for (Consul's longest wait plus its jitter).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(660);

/// Why a client agent could not get an answer from any server.
#[derive(Debug)]
pub(crate) enum ClientForwardError {
    /// The pool knows no live server of this datacenter.
    NoServers,
    /// Every live server failed; the last error.
    AllFailed(String),
    /// A server answered with an error of its own (not retried: it may have acted).
    Server(String),
}

/// The shared state of a running client agent.
pub(crate) struct ClientAgent {
    pub(crate) config: Config,
    pub(crate) gossip: Gossip,
    transport: TcpTransport,
    /// Where the next request starts in the server list, so load spreads over the servers.
    next_server: AtomicUsize,
    pub(crate) stop_tasks: Arc<watch::Sender<bool>>,
    /// The agent's own router, for the agent's calls into its own API (`local_api`).
    pub(crate) own_router: Arc<crate::local_api::RouterCell>,
    /// The user events this agent kept (`/v1/event/list`).
    pub(crate) events: Arc<crate::events::Events>,
    /// The services and checks registered on this agent, synced to the catalog by anti-entropy.
    pub(crate) local: crate::local::LocalAgent,
    /// The agent's own metrics (`/v1/agent/metrics`).
    pub(crate) telemetry: Arc<crate::telemetry::Telemetry>,
}

impl ClientAgent {
    pub(crate) fn new(config: Config, gossip: Gossip, stop_tasks: Arc<watch::Sender<bool>>) -> Self {
        let own_router: Arc<crate::local_api::RouterCell> = Arc::default();
        let local = crate::local::LocalAgent::new(&config, own_router.clone());
        ClientAgent {
            telemetry: Arc::new(crate::telemetry::Telemetry::new_client(
                &config.telemetry,
                &config.node_name,
            )),
            events: Arc::new(crate::events::Events::new(
                config.node_name.clone(),
                local.state.clone(),
            )),
            config,
            gossip,
            transport: TcpTransport::new(),
            next_server: AtomicUsize::new(0),
            stop_tasks,
            own_router,
            local,
        }
    }

    /// How many live servers of this datacenter the pool shows (`Stats.consul.known_servers`).
    pub(crate) async fn known_servers(&self) -> usize {
        self.live_servers().await.len()
    }

    async fn live_servers(&self) -> Vec<Peer> {
        let members = self.gossip.members().await.unwrap_or_default();
        let mut servers: Vec<Peer> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .filter_map(|m| server_peer(m, &self.config.datacenter))
            .collect();
        servers.sort_by_key(|p| p.id);
        servers
    }

    /// Hands `request` to a live server, trying the next one when a server cannot be reached.
    pub(crate) async fn forward(
        &self,
        request: ForwardedHttp,
    ) -> Result<ForwardedResponse, ClientForwardError> {
        let answer = self.forward_to_a_server(request).await;
        self.telemetry.client_rpc(answer.is_ok());
        answer
    }

    async fn forward_to_a_server(
        &self,
        request: ForwardedHttp,
    ) -> Result<ForwardedResponse, ClientForwardError> {
        let servers = self.live_servers().await;
        if servers.is_empty() {
            return Err(ClientForwardError::NoServers);
        }
        let payload = AppCall::ClientHttp(request).encode();
        let start = self.next_server.fetch_add(1, Ordering::Relaxed);
        let mut last_error = String::new();
        for offset in 0..servers.len() {
            let Some(server) = servers.get((start + offset) % servers.len()) else {
                continue;
            };
            let call = RpcRequest::app(AppRequest {
                datacenter: Some(self.config.datacenter.clone()),
                payload: payload.clone(),
            });
            match self
                .transport
                .send(server.id, &server.rpc_addr, call, FORWARD_TIMEOUT)
                .await
            {
                Ok(response) => {
                    let bytes = response
                        .into_app()
                        .map_err(|e| ClientForwardError::Server(e.to_string()))?;
                    return match AppReply::decode(&bytes) {
                        Ok(AppReply::Http(answer)) => Ok(answer),
                        Ok(_) => Err(ClientForwardError::Server(
                            "unexpected answer from the server".into(),
                        )),
                        Err(e) => Err(ClientForwardError::Server(e)),
                    };
                }
                // Never sent: safe to try the next server.
                Err(e @ TransportError::Unreachable { .. }) => {
                    tracing::debug!(server = %server.name, error = %e, "server unreachable, trying the next");
                    last_error = e.to_string();
                }
                Err(e) => return Err(ClientForwardError::Server(e.to_string())),
            }
        }
        Err(ClientForwardError::AllFailed(last_error))
    }

    /// Leaves the pool gracefully and asks the agent's tasks to stop.
    pub(crate) async fn leave_pool(&self) {
        if let Err(e) = self.gossip.leave().await {
            tracing::warn!(error = %e, "leaving the LAN pool");
        }
        self.stop_tasks.send_replace(true);
    }
}
