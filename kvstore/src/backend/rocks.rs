//! The RocksDB backend: one column family per table and slot, one `WriteBatch` per commit.
//!
//! Durability: batches are written to the WAL without fsync. That is safe because the raft log (the
//! consensus crate syncs it) is the source of truth: after a crash the node replays the log from
//! `last_applied + 1`. What must never happen is a recorded applied index ahead of the data it
//! covers, or half a command; both are excluded because a command's writes and its index travel in
//! the same atomic batch, and RocksDB recovers a WAL to a batch boundary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use parking_lot::RwLock;
use rocksdb::{
    ColumnFamily, DB, Direction, IteratorMode, Options, ReadOptions, SnapshotWithThreadMode, WriteBatch,
    WriteOptions,
};

use super::{Backend, Batch, BatchOp, FrozenView, ReadView, Slot, Table};
use crate::error::{BackendError, OpenError};
use crate::store::{Store, StoreConfig};

const META_CF: &str = "meta";
const ACTIVE_SLOT_KEY: &[u8] = b"active_slot";
/// Above every table key (keys are UTF-8, which never contains 0xFF).
const TABLE_END: &[u8] = &[0xFF];
/// A frozen view streams its job's output in pieces of about this size...
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// ...with at most this many pieces waiting for the reader, so a slow reader holds back the job
/// instead of letting the pieces pile up in memory.
const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

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
    /// Shared with the threads of frozen views, which own their RocksDB snapshot (a snapshot
    /// borrows its database, so it can only outlive a call on a thread that owns an `Arc` of it).
    db: Arc<DB>,
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
            db: Arc::new(db),
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
        cf_of(&self.db, table, slot)
    }
}

fn cf_of(db: &DB, table: Table, slot: usize) -> Result<&ColumnFamily, BackendError> {
    let name = match table {
        Table::Meta => META_CF.to_owned(),
        _ => cf_name(table, slot),
    };
    db.cf_handle(&name).ok_or(BackendError::MissingColumnFamily(name))
}

/// A consistent view of [`RocksBackend`]: a RocksDB snapshot and the slot that was live when it was
/// taken. It does not block commits, so it also serves long exports.
pub struct RocksView<'a> {
    db: &'a DB,
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
        let cf = cf_of(self.db, table, self.slot)?;
        self.snapshot.get_cf(cf, key).map_err(rocks)
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        let cf = cf_of(self.db, table, self.slot)?;
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

/// What a frozen view's thread runs against its snapshot.
type FrozenJob = Box<dyn FnOnce(&RocksView<'_>) + Send>;

/// An owned point-in-time view of [`RocksBackend`]: a thread that took a RocksDB snapshot when the
/// view was frozen and waits, holding it, for the one job [`FrozenView::stream`] sends. Dropping the
/// view unused ends the thread and releases the snapshot.
pub struct RocksFrozenView {
    job: Option<SyncSender<FrozenJob>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RocksFrozenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksFrozenView").finish_non_exhaustive()
    }
}

impl RocksFrozenView {
    fn freeze(backend: &RocksBackend) -> Result<Self, BackendError> {
        let (taken_tx, taken_rx) = sync_channel::<()>(1);
        let (job_tx, job_rx) = sync_channel::<FrozenJob>(1);
        let db = Arc::clone(&backend.db);
        // Held until the thread has its snapshot: no commit (which takes the write lock) can slip in
        // between the snapshot and the live slot it is read with.
        let active = backend.active.read();
        let slot = *active;
        let thread = std::thread::Builder::new()
            .name("kvstore-snapshot".into())
            .spawn(move || {
                let view = RocksView {
                    db: &db,
                    snapshot: db.snapshot(),
                    slot,
                };
                if taken_tx.send(()).is_ok()
                    && let Ok(job) = job_rx.recv()
                {
                    job(&view);
                }
            })
            .map_err(|e| BackendError::Rocks(format!("starting a snapshot thread: {e}")))?;
        let taken = taken_rx.recv();
        drop(active);
        let view = RocksFrozenView {
            job: Some(job_tx),
            thread: Some(thread),
        };
        match taken {
            Ok(()) => Ok(view),
            Err(_) => Err(BackendError::Rocks(
                "the snapshot thread stopped before taking its snapshot".into(),
            )),
        }
    }
}

impl Drop for RocksFrozenView {
    fn drop(&mut self) {
        // Closing the job channel ends a thread still waiting for its job; a thread running one ends
        // when the job does (its writes fail once the reader is gone). Joining means the snapshot,
        // and this thread's share of the database, are released when the view is gone.
        drop(self.job.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What travels from a frozen view's job to the reader.
enum Piece<T> {
    Bytes(Vec<u8>),
    Done(T),
}

/// The job's `Write`: buffers up to a chunk, then hands it to the reader (waiting while the reader
/// already has [`STREAM_CHUNKS_IN_FLIGHT`] chunks to write).
struct ChunkPipe<T> {
    to_reader: SyncSender<Piece<T>>,
    buffer: Vec<u8>,
}

impl<T> ChunkPipe<T> {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(STREAM_CHUNK_BYTES));
        self.to_reader.send(Piece::Bytes(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the snapshot's reader stopped reading",
            )
        })
    }
}

impl<T> Write for ChunkPipe<T> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= STREAM_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

impl FrozenView for RocksFrozenView {
    fn stream<T, F>(mut self, out: &mut dyn Write, job: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadView, &mut dyn Write) -> T + Send + 'static,
    {
        let gone = || std::io::Error::other("the snapshot thread stopped before finishing");
        let (to_reader, from_job) = sync_channel::<Piece<T>>(STREAM_CHUNKS_IN_FLIGHT);
        let run: FrozenJob = Box::new(move |view: &RocksView<'_>| {
            let mut pipe = ChunkPipe {
                to_reader,
                buffer: Vec::with_capacity(STREAM_CHUNK_BYTES),
            };
            let result = job(view, &mut pipe);
            if pipe.send_buffer().is_ok() {
                // The reader may have given up already; then nobody waits for the result.
                let _ = pipe.to_reader.send(Piece::Done(result));
            }
        });
        let sender = self.job.take().ok_or_else(gone)?;
        sender.send(run).map_err(|_| gone())?;
        drop(sender);
        // Ends when the job's thread sends `Done` or stops (its sender is then dropped).
        let result = loop {
            match from_job.recv() {
                Ok(Piece::Bytes(chunk)) => {
                    if let Err(err) = out.write_all(&chunk) {
                        break Err(err);
                    }
                }
                Ok(Piece::Done(value)) => break Ok(value),
                Err(_) => break Err(gone()),
            }
        };
        // The job's next write fails once the receiver is gone, so the thread `drop(self)` joins
        // is on its way out.
        drop(from_job);
        drop(self);
        result
    }
}

impl Backend for RocksBackend {
    type View<'a> = RocksView<'a>;
    type ExportView<'a> = RocksView<'a>;
    type Frozen = RocksFrozenView;

    fn view(&self) -> Result<RocksView<'_>, BackendError> {
        let active = self.active.read();
        Ok(RocksView {
            db: &self.db,
            snapshot: self.db.snapshot(),
            slot: *active,
        })
    }

    fn export_view(&self) -> Result<RocksView<'_>, BackendError> {
        self.view()
    }

    /// Costs a thread start and a RocksDB snapshot (a sequence number): no data is read or copied.
    fn freeze(&self) -> Result<RocksFrozenView, BackendError> {
        RocksFrozenView::freeze(self)
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
