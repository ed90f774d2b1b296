//! The openraft type configuration: what travels in the log and how servers are named.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::snapshot_file::SnapshotFile;

/// A server's identity in the Raft configuration.
pub type NodeId = u64;

/// An opaque command replicated through the log; the application's [`StateMachine`](crate::StateMachine)
/// decodes it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Bytes);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Command {
    fn from(v: Vec<u8>) -> Self {
        Command(Bytes::from(v))
    }
}

impl From<Bytes> for Command {
    fn from(v: Bytes) -> Self {
        Command(v)
    }
}

impl From<&[u8]> for Command {
    fn from(v: &[u8]) -> Self {
        Command(Bytes::copy_from_slice(v))
    }
}

/// What one Raft log entry carries: the commands of one proposal, in the order they were
/// submitted.
///
/// openraft 0.9 appends (and syncs) one entry per client write before it looks at the next, so
/// one command per entry would cap a leader at one fsync per command. The server's proposer
/// packs every command that arrives while earlier proposals are in flight into one entry; the
/// state machine still sees each command on its own, with its own index.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch(pub Vec<Bytes>);

impl fmt::Debug for CommandBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: usize = self.0.iter().map(Bytes::len).sum();
        write!(f, "CommandBatch({} commands, {bytes} bytes)", self.0.len())
    }
}

/// What applying one command produced: its command index and the state machine's response.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommand {
    /// The index the state machine applied the command at (see
    /// [`CommittedCommand::index`](crate::CommittedCommand::index)).
    pub index: u64,
    /// The state machine's response bytes.
    pub response: Bytes,
}

impl fmt::Debug for AppliedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppliedCommand(#{}, {} bytes)",
            self.index,
            self.response.len()
        )
    }
}

/// The responses to one log entry's commands, in the same order; empty for entries that carry
/// no command (blank and membership entries) or that were applied before (a replay).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse(pub Vec<AppliedCommand>);

/// What the cluster knows about a server besides its id: where its RPC port is and its name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The server's RPC address (`host:port`), the one port carrying Raft, forwarded writes and
    /// application requests.
    pub rpc_addr: String,
    /// The server's node name, as gossip knows it.
    pub name: String,
}

impl NodeInfo {
    /// A node description from its RPC address and name.
    pub fn new(rpc_addr: impl Into<String>, name: impl Into<String>) -> Self {
        NodeInfo {
            rpc_addr: rpc_addr.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// Tribune's openraft type configuration: batches of opaque commands in, their responses
    /// out, `u64` server ids, [`NodeInfo`] per server and file-backed snapshots.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResponse,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle specialised to [`TypeConfig`].
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of [`TypeConfig`].
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// openraft's storage error specialised to [`NodeId`].
pub type StorageError = openraft::StorageError<NodeId>;
/// A membership configuration together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
