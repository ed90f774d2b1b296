//! `/v1/acl/*`: bootstrap, tokens and policies.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tribune_acl::PolicyRules;
use tribune_kvstore::{
    AclPolicy, AclToken, Backend, Command, GLOBAL_MANAGEMENT_POLICY_ID, PolicyLink, WatchScope,
};

use super::kv::bool_response;
use super::{ApiError, Params, Shared, accepted, json_response};
use crate::fsm::ApplyResponse;

/// The description Consul gives the bootstrap token.
const BOOTSTRAP_DESCRIPTION: &str = "Bootstrap Token (Global Management)";

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct LinkJson {
    #[serde(rename = "ID", default, deserialize_with = "super::null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TokenJson {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID")]
    secret_id: String,
    description: String,
    policies: Vec<LinkJson>,
    local: bool,
    #[serde(rename = "ExpirationTime", skip_serializing_if = "Option::is_none")]
    expiration_time: Option<String>,
    /// Consul's creation time. The state does not record it yet: Go's zero time, which is what
    /// Consul itself prints for a token without one.
    create_time: &'static str,
    hash: String,
    create_index: u64,
    modify_index: u64,
}

/// Go's zero `time.Time` in RFC 3339, as Consul renders an unset time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Consul's `Hash` of a token or policy: a digest of the fields a client sets, base64-encoded, so
/// that clients can tell whether two reads differ. (Consul uses BLAKE2b over its own field order;
/// clients only compare hashes, never recompute them.)
fn content_hash<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    use base64::Engine as _;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for field in fields {
        // Length-prefixed, so that moving bytes between fields changes the digest.
        context.update(&(field.len() as u64).to_le_bytes());
        context.update(field.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

impl From<AclToken> for TokenJson {
    fn from(token: AclToken) -> Self {
        let local = if token.local { "local" } else { "global" };
        let expiration_time = token.expiration_unix_ms.map(format_unix_ms);
        let hash = content_hash(
            [
                token.description.as_str(),
                local,
                expiration_time.as_deref().unwrap_or_default(),
            ]
            .into_iter()
            .chain(token.policies.iter().map(|link| link.id.as_str())),
        );
        TokenJson {
            accessor_id: token.accessor_id,
            secret_id: token.secret_id,
            description: token.description,
            policies: token
                .policies
                .into_iter()
                .map(|link| LinkJson {
                    id: link.id,
                    name: link.name,
                })
                .collect(),
            local: token.local,
            expiration_time,
            create_time: ZERO_TIME,
            hash,
            create_index: token.create_index,
            modify_index: token.modify_index,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<String>,
    datacenters: Vec<String>,
    hash: String,
    create_index: u64,
    modify_index: u64,
}

impl PolicyJson {
    fn from_policy(policy: AclPolicy, with_rules: bool) -> Self {
        let hash = content_hash(
            [
                policy.name.as_str(),
                policy.description.as_str(),
                policy.rules.as_str(),
            ]
            .into_iter()
            .chain(policy.datacenters.iter().map(String::as_str)),
        );
        PolicyJson {
            id: policy.id,
            name: policy.name,
            description: policy.description,
            rules: with_rules.then_some(policy.rules),
            datacenters: policy.datacenters,
            hash,
            create_index: policy.create_index,
            modify_index: policy.modify_index,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TokenRequest {
    #[serde(rename = "AccessorID", default, deserialize_with = "super::null_as_default")]
    accessor_id: String,
    #[serde(rename = "SecretID", default, deserialize_with = "super::null_as_default")]
    secret_id: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    description: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    policies: Vec<LinkJson>,
    #[serde(default, deserialize_with = "super::null_as_default")]
    local: bool,
    /// An RFC 3339 time.
    #[serde(rename = "ExpirationTime", default)]
    expiration_time: Option<String>,
    /// A Go duration (`"10m"`) or, as Go's `time.Duration` decodes, a number of nanoseconds.
    #[serde(rename = "ExpirationTTL", default)]
    expiration_ttl: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PolicyRequest {
    #[serde(rename = "ID", default, deserialize_with = "super::null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    description: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    rules: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    datacenters: Vec<String>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::decode_json(body).map_err(|e| ApiError::bad_request(format!("Failed to decode request body: {e}")))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "ACL not found")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) async fn bootstrap<B: Backend>(State(agent): State<Shared<B>>) -> Result<Response, ApiError> {
    agent.acls_enabled()?;
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description: BOOTSTRAP_DESCRIPTION.to_owned(),
        policies: Vec::new(),
        local: false,
        expiration_unix_ms: None,
        create_index: 0,
        modify_index: 0,
    };
    let command = Command::AclBootstrap {
        token,
        reset_index: None,
    };
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    match accepted(response)? {
        ApplyResponse::AclToken(token) => Ok(json_response(HeaderMap::new(), &TokenJson::from(token))),
        _ => Err(ApiError::internal("unexpected response to ACL bootstrap")),
    }
}

/// Resolves the policy links of a token request (by ID or by name) to stored policies, dropping
/// repeats, with Consul's words for a link that names nothing.
fn resolve_links<B: Backend>(agent: &Shared<B>, links: Vec<LinkJson>) -> Result<Vec<PolicyLink>, ApiError> {
    let mut resolved: Vec<PolicyLink> = Vec::with_capacity(links.len());
    for link in links {
        let by_id = !link.id.is_empty();
        let found = if by_id {
            agent.store.acl_policy(&link.id).map_err(ApiError::read)?.value
        } else {
            agent
                .store
                .acl_policy_by_name(&link.name)
                .map_err(ApiError::read)?
                .value
        };
        let policy = match found {
            Some(policy) => PolicyLink {
                id: policy.id,
                name: policy.name,
            },
            None if link.id == GLOBAL_MANAGEMENT_POLICY_ID => PolicyLink {
                id: link.id,
                name: String::new(),
            },
            None if by_id => {
                return Err(ApiError::internal(format!(
                    "No such ACL policy with ID {:?}",
                    link.id
                )));
            }
            None => {
                return Err(ApiError::internal(format!(
                    "No such ACL policy with name {:?}",
                    link.name
                )));
            }
        };
        if !resolved.iter().any(|known| known.id == policy.id) {
            resolved.push(policy);
        }
    }
    Ok(resolved)
}

/// IDs with this prefix are Consul's own (the anonymous token, the built-in policies).
const RESERVED_ID_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// Consul's UUID check: the 8-4-4-4-12 hex form, nothing else.
fn is_uuid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// A unix time in milliseconds as Go's JSON encoding prints a UTC time (RFC 3339, fraction
/// without trailing zeros).
fn format_unix_ms(ms: u64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_millis(time).to_string();
    match text.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => text,
    }
}

/// A duration as Go prints one (`24h0m0s`, `1m0s`, `1.5s`, `500ms`), to the millisecond.
fn go_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let text = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Reads `ExpirationTTL`: a Go duration string or a number of nanoseconds.
fn parse_expiration_ttl(value: &serde_json::Value) -> Result<Option<Duration>, ApiError> {
    let decoding = |reason: String| ApiError::bad_request(format!("Token decoding failed: {reason}"));
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) if text.is_empty() => Ok(None),
        serde_json::Value::String(text) => match text.strip_prefix('-') {
            Some(_) => Err(ApiError::internal(format!(
                "Token Expiration TTL '{text}' should be > 0"
            ))),
            None => crate::duration::parse_go_duration(text)
                .map(|ttl| (!ttl.is_zero()).then_some(ttl))
                .map_err(|e| decoding(e.to_string())),
        },
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(0) => Ok(None),
            Some(ns) if ns < 0 => Err(ApiError::internal(format!(
                "Token Expiration TTL '{}' should be > 0",
                go_duration(Duration::from_nanos(ns.unsigned_abs()))
            ))),
            Some(ns) => Ok(Some(Duration::from_nanos(ns.unsigned_abs()))),
            None => Err(decoding(format!("ExpirationTTL {number} is not a duration"))),
        },
        other => Err(decoding(format!("ExpirationTTL {other} is not a duration"))),
    }
}

/// Reads `ExpirationTime` (RFC 3339) as unix milliseconds.
fn parse_expiration_time(text: Option<&str>) -> Result<Option<u64>, ApiError> {
    // Go's zero time, which some clients send for "no expiration", is before what the parser takes.
    let Some(text) = text.filter(|t| !t.is_empty() && *t != ZERO_TIME) else {
        return Ok(None);
    };
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| ApiError::bad_request(format!("Token decoding failed: parsing time {text:?}: {e}")))?;
    let ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    Ok((ms > 0).then_some(ms))
}

/// The bounds a new token's lifetime must fall within.
#[derive(Debug, Clone, Copy)]
struct ExpirationBounds {
    min: Duration,
    max: Duration,
}

/// Consul's rules for a new token's expiration, given the time of creation: a TTL or a time but not
/// both, not in the past, within the configured bounds. Returns the expiration in unix ms.
fn new_token_expiration(
    ttl: Option<Duration>,
    time_ms: Option<u64>,
    now_ms: u64,
    bounds: ExpirationBounds,
) -> Result<Option<u64>, String> {
    let expires_ms = match (ttl, time_ms) {
        (Some(_), Some(_)) => {
            return Err("Token Expiration TTL and Expiration Time cannot both be set".into());
        }
        (Some(ttl), None) => now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        (None, Some(ms)) => ms,
        (None, None) => return Ok(None),
    };
    if expires_ms < now_ms {
        return Err("ExpirationTime cannot be before CreateTime".into());
    }
    let expires_in = Duration::from_millis(expires_ms - now_ms);
    if expires_in > bounds.max {
        return Err(format!(
            "ExpirationTime cannot be more than {} in the future (was {})",
            go_duration(bounds.max),
            go_duration(expires_in)
        ));
    }
    if expires_in < bounds.min {
        return Err(format!(
            "ExpirationTime cannot be less than {} in the future (was {})",
            go_duration(bounds.min),
            go_duration(expires_in)
        ));
    }
    Ok(Some(expires_ms))
}

/// Whether a stored token has expired at `now_ms` (strictly after its expiration time, as Consul).
pub(crate) fn token_expired(token: &AclToken, now_ms: u64) -> bool {
    token.expiration_unix_ms.is_some_and(|expires| expires < now_ms)
}

/// A token by accessor ID, unless it is missing or expired.
fn live_token<B: Backend>(
    agent: &Shared<B>,
    accessor: &str,
    now_ms: u64,
) -> Result<Option<AclToken>, ApiError> {
    let found = agent.store.acl_token(accessor).map_err(ApiError::read)?.value;
    Ok(found.filter(|token| !token_expired(token, now_ms)))
}

/// Checks an identifier a client chose for a new token (`what` is `AccessorID` or `SecretID`):
/// a UUID, not Consul's, used by no token as either identifier.
fn check_new_id<B: Backend>(agent: &Shared<B>, id: &str, what: &str) -> Result<(), ApiError> {
    let invalid = |why: String| ApiError::internal(format!("Invalid Token: {why}"));
    if !is_uuid(id) {
        return Err(invalid(format!("{what} is not a valid UUID")));
    }
    let as_accessor = agent.store.acl_token(id).map_err(ApiError::read)?.value;
    let as_secret = agent.store.acl_token_by_secret(id).map_err(ApiError::read)?.value;
    if as_accessor.is_some() || as_secret.is_some() {
        return Err(invalid(format!("{what} is already in use")));
    }
    if id.starts_with(RESERVED_ID_PREFIX) {
        return Err(invalid(format!(
            "UUIDs with the prefix {RESERVED_ID_PREFIX:?} are reserved"
        )));
    }
    Ok(())
}

async fn upsert_token<B: Backend>(agent: &Shared<B>, token: AclToken) -> Result<Response, ApiError> {
    let (response, _) = agent
        .propose(&Command::AclTokenUpsert(token))
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    match accepted(response)? {
        ApplyResponse::AclToken(token) => Ok(json_response(HeaderMap::new(), &TokenJson::from(token))),
        _ => Err(ApiError::internal("unexpected response to a token write")),
    }
}

fn expiration_bounds<B: Backend>(agent: &Shared<B>) -> ExpirationBounds {
    ExpirationBounds {
        min: agent.config.acl.token_min_expiration_ttl,
        max: agent.config.acl.token_max_expiration_ttl,
    }
}

/// `PUT /v1/acl/token`: Consul's token creation.
async fn create_token<B: Backend>(agent: &Shared<B>, request: TokenRequest) -> Result<Response, ApiError> {
    let now_ms = now_unix_ms();
    let accessor_id = if request.accessor_id.is_empty() {
        new_id()
    } else {
        check_new_id(agent, &request.accessor_id, "AccessorID")?;
        request.accessor_id
    };
    let secret_id = if request.secret_id.is_empty() {
        new_id()
    } else {
        check_new_id(agent, &request.secret_id, "SecretID")?;
        request.secret_id
    };
    let ttl = match &request.expiration_ttl {
        Some(value) => parse_expiration_ttl(value)?,
        None => None,
    };
    let time_ms = parse_expiration_time(request.expiration_time.as_deref())?;
    let expiration_unix_ms =
        new_token_expiration(ttl, time_ms, now_ms, expiration_bounds(agent)).map_err(ApiError::internal)?;
    let token = AclToken {
        accessor_id,
        secret_id,
        description: request.description,
        policies: resolve_links(agent, request.policies)?,
        local: request.local,
        expiration_unix_ms,
        create_index: 0,
        modify_index: 0,
    };
    upsert_token(agent, token).await
}

/// `PUT /v1/acl/token/:id`: Consul's update — the body replaces the token's description and links;
/// the identifiers, locality and expiration cannot change.
async fn update_token<B: Backend>(
    agent: &Shared<B>,
    request: TokenRequest,
    accessor_id: String,
) -> Result<Response, ApiError> {
    if !request.accessor_id.is_empty() && request.accessor_id != accessor_id {
        return Err(ApiError::bad_request(
            "Token Accessor ID in URL and payload do not match",
        ));
    }
    if !is_uuid(&accessor_id) {
        return Err(ApiError::internal("AccessorID is not a valid UUID"));
    }
    let now_ms = now_unix_ms();
    let Some(existing) = live_token(agent, &accessor_id, now_ms)? else {
        return Err(ApiError::internal(format!("Cannot find token {accessor_id:?}")));
    };
    let secret_id = if request.secret_id.is_empty() {
        existing.secret_id.clone()
    } else if request.secret_id != existing.secret_id {
        return Err(ApiError::internal("Changing a tokens SecretID is not permitted"));
    } else {
        request.secret_id
    };
    if request.local != existing.local {
        return Err(ApiError::internal(format!(
            "cannot toggle local mode of {accessor_id}"
        )));
    }
    let cannot_change_expiry =
        || ApiError::internal(format!("Cannot change expiration time of {accessor_id}"));
    if let Some(value) = &request.expiration_ttl
        && parse_expiration_ttl(value)?.is_some()
    {
        return Err(cannot_change_expiry());
    }
    if let Some(ms) = parse_expiration_time(request.expiration_time.as_deref())?
        && existing.expiration_unix_ms != Some(ms)
    {
        return Err(cannot_change_expiry());
    }
    let token = AclToken {
        accessor_id,
        secret_id,
        description: request.description,
        policies: resolve_links(agent, request.policies)?,
        local: existing.local,
        expiration_unix_ms: existing.expiration_unix_ms,
        create_index: 0,
        modify_index: 0,
    };
    upsert_token(agent, token).await
}

pub(crate) async fn token_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    create_token(&agent, parse_body(&body)?).await
}

pub(crate) async fn token_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    update_token(&agent, parse_body(&body)?, accessor).await
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CloneRequest {
    #[serde(default, deserialize_with = "super::null_as_default")]
    description: String,
}

/// `PUT /v1/acl/token/:id/clone`: a new token (new accessor and secret) with the original's links,
/// locality and expiration, and its description unless the body gives another.
pub(crate) async fn token_clone<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let request: CloneRequest = parse_body(&body)?;
    let original = live_token(&agent, &accessor, now_unix_ms())?.ok_or_else(not_found)?;
    let description = if request.description.is_empty() {
        original.description
    } else {
        request.description
    };
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description,
        policies: original.policies,
        local: original.local,
        expiration_unix_ms: original.expiration_unix_ms,
        create_index: 0,
        modify_index: 0,
    };
    upsert_token(&agent, token).await
}

