//! The crate's typed errors.

use std::time::Duration;

use crate::types::{NodeId, NodeInfo};

/// A failure of a consensus operation, as the application sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The operation needs the leader and this server is not it. `leader` is the server this one
    /// believes leads now, when it knows one.
    #[error("this server is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader's id, if known.
        leader: Option<NodeId>,
        /// The current leader's address and name, if known.
        leader_info: Option<NodeInfo>,
    },
    /// No leader is known, so a write or a consistent read cannot be served now.
    #[error("no cluster leader is known")]
    NoLeader,
    /// The operation did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        operation: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The leader's write queue is full: the write was refused before it was queued, so it will
    /// never take effect; the client may retry later (Consul's answer to overload is a 429).
    #[error("too many writes are waiting for the leader ({queued} queued); retry later")]
    Overloaded {
        /// The queue's capacity.
        queued: usize,
    },
    /// A request to another server was never sent (no connection could be made): it had no
    /// effect there, so it is safe to retry, on that server or another.
    #[error("request to server {target} not sent: {reason}")]
    NotSent {
        /// The server the request was for.
        target: NodeId,
        /// Why it could not be sent.
        reason: String,
    },
    /// A request to another server failed at the transport level after it may have been sent:
    /// whether it took effect there is unknown.
    #[error("request to server {target} failed: {reason}")]
    Transport {
        /// The server the request was for.
        target: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// The server a request went to stopped being the leader before it answered (this server
    /// learned of an election or another leader): whether the request took effect is unknown, and
    /// waiting longer for the old leader would only delay the client's retry.
    #[error(
        "leader {target} was replaced while the request was in flight; it may or may not have taken effect"
    )]
    LeaderChanged {
        /// The server the request was for.
        target: NodeId,
    },
    /// A cluster membership change was refused or failed.
    #[error("membership change refused: {reason}")]
    Membership {
        /// Why.
        reason: String,
    },
    /// The application's state machine failed.
    #[error("state machine: {0}")]
    StateMachine(#[from] StateMachineError),
    /// Raft stopped on this server (shut down, or a storage failure made it stop).
    #[error("raft stopped: {reason}")]
    Stopped {
        /// Why it stopped.
        reason: String,
    },
    /// The server could not start.
    #[error("startup failed: {reason}")]
    Startup {
        /// Why.
        reason: String,
    },
    /// No handler for application requests is registered on the target server.
    #[error("no application request handler is registered on the server")]
    NoAppHandler,
    /// The application handler on the target server returned an error.
    #[error("application handler failed: {reason}")]
    App {
        /// The handler's error message.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A failure reported by the application's [`StateMachine`](crate::StateMachine).
///
/// Returning it from `apply` stops Raft on this server: a replicated command that cannot be
/// applied leaves the state machine behind the log, and continuing would serve wrong data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StateMachineError {
    /// Reading or writing the state failed.
    #[error("state machine I/O: {reason}")]
    Io {
        /// What failed.
        reason: String,
    },
    /// Stored or received state is corrupt.
    #[error("corrupt state: {reason}")]
    Corrupt {
        /// What is wrong.
        reason: String,
    },
}

impl StateMachineError {
    /// An I/O failure with a message.
    pub fn io(reason: impl std::fmt::Display) -> Self {
        StateMachineError::Io {
            reason: reason.to_string(),
        }
    }

    /// Corrupt data with a message.
    pub fn corrupt(reason: impl std::fmt::Display) -> Self {
        StateMachineError::Corrupt {
            reason: reason.to_string(),
        }
    }
}

impl From<std::io::Error> for StateMachineError {
    fn from(e: std::io::Error) -> Self {
        StateMachineError::io(e)
    }
}

/// A log entry, vote or metadata record on disk that does not decode.
///
/// The log store reports it as a storage error rather than panicking: openraft then stops this
/// server, which is the safe reaction to a damaged log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("corrupt {what} in the log store{}: {reason}", index.map(|i| format!(" at index {i}")).unwrap_or_default())]
pub struct CorruptRecord {
    /// Which record: "log entry", "vote", "committed log id", "purged log id", "log key".
    pub what: &'static str,
    /// The log index of the record, when it is a log entry.
    pub index: Option<u64>,
    /// Why it does not decode.
    pub reason: String,
}
