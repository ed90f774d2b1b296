//! `/v1/agent/service*`, `/v1/agent/check*`, `/v1/agent/maintenance` and `/v1/agent/health/service/*`:
//! the services and checks registered on this agent, served by servers and client agents alike
//! from their [`LocalAgent`] (never forwarded). Consul's texts and status codes: 404 for an
//! unknown service or check ID, 400 for a bad body, 403 when the token may not (servers only:
//! client agents run without ACLs).
//!
//! It is not the local state (`src/local`) nor its sync to the catalog (anti-entropy).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tribune_kvstore::{Backend, CheckStatus};

use super::catalog_json::HealthCheckJson;
use super::catalog_query::filtered_map;
use super::{Access, ApiError, ApiRoute, Endpoint, Params, decode_json, endpoint, json_response};
use crate::client::ClientAgent;
use crate::local::{
    AgentServiceJson, CheckSpec, LocalAgent, LocalCheck, LocalService, StateError, parse_check, parse_service,
};
use crate::node::Agent;

/// An agent that keeps local services and checks: a server or a client agent.
pub(crate) trait LocalHost: Send + Sync + 'static {
    /// Its local state.
    fn local(&self) -> &LocalAgent;
    /// What the request may do.
    fn local_access(&self, headers: &HeaderMap, uri: &Uri) -> Result<Access, ApiError>;
    /// Turns true when the agent stops (long answers end then).
    fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool>;
    /// The data directory, if the agent keeps one.
    fn data_dir(&self) -> Option<std::path::PathBuf>;
}

impl<B: Backend> LocalHost for Agent<B> {
    fn local(&self) -> &LocalAgent {
        &self.local
    }

    fn local_access(&self, headers: &HeaderMap, uri: &Uri) -> Result<Access, ApiError> {
        self.access(headers, uri)
    }

    fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }

    fn data_dir(&self) -> Option<std::path::PathBuf> {
        self.config.data_dir.clone()
    }
}

impl LocalHost for ClientAgent {
    fn local(&self) -> &LocalAgent {
        &self.local
    }

    /// Client agents run without ACLs (they refuse to start with `acl.enabled`).
    fn local_access(&self, _headers: &HeaderMap, _uri: &Uri) -> Result<Access, ApiError> {
        Ok(Access::Unrestricted)
    }

    fn stop_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop_tasks.subscribe()
    }

    fn data_dir(&self) -> Option<std::path::PathBuf> {
        self.config.data_dir.clone()
    }
}

/// The routes, for both route tables.
pub(crate) fn endpoints<H: LocalHost>() -> Vec<Endpoint<Arc<H>>> {
    vec![
        endpoint!(GET, "/v1/agent/services", services::<H>),
        endpoint!(GET, "/v1/agent/service/{id}", service::<H>),
        endpoint!(PUT, "/v1/agent/service/register", register_service::<H>),
        endpoint!(PUT, "/v1/agent/service/deregister/{id}", deregister_service::<H>),
        endpoint!(
            PUT,
            "/v1/agent/service/maintenance/{id}",
            service_maintenance::<H>
        ),
        endpoint!(PUT, "/v1/agent/maintenance", node_maintenance::<H>),
        endpoint!(GET, "/v1/agent/checks", checks::<H>),
        endpoint!(PUT, "/v1/agent/check/register", register_check::<H>),
        endpoint!(PUT, "/v1/agent/check/deregister/{id}", deregister_check::<H>),
        endpoint!(PUT, "/v1/agent/check/pass/{id}", check_pass::<H>),
        endpoint!(PUT, "/v1/agent/check/warn/{id}", check_warn::<H>),
        endpoint!(PUT, "/v1/agent/check/fail/{id}", check_fail::<H>),
        endpoint!(PUT, "/v1/agent/check/update/{id}", check_update::<H>),
        endpoint!(GET, "/v1/agent/health/service/id/{id}", health_by_id::<H>),
        endpoint!(GET, "/v1/agent/health/service/name/{name}", health_by_name::<H>),
    ]
}

/// Consul's answer when a script check is registered on an agent that does not run them.
const SCRIPTS_DISABLED: &str = "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";

