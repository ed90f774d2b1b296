//! Consul's HTTP API over axum: routing, query parameters, consistency modes, blocking queries, the
//! query-meta headers, error mapping, and forwarding writes from a follower to the leader.

mod acl;
mod acl_filtered;
pub(crate) mod agent;
mod agent_local;
mod agent_ops;
mod catalog;
pub(crate) mod catalog_json;
mod catalog_query;
pub(crate) mod client;
mod coordinate;
mod event;
pub(crate) mod filter;
mod health;
mod keyring;
mod kv;
mod metrics;
mod misc;
mod near;
mod operator;
mod session;
mod snapshot;
mod txn;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower::ServiceExt as _;
use tribune_acl::{Authorizer, Decision};
use tribune_consensus::{AppRequest, ConsensusError, ReadMode};
use tribune_kvstore::{Backend, ReadError, WatchScope};

use crate::config::DefaultPolicy;
use crate::fsm::{ApplyResponse, Rejection};
use crate::node::{Agent, AppCall, AppReply, ForwardedHttp, ForwardedResponse, ProposeError};

/// Consul's default blocking wait (`default_query_time`).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul's longest blocking wait (`max_query_time`).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The header that once marked a forwarded request. The mark now travels only in the request's
/// extensions ([`ForwardedByServer`]); a client that sends this header has it removed, so it cannot
/// make a follower serve a write itself.
const LEGACY_FORWARDED_HEADER: &str = "x-tribune-forwarded";

/// Put in a request's extensions by [`serve_forwarded`] for a request another server forwarded
/// over the server port: only that channel can set it, since extensions never come off the wire.
#[derive(Debug, Clone, Copy)]
struct ForwardedByServer;
/// Put in a request's extensions by [`serve_forwarded`] for a request a server of another
/// datacenter carried here; like [`ForwardedByServer`], never taken from the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromOtherDatacenter;
/// Largest request body a follower forwards to the leader.
pub(crate) const MAX_FORWARDED_BODY: usize = 16 * 1024 * 1024;

type Shared<B> = Arc<Agent<B>>;

/// One route the HTTP API serves: a method and an axum path pattern. The routers are built from
/// these tables alone ([`server_routes`], [`client_routes`]), so a test that walks the table walks
/// every route, and a route added without an entry there cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiRoute {
    /// The HTTP method (`"GET"`, `"PUT"`, …).
    pub method: &'static str,
    /// The path pattern as axum reads it (`/v1/kv/{*key}`, `/v1/session/info/{id}`).
    pub path: &'static str,
}

/// An entry of a route table: the route and the handler that serves exactly that method.
pub(crate) type Endpoint<S> = (ApiRoute, axum::routing::MethodRouter<S>);

/// `endpoint!(GET, "/path", handler)`: the method is named once, for the table and the handler.
macro_rules! endpoint {
    ($method:ident, $path:expr, $handler:expr) => {
        (
            ApiRoute {
                method: stringify!($method),
                path: $path,
            },
            axum::routing::on(axum::routing::MethodFilter::$method, $handler),
        )
    };
}
pub(crate) use endpoint;

