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

/// What changed under a prefix after an index ([`Store::changes_since`](crate::Store::changes_since)):
/// the entries written and the keys deleted since then, as they stand now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The index the changes start after.
    pub since: u64,
    /// Entries whose ModifyIndex is above `since`, in key order.
    pub changed: Vec<KvEntry>,
    /// Keys deleted after `since` and absent now (a key deleted then written again is only in
    /// `changed`), in key order; each with the index of its delete.
    pub deleted: Vec<Tombstone>,
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
    /// The checks of its node the session is bound to: Consul's `NodeChecks` and the IDs of its
    /// `ServiceChecks`, which name checks of the same node. The session is destroyed when one of
    /// them goes critical or is removed. Empty: tied to no check.
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

/// A token's or role's link to a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyLink {
    /// The policy ID.
    pub id: String,
    /// The policy name, filled in by the store from the linked policy when the token is written.
    pub name: String,
}

/// A token's (or role's owner's) link to a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RoleLink {
    /// The role ID.
    pub id: String,
    /// The role name, filled in by the store from the linked role when the token is written.
    pub name: String,
}

/// A service identity: the rights a service (and its sidecar proxy) needs, granted by name. Consul
/// synthesizes the policy; the store only keeps the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceIdentity {
    /// The service the identity speaks for.
    pub service_name: String,
    /// Datacenters where it applies; empty means all.
    pub datacenters: Vec<String>,
}

/// A node identity: the rights an agent needs for its node, in one datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeIdentity {
    /// The node the identity speaks for.
    pub node_name: String,
    /// The one datacenter where it applies.
    pub datacenter: String,
}

/// A built-in policy template (`builtin/service`, `builtin/node`, ...) with its variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TemplatedPolicy {
    /// The template, e.g. `builtin/service`.
    pub template_name: String,
    /// The template's `Name` variable; empty for templates that take none.
    pub name: String,
    /// Datacenters where it applies; empty means all.
    pub datacenters: Vec<String>,
}

/// An ACL token as plain data. Rules are not interpreted here.
///
/// The fields after `modify_index` arrived with format 3. They come last so that a format-2 record
/// is exactly the leading part of a format-3 one (see the `legacy` module); keep it that way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// Linked roles.
    pub roles: Vec<RoleLink>,
    /// Service identities.
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities.
    pub node_identities: Vec<NodeIdentity>,
    /// Templated policies.
    pub templated_policies: Vec<TemplatedPolicy>,
    /// The auth method whose login created the token; empty when none did.
    pub auth_method: String,
    /// When the token was created (unix milliseconds), chosen by the caller that wrote the command
    /// (the store reads no clock); `None` for tokens written before it was recorded.
    pub create_time_unix_ms: Option<u64>,
}

impl AclToken {
    /// A token with only its identifiers set: no links, no identities, global, never expiring.
    pub fn new(accessor_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        Self {
            accessor_id: accessor_id.into(),
            secret_id: secret_id.into(),
            description: String::new(),
            policies: Vec::new(),
            local: false,
            expiration_unix_ms: None,
            create_index: 0,
            modify_index: 0,
            roles: Vec::new(),
            service_identities: Vec::new(),
            node_identities: Vec::new(),
            templated_policies: Vec::new(),
            auth_method: String::new(),
            create_time_unix_ms: None,
        }
    }
}

/// An ACL policy as plain data; `rules` is stored as text and parsed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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

/// An ACL role: a named set of policy links and identities that tokens link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AclRole {
    /// Role ID.
    pub id: String,
    /// Unique name (letters, digits, `-` and `_`).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Linked policies (names filled in by the store).
    pub policies: Vec<PolicyLink>,
    /// Service identities.
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities.
    pub node_identities: Vec<NodeIdentity>,
    /// Templated policies.
    pub templated_policies: Vec<TemplatedPolicy>,
    /// Index of the command that created it (assigned by the store).
    pub create_index: u64,
    /// Index of the command that last changed it (assigned by the store).
    pub modify_index: u64,
}

