//! `/v1/acl/*`: bootstrap, tokens and policies.

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
        let hash = content_hash(
            [token.description.as_str(), local]
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

/// Resolves the policy links of a token request (by ID or by name) to stored policies.
fn resolve_links<B: Backend>(agent: &Shared<B>, links: Vec<LinkJson>) -> Result<Vec<PolicyLink>, ApiError> {
    links
        .into_iter()
        .map(|link| {
            let found = if !link.id.is_empty() {
                agent.store.acl_policy(&link.id).map_err(ApiError::read)?.value
            } else {
                agent
                    .store
                    .acl_policy_by_name(&link.name)
                    .map_err(ApiError::read)?
                    .value
            };
            match found {
                Some(policy) => Ok(PolicyLink {
                    id: policy.id,
                    name: policy.name,
                }),
                None if link.id == GLOBAL_MANAGEMENT_POLICY_ID => Ok(PolicyLink {
                    id: link.id,
                    name: String::new(),
                }),
                None => Err(ApiError::bad_request(format!(
                    "Cannot find policy {}",
                    if link.id.is_empty() { &link.name } else { &link.id }
                ))),
            }
        })
        .collect()
}

async fn write_token<B: Backend>(
    agent: &Shared<B>,
    request: TokenRequest,
    accessor_id: Option<String>,
) -> Result<Response, ApiError> {
    let existing = match &accessor_id {
        Some(id) => Some(
            agent
                .store
                .acl_token(id)
                .map_err(ApiError::read)?
                .value
                .ok_or_else(not_found)?,
        ),
        None => None,
    };
    let accessor_id = accessor_id
        .or_else(|| (!request.accessor_id.is_empty()).then(|| request.accessor_id.clone()))
        .unwrap_or_else(new_id);
    let secret_id = match (&existing, request.secret_id.is_empty()) {
        (Some(token), true) => token.secret_id.clone(),
        (_, false) => request.secret_id.clone(),
        (None, true) => new_id(),
    };
    let token = AclToken {
        accessor_id,
        secret_id,
        description: request.description,
        policies: resolve_links(agent, request.policies)?,
        local: request.local,
        expiration_unix_ms: None,
        create_index: 0,
        modify_index: 0,
    };
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

pub(crate) async fn token_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_token(&agent, parse_body(&body)?, None).await
}

pub(crate) async fn token_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(accessor): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_token(&agent, parse_body(&body)?, Some(accessor)).await
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
    let token = found.value.ok_or_else(not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &TokenJson::from(token),
    ))
}

pub(crate) async fn token_self<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.acls_enabled()?;
    let secret = agent.request_secret(&headers, &uri);
    let found = agent.store.acl_token_by_secret(&secret).map_err(ApiError::read)?;
    let token = found.value.ok_or_else(not_found)?;
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

pub(crate) async fn token_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_tokens().map_err(ApiError::read)?;
    let tokens: Vec<TokenJson> = found.value.into_iter().map(TokenJson::from).collect();
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
