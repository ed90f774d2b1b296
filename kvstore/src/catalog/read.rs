//! The catalog's reads: each takes one consistent view and returns the data with the index Consul
//! reports for it (never 0), in Consul's order (node name, then service or check ID, compared
//! without regard to ASCII case).

use std::collections::BTreeMap;

use super::keys;
use super::model::{
    CheckServiceNode, CheckStatus, HealthCheck, Node, NodeServices, ServiceInstance, ServiceNode,
};
use crate::backend::{Backend, ReadView, Table};
use crate::error::{CorruptRecord, ReadError};
use crate::model::{Indexed, IndexedTable, StateRecord};
use crate::store::Store;
use crate::tables;

fn corrupt(table: Table, key: &[u8], reason: &str) -> ReadError {
    ReadError::Corrupt(CorruptRecord {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    })
}

fn table_index<V: ReadView + ?Sized>(view: &V, table: IndexedTable) -> Result<u64, ReadError> {
    Ok(tables::table_index(view, table)?.max(1))
}

/// The index of reads of one service name (Consul's `maxIndexForService`): the name's own index
/// while it has instances; else the last service extinction; else, before any extinction, the
/// highest of the nodes, services and checks indexes. Catalog and health reads of a service both
/// report it, so a blocking reader of either compares against the same number.
pub(crate) fn service_read_index<V: ReadView + ?Sized>(view: &V, service: &str) -> Result<u64, ReadError> {
    if let Some(index) = tables::get_u64(view, Table::CatalogIndexes, &keys::service_index(service))? {
        return Ok(index.max(1));
    }
    let extinction = tables::table_index(view, IndexedTable::ServiceExtinction)?;
    if extinction > 0 {
        return Ok(extinction);
    }
    let mut index = 1;
    for table in [IndexedTable::Nodes, IndexedTable::Services, IndexedTable::Checks] {
        index = index.max(tables::table_index(view, table)?);
    }
    Ok(index)
}

/// A node by name, or else by ID (as Consul's node reads accept either).
fn resolve_node<V: ReadView + ?Sized>(view: &V, name_or_id: &str) -> Result<Option<Node>, ReadError> {
    if let Some(node) = tables::get(view, Table::CatalogNodes, &keys::node(name_or_id))? {
        return Ok(Some(node));
    }
    match tables::get_string(view, Table::CatalogNodeIds, keys::fold(name_or_id).as_bytes())? {
        Some(owner) => tables::get(view, Table::CatalogNodes, owner.as_bytes()),
        None => Ok(None),
    }
}

/// The index of reads of one node (Consul's `node.<name>`), or the last node extinction when the
/// node is not registered.
fn node_read_index<V: ReadView + ?Sized>(view: &V, node: Option<&Node>) -> Result<u64, ReadError> {
    let index = match node {
        Some(node) => match tables::get_u64(view, Table::CatalogIndexes, &keys::node_index(&node.node))? {
            Some(index) => index,
            None => tables::table_index(view, IndexedTable::Nodes)?,
        },
        None => tables::table_index(view, IndexedTable::NodeExtinction)?,
    };
    Ok(index.max(1))
}

/// The scope index of a blocking read of one node, by name or ID.
pub(crate) fn node_scope_index<V: ReadView + ?Sized>(view: &V, name_or_id: &str) -> Result<u64, ReadError> {
    let node = resolve_node(view, name_or_id)?;
    node_read_index(view, node.as_ref())
}

/// Rows of a `service name NUL node NUL id` table under one service name: each row's tail is the
/// key of the record in the instance or check table.
fn rows_under<V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    service: &str,
) -> Result<Vec<Vec<u8>>, ReadError> {
    let prefix = keys::service_name_prefix(service);
    let mut rows = Vec::new();
    view.scan_prefix(table, &prefix, &mut |row, _| {
        if let Some(tail) = row.get(prefix.len()..) {
            rows.push(tail.to_vec());
        }
        true
    })?;
    Ok(rows)
}

/// Every instance of a service name, by node then ID.
fn instances_of<V: ReadView + ?Sized>(view: &V, service: &str) -> Result<Vec<ServiceInstance>, ReadError> {
    let mut out = Vec::new();
    for key in rows_under(view, Table::CatalogServiceNames, service)? {
        match tables::get(view, Table::CatalogServices, &key)? {
            Some(instance) => out.push(instance),
            None => {
                return Err(corrupt(
                    Table::CatalogServiceNames,
                    &key,
                    "names a missing instance",
                ));
            }
        }
    }
    Ok(out)
}

