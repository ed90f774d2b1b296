//! Cross-datacenter KV replication with consul-replicate's semantics, and without its mass deletes.
//!
//! A sans-IO planner compares a source prefix with a destination prefix and proposes puts and deletes
//! in transaction-sized batches; a thin loop drives it over `Source` and `Sink` traits that the caller
//! implements (the node implements them over Consul's HTTP API).
//!
//! Status: this crate holds only its documentation until the multi-datacenter work fills it.
