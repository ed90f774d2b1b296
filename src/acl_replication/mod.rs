//! ACLs across datacenters, on a server of a secondary datacenter: the replicator that copies the
//! primary's policies (and, with `acl.enable_token_replication`, its global tokens) while this
//! server leads, its status (`GET /v1/acl/replication`), where ACL writes go (policies and global
//! tokens to the primary, local tokens here), and the fallback that resolves a token the primary
//! knows but this datacenter has not replicated yet (`remote.rs`).
//!
//! The decisions — diff, cursor, back-off, rate limit, when to run — are sans-IO in `diff.rs`;
//! this file is the thin loop that reads the primary through [`Agent::forward_to_datacenter`]
//! (with the replication token) and proposes the changes through raft.

mod diff;
mod remote;
mod round;
mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_kvstore::Backend;

use crate::http::{ApiError, json_response};
use crate::node::{Agent, ForwardedHttp};
use crate::tokens::TokenKind;
use diff::{Backoff, Cursor, RateLimit, Supervise};
pub(crate) use remote::{RemoteTokens, learn_before_serving, resolve};

/// How often the supervisor looks at leadership.
const SUPERVISE_TICK: Duration = Duration::from_millis(100);
/// How long one blocking query on the primary may wait before it is asked again.
const BLOCKING_WAIT: &str = "30s";
/// Rounds: at most `ROUND_BURST` at once, then one per `ROUND_INTERVAL` (Consul: 1/s, burst 5).
const ROUND_INTERVAL: Duration = Duration::from_millis(200);
const ROUND_BURST: u32 = 5;
/// Back-off after a failed round.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(64);
/// Full records read from the primary at once.
const READS_IN_FLIGHT: usize = 64;
/// Go's zero time, which Consul prints for a time never set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What `GET /v1/acl/replication` reports.
#[derive(Debug, Clone, Default)]
struct Status {
    running: bool,
    replicated_index: u64,
    replicated_role_index: u64,
    replicated_token_index: u64,
    last_success: Option<SystemTime>,
    last_error: Option<SystemTime>,
    last_error_message: String,
}

/// The replication state of a server: its status and the cache of tokens resolved at the primary.
#[derive(Debug, Default)]
pub(crate) struct AclReplication {
    status: Mutex<Status>,
    /// Tokens the primary resolved for this datacenter before they replicated.
    pub(crate) remote: RemoteTokens,
}

impl AclReplication {
    fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock());
    }

    /// Consul's `leader.replication.acl-{policies,roles,tokens}.{status,index}` gauges: status 1
    /// while replication runs and its last round succeeded, and the primary's index replicated.
    pub(crate) fn gauges(&self) -> Vec<crate::telemetry::GaugeReading> {
        use crate::telemetry::{
            GaugeReading, REPLICATION_ACL_POLICIES_INDEX, REPLICATION_ACL_POLICIES_STATUS,
            REPLICATION_ACL_ROLES_INDEX, REPLICATION_ACL_ROLES_STATUS, REPLICATION_ACL_TOKENS_INDEX,
            REPLICATION_ACL_TOKENS_STATUS,
        };
        let status = self.status.lock().clone();
        let healthy = status.running
            && status.last_success.is_some()
            && status
                .last_error
                .is_none_or(|error| status.last_success.is_some_and(|ok| ok >= error));
        let up = if healthy { 1.0 } else { 0.0 };
        [
            (REPLICATION_ACL_POLICIES_STATUS, up),
            (REPLICATION_ACL_POLICIES_INDEX, status.replicated_index as f64),
            (REPLICATION_ACL_ROLES_STATUS, up),
            (REPLICATION_ACL_ROLES_INDEX, status.replicated_role_index as f64),
            (REPLICATION_ACL_TOKENS_STATUS, up),
            (REPLICATION_ACL_TOKENS_INDEX, status.replicated_token_index as f64),
        ]
        .into_iter()
        .map(|(name, value)| GaugeReading { name, value })
        .collect()
    }
}

/// Whether this server's datacenter is a secondary with ACLs on.
pub(crate) fn is_acl_secondary<B: Backend>(agent: &Agent<B>) -> bool {
    agent.config.acl.enabled && agent.config.datacenter != agent.config.primary_datacenter
}

