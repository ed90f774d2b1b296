//! `/v1/session/*`: sessions, with the leader's TTL timers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tribune_kvstore::{Backend, Command, Indexed, NewSession, Session, SessionBehavior, WatchScope};

use super::kv::bool_response;
use super::{Access, ApiError, Params, QueryMeta, Shared, accepted, json_response};
use crate::node::{ForwardedHttp, NodeHealth, SERF_HEALTH_CHECK};

/// Consul's longest session TTL (`SessionTTLMax`).
const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Consul's default lock-delay.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
/// A numeric `LockDelay` below this is seconds, above it nanoseconds (Consul's `lockDelayMinThreshold`).
const LOCK_DELAY_SECONDS_THRESHOLD: u64 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    #[serde(default)]
    lock_delay: Option<serde_json::Value>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    behavior: Option<String>,
    #[serde(default, rename = "TTL")]
    ttl: Option<String>,
    /// Outer `None`: absent (the default check applies); inner `None`: `null` (none, as Go reads it).
    #[serde(default, deserialize_with = "present")]
    checks: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    node_checks: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    service_checks: Option<Option<Vec<ServiceCheck>>>,
}

/// One of `ServiceChecks`.
#[derive(Debug, Deserialize)]
struct ServiceCheck {
    #[serde(rename = "ID")]
    id: String,
}

/// A field that is present in the body, `null` or not: absent fields stay `None` through
/// `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The node checks a new session is bound to, from the body's `Checks` and `NodeChecks` as Consul
/// reads them: with neither, the node's `serfHealth`; an explicitly empty `Checks` (or an empty
/// `NodeChecks` beside checks other than the default) binds it to none.
fn bound_checks(
    checks: Option<Option<Vec<String>>>,
    node_checks: Option<Option<Vec<String>>>,
) -> Vec<String> {
    let default = || vec![SERF_HEALTH_CHECK.to_owned()];
    let checks = checks.map_or_else(default, Option::unwrap_or_default);
    let node_checks = node_checks.map_or_else(default, Option::unwrap_or_default);
    let from_checks = if checks.is_empty() {
        return Vec::new();
    } else if checks.len() == 1 && checks.iter().all(|c| c == SERF_HEALTH_CHECK) {
        // The default (or an explicit one), which defers to NodeChecks.
        Vec::new()
    } else if node_checks.is_empty() {
        return Vec::new();
    } else {
        checks
    };
    let mut bound: Vec<String> = Vec::new();
    for check in node_checks.into_iter().chain(from_checks) {
        if !bound.contains(&check) {
            bound.push(check);
        }
    }
    bound
}

/// The checks a new session is bound to: its node checks, then its service checks' IDs (both name
/// checks of the session's node, and either going critical ends it), each once.
fn all_bound(node_checks: Vec<String>, service_checks: Vec<ServiceCheck>) -> Vec<String> {
    let mut bound = node_checks;
    for check in service_checks {
        if !bound.iter().any(|b| b.eq_ignore_ascii_case(&check.id)) {
            bound.push(check.id);
        }
    }
    bound
}

/// Refuses a session bound to `serfHealth` while the LAN pool does not hold its node alive, with
/// Consul's messages. The store vouches for every other check, in the log's order.
async fn require_serf_health<B: Backend>(
    agent: &Shared<B>,
    node: &str,
    bound: &[String],
) -> Result<(), ApiError> {
    if !bound.iter().any(|c| c.eq_ignore_ascii_case(SERF_HEALTH_CHECK)) {
        return Ok(());
    }
    match agent.node_health(node).await {
        NodeHealth::Passing => Ok(()),
        NodeHealth::Critical => Err(ApiError::internal(format!(
            "Check '{SERF_HEALTH_CHECK}' is in critical state"
        ))),
        NodeHealth::Unknown => Err(ApiError::internal(format!(
            "Missing check '{SERF_HEALTH_CHECK}' registration"
        ))),
    }
}

/// The path of session creation.
const CREATE_PATH: &str = "/v1/session/create";