fn state_error(error: StateError) -> ApiError {
    let status = match error {
        StateError::UnknownService(_) | StateError::UnknownCheck(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.to_string())
}

fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    decode_json::<Value>(body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// The token a registration came with: its sync runs under it.
fn request_token(headers: &HeaderMap, params: &Params) -> Option<String> {
    let secret = crate::acl::request_secret(headers, params.get("token"), None);
    (!secret.is_empty()).then_some(secret)
}

/// `service:write` on the check's service, else `node:write` on this node.
fn require_check_write(access: &Access, local: &LocalAgent, check: &LocalCheck) -> Result<(), ApiError> {
    if check.service_name.is_empty() {
        access.require(|a| a.node_write(&local.node_name))
    } else {
        access.require(|a| a.service_write(&check.service_name))
    }
}

fn can_read_check(access: &Access, local: &LocalAgent, check: &LocalCheck) -> bool {
    if check.service_name.is_empty() {
        access.allows(|a| a.node_read(&local.node_name))
    } else {
        access.allows(|a| a.service_read(&check.service_name))
    }
}

fn ok() -> Response {
    StatusCode::OK.into_response()
}

async fn services<H: LocalHost>(
    State(host): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let params = Params::parse(uri.query());
    let local = host.local();
    let services = local.state.services();
    let visible = services
        .iter()
        .filter(|s| access.allows(|a| a.service_read(&s.service)))
        .map(|s| (s.id.clone(), AgentServiceJson::new(s, &local.datacenter)));
    let map = filtered_map(params.get("filter"), visible)?;
    Ok(json_response(HeaderMap::new(), &map))
}

async fn service<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let local = host.local();
    let service = local
        .state
        .service(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown service ID: {id}")))?;
    access.require(|a| a.service_read(&service.service))?;
    Ok(json_response(
        HeaderMap::new(),
        &AgentServiceJson::new(&service, &local.datacenter),
    ))
}

fn refuse_disabled_scripts(local: &LocalAgent, checks: &[CheckSpec]) -> Result<(), ApiError> {
    let scripts = checks
        .iter()
        .any(|c| matches!(c.check.check_type.as_str(), "script" | "docker"));
    if scripts && !local.enable_script_checks {
        return Err(ApiError::bad_request(SCRIPTS_DISABLED));
    }
    Ok(())
}

async fn register_service<H: LocalHost>(
    State(host): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let params = Params::parse(uri.query());
    let local = host.local();
    let value = decode_body(&body)?;
    let mut spec = parse_service(&value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    access.require(|a| a.service_write(&spec.service.service))?;
    if let Some(existing) = local.state.service(&spec.service.id) {
        access.require(|a| a.service_write(&existing.service))?;
    }
    refuse_disabled_scripts(local, &spec.checks)?;
    if spec.token.is_none() {
        spec.token = request_token(&headers, &params);
    }
    let replace = params
        .get("replace-existing-checks")
        .is_some_and(|v| v.is_empty() || crate::strconv::parse_go_bool(v).unwrap_or(false));
    local.state.add_service(spec, replace);
    Ok(ok())
}

async fn deregister_service<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let local = host.local();
    let existing = local
        .state
        .service(&id)
        .ok_or_else(|| state_error(StateError::UnknownService(id.clone())))?;
    access.require(|a| a.service_write(&existing.service))?;
    local.state.remove_service(&id).map_err(state_error)?;
    Ok(ok())
}

/// `?enable=` (required, Go's booleans) and `?reason=`.
fn maintenance_params(uri: &Uri) -> Result<(bool, String), ApiError> {
    let params = Params::parse(uri.query());
    let enable = match params.get("enable") {
        None | Some("") => return Err(ApiError::bad_request("Missing value for enable")),
        Some(text) => crate::strconv::parse_go_bool(text)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid value for enable: {text:?}")))?,
    };
    Ok((enable, params.get("reason").unwrap_or_default().to_owned()))
}

async fn service_maintenance<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let (enable, reason) = maintenance_params(&uri)?;
    let local = host.local();
    let existing = local
        .state
        .service(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")))?;
    access.require(|a| a.service_write(&existing.service))?;
    local
        .state
        .service_maintenance(&id, enable, &reason)
        .map_err(state_error)?;
    Ok(ok())
}

async fn node_maintenance<H: LocalHost>(
    State(host): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let (enable, reason) = maintenance_params(&uri)?;
    let local = host.local();
    access.require(|a| a.node_write(&local.node_name))?;
    local.state.node_maintenance(enable, &reason);
    Ok(ok())
}

fn check_json(local: &LocalAgent, check: &LocalCheck) -> HealthCheckJson {
    let tags = local
        .state
        .service(&check.service_id)
        .map(|s| s.tags)
        .unwrap_or_default();
    HealthCheckJson::from(check.to_health_check(&local.node_name, &tags))
}

async fn checks<H: LocalHost>(
    State(host): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let params = Params::parse(uri.query());
    let local = host.local();
    let checks = local.state.checks();
    let visible = checks
        .iter()
        .filter(|c| can_read_check(&access, local, c))
        .map(|c| (c.check_id.clone(), check_json(local, c)));
    let map = filtered_map(params.get("filter"), visible)?;
    Ok(json_response(HeaderMap::new(), &map))
}

async fn register_check<H: LocalHost>(
    State(host): State<Arc<H>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let params = Params::parse(uri.query());
    let local = host.local();
    let value = decode_body(&body)?;
    let mut spec = parse_check(&value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !spec.check.service_id.is_empty() {
        let service = local
            .state
            .service(&spec.check.service_id)
            .ok_or_else(|| state_error(StateError::CheckServiceMissing(spec.check.service_id.clone())))?;
        spec.check.service_name = service.service;
    }
    require_check_write(&access, local, &spec.check)?;
    if let Some(existing) = local.state.check(&spec.check.check_id) {
        require_check_write(&access, local, &existing)?;
    }
    refuse_disabled_scripts(local, std::slice::from_ref(&spec))?;
    if spec.token.is_none() {
        spec.token = request_token(&headers, &params);
    }
    local.state.add_check(spec).map_err(state_error)?;
    Ok(ok())
}

/// The check `id`, once the token may write it; 404 with Consul's text when there is none.
fn writable_check<H: LocalHost>(
    host: &H,
    id: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<LocalCheck, ApiError> {
    let access = host.local_access(headers, uri)?;
    let local = host.local();
    let check = local
        .state
        .check(id)
        .ok_or_else(|| state_error(StateError::UnknownCheck(id.to_owned())))?;
    require_check_write(&access, local, &check)?;
    Ok(check)
}

async fn deregister_check<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    writable_check(host.as_ref(), &id, &uri, &headers)?;
    host.local().state.remove_check(&id).map_err(state_error)?;
    Ok(ok())
}

/// Sets a TTL check's state, as `/v1/agent/check/{pass,warn,fail,update}` do.
fn set_ttl_check<H: LocalHost>(
    host: &H,
    id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    status: CheckStatus,
    output: String,
) -> Result<Response, ApiError> {
    let check = writable_check(host, id, uri, headers)?;
    if check.check_type != "ttl" {
        return Err(ApiError::internal(format!(
            "CheckID {id:?} does not have associated TTL"
        )));
    }
    host.local()
        .state
        .set_ttl_status(id, status, output)
        .map_err(state_error)?;
    Ok(ok())
}

async fn check_with_note<H: LocalHost>(
    host: Arc<H>,
    id: String,
    uri: Uri,
    headers: HeaderMap,
    status: CheckStatus,
) -> Result<Response, ApiError> {
    let note = Params::parse(uri.query())
        .get("note")
        .unwrap_or_default()
        .to_owned();
    set_ttl_check(host.as_ref(), &id, &uri, &headers, status, note)
}

async fn check_pass<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_with_note(host, id, uri, headers, CheckStatus::Passing).await
}

async fn check_warn<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_with_note(host, id, uri, headers, CheckStatus::Warning).await
}

async fn check_fail<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_with_note(host, id, uri, headers, CheckStatus::Critical).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
}

