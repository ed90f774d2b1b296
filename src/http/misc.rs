//! `/v1/status/*`, `/v1/agent/self`, `/v1/agent/token/*` and `/v1/catalog/datacenters`: answered by this
//! agent alone, no leader needed.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tribune_kvstore::Backend;

use super::{ApiError, Shared, json_response};
use crate::tokens::TokenKind;

/// `GET /v1/status/leader`: the leader's RPC address, or `""` when none is known.
pub(crate) async fn status_leader<B: Backend>(State(agent): State<Shared<B>>) -> Response {
    let leader = agent
        .consensus
        .leader()
        .map(|(_, info)| info.rpc_addr)
        .unwrap_or_default();
    json_response(HeaderMap::new(), &leader)
}

/// `GET /v1/status/peers`: the RPC addresses of the voters.
pub(crate) async fn status_peers<B: Backend>(State(agent): State<Shared<B>>) -> Response {
    let peers: Vec<String> = agent
        .consensus
        .peers()
        .into_iter()
        .map(|(_, info)| info.rpc_addr)
        .collect();
    json_response(HeaderMap::new(), &peers)
}

/// `GET /v1/agent/self`: the parts of Consul's answer clients read (datacenter, node name, role).
pub(crate) async fn agent_self<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
) -> Result<Response, super::ApiError> {
    let config = &agent.config;
    agent.authorize(&request_headers, &uri, |a| a.agent_read(&config.node_name))?;
    let rpc = agent.consensus.local_addr();
    let body = json!({
        "Config": {
            "Datacenter": config.datacenter,
            "PrimaryDatacenter": config.primary_datacenter,
            "NodeName": config.node_name,
            "NodeID": config.node_id.clone().unwrap_or_default(),
            "Server": config.server,
            "Version": env!("CARGO_PKG_VERSION"),
            "Revision": "",
        },
        "DebugConfig": {
            "ACLsEnabled": config.acl.enabled,
        },
        "Member": {
            "Name": config.node_name,
            "Addr": rpc.ip().to_string(),
            "Port": rpc.port(),
            "Tags": {
                "role": if config.server { "consul" } else { "node" },
                "dc": config.datacenter,
                "port": rpc.port().to_string(),
                "id": config.node_id.clone().unwrap_or_default(),
                "raft_id": agent.node_id.to_string(),
            },
            "Status": 1,
        },
        "Stats": {
            "consul": {
                "server": config.server.to_string(),
                "leader": agent.consensus.is_leader().to_string(),
                "known_servers": agent.consensus.peers().len().to_string(),
            },
            "raft": {
                "applied_index": agent.consensus.applied_index().to_string(),
            },
        },
    });
    Ok(json_response(HeaderMap::new(), &body))
}

/// `GET /v1/catalog/datacenters`: this agent's datacenter (the WAN pool is not assembled yet).
pub(crate) async fn datacenters<B: Backend>(State(agent): State<Shared<B>>) -> Response {
    json_response(HeaderMap::new(), std::slice::from_ref(&agent.config.datacenter))
}

/// The body of `PUT /v1/agent/token/<name>`.
#[derive(Debug, Deserialize)]
struct TokenBody {
    #[serde(rename = "Token", default)]
    token: String,
}

/// `PUT /v1/agent/token/{default,agent,agent_recovery,replication}` (and Consul's legacy names):
/// replaces one of this agent's tokens in memory, and on disk with `acl.enable_token_persistence`.
/// Needs `acl:write`; an agent's tokens are its own, so the request is never forwarded.
pub(crate) async fn agent_token<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&request_headers, &uri, |a| a.acl_write())?;
    let kind = TokenKind::from_path(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Token {name:?} is unknown")))?;
    let body: TokenBody = super::decode_json(&body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    agent
        .tokens
        .set(kind, &body.token)
        .map_err(|e| ApiError::internal(format!("Failed to persist tokens: {e}")))?;
    Ok(StatusCode::OK.into_response())
}