/// Every route of a server agent, with its handler.
fn server_endpoints<B: Backend>() -> Vec<Endpoint<Shared<B>>> {
    let mut endpoints = agent_local::endpoints::<Agent<B>>();
    endpoints.extend(agent_ops::endpoints::<Agent<B>>());
    endpoints.extend(vec![
        endpoint!(GET, "/v1/kv/", kv::get_kv::<B>),
        endpoint!(PUT, "/v1/kv/", kv::put_kv::<B>),
        endpoint!(DELETE, "/v1/kv/", kv::delete_kv::<B>),
        endpoint!(GET, "/v1/kv/{*key}", kv::get_kv::<B>),
        endpoint!(PUT, "/v1/kv/{*key}", kv::put_kv::<B>),
        endpoint!(DELETE, "/v1/kv/{*key}", kv::delete_kv::<B>),
        endpoint!(PUT, "/v1/txn", txn::txn::<B>),
        endpoint!(PUT, "/v1/session/create", session::create::<B>),
        endpoint!(PUT, "/v1/session/destroy/{id}", session::destroy::<B>),
        endpoint!(PUT, "/v1/session/renew/{id}", session::renew::<B>),
        endpoint!(GET, "/v1/session/info/{id}", session::info::<B>),
        endpoint!(GET, "/v1/session/node/{node}", session::node::<B>),
        endpoint!(GET, "/v1/session/list", session::list::<B>),
        endpoint!(GET, "/v1/status/leader", misc::status_leader::<B>),
        endpoint!(GET, "/v1/status/peers", misc::status_peers::<B>),
        endpoint!(GET, "/v1/agent/self", misc::agent_self::<B>),
        endpoint!(GET, "/v1/agent/members", agent::members::<B>),
        endpoint!(GET, "/v1/agent/metrics", metrics::agent_metrics::<B>),
        endpoint!(PUT, "/v1/agent/join/{address}", agent::join::<B>),
        endpoint!(PUT, "/v1/agent/leave", agent::leave::<B>),
        endpoint!(PUT, "/v1/agent/force-leave/{node}", agent::force_leave::<B>),
        endpoint!(PUT, "/v1/agent/token/{name}", misc::agent_token::<B>),
        endpoint!(GET, "/v1/catalog/datacenters", misc::datacenters::<B>),
        endpoint!(PUT, "/v1/catalog/register", catalog::register::<B>),
        endpoint!(PUT, "/v1/catalog/deregister", catalog::deregister::<B>),
        endpoint!(GET, "/v1/catalog/nodes", catalog::nodes::<B>),
        endpoint!(GET, "/v1/catalog/services", catalog::services::<B>),
        endpoint!(GET, "/v1/catalog/service/{name}", catalog::service::<B>),
        endpoint!(GET, "/v1/catalog/node/{node}", catalog::node::<B>),
        endpoint!(
            GET,
            "/v1/catalog/node-services/{node}",
            catalog::node_services::<B>
        ),
        endpoint!(GET, "/v1/health/node/{node}", health::node::<B>),
        endpoint!(GET, "/v1/health/checks/{service}", health::service_checks::<B>),
        endpoint!(GET, "/v1/health/service/{service}", health::service::<B>),
        endpoint!(GET, "/v1/health/state/{state}", health::state::<B>),
        endpoint!(GET, "/v1/coordinate/datacenters", coordinate::datacenters::<B>),
        endpoint!(GET, "/v1/coordinate/nodes", coordinate::nodes::<B>),
        endpoint!(GET, "/v1/coordinate/node/{node}", coordinate::node::<B>),
        endpoint!(PUT, "/v1/coordinate/update", coordinate::update::<B>),
        endpoint!(PUT, "/v1/acl/bootstrap", acl::bootstrap::<B>),
        endpoint!(PUT, "/v1/acl/token", acl::token_create::<B>),
        endpoint!(GET, "/v1/acl/token/self", acl::token_self::<B>),
        endpoint!(GET, "/v1/acl/token/{accessor}", acl::token_read::<B>),
        endpoint!(PUT, "/v1/acl/token/{accessor}", acl::token_update::<B>),
        endpoint!(PUT, "/v1/acl/token/{accessor}/clone", acl::token_clone::<B>),
        endpoint!(DELETE, "/v1/acl/token/{accessor}", acl::token_delete::<B>),
        endpoint!(GET, "/v1/acl/tokens", acl::token_list::<B>),
        endpoint!(PUT, "/v1/acl/policy", acl::policy_create::<B>),
        endpoint!(GET, "/v1/acl/policy/name/{name}", acl::policy_read_by_name::<B>),
        endpoint!(GET, "/v1/acl/policy/{id}", acl::policy_read::<B>),
        endpoint!(PUT, "/v1/acl/policy/{id}", acl::policy_update::<B>),
        endpoint!(DELETE, "/v1/acl/policy/{id}", acl::policy_delete::<B>),
        endpoint!(GET, "/v1/acl/policies", acl::policy_list::<B>),
        endpoint!(PUT, "/v1/acl/role", acl::role_create::<B>),
        endpoint!(GET, "/v1/acl/role/name/{name}", acl::role_read_by_name::<B>),
        endpoint!(GET, "/v1/acl/role/{id}", acl::role_read::<B>),
        endpoint!(PUT, "/v1/acl/role/{id}", acl::role_update::<B>),
        endpoint!(DELETE, "/v1/acl/role/{id}", acl::role_delete::<B>),
        endpoint!(GET, "/v1/acl/roles", acl::role_list::<B>),
        endpoint!(PUT, "/v1/acl/auth-method", acl::auth_method_create::<B>),
        endpoint!(GET, "/v1/acl/auth-method/{name}", acl::auth_method_read::<B>),
        endpoint!(PUT, "/v1/acl/auth-method/{name}", acl::auth_method_update::<B>),
        endpoint!(DELETE, "/v1/acl/auth-method/{name}", acl::auth_method_delete::<B>),
        endpoint!(GET, "/v1/acl/auth-methods", acl::auth_method_list::<B>),
        endpoint!(PUT, "/v1/acl/binding-rule", acl::binding_rule_create::<B>),
        endpoint!(GET, "/v1/acl/binding-rule/{id}", acl::binding_rule_read::<B>),
        endpoint!(PUT, "/v1/acl/binding-rule/{id}", acl::binding_rule_update::<B>),
        endpoint!(DELETE, "/v1/acl/binding-rule/{id}", acl::binding_rule_delete::<B>),
        endpoint!(GET, "/v1/acl/binding-rules", acl::binding_rule_list::<B>),
        endpoint!(POST, "/v1/acl/login", acl::login::<B>),
        endpoint!(POST, "/v1/acl/logout", acl::logout::<B>),
        endpoint!(GET, "/v1/acl/templated-policies", acl::templated_policy_list::<B>),
        endpoint!(
            GET,
            "/v1/acl/templated-policy/name/{*name}",
            acl::templated_policy_read::<B>
        ),
        endpoint!(
            POST,
            "/v1/acl/templated-policy/preview/{*name}",
            acl::templated_policy_preview::<B>
        ),
        endpoint!(
            GET,
            "/v1/acl/replication",
            crate::acl_replication::status_handler::<B>
        ),
        endpoint!(
            GET,
            "/v1/operator/raft/configuration",
            operator::configuration::<B>
        ),
        endpoint!(DELETE, "/v1/operator/raft/peer", operator::remove_peer::<B>),
        endpoint!(GET, "/v1/operator/keyring", keyring::keyring::<B>),
        endpoint!(POST, "/v1/operator/keyring", keyring::keyring::<B>),
        endpoint!(PUT, "/v1/operator/keyring", keyring::keyring::<B>),
        endpoint!(DELETE, "/v1/operator/keyring", keyring::keyring::<B>),
        endpoint!(PUT, "/v1/event/fire/{name}", event::fire::<B>),
        endpoint!(GET, "/v1/event/list", event::list::<B>),
        endpoint!(GET, "/v1/snapshot", snapshot::save::<B>),
        endpoint!(PUT, "/v1/snapshot", snapshot::restore::<B>),
    ]);
    endpoints
}

