//! [`Store`]: deterministic apply, the reads, and blocking waits, over any [`Backend`].

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::apply::{Tx, execute};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backend, Batch, BatchOp, Slot, Table};
use crate::command::{Command, TxnOp};
use crate::error::{ApplyError, OpenError, ReadError};
use crate::model::{
    AclAuthMethod, AclBindingRule, AclBootstrapState, AclPolicy, AclRole, AclToken, Changes, Indexed,
    IndexedTable, KvEntry, Session, Tombstone,
};
use crate::outcome::{Outcome, TxnOutcome};
use crate::tables::{self, encode_u64};
use crate::watch::{WaitOutcome, Wake, WatchHub, WatchScope};

/// How a store is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The datacenter this state belongs to. It is recorded on first open; reopening with another
    /// name, or importing another datacenter's snapshot, is refused.
    pub datacenter: String,
}

impl StoreConfig {
    /// A configuration for `datacenter`.
    pub fn new(datacenter: impl Into<String>) -> Self {
        Self {
            datacenter: datacenter.into(),
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), OpenError> {
        if self.datacenter.is_empty()
            || self
                .datacenter
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(OpenError::Config(format!(
                "datacenter {:?} must be non-empty without spaces",
                self.datacenter
            )));
        }
        Ok(())
    }
}

/// The replicated state of one server.
///
/// - [`Store::apply`] is the only way state changes (besides [`Store::import`]): one command at one
///   raft index, deterministic, all or nothing, one backend batch that also records the index.
/// - Reads take a consistent view and return Consul's `X-Consul-Index` with the data.
/// - [`Store::wait`] and [`Store::watch_hub`] serve blocking queries.
///
/// `Store` is `Sync`: share it behind an `Arc`; applies are serialised internally, reads run alongside.
pub struct Store<B: Backend> {
    pub(crate) backend: B,
    pub(crate) datacenter: String,
    pub(crate) last_applied: AtomicU64,
    pub(crate) apply_lock: Mutex<()>,
    pub(crate) hub: WatchHub,
    /// Every tombstone with a delete index above this one is still in the state, so a delta read
    /// after it is complete (see [`Store::changes_since`]). Kept in memory only, never replicated:
    /// set to the applied index at open and at import (nothing older is provable then), raised by
    /// every reap and staged restore, never lowered.
    pub(crate) tombstones_complete_after: AtomicU64,
}

impl<B: Backend> std::fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("datacenter", &self.datacenter)
            .field("last_applied", &self.last_applied())
            .finish_non_exhaustive()
    }
}

/// A store kept in memory.
pub type MemoryStore = Store<MemoryBackend>;

impl Store<MemoryBackend> {
    /// An empty in-memory store.
    pub fn in_memory(config: StoreConfig) -> Result<Self, OpenError> {
        Self::with_backend(MemoryBackend::new(), config)
    }
}

impl<B: Backend> Store<B> {
    /// Opens a store over a backend: records the datacenter on first use, checks it afterwards, and
    /// resumes from the stored last applied index.
    pub fn with_backend(backend: B, config: StoreConfig) -> Result<Self, OpenError> {
        config.validate()?;
        let (stored_dc, last_applied) = {
            let view = backend.view()?;
            (
                tables::get_string(&view, Table::Meta, tables::META_DATACENTER)?,
                tables::get_u64(&view, Table::Meta, tables::META_APPLIED_INDEX)?.unwrap_or(0),
            )
        };
        match stored_dc {
            Some(stored) if stored != config.datacenter => {
                return Err(OpenError::DatacenterMismatch {
                    stored,
                    configured: config.datacenter,
                });
            }
            Some(_) => {}
            None => {
                let mut batch = Batch::new();
                batch.push(BatchOp::Put {
                    slot: Slot::Live,
                    table: Table::Meta,
                    key: tables::META_DATACENTER.to_vec(),
                    value: config.datacenter.as_bytes().to_vec(),
                });
                backend.commit(batch)?;
            }
        }
        Ok(Self {
            backend,
            datacenter: config.datacenter,
            last_applied: AtomicU64::new(last_applied),
            apply_lock: Mutex::new(()),
            hub: WatchHub::new(),
            tombstones_complete_after: AtomicU64::new(last_applied),
        })
    }