/// The node of an instance, read once per node.
fn node_of<'c, V: ReadView + ?Sized>(
    view: &V,
    cache: &'c mut BTreeMap<Vec<u8>, Node>,
    instance: &ServiceInstance,
) -> Result<&'c Node, ReadError> {
    let key = keys::node(&instance.node);
    if !cache.contains_key(&key) {
        let Some(node) = tables::get::<Node, _>(view, Table::CatalogNodes, &key)? else {
            return Err(corrupt(
                Table::CatalogServices,
                &keys::instance(&instance.node, &instance.id),
                "instance of an unregistered node",
            ));
        };
        cache.insert(key.clone(), node);
    }
    cache
        .get(&key)
        .ok_or_else(|| corrupt(Table::CatalogNodes, &key, "vanished from the read cache"))
}

/// Calls `emit` with the per-service-name and per-node index records, in key order (for exports).
pub(crate) fn for_each_catalog_index<V, E>(
    view: &V,
    emit: &mut impl FnMut(StateRecord) -> Result<(), E>,
) -> Result<(), E>
where
    V: ReadView + ?Sized,
    E: From<ReadError>,
{
    let mut rows = Vec::new();
    view.scan_prefix(Table::CatalogIndexes, b"", &mut |key, value| {
        rows.push((key.to_vec(), value.to_vec()));
        true
    })
    .map_err(ReadError::from)?;
    for (key, value) in rows {
        let index = tables::decode_u64(Table::CatalogIndexes, &key, &value)?;
        let name = |prefix: &[u8]| {
            key.get(prefix.len()..)
                .and_then(|tail| String::from_utf8(tail.to_vec()).ok())
                .ok_or_else(|| corrupt(Table::CatalogIndexes, &key, "name is not UTF-8"))
        };
        let record = if key.starts_with(keys::SERVICE_INDEX_PREFIX) {
            StateRecord::ServiceIndex {
                service: name(keys::SERVICE_INDEX_PREFIX)?,
                index,
            }
        } else if key.starts_with(keys::NODE_INDEX_PREFIX) {
            StateRecord::NodeIndex {
                node: name(keys::NODE_INDEX_PREFIX)?,
                index,
            }
        } else {
            return Err(corrupt(Table::CatalogIndexes, &key, "neither a service nor a node index").into());
        };
        emit(record)?;
    }
    Ok(())
}

