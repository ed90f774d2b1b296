//! The HTTP API of a client agent: `/v1/agent/{self,members,join,leave,force-leave}` about itself,
//! `/v1/event/{fire,list}` in its own pool, its own services and checks (`agent_local.rs`),
//! everything else handed to a server (see [`crate::client`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::agent::{force_leave_member, join_at, members_json, refuse_wan, wants_prune};
use super::keyring::KeyringRequest;
use super::misc::{agent_stats, config_json, runtime_stats, self_member_and_coord, serf_lan_stats, xds_json};
use super::{
    ApiError, ApiRoute, Endpoint, MAX_FORWARDED_BODY, Params, add_endpoints, endpoint, from_forwarded,
    json_response, to_forwarded,
};
use crate::client::{ClientAgent, ClientForwardError};

type Client = Arc<ClientAgent>;

/// Every route a client agent serves itself, with its handler.
pub(crate) fn endpoints() -> Vec<Endpoint<Client>> {
    let mut endpoints = super::agent_local::endpoints::<ClientAgent>();
    endpoints.extend(super::agent_ops::endpoints::<ClientAgent>());
    endpoints.extend(vec![
        endpoint!(GET, "/v1/agent/self", agent_self),
        endpoint!(GET, "/v1/agent/members", members),
        endpoint!(PUT, "/v1/agent/join/{address}", join),
        endpoint!(PUT, "/v1/agent/leave", leave),
        endpoint!(PUT, "/v1/agent/force-leave/{node}", force_leave),
        endpoint!(GET, "/v1/operator/keyring", keyring),
        endpoint!(POST, "/v1/operator/keyring", keyring),
        endpoint!(PUT, "/v1/operator/keyring", keyring),
        endpoint!(DELETE, "/v1/operator/keyring", keyring),
        endpoint!(PUT, "/v1/event/fire/{name}", super::event::client_fire),
        endpoint!(GET, "/v1/event/list", super::event::client_list),
        endpoint!(GET, "/v1/agent/metrics", super::metrics::client_agent_metrics),
    ]);
    endpoints
}

/// The client agent's router: [`endpoints`], and every other request handed to a server. A server
/// route the client does not serve is routed to [`forward`] under its own pattern, so the request
/// is timed under the route's name as on a server; anything else is handed on by the fallback.
pub(crate) fn router(agent: Client) -> Router {
    let own = endpoints();
    let served: std::collections::HashSet<ApiRoute> = own.iter().map(|(route, _)| *route).collect();
    let handed_on: Vec<Endpoint<Client>> = super::server_routes()
        .into_iter()
        .filter(|route| !served.contains(route))
        .filter_map(|route| {
            let method = axum::routing::MethodFilter::try_from(
                axum::http::Method::from_bytes(route.method.as_bytes()).ok()?,
            )
            .ok()?;
            Some((route, axum::routing::on(method, forward)))
        })
        .collect();
    let telemetry = Arc::clone(&agent.telemetry);
    add_endpoints(add_endpoints(Router::new(), own), handed_on)
        .fallback(forward)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORWARDED_BODY))
        .layer(axum::middleware::from_fn_with_state(
            telemetry,
            super::metrics::time_requests,
        ))
        .with_state(agent)
}

/// `/v1/agent/self` of a client agent: the server's answer without the parts only a server has
/// (raft, the leader).
async fn agent_self(State(agent): State<Client>) -> Response {
    let config = &agent.config;
    let serf = agent.gossip.local_addr();
    let built_member = json!({
            "Name": config.node_name,
            "Addr": serf.ip().to_string(),
            "Port": serf.port(),
            "Tags": {
                "role": "node",
                "dc": config.datacenter,
                "id": config.node_id.clone().unwrap_or_default(),
                "build": env!("CARGO_PKG_VERSION"),
            },
            "Status": 1,
    });
    let (member, coord) = self_member_and_coord(Some(&agent.gossip), &config.node_name, built_member).await;
    let body = json!({
        "Config": config_json(config, false),
        "DebugConfig": { "ACLsEnabled": config.acl.enabled },
        "Member": member,
        "Coord": coord,
        "xDS": xds_json(),
        "Meta": {},
        "Stats": {
            "consul": {
                "server": "false",
                "known_servers": agent.known_servers().await.to_string(),
                "acl": if config.acl.enabled { "enabled" } else { "disabled" },
            },
            "agent": agent_stats(&agent.local),
            "runtime": runtime_stats(),
            "serf_lan": serf_lan_stats(Some(&agent.gossip), config).await,
        },
    });
    json_response(HeaderMap::new(), &body)
}

async fn members(State(agent): State<Client>, uri: Uri) -> Result<Response, ApiError> {
    refuse_wan(&Params::parse(uri.query()))?;
    let body = members_json(&agent.gossip, |_| {}).await?;
    Ok(json_response(HeaderMap::new(), &body))
}

async fn join(
    State(agent): State<Client>,
    Path(address): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    refuse_wan(&Params::parse(uri.query()))?;
    join_at(&agent.gossip, &address).await
}

async fn leave(State(agent): State<Client>) -> Response {
    let leaving = Arc::clone(&agent);
    tokio::spawn(async move { leaving.leave_pool().await });
    StatusCode::OK.into_response()
}

async fn force_leave(
    State(agent): State<Client>,
    Path(node): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    refuse_wan(&params)?;
    force_leave_member(&agent.gossip, &node, wants_prune(&params)).await
}

/// `/v1/operator/keyring`: `?local-only` lists this agent's own keys; anything else goes to a
/// server, which carries it to every member of the pool, this one included.
async fn keyring(State(agent): State<Client>, request: Request) -> Result<Response, ApiError> {
    let local_only = Params::parse(request.uri().query()).has("local-only");
    if !local_only {
        return forward(State(agent), request).await;
    }
    let keyring_request = KeyringRequest::parse(request.method(), request.uri(), &[])?;
    keyring_request.run(&agent.gossip, &agent.config.datacenter).await
}

/// Any other request: to a server, whole; its answer, whole.
pub(super) async fn forward(State(agent): State<Client>, request: Request) -> Result<Response, ApiError> {
    let mut forwarded = to_forwarded(request).await?;
    super::session::claim_for_node(&mut forwarded, &agent.config.node_name);
    super::near::name_agent_in(&mut forwarded.uri, &agent.config.node_name);
    let answer = agent.forward(forwarded).await.map_err(|e| match e {
        ClientForwardError::NoServers => ApiError::internal("No known Consul servers"),
        ClientForwardError::AllFailed(last) => {
            ApiError::internal(format!("no server could be reached: {last}"))
        }
        ClientForwardError::Server(message) => ApiError::internal(message),
    })?;
    Ok(from_forwarded(answer))
}
