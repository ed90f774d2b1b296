//! `/v1/acl/policy*` and `/v1/acl/policies`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tribune_acl::PolicyRules;
use tribune_kvstore::{AclPolicy, Backend, Command, WatchScope};

use super::super::kv::bool_response;
use super::super::{ApiError, Params, Shared, accepted, json_response};
use super::{content_hash, is_uuid, new_id, parse_body};
use crate::fsm::ApplyResponse;

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
struct PolicyRequest {
    #[serde(rename = "ID", default, deserialize_with = "crate::http::null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    description: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    rules: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    datacenters: Vec<String>,
}

/// Consul answers a policy it does not hold with a 404 (py-consul reads it as "no such policy").
fn policy_not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "Requested policy does not exist: ACL not found",
    )
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
    // Consul's policy table is indexed by UUID: anything else fails the lookup itself.
    if !is_uuid(&id) {
        return Err(ApiError::internal(
            "failed acl policy lookup: index error: UUID must be 36 characters",
        ));
    }
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_policy(&id).map_err(ApiError::read)?;
    let policy = found.value.ok_or_else(policy_not_found)?;
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
    let policy = found.value.ok_or_else(policy_not_found)?;
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