/// Every route a server agent serves, in the order of its table.
pub fn server_routes() -> Vec<ApiRoute> {
    server_endpoints::<tribune_kvstore::MemoryBackend>()
        .into_iter()
        .map(|(route, _)| route)
        .collect()
}

/// Every route a client agent serves itself; it hands any other request to a server whole, where
/// the server's routes (and their ACL checks) apply.
pub fn client_routes() -> Vec<ApiRoute> {
    client::endpoints().into_iter().map(|(route, _)| route).collect()
}

/// Adds every endpoint of a table to `router`; two entries of one path share it.
pub(crate) fn add_endpoints<S: Clone + Send + Sync + 'static>(
    mut router: Router<S>,
    endpoints: Vec<Endpoint<S>>,
) -> Router<S> {
    for (route, handler) in endpoints {
        router = router.route(route.path, handler);
    }
    router
}

/// Builds the router of the whole API, from [`server_endpoints`] only.
pub(crate) fn router<B: Backend>(agent: Shared<B>) -> Router {
    add_endpoints(Router::new(), server_endpoints::<B>())
        // Innermost: the handler that filters is the one whose answer is marked.
        .layer(middleware::from_fn(acl_filtered::mark))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORWARDED_BODY))
        .layer(middleware::from_fn_with_state(Arc::clone(&agent), dispatch::<B>))
        .layer(middleware::from_fn_with_state(
            agent.config.acl.default_policy,
            default_acl_policy,
        ))
        // Outermost: a request's time includes its carrying to the leader or another datacenter.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&agent.telemetry),
            metrics::time_requests,
        ))
        .with_state(agent)
}

/// Every response carries `X-Consul-Default-ACL-Policy`, as Consul's.
async fn default_acl_policy(State(policy): State<DefaultPolicy>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let value = match policy {
        DefaultPolicy::Allow => "allow",
        DefaultPolicy::Deny => "deny",
    };
    response
        .headers_mut()
        .insert("x-consul-default-acl-policy", HeaderValue::from_static(value));
    response
}

/// Where a request is served, decided once for every endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    /// By this server.
    Here,
    /// By this datacenter's leader: on a follower, writes (anything but GET on the replicated
    /// state) go to the leader whole, so the leader's checks that use its wall clock (lock-delay,
    /// session timers) and its choices (session IDs) happen in one place. Reads stay local (see
    /// [`Agent::read_barrier`]).
    Leader,
    /// By a server of another datacenter (`?dc=`), which applies its own rules.
    Datacenter(String),
}

fn destination(request: &Request, local_datacenter: &str, is_leader: bool) -> Destination {
    if let Some(datacenter) = other_datacenter(request, local_datacenter) {
        Destination::Datacenter(datacenter)
    } else if served_here(request, is_leader) {
        Destination::Here
    } else {
        Destination::Leader
    }
}

