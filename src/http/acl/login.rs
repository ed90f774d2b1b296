//! `POST /v1/acl/login` and `POST /v1/acl/logout`: trade a credential an auth method accepts for a
//! token bound by its binding rules, and give such a token back.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use tribune_acl::auth::{Bindings, PERMISSION_DENIED, TokenLocality, bind, verify_jwt};
use tribune_kvstore::{AclToken, Backend, Command, PolicyLink, RoleLink};

use super::super::kv::bool_response;
use super::super::{ApiError, Shared, accepted};
use super::auth_methods::{auth_methods_usable, stored_method};
use super::binding_rules::stored_rules;
use super::identities::Identities;
use super::time::now_unix_ms;
use super::tokens::{presents_token, upsert_token};
use super::{new_id, not_found};

/// The description of every token a login mints, followed by its `Meta` as JSON when there is any.
const LOGIN_DESCRIPTION: &str = "token created via login";

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct LoginRequest {
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    auth_method: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    bearer_token: String,
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    meta: BTreeMap<String, String>,
}

fn permission_denied() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, PERMISSION_DENIED)
}

/// The bound roles and policies that exist, as links by ID: a binding rule naming a role or policy
/// nobody created grants nothing, as in Consul.
fn existing_links<B: Backend>(
    agent: &Shared<B>,
    bindings: &Bindings,
) -> Result<(Vec<PolicyLink>, Vec<RoleLink>), ApiError> {
    let mut policies: Vec<PolicyLink> = Vec::new();
    for link in &bindings.policies {
        if let Some(policy) = agent
            .store
            .acl_policy_by_name(&link.name)
            .map_err(ApiError::read)?
            .value
            && !policies.iter().any(|known| known.id == policy.id)
        {
            policies.push(PolicyLink {
                id: policy.id,
                name: policy.name,
            });
        }
    }
    let mut roles: Vec<RoleLink> = Vec::new();
    for link in &bindings.roles {
        if let Some(role) = agent
            .store
            .acl_role_by_name(&link.name)
            .map_err(ApiError::read)?
            .value
            && !roles.iter().any(|known| known.id == role.id)
        {
            roles.push(RoleLink {
                id: role.id,
                name: role.name,
            });
        }
    }
    Ok((policies, roles))
}

pub(crate) async fn login<B: Backend>(
    State(agent): State<Shared<B>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    let request: LoginRequest = super::super::decode_json(&body)
        .map_err(|e| ApiError::bad_request(format!("Failed to decode request body: {e}")))?;
    if request.auth_method.is_empty() {
        return Err(ApiError::internal(
            "Invalid Login request: Missing auth parameters",
        ));
    }
    let method = stored_method(&agent, &request.auth_method)?
        .value
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("ACL not found: auth method {:?} not found", request.auth_method),
            )
        })?;
    let config = method
        .jwt_config()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let identity = verify_jwt(&config, &request.bearer_token, SystemTime::now())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let rules = stored_rules(&agent, Some(&method.name))?.value;
    let bindings =
        bind(&rules, &identity, &agent.config.datacenter).map_err(|e| ApiError::internal(e.to_string()))?;
    let (policies, roles) = existing_links(&agent, &bindings)?;
    let identities = Identities {
        service_identities: bindings.service_identities,
        node_identities: bindings.node_identities,
        templated_policies: bindings.templated_policies,
    };
    if identities.is_empty() && policies.is_empty() && roles.is_empty() {
        return Err(permission_denied());
    }
    let local = match method.token_locality {
        TokenLocality::Local => true,
        TokenLocality::Global if agent.config.datacenter == agent.config.primary_datacenter => false,
        TokenLocality::Global => {
            return Err(ApiError::internal(
                "creating global tokens via auth methods is only permitted in the primary datacenter",
            ));
        }
    };
    let description = if request.meta.is_empty() {
        LOGIN_DESCRIPTION.to_owned()
    } else {
        let meta = serde_json::to_string(&request.meta).map_err(|e| ApiError::internal(e.to_string()))?;
        format!("{LOGIN_DESCRIPTION}: {meta}")
    };
    let now_ms = now_unix_ms();
    let expiration_unix_ms = (!method.max_token_ttl.is_zero())
        .then(|| now_ms.saturating_add(u64::try_from(method.max_token_ttl.as_millis()).unwrap_or(u64::MAX)));
    let token = identities.into_token(AclToken {
        accessor_id: new_id(),
        secret_id: new_id(),
        description,
        policies,
        roles,
        local,
        auth_method: method.name,
        expiration_unix_ms,
        create_time_unix_ms: Some(now_ms),
        ..AclToken::default()
    });
    upsert_token(&agent, token).await
}

/// Only a token a login minted can log out; in a secondary, a global one is deleted in the primary
/// (the dispatch carries the request there).
pub(crate) async fn logout<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    if !presents_token(&headers, &uri) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Supplied token does not exist",
        ));
    }
    let secret = agent.request_secret(&headers, &uri);
    let token = agent
        .store
        .acl_token_by_secret(&secret)
        .map_err(ApiError::read)?
        .value
        .ok_or_else(not_found)?;
    if token.auth_method.is_empty() {
        return Err(permission_denied());
    }
    let (response, _) = agent
        .propose(&Command::AclTokenDelete {
            accessor_id: token.accessor_id,
        })
        .await
        .map_err(ApiError::propose)?;
    agent.resolver.purge();
    accepted(response)?;
    Ok(bool_response(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_bodies_read_as_consul_sends_them() {
        let request: LoginRequest =
            serde_json::from_str(r#"{"AuthMethod":"jwt","BearerToken":"a.b.c","Meta":{"pod":"web-1"}}"#)
                .unwrap();
        assert_eq!(request.auth_method, "jwt");
        assert_eq!(request.meta.get("pod").map(String::as_str), Some("web-1"));
        let bare: LoginRequest = serde_json::from_str(r#"{"AuthMethod":"jwt","Meta":null}"#).unwrap();
        assert!(bare.meta.is_empty() && bare.bearer_token.is_empty());
    }
}
