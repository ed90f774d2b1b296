//! `/v1/acl/bootstrap` and `/v1/acl/token*`.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tribune_kvstore::{AclToken, Backend, Command, WatchScope};

use super::super::kv::bool_response;
use super::super::{ApiError, Params, Shared, accepted, json_response};
use super::identities::{Identities, IdentitiesRequest};
use super::links::{LinkJson, policy_links_json, resolve_policy_links, resolve_role_links, role_links_json};
use super::time::{
    ExpirationBounds, ZERO_TIME, format_unix_ms, new_token_expiration, now_unix_ms, parse_expiration_time,
    parse_expiration_ttl,
};
use super::{RESERVED_ID_PREFIX, content_hash, is_uuid, new_id, not_found, parse_body};
use crate::fsm::ApplyResponse;
use tribune_acl::IdentityOwner;

/// The description Consul gives the bootstrap token.
const BOOTSTRAP_DESCRIPTION: &str = "Bootstrap Token (Global Management)";

/// A token as Consul's API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct TokenJson {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID")]
    secret_id: String,
    description: String,
    policies: Vec<LinkJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<LinkJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service_identities: Vec<tribune_acl::ServiceIdentity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    node_identities: Vec<tribune_acl::NodeIdentity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    templated_policies: Vec<tribune_acl::TemplatedPolicy>,
    local: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    auth_method: String,
    #[serde(rename = "ExpirationTime", skip_serializing_if = "Option::is_none")]
    expiration_time: Option<String>,
    /// Go's zero time for tokens written before creation times were recorded, as Consul prints a
    /// time never set.
    create_time: String,
    hash: String,
    create_index: u64,
    modify_index: u64,
}

impl TokenJson {
    /// The token with its links named as the linked policies and roles are named now.
    pub(super) fn new<B: Backend>(agent: &Shared<B>, token: AclToken) -> Result<Self, ApiError> {
        let local = if token.local { "local" } else { "global" };
        let expiration_time = token.expiration_unix_ms.map(format_unix_ms);
        let identities = Identities::from_token(&token);
        let hash = content_hash(
            [
                token.description.as_str(),
                local,
                expiration_time.as_deref().unwrap_or_default(),
                token.auth_method.as_str(),
            ]
            .into_iter()
            .chain(token.policies.iter().map(|link| link.id.as_str()))
            .chain(token.roles.iter().map(|link| link.id.as_str()))
            .chain(identities.hash_fields().iter().map(String::as_str)),
        );
        Ok(TokenJson {
            policies: policy_links_json(agent, &token.policies)?,
            roles: role_links_json(agent, &token.roles)?,
            accessor_id: token.accessor_id,
            secret_id: token.secret_id,
            description: token.description,
            service_identities: identities.service_identities,
            node_identities: identities.node_identities,
            templated_policies: identities.templated_policies,
            local: token.local,
            auth_method: token.auth_method,
            expiration_time,
            create_time: token
                .create_time_unix_ms
                .map_or_else(|| ZERO_TIME.to_owned(), format_unix_ms),
            hash,
            create_index: token.create_index,
            modify_index: token.modify_index,
        })
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct TokenRequest {
    #[serde(
        rename = "AccessorID",
        default,
        deserialize_with = "crate::http::null_as_default"
    )]
    accessor_id: String,
    #[serde(
        rename = "SecretID",
        default,
        deserialize_with = "crate::http::null_as_default"
    )]
    secret_id: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    description: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    policies: Vec<LinkJson>,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    roles: Vec<LinkJson>,
    #[serde(flatten)]
    identities: IdentitiesRequest,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    local: bool,
    /// An RFC 3339 time.
    #[serde(rename = "ExpirationTime", default)]
    expiration_time: Option<String>,
    /// A Go duration (`"10m"`) or, as Go's `time.Duration` decodes, a number of nanoseconds.
    #[serde(rename = "ExpirationTTL", default)]
    expiration_ttl: Option<serde_json::Value>,
}

pub(crate) async fn bootstrap<B: Backend>(State(agent): State<Shared<B>>) -> Result<Response, ApiError> {
    agent.acls_enabled()?;
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description: BOOTSTRAP_DESCRIPTION.to_owned(),
        create_time_unix_ms: Some(now_unix_ms()),
        ..AclToken::default()
    };
    let command = Command::AclBootstrap {
        token,
        reset_index: None,
    };
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    match accepted(response)? {
        ApplyResponse::AclToken(token) => {
            Ok(json_response(HeaderMap::new(), &TokenJson::new(&agent, token)?))
        }
        _ => Err(ApiError::internal("unexpected response to ACL bootstrap")),
    }
}