/// Completes a `PUT /v1/session/create` this agent hands to another with its own node name when the
/// body names none, as Consul's agent endpoint does: a session belongs to the agent the application
/// talks to (whose health it follows), not to the server that serves the request.
pub(crate) fn claim_for_node(request: &mut ForwardedHttp, node: &str) {
    if !request.method.eq_ignore_ascii_case("PUT") || request.uri.split('?').next() != Some(CREATE_PATH) {
        return;
    }
    let mut body = if request.body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        match serde_json::from_slice::<serde_json::Value>(&request.body) {
            Ok(body) => body,
            // The serving handler reports the bad body.
            Err(_) => return,
        }
    };
    let Some(fields) = body.as_object_mut() else {
        return;
    };
    let named = fields.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("Node") && value.as_str().is_some_and(|n| !n.is_empty())
    });
    if named {
        return;
    }
    fields.retain(|name, _| !name.eq_ignore_ascii_case("Node"));
    fields.insert("Node".to_owned(), serde_json::Value::String(node.to_owned()));
    if let Ok(bytes) = serde_json::to_vec(&body) {
        request.body = bytes;
        request
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateResponse {
    #[serde(rename = "ID")]
    id: String,
}

/// A session as Consul's JSON shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    node: String,
    /// Nanoseconds, as Go encodes a `time.Duration`.
    lock_delay: u128,
    behavior: &'static str,
    #[serde(rename = "TTL")]
    ttl: String,
    node_checks: Vec<String>,
    service_checks: Option<Vec<ServiceCheckJson>>,
    checks: Vec<String>,
    create_index: u64,
    modify_index: u64,
}

/// One of a session's `ServiceChecks`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceCheckJson {
    #[serde(rename = "ID")]
    id: String,
    namespace: &'static str,
}

impl SessionJson {
    /// The session's JSON, its bound checks split into node and service checks by `is_service_check`.
    fn new(session: Session, is_service_check: impl Fn(&str) -> bool) -> Self {
        let (service, node): (Vec<String>, Vec<String>) = session
            .node_checks
            .iter()
            .cloned()
            .partition(|check| is_service_check(check));
        SessionJson {
            id: session.id,
            name: session.name,
            node: session.node,
            lock_delay: session.lock_delay.as_nanos(),
            behavior: match session.behavior {
                SessionBehavior::Release => "release",
                SessionBehavior::Delete => "delete",
            },
            ttl: session.ttl.map(go_duration).unwrap_or_default(),
            // Clients older than Consul 1.7 read `Checks`, which held every bound check.
            checks: session.node_checks,
            node_checks: node,
            service_checks: (!service.is_empty()).then(|| {
                service
                    .into_iter()
                    .map(|id| ServiceCheckJson { id, namespace: "" })
                    .collect()
            }),
            create_index: session.create_index,
            modify_index: session.modify_index,
        }
    }
}

/// The sessions' JSON. Which bound checks are service checks is read from the catalog: a session
/// lives only while its checks do, so each still names a check of its node.
fn sessions_json<B: Backend>(
    store: &tribune_kvstore::Store<B>,
    sessions: Vec<Session>,
) -> Result<Vec<SessionJson>, ApiError> {
    let mut service_checks: HashMap<String, HashSet<String>> = HashMap::new();
    let mut out = Vec::with_capacity(sessions.len());
    for session in sessions {
        let node = session.node.to_ascii_lowercase();
        if !service_checks.contains_key(&node) && !session.node_checks.is_empty() {
            let checks = store.node_checks(&session.node).map_err(ApiError::read)?.value;
            let ids = checks
                .into_iter()
                .filter(|c| !c.service_id.is_empty())
                .map(|c| c.check_id.to_ascii_lowercase())
                .collect();
            service_checks.insert(node.clone(), ids);
        }
        let of_node = service_checks.get(&node);
        out.push(SessionJson::new(session, |check| {
            of_node.is_some_and(|ids| ids.contains(&check.to_ascii_lowercase()))
        }));
    }
    Ok(out)
}

