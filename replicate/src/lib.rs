//! Cross-datacenter KV replication with consul-replicate's semantics, and without its mass deletes.
//!
//! One replication copies a source prefix in another datacenter (`global@dc1`) to a destination
//! prefix in the local datacenter (`global`, or another name with `global@dc1:backup`). The parts:
//!
//! - [`config`]: what to replicate and how ([`ReplicateConfig`], [`PrefixSpec`]), with
//!   consul-replicate's defaults.
//! - [`model`]: the entries, reads and write batches that cross the traits.
//! - [`Source`] and [`Sink`]: the two sides, implemented by the caller. The `http` feature implements
//!   both over any Consul-compatible HTTP API; the `tribune` node implements them over its own state.
//! - [`planner`]: sans-IO. Given what the source said and the destination's mirror, it decides the puts
//!   and deletes (each delete with its reason) or holds the pass with a reason (the mass-delete guard),
//!   and cuts the result into transactions of at most [`MAX_TXN_OPS`] operations.
//! - [`runner`]: the thin async loop per prefix ([`Replicator`]): blocking reads, quiescence
//!   ([`quiesce`]), retries with back-off ([`backoff`]), `once`, status ([`status`]) and lag.
//! - [`api_path`]: percent-encoding of KV keys and query values in Consul's API paths (the tribune
//!   node's command line uses it too).
//! - [`memory`]: an in-memory [`Source`] and [`Sink`] with fault injection, for tests and embedders.
//!
//! It is not a lock service: keeping one replicator per datacenter is the caller's job (the `http`
//! feature has a session lock; the node replicates only on its leader), and the runner fences its writes
//! with the [`model::Fence`] it is given.

pub mod api_path;
pub mod backoff;
pub mod config;
#[cfg(feature = "http")]
pub mod http;
pub mod memory;
pub mod model;
pub mod planner;
pub mod quiesce;
pub mod runner;
pub mod status;
mod traits;

pub use config::{PrefixSpec, PrefixSpecError, ReplicateConfig, RetryConfig, WaitConfig};
pub use memory::{MemorySink, MemorySource, SinkFault, SourceFault};
pub use model::{Batch, DeletedKey, Entry, Fence, Op, ReadContent, ReadQuery, SourceRead};
pub use planner::{DeleteReason, Guard, Hold, Mirror, Plan, Planner, Scope};
pub use runner::{Clock, PassError, ReplicateError, Replicator, RunOutcome, SystemClock};
pub use status::{PrefixStatus, status_key};
pub use traits::{Sink, SinkError, Source, SourceError};

/// The most operations one transaction may carry; Consul refuses larger `/v1/txn` requests.
pub const MAX_TXN_OPS: usize = 64;
