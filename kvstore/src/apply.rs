//! Applying one command: Consul's KV, session, transaction and ACL rules over a write overlay (the
//! catalog's rules live in `catalog::apply`, on the same [`Tx`]).
//!
//! Every command runs against a [`Tx`]: reads see the live view plus the command's own earlier
//! writes; writes stay in the overlay. Only when the command succeeds does the overlay become the
//! batch the backend commits, so a failed command (or a rolled-back transaction) changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::backend::{Batch, BatchOp, ReadView, Slot, Table};
use crate::catalog::CatalogTouched;
use crate::command::{AclReplicationBatch, Command, TxnOp};
use crate::error::{ApplyError, BackendError, ReadError};
use crate::model::{
    ANONYMOUS_TOKEN_ACCESSOR, AclAuthMethod, AclBindingRule, AclBootstrapState, AclPolicy, AclRole, AclToken,
    GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES, IndexedTable,
    KvEntry, MAX_LOCK_DELAY, NewSession, PolicyLink, RoleLink, Session, SessionBehavior, StateRecord,
    Tombstone,
};
use crate::outcome::{
    AuthMethodDeletion, Outcome, ReplicationCounts, SessionInvalidation, TxnOpError, TxnOutcome, TxnResult,
};
use crate::tables::{self, encode, encode_u64, session_lock_key, session_lock_prefix};

/// What a command touched, for the watch hub.
#[derive(Debug, Default, Clone)]
pub(crate) struct Touched {
    pub(crate) kv_keys: Vec<String>,
    pub(crate) sessions: bool,
    pub(crate) acl: bool,
    pub(crate) catalog: CatalogTouched,
    pub(crate) reset: bool,
}

/// Who decided an ACL write: this datacenter, whose rules it enforces, or the primary datacenter,
/// whose state a replication batch mirrors (see [`AclReplicationBatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Local,
    Replicated,
}

type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub(crate) struct Tx<'v, V: ReadView + ?Sized> {
    view: &'v V,
    pub(crate) index: u64,
    overlay: HashMap<Table, Overlay>,
    staging: Vec<BatchOp>,
    promote: bool,
    pub(crate) touched: Touched,
}

impl<V: ReadView + ?Sized> ReadView for Tx<'_, V> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if let Some(pending) = self.overlay.get(&table).and_then(|o| o.get(key)) {
            return Ok(pending.clone());
        }
        self.view.get(table, key)
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let Some(overlay) = self.overlay.get(&table) else {
            return self.view.scan_prefix(table, prefix, visit);
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.view.scan_prefix(table, prefix, &mut |k, v| {
            merged.insert(k.to_vec(), v.to_vec());
            true
        })?;
        for (key, pending) in overlay.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            match pending {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        for (key, value) in &merged {
            if !visit(key, value) {
                break;
            }
        }
        Ok(())
    }
}

impl<'v, V: ReadView + ?Sized> Tx<'v, V> {
    pub(crate) fn new(view: &'v V, index: u64) -> Self {
        Self {
            view,
            index,
            overlay: HashMap::new(),
            staging: Vec::new(),
            promote: false,
            touched: Touched::default(),
        }
    }

    /// The overlay as a batch (tables in a fixed order, so both backends see the same sequence).
    pub(crate) fn into_batch(self) -> (Batch, Touched) {
        let mut batch = Batch::new();
        let mut tables: Vec<_> = self.overlay.into_iter().collect();
        tables.sort_by_key(|(table, _)| *table);
        for (table, writes) in tables {
            for (key, value) in writes {
                batch.push(match value {
                    Some(value) => BatchOp::Put {
                        slot: Slot::Live,
                        table,
                        key,
                        value,
                    },
                    None => BatchOp::Delete {
                        slot: Slot::Live,
                        table,
                        key,
                    },
                });
            }
        }
        for op in self.staging {
            batch.push(op);
        }
        if self.promote {
            batch.promote_staging();
        }
        (batch, self.touched)
    }