/// The datacenter named by `?dc=` when it is not this one and the endpoint is datacenter-scoped.
/// The agent's own endpoints and the lists of datacenters answer for this agent whatever `dc` says,
/// as Consul's do.
fn other_datacenter(request: &Request, local_datacenter: &str) -> Option<String> {
    let path = request.uri().path();
    if answered_by_this_agent(path)
        || path == "/v1/event/list"
        || path == "/v1/catalog/datacenters"
        || path == "/v1/coordinate/datacenters"
    {
        return None;
    }
    let datacenter = Params::parse(request.uri().query()).get("dc")?.to_lowercase();
    (!datacenter.is_empty() && datacenter != local_datacenter).then_some(datacenter)
}

/// Sends each request where [`destination`] says.
async fn dispatch<B: Backend>(State(agent): State<Shared<B>>, mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(LEGACY_FORWARDED_HEADER);
    let mut destination = destination(&request, &agent.config.datacenter, agent.consensus.is_leader());
    if destination != Destination::Datacenter(agent.config.primary_datacenter.clone()) {
        // In a secondary, policies and global tokens are written in the primary.
        match crate::acl_replication::write_goes_to_primary(&agent, request).await {
            Ok((true, carried)) => {
                return match forward_to_primary(&agent, carried).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                };
            }
            Ok((false, kept)) => request = kept,
            Err(error) => return error.into_response(),
        }
        // The replication status is the leader's.
        if destination == Destination::Here
            && request.uri().path() == "/v1/acl/replication"
            && !agent.consensus.is_leader()
            && request.extensions().get::<ForwardedByServer>().is_none()
        {
            destination = Destination::Leader;
        }
    }
    if destination == Destination::Here && agent.config.acl.enabled {
        // A token the primary knows but this datacenter has not replicated yet.
        let secret = agent.request_secret(request.headers(), request.uri());
        crate::acl_replication::learn_before_serving(&agent, &secret).await;
    }
    let routed = match destination {
        Destination::Here => return next.run(request).await,
        Destination::Leader => forward(&agent, request).await,
        Destination::Datacenter(datacenter) => forward_to_datacenter(&agent, &datacenter, request).await,
    };
    match routed {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn forward_to_primary<B: Backend>(agent: &Agent<B>, request: Request) -> Result<Response, ApiError> {
    let forwarded = crate::acl_replication::without_dc(to_forwarded(request).await?);
    let response = agent
        .forward_to_datacenter(&agent.config.primary_datacenter, forwarded)
        .await?;
    Ok(from_forwarded(response))
}

async fn forward_to_datacenter<B: Backend>(
    agent: &Agent<B>,
    datacenter: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let forwarded = to_forwarded(request).await?;
    let response = agent.forward_to_datacenter(datacenter, forwarded).await?;
    Ok(from_forwarded(response))
}

/// Whether this agent serves `request` itself rather than carrying it to the leader: reads, the
/// agent's own endpoints, requests another server forwarded (marked in the extensions, never by a
/// header), and anything on the leader.
fn served_here(request: &Request, is_leader: bool) -> bool {
    request.method() == Method::GET
        || request.extensions().get::<ForwardedByServer>().is_some()
        || answered_by_this_agent(request.uri().path())
        // User events go into this agent's own pool (another datacenter's through `?dc=`).
        || request.uri().path().starts_with("/v1/event/")
        || is_leader
}

/// The endpoints about this agent itself (its members, tokens, pools and keyring): never carried to
/// the leader nor to another datacenter.
fn answered_by_this_agent(path: &str) -> bool {
    path.starts_with("/v1/agent/") || path == "/v1/operator/keyring"
}

async fn forward<B: Backend>(agent: &Agent<B>, request: Request) -> Result<Response, ApiError> {
    let mut forwarded = to_forwarded(request).await?;
    session::claim_for_node(&mut forwarded, &agent.config.node_name);
    let reply = agent
        .consensus
        .call_leader(AppRequest {
            datacenter: None,
            payload: AppCall::Http(forwarded).encode(),
        })
        .await
        .map_err(ApiError::consensus)?;
    match AppReply::decode(&reply) {
        Ok(AppReply::Http(response)) => Ok(from_forwarded(response)),
        Ok(_) => Err(ApiError::internal("unexpected answer from the leader")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// A request as it travels to another agent: whole, body included.
pub(crate) async fn to_forwarded(request: Request) -> Result<ForwardedHttp, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    Ok(forwarded_from_parts(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
    ))
}

/// A request already taken apart by a handler, as it travels to another agent.
pub(crate) fn forwarded_from_parts(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ForwardedHttp {
    ForwardedHttp {
        method: method.to_string(),
        uri: uri.path_and_query().map(|pq| pq.to_string()).unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    }
}

/// The answer another agent gave to a forwarded request, as this agent's response.
pub(crate) fn from_forwarded(response: ForwardedResponse) -> Response {
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value)) {
            out.headers_mut().append(name, value);
        }
    }
    out
}

/// Serves a request a follower forwarded, through this server's router.
pub(crate) async fn serve_forwarded(
    router: Router,
    request: ForwardedHttp,
    from: ForwardedFrom,
) -> Result<ForwardedResponse, String> {
    let method = Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut builder = axum::http::Request::builder().method(method).uri(request.uri);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let mut http_request = builder
        .body(Body::from(request.body))
        .map_err(|e| e.to_string())?;
    if from == ForwardedFrom::Server {
        http_request.extensions_mut().insert(ForwardedByServer);
    }
    if from == ForwardedFrom::OtherDatacenter {
        http_request.extensions_mut().insert(FromOtherDatacenter);
    }
    let response = router.oneshot(http_request).await.map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_FORWARDED_BODY)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ForwardedResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != "content-length")
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    })
}

