//! The durable Raft log on RocksDB, with group commit.
//!
//! Layout: column family `log` maps the big-endian index to an encoded entry; column family
//! `meta` holds the vote, the last purged log id and the committed log id. Every value starts
//! with a format version byte.
//!
//! Durability: `append` writes the batch to RocksDB without syncing (so the entries are readable
//! at once) and queues its flush callback; a flusher thread takes every queued callback, syncs
//! the WAL once with `FlushWAL(sync)`, and only then fires them all. Concurrent appends thus share
//! one fsync (group commit), and no append is reported durable before a sync that covers it.
//! RocksDB's WAL is ordered, so a sync also covers every earlier unsynced write (truncations,
//! purges). Votes are written with a synced write before `save_vote` returns.

// openraft's `StorageError` is what its storage traits return; the helpers return it too rather
// than box it only to convert back.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{ConsensusError, CorruptRecord};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"purged";
const KEY_COMMITTED: &[u8] = b"committed";
const FORMAT_V1: u8 = 1;

fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let body =
        codec::encode(value).map_err(|e| StorageError::from(StorageIOError::write(AnyError::new(&e))))?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(FORMAT_V1);
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_value<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    index: Option<u64>,
) -> Result<T, CorruptRecord> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => codec::decode(body).map_err(|e| CorruptRecord {
            what,
            index,
            reason: e.reason,
        }),
        Some((v, _)) => Err(CorruptRecord {
            what,
            index,
            reason: format!("unknown format version {v}"),
        }),
        None => Err(CorruptRecord {
            what,
            index,
            reason: "empty value".into(),
        }),
    }
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

fn corrupt(e: CorruptRecord) -> StorageError {
    match e.index {
        Some(i) => StorageIOError::read_log_at_index(i, AnyError::new(&e)).into(),
        None => StorageIOError::read(AnyError::new(&e)).into(),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, CorruptRecord> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| CorruptRecord {
        what: "log key",
        index: None,
        reason: format!("{} bytes, want 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn sync_opts() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn meta_get<T: DeserializeOwned>(db: &DB, key: &[u8], what: &'static str) -> Result<Option<T>, StorageError> {
    let cf = db
        .cf_handle(CF_META)
        .ok_or_else(|| read_err(MissingCf(CF_META)))?;
    match db.get_cf(cf, key).map_err(read_err)? {
        Some(bytes) => Ok(Some(decode_value(&bytes, what, None).map_err(corrupt)?)),
        None => Ok(None),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("column family {0} is missing")]
struct MissingCf(&'static str);

/// Reads log entries; shared by openraft's replication tasks.
#[derive(Clone)]
pub struct RocksLogReader {
    db: Arc<DB>,
}

impl RaftLogReader<TypeConfig> for RocksLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.db, range)
    }
}

fn read_range<RB: RangeBounds<u64>>(db: &DB, range: RB) -> Result<Vec<Entry>, StorageError> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => match i.checked_add(1) {
            Some(i) => i,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    let cf = db.cf_handle(CF_LOG).ok_or_else(|| read_err(MissingCf(CF_LOG)))?;
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&index_key(start), Direction::Forward)) {
        let (key, value) = item.map_err(read_err)?;
        let index = key_index(&key).map_err(corrupt)?;
        if !range.contains(&index) {
            break;
        }
        let entry: Entry = decode_value(&value, "log entry", Some(index)).map_err(corrupt)?;
        if entry.log_id.index != index {
            return Err(corrupt(CorruptRecord {
                what: "log entry",
                index: Some(index),
                reason: format!(
                    "stored under index {index} but carries index {}",
                    entry.log_id.index
                ),
            }));
        }
        out.push(entry);
    }
    Ok(out)
}

