//! Typed errors of the store.

use crate::backend::Table;

/// What is wrong with a KV key or prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is empty where a key is needed.
    Empty,
    /// The key starts with `/`.
    LeadingSlash,
    /// The key starts or ends with a space.
    SurroundingSpace,
    /// The key contains `../` or `..%2F`.
    PathTraversal,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::Empty => "missing key name",
            KeyProblem::LeadingSlash => "key must not begin with '/'",
            KeyProblem::SurroundingSpace => "key must not begin or end with a space",
            KeyProblem::PathTraversal => "key must not contain path traversal ('../' or '..%2F')",
        })
    }
}

/// A storage backend failed (IO, or the engine refused). Not deterministic: the node must stop
/// applying and retry or shut down, since other servers did not see the same failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// The database lacks a column family it needs.
    #[error("column family {0:?} is missing")]
    MissingColumnFamily(String),
}

/// A stored record could not be decoded: the data on disk is damaged or was written by another format.
#[derive(Debug, thiserror::Error)]
#[error("corrupt record in table {table:?} at key {key:?}: {reason}")]
pub struct CorruptRecord {
    /// Table of the record.
    pub table: Table,
    /// Its key, lossily shown as text.
    pub key: String,
    /// What the decoder said.
    pub reason: String,
}

/// Why a command was not applied.
///
/// Errors for which [`ApplyError::is_deterministic`] is true are the command's fault: every server
/// rejects it the same way, the state is unchanged and the applied index still advances past it (as
/// Consul's FSM does). Storage and corruption errors are local: nothing was written, not even the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// A key or prefix is not acceptable.
    #[error("invalid key {key:?}: {problem}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong.
        problem: KeyProblem,
    },
    /// A value is over [`crate::MAX_VALUE_BYTES`].
    #[error("value for key {key:?} is {len} bytes, over the {limit}-byte limit")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Value length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A transaction carries more than [`crate::MAX_TXN_OPS`] operations.
    #[error("Transaction contains too many operations ({ops} > {limit})")]
    TooManyTxnOps {
        /// Operations given.
        ops: usize,
        /// The limit.
        limit: usize,
    },
    /// A lock or unlock without a session.
    #[error("missing session")]
    MissingSession,
    /// A lock names a session that does not exist (Consul: HTTP 500 "invalid session").
    #[error("invalid session {session:?}")]
    InvalidSession {
        /// The session named.
        session: String,
    },
    /// A field of a session or an ACL record is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A session with this ID already exists.
    #[error("session {id:?} already exists")]
    SessionExists {
        /// The ID.
        id: String,
    },
    /// A new session is bound to a check its node does not have in the catalog (Consul's words).
    #[error("Missing check '{check_id}' registration")]
    SessionCheckMissing {
        /// The check named.
        check_id: String,
    },
    /// A new session is bound to a check that is critical now (Consul's words): the session would
    /// be invalidated the moment it exists.
    #[error("Check '{check_id}' is in critical state")]
    SessionCheckCritical {
        /// The check named.
        check_id: String,
    },
    /// A token or role links to a policy that does not exist.
    #[error("link to unknown policy {policy_id:?}")]
    UnknownPolicy {
        /// The policy ID.
        policy_id: String,
    },
    /// A token links to a role that does not exist.
    #[error("link to unknown role {role_id:?}")]
    UnknownRole {
        /// The role ID.
        role_id: String,
    },
    /// A token or binding rule names an auth method that does not exist.
    #[error("unknown auth method {name:?}")]
    UnknownAuthMethod {
        /// The method name.
        name: String,
    },
    /// Another role already has this name.
    #[error("a role named {name:?} already exists")]
    DuplicateRoleName {
        /// The name.
        name: String,
    },
    /// An auth method's type cannot change once it exists.
    #[error("cannot change the type of auth method {name:?} from {stored:?} to {requested:?}")]
    AuthMethodTypeChanged {
        /// The method.
        name: String,
        /// Its type.
        stored: String,
        /// The type asked for.
        requested: String,
    },
    /// An ACL replication batch carries more items than [`crate::MAX_REPLICATION_BATCH_ITEMS`].
    #[error("ACL replication batch has {items} items, over the limit of {limit}")]
    ReplicationBatchTooLarge {
        /// Deletes and upserts in the batch.
        items: usize,
        /// The limit.
        limit: usize,
    },
    /// Another token already uses this secret.
    #[error("secret ID already in use by token {accessor_id:?}")]
    DuplicateSecret {
        /// The token that has it.
        accessor_id: String,
    },
    /// Another policy already has this name.
    #[error("a policy named {name:?} already exists")]
    DuplicatePolicyName {
        /// The name.
        name: String,
    },
    /// A token's secret cannot change once set.
    #[error("cannot change the secret of token {accessor_id:?}")]
    SecretChanged {
        /// The token.
        accessor_id: String,
    },
    /// The anonymous token or the global-management policy cannot be deleted.
    #[error("{what} cannot be deleted")]
    BuiltinDelete {
        /// What was targeted.
        what: &'static str,
    },
    /// ACLs were already bootstrapped and no (matching) reset index was given.
    #[error("ACL bootstrap no longer allowed (reset index: {reset_index})")]
    AclBootstrapNotAllowed {
        /// The index to write into `acl-bootstrap-reset` to allow one more bootstrap.
        reset_index: u64,
    },
    /// A staged-restore command names a restore that is not in progress.
    #[error("restore {restore_id} is not in progress")]
    RestoreNotInProgress {
        /// The restore named.
        restore_id: u64,
    },
    /// A check names an instance that is not registered on its node (Consul: "Missing service
    /// registration").
    #[error("Missing service registration for service ID {service_id:?} on node {node:?}")]
    MissingService {
        /// The node.
        node: String,
        /// The instance ID the check named.
        service_id: String,
    },
    /// A check of a registration names another node than the registration's.
    #[error("check node {check_node:?} does not match node {node:?}")]
    CheckNodeMismatch {
        /// The node the check named.
        check_node: String,
        /// The registration's node.
        node: String,
    },
    /// A registration gives a node ID that another node already has.
    #[error("node ID {id:?} is already used by node {node:?}")]
    NodeIdInUse {
        /// The ID.
        id: String,
        /// The node that has it.
        node: String,
    },
    /// A registration gives a node a new ID while its current ID is set and its `serfHealth` check is
    /// not critical (Consul's name reservation: a healthy node keeps its name).
    #[error("Node name {name} is reserved by node {id} with name {existing} ({address})")]
    NodeNameReserved {
        /// The name registered.
        name: String,
        /// The ID the node has.
        id: String,
        /// The node's name as stored.
        existing: String,
        /// The node's address.
        address: String,
    },
    /// The backend failed; nothing was written.
    #[error(transparent)]
    Storage(#[from] BackendError),
    /// A stored record is damaged; nothing was written.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

impl ApplyError {
    /// True when every server rejects the command the same way (the applied index advanced past it);
    /// false for local storage trouble (nothing was recorded, the command must be applied again).
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, ApplyError::Storage(_) | ApplyError::Corrupt(_))
    }
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] BackendError),
    /// A stored record is damaged.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