/// Whether a stored token has expired at `now` (strictly after its expiration time, as Consul). The
/// full-precision clock, as the resolver reads it: a token a request was just refused for as expired
/// never reads back as live in the same millisecond.
fn token_expired(token: &AclToken, now: SystemTime) -> bool {
    token
        .expiration_unix_ms
        .is_some_and(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms) < now)
}

/// A token by accessor ID, unless it is missing or expired.
fn live_token<B: Backend>(
    agent: &Shared<B>,
    accessor: &str,
    now: SystemTime,
) -> Result<Option<AclToken>, ApiError> {
    let found = agent.store.acl_token(accessor).map_err(ApiError::read)?.value;
    Ok(found.filter(|token| !token_expired(token, now)))
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

pub(super) async fn upsert_token<B: Backend>(
    agent: &Shared<B>,
    token: AclToken,
) -> Result<Response, ApiError> {
    let (response, _) = agent
        .propose(&Command::AclTokenUpsert(token))
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    match accepted(response)? {
        ApplyResponse::AclToken(token) => Ok(json_response(HeaderMap::new(), &TokenJson::new(agent, token)?)),
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
    let identities = request
        .identities
        .validate(IdentityOwner::Token, request.local)
        .map_err(ApiError::internal)?;
    let token = identities.into_token(AclToken {
        accessor_id,
        secret_id,
        description: request.description,
        policies: resolve_policy_links(agent, request.policies)?,
        roles: resolve_role_links(agent, request.roles)?,
        local: request.local,
        expiration_unix_ms,
        create_time_unix_ms: Some(now_ms),
        ..AclToken::default()
    });
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
    let Some(existing) = live_token(agent, &accessor_id, SystemTime::now())? else {
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
    let identities = request
        .identities
        .validate(IdentityOwner::Token, existing.local)
        .map_err(ApiError::internal)?;
    let token = identities.into_token(AclToken {
        accessor_id,
        secret_id,
        description: request.description,
        policies: resolve_policy_links(agent, request.policies)?,
        roles: resolve_role_links(agent, request.roles)?,
        local: existing.local,
        auth_method: existing.auth_method,
        expiration_unix_ms: existing.expiration_unix_ms,
        create_time_unix_ms: existing.create_time_unix_ms,
        ..AclToken::default()
    });
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
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
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
    let original = live_token(&agent, &accessor, SystemTime::now())?.ok_or_else(not_found)?;
    let description = if request.description.is_empty() {
        original.description
    } else {
        request.description
    };
    let token = AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description,
        create_time_unix_ms: Some(now_unix_ms()),
        create_index: 0,
        modify_index: 0,
        ..original
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
        .filter(|token| !token_expired(token, SystemTime::now()))
        .ok_or_else(not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &TokenJson::new(&agent, token)?,
    ))
}

/// Whether the request names a token itself (header, bearer or `?token=`), rather than falling back
/// to the agent's default token or the anonymous token.
pub(super) fn presents_token(headers: &HeaderMap, uri: &Uri) -> bool {
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
        .filter(|token| !token_expired(token, SystemTime::now()))
        .ok_or_else(not_found)?;
    Ok(json_response(HeaderMap::new(), &TokenJson::new(&agent, token)?))
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
        let role = self
            .role
            .as_ref()
            .is_none_or(|id| token.roles.iter().any(|link| &link.id == id));
        let auth_method = self
            .auth_method
            .as_ref()
            .is_none_or(|name| &token.auth_method == name);
        policy && role && auth_method
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
    let now = SystemTime::now();
    let found = agent.store.acl_tokens().map_err(ApiError::read)?;
    let tokens: Vec<TokenJson> = found
        .value
        .into_iter()
        .filter(|token| !token_expired(token, now) && filter.keeps(token))
        .map(|token| TokenJson::new(&agent, token))
        .collect::<Result<_, _>>()?;
    Ok(json_response(meta.with_index(found.index).headers(), &tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn tokens_expire_strictly_after_their_time() {
        let token = AclToken {
            accessor_id: "a".into(),
            secret_id: "s".into(),
            description: String::new(),
            policies: vec![tribune_kvstore::PolicyLink {
                id: "p".into(),
                name: "n".into(),
            }],
            roles: vec![tribune_kvstore::RoleLink {
                id: "r".into(),
                name: "rn".into(),
            }],
            auth_method: "jwt".into(),
            expiration_unix_ms: Some(NOW),
            create_index: 1,
            modify_index: 1,
            ..AclToken::default()
        };
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert!(!token_expired(&token, at(NOW)));
        assert!(token_expired(&token, at(NOW) + Duration::from_micros(1)));
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
            auth_method: Some("jwt".into()),
            ..TokenFilter::default()
        };
        assert!(by_role.keeps(&token));
        let other_method = TokenFilter {
            auth_method: Some("k8s".into()),
            ..TokenFilter::default()
        };
        assert!(!other_method.keeps(&token));
    }
}