pub(crate) async fn token_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_token(&accessor).map_err(ApiError::read)?;
    let token = found
        .value
        .filter(|token| !token_expired(token, now_unix_ms()))
        .ok_or_else(not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &TokenJson::from(token),
    ))
}

/// Whether the request names a token itself (header, bearer or `?token=`), rather than falling back
/// to the agent's default token or the anonymous token.
fn presents_token(headers: &HeaderMap, uri: &Uri) -> bool {
    let params = Params::parse(uri.query());
    let in_header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    };
    in_header("x-consul-token")
        || in_header("authorization")
        || params.get("token").is_some_and(|t| !t.is_empty())
}

pub(crate) async fn token_self<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.acls_enabled()?;
    let secret = agent.request_secret(&headers, &uri);
    // A request without a token has no token of its own to read (as in Consul, where its secret is
    // empty), even though the anonymous token's record serves its authorization.
    if secret == tribune_acl::ANONYMOUS_TOKEN_SECRET && !presents_token(&headers, &uri) {
        return Err(not_found());
    }
    let found = agent.store.acl_token_by_secret(&secret).map_err(ApiError::read)?;
    // In a secondary, a global token the primary resolved before it replicated here.
    let token = found
        .value
        .or_else(|| {
            let now = tokio::time::Instant::now();
            agent.acl_replication.remote.token(&secret, now)
        })
        .filter(|token| !token_expired(token, now_unix_ms()))
        .ok_or_else(not_found)?;
    Ok(json_response(HeaderMap::new(), &TokenJson::from(token)))
}

