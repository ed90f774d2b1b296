//! The adapter between openraft's `RaftStateMachine` and the application's [`StateMachine`]:
//! applies batches, keeps snapshots as files in a directory, restores on startup.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::StateMachineError;
use crate::snapshot_file::SnapshotFile;
use crate::state_machine::{AppliedState, CommittedCommand, StateMachine, StateSnapshot};
use crate::types::{AppliedCommand, BatchResponse, Entry, NodeId, NodeInfo, StorageError, TypeConfig};

const META_FILE: &str = "current.meta";
const META_TMP: &str = "current.meta.tmp";

/// Every snapshot data file starts with this, then the last applied command index (u64, little
/// endian), then the application's bytes. openraft's snapshot metadata has no room for the
/// command index, and a server installing the snapshot must continue counting from it.
const SNAPSHOT_MAGIC: &[u8; 8] = b"TRBRAFT\x01";

fn write_snapshot_header(out: &mut impl Write, last_command_index: u64) -> std::io::Result<()> {
    out.write_all(SNAPSHOT_MAGIC)?;
    out.write_all(&last_command_index.to_le_bytes())
}

fn read_snapshot_header(input: &mut impl Read) -> Result<u64, StateMachineError> {
    let mut header = [0u8; 16];
    input.read_exact(&mut header).map_err(|e| {
        StateMachineError::corrupt(format!("snapshot header: {e} (want {} bytes)", header.len()))
    })?;
    let (magic, index) = header.split_at(SNAPSHOT_MAGIC.len());
    if magic != SNAPSHOT_MAGIC {
        return Err(StateMachineError::corrupt(
            "snapshot header: not a Tribune consensus snapshot",
        ));
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(index);
    Ok(u64::from_le_bytes(bytes))
}

/// Opens a snapshot data file, reads its header and restores the application from the rest.
fn restore_from_file<S: StateMachine>(
    sm: &mut S,
    path: &Path,
    last_applied: Option<crate::types::LogId>,
    membership: crate::types::StoredMembership,
) -> Result<AppliedState, StateMachineError> {
    let mut input = BufReader::new(std::fs::File::open(path)?);
    let last_command_index = read_snapshot_header(&mut input)?;
    let applied = AppliedState::new(last_applied, membership, last_command_index);
    sm.restore(&mut input, &applied)?;
    Ok(applied)
}

/// What `current.meta` records: the snapshot's Raft metadata and which data file holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta<NodeId, NodeInfo>,
    file_seq: u64,
}

struct Shared<S: StateMachine> {
    sm: Mutex<S>,
    applied: Mutex<AppliedState>,
    current: Mutex<Option<CurrentSnapshot>>,
    dir: PathBuf,
    next_seq: AtomicU64,
}

/// openraft's state machine, backed by an application [`StateMachine`] and a snapshot directory.
///
/// Snapshots are files in the directory (`<seq>.snap` plus `current.meta`), so building,
/// sending, receiving and installing one never holds it whole in memory. On open, if the
/// directory holds a snapshot newer than the application's applied state, it is restored first.
pub struct StateMachineStore<S: StateMachine> {
    shared: Arc<Shared<S>>,
}

impl<S: StateMachine> Clone for StateMachineStore<S> {
    fn clone(&self) -> Self {
        StateMachineStore {
            shared: Arc::clone(&self.shared),
        }
    }
}

fn sm_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

fn snap_read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_snapshot(None, AnyError::error(e.to_string())).into()
}

fn snap_write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e.to_string())).into()
}

