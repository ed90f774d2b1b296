//! The commands the replicated log carries, and the input limits every command is checked against.

use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, KeyProblem};
use crate::model::{
    ANONYMOUS_TOKEN_ACCESSOR, AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, NewSession,
    NodeIdentity, PolicyLink, RoleLink, ServiceIdentity, StateRecord, TemplatedPolicy,
};

/// Largest value a KV entry may hold: Consul's `kv_max_value_size` default (512 KiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Most operations one transaction may carry (Consul ≥ 1.14).
pub const MAX_TXN_OPS: usize = 128;
/// Longest session ID, token accessor/secret or policy ID accepted.
pub const MAX_ID_BYTES: usize = 256;
/// Longest ACL policy name accepted (Consul's limit).
pub const MAX_POLICY_NAME_BYTES: usize = 128;
/// Longest ACL role, auth method or template name, and longest service or node identity name.
pub const MAX_ACL_NAME_BYTES: usize = 256;
/// Most entries one list of an ACL record may hold (policy or role links, identities, templated
/// policies, datacenters).
pub const MAX_ACL_LIST_ITEMS: usize = 512;
/// Longest free-text field of a role, auth method or binding rule (description, selector, bind name).
pub const MAX_ACL_TEXT_BYTES: usize = 64 * 1024;
/// Longest auth method configuration (JSON text; JWKS and CA certificates make it large).
pub const MAX_AUTH_METHOD_CONFIG_BYTES: usize = 1024 * 1024;
/// Most deletes and upserts, all lists together, one [`AclReplicationBatch`] may carry.
pub const MAX_REPLICATION_BATCH_ITEMS: usize = 1024;
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
    /// `PUT /v1/session/create`. Refused when a bound check other than `serfHealth` is missing from
    /// the session's node in the catalog or is critical (`serfHealth` is the leader's to vouch for).
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
    // Format 3. Variants are only ever appended: a variant's position is its tag in the log.
    /// Create or replace a role: its name must be unused by another role and every policy it links
    /// must exist (indexes and link names are filled in by the store).
    AclRoleUpsert(AclRole),
    /// Delete a role by ID (tokens that link it keep a link that resolves to nothing).
    AclRoleDelete {
        /// Role ID.
        id: String,
    },
    /// Create or replace an auth method (its type cannot change).
    AclAuthMethodUpsert(AclAuthMethod),
    /// Delete an auth method, its binding rules and every token its logins created.
    AclAuthMethodDelete {
        /// Method name.
        name: String,
    },
    /// Create or replace a binding rule; its auth method must exist.
    AclBindingRuleUpsert(AclBindingRule),
    /// Delete a binding rule by ID.
    AclBindingRuleDelete {
        /// Rule ID.
        id: String,
    },
    /// A round of ACL replication from the primary datacenter, applied all or nothing.
    AclReplicationBatch(AclReplicationBatch),
    // The catalog (still format 3: appending variants leaves every earlier command's bytes as they were).
    /// `PUT /v1/catalog/register`: write a node, optionally a service on it and checks, all or
    /// nothing, with the rules of Consul's `ensureRegistrationTxn`:
    /// - the node is created, or updated unless `skip_node_update` is set; a node ID used by another
    ///   node is refused, and so is a new ID for a node whose current ID differs while its
    ///   `serfHealth` check is not critical (Consul's name reservation);
    /// - a check's `service_id` must name an instance on the node (registered by this command or
    ///   before); the check gets that instance's name and tags; a check without a status is critical;
    /// - records that would not change are not rewritten, and no index moves for them;
    /// - every session bound to a check that is critical after the command is destroyed.
    CatalogRegister(crate::catalog::Registration),
    /// `PUT /v1/catalog/deregister`: with a `service_id`, that instance and its checks; else with a
    /// `check_id`, that check; else the node with its instances, checks and sessions. Removing what is
    /// not there is a successful no-op.
    CatalogDeregister {
        /// The node.
        node: String,
        /// The instance to remove (takes precedence over `check_id`, as in Consul).
        service_id: Option<String>,
        /// The check to remove.
        check_id: Option<String>,
    },
}

