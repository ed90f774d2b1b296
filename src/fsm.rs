//! The adapter that makes tribune-kvstore consensus's state machine, and the response bytes it returns.
//!
//! Consensus hands committed entries in log order; each is a kvstore
//! [`Command`](tribune_kvstore::Command) encoded with kvstore's codec. The adapter applies it to the [`Store`] and answers with an [`ApplyResponse`], which travels
//! back to the leader's HTTP handler (possibly over the RPC port, for a forwarded write).
//!
//! Raft snapshots are kvstore archives (tribune-snapshot, verified by their SHA-256 trailer before
//! they replace anything): the point in time is fixed between two applies (`Store::snapshot`, a
//! RocksDB snapshot) and the archive is streamed from it while applies continue; installing one
//! goes through `Store::import_records`.
//!
//! Raft's bookkeeping ([`AppliedState`]) is kept in the store's local `Meta` table, written after the
//! batch's effects: on the same backend (one ordered WAL for RocksDB), so it is never durable before
//! the data it covers, and the store skips any index it already applied when consensus re-sends.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tribune_consensus::{AppliedState, CommittedCommand, StateMachine, StateMachineError, StateSnapshot};
use tribune_kvstore::{
    AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, ApplyError, Backend, Batch, BatchOp,
    ExportOptions, ImportError, KvEntry, Outcome, ReadView, Slot, StateRecord, Store, StoreSnapshot, Table,
    decode_command,
};
use tribune_snapshot::SnapshotReader;

use crate::telemetry::Telemetry;

/// The key of Raft's applied state in the store's local `Meta` table.
const APPLIED_STATE_KEY: &[u8] = b"tribune.raft_applied_state";

/// Largest encoded response or snapshot record accepted when decoding.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why the store refused a command, grouped by how the HTTP API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Rejection {
    /// Bad input (400).
    Invalid,
    /// A value or a transaction over its limit (413).
    TooLarge,
    /// A lock with a session that does not exist (500 "invalid session", as Consul).
    InvalidSession,
    /// ACL bootstrap refused (403).
    BootstrapNotAllowed,
    /// Anything else the store refused deterministically (500).
    Other,
}

/// What applying one committed command produced, as it travels back to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ApplyResponse {
    /// A KV verb's boolean.
    Kv(bool),
    /// A transaction: results when committed, `(op index, what)` errors when rolled back.
    Txn {
        /// The entries produced.
        results: Vec<KvEntry>,
        /// The failed operations.
        errors: Vec<(usize, String)>,
    },
    /// A session was created.
    SessionCreated(String),
    /// A session was destroyed (its lock-delay is recorded by every server's adapter at apply).
    SessionDestroyed,
    /// A token was written.
    AclToken(AclToken),
    /// A policy was written.
    AclPolicy(AclPolicy),
    /// Nothing more to report (deletes, reaping, restores, replays).
    Done,
    /// The store refused the command; the state did not change.
    Rejected {
        /// How the API reports it.
        kind: Rejection,
        /// The store's explanation.
        message: String,
    },
    // Appended after the older variants, whose bincode tags stay what they were.
    /// A role was written.
    AclRole(AclRole),
    /// An auth method was written.
    AclAuthMethod(AclAuthMethod),
    /// A binding rule was written.
    AclBindingRule(AclBindingRule),
}

impl ApplyResponse {
    fn from_outcome(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Kv(ok) => ApplyResponse::Kv(ok),
            Outcome::Txn(txn) => ApplyResponse::Txn {
                results: txn.results.iter().filter_map(|r| r.kv().cloned()).collect(),
                errors: txn.errors.into_iter().map(|e| (e.op_index, e.what)).collect(),
            },
            Outcome::SessionCreated { id } => ApplyResponse::SessionCreated(id),
            Outcome::SessionDestroyed(_) => ApplyResponse::SessionDestroyed,
            Outcome::AclToken(token) | Outcome::AclBootstrapped(token) => ApplyResponse::AclToken(token),
            Outcome::AclPolicy(policy) => ApplyResponse::AclPolicy(policy),
            Outcome::AclRole(role) => ApplyResponse::AclRole(role),
            Outcome::AclAuthMethod(method) => ApplyResponse::AclAuthMethod(method),
            Outcome::AclBindingRule(rule) => ApplyResponse::AclBindingRule(rule),
            _ => ApplyResponse::Done,
        }
    }

    pub(crate) fn from_error(error: &ApplyError) -> Self {
        let kind = match error {
            ApplyError::InvalidKey { .. } | ApplyError::InvalidField { .. } | ApplyError::MissingSession => {
                Rejection::Invalid
            }
            ApplyError::ValueTooLarge { .. } | ApplyError::TooManyTxnOps { .. } => Rejection::TooLarge,
            ApplyError::InvalidSession { .. } => Rejection::InvalidSession,
            ApplyError::AclBootstrapNotAllowed { .. } => Rejection::BootstrapNotAllowed,
            _ => Rejection::Other,
        };
        ApplyResponse::Rejected {
            kind,
            message: error.to_string(),
        }
    }

    /// The bytes returned to consensus.
    pub(crate) fn encode(&self) -> Bytes {
        // Plain data always encodes; an empty response decodes to an error the caller reports.
        Bytes::from(bincode::serde::encode_to_vec(self, bincode_config()).unwrap_or_default())
    }

    /// Decodes the bytes a (possibly remote) state machine returned.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::serde::decode_from_slice(bytes, bincode_config())
            .map(|(response, _)| response)
            .map_err(|e| format!("undecodable apply response: {e}"))
    }
}

