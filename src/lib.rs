//! The Tribune node: assembles gossip, consensus, the replicated state and ACLs into a Consul-compatible agent.
//!
//! Status: the node is assembled in a later stage; today this package ties the workspace together.
