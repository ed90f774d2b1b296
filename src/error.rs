//! The node's typed errors.

use std::path::PathBuf;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration asks for something this build or this version of the node cannot do.
    #[error("unsupported configuration: {field}: {reason}")]
    Unsupported {
        /// The configuration key.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener on {addr}: {source}")]
    Bind {
        /// "http" or "server".
        listener: &'static str,
        /// The address asked for.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The agent's persisted ACL tokens (`<data_dir>/acl-tokens.json`) could not be read.
    #[error("agent tokens file {path}: {reason}")]
    AgentTokens {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The replicated state could not be opened.
    #[error("cannot open the state store: {0}")]
    Store(#[from] tribune_kvstore::OpenError),
    /// The state machine adapter failed while opening (snapshot restore on start).
    #[error("cannot open the state machine: {0}")]
    StateMachine(#[from] tribune_consensus::StateMachineError),
    /// Consensus could not start.
    #[error("cannot start consensus: {0}")]
    Consensus(#[from] tribune_consensus::ConsensusError),
    /// The agent is bound to every address (`bind_addr = 0.0.0.0`, Consul's default) and no single
    /// address of this machine could be chosen to advertise.
    #[error("cannot choose the address to advertise: {0}")]
    Advertise(#[from] crate::config::AdvertiseError),
    /// The LAN gossip pool could not start.
    #[error("cannot start the LAN gossip pool: {reason}")]
    Gossip {
        /// Why.
        reason: String,
    },
}
