//! Tribune's replicated state: Consul's KV, tombstones, sessions and ACL tables, applied deterministically.
//!
//! It knows nothing of raft: it is handed `(index, command)` pairs in log order.
