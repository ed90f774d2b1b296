//! Catalog writes inside a command's [`Tx`]: registration (node, then service, then checks, in
//! Consul's order), the three deregistrations, the indexes each of them moves, and the sessions that
//! go with a failed or removed check or a removed node.
//!
//! Every read here goes through the transaction, so a later step of the same command sees the
//! earlier steps' writes, and a refused step leaves nothing behind (the overlay is dropped).

use std::collections::BTreeSet;

use super::keys;
use super::model::{
    CatalogOutcome, CheckRegistration, CheckStatus, DestroyedSession, HealthCheck, Node, Registration,
    ServiceInstance, ServiceRegistration,
};
use crate::apply::Tx;
use crate::backend::{ReadView, Table};
use crate::error::{ApplyError, ReadError};
use crate::model::{IndexedTable, Session};
use crate::tables::{self, encode, encode_u64};

/// The ID of the check Consul's servers keep for every agent's gossip health (`serfHealth`): a node
/// whose check is not critical keeps its name against a newcomer with another ID.
pub(crate) const SERF_CHECK_ID: &str = "serfHealth";

/// Whether two records are the same but for their indexes (an unchanged record is not rewritten).
fn same_node(a: &Node, b: &Node) -> bool {
    a.id == b.id
        && a.node == b.node
        && a.address == b.address
        && a.tagged_addresses == b.tagged_addresses
        && a.meta == b.meta
}

fn same_instance(a: &ServiceInstance, b: &ServiceInstance) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    &a == b
}

fn same_check(a: &HealthCheck, b: &HealthCheck) -> bool {
    let mut a = a.clone();
    a.create_index = b.create_index;
    a.modify_index = b.modify_index;
    &a == b
}

