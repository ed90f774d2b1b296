//! `/v1/acl/templated-policies`, `/v1/acl/templated-policy/name/:name` and
//! `/v1/acl/templated-policy/preview/:name`: the built-in policy templates and what one synthesizes.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use tribune_acl::{
    TemplateDefinition, TemplateError, TemplateVariables, builtin_template, builtin_templates,
};
use tribune_kvstore::Backend;

use super::super::{ApiError, Shared, json_response};
use super::content_hash;

/// A synthesized policy as Consul's preview shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PreviewJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    description: String,
    rules: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datacenters: Vec<String>,
    hash: String,
    create_index: u64,
    modify_index: u64,
}

fn template_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Invalid templated policy Name: {name}"),
    )
}

pub(crate) async fn templated_policy_list<B: Backend>(
    State(agent): State<Shared<B>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let templates: BTreeMap<&str, &TemplateDefinition> =
        builtin_templates().iter().map(|t| (t.name, t)).collect();
    Ok(json_response(HeaderMap::new(), &templates))
}

pub(crate) async fn templated_policy_read<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    let template = builtin_template(&name).ok_or_else(|| template_not_found(&name))?;
    Ok(json_response(HeaderMap::new(), template))
}

/// The body is the template's variables (`{"Name": "api"}`); templates without variables take none.
pub(crate) async fn templated_policy_preview<B: Backend>(
    State(agent): State<Shared<B>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    agent.authorize(&headers, &uri, |a| a.acl_read())?;
    if builtin_template(&name).is_none() {
        return Err(template_not_found(&name));
    }
    let variables: Option<TemplateVariables> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        super::super::decode_json(&body)
            .map_err(|e| ApiError::bad_request(format!("Failed to decode request body: {e}")))?
    };
    let policy = tribune_acl::preview(&name, variables).map_err(|e| match e {
        TemplateError::UnknownTemplate { .. } => template_not_found(&name),
        other => ApiError::bad_request(format!("validation error for templated policy: {name}: {other}")),
    })?;
    let hash = content_hash([policy.name.as_str(), policy.rules.as_str()]);
    Ok(json_response(
        HeaderMap::new(),
        &PreviewJson {
            id: policy.id,
            name: policy.name,
            description: policy.description,
            rules: policy.rules,
            datacenters: policy.datacenters,
            hash,
            create_index: 0,
            modify_index: 0,
        },
    ))
}