/// Keys a destroyed session held, and until when no session may lock them again (Consul's
/// lock-delay).
///
/// Every server records a delay when it applies the invalidation, so whichever server leads next
/// enforces it. The expiry is this server's clock at apply plus the delay: wall-clock time cannot
/// be part of the deterministic apply, and a server that applies late only makes the delay longer.
#[derive(Debug, Default)]
pub(crate) struct LockDelays {
    until: Mutex<HashMap<String, Instant>>,
}

/// Above this many recorded keys, recording a delay first drops the expired ones.
const LOCK_DELAY_PRUNE_AT: usize = 4096;

impl LockDelays {
    /// Starts a delay of `delay` from now on each of `keys`; a later expiry already recorded stays.
    pub(crate) fn start(&self, keys: &[String], delay: Duration) {
        if delay.is_zero() || keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let until = now + delay;
        let mut map = self.until.lock();
        if map.len() > LOCK_DELAY_PRUNE_AT {
            map.retain(|_, expiry| *expiry > now);
        }
        for key in keys {
            let expiry = map.entry(key.clone()).or_insert(until);
            *expiry = (*expiry).max(until);
        }
    }

    /// Whether `key` is inside its lock-delay now.
    pub(crate) fn active(&self, key: &str) -> bool {
        let mut map = self.until.lock();
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }
}

/// Consensus's state machine over a kvstore [`Store`].
pub(crate) struct KvStateMachine<B: Backend> {
    store: Arc<Store<B>>,
    lock_delays: Arc<LockDelays>,
    /// Counts applied entries (`raft.apply`) and times each command (`fsm.*`).
    telemetry: Arc<Telemetry>,
}

impl<B: Backend> KvStateMachine<B> {
    pub(crate) fn new(store: Arc<Store<B>>, lock_delays: Arc<LockDelays>) -> Self {
        KvStateMachine {
            store,
            lock_delays,
            telemetry: Arc::default(),
        }
    }

    /// Records into the agent's metrics rather than into a registry nobody reads.
    pub(crate) fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    fn save_applied_state(&self, applied: &AppliedState) -> Result<(), StateMachineError> {
        let mut batch = Batch::new();
        batch.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::Meta,
            key: APPLIED_STATE_KEY.to_vec(),
            value: applied.encode(),
        });
        self.store.backend().commit(batch).map_err(StateMachineError::io)
    }
}

impl<B: Backend> StateMachine for KvStateMachine<B> {
    type Snapshot = KvSnapshot<B>;

    fn apply(
        &mut self,
        commands: &[CommittedCommand],
        applied: &AppliedState,
    ) -> Result<Vec<Bytes>, StateMachineError> {
        let mut responses = Vec::with_capacity(commands.len());
        for committed in commands {
            let response = match decode_command(&committed.data) {
                // Every server fails to decode the same bytes: a deterministic rejection.
                Err(e) => ApplyResponse::Rejected {
                    kind: Rejection::Invalid,
                    message: format!("undecodable command: {e}"),
                },
                Ok(command) => {
                    let timing = self.telemetry.time_apply(&command);
                    let outcome = self.store.apply(store_index(committed.index), &command);
                    drop(timing);
                    match outcome {
                        Ok(outcome) => {
                            match &outcome {
                                Outcome::SessionDestroyed(invalidation) => {
                                    self.lock_delays
                                        .start(&invalidation.lock_delay_keys, invalidation.lock_delay);
                                }
                                // Sessions of a deregistered node, or bound to a check that went
                                // critical or away, were invalidated as a destroy does.
                                Outcome::Catalog(catalog) => {
                                    for destroyed in &catalog.destroyed_sessions {
                                        let invalidation = &destroyed.invalidation;
                                        self.lock_delays
                                            .start(&invalidation.lock_delay_keys, invalidation.lock_delay);
                                    }
                                }
                                _ => {}
                            }
                            ApplyResponse::from_outcome(outcome)
                        }
                        Err(e) if e.is_deterministic() => ApplyResponse::from_error(&e),
                        Err(e) => return Err(StateMachineError::io(e)),
                    }
                }
            };
            responses.push(response.encode());
        }
        self.save_applied_state(applied)?;
        self.telemetry.entries_applied(commands.len() as u64);
        Ok(responses)
    }

