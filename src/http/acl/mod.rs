//! `/v1/acl/*`: bootstrap, tokens, policies, and what they share (IDs, link JSON, hashes, request
//! bodies). Each kind of ACL object has its own file.

mod auth_methods;
mod binding_rules;
mod identities;
mod links;
mod login;
mod policies;
mod roles;
mod templated;
mod time;
mod tokens;

use axum::http::StatusCode;

use super::ApiError;

pub(crate) use auth_methods::{
    auth_method_create, auth_method_delete, auth_method_list, auth_method_read, auth_method_update,
};
pub(crate) use binding_rules::{
    binding_rule_create, binding_rule_delete, binding_rule_list, binding_rule_read, binding_rule_update,
};
pub(crate) use login::{login, logout};
pub(crate) use policies::{
    policy_create, policy_delete, policy_list, policy_read, policy_read_by_name, policy_update,
};
pub(crate) use roles::{role_create, role_delete, role_list, role_read, role_read_by_name, role_update};
pub(crate) use templated::{templated_policy_list, templated_policy_preview, templated_policy_read};
pub(crate) use tokens::{
    bootstrap, token_clone, token_create, token_delete, token_list, token_read, token_self, token_update,
};

/// Consul's `Hash` of a token or policy: a digest of the fields a client sets, base64-encoded, so
/// that clients can tell whether two reads differ. (Consul uses BLAKE2b over its own field order;
/// clients only compare hashes, never recompute them.)
pub(super) fn content_hash<'a>(fields: impl IntoIterator<Item = &'a str>) -> String {
    use base64::Engine as _;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for field in fields {
        // Length-prefixed, so that moving bytes between fields changes the digest.
        context.update(&(field.len() as u64).to_le_bytes());
        context.update(field.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(context.finish())
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::decode_json(body).map_err(|e| ApiError::bad_request(format!("Failed to decode request body: {e}")))
}

pub(super) fn not_found() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "ACL not found")
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// IDs with this prefix are Consul's own (the anonymous token, the built-in policies).
pub(super) const RESERVED_ID_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// Consul's UUID check: the 8-4-4-4-12 hex form, nothing else.
pub(super) fn is_uuid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}