pub(crate) async fn token_delete<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let command = Command::AclTokenDelete {
        accessor_id: accessor,
    };
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    agent.resolver.purge();
    accepted(response)?;
    Ok(bool_response(true))
}

/// The `?policy=`, `?role=` and `?authmethod=` filters of `GET /v1/acl/tokens`.
#[derive(Debug, Default)]
struct TokenFilter {
    policy: Option<String>,
    role: Option<String>,
    auth_method: Option<String>,
}

impl TokenFilter {
    fn from_params(params: &Params) -> Self {
        let get = |name: &str| params.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
        TokenFilter {
            policy: get("policy"),
            role: get("role"),
            auth_method: get("authmethod"),
        }
    }

    fn keeps(&self, token: &AclToken) -> bool {
        let policy = self
            .policy
            .as_ref()
            .is_none_or(|id| token.policies.iter().any(|link| &link.id == id));
        // Tokens carry no role links and no auth method yet: a filter on either matches nothing.
        policy && self.role.is_none() && self.auth_method.is_none()
    }
}

pub(crate) async fn token_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Acl).await?;
    let filter = TokenFilter::from_params(&params);
    let now_ms = now_unix_ms();
    let found = agent.store.acl_tokens().map_err(ApiError::read)?;
    let tokens: Vec<TokenJson> = found
        .value
        .into_iter()
        .filter(|token| !token_expired(token, now_ms) && filter.keeps(token))
        .map(TokenJson::from)
        .collect();
    Ok(json_response(meta.with_index(found.index).headers(), &tokens))
}