    pub(crate) fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.entry(table).or_default().insert(key, Some(value));
    }

    pub(crate) fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.overlay.entry(table).or_default().insert(key, None);
    }

    pub(crate) fn bump(&mut self, table: IndexedTable) {
        self.put(
            Table::State,
            tables::table_index_key(table).to_vec(),
            encode_u64(self.index),
        );
    }

    // ---- KV -----------------------------------------------------------------------------------

    fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, ReadError> {
        tables::kv_get(self, key)
    }

    fn kv_write(&mut self, old: Option<&KvEntry>, new: KvEntry) {
        let old_session = old.and_then(|e| e.session.as_deref());
        if old_session != new.session.as_deref() {
            if let Some(session) = old_session {
                self.delete(Table::SessionLocks, session_lock_key(session, &new.key));
            }
            if let Some(session) = &new.session {
                self.put(
                    Table::SessionLocks,
                    session_lock_key(session, &new.key),
                    Vec::new(),
                );
            }
        }
        self.touched.kv_keys.push(new.key.clone());
        self.put(Table::Kv, new.key.as_bytes().to_vec(), encode(&new));
        self.bump(IndexedTable::Kv);
    }

    fn kv_remove(&mut self, entry: &KvEntry) {
        if let Some(session) = &entry.session {
            self.delete(Table::SessionLocks, session_lock_key(session, &entry.key));
        }
        self.delete(Table::Kv, entry.key.as_bytes().to_vec());
        let stone = Tombstone {
            key: entry.key.clone(),
            index: self.index,
        };
        self.put(Table::Tombstones, entry.key.as_bytes().to_vec(), encode(&stone));
        self.touched.kv_keys.push(entry.key.clone());
        self.bump(IndexedTable::Kv);
    }

    /// Consul's `kvsSetTxn`: `lock` is `Some((session, lock_index))` when the caller decides the lock
    /// fields, `None` to keep the existing ones. An unchanged entry is not rewritten (no index bump).
    fn kvs_set(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        lock: Option<(Option<String>, u64)>,
    ) -> Result<KvEntry, ReadError> {
        let existing = self.kv_get(key)?;
        let (session, lock_index) = match (lock, &existing) {
            (Some(lock), _) => lock,
            (None, Some(e)) => (e.session.clone(), e.lock_index),
            (None, None) => (None, 0),
        };
        if let Some(e) = &existing
            && e.value == value
            && e.flags == flags
            && e.session == session
            && e.lock_index == lock_index
        {
            return Ok(e.clone());
        }
        let entry = KvEntry {
            key: key.to_owned(),
            value: value.to_vec(),
            flags,
            create_index: existing.as_ref().map_or(self.index, |e| e.create_index),
            modify_index: self.index,
            lock_index,
            session,
        };
        self.kv_write(existing.as_ref(), entry.clone());
        Ok(entry)
    }

    fn kvs_cas(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        index: u64,
    ) -> Result<Option<KvEntry>, ReadError> {
        let existing = self.kv_get(key)?;
        let matches = match (&existing, index) {
            (None, 0) => true,
            (Some(_), 0) | (None, _) => false,
            (Some(e), index) => e.modify_index == index,
        };
        if !matches {
            return Ok(None);
        }
        self.kvs_set(key, value, flags, None).map(Some)
    }

    /// Consul's `kvsLockTxn`: `Ok(None)` when another session holds the key.
    fn kvs_lock(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        session: &str,
    ) -> Result<Option<KvEntry>, ApplyError> {
        if tables::get::<Session, _>(self, Table::Sessions, session.as_bytes())?.is_none() {
            return Err(ApplyError::InvalidSession {
                session: session.to_owned(),
            });
        }
        let lock_index = match self.kv_get(key)? {
            Some(e) if e.session.as_deref() == Some(session) => e.lock_index,
            Some(e) if e.session.is_some() => return Ok(None),
            Some(e) => e.lock_index.saturating_add(1),
            None => 1,
        };
        Ok(Some(self.kvs_set(
            key,
            value,
            flags,
            Some((Some(session.to_owned()), lock_index)),
        )?))
    }

    /// Consul's `kvsUnlockTxn`: `Ok(None)` when the key is missing or not held by `session`.
    fn kvs_unlock(
        &mut self,
        key: &str,
        value: &[u8],
        flags: u64,
        session: &str,
    ) -> Result<Option<KvEntry>, ReadError> {
        match self.kv_get(key)? {
            Some(e) if e.session.as_deref() == Some(session) => self
                .kvs_set(key, value, flags, Some((None, e.lock_index)))
                .map(Some),
            _ => Ok(None),
        }
    }

    fn kvs_delete(&mut self, key: &str) -> Result<(), ReadError> {
        if let Some(entry) = self.kv_get(key)? {
            self.kv_remove(&entry);
        }
        Ok(())
    }

    /// Consul's `kvsDeleteCASTxn`: a missing key counts as deleted (`true`).
    fn kvs_delete_cas(&mut self, key: &str, index: u64) -> Result<bool, ReadError> {
        match self.kv_get(key)? {
            None => Ok(true),
            Some(e) if e.modify_index != index => Ok(false),
            Some(e) => {
                self.kv_remove(&e);
                Ok(true)
            }
        }
    }

    /// Deletes every key under the prefix, each leaving its own tombstone (see ARCHITECTURE.md: Consul
    /// keeps one tombstone for the prefix; one per key keeps every sub-prefix's index from sliding back).
    fn kvs_delete_tree(&mut self, prefix: &str) -> Result<(), ReadError> {
        let (_, entries) = tables::kv_list(self, prefix)?;
        for entry in &entries {
            self.kv_remove(entry);
        }
        Ok(())
    }

    // ---- transactions -------------------------------------------------------------------------

    pub(crate) fn txn(&mut self, ops: &[TxnOp]) -> Result<TxnOutcome, ApplyError> {
        let mut outcome = TxnOutcome::default();
        for (op_index, op) in ops.iter().enumerate() {
            match self.txn_op(op) {
                Ok(results) => outcome.results.extend(results.into_iter().map(TxnResult::Kv)),
                Err(TxnFailure::Local(err)) => return Err(err),
                Err(TxnFailure::Op(what)) => outcome.errors.push(TxnOpError { op_index, what }),
            }
        }
        if !outcome.committed() {
            outcome.results.clear();
        }
        Ok(outcome)
    }

    /// Consul's `txnKVS`: one operation's result entries (values blanked except for reads).
    fn txn_op(&mut self, op: &TxnOp) -> Result<Vec<KvEntry>, TxnFailure> {
        let blank = |mut entry: KvEntry| {
            entry.value.clear();
            vec![entry]
        };
        Ok(match op {
            TxnOp::Set { key, value, flags } => blank(self.kvs_set(key, value, *flags, None)?),
            TxnOp::Cas {
                key,
                value,
                flags,
                index,
            } => match self.kvs_cas(key, value, *flags, *index)? {
                Some(entry) => blank(entry),
                None => {
                    return Err(TxnFailure::Op(format!(
                        "failed to set key {key:?}, index is stale"
                    )));
                }
            },
            TxnOp::Lock {
                key,
                value,
                flags,
                session,
            } => match self.kvs_lock(key, value, *flags, session) {
                Ok(Some(entry)) => blank(entry),
                Ok(None) => {
                    return Err(TxnFailure::Op(format!(
                        "failed to lock key {key:?}, lock is already held"
                    )));
                }
                Err(err) if err.is_deterministic() => return Err(TxnFailure::Op(err.to_string())),
                Err(err) => return Err(TxnFailure::Local(err)),
            },
            TxnOp::Unlock {
                key,
                value,
                flags,
                session,
            } => match self.kvs_unlock(key, value, *flags, session)? {
                Some(entry) => blank(entry),
                None => {
                    return Err(TxnFailure::Op(format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                    )));
                }
            },
            TxnOp::Get { key } => match self.kv_get(key)? {
                Some(entry) => vec![entry],
                None => return Err(TxnFailure::Op(format!("key {key:?} doesn't exist"))),
            },
            TxnOp::GetTree { prefix } => tables::kv_list(self, prefix)?.1,
            TxnOp::CheckIndex { key, index } => match self.kv_get(key)? {
                None => {
                    return Err(TxnFailure::Op(format!(
                        "failed to check index, key {key:?} doesn't exist"
                    )));
                }
                Some(e) if e.modify_index != *index => {
                    return Err(TxnFailure::Op(format!(
                        "failed to check index, key {key:?} has a modify index of {}",
                        e.modify_index
                    )));
                }
                Some(e) => blank(e),
            },
            TxnOp::CheckSession { key, session } => match self.kv_get(key)? {
                None => {
                    return Err(TxnFailure::Op(format!(
                        "failed to check session, key {key:?} doesn't exist"
                    )));
                }
                Some(e) if e.session.as_deref().unwrap_or("") != session => {
                    return Err(TxnFailure::Op(format!(
                        "failed to check session, key {key:?} in session {:?}",
                        e.session.as_deref().unwrap_or("")
                    )));
                }
                Some(e) => blank(e),
            },
            TxnOp::CheckNotExists { key } => match self.kv_get(key)? {
                Some(_) => return Err(TxnFailure::Op(format!("key {key:?} exists"))),
                None => Vec::new(),
            },
            TxnOp::Delete { key } => {
                self.kvs_delete(key)?;
                Vec::new()
            }
            TxnOp::DeleteTree { prefix } => {
                self.kvs_delete_tree(prefix)?;
                Vec::new()
            }
            TxnOp::DeleteCas { key, index } => {
                if !self.kvs_delete_cas(key, *index)? {
                    return Err(TxnFailure::Op(format!(
                        "failed to delete key {key:?}, index is stale"
                    )));
                }
                Vec::new()
            }
        })
    }

    // ---- sessions -----------------------------------------------------------------------------

    fn session_create(&mut self, new: &NewSession) -> Result<Outcome, ApplyError> {
        if tables::get::<Session, _>(self, Table::Sessions, new.id.as_bytes())?.is_some() {
            return Err(ApplyError::SessionExists { id: new.id.clone() });
        }
        self.catalog_require_session_checks(&new.node, &new.node_checks)?;
        let session = Session {
            id: new.id.clone(),
            name: new.name.clone(),
            node: new.node.clone(),
            lock_delay: new.lock_delay,
            behavior: new.behavior,
            ttl: new.ttl,
            node_checks: new.node_checks.clone(),
            create_index: self.index,
            modify_index: self.index,
        };
        self.put(Table::Sessions, session.id.as_bytes().to_vec(), encode(&session));
        self.bump(IndexedTable::Sessions);
        self.touched.sessions = true;
        Ok(Outcome::SessionCreated { id: session.id })
    }

    fn session_destroy(&mut self, id: &str) -> Result<Outcome, ApplyError> {
        Ok(Outcome::SessionDestroyed(
            self.session_remove(id)?.unwrap_or_default(),
        ))
    }

    /// Consul's `deleteSessionTxn`: release or delete every held key, report the lock-delay. `None`
    /// when there is no such session.
    pub(crate) fn session_remove(&mut self, id: &str) -> Result<Option<SessionInvalidation>, ApplyError> {
        let Some(session) = tables::get::<Session, _>(self, Table::Sessions, id.as_bytes())? else {
            return Ok(None);
        };
        let prefix = session_lock_prefix(id);
        let mut held_keys = Vec::new();
        let mut bad_row = None;
        self.scan_prefix(Table::SessionLocks, &prefix, &mut |row, _| {
            match row.get(prefix.len()..).map(|k| String::from_utf8(k.to_vec())) {
                Some(Ok(key)) => held_keys.push(key),
                _ => bad_row = Some(row.to_vec()),
            }
            true
        })?;
        if let Some(row) = bad_row {
            return Err(ApplyError::Corrupt(crate::error::CorruptRecord {
                table: Table::SessionLocks,
                key: String::from_utf8_lossy(&row).into_owned(),
                reason: "held key is not UTF-8".into(),
            }));
        }
        for key in &held_keys {
            let Some(entry) = self.kv_get(key)? else { continue };
            if entry.session.as_deref() != Some(id) {
                continue;
            }
            match session.behavior {
                SessionBehavior::Release => {
                    self.kvs_set(key, &entry.value, entry.flags, Some((None, entry.lock_index)))?;
                }
                SessionBehavior::Delete => self.kv_remove(&entry),
            }
        }
        self.delete(Table::Sessions, id.as_bytes().to_vec());
        self.bump(IndexedTable::Sessions);
        self.touched.sessions = true;
        let lock_delay = session.lock_delay.min(MAX_LOCK_DELAY);
        let lock_delay_keys = if lock_delay.is_zero() {
            Vec::new()
        } else {
            held_keys.clone()
        };
        Ok(Some(SessionInvalidation {
            existed: true,
            behavior: session.behavior,
            held_keys,
            lock_delay_keys,
            lock_delay,
        }))
    }

    // ---- ACL ----------------------------------------------------------------------------------

    /// Deletes a derived lookup row only if it still points at `owner`: in a replicated datacenter a
    /// name or secret can have moved to another record before this one's own update arrives.
    fn delete_owned_row(&mut self, table: Table, key: &str, owner: &str) -> Result<(), ReadError> {
        if tables::get_string(self, table, key.as_bytes())?.as_deref() == Some(owner) {
            self.delete(table, key.as_bytes().to_vec());
        }
        Ok(())
    }

    /// Fills in a policy link's name. A link to a missing policy is refused, or kept as given when
    /// replicating.
    fn resolve_policy_link(&self, link: &mut PolicyLink, origin: Origin) -> Result<(), ApplyError> {
        match tables::get::<AclPolicy, _>(self, Table::AclPolicies, link.id.as_bytes())? {
            Some(policy) => link.name = policy.name,
            None if origin == Origin::Replicated => {}
            None => {
                return Err(ApplyError::UnknownPolicy {
                    policy_id: link.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fills in a role link's name, as [`Tx::resolve_policy_link`] does for policies.
    fn resolve_role_link(&self, link: &mut RoleLink, origin: Origin) -> Result<(), ApplyError> {
        match tables::get::<AclRole, _>(self, Table::AclRoles, link.id.as_bytes())? {
            Some(role) => link.name = role.name,
            None if origin == Origin::Replicated => {}
            None => {
                return Err(ApplyError::UnknownRole {
                    role_id: link.id.clone(),
                });
            }
        }
        Ok(())
    }

    fn acl_token_upsert(&mut self, token: &AclToken) -> Result<AclToken, ApplyError> {
        self.acl_token_write(token, Origin::Local)
    }

    fn acl_token_write(&mut self, token: &AclToken, origin: Origin) -> Result<AclToken, ApplyError> {
        let mut stored = token.clone();
        for link in &mut stored.policies {
            self.resolve_policy_link(link, origin)?;
        }
        for link in &mut stored.roles {
            self.resolve_role_link(link, origin)?;
        }
        if origin == Origin::Local
            && !token.auth_method.is_empty()
            && tables::get::<AclAuthMethod, _>(self, Table::AclAuthMethods, token.auth_method.as_bytes())?
                .is_none()
        {
            return Err(ApplyError::UnknownAuthMethod {
                name: token.auth_method.clone(),
            });
        }
        let existing = tables::get::<AclToken, _>(self, Table::AclTokens, token.accessor_id.as_bytes())?;
        if let Some(existing) = &existing
            && existing.secret_id != token.secret_id
        {
            if origin == Origin::Local {
                return Err(ApplyError::SecretChanged {
                    accessor_id: token.accessor_id.clone(),
                });
            }
            self.delete_owned_row(Table::AclTokenSecrets, &existing.secret_id, &existing.accessor_id)?;
        }
        if let Some(owner) = tables::get_string(self, Table::AclTokenSecrets, token.secret_id.as_bytes())?
            && owner != token.accessor_id
        {
            // A replicated token takes its secret from another replicated token (which the same round
            // deletes or re-keys anyway), never from a local one: no two tokens ever share a secret.
            if origin == Origin::Local || !self.acl_token_remove(&owner, Origin::Replicated)? {
                return Err(ApplyError::DuplicateSecret { accessor_id: owner });
            }
        }
        stored.create_index = existing.as_ref().map_or(self.index, |e| e.create_index);
        stored.modify_index = self.index;
        self.put(
            Table::AclTokens,
            stored.accessor_id.as_bytes().to_vec(),
            encode(&stored),
        );
        self.put(
            Table::AclTokenSecrets,
            stored.secret_id.as_bytes().to_vec(),
            stored.accessor_id.as_bytes().to_vec(),
        );
        self.bump(IndexedTable::AclTokens);
        self.touched.acl = true;
        Ok(stored)
    }

    fn acl_token_delete(&mut self, accessor_id: &str) -> Result<Outcome, ApplyError> {
        self.acl_token_remove(accessor_id, Origin::Local)?;
        Ok(Outcome::Done)
    }

    /// Removes a token; true when one was removed. Replication never removes a token local to this
    /// datacenter.
    fn acl_token_remove(&mut self, accessor_id: &str, origin: Origin) -> Result<bool, ApplyError> {
        if accessor_id == ANONYMOUS_TOKEN_ACCESSOR {
            return Err(ApplyError::BuiltinDelete {
                what: "the anonymous token",
            });
        }
        let Some(token) = tables::get::<AclToken, _>(self, Table::AclTokens, accessor_id.as_bytes())? else {
            return Ok(false);
        };
        if origin == Origin::Replicated && token.local {
            return Ok(false);
        }
        self.delete(Table::AclTokens, accessor_id.as_bytes().to_vec());
        self.delete_owned_row(Table::AclTokenSecrets, &token.secret_id, accessor_id)?;
        self.bump(IndexedTable::AclTokens);
        self.touched.acl = true;
        Ok(true)
    }

    fn acl_policy_upsert(&mut self, policy: &AclPolicy) -> Result<AclPolicy, ApplyError> {
        self.acl_policy_write(policy, Origin::Local)
    }

    fn acl_policy_write(&mut self, policy: &AclPolicy, origin: Origin) -> Result<AclPolicy, ApplyError> {
        if let Some(owner) = tables::get_string(self, Table::AclPolicyNames, policy.name.as_bytes())?
            && owner != policy.id
        {
            // Policies in a secondary are all replicated: the one holding the name is gone from the
            // primary or renamed there, and the same round deletes or rewrites it. Removing it now
            // keeps names unique at every index.
            if origin == Origin::Local || owner == GLOBAL_MANAGEMENT_POLICY_ID {
                return Err(ApplyError::DuplicatePolicyName {
                    name: policy.name.clone(),
                });
            }
            self.acl_policy_remove(&owner)?;
        }
        let existing = tables::get::<AclPolicy, _>(self, Table::AclPolicies, policy.id.as_bytes())?;
        if let Some(existing) = &existing
            && existing.name != policy.name
        {
            self.delete_owned_row(Table::AclPolicyNames, &existing.name, &existing.id)?;
        }
        let mut stored = policy.clone();
        stored.create_index = existing.as_ref().map_or(self.index, |e| e.create_index);
        stored.modify_index = self.index;
        self.put(Table::AclPolicies, stored.id.as_bytes().to_vec(), encode(&stored));
        self.put(
            Table::AclPolicyNames,
            stored.name.as_bytes().to_vec(),
            stored.id.as_bytes().to_vec(),
        );
        self.bump(IndexedTable::AclPolicies);
        self.touched.acl = true;
        Ok(stored)
    }

    fn acl_policy_delete(&mut self, id: &str) -> Result<Outcome, ApplyError> {
        self.acl_policy_remove(id)?;
        Ok(Outcome::Done)
    }

    /// Removes a policy; true when one was removed. Links to it stay and resolve to nothing.
    fn acl_policy_remove(&mut self, id: &str) -> Result<bool, ApplyError> {
        if id == GLOBAL_MANAGEMENT_POLICY_ID {
            return Err(ApplyError::BuiltinDelete {
                what: "the global-management policy",
            });
        }
        let Some(policy) = tables::get::<AclPolicy, _>(self, Table::AclPolicies, id.as_bytes())? else {
            return Ok(false);
        };
        self.delete(Table::AclPolicies, id.as_bytes().to_vec());
        self.delete_owned_row(Table::AclPolicyNames, &policy.name, id)?;
        self.bump(IndexedTable::AclPolicies);
        self.touched.acl = true;
        Ok(true)
    }

    fn acl_role_write(&mut self, role: &AclRole, origin: Origin) -> Result<AclRole, ApplyError> {
        if let Some(owner) = tables::get_string(self, Table::AclRoleNames, role.name.as_bytes())?
            && owner != role.id
        {
            // As for policies: every role in a secondary is replicated.
            if origin == Origin::Local {
                return Err(ApplyError::DuplicateRoleName {
                    name: role.name.clone(),
                });
            }
            self.acl_role_remove(&owner)?;
        }
        let mut stored = role.clone();
        for link in &mut stored.policies {
            self.resolve_policy_link(link, origin)?;
        }
        let existing = tables::get::<AclRole, _>(self, Table::AclRoles, role.id.as_bytes())?;
        if let Some(existing) = &existing
            && existing.name != role.name
        {
            self.delete_owned_row(Table::AclRoleNames, &existing.name, &existing.id)?;
        }
        stored.create_index = existing.as_ref().map_or(self.index, |e| e.create_index);
        stored.modify_index = self.index;
        self.put(Table::AclRoles, stored.id.as_bytes().to_vec(), encode(&stored));
        self.put(
            Table::AclRoleNames,
            stored.name.as_bytes().to_vec(),
            stored.id.as_bytes().to_vec(),
        );
        self.bump(IndexedTable::AclRoles);
        self.touched.acl = true;
        Ok(stored)
    }

    /// Removes a role; true when one was removed. Token links to it stay and resolve to nothing.
    fn acl_role_remove(&mut self, id: &str) -> Result<bool, ApplyError> {
        let Some(role) = tables::get::<AclRole, _>(self, Table::AclRoles, id.as_bytes())? else {
            return Ok(false);
        };
        self.delete(Table::AclRoles, id.as_bytes().to_vec());
        self.delete_owned_row(Table::AclRoleNames, &role.name, id)?;
        self.bump(IndexedTable::AclRoles);
        self.touched.acl = true;
        Ok(true)
    }

    fn acl_auth_method_upsert(&mut self, method: &AclAuthMethod) -> Result<AclAuthMethod, ApplyError> {
        let existing = tables::get::<AclAuthMethod, _>(self, Table::AclAuthMethods, method.name.as_bytes())?;
        if let Some(existing) = &existing
            && existing.method_type != method.method_type
        {
            return Err(ApplyError::AuthMethodTypeChanged {
                name: method.name.clone(),
                stored: existing.method_type.clone(),
                requested: method.method_type.clone(),
            });
        }
        let mut stored = method.clone();
        stored.create_index = existing.as_ref().map_or(self.index, |e| e.create_index);
        stored.modify_index = self.index;
        self.put(
            Table::AclAuthMethods,
            stored.name.as_bytes().to_vec(),
            encode(&stored),
        );
        self.bump(IndexedTable::AclAuthMethods);
        self.touched.acl = true;
        Ok(stored)
    }

    /// Deletes a method with its binding rules and the tokens its logins created, as Consul does.
    /// Tokens are found by a scan: there is no token-by-method lookup, and deleting a method is rare.
    fn acl_auth_method_delete(&mut self, name: &str) -> Result<Outcome, ApplyError> {
        if tables::get::<AclAuthMethod, _>(self, Table::AclAuthMethods, name.as_bytes())?.is_none() {
            return Ok(Outcome::AclAuthMethodDeleted(AuthMethodDeletion::default()));
        }
        let mut binding_rule_ids = Vec::new();
        tables::scan(self, Table::AclBindingRules, b"", |rule: AclBindingRule| {
            if rule.auth_method == name {
                binding_rule_ids.push(rule.id);
            }
            true
        })?;
        let mut token_accessor_ids = Vec::new();
        tables::scan(self, Table::AclTokens, b"", |token: AclToken| {
            if token.auth_method == name {
                token_accessor_ids.push(token.accessor_id);
            }
            true
        })?;
        for id in &binding_rule_ids {
            self.acl_binding_rule_remove(id)?;
        }
        for accessor_id in &token_accessor_ids {
            self.acl_token_remove(accessor_id, Origin::Local)?;
        }
        self.delete(Table::AclAuthMethods, name.as_bytes().to_vec());
        self.bump(IndexedTable::AclAuthMethods);
        self.touched.acl = true;
        Ok(Outcome::AclAuthMethodDeleted(AuthMethodDeletion {
            existed: true,
            binding_rule_ids,
            token_accessor_ids,
        }))
    }

    fn acl_binding_rule_upsert(&mut self, rule: &AclBindingRule) -> Result<AclBindingRule, ApplyError> {
        if tables::get::<AclAuthMethod, _>(self, Table::AclAuthMethods, rule.auth_method.as_bytes())?
            .is_none()
        {
            return Err(ApplyError::UnknownAuthMethod {
                name: rule.auth_method.clone(),
            });
        }
        let existing = tables::get::<AclBindingRule, _>(self, Table::AclBindingRules, rule.id.as_bytes())?;
        let mut stored = rule.clone();
        stored.create_index = existing.as_ref().map_or(self.index, |e| e.create_index);
        stored.modify_index = self.index;
        self.put(
            Table::AclBindingRules,
            stored.id.as_bytes().to_vec(),
            encode(&stored),
        );
        self.bump(IndexedTable::AclBindingRules);
        self.touched.acl = true;
        Ok(stored)
    }

    /// Removes a binding rule; true when one was removed.
    fn acl_binding_rule_remove(&mut self, id: &str) -> Result<bool, ApplyError> {
        if tables::get::<AclBindingRule, _>(self, Table::AclBindingRules, id.as_bytes())?.is_none() {
            return Ok(false);
        }
        self.delete(Table::AclBindingRules, id.as_bytes().to_vec());
        self.bump(IndexedTable::AclBindingRules);
        self.touched.acl = true;
        Ok(true)
    }

    /// Applies a replication batch in its documented order; any error leaves the whole command
    /// unapplied, since the overlay is only committed on success.
    fn acl_replicate(&mut self, batch: &AclReplicationBatch) -> Result<Outcome, ApplyError> {
        let mut counts = ReplicationCounts::default();
        for id in &batch.policy_deletes {
            counts.policies_deleted += u64::from(self.acl_policy_remove(id)?);
        }
        for id in &batch.role_deletes {
            counts.roles_deleted += u64::from(self.acl_role_remove(id)?);
        }
        for accessor_id in &batch.token_deletes {
            counts.tokens_deleted += u64::from(self.acl_token_remove(accessor_id, Origin::Replicated)?);
        }
        for policy in &batch.policy_upserts {
            self.acl_policy_write(policy, Origin::Replicated)?;
            counts.policies_upserted += 1;
        }
        for role in &batch.role_upserts {
            self.acl_role_write(role, Origin::Replicated)?;
            counts.roles_upserted += 1;
        }
        for token in &batch.token_upserts {
            self.acl_token_write(token, Origin::Replicated)?;
            counts.tokens_upserted += 1;
        }
        Ok(Outcome::AclReplicated(counts))
    }

    fn acl_bootstrap(&mut self, token: &AclToken, reset_index: Option<u64>) -> Result<Outcome, ApplyError> {
        let state = tables::acl_bootstrap(self)?;
        if let Some(done_at) = state.bootstrapped_at
            && reset_index != Some(done_at)
        {
            return Err(ApplyError::AclBootstrapNotAllowed { reset_index: done_at });
        }
        if tables::get::<AclPolicy, _>(self, Table::AclPolicies, GLOBAL_MANAGEMENT_POLICY_ID.as_bytes())?
            .is_none()
        {
            self.acl_policy_upsert(&AclPolicy {
                id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
                name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
                description: "Builtin Policy that grants unlimited access".into(),
                rules: GLOBAL_MANAGEMENT_RULES.into(),
                datacenters: Vec::new(),
                create_index: 0,
                modify_index: 0,
            })?;
        }
        let mut token = token.clone();
        token.policies = vec![PolicyLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.into(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.into(),
        }];
        let stored = self.acl_token_upsert(&token)?;
        let state = AclBootstrapState {
            bootstrapped_at: Some(self.index),
        };
        self.put(Table::State, tables::STATE_ACL_BOOTSTRAP.to_vec(), encode(&state));
        Ok(Outcome::AclBootstrapped(stored))
    }

    // ---- maintenance and restore --------------------------------------------------------------

    fn reap_tombstones(&mut self, up_to_index: u64) -> Result<Outcome, ApplyError> {
        let mut reaped = Vec::new();
        tables::scan(self, Table::Tombstones, b"", |stone: Tombstone| {
            if stone.index <= up_to_index {
                reaped.push(stone.key);
            }
            true
        })?;
        for key in &reaped {
            self.delete(Table::Tombstones, key.as_bytes().to_vec());
        }
        if !reaped.is_empty() {
            self.bump(IndexedTable::Kv);
        }
        Ok(Outcome::TombstonesReaped {
            count: reaped.len() as u64,
        })
    }

    fn restore_in_progress(&self) -> Result<Option<u64>, ReadError> {
        tables::get_u64(self, Table::Meta, tables::META_RESTORE_ID)
    }

    fn check_restore(&self, restore_id: u64) -> Result<(), ApplyError> {
        if self.restore_in_progress()? != Some(restore_id) {
            return Err(ApplyError::RestoreNotInProgress { restore_id });
        }
        Ok(())
    }
}

enum TxnFailure {
    /// The operation failed: recorded in `Errors`, the transaction rolls back.
    Op(String),
    /// Storage trouble: the whole apply fails without recording anything.
    Local(ApplyError),
}

impl From<ReadError> for TxnFailure {
    fn from(err: ReadError) -> Self {
        TxnFailure::Local(err.into())
    }
}

/// The staging writes that install one record (and its derived lookup rows).
pub(crate) fn stage_record(record: &StateRecord, out: &mut Vec<BatchOp>) {
    let mut put = |table: Table, key: &[u8], value: Vec<u8>| {
        out.push(BatchOp::Put {
            slot: Slot::Staging,
            table,
            key: key.to_vec(),
            value,
        });
    };
    match record {
        StateRecord::Kv(entry) => {
            if let Some(session) = &entry.session {
                put(
                    Table::SessionLocks,
                    &session_lock_key(session, &entry.key),
                    Vec::new(),
                );
            }
            put(Table::Kv, entry.key.as_bytes(), encode(entry));
        }
        StateRecord::Tombstone(stone) => put(Table::Tombstones, stone.key.as_bytes(), encode(stone)),
        StateRecord::Session(session) => put(Table::Sessions, session.id.as_bytes(), encode(session)),
        StateRecord::AclToken(token) => {
            put(
                Table::AclTokenSecrets,
                token.secret_id.as_bytes(),
                token.accessor_id.as_bytes().to_vec(),
            );
            put(Table::AclTokens, token.accessor_id.as_bytes(), encode(token));
        }
        StateRecord::AclPolicy(policy) => {
            put(
                Table::AclPolicyNames,
                policy.name.as_bytes(),
                policy.id.as_bytes().to_vec(),
            );
            put(Table::AclPolicies, policy.id.as_bytes(), encode(policy));
        }
        StateRecord::TableIndex { table, index } => {
            put(Table::State, tables::table_index_key(*table), encode_u64(*index));
        }
        StateRecord::AclBootstrap(state) => put(Table::State, tables::STATE_ACL_BOOTSTRAP, encode(state)),
        StateRecord::AclRole(role) => {
            put(
                Table::AclRoleNames,
                role.name.as_bytes(),
                role.id.as_bytes().to_vec(),
            );
            put(Table::AclRoles, role.id.as_bytes(), encode(role));
        }
        StateRecord::AclAuthMethod(method) => {
            put(Table::AclAuthMethods, method.name.as_bytes(), encode(method));
        }
        StateRecord::AclBindingRule(rule) => put(Table::AclBindingRules, rule.id.as_bytes(), encode(rule)),
        StateRecord::Node(_)
        | StateRecord::Service(_)
        | StateRecord::Check(_)
        | StateRecord::ServiceIndex { .. }
        | StateRecord::NodeIndex { .. } => crate::catalog::stage_catalog_record(record, &mut put),
    }
}

/// Runs one validated command against the transaction.
pub(crate) fn execute<V: ReadView + ?Sized>(
    tx: &mut Tx<'_, V>,
    command: &Command,
) -> Result<Outcome, ApplyError> {
    Ok(match command {
        Command::KvSet { key, value, flags } => {
            tx.kvs_set(key, value, *flags, None)?;
            Outcome::Kv(true)
        }
        Command::KvCas {
            key,
            value,
            flags,
            index,
        } => Outcome::Kv(tx.kvs_cas(key, value, *flags, *index)?.is_some()),
        Command::KvDelete { key } => {
            tx.kvs_delete(key)?;
            Outcome::Kv(true)
        }
        Command::KvDeleteCas { key, index } => Outcome::Kv(tx.kvs_delete_cas(key, *index)?),
        Command::KvDeleteTree { prefix } => {
            tx.kvs_delete_tree(prefix)?;
            Outcome::Kv(true)
        }
        Command::KvLock {
            key,
            value,
            flags,
            session,
        } => Outcome::Kv(tx.kvs_lock(key, value, *flags, session)?.is_some()),
        Command::KvUnlock {
            key,
            value,
            flags,
            session,
        } => Outcome::Kv(tx.kvs_unlock(key, value, *flags, session)?.is_some()),
        Command::Txn { ops } => {
            let outcome = tx.txn(ops)?;
            if !outcome.committed() {
                // Roll back: nothing of the transaction may reach the batch.
                tx.overlay.clear();
                tx.touched = Touched::default();
            }
            Outcome::Txn(outcome)
        }
        Command::SessionCreate(new) => tx.session_create(new)?,
        Command::SessionDestroy { id } => tx.session_destroy(id)?,
        Command::AclTokenUpsert(token) => Outcome::AclToken(tx.acl_token_upsert(token)?),
        Command::AclTokenDelete { accessor_id } => tx.acl_token_delete(accessor_id)?,
        Command::AclPolicyUpsert(policy) => Outcome::AclPolicy(tx.acl_policy_upsert(policy)?),
        Command::AclPolicyDelete { id } => tx.acl_policy_delete(id)?,
        Command::AclBootstrap { token, reset_index } => tx.acl_bootstrap(token, *reset_index)?,
        Command::ReapTombstones { up_to_index } => tx.reap_tombstones(*up_to_index)?,
        Command::RestoreBegin { restore_id } => {
            tx.staging.push(BatchOp::ClearStaging);
            tx.put(
                Table::Meta,
                tables::META_RESTORE_ID.to_vec(),
                encode_u64(*restore_id),
            );
            Outcome::Done
        }
        Command::RestoreChunk { restore_id, records } => {
            tx.check_restore(*restore_id)?;
            for record in records {
                stage_record(record, &mut tx.staging);
            }
            Outcome::Done
        }
        Command::RestoreCommit { restore_id } => {
            tx.check_restore(*restore_id)?;
            tx.delete(Table::Meta, tables::META_RESTORE_ID.to_vec());
            tx.promote = true;
            tx.touched.reset = true;
            Outcome::Restored
        }
        Command::AclRoleUpsert(role) => Outcome::AclRole(tx.acl_role_write(role, Origin::Local)?),
        Command::AclRoleDelete { id } => {
            tx.acl_role_remove(id)?;
            Outcome::Done
        }
        Command::AclAuthMethodUpsert(method) => Outcome::AclAuthMethod(tx.acl_auth_method_upsert(method)?),
        Command::AclAuthMethodDelete { name } => tx.acl_auth_method_delete(name)?,
        Command::AclBindingRuleUpsert(rule) => Outcome::AclBindingRule(tx.acl_binding_rule_upsert(rule)?),
        Command::AclBindingRuleDelete { id } => {
            tx.acl_binding_rule_remove(id)?;
            Outcome::Done
        }
        Command::AclReplicationBatch(batch) => tx.acl_replicate(batch)?,
        Command::CatalogRegister(registration) => Outcome::Catalog(tx.catalog_register(registration)?),
        Command::CatalogDeregister {
            node,
            service_id,
            check_id,
        } => Outcome::Catalog(tx.catalog_deregister(node, service_id.as_deref(), check_id.as_deref())?),
    })
}
