//! Tribune's replicated state: Consul's KV, tombstones, sessions and ACL tables, applied deterministically.
//!
//! It knows nothing of raft: it is handed `(index, command)` pairs in log order.
//!
//! - [`Command`] is every state change (KV verbs, transactions, sessions, ACL records, tombstone reaping,
//!   staged restore); [`encode_command`] / [`decode_command`] put it in and take it out of the log.
//! - [`Store::apply`] applies one command at one index: deterministic (no clock, no randomness), all or
//!   nothing, with the index committed in the same backend batch. Semantics are Consul's (CAS, locks and
//!   LockIndex, tombstones, transactions with `Errors[{OpIndex, What}]`, session behaviors).
//! - Reads ([`Store::get`], [`Store::list`], [`Store::keys`], sessions, ACL lookups) return Consul's
//!   `X-Consul-Index` with the data; [`Store::wait`] and the [`WatchHub`] serve blocking queries.
//! - Backends: [`MemoryBackend`] and, with the default `rocksdb` feature, `RocksBackend`, behind the
//!   [`Backend`] trait.
//!
//! What it is NOT: no HTTP, no ACL rule evaluation (rules are stored as text), no wall-clock behaviour
//! (session TTLs, lock-delay enforcement and token expiry belong to the node), no service catalog yet.

mod apply;
mod backend;
mod codec;
mod command;
mod error;
mod export;
mod model;
mod outcome;
mod store;
mod tables;
mod watch;

pub use backend::memory::{MemoryBackend, MemoryExportView, MemoryView};
#[cfg(feature = "rocksdb")]
pub use backend::rocks::{RocksBackend, RocksStore, RocksView};
pub use backend::{Backend, Batch, BatchOp, ReadView, Slot, Table};
pub use codec::{CODEC_VERSION, MAX_COMMAND_BYTES, decode_command, encode_command};
pub use command::{
    Command, MAX_ID_BYTES, MAX_POLICY_NAME_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, TxnOp, validate_key,
    validate_prefix,
};
pub use error::{ApplyError, BackendError, CodecError, CorruptRecord, KeyProblem, OpenError, ReadError};
pub use model::{
    ANONYMOUS_TOKEN_ACCESSOR, AclBootstrapState, AclPolicy, AclToken, GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES, Indexed, IndexedTable, KvEntry, MAX_LOCK_DELAY,
    NewSession, PolicyLink, Session, SessionBehavior, StateRecord, Tombstone,
};
pub use outcome::{Outcome, SessionInvalidation, TxnOpError, TxnOutcome, TxnResult};
pub use store::{MemoryStore, Store, StoreConfig};
pub use watch::{Subscription, WaitOutcome, Wake, WatchHub, WatchScope};