async fn write_policy<B: Backend>(
    agent: &Shared<B>,
    request: PolicyRequest,
    id: Option<String>,
) -> Result<Response, ApiError> {
    PolicyRules::parse(&request.rules).map_err(|e| ApiError::bad_request(format!("Invalid rules: {e}")))?;
    let id = id
        .or_else(|| (!request.id.is_empty()).then(|| request.id.clone()))
        .unwrap_or_else(new_id);
    let policy = AclPolicy {
        id,
        name: request.name,
        description: request.description,
        rules: request.rules,
        datacenters: request.datacenters,
        create_index: 0,
        modify_index: 0,
    };
    let command = Command::AclPolicyUpsert(policy);
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    agent.resolver.purge();
    match accepted(response)? {
        ApplyResponse::AclPolicy(policy) => Ok(json_response(
            HeaderMap::new(),
            &PolicyJson::from_policy(policy, true),
        )),
        _ => Err(ApiError::internal("unexpected response to a policy write")),
    }
}

pub(crate) async fn policy_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_policy(&agent, parse_body(&body)?, None).await
}

pub(crate) async fn policy_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_policy(&agent, parse_body(&body)?, Some(id)).await
}

pub(crate) async fn policy_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_policy(&id).map_err(ApiError::read)?;
    let policy = found.value.ok_or_else(not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &PolicyJson::from_policy(policy, true),
    ))
}

