//! The adapter that makes tribune-kvstore consensus's state machine, and the response bytes it returns.
//!
//! Consensus hands committed entries in log order; each is a kvstore [`Command`] encoded with kvstore's
//! codec. The adapter applies it to the [`Store`] and answers with an [`ApplyResponse`], which travels
//! back to the leader's HTTP handler (possibly over the RPC port, for a forwarded write).
//!
//! Raft's bookkeeping ([`AppliedState`]) is kept in the store's local `Meta` table, written after the
//! batch's effects: on the same backend (one ordered WAL for RocksDB), so it is never durable before
//! the data it covers, and the store skips any index it already applied when consensus re-sends.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tribune_consensus::{AppliedState, CommittedCommand, StateMachine, StateMachineError, StateSnapshot};
use tribune_kvstore::{
    AclPolicy, AclToken, ApplyError, Backend, Batch, BatchOp, Command, KvEntry, Outcome, ReadView, Slot,
    StateRecord, Store, Table, decode_command,
};

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
    /// A session was destroyed: the keys that now get a lock-delay, and the delay.
    SessionDestroyed {
        /// Keys under lock-delay.
        lock_delay_keys: Vec<String>,
        /// The delay.
        lock_delay: Duration,
    },
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
            Outcome::SessionDestroyed(inv) => ApplyResponse::SessionDestroyed {
                lock_delay_keys: inv.lock_delay_keys,
                lock_delay: inv.lock_delay,
            },
            Outcome::AclToken(token) | Outcome::AclBootstrapped(token) => ApplyResponse::AclToken(token),
            Outcome::AclPolicy(policy) => ApplyResponse::AclPolicy(policy),
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

/// Consensus's state machine over a kvstore [`Store`].
pub(crate) struct KvStateMachine<B: Backend> {
    store: Arc<Store<B>>,
}

impl<B: Backend> KvStateMachine<B> {
    pub(crate) fn new(store: Arc<Store<B>>) -> Self {
        KvStateMachine { store }
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
    type Snapshot = KvSnapshot;

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
                Ok(command) => match self.store.apply(committed.index, &command) {
                    Ok(outcome) => ApplyResponse::from_outcome(outcome),
                    Err(e) if e.is_deterministic() => ApplyResponse::from_error(&e),
                    Err(e) => return Err(StateMachineError::io(e)),
                },
            };
            responses.push(response.encode());
        }
        self.save_applied_state(applied)?;
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

    fn snapshot(&self) -> Result<KvSnapshot, StateMachineError> {
        // Called between applies: the dump is exactly the state at the last applied entry.
        let records = self.store.dump().map_err(StateMachineError::io)?;
        Ok(KvSnapshot { records })
    }

    fn restore(&mut self, data: &mut dyn Read, applied: &AppliedState) -> Result<(), StateMachineError> {
        let mut records = Vec::new();
        let mut input = std::io::BufReader::new(data);
        loop {
            let next: Result<Option<StateRecord>, _> =
                bincode::serde::decode_from_std_read(&mut input, bincode_config());
            match next {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => return Err(StateMachineError::corrupt(format!("snapshot record: {e}"))),
            }
        }
        let target = applied.last_applied_index().unwrap_or(0);
        let current = self.store.last_applied();
        // The store's staged restore needs three log positions: begin and chunk just above what the
        // store applied, and the commit at the snapshot's own index, so that the store resumes there.
        if target < current.saturating_add(3) {
            return Err(StateMachineError::io(format!(
                "cannot install a snapshot at index {target} over a store at index {current}"
            )));
        }
        let restore_id = target;
        let steps = [
            (current + 1, Command::RestoreBegin { restore_id }),
            (current + 2, Command::RestoreChunk { restore_id, records }),
            (target, Command::RestoreCommit { restore_id }),
        ];
        for (index, command) in steps {
            self.store
                .apply(index, &command)
                .map_err(|e| StateMachineError::io(format!("snapshot restore: {e}")))?;
        }
        self.save_applied_state(applied)
    }
}

/// A point-in-time copy of the store's records, written as a stream of bincode-encoded
/// `Option<StateRecord>` values ending with `None`.
pub(crate) struct KvSnapshot {
    records: Vec<StateRecord>,
}

impl StateSnapshot for KvSnapshot {
    fn write_to(self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        let mut out = std::io::BufWriter::new(out);
        for record in self.records.into_iter().map(Some).chain([None]) {
            bincode::serde::encode_into_std_write(&record, &mut out, bincode_config())
                .map_err(StateMachineError::io)?;
        }
        out.flush().map_err(StateMachineError::io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tribune_kvstore::{StoreConfig, encode_command};

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
        let mut sm = KvStateMachine::new(Arc::clone(&store));
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

    /// Consensus builds applied states; a test makes one at `index` through its serde form.
    fn applied_at(index: u64) -> AppliedState {
        let mut value = serde_json::to_value(AppliedState::default()).unwrap();
        value["last_applied"] = serde_json::json!({"leader_id": {"term": 1, "node_id": 1}, "index": index});
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_snapshot_restores_into_a_store_that_is_behind() {
        let source = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut leader = KvStateMachine::new(Arc::clone(&source));
        let cmds: Vec<_> = (1..=20)
            .map(|i| committed(i, &set(&format!("k/{i}"), b"v")))
            .collect();
        leader.apply(&cmds, &applied_at(20)).unwrap();
        let mut bytes = Vec::new();
        leader.snapshot().unwrap().write_to(&mut bytes).unwrap();

        let target = Arc::new(Store::in_memory(StoreConfig::new("dc1")).unwrap());
        let mut follower = KvStateMachine::new(Arc::clone(&target));
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
        assert_eq!(target.last_applied(), 20);
        assert_eq!(follower.applied_state().unwrap(), Some(applied_at(20)));
        // The log resumes after the snapshot's index.
        let next = follower
            .apply(&[committed(21, &set("after", b"y"))], &applied_at(21))
            .unwrap();
        assert_eq!(ApplyResponse::decode(&next[0]).unwrap(), ApplyResponse::Kv(true));

        // A snapshot too close to what the store applied cannot be staged.
        let err = follower
            .restore(&mut bytes.as_slice(), &applied_at(22))
            .unwrap_err();
        assert!(err.to_string().contains("cannot install"), "{err}");
    }
}
