//! The application calls servers send each other on the server RPC port, beside raft's own
//! messages: what is asked ([`AppCall`]), what is answered ([`AppReply`]), an HTTP request and its
//! response as they travel whole ([`ForwardedHttp`], [`ForwardedResponse`]), and the handler that
//! serves the calls arriving here ([`AppService`]).
//!
//! It is not the transport (consensus's `TcpTransport` carries the bytes, `call_leader` and
//! `call_app_within` send them) nor the decision of where a request goes (the `dispatch`
//! middleware in `http/mod.rs`); the callers are the follower's read barrier (`agent.rs`), the
//! leader forwarding in `http/mod.rs`, the client agent (`client.rs`) and the cross-datacenter call
//! (`federation/forward.rs`).

use std::sync::Weak;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tribune_consensus::{AppHandler, AppRequest, ReadMode};
use tribune_kvstore::Backend;

use super::agent::Agent;
use crate::http;

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

/// Serves [`AppCall`]s arriving on the RPC port. It holds the agent weakly: consensus keeps the
/// handler, and the agent keeps consensus.
pub(super) struct AppService<B: Backend> {
    pub(super) agent: Weak<Agent<B>>,
}

impl<B: Backend> AppHandler for AppService<B> {
    fn handle(&self, request: AppRequest) -> BoxFuture<'static, Result<Bytes, String>> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let agent = agent.upgrade().ok_or("the agent is shutting down")?;
            agent.telemetry.rpc_request();
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
                AppCall::Http(request) => {
                    AppReply::Http(serve_forwarded(&agent, request, http::ForwardedFrom::Server).await?)
                }
                AppCall::ClientHttp(request) => {
                    AppReply::Http(serve_forwarded(&agent, request, http::ForwardedFrom::ClientAgent).await?)
                }
                AppCall::RemoteHttp(forwarded) => {
                    // Never carried further: a request for a third datacenter would be a loop.
                    if request.datacenter.as_deref() != Some(agent.config.datacenter.as_str()) {
                        return Err(format!(
                            "this server is in datacenter {:?}, not {:?}",
                            agent.config.datacenter, request.datacenter
                        ));
                    }
                    AppReply::Http(
                        serve_forwarded(&agent, forwarded, http::ForwardedFrom::OtherDatacenter).await?,
                    )
                }
            };
            Ok(reply.encode())
        })
    }
}

/// Runs a forwarded HTTP request through this server's own router, as a request to this server.
async fn serve_forwarded<B: Backend>(
    agent: &Agent<B>,
    request: ForwardedHttp,
    from: http::ForwardedFrom,
) -> Result<ForwardedResponse, String> {
    let router = agent.own_router.get().ok_or("the HTTP API is not running")?;
    http::serve_forwarded(router, request, from).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
