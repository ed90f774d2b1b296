//! The RocksDB backend: one column family per table and slot, one `WriteBatch` per commit.
//!
//! Durability: batches are written to the WAL without fsync. That is safe because the raft log (the
//! consensus crate syncs it) is the source of truth: after a crash the node replays the log from
//! `last_applied + 1`. What must never happen is a recorded applied index ahead of the data it
//! covers, or half a command; both are excluded because a command's writes and its index travel in
//! the same atomic batch, and RocksDB recovers a WAL to a batch boundary.

use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use rocksdb::{
    ColumnFamily, DB, Direction, IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch,
    WriteOptions,
};

use super::{Backend, Batch, BatchOp, ReadView, Slot, Table};
use crate::error::{BackendError, OpenError};
use crate::store::{Store, StoreConfig};

const META_CF: &str = "meta";
const ACTIVE_SLOT_KEY: &[u8] = b"active_slot";
/// Above every table key (keys are UTF-8, which never contains 0xFF).
const TABLE_END: &[u8] = &[0xFF];

fn cf_name(table: Table, slot: usize) -> String {
    format!("{}.{slot}", table.name())
}

fn all_cf_names() -> Vec<String> {
    let mut names = vec![META_CF.to_owned()];
    for slot in 0..2 {
        names.extend(Table::SLOTTED.iter().map(|t| cf_name(*t, slot)));
    }
    names
}

fn rocks(err: rocksdb::Error) -> BackendError {
    BackendError::Rocks(err.into_string())
}

/// Stores the tables in a RocksDB database. Every slotted table has two column families (`kv.0`,
/// `kv.1`, ...); `meta:active_slot` says which one is live, so a restore is built in the other and
/// swapped in by one batch.
pub struct RocksBackend {
    db: DB,
    path: PathBuf,
    /// The live slot (0 or 1). Written only under the write lock, together with the batch that flips it.
    active: RwLock<usize>,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackend")
            .field("path", &self.path)
            .field("active_slot", &*self.active.read())
            .finish()
    }
}

impl RocksBackend {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf(&options, path, all_cf_names()).map_err(rocks)?;
        let active = {
            let meta = db
                .cf_handle(META_CF)
                .ok_or_else(|| BackendError::MissingColumnFamily(META_CF.into()))?;
            match db.get_cf(meta, ACTIVE_SLOT_KEY).map_err(rocks)?.as_deref() {
                Some([1]) => 1,
                _ => 0,
            }
        };
        Ok(Self {
            db,
            path: path.to_owned(),
            active: RwLock::new(active),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the WAL to disk (fsync). Not needed for correctness (see the module docs); useful before
    /// a planned shutdown to shorten the next replay.
    pub fn sync_wal(&self) -> Result<(), BackendError> {
        self.db.flush_wal(true).map_err(rocks)
    }

    fn cf(&self, table: Table, slot: usize) -> Result<&ColumnFamily, BackendError> {
        let name = match table {
            Table::Meta => META_CF.to_owned(),
            _ => cf_name(table, slot),
        };
        self.db
            .cf_handle(&name)
            .ok_or(BackendError::MissingColumnFamily(name))
    }
}

/// A consistent view of [`RocksBackend`]: a RocksDB snapshot and the slot that was live when it was
/// taken. It does not block commits, so it also serves long exports.
pub struct RocksView<'a> {
    backend: &'a RocksBackend,
    snapshot: SnapshotWithThreadMode<'a, DB>,
    slot: usize,
}

/// Smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl ReadView for RocksView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let cf = self.backend.cf(table, self.slot)?;
        self.snapshot.get_cf(cf, key).map_err(rocks)
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let cf = self.backend.cf(table, self.slot)?;
        let mut options = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            options.set_iterate_upper_bound(end);
        }
        for item in self
            .snapshot
            .iterator_cf_opt(cf, options, IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, value) = item.map_err(rocks)?;
            if !key.starts_with(prefix) || !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }
}

impl Backend for RocksBackend {
    type View<'a> = RocksView<'a>;
    type ExportView<'a> = RocksView<'a>;

    fn view(&self) -> Result<RocksView<'_>, BackendError> {
        let active = self.active.read();
        Ok(RocksView {
            backend: self,
            snapshot: self.db.snapshot(),
            slot: *active,
        })
    }

    fn export_view(&self) -> Result<RocksView<'_>, BackendError> {
        self.view()
    }

    fn commit(&self, batch: Batch) -> Result<(), BackendError> {
        let mut active = self.active.write();
        let live = *active;
        let staging = 1 - live;
        let slot_of = |slot: Slot| if slot == Slot::Live { live } else { staging };
        let mut write = WriteBatch::default();
        for op in &batch.ops {
            match op {
                BatchOp::Put {
                    slot,
                    table,
                    key,
                    value,
                } => write.put_cf(self.cf(*table, slot_of(*slot))?, key, value),
                BatchOp::Delete { slot, table, key } => {
                    write.delete_cf(self.cf(*table, slot_of(*slot))?, key)
                }
                BatchOp::ClearStaging => {
                    for table in Table::SLOTTED {
                        write.delete_range_cf(self.cf(table, staging)?, &b""[..], TABLE_END);
                    }
                }
            }
        }
        if batch.promote_staging {
            write.put_cf(self.cf(Table::Meta, 0)?, ACTIVE_SLOT_KEY, [staging as u8]);
            for table in Table::SLOTTED {
                write.delete_range_cf(self.cf(table, live)?, &b""[..], TABLE_END);
            }
        }
        let mut options = WriteOptions::default();
        // Unsynced on purpose: see the module docs (the raft log is durable and replays).
        options.set_sync(false);
        self.db.write_opt(write, &options).map_err(rocks)?;
        if batch.promote_staging {
            *active = staging;
        }
        Ok(())
    }
}

/// A store on RocksDB.
pub type RocksStore = Store<RocksBackend>;

impl Store<RocksBackend> {
    /// Opens (or creates) a RocksDB store in the directory `path`, resuming from its last applied index.
    pub fn open_rocksdb(path: &Path, config: StoreConfig) -> Result<Self, OpenError> {
        config.validate()?;
        Self::with_backend(RocksBackend::open(path)?, config)
    }
}
