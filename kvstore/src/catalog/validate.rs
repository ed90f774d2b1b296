//! Input limits of the catalog commands, checked before the state is looked at (see
//! [`crate::Command::validate`]). Limits that Consul has are Consul's (metadata); the others only
//! bound what one log entry may carry.

use std::collections::BTreeMap;

use crate::catalog::model::{
    CheckDefinition, CheckRegistration, Registration, ServiceAddress, ServiceRegistration,
};
use crate::command::{validate_name, validate_text};
use crate::error::ApplyError;

/// Longest node name, node or service address, service name, kind, tag, instance or check ID, check
/// name or type accepted.
pub const MAX_CATALOG_NAME_BYTES: usize = 256;
/// Most entries a list or map of a registration may hold (tags, tagged addresses, checks, headers).
pub const MAX_CATALOG_LIST_ITEMS: usize = 512;
/// Longest free text of a check (notes, output, an HTTP check's URL or body).
pub const MAX_CATALOG_TEXT_BYTES: usize = 64 * 1024;
/// Most metadata pairs a node or a service may carry (Consul's `metaMaxKeyPairs`).
pub const MAX_META_PAIRS: usize = 64;
/// Longest metadata key (Consul's `metaKeyMaxLength`).
const MAX_META_KEY_BYTES: usize = 128;
/// Longest metadata value (Consul's `metaValueMaxLength`).
const MAX_META_VALUE_BYTES: usize = 512;
/// The metadata key prefix Consul keeps for itself: agents may put such keys on their node, nobody
/// on a service.
const RESERVED_META_PREFIX: &str = "consul-";

