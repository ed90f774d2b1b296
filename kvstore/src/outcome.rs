//! What applying a command produced.

use std::time::Duration;

use crate::model::{AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, KvEntry, SessionBehavior};

/// The result of [`crate::Store::apply`] for a command that was applied (or deliberately skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The index was at or below the last applied index: nothing happened (an idempotent replay).
    AlreadyApplied {
        /// The store's last applied index.
        last_applied: u64,
    },
    /// A KV verb's boolean, as Consul's HTTP API returns it: `false` means a CAS mismatch, a lock held
    /// by another session, or a release by a non-holder.
    Kv(bool),
    /// A transaction's results or errors.
    Txn(TxnOutcome),
    /// A session was created.
    SessionCreated {
        /// Its ID.
        id: String,
    },
    /// A session was destroyed (or did not exist).
    SessionDestroyed(SessionInvalidation),
    /// A token was written; it carries the assigned indexes and resolved policy names.
    AclToken(AclToken),
    /// A policy was written.
    AclPolicy(AclPolicy),
    /// ACLs were bootstrapped with this token.
    AclBootstrapped(AclToken),
    /// A role was written; it carries the assigned indexes and resolved policy names.
    AclRole(AclRole),
    /// An auth method was written.
    AclAuthMethod(AclAuthMethod),
    /// A binding rule was written.
    AclBindingRule(AclBindingRule),
    /// An auth method was deleted (or did not exist), with what went with it.
    AclAuthMethodDeleted(AuthMethodDeletion),
    /// An ACL replication batch was applied.
    AclReplicated(ReplicationCounts),
    /// Tombstones were reaped.
    TombstonesReaped {
        /// How many.
        count: u64,
    },
    /// A staged restore replaced the state; every blocked reader was woken.
    Restored,
    /// The command changed what it should, with nothing more to report (deletes of ACL records,
    /// restore begin and chunks).
    Done,
    /// A catalog registration or deregistration was applied (or changed nothing), with the sessions
    /// it destroyed.
    Catalog(crate::catalog::CatalogOutcome),
}

/// What deleting an auth method removed, so the node can drop cached tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthMethodDeletion {
    /// Whether the method existed (deleting an unknown method is a successful no-op).
    pub existed: bool,
    /// The IDs of its binding rules, deleted with it.
    pub binding_rule_ids: Vec<String>,
    /// The accessor IDs of the tokens its logins created, deleted with it.
    pub token_accessor_ids: Vec<String>,
}

/// What an ACL replication batch changed. Deletes count only records that existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicationCounts {
    /// Policies deleted.
    pub policies_deleted: u64,
    /// Policies written.
    pub policies_upserted: u64,
    /// Roles deleted.
    pub roles_deleted: u64,
    /// Roles written.
    pub roles_upserted: u64,
    /// Tokens deleted.
    pub tokens_deleted: u64,
    /// Tokens written.
    pub tokens_upserted: u64,
}

/// What destroying a session did. Lock-delay is wall-clock, so the store only reports it: the leader
/// must refuse to re-lock each key in `lock_delay_keys` for `lock_delay`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionInvalidation {
    /// Whether the session existed (destroying an unknown session is a successful no-op).
    pub existed: bool,
    /// The session's behavior.
    pub behavior: SessionBehavior,
    /// The keys that were held, released or deleted.
    pub held_keys: Vec<String>,
    /// The keys that get a lock-delay (empty when the delay is zero).
    pub lock_delay_keys: Vec<String>,
    /// The delay, clamped to [`crate::MAX_LOCK_DELAY`].
    pub lock_delay: Duration,
}

/// Consul's transaction response: `Results` when committed, `Errors` when rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnOutcome {
    /// One entry per operation that produces one (deletes produce none); values are present only for
    /// `get` and `get-tree`. Empty when the transaction rolled back.
    pub results: Vec<TxnResult>,
    /// Every failed operation; non-empty means nothing was applied (HTTP 409).
    pub errors: Vec<TxnOpError>,
}

impl TxnOutcome {
    /// True when the transaction was applied.
    pub fn committed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One result of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnResult {
    /// A KV entry (`{"KV": ...}`).
    Kv(KvEntry),
}

impl TxnResult {
    /// The KV entry, if this is a KV result.
    pub fn kv(&self) -> Option<&KvEntry> {
        match self {
            TxnResult::Kv(entry) => Some(entry),
        }
    }
}

/// One failed operation of a transaction (`{"OpIndex": n, "What": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOpError {
    /// Position of the operation in the request.
    pub op_index: usize,
    /// Consul's error text.
    pub what: String,
}