/// What one round of ACL replication changes in a secondary datacenter, applied all or nothing in
/// this order: the deletes (policies, roles, tokens), then policy, role and token upserts.
///
/// Unlike the single-record commands, it mirrors the primary rather than judging it:
/// - records keep the IDs given; indexes are still this datacenter's;
/// - links to policies and roles that do not exist here are kept as given (their records may come
///   in a later batch, or the primary deleted them and resolves the link to nothing, as will we);
///   links to records that exist get their current names;
/// - a token's auth method need not exist here, and a token's secret may differ from the one stored
///   for its accessor (the primary is the authority);
/// - a name (or secret) still held by another record here goes to the record being replicated, and
///   that other record is removed (it is stale: the primary deleted or renamed it, and the same round
///   writes it again if it still exists there), so no two records ever share a name or a secret; a
///   secret held by a local token refuses the batch.
///
/// Deletes of records that do not exist are no-ops, and a token delete never removes a token local
/// to this datacenter (only global tokens are replicated). At most [`MAX_REPLICATION_BATCH_ITEMS`]
/// items in all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AclReplicationBatch {
    /// IDs of policies to delete.
    pub policy_deletes: Vec<String>,
    /// Policies to write, with the primary's IDs.
    pub policy_upserts: Vec<AclPolicy>,
    /// IDs of roles to delete.
    pub role_deletes: Vec<String>,
    /// Roles to write, with the primary's IDs.
    pub role_upserts: Vec<AclRole>,
    /// Accessor IDs of tokens to delete.
    pub token_deletes: Vec<String>,
    /// Global tokens to write, with the primary's accessor and secret IDs.
    pub token_upserts: Vec<AclToken>,
}

impl AclReplicationBatch {
    /// Deletes and upserts in all lists together.
    pub fn item_count(&self) -> usize {
        self.policy_deletes.len()
            + self.policy_upserts.len()
            + self.role_deletes.len()
            + self.role_upserts.len()
            + self.token_deletes.len()
            + self.token_upserts.len()
    }

    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.item_count() == 0
    }
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
            Command::AclTokenUpsert(token) | Command::AclBootstrap { token, .. } => validate_token(token),
            Command::AclTokenDelete { accessor_id } => validate_id("token.accessor_id", accessor_id),
            Command::AclPolicyUpsert(policy) => validate_policy(policy),
            Command::AclPolicyDelete { id } => validate_id("policy.id", id),
            Command::ReapTombstones { .. }
            | Command::RestoreBegin { .. }
            | Command::RestoreChunk { .. }
            | Command::RestoreCommit { .. } => Ok(()),
            Command::AclRoleUpsert(role) => validate_role(role),
            Command::AclRoleDelete { id } => validate_id("role.id", id),
            Command::AclAuthMethodUpsert(method) => validate_auth_method(method),
            Command::AclAuthMethodDelete { name } => {
                validate_name("auth_method.name", name, MAX_ACL_NAME_BYTES)
            }
            Command::AclBindingRuleUpsert(rule) => validate_binding_rule(rule),
            Command::AclBindingRuleDelete { id } => validate_id("binding_rule.id", id),
            Command::AclReplicationBatch(batch) => validate_replication_batch(batch),
            Command::CatalogRegister(registration) => crate::catalog::validate_registration(registration),
            Command::CatalogDeregister {
                node,
                service_id,
                check_id,
            } => crate::catalog::validate_deregistration(node, service_id.as_deref(), check_id.as_deref()),
        }
    }
}

fn validate_policy(policy: &AclPolicy) -> Result<(), ApplyError> {
    validate_id("policy.id", &policy.id)?;
    validate_policy_name(&policy.name)
}

fn validate_token(token: &AclToken) -> Result<(), ApplyError> {
    validate_id("token.accessor_id", &token.accessor_id)?;
    validate_id("token.secret_id", &token.secret_id)?;
    validate_policy_links(&TOKEN_FIELDS, &token.policies)?;
    validate_list("token.roles", &token.roles)?;
    token
        .roles
        .iter()
        .try_for_each(|RoleLink { id, .. }| validate_id("token.roles.id", id))?;
    validate_identities(
        &TOKEN_FIELDS,
        &token.service_identities,
        &token.node_identities,
        &token.templated_policies,
    )?;
    if !token.auth_method.is_empty() {
        if token.accessor_id == ANONYMOUS_TOKEN_ACCESSOR {
            return Err(ApplyError::InvalidField {
                field: "token.auth_method",
                reason: "the anonymous token cannot come from an auth method".into(),
            });
        }
        validate_name("token.auth_method", &token.auth_method, MAX_ACL_NAME_BYTES)?;
    }
    Ok(())
}

