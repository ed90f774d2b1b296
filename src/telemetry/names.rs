//! Consul's names for what Tribune measures, without the `metrics_prefix` (added when rendering):
//! the replicated commands' timings, the HTTP routes' timings, and a line of help for each series.
//!
//! It is not where the series are kept or rendered.

use tribune_kvstore::Command;

/// Counts the raft log entries this server applied.
pub(crate) const RAFT_APPLY: &str = "raft.apply";
/// Counts the times this server became leader.
pub(crate) const RAFT_STATE_LEADER: &str = "raft.state.leader";
/// Counts the times this server became a candidate.
pub(crate) const RAFT_STATE_CANDIDATE: &str = "raft.state.candidate";
/// Counts the times this server became a follower.
pub(crate) const RAFT_STATE_FOLLOWER: &str = "raft.state.follower";
/// A follower's time since it last heard from the leader, sampled periodically.
pub(crate) const RAFT_LAST_CONTACT: &str = "raft.leader.lastContact";
/// Counts the calls this server received from other servers on its RPC port.
pub(crate) const RPC_REQUEST: &str = "rpc.request";
/// Counts the requests this server carried to another datacenter (label `datacenter`).
pub(crate) const RPC_CROSS_DC: &str = "rpc.cross-dc";
/// Counts the requests a client agent handed to a server.
pub(crate) const CLIENT_RPC: &str = "client.rpc";
/// Counts the requests a client agent handed on that no server answered.
pub(crate) const CLIENT_RPC_FAILED: &str = "client.rpc.failed";
/// Times every HTTP request (labels `method` and `path`), Consul's current name.
pub(crate) const API_HTTP: &str = "api.http";
/// Whether this server is the leader (gauge, 1 or 0).
pub(crate) const SERVER_IS_LEADER: &str = "server.isLeader";
/// The last index applied to the state machine (gauge).
pub(crate) const RAFT_APPLIED_INDEX: &str = "raft.applied_index";
/// The last index in the raft log (gauge).
pub(crate) const RAFT_LAST_INDEX: &str = "raft.last_index";
/// Counts the members the LAN pool saw join.
pub(crate) const SERF_MEMBER_JOIN: &str = "serf.member.join";
/// Counts the members the LAN pool declared failed.
pub(crate) const SERF_MEMBER_FAILED: &str = "serf.member.failed";
/// Counts the members that left the LAN pool.
pub(crate) const SERF_MEMBER_LEFT: &str = "serf.member.left";
/// Counts the user events the LAN pool delivered.
pub(crate) const SERF_EVENTS: &str = "serf.events";
/// Lifeguard's local health score of this agent's LAN pool member: 0 is healthy (gauge).
pub(crate) const MEMBERLIST_HEALTH_SCORE: &str = "memberlist.health.score";
/// The alive client agents of the LAN pool (gauge).
pub(crate) const MEMBERS_CLIENTS: &str = "members.clients";
/// The alive servers of the LAN pool (gauge).
pub(crate) const MEMBERS_SERVERS: &str = "members.servers";
/// Times resolving a request's token to its permissions.
pub(crate) const ACL_RESOLVE_TOKEN: &str = "acl.ResolveToken";
/// Counts token resolutions the cache answered.
pub(crate) const ACL_TOKEN_CACHE_HIT: &str = "acl.token.cache_hit";
/// Counts token resolutions that read the token from the state.
pub(crate) const ACL_TOKEN_CACHE_MISS: &str = "acl.token.cache_miss";
/// The sessions with a TTL the leader is timing (gauge).
pub(crate) const SESSION_TTL_ACTIVE: &str = "session_ttl.active";
/// Times the leader's invalidation of a session whose TTL ran out.
pub(crate) const SESSION_TTL_INVALIDATE: &str = "session_ttl.invalidate";
/// ACL replication into this secondary datacenter: 1 while its last round succeeded (gauges, one
/// per kind), and the primary's index it last replicated.
pub(crate) const REPLICATION_ACL_POLICIES_STATUS: &str = "leader.replication.acl-policies.status";
pub(crate) const REPLICATION_ACL_POLICIES_INDEX: &str = "leader.replication.acl-policies.index";
pub(crate) const REPLICATION_ACL_ROLES_STATUS: &str = "leader.replication.acl-roles.status";
pub(crate) const REPLICATION_ACL_ROLES_INDEX: &str = "leader.replication.acl-roles.index";
pub(crate) const REPLICATION_ACL_TOKENS_STATUS: &str = "leader.replication.acl-tokens.status";
pub(crate) const REPLICATION_ACL_TOKENS_INDEX: &str = "leader.replication.acl-tokens.index";