fn data_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.snap"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl<S: StateMachine> StateMachineStore<S> {
    /// Opens the store over `sm` with snapshots kept in `snapshot_dir` (created if missing).
    ///
    /// Blocking: it may restore a snapshot into `sm`. Call it before starting Raft.
    pub fn open(mut sm: S, snapshot_dir: impl Into<PathBuf>) -> Result<Self, StateMachineError> {
        let dir = snapshot_dir.into();
        std::fs::create_dir_all(&dir)?;
        let mut max_seq = 0;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                // A build or receive that did not finish; it was never made current.
                let _ = std::fs::remove_file(dir.join(name.as_ref()));
            } else if let Some(seq) = name.strip_suffix(".snap").and_then(|s| s.parse::<u64>().ok()) {
                max_seq = max_seq.max(seq);
            }
        }
        let current: Option<CurrentSnapshot> = match std::fs::read(dir.join(META_FILE)) {
            Ok(bytes) => Some(
                codec::decode(&bytes)
                    .map_err(|e| StateMachineError::corrupt(format!("snapshot metadata: {e}")))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let mut applied = sm.applied_state()?.unwrap_or_default();
        if let Some(cur) = &current
            && cur.meta.last_log_id > applied.last_applied()
        {
            applied = restore_from_file(
                &mut sm,
                &data_path(&dir, cur.file_seq),
                cur.meta.last_log_id,
                cur.meta.last_membership.clone(),
            )?;
        }
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                sm: Mutex::new(sm),
                applied: Mutex::new(applied),
                current: Mutex::new(current),
                dir,
                next_seq: AtomicU64::new(max_seq + 1),
            }),
        })
    }

    /// Runs `f` on the application state machine (for local reads).
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.shared.sm.lock())
    }

    /// The applied state as of the last applied batch.
    pub(crate) fn applied(&self) -> AppliedState {
        self.shared.applied.lock().clone()
    }

    fn next_seq(&self) -> u64 {
        self.shared.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes the data file `seq` the current snapshot, unless a newer one is already current.
    fn make_current(&self, meta: &SnapshotMeta<NodeId, NodeInfo>, seq: u64) -> std::io::Result<bool> {
        let mut current = self.shared.current.lock();
        if let Some(cur) = current.as_ref()
            && cur.meta.last_log_id > meta.last_log_id
        {
            return Ok(false);
        }
        let record = CurrentSnapshot {
            meta: meta.clone(),
            file_seq: seq,
        };
        let bytes = codec::encode(&record).map_err(std::io::Error::other)?;
        let tmp = self.shared.dir.join(META_TMP);
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.shared.dir.join(META_FILE))?;
        sync_dir(&self.shared.dir)?;
        if let Some(old) = current.replace(record)
            && old.file_seq != seq
        {
            let _ = std::fs::remove_file(data_path(&self.shared.dir, old.file_seq));
        }
        Ok(true)
    }

    async fn open_snapshot(&self, cur: &CurrentSnapshot) -> Result<Snapshot<TypeConfig>, StorageError> {
        let path = data_path(&self.shared.dir, cur.file_seq);
        let file = tokio::fs::File::open(&path).await.map_err(snap_read_err)?;
        Ok(Snapshot {
            meta: cur.meta.clone(),
            snapshot: Box::new(SnapshotFile::new(file, path)),
        })
    }
}

impl<S: StateMachine> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (view, applied) = {
            let sm = self.shared.sm.lock();
            let applied = self.shared.applied.lock().clone();
            (sm.snapshot().map_err(snap_write_err)?, applied)
        };
        let seq = self.next_seq();
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied(),
            last_membership: applied.membership().clone(),
            snapshot_id: format!(
                "{}-{}-{seq}",
                applied.last_applied().map(|l| l.leader_id.term).unwrap_or(0),
                applied.last_applied_index().unwrap_or(0)
            ),
        };
        let dir = self.shared.dir.clone();
        let tmp = dir.join(format!("build-{seq}.tmp"));
        let final_path = data_path(&dir, seq);
        let last_command_index = applied.last_command_index();
        let write = {
            let tmp = tmp.clone();
            move || -> Result<(), StateMachineError> {
                let file = std::fs::File::create(&tmp)?;
                let mut out = BufWriter::new(file);
                write_snapshot_header(&mut out, last_command_index)?;
                view.write_to(&mut out)?;
                let file = out.into_inner().map_err(|e| StateMachineError::io(e.error()))?;
                file.sync_all()?;
                std::fs::rename(&tmp, &final_path)?;
                Ok(())
            }
        };
        let result = tokio::task::spawn_blocking(write).await.map_err(snap_write_err)?;
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(snap_write_err(e));
        }
        self.make_current(&meta, seq).map_err(snap_write_err)?;
        let cur = CurrentSnapshot { meta, file_seq: seq };
        self.open_snapshot(&cur).await
    }
}