impl<B: Backend> Store<B> {
    /// Every node (`/v1/catalog/nodes`), by name; the index is the nodes table's.
    pub fn nodes(&self) -> Result<Indexed<Vec<Node>>, ReadError> {
        let view = self.backend.view()?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Nodes)?,
            value: tables::collect(&view, Table::CatalogNodes, b"")?,
        })
    }

    /// One node, by name or else by ID, with its instances by ID (`/v1/catalog/node/:node`,
    /// `/v1/catalog/node-services/:node`). The index is the node's own, or the last node extinction
    /// when there is no such node.
    pub fn node(&self, name_or_id: &str) -> Result<Indexed<Option<NodeServices>>, ReadError> {
        let view = self.backend.view()?;
        let node = resolve_node(&view, name_or_id)?;
        let index = node_read_index(&view, node.as_ref())?;
        let value = match node {
            Some(node) => {
                let services =
                    tables::collect(&view, Table::CatalogServices, &keys::node_prefix(&node.node))?;
                Some(NodeServices { node, services })
            }
            None => None,
        };
        Ok(Indexed { index, value })
    }

    /// The instances on one node (by name or ID), by ID; empty when there is no such node. The index
    /// is [`Store::node`]'s.
    pub fn node_services(&self, name_or_id: &str) -> Result<Indexed<Vec<ServiceInstance>>, ReadError> {
        let read = self.node(name_or_id)?;
        Ok(Indexed {
            index: read.index,
            value: read.value.map(|n| n.services).unwrap_or_default(),
        })
    }

    /// One instance on one node (by node name); the index is the services table's (Consul's
    /// `NodeService`).
    pub fn node_service(
        &self,
        node: &str,
        service_id: &str,
    ) -> Result<Indexed<Option<ServiceInstance>>, ReadError> {
        let view = self.backend.view()?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Services)?,
            value: tables::get(&view, Table::CatalogServices, &keys::instance(node, service_id))?,
        })
    }

    /// Every service name with the union of its instances' tags, sorted (`/v1/catalog/services`).
    /// Names are grouped as registered (Consul's map is keyed by the exact name). The index is the
    /// services table's.
    pub fn services(&self) -> Result<Indexed<BTreeMap<String, Vec<String>>>, ReadError> {
        let view = self.backend.view()?;
        let mut tags: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        tables::scan(&view, Table::CatalogServices, b"", |instance: ServiceInstance| {
            tags.entry(instance.service).or_default().extend(instance.tags);
            true
        })?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Services)?,
            value: tags
                .into_iter()
                .map(|(name, tags)| (name, tags.into_iter().collect()))
                .collect(),
        })
    }

    /// Every instance of a service with its node (`/v1/catalog/service/:name`), by node then ID.
    /// The index is the service's (see [`crate::WatchScope::Service`]).
    pub fn service_nodes(&self, service: &str) -> Result<Indexed<Vec<ServiceNode>>, ReadError> {
        let view = self.backend.view()?;
        let mut nodes = BTreeMap::new();
        let mut out = Vec::new();
        for instance in instances_of(&view, service)? {
            let node = node_of(&view, &mut nodes, &instance)?.clone();
            out.push(ServiceNode {
                node,
                service: instance,
            });
        }
        Ok(Indexed {
            index: service_read_index(&view, service)?,
            value: out,
        })
    }

    /// Every instance of a service with its node and the checks deciding its health
    /// (`/v1/health/service/:name` before any filtering), by node then ID; each instance's checks are
    /// its node's node-level checks, then its own, each by check ID. The index is the service's.
    pub fn service_health(&self, service: &str) -> Result<Indexed<Vec<CheckServiceNode>>, ReadError> {
        let view = self.backend.view()?;
        let mut nodes = BTreeMap::new();
        let mut node_checks: BTreeMap<Vec<u8>, Vec<HealthCheck>> = BTreeMap::new();
        let mut out = Vec::new();
        for instance in instances_of(&view, service)? {
            let node = node_of(&view, &mut nodes, &instance)?.clone();
            let prefix = keys::node_prefix(&node.node);
            if !node_checks.contains_key(&prefix) {
                let checks = tables::collect(&view, Table::CatalogChecks, &prefix)?;
                node_checks.insert(prefix.clone(), checks);
            }
            let on_node = node_checks.get(&prefix).map(Vec::as_slice).unwrap_or_default();
            let mut checks: Vec<HealthCheck> = on_node
                .iter()
                .filter(|check| check.service_id.is_empty())
                .cloned()
                .collect();
            checks.extend(
                on_node
                    .iter()
                    .filter(|check| check.service_id.eq_ignore_ascii_case(&instance.id))
                    .cloned(),
            );
            out.push(CheckServiceNode {
                node,
                service: instance,
                checks,
            });
        }
        Ok(Indexed {
            index: service_read_index(&view, service)?,
            value: out,
        })
    }

    /// One check of one node; the index is the checks table's.
    pub fn node_check(&self, node: &str, check_id: &str) -> Result<Indexed<Option<HealthCheck>>, ReadError> {
        let view = self.backend.view()?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Checks)?,
            value: tables::get(&view, Table::CatalogChecks, &keys::check(node, check_id))?,
        })
    }

    /// Every check of a node (`/v1/health/node/:node`), by check ID; the index is the checks table's.
    pub fn node_checks(&self, node: &str) -> Result<Indexed<Vec<HealthCheck>>, ReadError> {
        let view = self.backend.view()?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Checks)?,
            value: tables::collect(&view, Table::CatalogChecks, &keys::node_prefix(node))?,
        })
    }

    /// Every check of the instances of a service (`/v1/health/checks/:service`), by node then check
    /// ID; the index is the checks table's.
    pub fn service_checks(&self, service: &str) -> Result<Indexed<Vec<HealthCheck>>, ReadError> {
        let view = self.backend.view()?;
        let mut out = Vec::new();
        for key in rows_under(&view, Table::CatalogCheckServices, service)? {
            match tables::get(&view, Table::CatalogChecks, &key)? {
                Some(check) => out.push(check),
                None => {
                    return Err(corrupt(
                        Table::CatalogCheckServices,
                        &key,
                        "names a missing check",
                    ));
                }
            }
        }
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Checks)?,
            value: out,
        })
    }

    /// Every check in a state, or every check for `None` (`/v1/health/state/:state`, `any`), by node
    /// then check ID; the index is the checks table's.
    pub fn checks_in_state(
        &self,
        status: Option<CheckStatus>,
    ) -> Result<Indexed<Vec<HealthCheck>>, ReadError> {
        let view = self.backend.view()?;
        let mut out = Vec::new();
        tables::scan(&view, Table::CatalogChecks, b"", |check: HealthCheck| {
            if status.is_none_or(|status| check.status == status) {
                out.push(check);
            }
            true
        })?;
        Ok(Indexed {
            index: table_index(&view, IndexedTable::Checks)?,
            value: out,
        })
    }
}
