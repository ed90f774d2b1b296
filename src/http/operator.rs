//! `/v1/operator/raft/configuration` and `/v1/operator/raft/peer`: the raft configuration as
//! Consul's operators see it, and removing a server from it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tribune_consensus::ServerRole;
use tribune_kvstore::Backend;

use super::{ApiError, Params, Shared, json_response};

/// Consul's `RaftConfigurationResponse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Configuration {
    servers: Vec<RaftServer>,
    /// The log index of the configuration (at least 1).
    index: u64,
}

/// Consul's `RaftServer`. `ID` is the server's raft id in decimal (Consul's is the node's UUID; both
/// are what `DELETE /v1/operator/raft/peer?id=` takes).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    protocol_version: String,
    voter: bool,
}

/// Consul's raft protocol version, which clients print and some compare against 3.
const RAFT_PROTOCOL_VERSION: &str = "3";

/// `GET /v1/operator/raft/configuration[?stale]`: every server of the configuration, with its role
/// and whether it leads. Needs `operator:read`.
pub(crate) async fn configuration<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    agent.authorize(&request_headers, &uri, |a| a.operator_read())?;
    let mode = params.read_mode()?;
    agent.read_barrier(mode).await.map_err(ApiError::consensus)?;
    let leader = agent.consensus.leader().map(|(id, _)| id);
    let servers = agent
        .consensus
        .servers()
        .into_iter()
        .map(|server| RaftServer {
            id: server.id.to_string(),
            node: server.info.name,
            address: server.info.rpc_addr,
            leader: Some(server.id) == leader,
            protocol_version: RAFT_PROTOCOL_VERSION.to_owned(),
            voter: server.role == ServerRole::Voter,
        })
        .collect();
    let index = agent
        .consensus
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .log_id()
        .map(|log_id| log_id.index)
        .unwrap_or(0)
        // The first configuration sits at index 0; like X-Consul-Index, the answer is never 0.
        .max(1);
    let body = Configuration { servers, index };
    Ok(json_response(
        agent.query_meta().with_index(index).headers(),
        &body,
    ))
}

/// `DELETE /v1/operator/raft/peer?id=<raft id>` or `?address=<host:port>`: removes a server from the
/// configuration (on the leader; a follower forwards). Needs `operator:write`.
pub(crate) async fn remove_peer<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    agent.authorize(&request_headers, &uri, |a| a.operator_write())?;
    let servers = agent.consensus.servers();
    let found = match (params.get("id"), params.get("address")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Must specify either ?id or ?address, not both",
            ));
        }
        (Some(id), None) => servers.iter().find(|s| s.id.to_string() == id).ok_or_else(|| {
            ApiError::internal(format!("id {id:?} was not found in the Raft configuration"))
        })?,
        (None, Some(address)) => servers
            .iter()
            .find(|s| s.info.rpc_addr == address)
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "address {address:?} was not found in the Raft configuration"
                ))
            })?,
        (None, None) => return Err(ApiError::bad_request("Must specify either ?id or ?address")),
    };
    agent
        .consensus
        .remove_server(found.id)
        .await
        .map_err(ApiError::consensus)?;
    Ok(StatusCode::OK.into_response())
}