impl<S: StateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<S> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<crate::types::LogId>, crate::types::StoredMembership), StorageError> {
        let applied = self.shared.applied.lock();
        Ok((applied.last_applied(), applied.membership().clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.shared.applied.lock().clone();
        let already = applied.last_applied_index();
        let mut command_index = applied.last_command_index();
        let mut commands = Vec::new();
        // For each entry, the range of `commands` it carried (empty for entries without any).
        let mut slots = Vec::new();
        let mut last = applied.last_applied();
        let mut membership = applied.membership().clone();
        for entry in entries {
            let index = entry.log_id.index;
            last = Some(entry.log_id);
            let first = commands.len();
            match entry.payload {
                EntryPayload::Normal(batch) if already.is_none_or(|a| index > a) => {
                    for data in batch.0 {
                        command_index += 1;
                        commands.push(CommittedCommand {
                            index: command_index,
                            data,
                        });
                    }
                }
                EntryPayload::Membership(m) => {
                    membership = crate::types::StoredMembership::new(Some(entry.log_id), m);
                }
                _ => {}
            }
            slots.push(first..commands.len());
        }
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        applied = AppliedState::new(last, membership, command_index);
        let responses = {
            let mut sm = self.shared.sm.lock();
            sm.apply(&commands, &applied).map_err(sm_err)?
        };
        if responses.len() != commands.len() {
            return Err(sm_err(format!(
                "state machine returned {} responses for {} commands",
                responses.len(),
                commands.len()
            )));
        }
        *self.shared.applied.lock() = applied;
        let mut responses = commands.iter().zip(responses);
        Ok(slots
            .into_iter()
            .map(|slot| {
                BatchResponse(
                    responses
                        .by_ref()
                        .take(slot.len())
                        .map(|(command, response)| AppliedCommand {
                            index: command.index,
                            response,
                        })
                        .collect(),
                )
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = self.shared.dir.join(format!("recv-{}.tmp", self.next_seq()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_write_err)?;
        Ok(Box::new(SnapshotFile::new(file, path)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        snapshot.sync().await.map_err(snap_write_err)?;
        let seq = self.next_seq();
        let final_path = data_path(&self.shared.dir, seq);
        let received_here = snapshot.path().parent() == Some(self.shared.dir.as_path())
            && snapshot.path().extension().is_some_and(|e| e == "tmp");
        if received_here {
            tokio::fs::rename(snapshot.path(), &final_path)
                .await
                .map_err(snap_write_err)?;
        } else {
            // The data came from elsewhere (another store's file): keep our own copy.
            tokio::fs::copy(snapshot.path(), &final_path)
                .await
                .map_err(snap_write_err)?;
        }
        drop(snapshot);
        let shared = Arc::clone(&self.shared);
        let restore_path = final_path.clone();
        let (last_log_id, membership) = (meta.last_log_id, meta.last_membership.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut sm = shared.sm.lock();
            restore_from_file(&mut *sm, &restore_path, last_log_id, membership)
        })
        .await
        .map_err(sm_err)?;
        let applied = match result {
            Ok(applied) => applied,
            Err(e) => {
                let _ = std::fs::remove_file(&final_path);
                return Err(sm_err(e));
            }
        };
        *self.shared.applied.lock() = applied;
        self.make_current(meta, seq).map_err(snap_write_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let cur = self.shared.current.lock().clone();
        match cur {
            Some(cur) => Ok(Some(self.open_snapshot(&cur).await?)),
            None => Ok(None),
        }
    }
}
