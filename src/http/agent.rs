//! `/v1/agent/{members,join,leave,force-leave}`: this agent's view of the LAN gossip pool, and
//! changes to its membership. Served locally on every agent, never forwarded.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tribune_gossip::{Gossip, Member, MemberStatus, Tags};
use tribune_kvstore::Backend;

use super::{ApiError, Params, Shared, json_response};

/// Serf's member status numbers, which Consul's API reports.
fn serf_status(status: MemberStatus) -> u8 {
    match status {
        // Serf reports a suspect member as alive: suspicion is memberlist's business.
        MemberStatus::Alive | MemberStatus::Suspect => 1,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
        _ => 0,
    }
}

/// One entry of `/v1/agent/members`, in Consul's shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MemberJson {
    name: String,
    addr: String,
    port: u16,
    tags: Tags,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

impl From<Member> for MemberJson {
    fn from(member: Member) -> Self {
        MemberJson {
            addr: member.addr.ip().to_string(),
            port: member.addr.port(),
            status: serf_status(member.status),
            name: member.name,
            tags: member.tags,
            // The protocol versions Consul 1.x reports; clients display them, none acts on them.
            protocol_min: 1,
            protocol_max: 5,
            protocol_cur: 2,
            delegate_min: 2,
            delegate_max: 5,
            delegate_cur: 4,
        }
    }
}

fn lan_pool<B: Backend>(agent: &Shared<B>) -> Result<&Gossip, ApiError> {
    agent
        .gossip
        .as_ref()
        .ok_or_else(|| ApiError::internal("this agent runs no LAN gossip pool (ports.serf_lan is disabled)"))
}

/// A client agent is in no WAN pool: `?wan` is refused there, naming why.
pub(crate) fn refuse_wan(params: &Params) -> Result<(), ApiError> {
    if params.has("wan") {
        return Err(ApiError::bad_request(
            "this agent is not a server: only servers are members of the WAN pool",
        ));
    }
    Ok(())
}

/// The pool a request names: the WAN pool with `?wan` (servers only), else the LAN pool.
fn pool<'a, B: Backend>(agent: &'a Shared<B>, params: &Params) -> Result<Pool<'a>, ApiError> {
    if !params.has("wan") || params.get("wan") == Some("0") || params.get("wan") == Some("false") {
        return Ok(Pool::Lan(lan_pool(agent)?));
    }
    agent
        .federation
        .as_ref()
        .map(|federation| Pool::Wan(federation.wan()))
        .ok_or_else(|| ApiError::internal("this server runs no WAN gossip pool (ports.serf_wan is disabled)"))
}

/// One of the agent's two gossip pools.
#[derive(Clone, Copy)]
enum Pool<'a> {
    Lan(&'a Gossip),
    Wan(&'a Gossip),
}

impl<'a> Pool<'a> {
    fn gossip(self) -> &'a Gossip {
        match self {
            Pool::Lan(g) | Pool::Wan(g) => g,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Pool::Lan(_) => crate::membership::DEFAULT_SERF_LAN_PORT,
            Pool::Wan(_) => crate::federation::DEFAULT_SERF_WAN_PORT,
        }
    }
}

/// `GET /v1/agent/members`: the LAN pool as this agent sees it, filtered by `node:read`.
pub(crate) async fn members<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let pool = pool(&agent, &params)?;
    let access = agent.access(&headers, &uri)?;
    let body = members_json(pool.gossip(), |members| {
        access.filter(members, |authorizer, member| authorizer.node_read(&member.name));
    })
    .await?;
    Ok(json_response(HeaderMap::new(), &body))
}

/// The pool's members in Consul's shape, sorted by name, after `filter`.
pub(crate) async fn members_json(
    gossip: &Gossip,
    filter: impl FnOnce(&mut Vec<Member>),
) -> Result<Vec<MemberJson>, ApiError> {
    let mut members = gossip
        .members()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    filter(&mut members);
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members.into_iter().map(MemberJson::from).collect())
}