/// A duration as Go's `time.Duration.String()` writes it (`10s`, `1m30s`, `1h0m0s`, `250ms`).
fn go_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    if duration < Duration::from_secs(1) {
        return format!("{}ms", duration.as_millis());
    }
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total / 60) % 60, total % 60);
    let fraction = duration.subsec_millis();
    let seconds = if fraction == 0 {
        format!("{seconds}s")
    } else {
        format!("{}s", format!("{seconds}.{fraction:03}").trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

fn parse_lock_delay(value: &serde_json::Value) -> Result<Duration, ApiError> {
    match value {
        serde_json::Value::Number(n) => {
            let n = n
                .as_u64()
                .ok_or_else(|| ApiError::bad_request("Invalid LockDelay: must be a non-negative number"))?;
            Ok(if n < LOCK_DELAY_SECONDS_THRESHOLD {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            })
        }
        serde_json::Value::String(text) if text.is_empty() => Ok(DEFAULT_LOCK_DELAY),
        serde_json::Value::String(text) => crate::duration::parse_go_duration(text)
            .map_err(|e| ApiError::bad_request(format!("Request decode failed: invalid LockDelay: {e}"))),
        serde_json::Value::Null => Ok(DEFAULT_LOCK_DELAY),
        other => Err(ApiError::bad_request(format!("Invalid LockDelay {other}"))),
    }
}

pub(crate) async fn create<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateRequest::default()
    } else {
        super::decode_json(&body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?
    };
    let ttl = match request.ttl.as_deref() {
        None | Some("") => None,
        Some(text) => {
            // Consul checks the TTL on the server, so both refusals are its RPC errors: a 500.
            let ttl = crate::duration::parse_go_duration(text)
                .map_err(|e| ApiError::internal(format!("Session TTL '{text}' invalid: {e}")))?;
            let min = agent.config.session_ttl_min;
            if !ttl.is_zero() && (ttl < min || ttl > SESSION_TTL_MAX) {
                return Err(ApiError::internal(format!(
                    "Invalid Session TTL '{}', must be between [{}={}]",
                    go_duration(ttl),
                    go_duration(min),
                    go_duration(SESSION_TTL_MAX)
                )));
            }
            (!ttl.is_zero()).then_some(ttl)
        }
    };
    let behavior = match request.behavior.as_deref() {
        None | Some("") | Some("release") => SessionBehavior::Release,
        Some("delete") => SessionBehavior::Delete,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid Behavior setting '{other}'"
            )));
        }
    };
    let lock_delay = match &request.lock_delay {
        Some(value) => parse_lock_delay(value)?,
        None => DEFAULT_LOCK_DELAY,
    };
    let node = request
        .node
        .filter(|node| !node.is_empty())
        .unwrap_or_else(|| agent.config.node_name.clone());
    agent.authorize(&request_headers, &uri, |a| a.session_write(&node))?;
    let node_checks = all_bound(
        bound_checks(request.checks, request.node_checks),
        request.service_checks.flatten().unwrap_or_default(),
    );
    require_serf_health(&agent, &node, &node_checks).await?;
    // The leader picks the ID; the store never draws randomness.
    let id = uuid::Uuid::new_v4().to_string();
    let command = Command::SessionCreate(NewSession {
        id: id.clone(),
        name: request.name.unwrap_or_default(),
        node,
        lock_delay,
        behavior,
        ttl,
        node_checks,
    });
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    accepted(response)?;
    if let Some(ttl) = ttl {
        agent.sessions.arm_timer(&id, ttl);
    }
    Ok(json_response(HeaderMap::new(), &CreateResponse { id }))
}

pub(crate) async fn destroy<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    match agent.store.session(&id).map_err(ApiError::read)?.value {
        Some(session) => access.require(|a| a.session_write(&session.node))?,
        // No node to check against: require session write on every node (the rule for the empty
        // prefix), so an unknown ID is answered only to a token that could destroy any session, and a
        // token limited to some nodes cannot tell an unknown ID from another node's session.
        None => access.require(|a| a.session_write(""))?,
    }
    let command = Command::SessionDestroy { id: id.clone() };
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    accepted(response)?;
    agent.sessions.clear_timer(&id);
    Ok(bool_response(true))
}

pub(crate) async fn renew<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    // Writes reach the leader (followers forward them), whose state is current for its own timers.
    let found = agent.store.session(&id).map_err(ApiError::read)?;
    let Some(session) = found.value else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        ));
    };
    access.require(|a| a.session_write(&session.node))?;
    if let Some(ttl) = session.ttl {
        agent.sessions.arm_timer(&id, ttl);
    }
    let headers = agent.query_meta().with_index(found.index).headers();
    Ok(json_response(
        headers,
        &sessions_json(&agent.store, vec![session])?,
    ))
}

