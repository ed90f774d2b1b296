//! Raft consensus for Tribune servers, on [openraft](https://docs.rs/openraft/0.9), over opaque
//! command bytes.
//!
//! A set of servers becomes one replicated log with a state machine behind it. The application
//! (Tribune's node, over tribune-kvstore) implements [`StateMachine`]; this crate does the rest:
//!
//! - **[`Consensus`]**: a running server. Start it with a log store, a [`StateMachineStore`]
//!   over your state machine and a [`Transport`]; then [`Consensus::write`] (forwarded to the
//!   leader from a follower), [`Consensus::read`] / [`Consensus::read_barrier`] in three
//!   [`ReadMode`]s, status queries ([`Consensus::leader`], [`Consensus::peers`],
//!   [`Consensus::last_contact`]), cluster formation ([`Consensus::discovered`] implements
//!   `bootstrap_expect`) and change ([`Consensus::add_server`], [`Consensus::remove_server`],
//!   [`Consensus::remove_failed_servers`]).
//! - **Log stores**: `RocksLogStore` (feature `rocksdb`, default) persists votes and entries
//!   with synced writes and group commit; [`MemLogStore`] keeps them in memory. Both pass
//!   openraft's storage test suite.
//! - **[`StateMachine`]**: apply a batch of committed commands, report the applied state, take
//!   a snapshot as a byte stream, restore one. Its documentation lists what an implementer MUST
//!   guarantee.
//! - **The RPC port**: one TCP port per server carries Raft traffic, forwarded writes and opaque
//!   application requests ([`AppHandler`], [`Consensus::call_app`]), with length-prefixed,
//!   multiplexed frames over one reused connection per peer ([`TcpTransport`]).
//!   [`FaultyTransport`] wraps any transport to drop, delay, duplicate or partition traffic.
//!
//! What it is NOT: it does not know what the commands mean, does not discover servers (gossip
//! feeds [`Consensus::discovered`]), does not check ACLs, and does not forward across
//! datacenters yet (requests carry a datacenter field for that).

mod codec;
mod config;
mod election;
mod error;
mod lease;
mod log_mem;
#[cfg(feature = "rocksdb")]
mod log_rocks;
mod proposer;
mod server;
mod sm_store;
mod snapshot_file;
mod state_machine;
mod transport;
mod types;
mod wire;

pub use config::ConsensusConfig;
pub use error::{ConsensusError, CorruptRecord, StateMachineError};
pub use log_mem::MemLogStore;
#[cfg(feature = "rocksdb")]
pub use log_rocks::{RocksLogReader, RocksLogStore};
/// openraft itself, for metrics types and `Raft::wait` conditions.
pub use openraft;
pub use server::{
    AppHandler, BootstrapStatus, Consensus, DiscoveredServer, ReadMode, ServerEntry, ServerRole,
};
pub use sm_store::StateMachineStore;
pub use snapshot_file::SnapshotFile;
pub use state_machine::{AppliedState, CommittedCommand, StateMachine, StateSnapshot};
pub use transport::{Faults, FaultyTransport, TcpTransport, Transport, TransportError};
pub use types::{
    AppliedCommand, BatchResponse, Command, CommandBatch, Entry, LogId, NodeId, NodeInfo, Raft, StorageError,
    StoredMembership, TypeConfig,
};
pub use wire::{AppRequest, RpcKind, RpcRequest, RpcResponse, WriteResponse};
