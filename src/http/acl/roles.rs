//! `/v1/acl/role*` and `/v1/acl/roles`: named sets of policies and identities that tokens link to.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tribune_acl::{NodeIdentity, ServiceIdentity, TemplatedPolicy};
use tribune_kvstore::{AclRole, Backend, Command, WatchScope};

use super::super::kv::bool_response;
use super::super::{ApiError, Params, Shared, accepted, json_response};
use super::identities::{Identities, IdentitiesRequest};
use super::links::{LinkJson, policy_links_json, resolve_policy_links};
use super::{content_hash, is_uuid, new_id, parse_body};
use crate::fsm::ApplyResponse;
use tribune_acl::IdentityOwner;

/// A role as Consul's API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RoleJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    policies: Vec<LinkJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    service_identities: Vec<ServiceIdentity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    node_identities: Vec<NodeIdentity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    templated_policies: Vec<TemplatedPolicy>,
    hash: String,
    create_index: u64,
    modify_index: u64,
}

impl RoleJson {
    /// The role with its policy links named as the policies are named now.
    pub(super) fn new<B: Backend>(agent: &Shared<B>, role: AclRole) -> Result<Self, ApiError> {
        let identities = Identities::from_role(&role);
        let policies = policy_links_json(agent, &role.policies)?;
        let hash = content_hash(
            [role.name.as_str(), role.description.as_str()]
                .into_iter()
                .chain(role.policies.iter().map(|link| link.id.as_str()))
                .chain(identities.hash_fields().iter().map(String::as_str)),
        );
        Ok(RoleJson {
            id: role.id,
            name: role.name,
            description: role.description,
            policies,
            service_identities: identities.service_identities,
            node_identities: identities.node_identities,
            templated_policies: identities.templated_policies,
            hash,
            create_index: role.create_index,
            modify_index: role.modify_index,
        })
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RoleRequest {
    #[serde(rename = "ID", default, deserialize_with = "crate::http::null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    description: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    policies: Vec<LinkJson>,
    #[serde(flatten)]
    identities: IdentitiesRequest,
}

fn role_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Requested role does not exist: ACL not found",
    )
}

async fn write_role<B: Backend>(
    agent: &Shared<B>,
    request: RoleRequest,
    url_id: Option<String>,
) -> Result<Response, ApiError> {
    let id = match url_id {
        Some(url_id) if !request.id.is_empty() && request.id != url_id => {
            return Err(ApiError::bad_request("Role ID in URL and payload do not match"));
        }
        Some(url_id) => url_id,
        None => request.id.clone(),
    };
    if request.name.is_empty() {
        return Err(ApiError::internal("Invalid Role: no Name is set"));
    }
    if !tribune_acl::is_valid_role_name(&request.name) {
        return Err(ApiError::internal(
            "Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed",
        ));
    }
    let named = agent
        .store
        .acl_role_by_name(&request.name)
        .map_err(ApiError::read)?
        .value;
    let id = if id.is_empty() {
        if named.is_some() {
            return Err(ApiError::internal(format!(
                "Invalid Role: A Role with Name {:?} already exists",
                request.name
            )));
        }
        new_id()
    } else {
        if !is_uuid(&id) {
            return Err(ApiError::internal("Role ID invalid UUID"));
        }
        if agent.store.acl_role(&id).map_err(ApiError::read)?.value.is_none() {
            return Err(ApiError::internal(format!("cannot find role {id}")));
        }
        if named.as_ref().is_some_and(|other| other.id != id) {
            return Err(ApiError::internal(format!(
                "Invalid Role: A role with name {:?} already exists",
                request.name
            )));
        }
        id
    };
    let identities = request
        .identities
        .validate(IdentityOwner::Role, false)
        .map_err(ApiError::internal)?;
    let role = identities.into_role(AclRole {
        id,
        name: request.name,
        description: request.description,
        policies: resolve_policy_links(agent, request.policies)?,
        ..AclRole::default()
    });
    let (response, _) = agent
        .propose(&Command::AclRoleUpsert(role))
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    match accepted(response)? {
        ApplyResponse::AclRole(role) => Ok(json_response(HeaderMap::new(), &RoleJson::new(agent, role)?)),
        _ => Err(ApiError::internal("unexpected response to a role write")),
    }
}

pub(crate) async fn role_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_role(&agent, parse_body(&body)?, None).await
}

pub(crate) async fn role_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_role(&agent, parse_body(&body)?, Some(id)).await
}

async fn read_role<B: Backend>(
    agent: &Shared<B>,
    headers: &HeaderMap,
    uri: &Uri,
    lookup: impl Fn(&Shared<B>) -> Result<tribune_kvstore::Indexed<Option<AclRole>>, ApiError>,
) -> Result<Response, ApiError> {
    agent.authorize(headers, uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = lookup(agent)?;
    let role = found.value.ok_or_else(role_not_found)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &RoleJson::new(agent, role)?,
    ))
}

pub(crate) async fn role_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    read_role(&agent, &headers, &uri, |agent| {
        agent.store.acl_role(&id).map_err(ApiError::read)
    })
    .await
}

pub(crate) async fn role_read_by_name<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    read_role(&agent, &headers, &uri, |agent| {
        agent.store.acl_role_by_name(&name).map_err(ApiError::read)
    })
    .await
}

pub(crate) async fn role_delete<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let (response, _) = agent
        .propose(&Command::AclRoleDelete { id })
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    accepted(response)?;
    Ok(bool_response(true))
}

/// `GET /v1/acl/roles[?policy=<id>]`.
pub(crate) async fn role_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Acl).await?;
    let policy = params.get("policy").filter(|p| !p.is_empty()).map(str::to_owned);
    let found = agent.store.acl_roles().map_err(ApiError::read)?;
    let roles = found
        .value
        .into_iter()
        .filter(|role| {
            policy
                .as_ref()
                .is_none_or(|id| role.policies.iter().any(|link| &link.id == id))
        })
        .map(|role| RoleJson::new(&agent, role))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(meta.with_index(found.index).headers(), &roles))
}