/// The Raft log and vote on RocksDB, with synced writes and group commit.
pub struct RocksLogStore {
    db: Arc<DB>,
    /// `None` only while the store is being dropped.
    flush_queue: Option<std_mpsc::Sender<LogFlushed<TypeConfig>>>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RocksLogStore {
    /// Closes the flush queue and waits for the flusher to finish its last sync and let go of the
    /// database. A flusher left running could close RocksDB after the store's owner is gone — or
    /// while the process is exiting and RocksDB's own statics are being torn down, which aborts it.
    fn drop(&mut self) {
        self.flush_queue.take();
        if let Some(flusher) = self.flusher.take() {
            // A panicked flusher has nothing left to release; there is nothing more to do here.
            let _ = flusher.join();
        }
    }
}

impl RocksLogStore {
    /// Opens (or creates) the log store in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ConsensusError> {
        let path = path.as_ref();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_LOG, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| ConsensusError::Startup {
            reason: format!("open log store {}: {e}", path.display()),
        })?;
        let db = Arc::new(db);
        let (tx, rx) = std_mpsc::channel::<LogFlushed<TypeConfig>>();
        let flusher_db = Arc::clone(&db);
        let flusher = std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flush_loop(&flusher_db, &rx))
            .map_err(|e| ConsensusError::Startup {
                reason: format!("spawn log flusher: {e}"),
            })?;
        Ok(RocksLogStore {
            db,
            flush_queue: Some(tx),
            flusher: Some(flusher),
        })
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or_else(|| write_err(MissingCf(name)))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = self
            .db
            .cf_handle(CF_LOG)
            .ok_or_else(|| read_err(MissingCf(CF_LOG)))?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(read_err)?;
                let index = key_index(&key).map_err(corrupt)?;
                let entry: Entry = decode_value(&value, "log entry", Some(index)).map_err(corrupt)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// The group-commit loop: wait for one queued append, take every other queued one, sync the WAL
/// once, then report all of them.
fn flush_loop(db: &DB, rx: &std_mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = db.flush_wal(true);
        for callback in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(r);
        }
    }
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.db, range)
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = meta_get(&self.db, KEY_PURGED, "purged log id")?;
        let last = self.last_entry_log_id()?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        RocksLogReader {
            db: Arc::clone(&self.db),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let cf = self.cf(CF_META)?;
        let value = encode_value(vote)?;
        self.db
            .put_cf_opt(cf, KEY_VOTE, value, &sync_opts())
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        meta_get(&self.db, KEY_VOTE, "vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: losing it only means re-learning the commit index from the leader.
        let cf = self.cf(CF_META)?;
        let value = encode_value(&committed)?;
        self.db.put_cf(cf, KEY_COMMITTED, value).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(meta_get::<Option<LogId>>(&self.db, KEY_COMMITTED, "committed log id")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode_value(&entry)?);
        }
        // Unsynced: readable now, durable once the flusher's sync covers it.
        self.db.write(batch).map_err(write_err)?;
        self.flush_queue
            .as_ref()
            .ok_or_else(|| write_err(std::io::Error::other("log store is closing")))?
            .send(callback)
            .map_err(|_| write_err(std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.db.write_opt(batch, &sync_opts()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let prev: Option<LogId> = meta_get(&self.db, KEY_PURGED, "purged log id")?;
        if prev.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        let log_cf = self.cf(CF_LOG)?;
        let meta_cf = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        // The marker and the deletion go in one batch: after a crash either both happened or
        // neither, so there is never a hole between the marker and the first entry.
        batch.put_cf(meta_cf, KEY_PURGED, encode_value(&log_id)?);
        batch.delete_range_cf(log_cf, index_key(0), index_key(log_id.index));
        batch.delete_cf(log_cf, index_key(log_id.index));
        self.db.write(batch).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn corrupt_entry_is_a_typed_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let cf = store.db.cf_handle(CF_LOG).unwrap();
        store
            .db
            .put_cf(cf, index_key(1), [FORMAT_V1, 0xff, 0xff, 0xff])
            .unwrap();
        store.db.put_cf(cf, index_key(2), [9u8, 1, 2]).unwrap();
        let err = store.try_get_log_entries(1..2).await.unwrap_err();
        assert!(err.to_string().contains("corrupt log entry"), "{err}");
        let err = store.try_get_log_entries(2..3).await.unwrap_err();
        assert!(err.to_string().contains("unknown format version 9"), "{err}");
        assert!(store.get_log_state().await.is_err());
    }

    #[tokio::test]
    async fn corrupt_vote_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RocksLogStore::open(dir.path()).unwrap();
        let cf = store.db.cf_handle(CF_META).unwrap();
        store.db.put_cf(cf, KEY_VOTE, b"").unwrap();
        let err = store.read_vote().await.unwrap_err();
        assert!(err.to_string().contains("empty value"), "{err}");
    }
}
