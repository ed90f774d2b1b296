//! The commands the replicated log carries, and the input limits every command is checked against.

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, KeyProblem};
use crate::model::{AclPolicy, AclToken, NewSession, StateRecord};

/// Largest value a KV entry may hold: Consul's `kv_max_value_size` default (512 KiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Most operations one transaction may carry (Consul ≥ 1.14).
pub const MAX_TXN_OPS: usize = 128;
/// Longest session ID, token accessor/secret or policy ID accepted.
pub const MAX_ID_BYTES: usize = 256;
/// Longest ACL policy name accepted (Consul's limit).
pub const MAX_POLICY_NAME_BYTES: usize = 128;
/// Most health checks one session may be bound to.
pub(crate) const MAX_SESSION_CHECKS: usize = 64;

/// A state change. The node encodes it with [`crate::encode_command`] into the raft log; every server
/// applies it with [`crate::Store::apply`] at the same index and gets the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// `PUT /v1/kv/:key[?flags=]`: set a value; keeps the lock holder and LockIndex.
    KvSet {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags (0 unless set).
        flags: u64,
    },
    /// `PUT ?cas=N`: set only if the entry's ModifyIndex is `index`; `index == 0` means create only.
    KvCas {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Expected ModifyIndex, or 0 for "must not exist".
        index: u64,
    },
    /// `DELETE /v1/kv/:key`.
    KvDelete {
        /// Key.
        key: String,
    },
    /// `DELETE ?cas=N`: delete only if ModifyIndex is `index`; a missing key reports `true`.
    KvDeleteCas {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `DELETE ?recurse`: delete every key under a prefix (`""` deletes everything).
    KvDeleteTree {
        /// Prefix.
        prefix: String,
    },
    /// `PUT ?acquire=<session>`: take the key's lock and set its value.
    KvLock {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Session taking the lock; it must exist.
        session: String,
    },
    /// `PUT ?release=<session>`: release the key's lock and set its value; only the holder may.
    KvUnlock {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Session releasing the lock.
        session: String,
    },
    /// `PUT /v1/txn`: up to [`MAX_TXN_OPS`] KV operations applied all or nothing.
    Txn {
        /// The operations, in order.
        ops: Vec<TxnOp>,
    },
    /// `PUT /v1/session/create`.
    SessionCreate(NewSession),
    /// `PUT /v1/session/destroy/:id` or an invalidation by the leader (TTL, failed check).
    SessionDestroy {
        /// Session ID; an unknown ID is a no-op, as in Consul.
        id: String,
    },
    /// Create or replace a token (indexes are assigned by the store).
    AclTokenUpsert(AclToken),
    /// Delete a token by accessor ID.
    AclTokenDelete {
        /// Accessor ID.
        accessor_id: String,
    },
    /// Create or replace a policy (indexes are assigned by the store).
    AclPolicyUpsert(AclPolicy),
    /// Delete a policy by ID.
    AclPolicyDelete {
        /// Policy ID.
        id: String,
    },
    /// `PUT /v1/acl/bootstrap`: install the first management token, once. `reset_index` must equal
    /// the index of the previous bootstrap to bootstrap again.
    AclBootstrap {
        /// The management token (its policy links are replaced by `global-management`).
        token: AclToken,
        /// The reset index from `acl-bootstrap-reset`, if the operator asked for a reset.
        reset_index: Option<u64>,
    },
    /// Remove tombstones whose delete index is at or below `up_to_index` (the leader's tombstone GC).
    ReapTombstones {
        /// Highest delete index to reap.
        up_to_index: u64,
    },
    /// Start a staged restore: clears the staging area and names the restore.
    RestoreBegin {
        /// Identifies this restore; chunks and the commit must carry the same ID.
        restore_id: u64,
    },
    /// Add records to the staging area of the restore in progress.
    RestoreChunk {
        /// The restore in progress.
        restore_id: u64,
        /// Records to stage.
        records: Vec<StateRecord>,
    },
    /// Replace the whole state with the staging area, atomically.
    RestoreCommit {
        /// The restore in progress.
        restore_id: u64,
    },
}

