//! The application's side of consensus: the [`StateMachine`] trait and what it receives.

use std::io::{Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::StateMachineError;
use crate::types::{LogId, NodeId, StoredMembership};

/// One committed command, in log order, handed to [`StateMachine::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedCommand {
    /// The command's index: one more than the previous command's, in log order, starting at 1
    /// (Consul's ModifyIndex for the writes it makes). Several commands can share one Raft log
    /// entry (the proposer batches them), so this is not the Raft log index; it is the same on
    /// every server and across restarts, because it is counted from the stored [`AppliedState`].
    pub index: u64,
    /// The command bytes as the client wrote them.
    pub data: Bytes,
}

/// Raft's bookkeeping about the state machine: the last applied log id, the last applied
/// cluster membership and the index of the last applied command.
///
/// The state machine stores it as opaque bytes ([`AppliedState::encode`]) next to its data and
/// hands it back on [`StateMachine::applied_state`]. Keeping it inside the application's own
/// store is what lets one atomic write cover both the effects of a batch and the marker saying
/// the batch was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_command_index: u64,
}

/// The layout of version 1, written before commands were batched: then every entry held one
/// command and the command index was the log index.
#[derive(Deserialize)]
struct AppliedStateV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Version tag in front of the encoded applied state, so a future layout can be told apart.
const APPLIED_STATE_VERSION: u8 = 2;

impl AppliedState {
    pub(crate) fn new(
        last_applied: Option<LogId>,
        membership: StoredMembership,
        last_command_index: u64,
    ) -> Self {
        AppliedState {
            last_applied,
            membership,
            last_command_index,
        }
    }

    /// The index of the last applied command (0 before the first one).
    pub fn last_command_index(&self) -> u64 {
        self.last_command_index
    }

    /// The index of the last applied log entry; `None` for a state machine that applied nothing.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.last_applied.map(|l| l.index)
    }

    /// The last applied log id (term, leader and index).
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub(crate) fn membership(&self) -> &StoredMembership {
        &self.membership
    }

    /// The ids of the voters in the last applied membership.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.membership.membership().voter_ids().collect()
    }

    /// The bytes to store. Stable across restarts of the same version of this crate.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![APPLIED_STATE_VERSION];
        // Encoding plain data into a Vec cannot fail; an empty body would be caught by decode.
        out.extend(codec::encode(self).unwrap_or_default());
        out
    }

    /// Decodes bytes produced by [`AppliedState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StateMachineError> {
        match bytes.split_first() {
            Some((&APPLIED_STATE_VERSION, body)) => {
                codec::decode(body).map_err(|e| StateMachineError::corrupt(format!("applied state: {e}")))
            }
            Some((1, body)) => {
                let v1: AppliedStateV1 = codec::decode(body)
                    .map_err(|e| StateMachineError::corrupt(format!("applied state (version 1): {e}")))?;
                let last_command_index = v1.last_applied.map_or(0, |l| l.index);
                Ok(AppliedState::new(
                    v1.last_applied,
                    v1.membership,
                    last_command_index,
                ))
            }
            Some((v, _)) => Err(StateMachineError::corrupt(format!(
                "applied state: unknown version {v}"
            ))),
            None => Err(StateMachineError::corrupt("applied state: empty")),
        }
    }
}

/// The application's replicated state machine, driven by consensus.
///
/// Consensus calls these methods from its own tasks, one call at a time (`&mut self`), never
/// concurrently with each other except that a [`StateMachine::Snapshot`] taken earlier may be
/// written out while later batches are applied.
///
/// # What an implementer MUST guarantee
///
/// 1. **Determinism.** `apply` computes its effects and responses from the current state and the
///    command bytes only: no clocks, randomness or local configuration. Every server applies the
///    same commands in the same order and must end in the same state.
/// 2. **Applied state stored with the data.** The [`AppliedState`] passed to `apply` (and to
///    `restore`) must be stored so that it is never durable *before* the effects it covers: write
///    it in the same atomic batch as the effects (recommended), or after them. `applied_state`
///    returns the last one stored, or `None` for a pristine state machine.
/// 3. **Idempotence at the boundary.** If the applied state is stored after the data (not
///    atomically), a crash between the two makes consensus hand the same commands again after a
///    restart, with the same command indexes; applying a command with an index at or below the
///    one already reflected in the data must then leave the state unchanged. (Consensus itself
///    never re-sends a command of a log entry at or below the stored
///    [`AppliedState::last_applied_index`].)
/// 4. **One response per command**, in order. A batch may contain no command at all (only Raft
///    membership or leader-change entries were committed): store the new applied state anyway.
/// 5. **Errors stop the server.** An `Err` from `apply` or `restore` means this server's state can
///    no longer follow the log; consensus stops Raft here rather than serve divergent data. Bad
///    command bytes are not such an error: reject them in the *response* (deterministically).
/// 6. **Snapshots are consistent points.** `snapshot` captures the state as of the last applied
///    command (cheaply: a RocksDB snapshot, a copy-on-write view, a clone of a small map); the
///    returned value is then written out on a blocking thread while applies continue. `restore`
///    replaces the *whole* state with the stream's contents and stores the given applied state,
///    atomically from the reader's point of view: on error, the previous state is kept or the
///    state machine reports the error on every later call. Memory use should not be O(snapshot).
pub trait StateMachine: Send + 'static {
    /// A consistent view of the state, written out later by [`StateSnapshot::write_to`].
    type Snapshot: StateSnapshot;

    /// Applies committed commands in log order and returns one response per command.
    fn apply(
        &mut self,
        commands: &[CommittedCommand],
        applied: &AppliedState,
    ) -> Result<Vec<Bytes>, StateMachineError>;

    /// The applied state stored last by `apply` or `restore`, or `None` when pristine.
    fn applied_state(&self) -> Result<Option<AppliedState>, StateMachineError>;

    /// Captures a consistent view of the current state for a snapshot.
    fn snapshot(&self) -> Result<Self::Snapshot, StateMachineError>;

    /// Replaces the whole state with a snapshot stream written by [`StateSnapshot::write_to`],
    /// and stores `applied` as the applied state.
    fn restore(&mut self, data: &mut dyn Read, applied: &AppliedState) -> Result<(), StateMachineError>;
}

/// A consistent view of a [`StateMachine`], written out as a byte stream.
pub trait StateSnapshot: Send + 'static {
    /// Writes the whole view to `out`. Called on a blocking thread; may take long.
    fn write_to(self, out: &mut dyn Write) -> Result<(), StateMachineError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_state_round_trips_and_rejects_garbage() {
        let s = AppliedState::new(
            Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 9)),
            Default::default(),
            40,
        );
        let back = AppliedState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.last_applied_index(), Some(9));
        assert_eq!(back.last_command_index(), 40);
        assert!(AppliedState::decode(&[]).is_err());
        assert!(AppliedState::decode(&[7, 1, 2]).is_err());
        assert!(AppliedState::decode(&[APPLIED_STATE_VERSION, 0xff]).is_err());
    }

    #[test]
    fn version_1_counts_one_command_per_log_index() {
        #[derive(Serialize)]
        struct V1 {
            last_applied: Option<LogId>,
            membership: StoredMembership,
        }
        let v1 = V1 {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 17)),
            membership: Default::default(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(codec::encode(&v1).unwrap());
        let s = AppliedState::decode(&bytes).unwrap();
        assert_eq!(s.last_applied_index(), Some(17));
        assert_eq!(s.last_command_index(), 17);
    }
}
