//! The storage contract: sorted byte tables, consistent read views, and atomic batches.
//!
//! The store's semantics live once, in [`crate::Store`]; a backend only keeps bytes. That is what lets
//! one conformance suite and one property test show that both backends behave identically.

pub(crate) mod memory;
#[cfg(feature = "rocksdb")]
pub(crate) mod rocks;

use std::io::Write;

use crate::error::BackendError;

/// The tables a backend keeps. Every table except [`Table::Meta`] exists twice — a live copy and a
/// staging copy — so a restore can be built beside the live state and swapped in atomically.
///
/// Table keys are UTF-8 text (joined with NUL for composite keys), so no key contains the byte 0xFF:
/// backends may use `[0xFF]` as an upper bound for "the whole table".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// KV entries by key.
    Kv,
    /// Tombstones by key.
    Tombstones,
    /// Sessions by ID.
    Sessions,
    /// `session NUL key` for every key a session holds (derived).
    SessionLocks,
    /// ACL tokens by accessor ID.
    AclTokens,
    /// Accessor ID by secret ID (derived).
    AclTokenSecrets,
    /// ACL policies by ID.
    AclPolicies,
    /// Policy ID by name (derived).
    AclPolicyNames,
    /// ACL roles by ID.
    AclRoles,
    /// Role ID by name (derived).
    AclRoleNames,
    /// ACL auth methods by name.
    AclAuthMethods,
    /// ACL binding rules by ID.
    AclBindingRules,
    /// Replicated bookkeeping: table indexes, ACL bootstrap state.
    State,
    /// Local bookkeeping, never staged nor exported: last applied index, datacenter, restore in progress.
    Meta,
    /// Catalog nodes by lowercased name.
    CatalogNodes,
    /// Lowercased node name by lowercased node ID (derived).
    CatalogNodeIds,
    /// Service instances by `node NUL service ID`, both lowercased.
    CatalogServices,
    /// `service name NUL node NUL service ID`, lowercased, for every instance (derived).
    CatalogServiceNames,
    /// Health checks by `node NUL check ID`, both lowercased.
    CatalogChecks,
    /// `service name NUL node NUL check ID`, lowercased, for every check of an instance (derived).
    CatalogCheckServices,
    /// The per-service-name and per-node indexes (`s NUL name`, `n NUL node`, lowercased).
    CatalogIndexes,
}

impl Table {
    /// Every table that has a live and a staging copy.
    pub const SLOTTED: [Table; 20] = [
        Table::Kv,
        Table::Tombstones,
        Table::Sessions,
        Table::SessionLocks,
        Table::AclTokens,
        Table::AclTokenSecrets,
        Table::AclPolicies,
        Table::AclPolicyNames,
        Table::AclRoles,
        Table::AclRoleNames,
        Table::AclAuthMethods,
        Table::AclBindingRules,
        Table::State,
        Table::CatalogNodes,
        Table::CatalogNodeIds,
        Table::CatalogServices,
        Table::CatalogServiceNames,
        Table::CatalogChecks,
        Table::CatalogCheckServices,
        Table::CatalogIndexes,
    ];

    /// A stable short name (RocksDB column families are named after it).
    pub fn name(self) -> &'static str {
        match self {
            Table::Kv => "kv",
            Table::Tombstones => "tombstones",
            Table::Sessions => "sessions",
            Table::SessionLocks => "session_locks",
            Table::AclTokens => "acl_tokens",
            Table::AclTokenSecrets => "acl_token_secrets",
            Table::AclPolicies => "acl_policies",
            Table::AclPolicyNames => "acl_policy_names",
            Table::AclRoles => "acl_roles",
            Table::AclRoleNames => "acl_role_names",
            Table::AclAuthMethods => "acl_auth_methods",
            Table::AclBindingRules => "acl_binding_rules",
            Table::State => "state",
            Table::Meta => "meta",
            Table::CatalogNodes => "catalog_nodes",
            Table::CatalogNodeIds => "catalog_node_ids",
            Table::CatalogServices => "catalog_services",
            Table::CatalogServiceNames => "catalog_service_names",
            Table::CatalogChecks => "catalog_checks",
            Table::CatalogCheckServices => "catalog_check_services",
            Table::CatalogIndexes => "catalog_indexes",
        }
    }

    pub(crate) fn slot_position(self) -> Option<usize> {
        Table::SLOTTED.iter().position(|t| *t == self)
    }
}

