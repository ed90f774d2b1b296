//! The query parameters the catalog and health reads share: `node-meta=key:value` (repeatable, all
//! must match), `tag=` (repeatable, all must be present) and `filter=` (an expression over each
//! answer element's JSON).

use serde::Serialize;
use serde_json::Value;
use tribune_kvstore::{Node, ServiceInstance};

use super::Access;

use super::filter::{self, CONSUL_ERROR_PREFIX, FilterError};
use super::{ApiError, Params};

/// `node-meta=key:value` pairs; a node matches when it has every one.
#[derive(Debug, Default)]
pub(crate) struct NodeMetaFilter(Vec<(String, String)>);

impl NodeMetaFilter {
    pub(crate) fn parse(params: &Params) -> Result<Self, ApiError> {
        let mut pairs = Vec::new();
        for raw in params.all("node-meta") {
            // Consul splits at the first colon; a pair without one matches an empty value.
            let (key, value) = raw.split_once(':').unwrap_or((raw, ""));
            pairs.push((key.to_owned(), value.to_owned()));
        }
        Ok(NodeMetaFilter(pairs))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn matches(&self, node: &Node) -> bool {
        self.0
            .iter()
            .all(|(key, value)| node.meta.get(key).is_some_and(|v| v == value))
    }
}

/// Whether an instance carries every one of `tags` (compared without regard to case, as Consul's
/// tag filter does).
/// Whether the read names a cluster peer (`?peer=`). Tribune makes no peerings, so every named
/// peer is unknown and, as in Consul, has no instances: the answer is empty, at the usual index.
pub(crate) fn names_a_peer(params: &Params) -> bool {
    params.get("peer").is_some_and(|peer| !peer.is_empty())
}

pub(crate) fn has_tags(service: &ServiceInstance, tags: &[&str]) -> bool {
    tags.iter()
        .all(|wanted| service.tags.iter().any(|t| t.eq_ignore_ascii_case(wanted)))
}

/// Keeps the instances on nodes that match `node-meta`, that carry every one of `tags`, and whose
/// service and node the caller may read. `parts` finds an item's node and instance (the catalog and
/// health reads answer different items).
pub(crate) fn visible_instances<T>(
    access: &Access,
    items: Vec<T>,
    meta_filter: &NodeMetaFilter,
    tags: &[&str],
    parts: impl Fn(&T) -> (&Node, &ServiceInstance),
) -> Vec<T> {
    let mut items: Vec<T> = items
        .into_iter()
        .filter(|item| {
            let (node, service) = parts(item);
            meta_filter.matches(node) && has_tags(service, tags)
        })
        .collect();
    access.filter(&mut items, |a, item| {
        let (node, service) = parts(item);
        if a.service_read(&service.service).is_allowed() {
            a.node_read(&node.node)
        } else {
            tribune_acl::Decision::Deny
        }
    });
    items
}

fn filter_error(error: FilterError) -> ApiError {
    ApiError::bad_request(format!("{CONSUL_ERROR_PREFIX}{error}"))
}

fn to_json(item: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(item).map_err(|e| ApiError::internal(format!("encoding an answer: {e}")))
}

/// The items as JSON, kept when `filter` (if any) matches them.
pub(crate) fn filtered<T: Serialize>(
    expression: Option<&str>,
    items: impl IntoIterator<Item = T>,
) -> Result<Vec<Value>, ApiError> {
    let items = items.into_iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
    filter::apply(expression, items).map_err(filter_error)
}

/// Keyed items (`/v1/catalog/node/:node`'s services by ID) as a JSON object, the values kept when
/// `filter` matches them.
pub(crate) fn filtered_map<T: Serialize>(
    expression: Option<&str>,
    items: impl IntoIterator<Item = (String, T)>,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let mut map = serde_json::Map::new();
    for (key, item) in items {
        map.insert(key, to_json(item)?);
    }
    filter::apply_map(expression, map).map_err(filter_error)
}
