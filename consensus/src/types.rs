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

/// The opaque bytes the state machine returned for one applied command.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Bytes);

impl fmt::Debug for CommandResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandResponse({} bytes)", self.0.len())
    }
}

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
    /// Tribune's openraft type configuration: opaque command bytes in, opaque response bytes out,
    /// `u64` server ids, [`NodeInfo`] per server and file-backed snapshots.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
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
