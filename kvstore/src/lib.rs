//! Tribune's replicated state: Consul's KV, tombstones, sessions, ACL tables and service catalog,
//! applied deterministically.
//!
//! It knows nothing of raft: it is handed `(index, command)` pairs in log order.
//!
//! - [`Command`] is every state change (KV verbs, transactions, sessions, ACL tokens, policies, roles,
//!   auth methods and binding rules, ACL replication batches, catalog registrations and
//!   deregistrations, tombstone reaping, staged restore); [`encode_command`] / [`decode_command`] put
//!   it in and take it out of the log.
//! - [`Store::apply`] applies one command at one index: deterministic (no clock, no randomness), all or
//!   nothing, with the index committed in the same backend batch. Semantics are Consul's (CAS, locks and
//!   LockIndex, tombstones, transactions with `Errors[{OpIndex, What}]`, session behaviors).
//! - Reads ([`Store::get`], [`Store::list`], [`Store::keys`], sessions, ACL lookups) return Consul's
//!   `X-Consul-Index` with the data; [`Store::wait`] and the [`WatchHub`] serve blocking queries.
//!   [`Store::changes_since`] answers a prefix's delta (entries written and keys deleted after an
//!   index) when the tombstones still prove every delete, for cross-datacenter replication.
//! - The catalog ([`Registration`], [`Node`], [`ServiceInstance`], [`HealthCheck`]) follows Consul's
//!   register and deregister rules (all or nothing; unchanged records are not rewritten; critical or
//!   removed checks and removed nodes destroy their sessions) and its indexes (per table, per service
//!   name, per node, extinctions). Its reads ([`Store::nodes`], [`Store::node`], [`Store::services`],
//!   [`Store::service_nodes`], [`Store::service_health`], [`Store::node_checks`],
//!   [`Store::service_checks`], [`Store::checks_in_state`]) return sorted, unfiltered results with
//!   Consul's index, and [`WatchScope`] has a scope for each.
//! - [`Store::export`] / [`Store::import`] move the whole state through `tribune-snapshot` archives.
//! - Backends: [`MemoryBackend`] and, with the default `rocksdb` feature, `RocksBackend`, behind the
//!   [`Backend`] trait. RocksDB batches go to the WAL unsynced: the raft log is synced and replays from
//!   `last_applied + 1` after a crash, and a command's writes and its index share one atomic batch, so the
//!   recorded index never runs ahead of the data and no command is ever half-applied.
//!
//! ```
//! use tribune_kvstore::{Command, Outcome, Store, StoreConfig, decode_command, encode_command};
//!
//! let store = Store::in_memory(StoreConfig::new("dc1"))?;
//! // The leader encodes a command into the raft log...
//! let bytes = encode_command(&Command::KvCas { key: "app/config".into(), value: b"v1".to_vec(), flags: 0, index: 0 })?;
//! // ...and every server applies the committed entry at its index.
//! let outcome = store.apply(7, &decode_command(&bytes)?)?;
//! assert_eq!(outcome, Outcome::Kv(true));
//! let read = store.get("app/config")?;
//! assert_eq!((read.index, read.value.map(|e| e.value)), (7, Some(b"v1".to_vec())));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What it is NOT: no HTTP, no ACL rule evaluation (rules are stored as text), no wall-clock behaviour
//! (session TTLs, lock-delay enforcement, token expiry and health-check runs belong to the node), no
//! catalog filtering (tags, `passing`, filter expressions are the HTTP layer's), no Connect, peering or
//! partitions, no coordinates, prepared queries or config entries.

mod apply;
mod backend;
mod catalog;
mod codec;
mod command;
mod error;
mod export;
mod legacy;
mod model;
mod outcome;
mod serde_bytes;
mod snapshot_io;
mod store;
mod tables;
mod watch;

pub use backend::memory::{MemoryBackend, MemoryExportView, MemoryView};
#[cfg(feature = "rocksdb")]
pub use backend::rocks::{RocksBackend, RocksFrozenView, RocksStore, RocksView};
pub use backend::{Backend, Batch, BatchOp, FrozenView, ReadView, Slot, Table};
pub use catalog::{
    CatalogOutcome, CheckDefinition, CheckRegistration, CheckServiceNode, CheckStatus, DestroyedSession,
    HealthCheck, MAX_CATALOG_LIST_ITEMS, MAX_CATALOG_NAME_BYTES, MAX_CATALOG_TEXT_BYTES, MAX_META_PAIRS,
    Node, NodeServices, Registration, ServiceAddress, ServiceInstance, ServiceNode, ServiceRegistration,
    ServiceWeights,
};
pub use codec::{CODEC_VERSION, MAX_COMMAND_BYTES, decode_command, encode_command};
pub use command::{
    AclReplicationBatch, Command, MAX_ACL_LIST_ITEMS, MAX_ACL_NAME_BYTES, MAX_ACL_TEXT_BYTES,
    MAX_AUTH_METHOD_CONFIG_BYTES, MAX_ID_BYTES, MAX_POLICY_NAME_BYTES, MAX_REPLICATION_BATCH_ITEMS,
    MAX_TXN_OPS, MAX_VALUE_BYTES, TxnOp, validate_key, validate_prefix,
};
pub use error::{ApplyError, BackendError, CodecError, CorruptRecord, KeyProblem, OpenError, ReadError};
pub use export::StoreSnapshot;
pub use model::{
    ANONYMOUS_TOKEN_ACCESSOR, AclAuthMethod, AclBindingRule, AclBootstrapState, AclPolicy, AclRole, AclToken,
    Changes, GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES, Indexed,
    IndexedTable, KvEntry, MAX_LOCK_DELAY, NewSession, NodeIdentity, PolicyLink, RoleLink, ServiceIdentity,
    Session, SessionBehavior, StateRecord, TemplatedPolicy, Tombstone,
};
pub use outcome::{
    AuthMethodDeletion, Outcome, ReplicationCounts, SessionInvalidation, TxnOpError, TxnOutcome, TxnResult,
};
pub use snapshot_io::{
    ACL_AUTH_METHOD_RECORD, ACL_BINDING_RULE_RECORD, ACL_BOOTSTRAP_RECORD, ACL_POLICY_RECORD,
    ACL_ROLE_RECORD, ACL_TOKEN_RECORD, CATALOG_CHECK_RECORD, CATALOG_NODE_INDEX_RECORD, CATALOG_NODE_RECORD,
    CATALOG_SERVICE_INDEX_RECORD, CATALOG_SERVICE_RECORD, ExportError, ExportOptions, ImportError,
    ImportReport, KV_RECORD, SESSION_RECORD, TABLE_INDEX_RECORD, TOMBSTONE_RECORD,
};
pub use store::{MemoryStore, Store, StoreConfig};
pub use watch::{Subscription, WaitOutcome, Wake, WatchHub, WatchScope};
