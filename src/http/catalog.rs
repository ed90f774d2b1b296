//! `/v1/catalog/*` (but `datacenters`, which is the router's): registering and deregistering nodes,
//! services and checks, and reading them back with Consul's query parameters (`node-meta`, `tag`,
//! `filter`), blocking queries, consistency modes and ACL filtering.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use tribune_acl::{Authorizer, Decision};
use tribune_kvstore::{Backend, Command, Node, Registration, ServiceInstance, WatchScope};

use super::catalog_json::{CatalogServiceJson, DeregisterBody, NodeJson, NodeServiceJson, RegisterBody};
use super::catalog_query::{NodeMetaFilter, filtered, filtered_map, names_a_peer, visible_instances};
use super::kv::bool_response;
use super::near;
use super::{
    Access, ApiError, Params, Shared, accepted, decode_json, forwarded_from_parts, from_forwarded,
    json_response,
};

/// Registration needs `node:write` when it writes the node record, `service:write` for the service,
/// and, per check, `service:write` on its service or `node:write` for a node-level check.
fn authorize_registration(
    access: &Access,
    registration: &Registration,
    node_exists: bool,
    service_of_check: impl Fn(&str) -> Option<String>,
) -> Result<(), ApiError> {
    if !(registration.skip_node_update && node_exists) {
        access.require(|a| a.node_write(&registration.node))?;
    }
    if let Some(service) = &registration.service {
        access.require(|a| a.service_write(&service.service))?;
    }
    for check in &registration.checks {
        if check.service_id.is_empty() {
            access.require(|a| a.node_write(&registration.node))?;
        } else {
            let name = registration
                .service
                .as_ref()
                .filter(|s| s.effective_id() == check.service_id)
                .map(|s| s.service.clone())
                .or_else(|| service_of_check(&check.service_id));
            match name {
                Some(name) => access.require(|a| a.service_write(&name))?,
                // The store refuses a check of an unknown service; node write is the least to ask.
                None => access.require(|a| a.node_write(&registration.node))?,
            }
        }
    }
    Ok(())
}

pub(crate) async fn register<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterBody =
        decode_json(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    if let Some(datacenter) = other_datacenter(&agent, &request.datacenter) {
        return to_datacenter(&agent, datacenter, &uri, &request_headers, &body).await;
    }
    let registration = request.into_registration()?;
    let access = agent.access(&request_headers, &uri)?;
    let node = agent
        .store
        .node(&registration.node)
        .map_err(ApiError::read)?
        .value;
    authorize_registration(&access, &registration, node.is_some(), |service_id| {
        node.as_ref()
            .and_then(|n| n.services.iter().find(|s| s.id == service_id))
            .map(|s| s.service.clone())
    })?;
    propose_true(&agent, Command::CatalogRegister(registration)).await
}

pub(crate) async fn deregister<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DeregisterBody =
        decode_json(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    if let Some(datacenter) = other_datacenter(&agent, &request.datacenter) {
        return to_datacenter(&agent, datacenter, &uri, &request_headers, &body).await;
    }
    if request.node.is_empty() {
        return Err(ApiError::internal("Must provide node"));
    }
    let access = agent.access(&request_headers, &uri)?;
    if request.service_id.is_empty() {
        access.require(|a| a.node_write(&request.node))?;
    } else {
        let service = agent
            .store
            .node_service(&request.node, &request.service_id)
            .map_err(ApiError::read)?
            .value;
        match service {
            Some(service) => access.require(|a| a.service_write(&service.service))?,
            None => access.require(|a| a.node_write(&request.node))?,
        }
    }
    let command = Command::CatalogDeregister {
        node: request.node,
        service_id: (!request.service_id.is_empty()).then_some(request.service_id),
        check_id: (!request.check_id.is_empty()).then_some(request.check_id),
    };
    propose_true(&agent, command).await
}

/// The body's `Datacenter` when it names another datacenter: Consul routes a catalog write by it,
/// as by `?dc=` (which the router has already acted on).
fn other_datacenter<'a, B: Backend>(agent: &Shared<B>, named: &'a str) -> Option<&'a str> {
    (!named.is_empty() && !named.eq_ignore_ascii_case(&agent.config.datacenter)).then_some(named)
}

/// Carries the write, as received, to a server of `datacenter`.
async fn to_datacenter<B: Backend>(
    agent: &Shared<B>,
    datacenter: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let request = forwarded_from_parts(&Method::PUT, uri, headers, body);
    let response = agent
        .forward_to_datacenter(&datacenter.to_ascii_lowercase(), request)
        .await?;
    Ok(from_forwarded(response))
}

async fn propose_true<B: Backend>(agent: &Shared<B>, command: Command) -> Result<Response, ApiError> {
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    accepted(response)?;
    Ok(bool_response(true))
}

pub(crate) async fn nodes<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let meta = agent.prepare_read(&params, WatchScope::Nodes).await?;
    let found = agent.store.nodes().map_err(ApiError::read)?;
    let mut nodes: Vec<Node> = found
        .value
        .into_iter()
        .filter(|n| meta_filter.matches(n))
        .collect();
    access.filter(&mut nodes, |a, n| a.node_read(&n.node));
    if let Some(order) = near::order_for(&agent, &params).await {
        order.sort(&mut nodes, |n| &n.node);
    }
    let datacenter = agent.config.datacenter.as_str();
    let nodes = filtered(
        params.get("filter"),
        nodes.into_iter().map(|n| NodeJson::new(n, datacenter)),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &nodes))
}

