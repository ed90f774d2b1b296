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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use futures::{StreamExt as _, TryStreamExt as _};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_kvstore::{AclPolicy, AclToken, Backend, Command, PolicyLink};

use crate::fsm::ApplyResponse;
use crate::http::{ApiError, json_response};
use crate::node::{Agent, ForwardedHttp};
use crate::tokens::TokenKind;
use diff::{Backoff, ContentHash, Cursor, RateLimit, Supervise, Sync};
pub(crate) use remote::{RemoteTokens, learn, resolve};

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
/// Changes proposed per batch, and how many of a batch are in flight at once.
const BATCH: usize = 256;
const IN_FLIGHT: usize = 16;
/// Full records read from the primary at once.
const READS_IN_FLIGHT: usize = 8;
/// Go's zero time, which Consul prints for a time never set.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// What `GET /v1/acl/replication` reports.
#[derive(Debug, Clone, Default)]
struct Status {
    running: bool,
    replicated_index: u64,
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
        match round(&agent, &mut cursor).await {
            Ok(()) => {
                backoff.succeeded();
                agent
                    .acl_replication
                    .update(|s| s.last_success = Some(SystemTime::now()));
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

/// One round: a blocking list of the primary's policies, its tokens, the diffs, the changes.
async fn round<B: Backend>(agent: &Agent<B>, cursor: &mut Cursor) -> Result<(), String> {
    let token = agent
        .tokens
        .get(TokenKind::Replication)
        .ok_or_else(|| "no ACL replication token is set (acl.tokens.replication)".to_owned())?;
    let primary = agent.config.primary_datacenter.clone();
    let uri = format!(
        "/v1/acl/policies?stale&index={}&wait={BLOCKING_WAIT}",
        cursor.index()
    );
    let (policy_index, stubs): (u64, Vec<PolicyStub>) = fetch(agent, &primary, &uri, &token)
        .await
        .map_err(|e| format!("failed to retrieve remote ACL policies: {e}"))?;
    // The primary always holds global-management: an empty list is a broken answer, not a
    // reason to delete every policy here.
    if stubs.is_empty() {
        return Err("failed to retrieve remote ACL policies: the primary listed none".into());
    }
    let (token_index, remote_tokens): (u64, Vec<TokenJson>) =
        fetch(agent, &primary, "/v1/acl/tokens?stale", &token)
            .await
            .map_err(|e| format!("failed to retrieve remote ACL tokens: {e}"))?;
    let remote_index = policy_index.max(token_index);
    if cursor.observe(remote_index) == Sync::Full {
        tracing::warn!(
            remote_index,
            last = cursor.index(),
            "ACL replication remote index moved backwards, forcing a full ACL sync"
        );
        cursor.reset();
    }

    // Policies: read in full those that are new here or changed since the last round.
    let local_policies: BTreeMap<String, AclPolicy> = agent
        .store
        .acl_policies()
        .map_err(|e| format!("failed to read local ACL policies: {e}"))?
        .value
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let changed: Vec<String> = stubs
        .iter()
        .filter(|stub| !local_policies.contains_key(&stub.id) || stub.modify_index > cursor.index())
        .map(|stub| stub.id.clone())
        .collect();
    let fetched: Vec<AclPolicy> = futures::stream::iter(changed)
        .map(|id| {
            let primary = primary.clone();
            let token = token.clone();
            async move {
                let uri = format!("/v1/acl/policy/{id}?stale");
                fetch::<_, PolicyJson>(agent, &primary, &uri, &token)
                    .await
                    .map(|(_, policy)| policy.into_policy())
                    .map_err(|e| format!("failed to retrieve remote ACL policy {id}: {e}"))
            }
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let fetched: BTreeMap<String, AclPolicy> = fetched.into_iter().map(|p| (p.id.clone(), p)).collect();
    let local_hashes: BTreeMap<String, ContentHash> = local_policies
        .iter()
        .map(|(id, p)| (id.clone(), diff::policy_hash(p)))
        .collect();
    let remote_hashes: BTreeMap<String, ContentHash> = stubs
        .iter()
        .filter_map(|stub| match fetched.get(&stub.id) {
            Some(policy) => Some((stub.id.clone(), diff::policy_hash(policy))),
            // Unchanged since the last round and present here: as it is here.
            None => local_hashes.get(&stub.id).map(|h| (stub.id.clone(), *h)),
        })
        .collect();
    let policy_plan = diff::plan(&remote_hashes, &local_hashes);
    let remote_policy_ids: BTreeSet<String> = stubs.iter().map(|s| s.id.clone()).collect();

    // Tokens: the list carries everything, secrets included when the token may write ACLs.
    let token_plan_and_records = if agent.config.acl.enable_token_replication {
        let mut remote = BTreeMap::new();
        for json in remote_tokens.into_iter().filter(|t| !t.local) {
            if json.secret_id.is_empty() || json.secret_id == "<hidden>" {
                return Err("failed to retrieve unredacted tokens - replication token in use does not grant acl:write".into());
            }
            let token = diff::replicable_token(json.into_token()?, &remote_policy_ids);
            remote.insert(token.accessor_id.clone(), token);
        }
        let local: BTreeMap<String, ContentHash> = agent
            .store
            .acl_tokens()
            .map_err(|e| format!("failed to read local ACL tokens: {e}"))?
            .value
            .iter()
            .filter(|t| !t.local)
            .map(|t| (t.accessor_id.clone(), diff::token_hash(t)))
            .collect();
        let remote_hashes = remote
            .iter()
            .map(|(id, t)| (id.clone(), diff::token_hash(t)))
            .collect();
        Some((diff::plan(&remote_hashes, &local), remote))
    } else {
        None
    };

    let mut commands = Vec::new();
    if let Some((plan, _)) = &token_plan_and_records {
        commands.extend(plan.deletes.iter().map(|id| Command::AclTokenDelete {
            accessor_id: id.clone(),
        }));
    }
    commands.extend(
        policy_plan
            .deletes
            .iter()
            .map(|id| Command::AclPolicyDelete { id: id.clone() }),
    );
    let deletes = commands.len();
    apply(agent, std::mem::take(&mut commands)).await?;
    commands.extend(
        policy_plan
            .upserts
            .iter()
            .filter_map(|id| fetched.get(id).cloned())
            .map(Command::AclPolicyUpsert),
    );
    let policy_upserts = commands.len();
    apply(agent, std::mem::take(&mut commands)).await?;
    if let Some((plan, records)) = token_plan_and_records {
        commands.extend(
            plan.upserts
                .iter()
                .filter_map(|id| records.get(id).cloned())
                .map(Command::AclTokenUpsert),
        );
    }
    let token_upserts = commands.len();
    apply(agent, commands).await?;
    if deletes + policy_upserts + token_upserts > 0 {
        tracing::debug!(
            deletes,
            policy_upserts,
            token_upserts,
            "ACL replication applied changes"
        );
        // Cached resolutions may hold what was just replaced or deleted.
        agent.resolver.purge();
        agent.acl_replication.remote.clear();
    }

    cursor.advance(remote_index);
    let tokens_on = agent.config.acl.enable_token_replication;
    agent.acl_replication.update(|s| {
        s.replicated_index = policy_index;
        s.replicated_token_index = if tokens_on { token_index } else { 0 };
    });
    Ok(())
}

/// Proposes `commands` in batches of [`BATCH`], [`IN_FLIGHT`] at a time; the first failure ends
/// the round (the next one diffs again, so nothing is lost).
async fn apply<B: Backend>(agent: &Agent<B>, commands: Vec<Command>) -> Result<(), String> {
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let batch: Vec<Command> = commands.by_ref().take(BATCH).collect();
        futures::stream::iter(batch)
            .map(|command| async move {
                match agent.propose(&command).await {
                    Ok((ApplyResponse::Rejected { message, .. }, _)) => {
                        Err(format!("failed to apply an ACL change: {message}"))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("failed to apply an ACL change: {e:?}")),
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(())
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

#[derive(Debug, Deserialize)]
struct PolicyStub {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "ModifyIndex", default)]
    modify_index: u64,
}

#[derive(Debug, Deserialize)]
struct LinkJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct PolicyJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Rules", default)]
    rules: String,
    #[serde(rename = "Datacenters", default)]
    datacenters: Option<Vec<String>>,
}

impl PolicyJson {
    fn into_policy(self) -> AclPolicy {
        AclPolicy {
            id: self.id,
            name: self.name,
            description: self.description,
            rules: self.rules,
            datacenters: self.datacenters.unwrap_or_default(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TokenJson {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID", default)]
    secret_id: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Policies", default)]
    policies: Option<Vec<LinkJson>>,
    #[serde(rename = "Local", default)]
    local: bool,
    #[serde(rename = "ExpirationTime", default)]
    expiration_time: Option<String>,
}

impl TokenJson {
    fn into_token(self) -> Result<AclToken, String> {
        let expiration_unix_ms = match self.expiration_time.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let at = humantime::parse_rfc3339_weak(text)
                    .map_err(|e| format!("token {}: bad ExpirationTime {text:?}: {e}", self.accessor_id))?;
                let ms = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .unwrap_or(0);
                Some(ms)
            }
        };
        Ok(AclToken {
            accessor_id: self.accessor_id,
            secret_id: self.secret_id,
            description: self.description,
            policies: self
                .policies
                .unwrap_or_default()
                .into_iter()
                .map(|l| PolicyLink {
                    id: l.id,
                    name: l.name,
                })
                .collect(),
            local: self.local,
            expiration_unix_ms,
            create_index: 0,
            modify_index: 0,
        })
    }
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
        "ReplicatedRoleIndex": 0,
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

    #[test]
    fn tokens_are_read_as_consul_lists_them() {
        let json: TokenJson = serde_json::from_str(
            r#"{"AccessorID":"a","SecretID":"s","Description":"d","Policies":[{"ID":"p","Name":"n"}],
                "Local":false,"ExpirationTime":"2030-01-01T00:00:00Z","Hash":"x"}"#,
        )
        .unwrap();
        let token = json.into_token().unwrap();
        assert_eq!(token.policies[0].id, "p");
        assert_eq!(token.expiration_unix_ms, Some(1_893_456_000_000));
        let bare: TokenJson = serde_json::from_str(r#"{"AccessorID":"a","Policies":null}"#).unwrap();
        assert!(bare.into_token().unwrap().policies.is_empty());
    }
}
