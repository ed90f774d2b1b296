//! Export and import of the whole state through tribune-snapshot archives.
//!
//! Record kinds (payloads are the serde types of [`crate::model`], bincode-encoded by the archive):
//! 1 KV entry, 2 tombstone, 3 session, 4 ACL token, 5 ACL policy, 6 table index `(IndexedTable, u64)`,
//! 7 ACL bootstrap state, 8 ACL role, 9 ACL auth method, 10 ACL binding rule (8-10 since format 3),
//! 11 catalog node, 12 service instance, 13 health check, 14 service-name index `(String, u64)`,
//! 15 node index `(String, u64)` (11-15 since the catalog; their table indexes travel as kind 6).
//! Kinds are only ever appended. A reader refuses unknown kinds: a restore never skips a record, so a
//! build without the catalog refuses an archive that holds catalog records rather than dropping them.
//! Token records written before format 3 have the format-2 shape and are read as such (see the
//! `legacy` module).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use tribune_snapshot::{
    Inspection, Record, RecordKind, SnapshotError, SnapshotMeta, SnapshotReader, SnapshotWriter,
};

use crate::apply::{Touched, stage_record};
use crate::backend::{Backend, Batch, BatchOp, Slot, Table};
use crate::catalog::{HealthCheck, Node, ServiceInstance};
use crate::error::{BackendError, ReadError};
use crate::model::{
    AclAuthMethod, AclBindingRule, AclBootstrapState, AclPolicy, AclRole, AclToken, IndexedTable, KvEntry,
    Session, StateRecord, Tombstone,
};
use crate::store::Store;
use crate::tables::{self, encode_u64};

/// Record kind of a KV entry.
pub const KV_RECORD: RecordKind = RecordKind(1);
/// Record kind of a tombstone.
pub const TOMBSTONE_RECORD: RecordKind = RecordKind(2);
/// Record kind of a session.
pub const SESSION_RECORD: RecordKind = RecordKind(3);
/// Record kind of an ACL token.
pub const ACL_TOKEN_RECORD: RecordKind = RecordKind(4);
/// Record kind of an ACL policy.
pub const ACL_POLICY_RECORD: RecordKind = RecordKind(5);
/// Record kind of a table index.
pub const TABLE_INDEX_RECORD: RecordKind = RecordKind(6);
/// Record kind of the ACL bootstrap state.
pub const ACL_BOOTSTRAP_RECORD: RecordKind = RecordKind(7);
/// Record kind of an ACL role.
pub const ACL_ROLE_RECORD: RecordKind = RecordKind(8);
/// Record kind of an ACL auth method.
pub const ACL_AUTH_METHOD_RECORD: RecordKind = RecordKind(9);
/// Record kind of an ACL binding rule.
pub const ACL_BINDING_RULE_RECORD: RecordKind = RecordKind(10);
/// Record kind of a catalog node.
pub const CATALOG_NODE_RECORD: RecordKind = RecordKind(11);
/// Record kind of a service instance.
pub const CATALOG_SERVICE_RECORD: RecordKind = RecordKind(12);
/// Record kind of a health check.
pub const CATALOG_CHECK_RECORD: RecordKind = RecordKind(13);
/// Record kind of a service name's index.
pub const CATALOG_SERVICE_INDEX_RECORD: RecordKind = RecordKind(14);
/// Record kind of a node's index.
pub const CATALOG_NODE_INDEX_RECORD: RecordKind = RecordKind(15);

/// Staging writes are committed in batches of about this many operations while importing, so memory
/// stays bounded by one batch, not by the archive.
const IMPORT_BATCH_OPS: usize = 16 * 1024;

/// What the caller adds to an export's metadata (the store supplies index and datacenter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// The raft term of the entry at the exported index (the store does not know terms).
    pub term: u64,
    /// When the snapshot is taken; the store reads no clock.
    pub created_at_unix_ms: u64,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

/// An export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the state failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the archive failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// An import failed; the live state is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The archive is malformed, truncated, tampered with (digest mismatch) or unreadable.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The archive holds a record kind this build does not know.
    #[error("unknown record kind {kind} in the archive")]
    UnknownKind {
        /// The kind.
        kind: RecordKind,
    },
    /// The archive belongs to another datacenter.
    #[error("the archive belongs to datacenter {archive:?}, this store to {store:?}")]
    DatacenterMismatch {
        /// Datacenter in the archive.
        archive: String,
        /// The store's datacenter.
        store: String,
    },
    /// The caller's record stream (see [`Store::import_records`]) failed.
    #[error("record source failed: {reason}")]
    Source {
        /// What went wrong.
        reason: String,
    },
    /// The backend failed while staging or swapping.
    #[error(transparent)]
    Storage(#[from] BackendError),
}

/// What an import installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The archive's metadata; `meta.index` is now the store's last applied index.
    pub meta: SnapshotMeta,
    /// Records installed.
    pub records: u64,
}