/// Runs on every server: starts the replicator when this server becomes leader of a secondary
/// datacenter, stops it when leadership is lost, starts it again when regained.
pub(crate) async fn supervise<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    let mut token = agent.tokens.get(TokenKind::Replication);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SUPERVISE_TICK) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => break,
        }
        // A replication token set at run time takes effect at once, not after the blocking
        // query in progress returns: the replicator starts over with it.
        let current = agent.tokens.get(TokenKind::Replication);
        if current != token {
            token = current;
            if let Some(task) = running.take() {
                task.abort();
            }
        }
        let decision = diff::supervise(
            running.as_ref().is_some_and(|task| !task.is_finished()),
            agent.config.acl.enabled,
            agent.config.datacenter != agent.config.primary_datacenter,
            agent.consensus.is_leader(),
        );
        match decision {
            Supervise::Start => {
                tracing::info!(primary = %agent.config.primary_datacenter, "starting ACL replication");
                agent.acl_replication.update(|s| s.running = true);
                running = Some(tokio::spawn(replicate(Arc::clone(&agent))));
            }
            Supervise::Stop => {
                tracing::info!("stopping ACL replication: no longer the leader");
                if let Some(task) = running.take() {
                    task.abort();
                }
                agent.acl_replication.update(|s| s.running = false);
            }
            Supervise::Keep => {}
        }
    }
    if let Some(task) = running.take() {
        task.abort();
        let _ = task.await;
    }
}

