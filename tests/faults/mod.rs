//! The fault harness: real `tribune agent` servers, a nemesis, clients recording histories, and
//! the campaign that checks them (see tests/t20_faults.rs); in every run the catalog scenario
//! (catalog.rs); in WAN runs also the federated ACL scenario (acl.rs) and the KV replication
//! scenario (replication.rs).

pub(crate) mod acl;
pub(crate) mod campaign;
pub(crate) mod catalog;
pub(crate) mod cluster;
pub(crate) mod http;
pub(crate) mod nemesis;
pub(crate) mod net;
pub(crate) mod replication;
pub(crate) mod wan;
pub(crate) mod workload;
