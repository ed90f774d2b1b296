//! The records the store holds: plain data, serde-encoded, shared by commands, reads and snapshots.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One KV entry, as Consul's `DirEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The full key.
    pub key: String,
    /// The opaque value bytes.
    #[serde(with = "crate::serde_bytes")]
    pub value: Vec<u8>,
    /// Opaque flags chosen by the client.
    pub flags: u64,
    /// Index of the command that created the entry.
    pub create_index: u64,
    /// Index of the command that last changed the value, flags or lock holder.
    pub modify_index: u64,
    /// How many times the entry's lock was acquired (kept across releases).
    pub lock_index: u64,
    /// The session that holds the entry's lock, if any.
    pub session: Option<String>,
}

/// A deleted key: the graveyard entry that keeps a prefix's index from sliding back after a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted key.
    pub key: String,
    /// Index of the command that deleted it.
    pub index: u64,
}

/// What happens to the keys a session holds when the session is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SessionBehavior {
    /// The locks are released; the keys stay (Consul's default).
    #[default]
    Release,
    /// The held keys are deleted.
    Delete,
}

/// The longest lock-delay Consul honours (`MaxLockDelay`); longer delays are clamped when reported.
pub const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session ID (a UUID chosen by the leader before the command enters the log).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The node the session belongs to.
    pub node: String,
    /// How long the leader refuses to re-lock a key this session held, after invalidation.
    pub lock_delay: Duration,
    /// What destroying the session does to its held keys.
    pub behavior: SessionBehavior,
    /// Time to live, if the session must be renewed (the leader's timers enforce it, not the store).
    pub ttl: Option<Duration>,
    /// The node health checks the session is bound to (Consul's `NodeChecks`): the leader destroys the
    /// session when one of them goes critical. Empty: tied to no check.
    pub node_checks: Vec<String>,
    /// Index of the command that created it.
    pub create_index: u64,
    /// Index of the command that last changed it.
    pub modify_index: u64,
}

/// A session to create: everything but the indexes, which the store assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSession {
    /// The session ID; the leader picks it (the store never generates randomness).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The node the session belongs to.
    pub node: String,
    /// Lock-delay applied to held keys on invalidation.
    pub lock_delay: Duration,
    /// What destroying the session does to its held keys.
    pub behavior: SessionBehavior,
    /// Time to live, if any.
    pub ttl: Option<Duration>,
    /// The node health checks the session is bound to (see [`Session::node_checks`]).
    pub node_checks: Vec<String>,
}

/// A token's link to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyLink {
    /// The policy ID.
    pub id: String,
    /// The policy name, filled in by the store from the linked policy when the token is written.
    pub name: String,
}

/// An ACL token as plain data. Rules are not interpreted here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclToken {
    /// Public identifier.
    pub accessor_id: String,
    /// The secret presented by clients.
    pub secret_id: String,
    /// Free text.
    pub description: String,
    /// Linked policies.
    pub policies: Vec<PolicyLink>,
    /// A local token is not replicated to other datacenters.
    pub local: bool,
    /// Expiration time (unix milliseconds). The store never reads a clock: callers check it.
    pub expiration_unix_ms: Option<u64>,
    /// Index of the command that created it (assigned by the store).
    pub create_index: u64,
    /// Index of the command that last changed it (assigned by the store).
    pub modify_index: u64,
}

/// An ACL policy as plain data; `rules` is stored as text and parsed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclPolicy {
    /// Policy ID.
    pub id: String,
    /// Unique name (letters, digits, `-` and `_`).
    pub name: String,
    /// Free text.
    pub description: String,
    /// HCL or JSON rules, uninterpreted.
    pub rules: String,
    /// Datacenters the policy is valid in; empty means all.
    pub datacenters: Vec<String>,
    /// Index of the command that created it (assigned by the store).
    pub create_index: u64,
    /// Index of the command that last changed it (assigned by the store).
    pub modify_index: u64,
}

/// The accessor ID of Consul's built-in anonymous token, which can never be deleted.
pub const ANONYMOUS_TOKEN_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// The ID of Consul's built-in `global-management` policy, which ACL bootstrap links to.
pub const GLOBAL_MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// The name of the built-in management policy.
pub const GLOBAL_MANAGEMENT_POLICY_NAME: &str = "global-management";
/// The rules of the built-in management policy: write on every resource.
pub const GLOBAL_MANAGEMENT_RULES: &str = r#"acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"#;

/// Whether ACLs were bootstrapped, and at which index (the "reset index" needed to bootstrap again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AclBootstrapState {
    /// Index of the bootstrap command, or `None` if ACLs were never bootstrapped.
    pub bootstrapped_at: Option<u64>,
}

/// The per-table indexes Consul reports for reads of a whole table (the `X-Consul-Index` of lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IndexedTable {
    /// KV entries and tombstones together (Consul's `kvs` + `tombstones`).
    Kv,
    /// Sessions.
    Sessions,
    /// ACL tokens.
    AclTokens,
    /// ACL policies.
    AclPolicies,
}

/// One item of the replicated state, as exported to a snapshot or carried by a staged restore.
///
/// Derived lookup tables (secret → accessor, policy name → id, session → held keys) are rebuilt from
/// these records and never travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StateRecord {
    /// A KV entry.
    Kv(KvEntry),
    /// A tombstone.
    Tombstone(Tombstone),
    /// A session.
    Session(Session),
    /// An ACL token.
    AclToken(AclToken),
    /// An ACL policy.
    AclPolicy(AclPolicy),
    /// A table's index.
    TableIndex {
        /// Which table.
        table: IndexedTable,
        /// Its index.
        index: u64,
    },
    /// The ACL bootstrap state.
    AclBootstrap(AclBootstrapState),
}

/// A value together with the index a blocking query compares against (Consul's `X-Consul-Index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// Never 0 (a 0 is reported as 1 so blocking clients do not spin).
    pub index: u64,
    /// The data read.
    pub value: T,
}
