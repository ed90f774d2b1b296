//! `/v1/acl/auth-method*` and `/v1/acl/auth-methods`: how a login proves who it is. Auth methods live
//! in the datacenter they were written in, as Consul's do; only the primary may mint global tokens.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use tribune_acl::auth::AuthMethod;
use tribune_kvstore::{Backend, Command, WatchScope};

use super::super::kv::bool_response;
use super::super::{ApiError, Params, Shared, accepted, json_response};
use crate::acl::convert::{auth_method_from_store, store_auth_method};
use crate::fsm::ApplyResponse;

/// Consul's answer when a secondary without token replication is asked about auth methods: the
/// tokens a login mints would be local tokens it cannot hold.
pub(super) const REQUIRES_TOKEN_REPLICATION: &str =
    "Token replication is required for auth methods to function";

/// Auth methods need a datacenter that can hold its own tokens: the primary, or a secondary that
/// replicates tokens.
pub(super) fn auth_methods_usable<B: Backend>(agent: &Shared<B>) -> Result<(), ApiError> {
    agent.acls_enabled()?;
    let primary = agent.config.datacenter == agent.config.primary_datacenter;
    if primary || agent.config.acl.enable_token_replication {
        Ok(())
    } else {
        Err(ApiError::internal(REQUIRES_TOKEN_REPLICATION))
    }
}

fn method_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Requested auth method does not exist: ACL not found",
    )
}

/// A stored method, or a 500 naming what is damaged.
pub(super) fn stored_method<B: Backend>(
    agent: &Shared<B>,
    name: &str,
) -> Result<tribune_kvstore::Indexed<Option<AuthMethod>>, ApiError> {
    let found = agent.store.acl_auth_method(name).map_err(ApiError::read)?;
    let value = match found.value {
        Some(method) => Some(auth_method_from_store(method).map_err(ApiError::internal)?),
        None => None,
    };
    Ok(tribune_kvstore::Indexed {
        index: found.index,
        value,
    })
}

/// The list entry: a method without its configuration.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct MethodStub {
    name: String,
    #[serde(rename = "Type")]
    method_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    display_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(rename = "MaxTokenTTL", skip_serializing_if = "String::is_empty")]
    max_token_ttl: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    token_locality: String,
    create_index: u64,
    modify_index: u64,
}

async fn write_method<B: Backend>(
    agent: &Shared<B>,
    body: &[u8],
    url_name: Option<String>,
) -> Result<Response, ApiError> {
    let mut method: AuthMethod = super::super::decode_json(body)
        .map_err(|e| ApiError::bad_request(format!("AuthMethod decoding failed: {e}")))?;
    if let Some(url_name) = url_name {
        if !method.name.is_empty() && method.name != url_name {
            return Err(ApiError::bad_request(
                "AuthMethod Name in URL and payload do not match",
            ));
        }
        method.name = url_name;
    }
    if !method.name.is_empty()
        && let Some(existing) = stored_method(agent, &method.name)?.value
    {
        if method.method_type.is_empty() {
            method.method_type = existing.method_type;
        } else if method.method_type != existing.method_type {
            return Err(ApiError::internal(
                "the Type field of an Auth Method is immutable",
            ));
        }
    }
    let acl = &agent.config.acl;
    method
        .validate_with_ttl_bounds(acl.token_min_expiration_ttl, acl.token_max_expiration_ttl)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    method
        .validate_locality(agent.config.datacenter == agent.config.primary_datacenter)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (response, _) = agent
        .propose(&Command::AclAuthMethodUpsert(store_auth_method(&method)))
        .await
        .map_err(ApiError::propose)?;
    match accepted(response)? {
        ApplyResponse::AclAuthMethod(stored) => {
            let method = auth_method_from_store(stored).map_err(ApiError::internal)?;
            Ok(json_response(HeaderMap::new(), &method))
        }
        _ => Err(ApiError::internal("unexpected response to an auth method write")),
    }
}

pub(crate) async fn auth_method_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_method(&agent, &body, None).await
}

pub(crate) async fn auth_method_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_method(&agent, &body, Some(name)).await
}

pub(crate) async fn auth_method_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = stored_method(&agent, &name)?;
    let method = found.value.ok_or_else(method_not_found)?;
    Ok(json_response(meta.with_index(found.index).headers(), &method))
}

/// Deleting a method also deletes its binding rules and the tokens its logins minted (the store
/// does all three in one command). A missing method is not an error, as in Consul.
pub(crate) async fn auth_method_delete<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let (response, _) = agent
        .propose(&Command::AclAuthMethodDelete { name })
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    accepted(response)?;
    Ok(bool_response(true))
}

pub(crate) async fn auth_method_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_auth_methods().map_err(ApiError::read)?;
    let stubs: Vec<MethodStub> = found
        .value
        .into_iter()
        .map(|method| MethodStub {
            max_token_ttl: if method.max_token_ttl_ms == 0 {
                String::new()
            } else {
                tribune_acl::auth::format_go_duration(std::time::Duration::from_millis(
                    method.max_token_ttl_ms,
                ))
            },
            token_locality: if method.token_locality == "local" {
                String::new()
            } else {
                method.token_locality
            },
            name: method.name,
            method_type: method.method_type,
            display_name: method.display_name,
            description: method.description,
            create_index: method.create_index,
            modify_index: method.modify_index,
        })
        .collect();
    Ok(json_response(meta.with_index(found.index).headers(), &stubs))
}