pub(crate) async fn services<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let meta = agent.prepare_read(&params, WatchScope::Services).await?;
    let found = agent.store.services().map_err(ApiError::read)?;
    let filter = params.get("filter").filter(|f| !f.is_empty());
    let mut services = found.value;
    access.filter_keys(&mut services, |a, name| a.service_read(name));
    if !meta_filter.is_empty() || filter.is_some() {
        // Narrowed by node or by expression: the tags are those of the instances that match.
        let datacenter = agent.config.datacenter.as_str();
        let mut narrowed = std::collections::BTreeMap::new();
        for name in services.keys() {
            let instances = agent.store.service_nodes(name).map_err(ApiError::read)?.value;
            let instances =
                visible_instances(&access, instances, &meta_filter, &[], |i| (&i.node, &i.service));
            let kept = filtered(
                filter,
                instances
                    .into_iter()
                    .map(|i| CatalogServiceJson::new(i, datacenter)),
            )?;
            if kept.is_empty() {
                continue;
            }
            let mut tags: Vec<String> = kept
                .iter()
                .filter_map(|i| i.get("ServiceTags").and_then(|t| t.as_array()))
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            tags.sort();
            tags.dedup();
            narrowed.insert(name.clone(), tags);
        }
        services = narrowed;
    }
    Ok(json_response(meta.with_index(found.index).headers(), &services))
}

pub(crate) async fn service<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta_filter = NodeMetaFilter::parse(&params)?;
    let tags = params.all("tag");
    let meta = agent
        .prepare_read(&params, WatchScope::Service(name.clone()))
        .await?;
    let mut found = agent.store.service_nodes(&name).map_err(ApiError::read)?;
    if names_a_peer(&params) {
        found.value.clear();
    }
    let mut instances = visible_instances(&access, found.value, &meta_filter, &tags, |i| {
        (&i.node, &i.service)
    });
    if let Some(order) = near::order_for(&agent, &params).await {
        order.sort(&mut instances, |i| &i.node.node);
    }
    let datacenter = agent.config.datacenter.as_str();
    let instances = filtered(
        params.get("filter"),
        instances
            .into_iter()
            .map(|i| CatalogServiceJson::new(i, datacenter)),
    )?;
    Ok(json_response(meta.with_index(found.index).headers(), &instances))
}

/// `GET /v1/catalog/node/:node`: `{"Node", "Services": {id: service}}`, or `null` for no such node.
pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    node_answer(&agent, &name, &uri, &request_headers, |filter, services| {
        let by_id = services
            .into_iter()
            .map(|s| (s.id.clone(), NodeServiceJson::from(s)));
        Ok(serde_json::Value::Object(filtered_map(filter, by_id)?))
    })
    .await
}

/// `GET /v1/catalog/node-services/:node`: `{"Node", "Services": [service]}`, or `null` for no such
/// node.
pub(crate) async fn node_services<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    node_answer(&agent, &name, &uri, &request_headers, |filter, services| {
        let listed = filtered(filter, services.into_iter().map(NodeServiceJson::from))?;
        Ok(serde_json::Value::Array(listed))
    })
    .await
}

/// A node read: `{"Node", "Services"}` with the services the caller may read, shaped by `services`
/// (given `?filter=`), or `null` when there is no such node or the caller may not read it.
async fn node_answer<B: Backend>(
    agent: &Shared<B>,
    name: &str,
    uri: &Uri,
    request_headers: &HeaderMap,
    services: impl FnOnce(Option<&str>, Vec<ServiceInstance>) -> Result<serde_json::Value, ApiError>,
) -> Result<Response, ApiError> {
    let access = agent.access(request_headers, uri)?;
    let params = Params::parse(uri.query());
    let meta = agent
        .prepare_read(&params, WatchScope::Node(name.to_owned()))
        .await?;
    let found = agent.store.node(name).map_err(ApiError::read)?;
    let headers = meta.with_index(found.index).headers();
    let Some(node) = found
        .value
        .filter(|n| access.allows(|a| a.node_read(&n.node.node)))
    else {
        return Ok(json_response(headers, &serde_json::Value::Null));
    };
    let body = serde_json::json!({
        "Node": NodeJson::new(node.node, &agent.config.datacenter),
        "Services": services(params.get("filter"), readable_services(&access, node.services))?,
    });
    Ok(json_response(headers, &body))
}

fn readable_services(access: &Access, mut services: Vec<ServiceInstance>) -> Vec<ServiceInstance> {
    access.filter(&mut services, |a, s| a.service_read(&s.service));
    services
}

/// Whether a check may be read: `service:read` on its service, or `node:read` on its node for a
/// node-level check (Consul's rule for health results).
pub(crate) fn check_readable(authorizer: &Authorizer, check: &tribune_kvstore::HealthCheck) -> Decision {
    if check.service_name.is_empty() {
        authorizer.node_read(&check.node)
    } else {
        authorizer.service_read(&check.service_name)
    }
}