pub(crate) async fn policy_read_by_name<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_policy_by_name(&name).map_err(ApiError::read)?;
    let policy = found.value.ok_or_else(not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &PolicyJson::from_policy(policy, true),
    ))
}

pub(crate) async fn policy_delete<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let (response, _) = agent
        .propose(&Command::AclPolicyDelete { id })
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    accepted(response)?;
    Ok(bool_response(true))
}

pub(crate) async fn policy_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_policies().map_err(ApiError::read)?;
    let policies: Vec<PolicyJson> = found
        .value
        .into_iter()
        .map(|policy| PolicyJson::from_policy(policy, false))
        .collect();
    Ok(json_response(meta.with_index(found.index).headers(), &policies))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: ExpirationBounds = ExpirationBounds {
        min: Duration::from_secs(60),
        max: Duration::from_secs(24 * 3600),
    };
    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_ttl_counts_from_creation_within_consul_s_bounds() {
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            new_token_expiration(Some(ten_minutes), None, NOW, BOUNDS),
            Ok(Some(NOW + 600_000))
        );
        assert_eq!(new_token_expiration(None, None, NOW, BOUNDS), Ok(None));
        assert_eq!(
            new_token_expiration(Some(Duration::from_secs(30)), None, NOW, BOUNDS),
            Err("ExpirationTime cannot be less than 1m0s in the future (was 30s)".to_owned())
        );
        assert_eq!(
            new_token_expiration(Some(Duration::from_secs(25 * 3600)), None, NOW, BOUNDS),
            Err("ExpirationTime cannot be more than 24h0m0s in the future (was 25h0m0s)".to_owned())
        );
        assert_eq!(
            new_token_expiration(Some(ten_minutes), Some(NOW + 1), NOW, BOUNDS),
            Err("Token Expiration TTL and Expiration Time cannot both be set".to_owned())
        );
        assert_eq!(
            new_token_expiration(None, Some(NOW - 1), NOW, BOUNDS),
            Err("ExpirationTime cannot be before CreateTime".to_owned())
        );
    }

    #[test]
    fn expiration_ttl_takes_go_durations_and_nanoseconds() {
        let ttl = |v: serde_json::Value| parse_expiration_ttl(&v).map_err(|e| e.status());
        assert_eq!(ttl(serde_json::json!("10m")), Ok(Some(Duration::from_secs(600))));
        assert_eq!(
            ttl(serde_json::json!(60_000_000_000u64)),
            Ok(Some(Duration::from_secs(60)))
        );
        assert_eq!(ttl(serde_json::json!("")), Ok(None));
        assert_eq!(
            ttl(serde_json::json!("-1m")),
            Err(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert_eq!(ttl(serde_json::json!("soon")), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn times_print_and_parse_as_go_does() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            parse_expiration_time(Some("1970-01-01T00:00:01.5Z")).map_err(|e| e.status()),
            Ok(Some(1_500))
        );
        assert_eq!(
            parse_expiration_time(Some(ZERO_TIME)).map_err(|e| e.status()),
            Ok(None)
        );
        assert_eq!(go_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3_660)), "1h1m0s");
    }

    #[test]
    fn tokens_expire_strictly_after_their_time() {
        let token = AclToken {
            accessor_id: "a".into(),
            secret_id: "s".into(),
            description: String::new(),
            policies: vec![PolicyLink {
                id: "p".into(),
                name: "n".into(),
            }],
            local: false,
            expiration_unix_ms: Some(NOW),
            create_index: 1,
            modify_index: 1,
        };
        assert!(!token_expired(&token, NOW));
        assert!(token_expired(&token, NOW + 1));
        let by_policy = TokenFilter {
            policy: Some("p".into()),
            ..TokenFilter::default()
        };
        assert!(by_policy.keeps(&token));
        let other = TokenFilter {
            policy: Some("q".into()),
            ..TokenFilter::default()
        };
        assert!(!other.keeps(&token));
        let by_role = TokenFilter {
            role: Some("r".into()),
            ..TokenFilter::default()
        };
        assert!(!by_role.keeps(&token));
    }
}
