//! `/v1/health/*`: the catalog's checks, and service instances with their health, as Prometheus's
//! Consul discovery, DNS-less clients and alerting tools read them (`passing`, `tag`, `node-meta`,
//! `filter`, blocking queries, consistency modes, ACL filtering).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use tribune_kvstore::{Backend, CheckServiceNode, CheckStatus, HealthCheck, WatchScope};

use super::catalog::{both, check_readable};
use super::catalog_json::{CheckServiceNodeJson, HealthCheckJson};
use super::catalog_query::{NodeMetaFilter, filtered, has_tags};
use super::{ApiError, Params, Shared, json_response};

/// `GET /v1/health/node/:node`: the node's checks.
pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Checks).await?;
    let found = agent.store.node_checks(&node).map_err(ApiError::read)?;
    let mut checks = found.value;
    access.filter(&mut checks, check_readable);
    let checks = filtered(
        params.get("filter"),
        checks.into_iter().map(HealthCheckJson::from),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &checks))
}

/// `GET /v1/health/checks/:service`: the checks of the service's instances.
pub(crate) async fn service_checks<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(service): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let meta = agent.prepare_read(&params, WatchScope::Checks).await?;
    let found = agent.store.service_checks(&service).map_err(ApiError::read)?;
    let mut checks = found.value;
    if !meta_filter.is_empty() {
        checks = keep_on_matching_nodes(&agent, checks, &meta_filter)?;
    }
    access.filter(&mut checks, check_readable);
    let checks = filtered(
        params.get("filter"),
        checks.into_iter().map(HealthCheckJson::from),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &checks))
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
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let meta = agent.prepare_read(&params, WatchScope::Checks).await?;
    let found = agent.store.checks_in_state(wanted).map_err(ApiError::read)?;
    let mut checks = found.value;
    if !meta_filter.is_empty() {
        checks = keep_on_matching_nodes(&agent, checks, &meta_filter)?;
    }
    access.filter(&mut checks, check_readable);
    let checks = filtered(
        params.get("filter"),
        checks.into_iter().map(HealthCheckJson::from),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &checks))
}

fn keep_on_matching_nodes<B: Backend>(
    agent: &Shared<B>,
    checks: Vec<HealthCheck>,
    meta_filter: &NodeMetaFilter,
) -> Result<Vec<HealthCheck>, ApiError> {
    let nodes = agent.store.nodes().map_err(ApiError::read)?.value;
    Ok(checks
        .into_iter()
        .filter(|check| {
            nodes
                .iter()
                .find(|n| n.node.eq_ignore_ascii_case(&check.node))
                .is_some_and(|n| meta_filter.matches(n))
        })
        .collect())
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
    let mut instances: Vec<CheckServiceNode> = found
        .value
        .into_iter()
        .filter(|i| meta_filter.matches(&i.node) && has_tags(&i.service, &tags))
        .filter(|i| !passing_only || all_passing(i))
        .collect();
    access.filter(&mut instances, |a, i| {
        both(a.service_read(&i.service.service), a.node_read(&i.node.node))
    });
    for instance in &mut instances {
        if let super::Access::Token { authorizer } = &access {
            instance
                .checks
                .retain(|c| check_readable(authorizer, c) == tribune_acl::Decision::Allow);
        }
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

/// `?passing` as Consul reads it: present without a value, or a boolean.
fn passing_param(params: &Params) -> Result<bool, ApiError> {
    match params.get("passing") {
        None => Ok(false),
        Some("") => Ok(true),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => Ok(true),
            "0" | "f" | "false" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "Invalid value for ?passing: {text:?}"
            ))),
        },
    }
}
