//! `/v1/health/*`: the catalog's checks, and service instances with their health, as Prometheus's
//! Consul discovery, DNS-less clients and alerting tools read them (`passing`, `tag`, `node-meta`,
//! `filter`, blocking queries, consistency modes, ACL filtering).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use std::collections::HashSet;

use tribune_kvstore::{
    Backend, CheckServiceNode, CheckStatus, HealthCheck, Indexed, ReadError, Store, WatchScope,
};

use super::catalog::check_readable;
use super::catalog_json::{CheckServiceNodeJson, HealthCheckJson};
use super::catalog_query::{NodeMetaFilter, filtered, names_a_peer, visible_instances};
use super::near;
use super::{ApiError, Params, Shared, json_response};

/// `GET /v1/health/node/:node`: the node's checks.
pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Consul's node health read takes no `node-meta`: it names its node.
    checks_answer(&agent, &uri, &request_headers, NodeMeta::Ignored, |store| {
        store.node_checks(&node)
    })
    .await
}

/// `GET /v1/health/checks/:service`: the checks of the service's instances.
pub(crate) async fn service_checks<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(service): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    checks_answer(&agent, &uri, &request_headers, NodeMeta::Applied, |store| {
        store.service_checks(&service)
    })
    .await
}

/// `GET /v1/health/state/:state`: every check in a state (`any`, `passing`, `warning`, `critical`).
pub(crate) async fn state<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(state): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = match state.as_str() {
        "any" => None,
        other => Some(CheckStatus::parse(other).ok_or_else(|| ApiError::bad_request("Bad check state"))?),
    };
    checks_answer(&agent, &uri, &request_headers, NodeMeta::Applied, |store| {
        store.checks_in_state(wanted)
    })
    .await
}

/// Whether a check read honours `?node-meta=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeMeta {
    Applied,
    Ignored,
}

/// The answer of a check read: `read` after the read preamble on the checks scope, narrowed by
/// `node-meta` (when the endpoint takes it), the caller's ACLs and `filter`.
async fn checks_answer<B: Backend>(
    agent: &Shared<B>,
    uri: &Uri,
    request_headers: &HeaderMap,
    node_meta: NodeMeta,
    read: impl FnOnce(&Store<B>) -> Result<Indexed<Vec<HealthCheck>>, ReadError>,
) -> Result<Response, ApiError> {
    let access = agent.access(request_headers, uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = match node_meta {
        NodeMeta::Applied => NodeMetaFilter::parse(&params)?,
        NodeMeta::Ignored => NodeMetaFilter::default(),
    };
    let meta = agent.prepare_read(&params, WatchScope::Checks).await?;
    let found = read(&agent.store).map_err(ApiError::read)?;
    let mut checks = found.value;
    if !meta_filter.is_empty() {
        checks = keep_on_matching_nodes(agent, checks, &meta_filter)?;
    }
    access.filter(&mut checks, check_readable);
    if let Some(order) = near::order_for(agent, &params).await {
        order.sort(&mut checks, |c| &c.node);
    }
    let checks = filtered(
        params.get("filter"),
        checks.into_iter().map(HealthCheckJson::from),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &checks))
}

fn keep_on_matching_nodes<B: Backend>(
    agent: &Shared<B>,
    mut checks: Vec<HealthCheck>,
    meta_filter: &NodeMetaFilter,
) -> Result<Vec<HealthCheck>, ApiError> {
    let matching: HashSet<String> = agent
        .store
        .nodes()
        .map_err(ApiError::read)?
        .value
        .into_iter()
        .filter(|n| meta_filter.matches(n))
        .map(|n| n.node.to_ascii_lowercase())
        .collect();
    checks.retain(|check| matching.contains(&check.node.to_ascii_lowercase()));
    Ok(checks)
}

/// Whether every check of an instance passes (what `?passing` keeps).
fn all_passing(instance: &CheckServiceNode) -> bool {
    instance.checks.iter().all(|c| c.status == CheckStatus::Passing)
}

/// `GET /v1/health/service/:service`: the service's instances with their node and checks.
pub(crate) async fn service<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(service): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let tags = params.all("tag");
    let passing_only = passing_param(&params)?;
    let meta = agent
        .prepare_read(&params, WatchScope::Service(service.clone()))
        .await?;
    let found = agent.store.service_health(&service).map_err(ApiError::read)?;
    let mut instances = found.value;
    if names_a_peer(&params) {
        instances.clear();
    }
    if passing_only {
        instances.retain(all_passing);
    }
    let mut instances = visible_instances(&access, instances, &meta_filter, &tags, |i| (&i.node, &i.service));
    for instance in &mut instances {
        access.filter(&mut instance.checks, check_readable);
    }
    if let Some(order) = near::order_for(&agent, &params).await {
        order.sort(&mut instances, |i| &i.node.node);
    }
    let datacenter = agent.config.datacenter.as_str();
    let instances = filtered(
        params.get("filter"),
        instances
            .into_iter()
            .map(|i| CheckServiceNodeJson::new(i, datacenter)),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &instances))
}

/// `?passing` as Consul reads it: present without a value, or a boolean as Go spells it.
fn passing_param(params: &Params) -> Result<bool, ApiError> {
    match params.get("passing") {
        None => Ok(false),
        Some("") => Ok(true),
        Some(text) => crate::strconv::parse_go_bool(text)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid value for ?passing: {text:?}"))),
    }
}
