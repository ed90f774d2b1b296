//! The catalog's table keys: lowercased names and IDs joined with NUL (which validation keeps out of
//! every name), so a prefix scan on `node NUL` or `service NUL` finds exactly one node's or one
//! service name's rows.

/// Consul compares catalog names without regard to case; only ASCII is folded so every server
/// derives the same bytes.
pub(crate) fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

fn join(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (at, part) in parts.iter().enumerate() {
        if at > 0 {
            out.push(0);
        }
        out.extend(part.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out
}

/// A node's key in `CatalogNodes`.
pub(crate) fn node(name: &str) -> Vec<u8> {
    join(&[name])
}

/// An instance's key in `CatalogServices`.
pub(crate) fn instance(node: &str, service_id: &str) -> Vec<u8> {
    join(&[node, service_id])
}

/// A check's key in `CatalogChecks`.
pub(crate) fn check(node: &str, check_id: &str) -> Vec<u8> {
    join(&[node, check_id])
}

/// The prefix of one node's rows in `CatalogServices` and `CatalogChecks`.
pub(crate) fn node_prefix(node: &str) -> Vec<u8> {
    join(&[node, ""])
}

/// A row of `CatalogServiceNames` (instance) or `CatalogCheckServices` (check of an instance).
pub(crate) fn service_name_row(service: &str, node: &str, id: &str) -> Vec<u8> {
    join(&[service, node, id])
}

/// The prefix of one service name's rows in `CatalogServiceNames` and `CatalogCheckServices`.
pub(crate) fn service_name_prefix(service: &str) -> Vec<u8> {
    join(&[service, ""])
}

/// The row of a service name's index in `CatalogIndexes`.
pub(crate) fn service_index(service: &str) -> Vec<u8> {
    join(&["s", service])
}

/// The row of a node's index in `CatalogIndexes`.
pub(crate) fn node_index(node: &str) -> Vec<u8> {
    join(&["n", node])
}

/// The prefix of the service-name indexes in `CatalogIndexes`.
pub(crate) const SERVICE_INDEX_PREFIX: &[u8] = b"s\0";
/// The prefix of the node indexes in `CatalogIndexes`.
pub(crate) const NODE_INDEX_PREFIX: &[u8] = b"n\0";