/// One KV operation of a transaction, with the verbs of Consul's `/v1/txn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TxnOp {
    /// `set`.
    Set {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
    },
    /// `cas`: set if ModifyIndex matches (0 = must not exist).
    Cas {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `lock`: acquire with a session.
    Lock {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Session.
        session: String,
    },
    /// `unlock`: release by the holding session.
    Unlock {
        /// Key.
        key: String,
        /// Value.
        #[serde(with = "crate::serde_bytes")]
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Session.
        session: String,
    },
    /// `get`: fails if the key is missing; the result carries the value.
    Get {
        /// Key.
        key: String,
    },
    /// `get-tree`: every entry under a prefix, with values.
    GetTree {
        /// Prefix.
        prefix: String,
    },
    /// `check-index`: fails unless the key exists with this ModifyIndex.
    CheckIndex {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `check-session`: fails unless the key is locked by this session.
    CheckSession {
        /// Key.
        key: String,
        /// Expected holder.
        session: String,
    },
    /// `check-not-exists`: fails if the key exists.
    CheckNotExists {
        /// Key.
        key: String,
    },
    /// `delete`.
    Delete {
        /// Key.
        key: String,
    },
    /// `delete-tree`.
    DeleteTree {
        /// Prefix.
        prefix: String,
    },
    /// `delete-cas`: fails unless ModifyIndex matches (a missing key succeeds).
    DeleteCas {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
}

impl TxnOp {
    /// Whether the operation writes (a transaction of reads only can be served without the log).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            TxnOp::Get { .. }
                | TxnOp::GetTree { .. }
                | TxnOp::CheckIndex { .. }
                | TxnOp::CheckSession { .. }
                | TxnOp::CheckNotExists { .. }
        )
    }
}

/// Checks a KV key: not empty, no leading `/`, no leading or trailing spaces, no path traversal
/// (`../` or its URL-encoded form `..%2F`), the rules of Consul's key validation (PR #22850).
pub fn validate_key(key: &str) -> Result<(), ApplyError> {
    if key.is_empty() {
        return Err(invalid_key(key, KeyProblem::Empty));
    }
    validate_prefix(key)
}

/// Checks a KV prefix: as [`validate_key`], except that the empty prefix (the whole keyspace) is allowed.
pub fn validate_prefix(prefix: &str) -> Result<(), ApplyError> {
    if prefix.starts_with('/') {
        return Err(invalid_key(prefix, KeyProblem::LeadingSlash));
    }
    if prefix.starts_with(' ') || prefix.ends_with(' ') {
        return Err(invalid_key(prefix, KeyProblem::SurroundingSpace));
    }
    if prefix.contains("../") || prefix.to_ascii_lowercase().contains("..%2f") {
        return Err(invalid_key(prefix, KeyProblem::PathTraversal));
    }
    Ok(())
}

fn invalid_key(key: &str, problem: KeyProblem) -> ApplyError {
    ApplyError::InvalidKey {
        key: key.to_owned(),
        problem,
    }
}