/// The methods HTTP timings are kept for: a request's method is client input, and each method
/// makes series of its own, so any other method is not timed.
pub(crate) const TIMED_METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"];

/// The kinds of replicated commands that are timed, each with Consul's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    KvSet,
    KvCas,
    KvDelete,
    KvDeleteCas,
    KvDeleteTree,
    KvLock,
    KvUnlock,
    Txn,
    SessionCreate,
    SessionDestroy,
    TokenUpsert,
    TokenDelete,
    PolicyUpsert,
    PolicyDelete,
    RoleUpsert,
    RoleDelete,
    AuthMethodUpsert,
    AuthMethodDelete,
    BindingRuleUpsert,
    BindingRuleDelete,
    AclBootstrap,
    ReapTombstones,
    CatalogRegister,
    CatalogDeregister,
}

/// The series that time one kind of command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandSeries {
    /// The whole write on the leader, from proposal to applied (Consul's endpoint timings such as
    /// `kvs.apply`); `None` where Consul has no such series.
    pub(crate) write: Option<&'static str>,
    /// The state machine's apply alone (Consul's `fsm.*`).
    pub(crate) fsm: &'static str,
    /// The `op` label of the state machine's series.
    pub(crate) op: Option<&'static str>,
}

impl CommandKind {
    /// Every kind, in the order of the enum (handles are kept in this order).
    pub(crate) const ALL: [CommandKind; 24] = [
        CommandKind::KvSet,
        CommandKind::KvCas,
        CommandKind::KvDelete,
        CommandKind::KvDeleteCas,
        CommandKind::KvDeleteTree,
        CommandKind::KvLock,
        CommandKind::KvUnlock,
        CommandKind::Txn,
        CommandKind::SessionCreate,
        CommandKind::SessionDestroy,
        CommandKind::TokenUpsert,
        CommandKind::TokenDelete,
        CommandKind::PolicyUpsert,
        CommandKind::PolicyDelete,
        CommandKind::RoleUpsert,
        CommandKind::RoleDelete,
        CommandKind::AuthMethodUpsert,
        CommandKind::AuthMethodDelete,
        CommandKind::BindingRuleUpsert,
        CommandKind::BindingRuleDelete,
        CommandKind::AclBootstrap,
        CommandKind::ReapTombstones,
        CommandKind::CatalogRegister,
        CommandKind::CatalogDeregister,
    ];

    /// The kind of `command`; `None` for the commands that are not timed (restores, replication
    /// batches), which still count in [`RAFT_APPLY`].
    pub(crate) fn of(command: &Command) -> Option<Self> {
        Some(match command {
            Command::KvSet { .. } => CommandKind::KvSet,
            Command::KvCas { .. } => CommandKind::KvCas,
            Command::KvDelete { .. } => CommandKind::KvDelete,
            Command::KvDeleteCas { .. } => CommandKind::KvDeleteCas,
            Command::KvDeleteTree { .. } => CommandKind::KvDeleteTree,
            Command::KvLock { .. } => CommandKind::KvLock,
            Command::KvUnlock { .. } => CommandKind::KvUnlock,
            Command::Txn { .. } => CommandKind::Txn,
            Command::SessionCreate(_) => CommandKind::SessionCreate,
            Command::SessionDestroy { .. } => CommandKind::SessionDestroy,
            Command::AclTokenUpsert(_) => CommandKind::TokenUpsert,
            Command::AclTokenDelete { .. } => CommandKind::TokenDelete,
            Command::AclPolicyUpsert(_) => CommandKind::PolicyUpsert,
            Command::AclPolicyDelete { .. } => CommandKind::PolicyDelete,
            Command::AclRoleUpsert(_) => CommandKind::RoleUpsert,
            Command::AclRoleDelete { .. } => CommandKind::RoleDelete,
            Command::AclAuthMethodUpsert(_) => CommandKind::AuthMethodUpsert,
            Command::AclAuthMethodDelete { .. } => CommandKind::AuthMethodDelete,
            Command::AclBindingRuleUpsert(_) => CommandKind::BindingRuleUpsert,
            Command::AclBindingRuleDelete { .. } => CommandKind::BindingRuleDelete,
            Command::AclBootstrap { .. } => CommandKind::AclBootstrap,
            Command::ReapTombstones { .. } => CommandKind::ReapTombstones,
            Command::CatalogRegister(_) => CommandKind::CatalogRegister,
            Command::CatalogDeregister { .. } => CommandKind::CatalogDeregister,
            _ => return None,
        })
    }