fn validate_role(role: &AclRole) -> Result<(), ApplyError> {
    validate_id("role.id", &role.id)?;
    validate_acl_name("role.name", &role.name, MAX_ACL_NAME_BYTES)?;
    validate_text("role.description", &role.description, MAX_ACL_TEXT_BYTES)?;
    validate_policy_links(&ROLE_FIELDS, &role.policies)?;
    validate_identities(
        &ROLE_FIELDS,
        &role.service_identities,
        &role.node_identities,
        &role.templated_policies,
    )
}

fn validate_auth_method(method: &AclAuthMethod) -> Result<(), ApplyError> {
    validate_acl_name("auth_method.name", &method.name, MAX_ACL_NAME_BYTES)?;
    validate_name("auth_method.method_type", &method.method_type, MAX_ACL_NAME_BYTES)?;
    validate_text(
        "auth_method.display_name",
        &method.display_name,
        MAX_ACL_TEXT_BYTES,
    )?;
    validate_text("auth_method.description", &method.description, MAX_ACL_TEXT_BYTES)?;
    if !matches!(method.token_locality.as_str(), "" | "local" | "global") {
        return Err(ApplyError::InvalidField {
            field: "auth_method.token_locality",
            reason: format!("{:?} is not \"local\" or \"global\"", method.token_locality),
        });
    }
    validate_text(
        "auth_method.config_json",
        &method.config_json,
        MAX_AUTH_METHOD_CONFIG_BYTES,
    )
}

fn validate_binding_rule(rule: &AclBindingRule) -> Result<(), ApplyError> {
    validate_id("binding_rule.id", &rule.id)?;
    validate_name("binding_rule.auth_method", &rule.auth_method, MAX_ACL_NAME_BYTES)?;
    validate_text("binding_rule.description", &rule.description, MAX_ACL_TEXT_BYTES)?;
    validate_text("binding_rule.selector", &rule.selector, MAX_ACL_TEXT_BYTES)?;
    validate_name("binding_rule.bind_type", &rule.bind_type, MAX_ACL_NAME_BYTES)?;
    if rule.bind_name.is_empty() {
        return Err(ApplyError::InvalidField {
            field: "binding_rule.bind_name",
            reason: "is empty".into(),
        });
    }
    validate_text("binding_rule.bind_name", &rule.bind_name, MAX_ACL_TEXT_BYTES)?;
    validate_text(
        "binding_rule.bind_vars_name",
        &rule.bind_vars_name,
        MAX_ACL_TEXT_BYTES,
    )
}

fn validate_replication_batch(batch: &AclReplicationBatch) -> Result<(), ApplyError> {
    let items = batch.item_count();
    if items > MAX_REPLICATION_BATCH_ITEMS {
        return Err(ApplyError::ReplicationBatchTooLarge {
            items,
            limit: MAX_REPLICATION_BATCH_ITEMS,
        });
    }
    batch
        .policy_deletes
        .iter()
        .try_for_each(|id| validate_id("replication.policy_deletes", id))?;
    batch
        .role_deletes
        .iter()
        .try_for_each(|id| validate_id("replication.role_deletes", id))?;
    batch
        .token_deletes
        .iter()
        .try_for_each(|id| validate_id("replication.token_deletes", id))?;
    batch.policy_upserts.iter().try_for_each(validate_policy)?;
    batch.role_upserts.iter().try_for_each(validate_role)?;
    batch.token_upserts.iter().try_for_each(|token| {
        if token.local {
            return Err(ApplyError::InvalidField {
                field: "replication.token_upserts.local",
                reason: format!("token {:?} is local to its datacenter", token.accessor_id),
            });
        }
        validate_token(token)
    })
}

fn validate_list<T>(field: &'static str, items: &[T]) -> Result<(), ApplyError> {
    if items.len() > MAX_ACL_LIST_ITEMS {
        return Err(ApplyError::InvalidField {
            field,
            reason: format!(
                "has {} entries, over the limit of {MAX_ACL_LIST_ITEMS}",
                items.len()
            ),
        });
    }
    Ok(())
}

fn validate_policy_links(fields: &IdentityFields, links: &[PolicyLink]) -> Result<(), ApplyError> {
    validate_list(fields.policies, links)?;
    links
        .iter()
        .try_for_each(|link| validate_id(fields.policy_id, &link.id))
}