pub(crate) fn validate_value(key: &str, value: &[u8]) -> Result<(), ApplyError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApplyError::ValueTooLarge {
            key: key.to_owned(),
            len: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks an identifier (session ID, accessor, secret, policy ID): not empty, bounded, no NUL (NUL
/// separates the parts of the store's composite lookup keys).
pub(crate) fn validate_id(field: &'static str, id: &str) -> Result<(), ApplyError> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_ID_BYTES {
        "is longer than 256 bytes"
    } else if id.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(ApplyError::InvalidField {
        field,
        reason: reason.to_owned(),
    })
}

fn validate_write(key: &str, value: &[u8]) -> Result<(), ApplyError> {
    validate_key(key)?;
    validate_value(key, value)
}

impl TxnOp {
    fn validate(&self) -> Result<(), ApplyError> {
        match self {
            TxnOp::Set { key, value, .. } | TxnOp::Cas { key, value, .. } => validate_write(key, value),
            TxnOp::Lock {
                key, value, session, ..
            }
            | TxnOp::Unlock {
                key, value, session, ..
            } => {
                validate_write(key, value)?;
                validate_session_ref(session)
            }
            TxnOp::Get { key }
            | TxnOp::CheckIndex { key, .. }
            | TxnOp::CheckNotExists { key }
            | TxnOp::Delete { key }
            | TxnOp::DeleteCas { key, .. } => validate_key(key),
            TxnOp::CheckSession { key, .. } => validate_key(key),
            TxnOp::GetTree { prefix } | TxnOp::DeleteTree { prefix } => validate_prefix(prefix),
        }
    }
}

fn validate_session_ref(session: &str) -> Result<(), ApplyError> {
    if session.is_empty() {
        return Err(ApplyError::MissingSession);
    }
    validate_id("session", session)
}

impl Command {
    /// Checks the command's input limits without looking at the state. [`crate::Store::apply`] runs
    /// this first; the leader may run it before proposing, to reject bad input early.
    pub fn validate(&self) -> Result<(), ApplyError> {
        match self {
            Command::KvSet { key, value, .. } | Command::KvCas { key, value, .. } => {
                validate_write(key, value)
            }
            Command::KvDelete { key } | Command::KvDeleteCas { key, .. } => validate_key(key),
            Command::KvDeleteTree { prefix } => validate_prefix(prefix),
            Command::KvLock {
                key, value, session, ..
            }
            | Command::KvUnlock {
                key, value, session, ..
            } => {
                validate_write(key, value)?;
                validate_session_ref(session)
            }
            Command::Txn { ops } => {
                if ops.len() > MAX_TXN_OPS {
                    return Err(ApplyError::TooManyTxnOps {
                        ops: ops.len(),
                        limit: MAX_TXN_OPS,
                    });
                }
                ops.iter().try_for_each(TxnOp::validate)
            }
            Command::SessionCreate(session) => {
                validate_id("session.id", &session.id)?;
                if session.node.is_empty() {
                    return Err(ApplyError::InvalidField {
                        field: "session.node",
                        reason: "is empty".into(),
                    });
                }
                if session.node_checks.len() > MAX_SESSION_CHECKS {
                    return Err(ApplyError::InvalidField {
                        field: "session.node_checks",
                        reason: format!("names more than {MAX_SESSION_CHECKS} checks"),
                    });
                }
                session
                    .node_checks
                    .iter()
                    .try_for_each(|check| validate_id("session.node_checks", check))
            }
            Command::SessionDestroy { id } => validate_id("session.id", id),
            Command::AclTokenUpsert(token) | Command::AclBootstrap { token, .. } => {
                validate_id("token.accessor_id", &token.accessor_id)?;
                validate_id("token.secret_id", &token.secret_id)?;
                token
                    .policies
                    .iter()
                    .try_for_each(|link| validate_id("token.policies.id", &link.id))
            }
            Command::AclTokenDelete { accessor_id } => validate_id("token.accessor_id", accessor_id),
            Command::AclPolicyUpsert(policy) => {
                validate_id("policy.id", &policy.id)?;
                validate_policy_name(&policy.name)
            }
            Command::AclPolicyDelete { id } => validate_id("policy.id", id),
            Command::ReapTombstones { .. }
            | Command::RestoreBegin { .. }
            | Command::RestoreChunk { .. }
            | Command::RestoreCommit { .. } => Ok(()),
        }
    }
}

fn validate_policy_name(name: &str) -> Result<(), ApplyError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_POLICY_NAME_BYTES {
        "is longer than 128 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "may only contain letters, digits, '-' and '_'"
    } else {
        return Ok(());
    };
    Err(ApplyError::InvalidField {
        field: "policy.name",
        reason: reason.to_owned(),
    })
}