    /// Consul's series for this kind.
    pub(crate) fn series(self) -> CommandSeries {
        let (write, fsm, op) = match self {
            CommandKind::KvSet => (Some("kvs.apply"), "fsm.kvs", Some("set")),
            CommandKind::KvCas => (Some("kvs.apply"), "fsm.kvs", Some("cas")),
            CommandKind::KvDelete => (Some("kvs.apply"), "fsm.kvs", Some("delete")),
            CommandKind::KvDeleteCas => (Some("kvs.apply"), "fsm.kvs", Some("delete-cas")),
            CommandKind::KvDeleteTree => (Some("kvs.apply"), "fsm.kvs", Some("delete-tree")),
            CommandKind::KvLock => (Some("kvs.apply"), "fsm.kvs", Some("lock")),
            CommandKind::KvUnlock => (Some("kvs.apply"), "fsm.kvs", Some("unlock")),
            CommandKind::Txn => (Some("txn.apply"), "fsm.txn", None),
            CommandKind::SessionCreate => (Some("session.apply"), "fsm.session", Some("create")),
            CommandKind::SessionDestroy => (Some("session.apply"), "fsm.session", Some("destroy")),
            CommandKind::TokenUpsert => (Some("acl.token.upsert"), "fsm.acl.token", Some("upsert")),
            CommandKind::TokenDelete => (Some("acl.token.delete"), "fsm.acl.token", Some("delete")),
            CommandKind::PolicyUpsert => (Some("acl.policy.upsert"), "fsm.acl.policy", Some("upsert")),
            CommandKind::PolicyDelete => (Some("acl.policy.delete"), "fsm.acl.policy", Some("delete")),
            CommandKind::RoleUpsert => (Some("acl.role.upsert"), "fsm.acl.role", Some("upsert")),
            CommandKind::RoleDelete => (Some("acl.role.delete"), "fsm.acl.role", Some("delete")),
            CommandKind::AuthMethodUpsert => (
                Some("acl.authmethod.upsert"),
                "fsm.acl.authmethod",
                Some("upsert"),
            ),
            CommandKind::AuthMethodDelete => (
                Some("acl.authmethod.delete"),
                "fsm.acl.authmethod",
                Some("delete"),
            ),
            CommandKind::BindingRuleUpsert => (
                Some("acl.bindingrule.upsert"),
                "fsm.acl.bindingrule",
                Some("upsert"),
            ),
            CommandKind::BindingRuleDelete => (
                Some("acl.bindingrule.delete"),
                "fsm.acl.bindingrule",
                Some("delete"),
            ),
            CommandKind::AclBootstrap => (None, "fsm.acl.token", Some("bootstrap")),
            CommandKind::ReapTombstones => (None, "fsm.tombstone", Some("reap")),
            CommandKind::CatalogRegister => (Some("catalog.register"), "fsm.register", None),
            CommandKind::CatalogDeregister => (Some("catalog.deregister"), "fsm.deregister", None),
        };
        CommandSeries { write, fsm, op }
    }
}

/// Consul's two names for the HTTP route an axum pattern serves: the dotted tail of the older
/// `http.<METHOD>.<tail>` series (`v1.kv._`) and the `path` label of `api.http` (`v1_kv_`).
///
/// Consul registers prefixes (`/v1/kv/`, where what follows is parsed by the handler) and marks
/// the parsed part with `_`; an axum pattern's first `{…}` segment is where that part starts.
pub(crate) fn http_route_names(pattern: &str) -> (String, String) {
    let registered = match pattern.find('{') {
        Some(at) => pattern.get(..at).unwrap_or(pattern),
        None => pattern,
    };
    let registered = registered.trim_start_matches('/');
    let dotted = registered
        .split('/')
        .map(|part| if part.is_empty() { "_" } else { part })
        .collect::<Vec<_>>()
        .join(".");
    (dotted, registered.replace('/', "_"))
}

