//! `/v1/status/*`, `/v1/agent/self`, `/v1/agent/token/*` and `/v1/catalog/datacenters`: answered by this
//! agent alone, no leader needed.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tribune_kvstore::Backend;

use tribune_consensus::openraft::ServerState;
use tribune_gossip::{Gossip, MemberStatus};

use super::{ApiError, Shared, json_response};
use crate::config::Config;
use crate::duration::format_go_duration;
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

/// `GET /v1/agent/self`: the parts of Consul's answer clients read: `Config`, `Member`, `Meta`, and
/// `Stats` with every value a string, as Consul sends them (`Stats.consul.leader_addr` is the
/// leader's RPC address, `""` while none is known).
pub(crate) async fn agent_self<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
) -> Result<Response, super::ApiError> {
    let config = &agent.config;
    agent.authorize(&request_headers, &uri, |a| a.agent_read(&config.node_name))?;
    let rpc = agent.consensus.local_addr();
    let (state, term, last_log_index, snapshot, configuration_index) = {
        let metrics = agent.consensus.raft().metrics();
        let metrics = metrics.borrow();
        (
            metrics.state,
            metrics.current_term,
            metrics.last_log_index.unwrap_or(0),
            metrics.snapshot,
            metrics.membership_config.log_id().map_or(0, |id| id.index),
        )
    };
    // hashicorp/raft's names; a learner is what it calls a non-voting follower.
    let state = match state {
        ServerState::Leader => "Leader",
        ServerState::Candidate => "Candidate",
        ServerState::Shutdown => "Shutdown",
        ServerState::Follower | ServerState::Learner => "Follower",
    };
    let leader_addr = agent
        .consensus
        .leader()
        .map(|(_, info)| info.rpc_addr)
        .unwrap_or_default();
    let voters = agent.consensus.peers();
    let num_peers = voters.iter().filter(|(id, _)| *id != agent.node_id).count();
    let last_contact = match agent.consensus.last_contact() {
        None => "never".to_owned(),
        Some(since) if since.is_zero() => "0".to_owned(),
        Some(since) => format_go_duration(since),
    };
    // openraft 0.9 publishes no commit index; what this server applied is committed, and is
    // what a reader of this server sees.
    let applied = agent.consensus.applied_index();
    let serf = agent.gossip.as_ref().map(Gossip::local_addr);
    let member_addr = serf.unwrap_or(rpc);
    let node_id = config.node_id.clone().unwrap_or_default();
    let built_member = json!({
            "Name": config.node_name,
            "Addr": member_addr.ip().to_string(),
            "Port": member_addr.port(),
            "Tags": {
                "role": if config.server { "consul" } else { "node" },
                "dc": config.datacenter,
                "port": rpc.port().to_string(),
                "id": node_id,
                "raft_id": agent.node_id.to_string(),
                "bootstrap": if config.bootstrap_expect == 1 { "1" } else { "0" },
                "expect": config.bootstrap_expect.to_string(),
                "build": env!("CARGO_PKG_VERSION"),
            },
            "Status": 1,
    });
    let (member, coord) = self_member_and_coord(agent.gossip.as_ref(), &config.node_name, built_member).await;
    let body = json!({
        "Config": config_json(config, true),
        "DebugConfig": {
            "ACLsEnabled": config.acl.enabled,
        },
        "Member": member,
        "Coord": coord,
        "xDS": xds_json(),
        "Meta": {},
        "Stats": {
            "consul": {
                "server": config.server.to_string(),
                "leader": agent.consensus.is_leader().to_string(),
                "leader_addr": leader_addr,
                "bootstrap": (config.bootstrap_expect == 1).to_string(),
                "known_datacenters": "1",
                "known_servers": voters.len().to_string(),
                "acl": if config.acl.enabled { "enabled" } else { "disabled" },
            },
            "raft": {
                "state": state,
                "term": term.to_string(),
                "commit_index": applied.to_string(),
                "applied_index": applied.to_string(),
                "last_log_index": last_log_index.to_string(),
                "last_snapshot_index": snapshot.map_or(0, |id| id.index).to_string(),
                "last_snapshot_term": snapshot.map_or(0, |id| id.leader_id.get_term()).to_string(),
                "latest_configuration_index": configuration_index.to_string(),
                "num_peers": num_peers.to_string(),
                "last_contact": last_contact,
                "protocol_version": "3",
            },
            "agent": agent_stats(&agent.local),
            "runtime": runtime_stats(),
            "serf_lan": serf_lan_stats(agent.gossip.as_ref(), config).await,
        },
    });
    Ok(json_response(HeaderMap::new(), &body))
}