impl From<ReadError> for ApplyError {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Storage(e) => ApplyError::Storage(e),
            ReadError::Corrupt(e) => ApplyError::Corrupt(e),
        }
    }
}

/// A command could not be decoded from log bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are empty.
    #[error("empty command")]
    Empty,
    /// The first byte names a codec version this build does not know.
    #[error("unknown command codec version {found} (supported: {supported})")]
    UnknownVersion {
        /// Version byte found.
        found: u8,
        /// Version this build writes and reads.
        supported: u8,
    },
    /// bincode rejected the bytes.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// Bytes are left after the command.
    #[error("{0} trailing bytes after the command")]
    TrailingBytes(usize),
    /// Encoding failed (only for values serde cannot represent).
    #[error("cannot encode command: {0}")]
    Encode(String),
}

/// The store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] BackendError),
    /// The stored data belongs to another datacenter.
    #[error("the store belongs to datacenter {stored:?}, not {configured:?}")]
    DatacenterMismatch {
        /// Datacenter recorded in the store.
        stored: String,
        /// Datacenter asked for.
        configured: String,
    },
    /// The configuration is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A stored record is damaged.
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

impl From<ReadError> for OpenError {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::Storage(e) => OpenError::Storage(e),
            ReadError::Corrupt(e) => OpenError::Corrupt(e),
        }
    }
}