/// Who forwarded a request, which decides whether it may be forwarded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardedFrom {
    /// A follower sent it to the leader: it is served here, never forwarded again.
    Server,
    /// A client agent sent it to a server: the server treats it as its own request and forwards
    /// a write to the leader.
    ClientAgent,
    /// A server of another datacenter carried it here (`?dc=`): served as a request to this
    /// server, by this datacenter's rules.
    OtherDatacenter,
}

/// An error response: a status and Consul's plain-text message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// Consul's plain-text message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn consensus(error: ConsensusError) -> Self {
        match error {
            ConsensusError::NoLeader | ConsensusError::NotLeader { .. } => {
                Self::internal("No cluster leader")
            }
            // Retryable, and known not to have taken effect: Consul's rate-limit status.
            overloaded @ ConsensusError::Overloaded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, overloaded.to_string())
            }
            other => Self::internal(other.to_string()),
        }
    }

    pub(crate) fn read(error: ReadError) -> Self {
        Self::internal(format!("state store read failed: {error}"))
    }

    pub(crate) fn propose(error: ProposeError) -> Self {
        match error {
            ProposeError::Consensus(e) => Self::consensus(e),
            ProposeError::Codec(message) => Self::internal(message),
        }
    }

    /// The error for a command that fails the store's input checks.
    pub(crate) fn from_apply_error(error: &tribune_kvstore::ApplyError) -> Self {
        match ApplyResponse::from_error(error) {
            ApplyResponse::Rejected { kind, message } => Self::rejected(kind, message),
            _ => Self::internal(error.to_string()),
        }
    }

    /// The error for a command the store refused, as Consul reports it.
    pub(crate) fn rejected(kind: Rejection, message: String) -> Self {
        match kind {
            Rejection::Invalid => Self::bad_request(message),
            Rejection::TooLarge => Self::new(StatusCode::PAYLOAD_TOO_LARGE, message),
            Rejection::InvalidSession => Self::internal("invalid session"),
            Rejection::BootstrapNotAllowed => Self::new(StatusCode::FORBIDDEN, message),
            Rejection::Other => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

/// Turns a refusal in the response into an error.
pub(crate) fn accepted(response: ApplyResponse) -> Result<ApplyResponse, ApiError> {
    match response {
        ApplyResponse::Rejected { kind, message } => Err(ApiError::rejected(kind, message)),
        other => Ok(other),
    }
}

/// Query parameters, Consul-style: flags may appear without a value (`?recurse`); a repeated
/// parameter (`?tag=a&tag=b`) reads as its last value, or as all of them through [`Params::all`].
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_query_component(name), decode_query_component(value))
            })
            .collect();
        Params(pairs)
    }

    /// Every value given for `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A `u64` parameter; a malformed one is a 400 naming it.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("Invalid {name}: {text:?} is not an unsigned integer"))
            }),
        }
    }

    /// The consistency mode: `?stale`, `?consistent` or the default; both at once is a 400, as Consul.
    pub(crate) fn read_mode(&self) -> Result<ReadMode, ApiError> {
        match (self.has("stale"), self.has("consistent")) {
            (true, true) => Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            )),
            (true, false) => Ok(ReadMode::Stale),
            (false, true) => Ok(ReadMode::Consistent),
            (false, false) => Ok(ReadMode::Default),
        }
    }

    /// The blocking part of a query (`?index=N&wait=D`): `None` unless `index` is above 0.
    pub(crate) fn blocking(&self) -> Result<Option<Blocking>, ApiError> {
        let Some(index) = self.u64("index")?.filter(|index| *index > 0) else {
            return Ok(None);
        };
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => parse_wait(text)?,
        };
        Ok(Some(Blocking {
            index,
            wait: wait.min(MAX_WAIT),
        }))
    }
}

