//! The Tribune node: assembles gossip, consensus, the replicated state and ACLs into a Consul-compatible agent.
//!
//! Today this package holds the agent's configuration ([`config`]): Consul's keys, read from JSON and HCL files,
//! merged in order and validated with errors that name the file, the key and the reason. The node itself
//! (`Node::start`), its RPC layer, HTTP API and CLI are assembled on top of the workspace's crates next.

pub mod config;