pub(crate) async fn info<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Sessions).await?;
    let found = agent.store.session(&id).map_err(ApiError::read)?;
    readable_sessions(&agent, &access, meta, found)
}

pub(crate) async fn node<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(node): Path<String>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Sessions).await?;
    let found = agent.store.node_sessions(&node).map_err(ApiError::read)?;
    readable_sessions(&agent, &access, meta, found)
}

pub(crate) async fn list<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let access = agent.access(&request_headers, &uri)?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Sessions).await?;
    let found = agent.store.sessions().map_err(ApiError::read)?;
    readable_sessions(&agent, &access, meta, found)
}

/// The answer to a session read: the sessions the caller may read (`session:read` on their node), with the
/// query's headers at the index the store reported.
fn readable_sessions<B: Backend>(
    agent: &Shared<B>,
    access: &Access,
    meta: QueryMeta,
    found: Indexed<impl IntoIterator<Item = Session>>,
) -> Result<Response, ApiError> {
    let mut sessions: Vec<Session> = found.value.into_iter().collect();
    access.filter(&mut sessions, |a, session| a.session_read(&session.node));
    let sessions = sessions_json(&agent.store, sessions)?;
    Ok(json_response(meta.with_index(found.index).headers(), &sessions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(86400)), "24h0m0s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }

    fn names(list: &[&str]) -> Option<Option<Vec<String>>> {
        Some(Some(list.iter().map(|s| (*s).to_owned()).collect()))
    }

    #[test]
    fn sessions_bind_to_serf_health_unless_told_otherwise() {
        let serf = vec![SERF_HEALTH_CHECK.to_owned()];
        assert_eq!(bound_checks(None, None), serf);
        assert_eq!(bound_checks(names(&[]), None), Vec::<String>::new());
        assert_eq!(bound_checks(None, names(&[])), Vec::<String>::new());
        assert_eq!(bound_checks(Some(None), None), Vec::<String>::new());
        assert_eq!(bound_checks(None, names(&["a"])), vec!["a".to_owned()]);
        assert_eq!(
            bound_checks(names(&["a"]), None),
            vec![SERF_HEALTH_CHECK.to_owned(), "a".to_owned()]
        );
        assert_eq!(bound_checks(names(&["a"]), names(&[])), Vec::<String>::new());
        assert_eq!(
            bound_checks(names(&["b", "a"]), names(&["a"])),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    #[test]
    fn a_forwarded_session_create_is_claimed_for_the_forwarding_node() {
        let request = |body: &str| ForwardedHttp {
            method: "PUT".into(),
            uri: "/v1/session/create?dc=dc1".into(),
            headers: vec![("content-length".into(), body.len().to_string().into_bytes())],
            body: body.as_bytes().to_vec(),
        };
        let node_of =
            |r: &ForwardedHttp| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["Node"].clone();
        let mut empty = request("");
        claim_for_node(&mut empty, "c1");
        assert_eq!(node_of(&empty), "c1");
        assert!(empty.headers.is_empty());
        let mut lower = request(r#"{"node": null, "Name": "x"}"#);
        claim_for_node(&mut lower, "c1");
        assert_eq!(node_of(&lower), "c1");
        let mut named = request(r#"{"node": "other"}"#);
        claim_for_node(&mut named, "c1");
        assert_eq!(named.body, br#"{"node": "other"}"#);
        let mut kv = request("");
        kv.uri = "/v1/kv/x".into();
        claim_for_node(&mut kv, "c1");
        assert!(kv.body.is_empty());
    }

    #[test]
    fn numeric_lock_delays_below_1000_are_seconds() {
        assert_eq!(
            parse_lock_delay(&serde_json::json!(15)).unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            parse_lock_delay(&serde_json::json!(2_000_000_000u64)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            parse_lock_delay(&serde_json::json!("1s")).unwrap(),
            Duration::from_secs(1)
        );
        assert!(parse_lock_delay(&serde_json::json!("soon")).is_err());
    }
}