/// A Go duration as Consul's `wait` takes it (`"10s"`, `"1m30s"`, `"1.8982439041137695s"`); a bare
/// number is seconds.
fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    crate::duration::parse_go_duration(text)
        .map_err(|e| ApiError::bad_request(format!("Invalid wait time: {e}")))
}

/// Percent-decodes a path or query component (`+` is a space in a query).
pub(crate) fn decode_query_component(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

/// Percent-decodes a path (`%2F` included); invalid escapes are kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// A blocking query's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    /// Return once the scope's index is above this.
    pub(crate) index: u64,
    /// The longest wait, before jitter.
    pub(crate) wait: Duration,
}

impl Blocking {
    /// When the wait ends: `wait` plus up to `wait / 16` of random jitter, so that many clients
    /// blocked on the same data do not all come back at once.
    pub(crate) fn deadline(&self) -> Instant {
        let jitter_limit = self.wait.as_millis() / 16;
        let jitter_ms = if jitter_limit == 0 {
            0
        } else {
            rand::random_range(0..=jitter_limit)
        };
        Instant::now() + self.wait + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0))
    }
}

/// The headers of a read (Consul's query meta).
pub(crate) struct QueryMeta {
    index: u64,
    known_leader: bool,
    last_contact_ms: u128,
    /// The mode the read was served in, for `X-Consul-Effective-Consistency`.
    consistency: Option<ReadMode>,
}

impl QueryMeta {
    pub(crate) fn with_index(mut self, index: u64) -> Self {
        // Never 0: a blocking client sending index=0 would not block at all.
        self.index = index.max(1);
        self
    }

    pub(crate) fn with_consistency(mut self, mode: ReadMode) -> Self {
        self.consistency = Some(mode);
        self
    }

    pub(crate) fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("x-consul-index", self.index.to_string());
        set("x-consul-knownleader", self.known_leader.to_string());
        set("x-consul-lastcontact", self.last_contact_ms.to_string());
        if let Some(mode) = self.consistency {
            // Consul's names: its default mode is served by the leader.
            let name = match mode {
                ReadMode::Stale => "stale",
                ReadMode::Default => "leader",
                ReadMode::Consistent => "consistent",
            };
            set("x-consul-effective-consistency", name.to_owned());
        }
        headers
    }
}

impl<B: Backend> Agent<B> {
    /// The ACL endpoints answer 401 when ACLs are disabled, as Consul's.
    pub(crate) fn acls_enabled(&self) -> Result<(), ApiError> {
        if self.config.acl.enabled {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "ACL support disabled"))
        }
    }

    /// The secret the request presents (see [`crate::acl::request_secret`]).
    pub(crate) fn request_secret(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> String {
        let params = Params::parse(uri.query());
        let default = self.tokens.default_token();
        crate::acl::request_secret(headers, params.get("token"), default.as_deref())
    }

    /// What the request may do: unrestricted when ACLs are off, else its token's authorizer;
    /// an unknown or expired token is a 403 "ACL not found".
    pub(crate) fn access(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<Access, ApiError> {
        if !self.config.acl.enabled {
            return Ok(Access::Unrestricted);
        }
        let secret = self.request_secret(headers, uri);
        let timing = self.telemetry.time_acl_resolve();
        let resolved = if crate::acl_replication::is_acl_secondary(self) {
            crate::acl_replication::resolve(
                &self.resolver,
                &self.store,
                &self.acl_replication.remote,
                &secret,
            )
        } else {
            crate::acl::resolve(&self.resolver, &self.store, &secret)
        };
        drop(timing);
        match resolved {
            Ok(resolution) => Ok(Access::Token {
                authorizer: resolution.authorizer,
                // Consul marks filtered answers only for callers that named a token.
                named: !secret.is_empty() && secret != tribune_acl::ANONYMOUS_TOKEN_SECRET,
            }),
            Err(tribune_acl::ResolveError::AclNotFound) => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "ACL not found"))
            }
            Err(other) => Err(ApiError::new(StatusCode::FORBIDDEN, other.to_string())),
        }
    }

    /// Resolves the request's token and requires `check` to allow; 403 "Permission denied" otherwise.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        uri: &axum::http::Uri,
        check: impl FnOnce(&Authorizer) -> Decision,
    ) -> Result<Access, ApiError> {
        let access = self.access(headers, uri)?;
        access.require(check)?;
        Ok(access)
    }

    /// The read preamble of every GET: the consistency barrier, then, for a blocking query, the wait
    /// on `scope` (which ends early when the agent shuts down).
    pub(crate) async fn prepare_read(
        &self,
        params: &Params,
        scope: WatchScope,
    ) -> Result<QueryMeta, ApiError> {
        let mode = params.read_mode()?;
        let blocking = params.blocking()?;
        self.read_barrier(mode).await.map_err(ApiError::consensus)?;
        if let Some(blocking) = blocking {
            let deadline = blocking.deadline();
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                waited = self.store.wait(&scope, blocking.index, deadline) => {
                    waited.map_err(ApiError::read)?;
                }
                _ = shutdown.wait_for(|stopped| *stopped) => {}
            }
        }
        Ok(self.query_meta().with_consistency(mode))
    }

    pub(crate) fn query_meta(&self) -> QueryMeta {
        QueryMeta {
            index: 1,
            known_leader: self.consensus.leader().is_some(),
            last_contact_ms: self.consensus.last_contact().map(|d| d.as_millis()).unwrap_or(0),
            consistency: None,
        }
    }
}

