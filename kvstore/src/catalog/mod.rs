//! Consul's catalog as replicated state: nodes, service instances and health checks, written by
//! [`Command::CatalogRegister`](crate::Command::CatalogRegister) and
//! [`Command::CatalogDeregister`](crate::Command::CatalogDeregister) and read through the
//! `Store` methods of the `read` module (`nodes`, `node`, `services`, `service_nodes`,
//! `service_health`, `node_checks`, ...), each with Consul's `X-Consul-Index`.
//!
//! Names and IDs are keys compared without regard to ASCII case, as Consul's catalog compares them;
//! records keep the spelling they were registered with. Only ASCII letters are folded, so the keys of
//! every server are the same bytes whatever Unicode tables its binary carries.
//!
//! Indexes follow Consul's: a table index each for nodes, services and checks, one index per service
//! name (`service.<name>`, which also moves when a check of an instance changes, and for every
//! instance on a node whose record or node-level checks change, so a blocked
//! `/v1/health/service/web` wakes when the node's `serfHealth` fails), one per node (`node.<name>`),
//! and the indexes of the last service and node extinctions, which reads of absent services and
//! nodes report so they never go backwards.
//!
//! What it is NOT: no filtering (tags, `passing`, `filter` expressions, node meta) — that is the HTTP
//! layer's work over these sorted results; no anti-entropy, check running or TTL timers; no ACL
//! decisions; no Connect (proxies, gateways, intentions, virtual IPs), peering or partitions.

mod apply;
mod keys;
mod model;
mod read;
mod validate;

use std::collections::BTreeSet;

pub use model::{
    CatalogOutcome, CheckDefinition, CheckRegistration, CheckServiceNode, CheckStatus, DestroyedSession,
    HealthCheck, Node, NodeServices, Registration, ServiceAddress, ServiceInstance, ServiceNode,
    ServiceRegistration, ServiceWeights,
};
pub(crate) use read::{for_each_catalog_index, node_scope_index, service_read_index};
pub use validate::{MAX_CATALOG_LIST_ITEMS, MAX_CATALOG_NAME_BYTES, MAX_CATALOG_TEXT_BYTES, MAX_META_PAIRS};
pub(crate) use validate::{validate_deregistration, validate_registration};

use crate::backend::Table;
use crate::model::StateRecord;
use crate::tables::{encode, encode_u64};

/// What a catalog command changed, for the watch hub: the scopes whose index may have moved.
#[derive(Debug, Default, Clone)]
pub(crate) struct CatalogTouched {
    /// The nodes table index moved.
    pub(crate) nodes: bool,
    /// The services table index moved.
    pub(crate) services: bool,
    /// The checks table index moved.
    pub(crate) checks: bool,
    /// Lowercased service names whose index moved (or went away).
    pub(crate) service_names: BTreeSet<String>,
    /// Lowercased node names and IDs whose index moved (or went away).
    pub(crate) node_names: BTreeSet<String>,
    /// The index reported for absent service names may have moved: every service waiter must look.
    pub(crate) absent_services: bool,
    /// The index reported for absent nodes moved: every node waiter must look.
    pub(crate) absent_nodes: bool,
}

impl CatalogTouched {
    /// Whether any catalog scope was touched.
    pub(crate) fn any(&self) -> bool {
        self.nodes
            || self.services
            || self.checks
            || !self.service_names.is_empty()
            || !self.node_names.is_empty()
            || self.absent_services
            || self.absent_nodes
    }
}

/// The staging writes that install one catalog record and its derived rows (see
/// [`crate::apply::stage_record`]).
pub(crate) fn stage_catalog_record(record: &StateRecord, put: &mut impl FnMut(Table, &[u8], Vec<u8>)) {
    match record {
        StateRecord::Node(node) => {
            if !node.id.is_empty() {
                put(
                    Table::CatalogNodeIds,
                    &keys::fold(&node.id).into_bytes(),
                    keys::fold(&node.node).into_bytes(),
                );
            }
            put(Table::CatalogNodes, &keys::node(&node.node), encode(node));
        }
        StateRecord::Service(instance) => {
            put(
                Table::CatalogServiceNames,
                &keys::service_name_row(&instance.service, &instance.node, &instance.id),
                Vec::new(),
            );
            put(
                Table::CatalogServices,
                &keys::instance(&instance.node, &instance.id),
                encode(instance),
            );
        }
        StateRecord::Check(check) => {
            if !check.service_id.is_empty() {
                put(
                    Table::CatalogCheckServices,
                    &keys::service_name_row(&check.service_name, &check.node, &check.check_id),
                    Vec::new(),
                );
            }
            put(
                Table::CatalogChecks,
                &keys::check(&check.node, &check.check_id),
                encode(check),
            );
        }
        StateRecord::ServiceIndex { service, index } => {
            put(
                Table::CatalogIndexes,
                &keys::service_index(service),
                encode_u64(*index),
            );
        }
        StateRecord::NodeIndex { node, index } => {
            put(Table::CatalogIndexes, &keys::node_index(node), encode_u64(*index));
        }
        // Not catalog records: `stage_record` handles them.
        _ => {}
    }
}
