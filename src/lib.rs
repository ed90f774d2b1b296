//! The Tribune node: assembles consensus, the replicated state and Consul's HTTP API into a server agent
//! that a Rust program embeds and that Consul's clients talk to unmodified.
//!
//! - [`Node::start`] takes a validated [`config::Config`] (load one with [`config::ConfigLoader`], or start
//!   from [`config::Config::dev`]) and returns a [`NodeHandle`] once its listeners are bound;
//!   [`NodeHandle::shutdown`] stops every task and waits for it.
//! - The server keeps tribune-kvstore's state (in memory for a development agent, RocksDB under `data_dir`
//!   with the default `rocksdb` feature) behind tribune-consensus: every write is a kvstore `Command`
//!   replicated through the raft log; followers forward writes to the leader and serve reads after the
//!   leader's read index.
//! - The HTTP API follows Consul's paths, parameters, bodies, headers and status codes for `/v1/kv`,
//!   `/v1/txn`, `/v1/session`, `/v1/status`, `/v1/agent/self`, `/v1/agent/token/*`,
//!   `/v1/catalog/datacenters`, `/v1/snapshot` and `/v1/operator/raft/*`, with blocking queries and the
//!   three consistency modes, and `/v1/acl/{bootstrap,token,tokens,policy,policies}` with ACLs enforced
//!   on every endpoint when `acl.enabled` (tribune-acl over the replicated ACL tables).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tribune::NodeError> {
//! let node = tribune::Node::start(tribune::config::Config::dev()).await?;
//! println!("Consul API on http://{:?}", node.http_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The package's `tribune` binary (feature `cli`, on by default) is the command line: `tribune agent` runs
//! a node from Consul-style configuration, and Consul's verbs (`kv`, `snapshot`, `acl`, `operator`, `lock`,
//! `members`, `join`, `leave`, `force-leave`, `keygen`, `keyring`) plus a load generator (`bench`) talk to an agent's
//! HTTP API. Embedders turn the feature off.
//!
//! - Servers of several datacenters meet in a WAN gossip pool (`join -wan`, `retry_join_wan`); a request
//!   with `?dc=` for another datacenter is carried to one of its servers and served there.
//! - [`replicate`] gives tribune-replicate a [`NodeSource`] (another datacenter's prefix, through the
//!   `?dc=` path, with delta reads) and a [`NodeSink`] (this datacenter's state, through consensus),
//!   from [`NodeHandle::replication_source`] and [`NodeHandle::replication_sink`].
//!
//! What it is NOT (yet): no service catalog, health checks or DNS; client agents run without ACLs.

mod acl;
mod acl_replication;
mod checks;
mod client;
pub mod config;
mod dns;
pub mod duration;
mod error;
mod events;
mod federation;
mod fsm;
mod gossip_keys;
mod http;
mod local;
mod local_api;
pub mod logs;
mod membership;
mod node;
pub mod paths;
pub mod replicate;
pub mod strconv;
mod telemetry;
mod tokens;
pub mod watches;

pub use error::NodeError;
pub use events::id_to_index as user_event_index;
pub use http::{ApiRoute, client_routes, server_routes};
pub use local::{ReloadError, ReloadSource};
pub use node::{Node, NodeHandle};
pub use replicate::{NodeSink, NodeSource, ReplicationSetupError};
