//! The two sides of a replication. Implementations do IO; everything they answer is data the runner
//! checks before it trusts it.

use std::future::Future;

use crate::model::{Batch, Entry, ReadQuery, SourceRead};

/// Why a source read failed. Every failure is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached or the connection failed.
    #[error("reading {prefix}@{datacenter}: {reason}")]
    Unreachable {
        /// The prefix read.
        prefix: String,
        /// The datacenter.
        datacenter: String,
        /// Why.
        reason: String,
    },
    /// The source answered with an error status.
    #[error("reading {prefix}@{datacenter}: status {status}: {body}")]
    Status {
        /// The prefix read.
        prefix: String,
        /// The datacenter.
        datacenter: String,
        /// The HTTP status (or its equivalent).
        status: u16,
        /// The server's explanation.
        body: String,
    },
    /// The answer could not be decoded.
    #[error("reading {prefix}@{datacenter}: undecodable answer: {reason}")]
    Decode {
        /// The prefix read.
        prefix: String,
        /// The datacenter.
        datacenter: String,
        /// Why.
        reason: String,
    },
}

/// Why a sink operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination could not be reached.
    #[error("destination unreachable: {0}")]
    Unreachable(String),
    /// The destination refused the request (status and explanation).
    #[error("destination refused: status {status}: {body}")]
    Refused {
        /// The HTTP status (or its equivalent).
        status: u16,
        /// The explanation.
        body: String,
    },
    /// The batch's fence failed: the replicator no longer holds its lock. Nothing was written.
    #[error("lock {key} is no longer held by session {session}; nothing was written")]
    FenceLost {
        /// The lock key.
        key: String,
        /// The session that was expected to hold it.
        session: String,
    },
    /// The answer could not be decoded.
    #[error("undecodable answer from the destination: {0}")]
    Decode(String),
}

/// The datacenter replicated from.
pub trait Source: Send + Sync {
    /// A recursive read of `query.prefix` in `query.datacenter`, blocking while the prefix's index is
    /// not past `query.index` (up to `query.wait`). An empty prefix is an empty
    /// [`ReadContent::Full`](crate::model::ReadContent::Full), not an error.
    fn read(&self, query: &ReadQuery) -> impl Future<Output = Result<SourceRead, SourceError>> + Send;
}

/// The local datacenter replicated into.
pub trait Sink: Send + Sync {
    /// The local datacenter's name; replication from it is refused.
    fn local_datacenter(&self) -> impl Future<Output = Result<String, SinkError>> + Send;

    /// Every entry under `prefix` (a consistent read), in key order.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<Entry>, SinkError>> + Send;

    /// One entry, if present (a consistent read).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, SinkError>> + Send;

    /// Applies the batch atomically, checking its fence in the same transaction.
    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send;
}