/// A line of help for a series (its name without the prefix), for Prometheus's `# HELP`.
pub(crate) fn help(name: &str) -> &'static str {
    match name {
        RAFT_APPLY => "Raft log entries this server applied to its state.",
        RAFT_STATE_LEADER => "Times this server became the raft leader.",
        RAFT_STATE_CANDIDATE => "Times this server started a raft election.",
        RAFT_STATE_FOLLOWER => "Times this server became a raft follower.",
        RAFT_LAST_CONTACT => {
            "Time since this follower last heard from the leader, in milliseconds, sampled every second."
        }
        RPC_REQUEST => "Calls this server received from other servers on its RPC port.",
        RPC_CROSS_DC => "Requests this server carried to a server of another datacenter.",
        CLIENT_RPC => "Requests this client agent handed to a server.",
        CLIENT_RPC_FAILED => "Requests this client agent handed on that no server answered.",
        API_HTTP => "Time to serve an HTTP request, in milliseconds, by method and route.",
        SERVER_IS_LEADER => "1 while this server is the raft leader, else 0.",
        RAFT_APPLIED_INDEX => "The last raft index applied to this server's state.",
        RAFT_LAST_INDEX => "The last index in this server's raft log.",
        SERF_MEMBER_JOIN => "Members the LAN pool saw join.",
        SERF_MEMBER_FAILED => "Members the LAN pool declared failed.",
        SERF_MEMBER_LEFT => "Members that left the LAN pool.",
        SERF_EVENTS => "User events the LAN pool delivered to this agent.",
        MEMBERS_CLIENTS => "Alive client agents in the LAN pool.",
        MEMBERLIST_HEALTH_SCORE => "Lifeguard's health score of this agent in the LAN pool; 0 is healthy.",
        MEMBERS_SERVERS => "Alive servers in the LAN pool.",
        ACL_RESOLVE_TOKEN => "Time to resolve a request's token to its permissions, in milliseconds.",
        ACL_TOKEN_CACHE_HIT => "Token resolutions the ACL cache answered.",
        ACL_TOKEN_CACHE_MISS => "Token resolutions that read the token from the state.",
        SESSION_TTL_ACTIVE => "Sessions with a TTL the leader is timing.",
        SESSION_TTL_INVALIDATE => {
            "Time for the leader to invalidate a session whose TTL ran out, in milliseconds."
        }
        "catalog.register" => "Time to complete a catalog registration on the leader, in milliseconds.",
        "catalog.deregister" => "Time to complete a catalog deregistration on the leader, in milliseconds.",
        _ if name.starts_with("leader.replication.") => {
            "ACL replication into this datacenter: 1 while the last round succeeded (status), or the primary's last replicated index."
        }
        "kvs.apply" => "Time to complete a KV write on the leader (proposal to applied), in milliseconds.",
        "txn.apply" => "Time to complete a transaction on the leader (proposal to applied), in milliseconds.",
        "session.apply" => {
            "Time to complete a session write on the leader (proposal to applied), in milliseconds."
        }
        _ if name.starts_with("acl.") => {
            "Time to complete an ACL write on the leader (proposal to applied), in milliseconds."
        }
        _ if name.starts_with("fsm.") => {
            "Time for the state machine to apply one command, in milliseconds, by operation."
        }
        _ if name.starts_with("http.") => "Time to serve an HTTP request to this route, in milliseconds.",
        _ => "A Tribune agent metric.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_follow_consul_s_registered_prefixes() {
        let names = |pattern| http_route_names(pattern);
        assert_eq!(names("/v1/kv/{*key}"), ("v1.kv._".into(), "v1_kv_".into()));
        assert_eq!(names("/v1/kv/"), ("v1.kv._".into(), "v1_kv_".into()));
        assert_eq!(names("/v1/txn"), ("v1.txn".into(), "v1_txn".into()));
        assert_eq!(
            names("/v1/acl/token/{accessor}/clone"),
            ("v1.acl.token._".into(), "v1_acl_token_".into())
        );
        assert_eq!(
            names("/v1/operator/raft/peer"),
            ("v1.operator.raft.peer".into(), "v1_operator_raft_peer".into())
        );
    }

    #[test]
    fn every_kind_is_listed_once_in_order() {
        for (at, kind) in CommandKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, at);
        }
        let set = Command::KvSet {
            key: "k".into(),
            value: vec![],
            flags: 0,
        };
        let kind = CommandKind::of(&set).unwrap();
        assert_eq!(kind.series().write, Some("kvs.apply"));
        assert_eq!(kind.series().op, Some("set"));
    }
}