impl<V: ReadView + ?Sized> Tx<'_, V> {
    /// Consul's `ensureRegistrationTxn`; the rules are on [`crate::Command::CatalogRegister`].
    pub(crate) fn catalog_register(
        &mut self,
        registration: &Registration,
    ) -> Result<CatalogOutcome, ApplyError> {
        let mut out = CatalogOutcome::default();
        let node = self.catalog_node_ensure(registration)?;
        if let Some(service) = &registration.service {
            self.catalog_service_ensure(&node, service)?;
        }
        for check in &registration.checks {
            self.catalog_check_ensure(&node, check, &mut out)?;
        }
        self.catalog_note_absent_services()?;
        Ok(out)
    }

    /// Consul's catalog deregistration: an instance (with its checks), else a check, else the node
    /// with everything on it. Nothing registered, nothing done.
    pub(crate) fn catalog_deregister(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> Result<CatalogOutcome, ApplyError> {
        let mut out = CatalogOutcome::default();
        let Some(node) = tables::get::<Node, _>(self, Table::CatalogNodes, &keys::node(node))? else {
            return Ok(out);
        };
        match (service_id, check_id) {
            (Some(id), _) => self.catalog_service_remove(&node, id, &mut out)?,
            (None, Some(id)) => self.catalog_check_remove(&node, id, &mut out)?,
            (None, None) => self.catalog_node_remove(&node, &mut out)?,
        }
        self.catalog_note_absent_services()?;
        Ok(out)
    }

    // ---- indexes ------------------------------------------------------------------------------

    fn catalog_bump(&mut self, table: IndexedTable) {
        self.bump(table);
        let touched = &mut self.touched.catalog;
        match table {
            IndexedTable::Nodes => touched.nodes = true,
            IndexedTable::Services => touched.services = true,
            IndexedTable::Checks => touched.checks = true,
            IndexedTable::ServiceExtinction => touched.absent_services = true,
            IndexedTable::NodeExtinction => touched.absent_nodes = true,
            _ => {}
        }
    }

    fn catalog_service_exists(&self, service: &str) -> Result<bool, ReadError> {
        let mut found = false;
        self.scan_prefix(
            Table::CatalogServiceNames,
            &keys::service_name_prefix(service),
            &mut |_, _| {
                found = true;
                false
            },
        )?;
        Ok(found)
    }

    /// Moves a service name's index, if the name has instances: the row exists exactly while it has
    /// some, which is how a read tells a present service from an absent one.
    fn catalog_service_index(&mut self, service: &str) -> Result<(), ReadError> {
        if self.catalog_service_exists(service)? {
            self.put(
                Table::CatalogIndexes,
                keys::service_index(service),
                encode_u64(self.index),
            );
            self.touched.catalog.service_names.insert(keys::fold(service));
        }
        Ok(())
    }

    /// After an instance of `service` went away (or was renamed): the name's index moves, or, if it
    /// was the last instance, goes away and the service extinction index moves instead.
    fn catalog_service_left(&mut self, service: &str) -> Result<(), ReadError> {
        if self.catalog_service_exists(service)? {
            return self.catalog_service_index(service);
        }
        self.delete(Table::CatalogIndexes, keys::service_index(service));
        self.touched.catalog.service_names.insert(keys::fold(service));
        self.catalog_bump(IndexedTable::ServiceExtinction);
        Ok(())
    }

    /// Moves the index of every service with an instance on the node: health results carry the node
    /// record and its node-level checks.
    fn catalog_bump_node_services(&mut self, node: &str) -> Result<(), ReadError> {
        let mut names = BTreeSet::new();
        tables::scan(
            self,
            Table::CatalogServices,
            &keys::node_prefix(node),
            |instance: ServiceInstance| {
                names.insert(instance.service);
                true
            },
        )?;
        for name in names {
            self.catalog_service_index(&name)?;
        }
        Ok(())
    }

    /// Moves a node's own index (its record or its instances changed).
    fn catalog_node_index(&mut self, node: &Node) {
        self.put(
            Table::CatalogIndexes,
            keys::node_index(&node.node),
            encode_u64(self.index),
        );
        self.catalog_touch_node(node);
    }

    /// Node readers may have asked by name or by ID.
    fn catalog_touch_node(&mut self, node: &Node) {
        let names = &mut self.touched.catalog.node_names;
        names.insert(keys::fold(&node.node));
        if !node.id.is_empty() {
            names.insert(keys::fold(&node.id));
        }
    }

    /// A read of an absent service reports the extinction index, or before any extinction the
    /// highest of the three catalog tables' indexes: in that case any catalog write may move it.
    fn catalog_note_absent_services(&mut self) -> Result<(), ReadError> {
        let touched = &self.touched.catalog;
        if (touched.nodes || touched.services || touched.checks)
            && tables::table_index(self, IndexedTable::ServiceExtinction)? == 0
        {
            self.touched.catalog.absent_services = true;
        }
        Ok(())
    }

    // ---- nodes --------------------------------------------------------------------------------

    /// Whether a node's `serfHealth` check exists and is not critical.
    fn catalog_node_healthy(&self, node: &str) -> Result<bool, ReadError> {
        let serf =
            tables::get::<HealthCheck, _>(self, Table::CatalogChecks, &keys::check(node, SERF_CHECK_ID))?;
        Ok(serf.is_some_and(|check| check.status != CheckStatus::Critical))
    }

    /// Creates or updates the node (Consul's `ensureNodeTxn`) and returns the record as it now stands.
    fn catalog_node_ensure(&mut self, registration: &Registration) -> Result<Node, ApplyError> {
        let key = keys::node(&registration.node);
        let existing = tables::get::<Node, _>(self, Table::CatalogNodes, &key)?;
        if registration.skip_node_update
            && let Some(existing) = &existing
        {
            return Ok(existing.clone());
        }
        if !registration.id.is_empty() {
            let id_key = keys::fold(&registration.id).into_bytes();
            if let Some(owner) = tables::get_string(self, Table::CatalogNodeIds, &id_key)?
                && owner.as_bytes() != key.as_slice()
            {
                let node = tables::get::<Node, _>(self, Table::CatalogNodes, owner.as_bytes())?
                    .map_or(owner, |n| n.node);
                return Err(ApplyError::NodeIdInUse {
                    id: registration.id.clone(),
                    node,
                });
            }
            if let Some(existing) = &existing
                && !existing.id.is_empty()
                && !existing.id.eq_ignore_ascii_case(&registration.id)
                && self.catalog_node_healthy(&existing.node)?
            {
                return Err(ApplyError::NodeNameReserved {
                    name: registration.node.clone(),
                    id: existing.id.clone(),
                    existing: existing.node.clone(),
                    address: existing.address.clone(),
                });
            }
        }
        let node = Node {
            id: registration.id.clone(),
            node: registration.node.clone(),
            address: registration.address.clone(),
            tagged_addresses: registration.tagged_addresses.clone(),
            meta: registration.node_meta.clone(),
            create_index: existing.as_ref().map_or(self.index, |e| e.create_index),
            modify_index: self.index,
        };
        if let Some(existing) = &existing {
            if same_node(existing, &node) {
                return Ok(existing.clone());
            }
            if !existing.id.is_empty() && !existing.id.eq_ignore_ascii_case(&node.id) {
                let old_id = keys::fold(&existing.id).into_bytes();
                if tables::get_string(self, Table::CatalogNodeIds, &old_id)?
                    .as_deref()
                    .map(str::as_bytes)
                    == Some(key.as_slice())
                {
                    self.delete(Table::CatalogNodeIds, old_id);
                }
                // Readers that asked by the old ID lose the node.
                self.catalog_touch_node(existing);
            }
        }
        if !node.id.is_empty() {
            self.put(
                Table::CatalogNodeIds,
                keys::fold(&node.id).into_bytes(),
                key.clone(),
            );
        }
        self.put(Table::CatalogNodes, key, encode(&node));
        self.catalog_bump(IndexedTable::Nodes);
        self.catalog_node_index(&node);
        self.catalog_bump_node_services(&node.node)?;
        Ok(node)
    }

    /// Removes the node, its instances and checks, and its sessions (Consul's `deleteNodeTxn`).
    fn catalog_node_remove(&mut self, node: &Node, out: &mut CatalogOutcome) -> Result<(), ApplyError> {
        let prefix = keys::node_prefix(&node.node);
        let instances: Vec<ServiceInstance> = tables::collect(self, Table::CatalogServices, &prefix)?;
        for instance in &instances {
            self.catalog_service_remove(node, &instance.id, out)?;
        }
        let checks: Vec<HealthCheck> = tables::collect(self, Table::CatalogChecks, &prefix)?;
        for check in &checks {
            self.catalog_check_remove(node, &check.check_id, out)?;
        }
        let key = keys::node(&node.node);
        if !node.id.is_empty() {
            let id_key = keys::fold(&node.id).into_bytes();
            if tables::get_string(self, Table::CatalogNodeIds, &id_key)?
                .as_deref()
                .map(str::as_bytes)
                == Some(key.as_slice())
            {
                self.delete(Table::CatalogNodeIds, id_key);
            }
        }
        self.delete(Table::CatalogNodes, key);
        self.delete(Table::CatalogIndexes, keys::node_index(&node.node));
        self.catalog_touch_node(node);
        self.catalog_bump(IndexedTable::Nodes);
        self.catalog_bump(IndexedTable::NodeExtinction);
        // Sessions die with their node, whatever checks they are bound to.
        let mut sessions = Vec::new();
        tables::scan(self, Table::Sessions, b"", |session: Session| {
            if session.node.eq_ignore_ascii_case(&node.node) {
                sessions.push(session.id);
            }
            true
        })?;
        self.catalog_destroy_sessions(sessions, out)
    }

    // ---- services -----------------------------------------------------------------------------

    /// Creates or updates an instance on the node (Consul's `ensureServiceTxn`).
    fn catalog_service_ensure(
        &mut self,
        node: &Node,
        service: &ServiceRegistration,
    ) -> Result<(), ApplyError> {
        let id = service.effective_id();
        let key = keys::instance(&node.node, id);
        let existing = tables::get::<ServiceInstance, _>(self, Table::CatalogServices, &key)?;
        let instance = ServiceInstance {
            node: node.node.clone(),
            id: id.to_owned(),
            service: service.service.clone(),
            kind: service.kind.clone(),
            tags: service.tags.clone(),
            address: service.address.clone(),
            tagged_addresses: service.tagged_addresses.clone(),
            meta: service.meta.clone(),
            port: service.port,
            // Consul stores its default for missing or invalid weights rather than refusing them.
            weights: service
                .weights
                .filter(|weights| weights.passing >= 1)
                .unwrap_or_default(),
            enable_tag_override: service.enable_tag_override,
            create_index: existing.as_ref().map_or(self.index, |e| e.create_index),
            modify_index: self.index,
        };
        if let Some(existing) = &existing {
            if same_instance(existing, &instance) {
                return Ok(());
            }
            self.delete(
                Table::CatalogServiceNames,
                keys::service_name_row(&existing.service, &existing.node, &existing.id),
            );
            if !existing.service.eq_ignore_ascii_case(&instance.service) {
                // Renamed: readers of the old name lose an instance.
                self.catalog_service_left(&existing.service)?;
            }
        }
        self.put(
            Table::CatalogServiceNames,
            keys::service_name_row(&instance.service, &instance.node, &instance.id),
            Vec::new(),
        );
        self.put(Table::CatalogServices, key, encode(&instance));
        self.catalog_bump(IndexedTable::Services);
        self.catalog_bump(IndexedTable::Nodes);
        self.catalog_service_index(&instance.service)?;
        self.catalog_node_index(node);
        Ok(())
    }

    /// Removes an instance and its checks (Consul's `deleteServiceTxn`).
    fn catalog_service_remove(
        &mut self,
        node: &Node,
        service_id: &str,
        out: &mut CatalogOutcome,
    ) -> Result<(), ApplyError> {
        let key = keys::instance(&node.node, service_id);
        let Some(instance) = tables::get::<ServiceInstance, _>(self, Table::CatalogServices, &key)? else {
            return Ok(());
        };
        // The checks go first, while the service still has this instance and so its index.
        let mut checks = Vec::new();
        tables::scan(
            self,
            Table::CatalogChecks,
            &keys::node_prefix(&node.node),
            |check: HealthCheck| {
                if check.service_id.eq_ignore_ascii_case(&instance.id) {
                    checks.push(check.check_id);
                }
                true
            },
        )?;
        for check_id in &checks {
            self.catalog_check_remove(node, check_id, out)?;
        }
        self.catalog_bump(IndexedTable::Checks);
        self.delete(
            Table::CatalogServiceNames,
            keys::service_name_row(&instance.service, &instance.node, &instance.id),
        );
        self.delete(Table::CatalogServices, key);
        self.catalog_bump(IndexedTable::Services);
        self.catalog_bump(IndexedTable::Nodes);
        self.catalog_node_index(node);
        self.catalog_service_left(&instance.service)?;
        Ok(())
    }

    // ---- checks -------------------------------------------------------------------------------

    /// Moves the indexes of the services whose health a check decides: its instance's service, or
    /// every service on the node for a node-level check.
    fn catalog_check_touches(&mut self, check: &HealthCheck) -> Result<(), ReadError> {
        if check.service_id.is_empty() {
            self.catalog_bump_node_services(&check.node)
        } else {
            self.catalog_service_index(&check.service_name)
        }
    }

    /// Creates or updates a check (Consul's `ensureCheckTxn`), then destroys the sessions bound to it
    /// if it is critical.
    fn catalog_check_ensure(
        &mut self,
        node: &Node,
        registration: &CheckRegistration,
        out: &mut CatalogOutcome,
    ) -> Result<(), ApplyError> {
        if !registration.node.is_empty() && !registration.node.eq_ignore_ascii_case(&node.node) {
            return Err(ApplyError::CheckNodeMismatch {
                check_node: registration.node.clone(),
                node: node.node.clone(),
            });
        }
        let id = registration.effective_id();
        let key = keys::check(&node.node, id);
        let existing = tables::get::<HealthCheck, _>(self, Table::CatalogChecks, &key)?;
        let (service_id, service_name, service_tags) = if registration.service_id.is_empty() {
            (String::new(), String::new(), Vec::new())
        } else {
            let instance_key = keys::instance(&node.node, &registration.service_id);
            match tables::get::<ServiceInstance, _>(self, Table::CatalogServices, &instance_key)? {
                Some(instance) => (instance.id, instance.service, instance.tags),
                None => {
                    return Err(ApplyError::MissingService {
                        node: node.node.clone(),
                        service_id: registration.service_id.clone(),
                    });
                }
            }
        };
        let check = HealthCheck {
            node: node.node.clone(),
            check_id: id.to_owned(),
            name: registration.name.clone(),
            status: registration.status.unwrap_or(CheckStatus::Critical),
            notes: registration.notes.clone(),
            output: registration.output.clone(),
            service_id,
            service_name,
            service_tags,
            check_type: registration.check_type.clone(),
            definition: registration.definition.clone(),
            create_index: existing.as_ref().map_or(self.index, |e| e.create_index),
            modify_index: self.index,
        };
        let changed = existing.as_ref().is_none_or(|e| !same_check(e, &check));
        if changed {
            if let Some(existing) = &existing {
                // What the check decided before may not be what it decides now.
                self.catalog_check_touches(existing)?;
                if !existing.service_id.is_empty() {
                    self.delete(
                        Table::CatalogCheckServices,
                        keys::service_name_row(&existing.service_name, &existing.node, &existing.check_id),
                    );
                }
            }
            if !check.service_id.is_empty() {
                self.put(
                    Table::CatalogCheckServices,
                    keys::service_name_row(&check.service_name, &check.node, &check.check_id),
                    Vec::new(),
                );
            }
            self.put(Table::CatalogChecks, key, encode(&check));
            self.catalog_bump(IndexedTable::Checks);
            self.catalog_check_touches(&check)?;
        }
        // Consul does this whether or not the check changed: no session may stay bound to a
        // critical check.
        if check.status == CheckStatus::Critical {
            self.catalog_destroy_check_sessions(&node.node, id, out)?;
        }
        Ok(())
    }

    /// Removes a check and destroys the sessions bound to it (Consul's `deleteCheckTxn`).
    fn catalog_check_remove(
        &mut self,
        node: &Node,
        check_id: &str,
        out: &mut CatalogOutcome,
    ) -> Result<(), ApplyError> {
        let key = keys::check(&node.node, check_id);
        let Some(check) = tables::get::<HealthCheck, _>(self, Table::CatalogChecks, &key)? else {
            return Ok(());
        };
        self.catalog_check_touches(&check)?;
        if check.service_id.is_empty() {
            // As Consul: a node-level check's removal also moves the services table's index.
            self.catalog_bump(IndexedTable::Services);
        } else {
            self.delete(
                Table::CatalogCheckServices,
                keys::service_name_row(&check.service_name, &check.node, &check.check_id),
            );
        }
        self.delete(Table::CatalogChecks, key);
        self.catalog_bump(IndexedTable::Checks);
        self.catalog_destroy_check_sessions(&node.node, &check.check_id, out)
    }

    // ---- sessions -----------------------------------------------------------------------------

    /// Consul's `validateSessionChecksTxn`: a new session's checks exist on its node and none is
    /// critical. Checked in the log's order, so a session either exists before its check goes
    /// critical (and goes with it) or is refused: none outlives a failure it was created after.
    ///
    /// `serfHealth` is left out: the leader vouches for it from the LAN pool before it proposes the
    /// session, and the catalog's copy trails the pool (a node that just joined has none yet).
    pub(crate) fn catalog_require_session_checks(
        &self,
        node: &str,
        checks: &[String],
    ) -> Result<(), ApplyError> {
        for check_id in checks {
            if check_id.eq_ignore_ascii_case(SERF_CHECK_ID) {
                continue;
            }
            let key = keys::check(node, check_id);
            match tables::get::<HealthCheck, _>(self, Table::CatalogChecks, &key)? {
                None => {
                    return Err(ApplyError::SessionCheckMissing {
                        check_id: check_id.clone(),
                    });
                }
                Some(check) if check.status == CheckStatus::Critical => {
                    return Err(ApplyError::SessionCheckCritical {
                        check_id: check_id.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Destroys the sessions of `node` bound to `check_id` (Consul's `session_checks` lookup; a scan,
    /// as sessions are few next to the KV and nothing else needs that lookup).
    fn catalog_destroy_check_sessions(
        &mut self,
        node: &str,
        check_id: &str,
        out: &mut CatalogOutcome,
    ) -> Result<(), ApplyError> {
        let mut bound = Vec::new();
        tables::scan(self, Table::Sessions, b"", |session: Session| {
            if session.node.eq_ignore_ascii_case(node)
                && session
                    .node_checks
                    .iter()
                    .any(|check| check.eq_ignore_ascii_case(check_id))
            {
                bound.push(session.id);
            }
            true
        })?;
        self.catalog_destroy_sessions(bound, out)
    }

    fn catalog_destroy_sessions(
        &mut self,
        ids: Vec<String>,
        out: &mut CatalogOutcome,
    ) -> Result<(), ApplyError> {
        for id in ids {
            if let Some(invalidation) = self.session_remove(&id)? {
                out.destroyed_sessions.push(DestroyedSession { id, invalidation });
            }
        }
        Ok(())
    }
}