/// What a request may do: everything when ACLs are off, else what its token's authorizer allows.
#[derive(Clone)]
pub(crate) enum Access {
    /// ACLs are disabled.
    Unrestricted,
    /// ACLs are enabled: the resolved token's authorizer.
    Token {
        /// The authorizer.
        authorizer: Arc<Authorizer>,
        /// Whether the request named a token (its own or the agent's default), rather than
        /// being anonymous: only then does a filtered answer say so.
        named: bool,
    },
}

impl Access {
    /// Requires `check` to allow; 403 "Permission denied" otherwise.
    pub(crate) fn require(&self, check: impl FnOnce(&Authorizer) -> Decision) -> Result<(), ApiError> {
        match self {
            Access::Unrestricted => Ok(()),
            Access::Token { authorizer, .. } => match check(authorizer) {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(ApiError::new(StatusCode::FORBIDDEN, "Permission denied")),
            },
        }
    }

    /// Whether `check` allows (always, when ACLs are off).
    pub(crate) fn allows(&self, check: impl FnOnce(&Authorizer) -> Decision) -> bool {
        self.require(check).is_ok()
    }

    /// Keeps the items `check` allows.
    pub(crate) fn filter<T>(&self, items: &mut Vec<T>, check: impl Fn(&Authorizer, &T) -> Decision) {
        if let Access::Token { authorizer, named } = self {
            let before = items.len();
            items.retain(|item| check(authorizer, item) == Decision::Allow);
            if *named && items.len() != before {
                acl_filtered::note();
            }
        }
    }

    /// Keeps the entries of a map whose key `check` allows.
    pub(crate) fn filter_keys<V>(
        &self,
        map: &mut std::collections::BTreeMap<String, V>,
        check: impl Fn(&Authorizer, &str) -> Decision,
    ) {
        if let Access::Token { authorizer, named } = self {
            let before = map.len();
            map.retain(|key, _| check(authorizer, key) == Decision::Allow);
            if *named && map.len() != before {
                acl_filtered::note();
            }
        }
    }
}

/// The field names of the request bodies this API reads, in Consul's spelling.
const REQUEST_FIELDS: &[&str] = &[
    "AccessorID",
    "Address",
    "AuthMethod",
    "BearerToken",
    "Behavior",
    "BindName",
    "BindType",
    "BindVars",
    "Body",
    "Check",
    "CheckID",
    "Checks",
    "Config",
    "Datacenter",
    "Datacenters",
    "Definition",
    "DeregisterCriticalServiceAfter",
    "Description",
    "DisplayName",
    "EnableTagOverride",
    "ExpirationTTL",
    "ExpirationTime",
    "Flags",
    "GRPC",
    "GRPCUseTLS",
    "HTTP",
    "Header",
    "ID",
    "Index",
    "Interval",
    "KV",
    "Key",
    "Kind",
    "Local",
    "LockDelay",
    "MaxTokenTTL",
    "Meta",
    "Method",
    "Name",
    "Node",
    "NodeChecks",
    "NodeIdentities",
    "NodeMeta",
    "NodeName",
    "Notes",
    "Output",
    "Passing",
    "Policies",
    "Port",
    "Roles",
    "Rules",
    "SecretID",
    "Selector",
    "Service",
    "ServiceChecks",
    "ServiceID",
    "ServiceIdentities",
    "ServiceName",
    "Session",
    "SkipNodeUpdate",
    "Status",
    "TCP",
    "TLSServerName",
    "TLSSkipVerify",
    "TTL",
    "TaggedAddresses",
    "Tags",
    "TemplateName",
    "TemplateVariables",
    "TemplatedPolicies",
    "Timeout",
    "Token",
    "TokenLocality",
    "Type",
    "UDP",
    "Value",
    "Verb",
    "Warning",
    "Weights",
];

/// Decodes a JSON request body as Consul's Go decoder does: object keys match field names whatever
/// their case (py-consul sends `{"name": .., "ttl": ..}` to `/v1/session/create`).
/// The wall clock as unix milliseconds (0 before 1970, saturating far in the future): creation and
/// expiration times the API writes into records, decided here so that applying them reads no clock.
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    canonicalize_field_names(&mut value);
    serde_json::from_value(value)
}