/// `/v1/agent/self`'s `Config`, shared by servers and client agents.
pub(crate) fn config_json(config: &Config, server: bool) -> serde_json::Value {
    json!({
        "Datacenter": config.datacenter,
        "PrimaryDatacenter": config.primary_datacenter,
        "NodeName": config.node_name,
        "NodeID": config.node_id.clone().unwrap_or_default(),
        "Server": server,
        "Version": env!("CARGO_PKG_VERSION"),
        "Revision": "",
    })
}

/// `Member` and `Coord` of `/v1/agent/self`: this agent's entry of `/v1/agent/members` (so a
/// client can find itself in that list) and its LAN coordinate, or `built` and null without a pool.
pub(crate) async fn self_member_and_coord(
    gossip: Option<&Gossip>,
    node_name: &str,
    built: serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    let Some(gossip) = gossip else {
        return (built, serde_json::Value::Null);
    };
    let member = super::agent::members_json(gossip, |members| members.retain(|m| m.name == node_name))
        .await
        .ok()
        .and_then(|mut found| found.pop())
        .and_then(|entry| serde_json::to_value(entry).ok())
        .unwrap_or(built);
    // The pool lists this node's own coordinate first.
    let coord = match gossip.coordinates().await {
        Ok(coordinates) => coordinates
            .into_iter()
            .find(|(name, _)| name == node_name)
            .and_then(|(_, coordinate)| serde_json::to_value(coordinate).ok())
            .unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    (member, coord)
}

/// `xDS` of `/v1/agent/self`: Consul's shape, with no port, since no xDS (gRPC) server runs.
pub(crate) fn xds_json() -> serde_json::Value {
    json!({
        "SupportedProxies": { "envoy": [] },
        "Port": -1,
        "Ports": { "Plaintext": -1, "TLS": -1 },
    })
}

/// `Stats.agent`: the agent's own services and checks, with its TTL and script checks.
pub(crate) fn agent_stats(local: &crate::local::LocalAgent) -> serde_json::Value {
    let checks = local.state.checks();
    let of_type = |kind: &str| checks.iter().filter(|c| c.check_type == kind).count();
    json!({
        "check_monitors": of_type("script").to_string(),
        "check_ttls": of_type("ttl").to_string(),
        "checks": checks.len().to_string(),
        "services": local.state.services().len().to_string(),
    })
}

/// `Stats.runtime`, in Go's words where there is one: `arch` and `os` as GOARCH and GOOS spell them,
/// `goroutines` as the tasks alive on the runtime.
pub(crate) fn runtime_stats() -> serde_json::Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks());
    json!({
        "arch": arch,
        "os": std::env::consts::OS,
        "version": concat!("tribune ", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "cpu_count": cpus.to_string(),
        "max_procs": cpus.to_string(),
        "goroutines": tasks.to_string(),
    })
}

/// `Stats.serf_lan`: the pool as this agent sees it (every member it knows, failed and left ones
/// included, as Serf counts them) and its Lifeguard health score.
pub(crate) async fn serf_lan_stats(gossip: Option<&Gossip>, config: &Config) -> serde_json::Value {
    let (members, health_score) = match gossip {
        Some(gossip) => (
            gossip.members().await.unwrap_or_default(),
            gossip.health_score().await.unwrap_or_default(),
        ),
        None => (Vec::new(), 0),
    };
    let count = |status: MemberStatus| members.iter().filter(|m| m.status == status).count();
    json!({
        "members": members.len().to_string(),
        "failed": count(MemberStatus::Failed).to_string(),
        "left": count(MemberStatus::Left).to_string(),
        "health_score": health_score.to_string(),
        "encrypted": config.encrypt.is_some().to_string(),
    })
}

/// `GET /v1/catalog/datacenters`: every datacenter this server can route to, nearest first (only
/// its own without a WAN pool).
pub(crate) async fn datacenters<B: Backend>(State(agent): State<Shared<B>>) -> Response {
    let all = match &agent.federation {
        Some(federation) => federation.datacenters_by_distance().await,
        None => vec![agent.config.datacenter.clone()],
    };
    json_response(HeaderMap::new(), &all)
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
    agent.acls_enabled()?;
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