async fn check_update<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let update: UpdateBody =
        decode_json(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let status = CheckStatus::parse(&update.status)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: '{}'", update.status)))?;
    set_ttl_check(host.as_ref(), &id, &uri, &headers, status, update.output)
}

/// Consul's aggregate of a service's checks (node checks included): maintenance first, then
/// the worst status; and the HTTP status it answers with.
fn aggregated(checks: &[LocalCheck]) -> (&'static str, StatusCode) {
    if checks.iter().any(LocalCheck::is_maintenance) {
        return ("maintenance", StatusCode::SERVICE_UNAVAILABLE);
    }
    match checks.iter().map(|c| c.status).max() {
        Some(CheckStatus::Critical) => ("critical", StatusCode::SERVICE_UNAVAILABLE),
        Some(CheckStatus::Warning) => ("warning", StatusCode::TOO_MANY_REQUESTS),
        Some(CheckStatus::Passing) | None => ("passing", StatusCode::OK),
    }
}

fn service_health(local: &LocalAgent, service: &LocalService) -> (Value, StatusCode) {
    let checks: Vec<LocalCheck> = local
        .state
        .checks()
        .into_iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == service.id)
        .collect();
    let (status, code) = aggregated(&checks);
    let checks: Vec<HealthCheckJson> = checks.iter().map(|c| check_json(local, c)).collect();
    let body = json!({
        "AggregatedStatus": status,
        "Service": AgentServiceJson::new(service, &local.datacenter),
        "Checks": checks,
    });
    (body, code)
}

