//! The values that cross the [`Source`](crate::Source) and [`Sink`](crate::Sink) traits: KV entries,
//! what a source read answered, and the write batches a sink applies.

use std::time::Duration;

/// One KV entry, as Consul's `DirEntry` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full key.
    pub key: String,
    /// The raw value (not base64).
    pub value: Vec<u8>,
    /// The opaque flags.
    pub flags: u64,
    /// The index that created the key.
    pub create_index: u64,
    /// The index of its last change.
    pub modify_index: u64,
    /// How many times it was locked. Never copied to the destination.
    pub lock_index: u64,
    /// The session holding it, if any. Never copied to the destination: sessions belong to one
    /// datacenter.
    pub session: Option<String>,
}

/// A key deleted at the source, known from its tombstone (only in a [`ReadContent::Delta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedKey {
    /// The deleted key.
    pub key: String,
    /// The index of the delete.
    pub modify_index: u64,
}

/// A recursive read of a source prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadQuery {
    /// The raw key prefix (not a folder: `app` also matches `apple`).
    pub prefix: String,
    /// The datacenter to read from.
    pub datacenter: String,
    /// Block until the prefix's index passes this one (0: answer at once).
    pub index: u64,
    /// The longest the read may block.
    pub wait: Duration,
    /// Whether any server may answer (`?stale`), rather than only the leader.
    pub stale: bool,
    /// Ask for only the changes after this index (a Tribune extension). A source that cannot answer
    /// a delta answers the full prefix instead; the caller must look at [`SourceRead::content`].
    pub changes_since: Option<u64>,
}

/// What a source read answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRead {
    /// The prefix's index (`X-Consul-Index`).
    pub index: u64,
    /// Whether the answering server knew a leader (`X-Consul-KnownLeader`).
    pub known_leader: bool,
    /// How long ago the answering server last heard from its leader (`X-Consul-LastContact`); zero
    /// on the leader.
    pub last_contact: Duration,
    /// The entries.
    pub content: ReadContent,
}

/// The entries of a [`SourceRead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadContent {
    /// Every entry under the prefix, in key order (an empty vector for a 404).
    Full(Vec<Entry>),
    /// Only what changed after `since`: entries written and keys deleted.
    Delta {
        /// The index the changes start after.
        since: u64,
        /// Entries written after `since`.
        changed: Vec<Entry>,
        /// Keys deleted after `since`.
        deleted: Vec<DeletedKey>,
    },
}

/// One write in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set a key's value and flags (never its session).
    Put {
        /// The destination key.
        key: String,
        /// The raw value.
        value: Vec<u8>,
        /// The flags.
        flags: u64,
    },
    /// Delete one key (not a prefix).
    Delete {
        /// The destination key.
        key: String,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A lock the writer must still hold for a batch to apply: the sink checks it inside the same
/// transaction (Consul's `check-session` verb), so a replicator that lost its lock cannot write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lock key.
    pub key: String,
    /// The session that must hold it.
    pub session: String,
}

/// Writes applied atomically: all or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// The writes, at most [`MAX_TXN_OPS`](crate::MAX_TXN_OPS) with the fence included.
    pub ops: Vec<Op>,
    /// The lock to check in the same transaction, if the replicator runs under one.
    pub fence: Option<Fence>,
}
