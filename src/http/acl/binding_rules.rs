//! `/v1/acl/binding-rule*` and `/v1/acl/binding-rules`: what a login through an auth method is granted.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use tribune_acl::auth::BindingRule;
use tribune_kvstore::{Backend, Command, WatchScope};

use super::super::kv::bool_response;
use super::super::{ApiError, Params, Shared, accepted, json_response};
use super::auth_methods::{auth_methods_usable, stored_method};
use super::{is_uuid, new_id};
use crate::acl::convert::{binding_rule_from_store, store_binding_rule};
use crate::fsm::ApplyResponse;

fn rule_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Requested binding rule does not exist: ACL not found",
    )
}

/// The binding rules of one method (every method's when `method` is `None`), oldest first.
pub(super) fn stored_rules<B: Backend>(
    agent: &Shared<B>,
    method: Option<&str>,
) -> Result<tribune_kvstore::Indexed<Vec<BindingRule>>, ApiError> {
    let found = agent.store.acl_binding_rules().map_err(ApiError::read)?;
    let mut rules = found
        .value
        .into_iter()
        .filter(|rule| method.is_none_or(|name| rule.auth_method == name))
        .map(|rule| binding_rule_from_store(rule).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    rules.sort_by_key(|rule| rule.create_index);
    Ok(tribune_kvstore::Indexed {
        index: found.index,
        value: rules,
    })
}

async fn write_rule<B: Backend>(
    agent: &Shared<B>,
    body: &[u8],
    url_id: Option<String>,
) -> Result<Response, ApiError> {
    let mut rule: BindingRule = super::super::decode_json(body)
        .map_err(|e| ApiError::bad_request(format!("BindingRule decoding failed: {e}")))?;
    if let Some(url_id) = url_id {
        if !rule.id.is_empty() && rule.id != url_id {
            return Err(ApiError::bad_request(
                "BindingRule ID in URL and payload do not match",
            ));
        }
        rule.id = url_id;
    }
    if rule.id.is_empty() {
        rule.id = new_id();
    } else {
        if !is_uuid(&rule.id) {
            return Err(ApiError::internal(format!(
                "Binding Rule ID invalid UUID: {:?}",
                rule.id
            )));
        }
        let existing = agent
            .store
            .acl_binding_rule(&rule.id)
            .map_err(ApiError::read)?
            .value
            .ok_or_else(|| ApiError::internal(format!("cannot find binding rule {}", rule.id)))?;
        if rule.auth_method.is_empty() {
            rule.auth_method = existing.auth_method;
        } else if rule.auth_method != existing.auth_method {
            return Err(ApiError::internal(format!(
                "the AuthMethod field of an Binding Rule is immutable: {:?}",
                rule.auth_method
            )));
        }
    }
    rule.validate().map_err(|e| ApiError::internal(e.to_string()))?;
    let method = stored_method(agent, &rule.auth_method)?.value.ok_or_else(|| {
        ApiError::internal(format!(
            "Invalid Binding Rule: AuthMethod {:?} does not exist",
            rule.auth_method
        ))
    })?;
    let config = method
        .jwt_config()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    rule.validate_for(&config)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (response, _) = agent
        .propose(&Command::AclBindingRuleUpsert(store_binding_rule(&rule)))
        .await
        .map_err(ApiError::propose)?;
    match accepted(response)? {
        ApplyResponse::AclBindingRule(stored) => {
            let rule = binding_rule_from_store(stored).map_err(ApiError::internal)?;
            Ok(json_response(HeaderMap::new(), &rule))
        }
        _ => Err(ApiError::internal("unexpected response to a binding rule write")),
    }
}

pub(crate) async fn binding_rule_create<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_rule(&agent, &body, None).await
}

pub(crate) async fn binding_rule_update<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    write_rule(&agent, &body, Some(id)).await
}

pub(crate) async fn binding_rule_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let meta = agent
        .prepare_read(&Params::parse(uri.query()), WatchScope::Acl)
        .await?;
    let found = agent.store.acl_binding_rule(&id).map_err(ApiError::read)?;
    let rule = found.value.ok_or_else(rule_not_found)?;
    let rule = binding_rule_from_store(rule).map_err(ApiError::internal)?;
    Ok(json_response(meta.with_index(found.index).headers(), &rule))
}

pub(crate) async fn binding_rule_delete<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_write())?;
    let (response, _) = agent
        .propose(&Command::AclBindingRuleDelete { id })
        .await
        .map_err(ApiError::propose)?;
    accepted(response)?;
    Ok(bool_response(true))
}

/// `GET /v1/acl/binding-rules[?authmethod=<name>]`.
pub(crate) async fn binding_rule_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth_methods_usable(&agent)?;
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let params = Params::parse(uri.query());
    let meta = agent.prepare_read(&params, WatchScope::Acl).await?;
    let method = params.get("authmethod").filter(|m| !m.is_empty());
    let found = stored_rules(&agent, method)?;
    Ok(json_response(
        meta.with_index(found.index).headers(),
        &found.value,
    ))
}