    fn applied_state(&self) -> Result<Option<AppliedState>, StateMachineError> {
        let view = self.store.backend().view().map_err(StateMachineError::io)?;
        match view
            .get(Table::Meta, APPLIED_STATE_KEY)
            .map_err(StateMachineError::io)?
        {
            Some(bytes) => AppliedState::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn snapshot(&self) -> Result<KvSnapshot<B>, StateMachineError> {
        // Called between applies: the frozen view is exactly the state at the last applied entry,
        // the one consensus records with this snapshot. Only the point in time is fixed here (no
        // record is read); `write_to` streams the archive from it on a blocking thread.
        let created_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let options = ExportOptions {
            created_at_unix_ms,
            ..ExportOptions::default()
        };
        let frozen = self.store.snapshot(options).map_err(StateMachineError::io)?;
        Ok(KvSnapshot { frozen })
    }

    fn restore(&mut self, data: &mut dyn Read, applied: &AppliedState) -> Result<(), StateMachineError> {
        let mut reader = SnapshotReader::new(std::io::BufReader::new(data))
            .map_err(|e| StateMachineError::corrupt(format!("snapshot archive: {e}")))?;
        let archive_dc = reader.meta().datacenter.clone();
        if archive_dc != self.store.datacenter() {
            return Err(StateMachineError::corrupt(format!(
                "the snapshot belongs to datacenter {archive_dc:?}, this server to {:?}",
                self.store.datacenter()
            )));
        }
        // `next_record` ends with `Ok(None)` only after the trailer's digest checked out, and
        // `import_records` swaps the staged state in only then: a bad archive changes nothing.
        let records = std::iter::from_fn(|| match reader.next_record() {
            Ok(Some(record)) => Some(StateRecord::from_archive(&record)),
            Ok(None) => None,
            Err(err) => Some(Err(err.into())),
        });
        // The store resumes at the snapshot's last command index (commands are numbered apart from
        // the log's entries, several of which may share one entry), the index its next command carries.
        let index = store_index(applied.last_command_index());
        self.store.import_records(index, records).map_err(|e| match e {
            ImportError::Storage(e) => StateMachineError::io(format!("snapshot restore: {e}")),
            other => StateMachineError::corrupt(format!("snapshot archive: {other}")),
        })?;
        self.save_applied_state(applied)
    }
}

/// The store's index (Consul's `ModifyIndex`, `X-Consul-Index`) of a command: one above its
/// command index, so that the first command of a cluster writes at 2. Index 1 is what every read of
/// an empty table answers (Consul never answers 0), and a blocking read parked at 1 must see the
/// first write as a change.
pub(crate) fn store_index(command_index: u64) -> u64 {
    command_index.saturating_add(1)
}

/// The store at one point in time, written out as a tribune-snapshot archive (the bytes kvstore's
/// `Store::export` would have written then), record by record.
pub(crate) struct KvSnapshot<B: Backend> {
    frozen: StoreSnapshot<B>,
}

impl<B: Backend> StateSnapshot for KvSnapshot<B> {
    fn write_to(self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        self.frozen.write_to(out).map_err(StateMachineError::io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tribune_kvstore::{Command, StoreConfig, encode_command};

    fn committed(index: u64, command: &Command) -> CommittedCommand {
        CommittedCommand {
            index,
            data: Bytes::from(encode_command(command).unwrap()),
        }
    }

    fn set(key: &str, value: &[u8]) -> Command {
        Command::KvSet {
            key: key.into(),
            value: value.to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn applies_commands_and_rejects_garbage_deterministically() {
        let store = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut sm = KvStateMachine::new(Arc::clone(&store), Arc::default());
        assert_eq!(sm.applied_state().unwrap(), None);
        let batch = [
            committed(3, &set("a", b"1")),
            CommittedCommand {
                index: 4,
                data: Bytes::from_static(b"\xffgarbage"),
            },
            committed(
                5,
                &Command::KvLock {
                    key: "b".into(),
                    value: vec![],
                    flags: 0,
                    session: "nope".into(),
                },
            ),
        ];
        let responses = sm.apply(&batch, &AppliedState::default()).unwrap();
        let decoded: Vec<ApplyResponse> = responses
            .iter()
            .map(|b| ApplyResponse::decode(b).unwrap())
            .collect();
        assert_eq!(decoded[0], ApplyResponse::Kv(true));
        assert!(matches!(
            decoded[1],
            ApplyResponse::Rejected {
                kind: Rejection::Invalid,
                ..
            }
        ));
        assert!(matches!(
            decoded[2],
            ApplyResponse::Rejected {
                kind: Rejection::InvalidSession,
                ..
            }
        ));
        assert_eq!(store.get("a").unwrap().value.unwrap().value, b"1");
        assert_eq!(sm.applied_state().unwrap(), Some(AppliedState::default()));
        assert!(ApplyResponse::decode(b"").is_err());
    }

    #[test]
    fn applies_count_in_raft_apply_and_are_timed_by_operation() {
        let store = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let telemetry = Arc::new(Telemetry::default());
        let mut sm = KvStateMachine::new(store, Arc::default()).with_telemetry(Arc::clone(&telemetry));
        let batch = [
            committed(1, &set("a", b"1")),
            committed(2, &set("b", b"2")),
            committed(3, &Command::KvDelete { key: "a".into() }),
        ];
        sm.apply(&batch, &applied_at(3)).unwrap();
        let json = serde_json::to_value(telemetry.snapshot(Vec::new(), Vec::new()).json()).unwrap();
        let count = |list: &str, name: &str, op: Option<&str>| {
            json[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Name"] == name && m["Labels"]["op"].as_str() == op)
                .map(|m| m["Count"].as_u64().unwrap())
        };
        assert_eq!(count("Counters", "consul.raft.apply", None), Some(3));
        assert_eq!(count("Samples", "consul.fsm.kvs", Some("set")), Some(2));
        assert_eq!(count("Samples", "consul.fsm.kvs", Some("delete")), Some(1));
        // The leader's whole-write timing is not the state machine's to record.
        assert_eq!(count("Samples", "consul.kvs.apply", None), Some(0));
    }

    /// Consensus builds applied states; a test makes one at `index` through its serde form.
    fn applied_at(index: u64) -> AppliedState {
        let mut value = serde_json::to_value(AppliedState::default()).unwrap();
        value["last_applied"] = serde_json::json!({"leader_id": {"term": 1, "node_id": 1}, "index": index});
        value["last_command_index"] = serde_json::json!(index);
        serde_json::from_value(value).unwrap()
    }

    /// Records what it is given; its first write reports that it started and then waits for a
    /// release, so the snapshot is stopped part-way through while the test applies more.
    struct GateWriter {
        bytes: Vec<u8>,
        largest_write: usize,
        started: Option<std::sync::mpsc::Sender<()>>,
        release: std::sync::mpsc::Receiver<()>,
    }

    impl Write for GateWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(started) = self.started.take() {
                started.send(()).unwrap();
                self.release.recv_timeout(Duration::from_secs(60)).unwrap();
            }
            self.largest_write = self.largest_write.max(bytes.len());
            self.bytes.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn applies_continue_while_a_snapshot_is_written<B: Backend>(source: Arc<Store<B>>) {
        const KEYS: u64 = 3_000;
        let mut leader = KvStateMachine::new(Arc::clone(&source), Arc::default());
        let cmds: Vec<_> = (1..=KEYS)
            .map(|i| committed(i, &set(&format!("k/{i:05}"), &[b'v'; 200])))
            .collect();
        leader.apply(&cmds, &applied_at(KEYS)).unwrap();
        let at_snapshot = source.dump().unwrap();
        let snapshot = leader.snapshot().unwrap();

        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut out = GateWriter {
                bytes: Vec::new(),
                largest_write: 0,
                started: Some(started_tx),
                release: release_rx,
            };
            snapshot.write_to(&mut out).unwrap();
            out
        });
        started.recv_timeout(Duration::from_secs(60)).unwrap();
        // The snapshot's writer is blocked inside its first write; these applies still complete.
        let later = [
            committed(KEYS + 1, &set("k/00001", b"changed")),
            committed(
                KEYS + 2,
                &Command::KvDelete {
                    key: "k/00002".into(),
                },
            ),
            committed(KEYS + 3, &set("after", b"x")),
        ];
        let responses = leader.apply(&later, &applied_at(KEYS + 3)).unwrap();
        assert_eq!(
            ApplyResponse::decode(&responses[2]).unwrap(),
            ApplyResponse::Kv(true)
        );
        assert_eq!(source.last_applied(), store_index(KEYS + 3));
        release.send(()).unwrap();
        let out = writer.join().unwrap();
        assert!(
            out.largest_write < out.bytes.len() / 4,
            "the archive came in one write of {} bytes: it was built whole before writing",
            out.largest_write
        );

        let target = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut follower = KvStateMachine::new(Arc::clone(&target), Arc::default());
        follower
            .restore(&mut out.bytes.as_slice(), &applied_at(KEYS))
            .unwrap();
        // Exactly the state at the snapshot: not the overwrite, the delete nor the new key.
        assert_eq!(target.dump().unwrap(), at_snapshot);
        assert!(target.get("after").unwrap().value.is_none());
        assert_eq!(target.list("k/").unwrap().value.len() as u64, KEYS);
        assert_eq!(target.get("k/00001").unwrap().value.unwrap().value, [b'v'; 200]);
    }

    #[test]
    fn applies_continue_while_a_memory_snapshot_is_written() {
        applies_continue_while_a_snapshot_is_written(Arc::new(
            Store::in_memory(StoreConfig::new("dc1")).unwrap(),
        ));
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn applies_continue_while_a_rocksdb_snapshot_is_written() {
        let dir = tempfile::tempdir().unwrap();
        applies_continue_while_a_snapshot_is_written(Arc::new(
            Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap(),
        ));
    }

    /// An empty table answers index 1 (Consul never answers 0); the cluster's first command must
    /// write above it, or a blocking read parked at 1 would not see it.
    #[test]
    fn the_first_command_writes_above_an_empty_reads_index() {
        let store = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut sm = KvStateMachine::new(Arc::clone(&store), Arc::default());
        let empty = store.get("k").unwrap();
        assert_eq!((empty.value.is_none(), empty.index), (true, 1));
        sm.apply(&[committed(1, &set("k", b"v"))], &applied_at(1))
            .unwrap();
        let written = store.get("k").unwrap();
        assert!(written.index > empty.index, "{} > {}", written.index, empty.index);
        assert_eq!(written.value.unwrap().modify_index, written.index);
    }

    #[test]
    fn a_snapshot_restores_into_a_store_that_is_behind() {
        let source = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut leader = KvStateMachine::new(Arc::clone(&source), Arc::default());
        let cmds: Vec<_> = (1..=20)
            .map(|i| committed(i, &set(&format!("k/{i}"), b"v")))
            .collect();
        leader.apply(&cmds, &applied_at(20)).unwrap();
        let mut bytes = Vec::new();
        leader.snapshot().unwrap().write_to(&mut bytes).unwrap();

        let target = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut follower = KvStateMachine::new(Arc::clone(&target), Arc::default());
        follower
            .apply(&[committed(1, &set("stale", b"x"))], &applied_at(1))
            .unwrap();
        // Truncated input is a typed error, never a panic, and changes nothing.
        let err = follower
            .restore(&mut &bytes[..bytes.len() / 2], &applied_at(20))
            .unwrap_err();
        assert!(matches!(err, StateMachineError::Corrupt { .. }), "{err}");
        assert!(target.get("stale").unwrap().value.is_some());

        follower.restore(&mut bytes.as_slice(), &applied_at(20)).unwrap();
        assert_eq!(target.dump().unwrap(), source.dump().unwrap());
        assert_eq!(target.last_applied(), store_index(20));
        assert_eq!(follower.applied_state().unwrap(), Some(applied_at(20)));
        // The log resumes after the snapshot's index.
        let next = follower
            .apply(&[committed(21, &set("after", b"y"))], &applied_at(21))
            .unwrap();
        assert_eq!(ApplyResponse::decode(&next[0]).unwrap(), ApplyResponse::Kv(true));

        // Another datacenter's snapshot is refused and changes nothing.
        let other = Arc::new(Store::in_memory(StoreConfig::new("dc2")).unwrap());
        let mut other_sm = KvStateMachine::new(other, Arc::default());
        let err = other_sm
            .restore(&mut bytes.as_slice(), &applied_at(30))
            .unwrap_err();
        assert!(err.to_string().contains("datacenter"), "{err}");
        // A tampered byte anywhere in the archive is refused as well.
        let mut tampered = bytes.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x40;
        assert!(
            follower
                .restore(&mut tampered.as_slice(), &applied_at(40))
                .is_err()
        );
        assert_eq!(target.last_applied(), store_index(21));
    }
}