impl StateRecord {
    /// The archive record kind of this record.
    pub fn kind(&self) -> RecordKind {
        match self {
            StateRecord::Kv(_) => KV_RECORD,
            StateRecord::Tombstone(_) => TOMBSTONE_RECORD,
            StateRecord::Session(_) => SESSION_RECORD,
            StateRecord::AclToken(_) => ACL_TOKEN_RECORD,
            StateRecord::AclPolicy(_) => ACL_POLICY_RECORD,
            StateRecord::TableIndex { .. } => TABLE_INDEX_RECORD,
            StateRecord::AclBootstrap(_) => ACL_BOOTSTRAP_RECORD,
            StateRecord::AclRole(_) => ACL_ROLE_RECORD,
            StateRecord::AclAuthMethod(_) => ACL_AUTH_METHOD_RECORD,
            StateRecord::AclBindingRule(_) => ACL_BINDING_RULE_RECORD,
            StateRecord::Node(_) => CATALOG_NODE_RECORD,
            StateRecord::Service(_) => CATALOG_SERVICE_RECORD,
            StateRecord::Check(_) => CATALOG_CHECK_RECORD,
            StateRecord::ServiceIndex { .. } => CATALOG_SERVICE_INDEX_RECORD,
            StateRecord::NodeIndex { .. } => CATALOG_NODE_INDEX_RECORD,
        }
    }

    /// Writes this record to an archive.
    pub fn write_to<W: Write>(&self, writer: &mut SnapshotWriter<W>) -> Result<(), SnapshotError> {
        let kind = self.kind();
        match self {
            StateRecord::Kv(v) => writer.write_record(kind, v),
            StateRecord::Tombstone(v) => writer.write_record(kind, v),
            StateRecord::Session(v) => writer.write_record(kind, v),
            StateRecord::AclToken(v) => writer.write_record(kind, v),
            StateRecord::AclPolicy(v) => writer.write_record(kind, v),
            StateRecord::TableIndex { table, index } => writer.write_record(kind, &(*table, *index)),
            StateRecord::AclBootstrap(v) => writer.write_record(kind, v),
            StateRecord::AclRole(v) => writer.write_record(kind, v),
            StateRecord::AclAuthMethod(v) => writer.write_record(kind, v),
            StateRecord::AclBindingRule(v) => writer.write_record(kind, v),
            StateRecord::Node(v) => writer.write_record(kind, v),
            StateRecord::Service(v) => writer.write_record(kind, v),
            StateRecord::Check(v) => writer.write_record(kind, v),
            StateRecord::ServiceIndex { service, index } => writer.write_record(kind, &(service, *index)),
            StateRecord::NodeIndex { node, index } => writer.write_record(kind, &(node, *index)),
        }
    }

    /// Decodes an archive record (for example to build `RestoreChunk` commands).
    pub fn from_archive(record: &Record) -> Result<StateRecord, ImportError> {
        Ok(match record.kind {
            KV_RECORD => StateRecord::Kv(record.decode::<KvEntry>()?),
            TOMBSTONE_RECORD => StateRecord::Tombstone(record.decode::<Tombstone>()?),
            // Archives written before sessions had `node_checks` hold format-1 sessions.
            SESSION_RECORD => StateRecord::Session(record.decode::<Session>().or_else(|current| {
                record
                    .decode::<crate::legacy::SessionV1>()
                    .map(Session::from)
                    .map_err(|_| current)
            })?),
            // Archives written before format 3 hold format-2 tokens.
            ACL_TOKEN_RECORD => StateRecord::AclToken(record.decode::<AclToken>().or_else(|current| {
                record
                    .decode::<crate::legacy::AclTokenV2>()
                    .map(AclToken::from)
                    .map_err(|_| current)
            })?),
            ACL_POLICY_RECORD => StateRecord::AclPolicy(record.decode::<AclPolicy>()?),
            TABLE_INDEX_RECORD => {
                let (table, index) = record.decode::<(IndexedTable, u64)>()?;
                StateRecord::TableIndex { table, index }
            }
            ACL_BOOTSTRAP_RECORD => StateRecord::AclBootstrap(record.decode::<AclBootstrapState>()?),
            ACL_ROLE_RECORD => StateRecord::AclRole(record.decode::<AclRole>()?),
            ACL_AUTH_METHOD_RECORD => StateRecord::AclAuthMethod(record.decode::<AclAuthMethod>()?),
            ACL_BINDING_RULE_RECORD => StateRecord::AclBindingRule(record.decode::<AclBindingRule>()?),
            CATALOG_NODE_RECORD => StateRecord::Node(record.decode::<Node>()?),
            CATALOG_SERVICE_RECORD => StateRecord::Service(record.decode::<ServiceInstance>()?),
            CATALOG_CHECK_RECORD => StateRecord::Check(Box::new(record.decode::<HealthCheck>()?)),
            CATALOG_SERVICE_INDEX_RECORD => {
                let (service, index) = record.decode::<(String, u64)>()?;
                StateRecord::ServiceIndex { service, index }
            }
            CATALOG_NODE_INDEX_RECORD => {
                let (node, index) = record.decode::<(String, u64)>()?;
                StateRecord::NodeIndex { node, index }
            }
            kind => return Err(ImportError::UnknownKind { kind }),
        })
    }
}