/// The replicator: rounds until aborted. A failed round is recorded and retried after a back-off;
/// it never ends the loop.
async fn replicate<B: Backend>(agent: Arc<Agent<B>>) {
    let mut cursor = Cursor::default();
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut limit = RateLimit::new(ROUND_INTERVAL, ROUND_BURST);
    loop {
        if let Some(at) = limit.admit(Instant::now()) {
            tokio::time::sleep_until(at).await;
            continue;
        }
        match round::round(&agent, &mut cursor).await {
            Ok((indexes, applied)) => {
                backoff.succeeded();
                if applied != round::Applied::default() {
                    tracing::debug!(
                        deletes = applied.deletes,
                        upserts = applied.upserts,
                        "ACL replication applied changes"
                    );
                    // Cached resolutions may hold what was just replaced or deleted.
                    agent.resolver.purge();
                    agent.acl_replication.remote.clear();
                }
                agent.acl_replication.update(|s| {
                    s.last_success = Some(SystemTime::now());
                    s.replicated_index = indexes.policies;
                    s.replicated_role_index = indexes.roles;
                    s.replicated_token_index = indexes.tokens;
                });
            }
            Err(message) => {
                cursor.reset();
                let wait = backoff.failed();
                tracing::warn!(error = %message, retry_in = ?wait, "ACL replication error (will retry if still leader)");
                agent.acl_replication.update(|s| {
                    s.last_error = Some(SystemTime::now());
                    s.last_error_message = message;
                });
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A GET at the primary with `token`; the answer's `X-Consul-Index` and decoded body. Anything
/// but a 200 with a body of the expected shape is an error carrying the primary's message.
async fn fetch<B: Backend, T: serde::de::DeserializeOwned>(
    agent: &Agent<B>,
    primary: &str,
    uri: &str,
    token: &str,
) -> Result<(u64, T), String> {
    let request = ForwardedHttp {
        method: "GET".into(),
        uri: uri.to_owned(),
        headers: vec![("x-consul-token".into(), token.as_bytes().to_vec())],
        body: Vec::new(),
    };
    let response = agent
        .forward_to_datacenter(primary, request)
        .await
        .map_err(|e| e.message().to_owned())?;
    if response.status != 200 {
        return Err(String::from_utf8_lossy(&response.body).trim().to_owned());
    }
    let index = response
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-consul-index"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_slice(&response.body).map_err(|e| format!("malformed answer: {e}"))?;
    Ok((index, body))
}

fn rfc3339(at: Option<SystemTime>) -> String {
    at.map_or_else(
        || ZERO_TIME.to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// `GET /v1/acl/replication`: this datacenter's replication status, as its leader knows it (the
/// dispatch sends the request there). Consul asks no ACL for it; 401 when ACLs are off.
pub(crate) async fn status_handler<B: Backend>(
    State(agent): State<Arc<Agent<B>>>,
) -> Result<Response, ApiError> {
    agent.acls_enabled()?;
    let enabled = is_acl_secondary(&agent);
    let status = agent.acl_replication.status.lock().clone();
    let replication_type = if agent.config.acl.enable_token_replication {
        "tokens"
    } else {
        "policies"
    };
    let body = serde_json::json!({
        "Enabled": enabled,
        "Running": enabled && status.running,
        "SourceDatacenter": if enabled { agent.config.primary_datacenter.as_str() } else { "" },
        "ReplicationType": if enabled { replication_type } else { "" },
        "ReplicatedIndex": status.replicated_index,
        "ReplicatedRoleIndex": status.replicated_role_index,
        "ReplicatedTokenIndex": status.replicated_token_index,
        "LastSuccess": rfc3339(status.last_success),
        "LastError": rfc3339(status.last_error),
        "LastErrorMessage": status.last_error_message,
    });
    let meta = agent.query_meta().with_index(agent.store.last_applied());
    Ok(json_response(meta.headers(), &body))
}

/// The ACL writes a secondary carries to the primary (Consul writes policies, roles and global
/// tokens there and replicates them back): `Some(request)` to send there, or the request back when
/// it is served here (reads, local tokens, anything else). Bodies of token writes are read to see
/// `Local`.
pub(crate) async fn write_goes_to_primary<B: Backend>(
    agent: &Agent<B>,
    request: Request,
) -> Result<(bool, Request), ApiError> {
    if !is_acl_secondary(agent) || request.method() == Method::GET {
        return Ok((false, request));
    }
    let path = request.uri().path().to_owned();
    let always = path == "/v1/acl/bootstrap"
        || path == "/v1/acl/policy"
        || path.starts_with("/v1/acl/policy/")
        || path == "/v1/acl/role"
        || path.starts_with("/v1/acl/role/");
    if always {
        return Ok((true, request));
    }
    // Logging out of a global token deletes it where global tokens are written.
    if path == "/v1/acl/logout" {
        let secret = agent.request_secret(request.headers(), request.uri());
        let found = agent
            .store
            .acl_token_by_secret(&secret)
            .map_err(ApiError::read)?
            .value;
        return Ok((found.is_some_and(|token| !token.local), request));
    }
    let accessor = match path.strip_prefix("/v1/acl/token") {
        Some("") => None,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Some(id.to_owned()),
            _ => return Ok((false, request)),
        },
        None => return Ok((false, request)),
    };
    // An existing local token is this datacenter's, whatever the body says.
    if let Some(id) = &accessor {
        let existing = agent.store.acl_token(id).map_err(ApiError::read)?.value;
        if let Some(token) = existing {
            return Ok((!token.local, request));
        }
    }
    if request.method() == Method::DELETE {
        return Ok((true, request));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, crate::http::MAX_FORWARDED_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))?;
    let local = crate::http::decode_json::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("Local").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    Ok((!local, Request::from_parts(parts, Body::from(bytes))))
}

/// The request as it goes to the primary: its `dc` parameter dropped, so that the primary serves it
/// itself rather than sending it back.
pub(crate) fn without_dc(mut forwarded: ForwardedHttp) -> ForwardedHttp {
    if let Some((path, query)) = forwarded.uri.split_once('?') {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split('=').next() != Some("dc"))
            .collect();
        forwarded.uri = if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dc_parameter_is_dropped_on_the_way_to_the_primary() {
        let request = |uri: &str| ForwardedHttp {
            method: "PUT".into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(without_dc(request("/v1/acl/policy?dc=dc2")).uri, "/v1/acl/policy");
        assert_eq!(
            without_dc(request("/v1/acl/policy?x=1&dc=dc2&y")).uri,
            "/v1/acl/policy?x=1&y"
        );
        assert_eq!(without_dc(request("/v1/acl/token")).uri, "/v1/acl/token");
    }
}