/// Fields whose value is a map of the client's own keys (an auth method's `Config`, a login's `Meta`):
/// Go decodes those keys as written, so they are left alone.
const FREE_FORM_FIELDS: &[&str] = &["Config", "Header", "Meta", "NodeMeta", "TaggedAddresses"];

/// Renames every object key that equals a known field name but for case. Recursion is bounded by
/// serde_json's nesting limit (128) on the parse that built the value.
fn canonicalize_field_names(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, mut inner) in std::mem::take(map) {
                let key = match REQUEST_FIELDS
                    .iter()
                    .find(|field| field.eq_ignore_ascii_case(&key))
                {
                    Some(field) => (*field).to_owned(),
                    None => key,
                };
                if !FREE_FORM_FIELDS.contains(&key.as_str()) {
                    canonicalize_field_names(&mut inner);
                }
                map.insert(key, inner);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(canonicalize_field_names),
        _ => {}
    }
}

/// Reads a JSON field that may be `null` as its type's default, as Go's decoder (Consul's) does: clients
/// serialise unset optional fields as `null`.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// A JSON body with the given headers.
pub(crate) fn json_response(headers: HeaderMap, value: &(impl serde::Serialize + ?Sized)) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = (headers, body).into_response();
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        Err(e) => ApiError::internal(format!("encoding the response: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_server_channel_marks_a_request_forwarded() {
        let write = || {
            axum::http::Request::builder()
                .method(Method::PUT)
                .uri("/v1/kv/k")
                .body(Body::empty())
                .unwrap()
        };
        let mut forged = write();
        forged
            .headers_mut()
            .insert(LEGACY_FORWARDED_HEADER, HeaderValue::from_static("1"));
        assert!(
            !served_here(&forged, false),
            "a client's header must not keep a write here"
        );
        let mut marked = write();
        marked.extensions_mut().insert(ForwardedByServer);
        assert!(served_here(&marked, false));
        assert!(!served_here(&write(), false));
        assert!(served_here(&write(), true));
    }

    #[test]
    fn params_take_flags_values_and_escapes() {
        let params = Params::parse(Some("recurse&separator=%2F&index=12&wait=1m30s&x=a+b"));
        assert!(params.has("recurse"));
        assert_eq!(params.get("separator"), Some("/"));
        assert_eq!(params.get("x"), Some("a b"));
        let blocking = params.blocking().unwrap().unwrap();
        assert_eq!((blocking.index, blocking.wait), (12, Duration::from_secs(90)));
        assert!(Params::parse(Some("index=abc")).blocking().is_err());
        assert!(Params::parse(Some("index=0")).blocking().unwrap().is_none());
        let capped = Params::parse(Some("index=3&wait=1h"))
            .blocking()
            .unwrap()
            .unwrap();
        assert_eq!(capped.wait, MAX_WAIT);
        let default = Params::parse(Some("index=3")).blocking().unwrap().unwrap();
        assert_eq!(default.wait, DEFAULT_WAIT);
        assert!(Params::parse(Some("stale&consistent")).read_mode().is_err());
        assert_eq!(Params::parse(Some("stale")).read_mode().unwrap(), ReadMode::Stale);
    }

    #[test]
    fn request_field_names_match_whatever_their_case() {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            name: String,
            #[serde(rename = "TTL")]
            ttl: String,
            policies: Vec<serde_json::Value>,
        }
        let body: Body =
            decode_json(br#"{"name": "n", "ttl": "10s", "POLICIES": [{"id": "x", "free": 1}]}"#).unwrap();
        assert_eq!((body.name.as_str(), body.ttl.as_str()), ("n", "10s"));
        assert_eq!(body.policies[0], serde_json::json!({"ID": "x", "free": 1}));
        assert!(decode_json::<Body>(b"{").is_err());
    }

    #[test]
    fn free_form_maps_keep_the_client_s_keys() {
        let body: serde_json::Value = decode_json(
            br#"{"config": {"ClaimMappings": {"service": "service"}}, "meta": {"name": "x"}, "name": "m"}"#,
        )
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"Config": {"ClaimMappings": {"service": "service"}}, "Meta": {"name": "x"}, "Name": "m"})
        );
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb%2fc"), "a/b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }

    #[test]
    fn jitter_stays_within_a_sixteenth() {
        let blocking = Blocking {
            index: 1,
            wait: Duration::from_secs(16),
        };
        for _ in 0..100 {
            let left = blocking.deadline() - Instant::now();
            assert!(left <= Duration::from_secs(17), "{left:?}");
        }
    }
}