    /// Closes the store and hands back its backend (a store opened again over a memory backend
    /// finds the state it left, as a reopened RocksDB directory does).
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// The datacenter the state belongs to.
    pub fn datacenter(&self) -> &str {
        &self.datacenter
    }

    /// The index of the last command applied (0 for a new store).
    pub fn last_applied(&self) -> u64 {
        self.last_applied.load(Ordering::Acquire)
    }

    /// The index after which every delete is still known from its tombstone: a
    /// [`Store::changes_since`] from an index below it answers `None`. It starts at the applied index
    /// when the store opens or imports a snapshot, and rises with every `ReapTombstones` (to its
    /// `up_to_index`) and every staged restore.
    pub fn tombstones_complete_after(&self) -> u64 {
        self.tombstones_complete_after.load(Ordering::Acquire)
    }

    /// The backend (for its own maintenance calls).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The watch hub, to subscribe directly (see [`WatchHub::subscribe`]).
    pub fn watch_hub(&self) -> &WatchHub {
        &self.hub
    }

    /// Applies `command` at raft `index`.
    ///
    /// - `index <= last_applied()`: nothing happens, [`Outcome::AlreadyApplied`] (replay after restart).
    /// - A deterministic error (invalid input, unknown session, ACL conflicts — see
    ///   [`ApplyError::is_deterministic`]): the state is unchanged but the index is recorded as applied.
    /// - A storage error: nothing is recorded; the caller must stop and apply the same index again.
    /// - Otherwise every change and the index are committed in one backend batch, then blocked readers
    ///   of the touched keys are woken.
    ///
    /// No clock, no randomness: the same commands at the same indexes give the same state everywhere.
    pub fn apply(&self, index: u64, command: &Command) -> Result<Outcome, ApplyError> {
        let _serial = self.apply_lock.lock();
        let last_applied = self.last_applied();
        if index <= last_applied {
            return Ok(Outcome::AlreadyApplied { last_applied });
        }
        let view = self.backend.view()?;
        let (result, mut batch, touched) = match command.validate() {
            Err(err) => (Err(err), Batch::new(), None),
            Ok(()) => {
                let mut tx = Tx::new(&view, index);
                match execute(&mut tx, command) {
                    Ok(outcome) => {
                        let (batch, touched) = tx.into_batch();
                        (Ok(outcome), batch, Some(touched))
                    }
                    Err(err) if !err.is_deterministic() => return Err(err),
                    Err(err) => (Err(err), Batch::new(), None),
                }
            }
        };
        drop(view);
        if result.is_ok() {
            // Raised before the commit: a reader that sees the reaped (or restored) state reads
            // the horizon after taking its view, and so sees the raised one.
            match command {
                Command::ReapTombstones { up_to_index } => {
                    self.tombstones_complete_after
                        .fetch_max(*up_to_index, Ordering::AcqRel);
                }
                // The restored state's tombstones were reaped at unknown points.
                Command::RestoreCommit { .. } => {
                    self.tombstones_complete_after.fetch_max(index, Ordering::AcqRel);
                }
                _ => {}
            }
        }
        batch.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::Meta,
            key: tables::META_APPLIED_INDEX.to_vec(),
            value: encode_u64(index),
        });
        self.backend.commit(batch)?;
        self.last_applied.store(index, Ordering::Release);
        if let Some(touched) = touched {
            self.hub.notify(index, &touched);
        }
        result
    }

    /// Runs a transaction of reads and checks only (`get`, `get-tree`, `check-index`, `check-session`,
    /// `check-not-exists`) against the current state, without the log: Consul's read-only transaction
    /// fast path. Results and errors are exactly what [`Store::apply`] of the same `Command::Txn` would
    /// report, from one consistent view; nothing is written and no index is consumed. The index is the
    /// KV table's (never 0). An operation that writes is refused with [`ApplyError::InvalidField`].
    pub fn read_txn(&self, ops: &[TxnOp]) -> Result<Indexed<TxnOutcome>, ApplyError> {
        if let Some(position) = ops.iter().position(TxnOp::is_write) {
            return Err(ApplyError::InvalidField {
                field: "ops",
                reason: format!(
                    "operation {position} writes; a read-only transaction must go through the log"
                ),
            });
        }
        Command::Txn { ops: ops.to_vec() }.validate()?;
        let view = self.backend.view()?;
        // Reads never use the index a transaction's writes would carry.
        let mut tx = Tx::new(&view, self.last_applied());
        let outcome = tx.txn(ops)?;
        Ok(Indexed {
            index: tables::table_index(&view, IndexedTable::Kv)?.max(1),
            value: outcome,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&B::View<'_>) -> Result<T, ReadError>) -> Result<T, ReadError> {
        let view = self.backend.view()?;
        f(&view)
    }

    /// One key. The index is the entry's ModifyIndex, or the KV table's index when missing (never 0),
    /// as Consul's `KVS.Get`.
    pub fn get(&self, key: &str) -> Result<Indexed<Option<KvEntry>>, ReadError> {
        self.read(|view| {
            let entry = tables::kv_get(view, key)?;
            let index = match &entry {
                Some(e) => e.modify_index,
                None => tables::table_index(view, IndexedTable::Kv)?,
            };
            Ok(Indexed {
                index: index.max(1),
                value: entry,
            })
        })
    }

    /// Every entry under `prefix` (`?recurse`), in key order. The index is the highest ModifyIndex
    /// of the entries and of the tombstones under the prefix, or the KV table's index when the prefix
    /// is empty or holds nothing; never 0.
    pub fn list(&self, prefix: &str) -> Result<Indexed<Vec<KvEntry>>, ReadError> {
        self.read(|view| {
            let (max, entries) = tables::kv_list(view, prefix)?;
            Ok(Indexed {
                index: tables::prefix_read_index(view, prefix, max)?,
                value: entries,
            })
        })
    }

    /// What changed under `prefix` after index `since`: the entries whose ModifyIndex is above it,
    /// and the keys deleted after it (from their tombstones) that are absent now. The index is the one
    /// [`Store::list`] reports for the prefix at the same moment, so a blocking delta reader follows
    /// the same index as a full one.
    ///
    /// `None` when the store cannot prove it still holds every tombstone after `since` (`since` is
    /// below [`Store::tombstones_complete_after`]: a reap removed some, or the store restarted or
    /// installed a snapshot since); the caller then reads the whole prefix.
    pub fn changes_since(&self, prefix: &str, since: u64) -> Result<Option<Indexed<Changes>>, ReadError> {
        let view = self.backend.view()?;
        // Read after taking the view: a reap the view holds raised the horizon before it committed.
        if since < self.tombstones_complete_after() {
            return Ok(None);
        }
        let mut entries_max = 0;
        let mut changed = Vec::new();
        tables::scan(&view, Table::Kv, prefix.as_bytes(), |entry: KvEntry| {
            entries_max = entries_max.max(entry.modify_index);
            if entry.modify_index > since {
                changed.push(entry);
            }
            true
        })?;
        let mut stones_max = 0;
        let mut stones = Vec::new();
        tables::scan(&view, Table::Tombstones, prefix.as_bytes(), |stone: Tombstone| {
            stones_max = stones_max.max(stone.index);
            if stone.index > since {
                stones.push(stone);
            }
            true
        })?;
        // A key written again after its delete is live: it is in `changed` (its ModifyIndex is above
        // the delete's, so above `since`), and must not be reported deleted too.
        let mut deleted = Vec::with_capacity(stones.len());
        for stone in stones {
            if tables::kv_get(&view, &stone.key)?.is_none() {
                deleted.push(stone);
            }
        }
        Ok(Some(Indexed {
            index: tables::prefix_index_of(&view, prefix, entries_max, stones_max)?,
            value: Changes {
                since,
                changed,
                deleted,
            },
        }))
    }

    /// Key names under `prefix` (`?keys`), rolled up after the first `separator` following the
    /// prefix (`?separator=/` lists "directories" once). Rolled-up keys still count toward the index,
    /// which follows [`Store::list`]'s rule.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Result<Indexed<Vec<String>>, ReadError> {
        self.read(|view| {
            let mut max = 0;
            let mut keys: Vec<String> = Vec::new();
            tables::scan(view, Table::Kv, prefix.as_bytes(), |entry: KvEntry| {
                max = max.max(entry.modify_index);
                let rolled = separator.filter(|s| !s.is_empty()).and_then(|sep| {
                    let after = entry.key.get(prefix.len()..)?;
                    after
                        .find(sep)
                        .and_then(|at| entry.key.get(..prefix.len() + at + sep.len()))
                });
                match rolled {
                    Some(dir) => {
                        if keys.last().map(String::as_str) != Some(dir) {
                            keys.push(dir.to_owned());
                        }
                    }
                    None => keys.push(entry.key),
                }
                true
            })?;
            Ok(Indexed {
                index: tables::prefix_read_index(view, prefix, max)?,
                value: keys,
            })
        })
    }

    /// The index a recursive read of `prefix` reports (see [`Store::list`]), without the entries.
    pub fn prefix_index(&self, prefix: &str) -> Result<u64, ReadError> {
        Ok(self.list(prefix)?.index)
    }

    /// Tombstones under a prefix (deleted keys not yet reaped), for replicators and tests.
    pub fn tombstones(&self, prefix: &str) -> Result<Vec<Tombstone>, ReadError> {
        self.read(|view| tables::collect(view, Table::Tombstones, prefix.as_bytes()))
    }

    fn table_indexed<T>(
        &self,
        table: IndexedTable,
        f: impl FnOnce(&B::View<'_>) -> Result<T, ReadError>,
    ) -> Result<Indexed<T>, ReadError> {
        self.read(|view| {
            let value = f(view)?;
            Ok(Indexed {
                index: tables::table_index(view, table)?.max(1),
                value,
            })
        })
    }

    /// One session (`/v1/session/info/:id`); the index is the sessions table's.
    pub fn session(&self, id: &str) -> Result<Indexed<Option<Session>>, ReadError> {
        self.table_indexed(IndexedTable::Sessions, |view| {
            tables::get(view, Table::Sessions, id.as_bytes())
        })
    }

    /// Every session (`/v1/session/list`), by ID.
    pub fn sessions(&self) -> Result<Indexed<Vec<Session>>, ReadError> {
        self.table_indexed(IndexedTable::Sessions, |view| {
            tables::collect(view, Table::Sessions, b"")
        })
    }

    /// The sessions of one node (`/v1/session/node/:node`).
    pub fn node_sessions(&self, node: &str) -> Result<Indexed<Vec<Session>>, ReadError> {
        self.table_indexed(IndexedTable::Sessions, |view| {
            let mut out = Vec::new();
            tables::scan(view, Table::Sessions, b"", |s: Session| {
                if s.node == node {
                    out.push(s);
                }
                true
            })?;
            Ok(out)
        })
    }

    /// A token by accessor ID.
    pub fn acl_token(&self, accessor_id: &str) -> Result<Indexed<Option<AclToken>>, ReadError> {
        self.table_indexed(IndexedTable::AclTokens, |view| {
            tables::get(view, Table::AclTokens, accessor_id.as_bytes())
        })
    }

    /// A token by secret ID (how a request's `X-Consul-Token` is resolved). The caller compares
    /// expiration against its own clock.
    pub fn acl_token_by_secret(&self, secret_id: &str) -> Result<Indexed<Option<AclToken>>, ReadError> {
        self.table_indexed(IndexedTable::AclTokens, |view| {
            match tables::get_string(view, Table::AclTokenSecrets, secret_id.as_bytes())? {
                Some(accessor) => tables::get(view, Table::AclTokens, accessor.as_bytes()),
                None => Ok(None),
            }
        })
    }

    /// Every token, by accessor ID.
    pub fn acl_tokens(&self) -> Result<Indexed<Vec<AclToken>>, ReadError> {
        self.table_indexed(IndexedTable::AclTokens, |view| {
            tables::collect(view, Table::AclTokens, b"")
        })
    }

    /// A policy by ID.
    pub fn acl_policy(&self, id: &str) -> Result<Indexed<Option<AclPolicy>>, ReadError> {
        self.table_indexed(IndexedTable::AclPolicies, |view| {
            tables::get(view, Table::AclPolicies, id.as_bytes())
        })
    }

    /// A policy by name.
    pub fn acl_policy_by_name(&self, name: &str) -> Result<Indexed<Option<AclPolicy>>, ReadError> {
        self.table_indexed(IndexedTable::AclPolicies, |view| {
            match tables::get_string(view, Table::AclPolicyNames, name.as_bytes())? {
                Some(id) => tables::get(view, Table::AclPolicies, id.as_bytes()),
                None => Ok(None),
            }
        })
    }

    /// Every policy, by ID.
    pub fn acl_policies(&self) -> Result<Indexed<Vec<AclPolicy>>, ReadError> {
        self.table_indexed(IndexedTable::AclPolicies, |view| {
            tables::collect(view, Table::AclPolicies, b"")
        })
    }

    /// A role by ID.
    pub fn acl_role(&self, id: &str) -> Result<Indexed<Option<AclRole>>, ReadError> {
        self.table_indexed(IndexedTable::AclRoles, |view| {
            tables::get(view, Table::AclRoles, id.as_bytes())
        })
    }

    /// A role by name.
    pub fn acl_role_by_name(&self, name: &str) -> Result<Indexed<Option<AclRole>>, ReadError> {
        self.table_indexed(IndexedTable::AclRoles, |view| {
            match tables::get_string(view, Table::AclRoleNames, name.as_bytes())? {
                Some(id) => tables::get(view, Table::AclRoles, id.as_bytes()),
                None => Ok(None),
            }
        })
    }

    /// Every role, by ID.
    pub fn acl_roles(&self) -> Result<Indexed<Vec<AclRole>>, ReadError> {
        self.table_indexed(IndexedTable::AclRoles, |view| {
            tables::collect(view, Table::AclRoles, b"")
        })
    }

    /// An auth method by name.
    pub fn acl_auth_method(&self, name: &str) -> Result<Indexed<Option<AclAuthMethod>>, ReadError> {
        self.table_indexed(IndexedTable::AclAuthMethods, |view| {
            tables::get(view, Table::AclAuthMethods, name.as_bytes())
        })
    }

    /// Every auth method, by name.
    pub fn acl_auth_methods(&self) -> Result<Indexed<Vec<AclAuthMethod>>, ReadError> {
        self.table_indexed(IndexedTable::AclAuthMethods, |view| {
            tables::collect(view, Table::AclAuthMethods, b"")
        })
    }

    /// A binding rule by ID.
    pub fn acl_binding_rule(&self, id: &str) -> Result<Indexed<Option<AclBindingRule>>, ReadError> {
        self.table_indexed(IndexedTable::AclBindingRules, |view| {
            tables::get(view, Table::AclBindingRules, id.as_bytes())
        })
    }

    /// Every binding rule, by ID.
    pub fn acl_binding_rules(&self) -> Result<Indexed<Vec<AclBindingRule>>, ReadError> {
        self.table_indexed(IndexedTable::AclBindingRules, |view| {
            tables::collect(view, Table::AclBindingRules, b"")
        })
    }

    /// Whether ACLs were bootstrapped, and the reset index.
    pub fn acl_bootstrap_state(&self) -> Result<AclBootstrapState, ReadError> {
        self.read(|view| tables::acl_bootstrap(view))
    }

    /// The index a blocking query on `scope` compares against.
    pub fn scope_index(&self, scope: &WatchScope) -> Result<u64, ReadError> {
        match scope {
            WatchScope::Key(key) => Ok(self.get(key)?.index),
            WatchScope::Prefix(prefix) => self.prefix_index(prefix),
            WatchScope::Sessions => self.read(|v| Ok(tables::table_index(v, IndexedTable::Sessions)?.max(1))),
            WatchScope::Acl => self.read(|v| {
                let mut index = 1;
                for table in tables::ACL_INDEXED_TABLES {
                    index = index.max(tables::table_index(v, table)?);
                }
                Ok(index)
            }),
            WatchScope::Nodes => self.read(|v| Ok(tables::table_index(v, IndexedTable::Nodes)?.max(1))),
            WatchScope::Services => self.read(|v| Ok(tables::table_index(v, IndexedTable::Services)?.max(1))),
            WatchScope::Checks => self.read(|v| Ok(tables::table_index(v, IndexedTable::Checks)?.max(1))),
            WatchScope::Service(name) => self.read(|v| crate::catalog::service_read_index(v, name)),
            WatchScope::Node(name) => self.read(|v| crate::catalog::node_scope_index(v, name)),
        }
    }

    /// A blocking query's wait: returns as soon as the scope's index is above `after_index`, when the
    /// state is restored, or at `deadline`. An idle wait costs one registered subscription; nothing polls.
    /// Needs a tokio runtime with the time driver.
    pub async fn wait(
        &self,
        scope: &WatchScope,
        after_index: u64,
        deadline: Instant,
    ) -> Result<WaitOutcome, ReadError> {
        loop {
            let subscription = self.hub.subscribe(scope.clone());
            let index = self.scope_index(scope)?;
            if index > after_index {
                return Ok(WaitOutcome::Changed { index });
            }
            match subscription.wait_until(deadline).await {
                None => {
                    return Ok(WaitOutcome::TimedOut {
                        index: self.scope_index(scope)?,
                    });
                }
                Some(Wake::Reset) => {
                    return Ok(WaitOutcome::Reset {
                        index: self.scope_index(scope)?,
                    });
                }
                // A touch is not always a change of the scope's index (e.g. a tombstone elsewhere in
                // the prefix's past): check again.
                Some(Wake::Changed { .. }) => {}
            }
        }
    }

    /// Every record of the live state, in export order (tests compare backends with it).
    pub fn dump(&self) -> Result<Vec<crate::model::StateRecord>, ReadError> {
        let view = self.backend.view()?;
        crate::export::collect_records(&view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_transaction_answers_like_apply_without_consuming_an_index() {
        let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let set = Command::KvSet {
            key: "a/1".into(),
            value: b"one".to_vec(),
            flags: 7,
        };
        store.apply(5, &set).unwrap();
        let ops = vec![
            TxnOp::Get { key: "a/1".into() },
            TxnOp::GetTree { prefix: "a/".into() },
            TxnOp::CheckIndex {
                key: "a/1".into(),
                index: 5,
            },
            TxnOp::CheckNotExists { key: "b".into() },
        ];
        let read = store.read_txn(&ops).unwrap();
        assert_eq!(read.index, 5);
        assert!(read.value.committed());
        let Outcome::Txn(applied) = store.apply(6, &Command::Txn { ops: ops.clone() }).unwrap() else {
            panic!("a transaction gives a transaction outcome");
        };
        assert_eq!(read.value, applied);
        assert_eq!(store.last_applied(), 6);

        let failing = vec![
            TxnOp::Get {
                key: "missing".into(),
            },
            TxnOp::CheckIndex {
                key: "a/1".into(),
                index: 4,
            },
        ];
        let read = store.read_txn(&failing).unwrap().value;
        assert_eq!(read.errors.len(), 2);
        assert!(read.results.is_empty());
        let Outcome::Txn(applied) = store.apply(7, &Command::Txn { ops: failing }).unwrap() else {
            panic!("a transaction gives a transaction outcome");
        };
        assert_eq!(read, applied);

        let write = vec![TxnOp::Delete { key: "a/1".into() }];
        assert!(matches!(
            store.read_txn(&write),
            Err(ApplyError::InvalidField { field: "ops", .. })
        ));
        assert!(store.read_txn(&[TxnOp::Get { key: "/bad".into() }]).is_err());
        assert_eq!(store.last_applied(), 7);
    }
}