/// The answer: JSON, or with `?format=text` the aggregated status alone.
fn health_answer(uri: &Uri, code: StatusCode, status: &str, body: &impl serde::Serialize) -> Response {
    if Params::parse(uri.query()).get("format") == Some("text") {
        return (code, status.to_owned()).into_response();
    }
    let mut response = json_response(HeaderMap::new(), body);
    *response.status_mut() = code;
    response
}

async fn health_by_id<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    let local = host.local();
    let Some(service) = local.state.service(&id) else {
        let text = format!("ServiceId {id} not found");
        if Params::parse(uri.query()).get("format") == Some("text") {
            return Ok((StatusCode::NOT_FOUND, text).into_response());
        }
        return Err(ApiError::new(StatusCode::NOT_FOUND, text));
    };
    access.require(|a| a.service_read(&service.service))?;
    let (body, code) = service_health(local, &service);
    let status = body["AggregatedStatus"].as_str().unwrap_or_default().to_owned();
    Ok(health_answer(&uri, code, &status, &body))
}

async fn health_by_name<H: LocalHost>(
    State(host): State<Arc<H>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = host.local_access(&headers, &uri)?;
    access.require(|a| a.service_read(&name))?;
    let local = host.local();
    let services: Vec<LocalService> = local
        .state
        .services()
        .into_iter()
        .filter(|s| s.service == name)
        .collect();
    if services.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("ServiceName {name} Not Found"),
        ));
    }
    // The worst instance decides the code.
    let rank = |code: StatusCode| match code.as_u16() {
        200 => 0,
        429 => 1,
        _ => 2,
    };
    let mut worst = (StatusCode::OK, "passing".to_owned());
    let mut answers = Vec::with_capacity(services.len());
    for service in &services {
        let (body, code) = service_health(local, service);
        if rank(code) > rank(worst.0) {
            worst = (
                code,
                body["AggregatedStatus"].as_str().unwrap_or_default().to_owned(),
            );
        }
        answers.push(body);
    }
    Ok(health_answer(&uri, worst.0, &worst.1, &answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aggregate_puts_maintenance_first_then_the_worst_status() {
        let check = |id: &str, status| LocalCheck::new(id, id, status);
        assert_eq!(aggregated(&[]), ("passing", StatusCode::OK));
        assert_eq!(
            aggregated(&[check("a", CheckStatus::Passing), check("b", CheckStatus::Warning)]),
            ("warning", StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            aggregated(&[
                check("a", CheckStatus::Critical),
                check("b", CheckStatus::Warning)
            ]),
            ("critical", StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            aggregated(&[check("_node_maintenance", CheckStatus::Critical)]),
            ("maintenance", StatusCode::SERVICE_UNAVAILABLE)
        );
    }
}