/// Which copy of a slotted table a write targets. Writes to [`Table::Meta`] ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The state readers see.
    Live,
    /// The restore being built.
    Staging,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchOp {
    /// Insert or replace.
    Put {
        /// Live or staging copy.
        slot: Slot,
        /// Table.
        table: Table,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove (absent keys are fine).
    Delete {
        /// Live or staging copy.
        slot: Slot,
        /// Table.
        table: Table,
        /// Key.
        key: Vec<u8>,
    },
    /// Empty every staging table.
    ClearStaging,
}

/// Writes that a backend applies all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
    promote_staging: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a write.
    pub fn push(&mut self, op: BatchOp) {
        self.ops.push(op);
    }

    /// Asks that, after the writes, the staging tables become the live tables and the old live tables
    /// are emptied (they become the next staging area).
    pub fn promote_staging(&mut self) {
        self.promote_staging = true;
    }

    /// The writes, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Whether the batch ends with a promotion of the staging tables.
    pub fn promotes_staging(&self) -> bool {
        self.promote_staging
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch has no writes and no promotion.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && !self.promote_staging
    }
}

/// A consistent, read-only view of the live tables (and [`Table::Meta`]).
///
/// Implementations MUST return data from one point in time for the whole life of the view: a batch
/// committed after the view was taken is invisible through it, in every table.
pub trait ReadView {
    /// The value at `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// Calls `visit` with every entry whose key starts with `prefix`, in ascending key order, until it
    /// returns `false`.
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError>;
}

/// A point-in-time view that owns what it needs, so it can be taken in one place (between two
/// applies, cheaply) and read later on another thread while commits continue.
///
/// Implementations MUST show exactly the live tables (and [`Table::Meta`]) as they were when
/// [`Backend::freeze`] returned, however many batches are committed afterwards, and MUST release
/// whatever they hold (a RocksDB snapshot, a thread) when dropped, used or not.
pub trait FrozenView: Send + 'static {
    /// Runs `job` once against the frozen tables and copies, in order, every byte `job` writes to
    /// its `Write` into `out`, returning what `job` returned.
    ///
    /// The job may run on another thread (the RocksDB backend reads its snapshot on a thread that
    /// owns it), so the bytes travel through a bounded buffer: memory stays O(one chunk), never
    /// O(view). An `Err` is `out`'s own error, or the job's thread stopping before it finished;
    /// the job then sees its writes fail and stops.
    fn stream<T, F>(self, out: &mut dyn Write, job: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadView, &mut dyn Write) -> T + Send + 'static;
}

/// A place the store's tables live.
///
/// Implementations MUST:
/// - apply a [`Batch`] atomically: after a crash or an error, either every write of the batch (and
///   its promotion) is visible, or none is;
/// - make a committed batch visible to every view taken after `commit` returns;
/// - keep views consistent (see [`ReadView`]) and allow views to be used while another thread commits.
pub trait Backend: Send + Sync + 'static {
    /// A short-lived consistent view, used for reads and while applying one command.
    type View<'a>: ReadView
    where
        Self: 'a;
    /// A long-lived consistent view for export, which must not block commits while it lives.
    type ExportView<'a>: ReadView
    where
        Self: 'a;
    /// An owned point-in-time view (see [`FrozenView`]).
    type Frozen: FrozenView;

    /// Takes a consistent view of the live tables.
    fn view(&self) -> Result<Self::View<'_>, BackendError>;

    /// Takes a point-in-time view for a long export.
    fn export_view(&self) -> Result<Self::ExportView<'_>, BackendError>;

    /// Fixes the current point in time in an owned view (for snapshots written after the caller
    /// has moved on). MUST be cheap — O(1) or close, no copy of the tables — and MUST NOT block
    /// commits beyond that: it is called between two applies.
    fn freeze(&self) -> Result<Self::Frozen, BackendError>;

    /// Applies a batch atomically.
    fn commit(&self, batch: Batch) -> Result<(), BackendError>;
}