/// `PUT /v1/agent/join/{address}`: joins the LAN pool through `address` (port 8301 by default).
pub(crate) async fn join<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(address): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    agent.authorize(&headers, &uri, |a| a.agent_write(&agent.config.node_name))?;
    let chosen = pool(&agent, &params)?;
    let response = join_at_port(chosen.gossip(), &address, chosen.default_port()).await?;
    let Pool::Lan(pool) = chosen else {
        return Ok(response);
    };
    // As Consul refuses a member with a conflicting node ID, refuse a pool where two servers
    // share a raft id: raft would take them for one server.
    let members = pool
        .members()
        .await
        .map_err(|e| ApiError::internal(format!("joining {address}: {e}")))?;
    let conflicts = crate::membership::raft_id_conflicts(
        &members,
        &agent.config.datacenter,
        agent.node_id,
        &agent.config.node_name,
    );
    if let Some(conflict) = conflicts.first() {
        return Err(ApiError::internal(format!(
            "Failed to join {address}: {conflict}"
        )));
    }
    Ok(response)
}

/// Joins `gossip`'s pool through `address`.
pub(crate) async fn join_at(gossip: &Gossip, address: &str) -> Result<Response, ApiError> {
    join_at_port(gossip, address, crate::membership::DEFAULT_SERF_LAN_PORT).await
}

/// Joins `gossip`'s pool through `address`, `default_port` when it names none.
async fn join_at_port(gossip: &Gossip, address: &str, default_port: u16) -> Result<Response, ApiError> {
    let addrs = crate::membership::resolve_addresses(&[address.to_owned()], default_port);
    if addrs.is_empty() {
        return Err(ApiError::bad_request(format!("cannot resolve {address:?}")));
    }
    gossip
        .join(&addrs)
        .await
        .map_err(|e| ApiError::internal(format!("joining {address}: {e}")))?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/leave`: leaves the LAN pool gracefully and stops the agent.
pub(crate) async fn leave<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.agent_write(&agent.config.node_name))?;
    lan_pool(&agent)?;
    // The response goes out before the HTTP server stops: the leave runs on its own task.
    let leaving = std::sync::Arc::clone(&agent);
    tokio::spawn(async move { leaving.leave_pool().await });
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/force-leave/{node}`: announces that a failed member left, so every member
/// stops waiting for it and the leader removes a failed server from raft. With `?prune` the
/// member is also erased from every member's list (Consul's `force-leave -prune`).
pub(crate) async fn force_leave<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.operator_write())?;
    // With `?wan` any WAN member can be named, another datacenter's included (`node.dc2`).
    let params = Params::parse(uri.query());
    force_leave_member(pool(&agent, &params)?.gossip(), &node, wants_prune(&params)).await
}

/// Whether a force-leave asks for `prune`: Consul takes the parameter's presence; `0` and
/// `false` are read as no, as for `wan`.
pub(crate) fn wants_prune(params: &Params) -> bool {
    params.has("prune") && !matches!(params.get("prune"), Some("0" | "false"))
}

/// Announces that the failed member `node` left `gossip`'s pool; with `prune`, erases it too.
pub(crate) async fn force_leave_member(
    gossip: &Gossip,
    node: &str,
    prune: bool,
) -> Result<Response, ApiError> {
    let done = if prune {
        gossip.force_leave_prune(node).await
    } else {
        gossip.force_leave(node).await
    };
    done.map_err(|e| match e {
        // Consul's words, and its status: a plain error, so 500 (clients raise on it).
        tribune_gossip::RuntimeError::Pool(tribune_gossip::PoolError::UnknownMember { .. }) => {
            ApiError::internal(format!("agent: No node found with name '{node}'"))
        }
        other => ApiError::internal(other.to_string()),
    })?;
    Ok(StatusCode::OK.into_response())
}