fn invalid(field: &'static str, reason: impl Into<String>) -> ApplyError {
    ApplyError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn validate_count(field: &'static str, count: usize) -> Result<(), ApplyError> {
    if count > MAX_CATALOG_LIST_ITEMS {
        return Err(invalid(
            field,
            format!("has {count} entries, over the limit of {MAX_CATALOG_LIST_ITEMS}"),
        ));
    }
    Ok(())
}

/// Consul requires node IDs to be UUIDs (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits).
fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn validate_meta(
    field: &'static str,
    meta: &BTreeMap<String, String>,
    allow_reserved: bool,
) -> Result<(), ApplyError> {
    if meta.len() > MAX_META_PAIRS {
        return Err(invalid(
            field,
            format!("has {} pairs, over the limit of {MAX_META_PAIRS}", meta.len()),
        ));
    }
    for (key, value) in meta {
        let reason = if key.is_empty() {
            "has an empty key".to_owned()
        } else if key.len() > MAX_META_KEY_BYTES {
            format!("key {key:?} is longer than {MAX_META_KEY_BYTES} bytes")
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            format!("key {key:?} may only contain letters, digits, '-' and '_'")
        } else if !allow_reserved && key.starts_with(RESERVED_META_PREFIX) {
            format!("key {key:?} uses the reserved prefix {RESERVED_META_PREFIX:?}")
        } else if value.len() > MAX_META_VALUE_BYTES {
            format!("value of key {key:?} is longer than {MAX_META_VALUE_BYTES} bytes")
        } else if value.contains('\0') {
            format!("value of key {key:?} contains a NUL character")
        } else {
            continue;
        };
        return Err(invalid(field, reason));
    }
    Ok(())
}

fn validate_node_addresses(
    field: &'static str,
    addresses: &BTreeMap<String, String>,
) -> Result<(), ApplyError> {
    validate_count(field, addresses.len())?;
    for (purpose, address) in addresses {
        validate_name(field, purpose, MAX_CATALOG_NAME_BYTES)?;
        validate_text(field, address, MAX_CATALOG_NAME_BYTES)?;
    }
    Ok(())
}

fn validate_service_addresses(
    field: &'static str,
    addresses: &BTreeMap<String, ServiceAddress>,
) -> Result<(), ApplyError> {
    validate_count(field, addresses.len())?;
    for (purpose, address) in addresses {
        validate_name(field, purpose, MAX_CATALOG_NAME_BYTES)?;
        validate_text(field, &address.address, MAX_CATALOG_NAME_BYTES)?;
    }
    Ok(())
}

fn validate_service(service: &ServiceRegistration) -> Result<(), ApplyError> {
    validate_name("service.service", &service.service, MAX_CATALOG_NAME_BYTES)?;
    validate_name("service.id", service.effective_id(), MAX_CATALOG_NAME_BYTES)?;
    validate_text("service.kind", &service.kind, MAX_CATALOG_NAME_BYTES)?;
    validate_count("service.tags", service.tags.len())?;
    for tag in &service.tags {
        validate_text("service.tags", tag, MAX_CATALOG_NAME_BYTES)?;
    }
    validate_text("service.address", &service.address, MAX_CATALOG_NAME_BYTES)?;
    validate_service_addresses("service.tagged_addresses", &service.tagged_addresses)?;
    validate_meta("service.meta", &service.meta, false)
}

fn validate_definition(definition: &CheckDefinition) -> Result<(), ApplyError> {
    validate_text("check.definition.http", &definition.http, MAX_CATALOG_TEXT_BYTES)?;
    validate_text(
        "check.definition.method",
        &definition.method,
        MAX_CATALOG_NAME_BYTES,
    )?;
    validate_count("check.definition.header", definition.header.len())?;
    for (name, values) in &definition.header {
        validate_name("check.definition.header", name, MAX_CATALOG_NAME_BYTES)?;
        validate_count("check.definition.header", values.len())?;
        for value in values {
            validate_text("check.definition.header", value, MAX_CATALOG_TEXT_BYTES)?;
        }
    }
    validate_text("check.definition.body", &definition.body, MAX_CATALOG_TEXT_BYTES)?;
    validate_text(
        "check.definition.tls_server_name",
        &definition.tls_server_name,
        MAX_CATALOG_NAME_BYTES,
    )?;
    validate_text("check.definition.tcp", &definition.tcp, MAX_CATALOG_NAME_BYTES)?;
    validate_text("check.definition.udp", &definition.udp, MAX_CATALOG_NAME_BYTES)?;
    validate_text("check.definition.grpc", &definition.grpc, MAX_CATALOG_NAME_BYTES)
}

fn validate_check(check: &CheckRegistration) -> Result<(), ApplyError> {
    validate_text("check.node", &check.node, MAX_CATALOG_NAME_BYTES)?;
    if check.effective_id().is_empty() {
        return Err(invalid("check.check_id", "is empty, and so is check.name"));
    }
    validate_name("check.check_id", check.effective_id(), MAX_CATALOG_NAME_BYTES)?;
    validate_text("check.name", &check.name, MAX_CATALOG_NAME_BYTES)?;
    validate_text("check.notes", &check.notes, MAX_CATALOG_TEXT_BYTES)?;
    validate_text("check.output", &check.output, MAX_CATALOG_TEXT_BYTES)?;
    validate_text("check.service_id", &check.service_id, MAX_CATALOG_NAME_BYTES)?;
    validate_text("check.check_type", &check.check_type, MAX_CATALOG_NAME_BYTES)?;
    validate_definition(&check.definition)
}

/// Checks a registration's input: the node named (and addressed unless `skip_node_update`), a node
/// ID that is a UUID, bounded names, lists and texts, no NUL anywhere a key is made from, and
/// metadata within Consul's limits.
pub(crate) fn validate_registration(registration: &Registration) -> Result<(), ApplyError> {
    validate_name("registration.node", &registration.node, MAX_CATALOG_NAME_BYTES)?;
    if !registration.id.is_empty() && !is_uuid(&registration.id) {
        return Err(invalid(
            "registration.id",
            format!("{:?} is not a UUID", registration.id),
        ));
    }
    if registration.address.is_empty() && !registration.skip_node_update {
        return Err(invalid(
            "registration.address",
            "is empty, which only skip_node_update allows",
        ));
    }
    validate_text(
        "registration.address",
        &registration.address,
        MAX_CATALOG_NAME_BYTES,
    )?;
    validate_node_addresses("registration.tagged_addresses", &registration.tagged_addresses)?;
    validate_meta("registration.node_meta", &registration.node_meta, true)?;
    if let Some(service) = &registration.service {
        validate_service(service)?;
    }
    validate_count("registration.checks", registration.checks.len())?;
    registration.checks.iter().try_for_each(validate_check)
}

/// Checks a deregistration's input: a node name, and bounded IDs.
pub(crate) fn validate_deregistration(
    node: &str,
    service_id: Option<&str>,
    check_id: Option<&str>,
) -> Result<(), ApplyError> {
    validate_name("deregistration.node", node, MAX_CATALOG_NAME_BYTES)?;
    if let Some(id) = service_id {
        validate_name("deregistration.service_id", id, MAX_CATALOG_NAME_BYTES)?;
    }
    if let Some(id) = check_id {
        validate_name("deregistration.check_id", id, MAX_CATALOG_NAME_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_recognised() {
        assert!(is_uuid("2f1a3e6c-0b4d-4f55-9c1e-8a8f0e2b7d10"));
        assert!(is_uuid("2F1A3E6C-0B4D-4F55-9C1E-8A8F0E2B7D10"));
        assert!(!is_uuid("2f1a3e6c0b4d4f559c1e8a8f0e2b7d10"));
        assert!(!is_uuid("2f1a3e6c-0b4d-4f55-9c1e-8a8f0e2b7d1g"));
        assert!(!is_uuid(""));
    }

    #[test]
    fn metadata_follows_consuls_rules() {
        let meta = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(validate_meta("m", &meta("rack", "r1"), false).is_ok());
        assert!(validate_meta("m", &meta("consul-network-segment", ""), true).is_ok());
        let err = validate_meta("m", &meta("consul-x", "1"), false).unwrap_err();
        assert!(err.to_string().contains("reserved prefix"), "{err}");
        assert!(validate_meta("m", &meta("a b", "1"), true).is_err());
        assert!(validate_meta("m", &meta("", "1"), true).is_err());
        assert!(validate_meta("m", &meta("k", &"v".repeat(513)), true).is_err());
        let many: BTreeMap<String, String> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_meta("m", &many, true).is_err());
    }
}