/// An ACL auth method: how external credentials are exchanged for tokens. Its configuration is kept
/// as JSON text and interpreted elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AclAuthMethod {
    /// Unique name; the key of the method.
    pub name: String,
    /// The kind of method (`kubernetes`, `jwt`, `oidc`, ...); it cannot change once created.
    pub method_type: String,
    /// Name shown to users; empty when none.
    pub display_name: String,
    /// Free text.
    pub description: String,
    /// Longest lifetime of a token created by a login (milliseconds); 0 means the default.
    pub max_token_ttl_ms: u64,
    /// `""` or `"local"`: tokens are local to the datacenter; `"global"`: they are replicated.
    pub token_locality: String,
    /// The method-specific configuration, as JSON text.
    pub config_json: String,
    /// Index of the command that created it (assigned by the store).
    pub create_index: u64,
    /// Index of the command that last changed it (assigned by the store).
    pub modify_index: u64,
}

/// An ACL binding rule: which identities or links a login through an auth method earns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AclBindingRule {
    /// Rule ID.
    pub id: String,
    /// Free text.
    pub description: String,
    /// The auth method the rule belongs to; it must exist.
    pub auth_method: String,
    /// Which verified claims the rule applies to (a bexpr selector, uninterpreted here); empty: all.
    pub selector: String,
    /// What the rule binds: `service`, `node`, `role`, `policy` or `templated-policy`.
    pub bind_type: String,
    /// The name bound, possibly with `${claim}` interpolations (uninterpreted here).
    pub bind_name: String,
    /// For `templated-policy`, the template's `Name` variable (interpolated like `bind_name`).
    pub bind_vars_name: String,
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
/// Variants are only ever appended: their positions are their encoding in table-index records.
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
    /// ACL roles (format 3).
    AclRoles,
    /// ACL auth methods (format 3).
    AclAuthMethods,
    /// ACL binding rules (format 3).
    AclBindingRules,
    /// Catalog nodes (Consul's `nodes` index): moves with every node write and every instance
    /// registered or deregistered, since node reads show instances.
    Nodes,
    /// Catalog service instances (Consul's `services` index).
    Services,
    /// Health checks (Consul's `checks` index).
    Checks,
    /// The last time the last instance of some service name was deregistered (Consul's
    /// `service_last_extinction`): the index of reads of a service that has no instance.
    ServiceExtinction,
    /// The last time a node was deregistered (Consul's `node_last_extinction`): the index of reads of
    /// a node that is not registered.
    NodeExtinction,
}

/// One item of the replicated state, as exported to a snapshot or carried by a staged restore.
///
/// Derived lookup tables (secret → accessor, policy and role name → id, session → held keys, node ID
/// → node, service name → instances, service name → checks) are rebuilt from these records and never
/// travel. Variants are only ever appended: their positions are
/// their encoding in restore chunks.
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
    /// An ACL role (format 3).
    AclRole(AclRole),
    /// An ACL auth method (format 3).
    AclAuthMethod(AclAuthMethod),
    /// An ACL binding rule (format 3).
    AclBindingRule(AclBindingRule),
    /// A catalog node.
    Node(crate::catalog::Node),
    /// A service instance.
    Service(crate::catalog::ServiceInstance),
    /// A health check (boxed: its definition makes it the largest record by far).
    Check(Box<crate::catalog::HealthCheck>),
    /// The index of one service name (Consul's `service.<name>`), kept while the name has instances.
    ServiceIndex {
        /// The service name, ASCII-lowercased.
        service: String,
        /// Its index.
        index: u64,
    },
    /// The index of one node (Consul's `node.<name>`), kept while the node is registered.
    NodeIndex {
        /// The node name, ASCII-lowercased.
        node: String,
        /// Its index.
        index: u64,
    },
}

/// A value together with the index a blocking query compares against (Consul's `X-Consul-Index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed<T> {
    /// Never 0 (a 0 is reported as 1 so blocking clients do not spin).
    pub index: u64,
    /// The data read.
    pub value: T,
}