/// The names of the fields a token and a role share, so an error names the record it is about.
struct IdentityFields {
    policies: &'static str,
    policy_id: &'static str,
    services: &'static str,
    service_name: &'static str,
    service_datacenters: &'static str,
    nodes: &'static str,
    node_name: &'static str,
    node_datacenter: &'static str,
    templated: &'static str,
    template_name: &'static str,
    template_variable: &'static str,
    template_datacenters: &'static str,
}

const TOKEN_FIELDS: IdentityFields = IdentityFields {
    policies: "token.policies",
    policy_id: "token.policies.id",
    services: "token.service_identities",
    service_name: "token.service_identities.service_name",
    service_datacenters: "token.service_identities.datacenters",
    nodes: "token.node_identities",
    node_name: "token.node_identities.node_name",
    node_datacenter: "token.node_identities.datacenter",
    templated: "token.templated_policies",
    template_name: "token.templated_policies.template_name",
    template_variable: "token.templated_policies.name",
    template_datacenters: "token.templated_policies.datacenters",
};

const ROLE_FIELDS: IdentityFields = IdentityFields {
    policies: "role.policies",
    policy_id: "role.policies.id",
    services: "role.service_identities",
    service_name: "role.service_identities.service_name",
    service_datacenters: "role.service_identities.datacenters",
    nodes: "role.node_identities",
    node_name: "role.node_identities.node_name",
    node_datacenter: "role.node_identities.datacenter",
    templated: "role.templated_policies",
    template_name: "role.templated_policies.template_name",
    template_variable: "role.templated_policies.name",
    template_datacenters: "role.templated_policies.datacenters",
};

/// Checks the identities and templated policies of a token or a role.
fn validate_identities(
    fields: &IdentityFields,
    services: &[ServiceIdentity],
    nodes: &[NodeIdentity],
    templated: &[TemplatedPolicy],
) -> Result<(), ApplyError> {
    validate_list(fields.services, services)?;
    for identity in services {
        validate_name(fields.service_name, &identity.service_name, MAX_ACL_NAME_BYTES)?;
        validate_datacenters(fields.service_datacenters, &identity.datacenters)?;
    }
    validate_list(fields.nodes, nodes)?;
    for identity in nodes {
        validate_name(fields.node_name, &identity.node_name, MAX_ACL_NAME_BYTES)?;
        validate_name(fields.node_datacenter, &identity.datacenter, MAX_ACL_NAME_BYTES)?;
    }
    validate_list(fields.templated, templated)?;
    for policy in templated {
        validate_name(fields.template_name, &policy.template_name, MAX_ACL_NAME_BYTES)?;
        validate_text(fields.template_variable, &policy.name, MAX_ACL_NAME_BYTES)?;
        validate_datacenters(fields.template_datacenters, &policy.datacenters)?;
    }
    Ok(())
}

fn validate_datacenters(field: &'static str, datacenters: &[String]) -> Result<(), ApplyError> {
    validate_list(field, datacenters)?;
    datacenters
        .iter()
        .try_for_each(|dc| validate_name(field, dc, MAX_ACL_NAME_BYTES))
}

/// A name that is a key or a reference: not empty, bounded, no NUL (the separator of composite keys).
pub(crate) fn validate_name(field: &'static str, name: &str, limit: usize) -> Result<(), ApplyError> {
    if name.is_empty() {
        return Err(ApplyError::InvalidField {
            field,
            reason: "is empty".into(),
        });
    }
    validate_text(field, name, limit)
}

/// Free text: bounded, no NUL. Empty is fine.
pub(crate) fn validate_text(field: &'static str, text: &str, limit: usize) -> Result<(), ApplyError> {
    let reason = if text.len() > limit {
        format!("is longer than {limit} bytes")
    } else if text.contains('\0') {
        "contains a NUL character".to_owned()
    } else {
        return Ok(());
    };
    Err(ApplyError::InvalidField { field, reason })
}

fn validate_policy_name(name: &str) -> Result<(), ApplyError> {
    validate_acl_name("policy.name", name, MAX_POLICY_NAME_BYTES)
}

/// A policy, role or auth method name: letters, digits, `-` and `_`, bounded.
fn validate_acl_name(field: &'static str, name: &str, limit: usize) -> Result<(), ApplyError> {
    let reason = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > limit {
        format!("is longer than {limit} bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "may only contain letters, digits, '-' and '_'".to_owned()
    } else {
        return Ok(());
    };
    Err(ApplyError::InvalidField { field, reason })
}