impl<B: Backend> Store<B> {
    /// Streams a point-in-time copy of the whole state into an archive. The view is a RocksDB snapshot
    /// (or a private copy for the memory backend): applies continue while the export runs, and the
    /// archive's `meta.index` is the last applied index of exactly the state written.
    pub fn export<W: Write>(&self, out: W, options: &ExportOptions) -> Result<(W, Inspection), ExportError> {
        let view = self.backend.export_view().map_err(ReadError::from)?;
        crate::export::write_archive(&view, &self.datacenter, options, out)
    }

    /// Replaces the whole state with an archive's, atomically.
    ///
    /// Records are streamed into the staging tables in bounded batches; only after the reader has
    /// checked the trailer digest does one batch swap staging and live and set the last applied index to
    /// the archive's. Any failure — truncation, tampering, an unknown kind, another datacenter — leaves
    /// the live state untouched. Applies wait while an import runs; every blocked reader is woken with
    /// [`crate::Wake::Reset`] afterwards.
    pub fn import<R: Read>(&self, input: R) -> Result<ImportReport, ImportError> {
        let mut reader = SnapshotReader::new(input)?;
        let meta = reader.meta().clone();
        if meta.datacenter != self.datacenter {
            return Err(ImportError::DatacenterMismatch {
                archive: meta.datacenter,
                store: self.datacenter.clone(),
            });
        }
        // `next_record` returns `Ok(None)` only after the trailer digest checked out, so the swap in
        // `import_records` happens only for a verified archive.
        let records = std::iter::from_fn(|| match reader.next_record() {
            Ok(Some(record)) => Some(StateRecord::from_archive(&record)),
            Ok(None) => None,
            Err(err) => Some(Err(err.into())),
        });
        let records = self.import_records(meta.index, records)?;
        Ok(ImportReport { meta, records })
    }

    /// Replaces the whole state with a stream of records, atomically, and sets the last applied index
    /// to `index` (for a snapshot installed by consensus in its own format). The records are staged in
    /// bounded batches; the first `Err` from the stream aborts with the live state untouched; when the
    /// stream ends, one batch swaps the staged state in. Returns how many records were installed.
    pub fn import_records<I>(&self, index: u64, records: I) -> Result<u64, ImportError>
    where
        I: IntoIterator<Item = Result<StateRecord, ImportError>>,
    {
        let _serial = self.apply_lock.lock();
        let mut batch = Batch::new();
        // The staging area is about to be overwritten: a staged restore in progress cannot continue.
        batch.push(BatchOp::Delete {
            slot: Slot::Live,
            table: Table::Meta,
            key: tables::META_RESTORE_ID.to_vec(),
        });
        batch.push(BatchOp::ClearStaging);
        let count = match self.stage_records(records, batch) {
            Ok(count) => count,
            Err(err) => {
                // Free the staging area; the live state was never touched.
                let mut clear = Batch::new();
                clear.push(BatchOp::ClearStaging);
                let _ = self.backend.commit(clear);
                return Err(err);
            }
        };
        // Nothing before the installed state's index is provable from its tombstones (raised before
        // the swap commits; see `Store::apply`).
        self.tombstones_complete_after
            .fetch_max(index, std::sync::atomic::Ordering::AcqRel);
        let mut swap = Batch::new();
        swap.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::Meta,
            key: tables::META_APPLIED_INDEX.to_vec(),
            value: encode_u64(index),
        });
        swap.promote_staging();
        self.backend.commit(swap)?;
        self.last_applied
            .store(index, std::sync::atomic::Ordering::Release);
        self.hub.notify(
            index,
            &Touched {
                reset: true,
                ..Touched::default()
            },
        );
        Ok(count)
    }

    fn stage_records<I>(&self, records: I, mut batch: Batch) -> Result<u64, ImportError>
    where
        I: IntoIterator<Item = Result<StateRecord, ImportError>>,
    {
        let mut ops = Vec::new();
        let mut count = 0u64;
        for record in records {
            stage_record(&record?, &mut ops);
            count += 1;
            if ops.len() >= IMPORT_BATCH_OPS {
                for op in ops.drain(..) {
                    batch.push(op);
                }
                self.backend.commit(std::mem::take(&mut batch))?;
            }
        }
        for op in ops {
            batch.push(op);
        }
        self.backend.commit(batch)?;
        Ok(count)
    }
}
