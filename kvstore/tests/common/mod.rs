//! Shared helpers of the integration tests: stores on every backend, and command builders.
#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;
use std::time::Duration;

use tribune_kvstore::{
    AclAuthMethod, AclBindingRule, AclPolicy, AclRole, AclToken, Backend, Command, MemoryBackend, NewSession,
    NodeIdentity, PolicyLink, RoleLink, ServiceIdentity, SessionBehavior, Store, StoreConfig,
    TemplatedPolicy, TxnOp,
};

pub const DC: &str = "dc1";

/// A store plus whatever must live as long as it (the RocksDB directory).
pub struct Harness<B: Backend> {
    pub store: Store<B>,
    pub dir: Option<tempfile::TempDir>,
}

impl<B: Backend> Deref for Harness<B> {
    type Target = Store<B>;
    fn deref(&self) -> &Store<B> {
        &self.store
    }
}

pub fn memory() -> Harness<MemoryBackend> {
    Harness {
        store: Store::in_memory(StoreConfig::new(DC)).unwrap(),
        dir: None,
    }
}

#[cfg(feature = "rocksdb")]
pub fn rocks() -> Harness<tribune_kvstore::RocksBackend> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_rocksdb(dir.path(), StoreConfig::new(DC)).unwrap();
    Harness {
        store,
        dir: Some(dir),
    }
}

pub fn set(key: &str, value: &str) -> Command {
    Command::KvSet {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
    }
}

pub fn set_flags(key: &str, value: &str, flags: u64) -> Command {
    Command::KvSet {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags,
    }
}

pub fn cas(key: &str, value: &str, index: u64) -> Command {
    Command::KvCas {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        index,
    }
}

pub fn del(key: &str) -> Command {
    Command::KvDelete { key: key.into() }
}

pub fn del_cas(key: &str, index: u64) -> Command {
    Command::KvDeleteCas {
        key: key.into(),
        index,
    }
}

pub fn del_tree(prefix: &str) -> Command {
    Command::KvDeleteTree {
        prefix: prefix.into(),
    }
}

pub fn lock(key: &str, value: &str, session: &str) -> Command {
    Command::KvLock {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        session: session.into(),
    }
}

pub fn unlock(key: &str, value: &str, session: &str) -> Command {
    Command::KvUnlock {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        session: session.into(),
    }
}

pub fn session(id: &str, node: &str, behavior: SessionBehavior, lock_delay: Duration) -> Command {
    Command::SessionCreate(NewSession {
        id: id.into(),
        name: format!("{id}-name"),
        node: node.into(),
        lock_delay,
        behavior,
        ttl: Some(Duration::from_secs(30)),
        node_checks: Vec::new(),
    })
}

pub fn destroy(id: &str) -> Command {
    Command::SessionDestroy { id: id.into() }
}

pub fn txn(ops: Vec<TxnOp>) -> Command {
    Command::Txn { ops }
}

pub fn t_set(key: &str, value: &str) -> TxnOp {
    TxnOp::Set {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
    }
}

pub fn policy(id: &str, name: &str) -> AclPolicy {
    AclPolicy {
        id: id.into(),
        name: name.into(),
        description: String::new(),
        rules: r#"key_prefix "" { policy = "read" }"#.into(),
        datacenters: vec![],
        create_index: 0,
        modify_index: 0,
    }
}

pub fn token(accessor: &str, secret: &str, policies: &[&str]) -> AclToken {
    AclToken {
        policies: policies
            .iter()
            .map(|id| PolicyLink {
                id: (*id).into(),
                name: String::new(),
            })
            .collect(),
        ..AclToken::new(accessor, secret)
    }
}

pub fn role(id: &str, name: &str, policies: &[&str]) -> AclRole {
    AclRole {
        id: id.into(),
        name: name.into(),
        description: format!("role {name}"),
        policies: policies
            .iter()
            .map(|id| PolicyLink {
                id: (*id).into(),
                name: String::new(),
            })
            .collect(),
        service_identities: vec![ServiceIdentity {
            service_name: "web".into(),
            datacenters: vec!["dc1".into()],
        }],
        node_identities: vec![NodeIdentity {
            node_name: "node1".into(),
            datacenter: "dc1".into(),
        }],
        templated_policies: vec![TemplatedPolicy {
            template_name: "builtin/service".into(),
            name: "api".into(),
            datacenters: Vec::new(),
        }],
        create_index: 0,
        modify_index: 0,
    }
}

pub fn role_link(id: &str) -> RoleLink {
    RoleLink {
        id: id.into(),
        name: String::new(),
    }
}

pub fn auth_method(name: &str, method_type: &str) -> AclAuthMethod {
    AclAuthMethod {
        name: name.into(),
        method_type: method_type.into(),
        display_name: format!("{name} logins"),
        description: String::new(),
        max_token_ttl_ms: 3_600_000,
        token_locality: "local".into(),
        config_json: r#"{"BoundAudiences":["tribune"]}"#.into(),
        create_index: 0,
        modify_index: 0,
    }
}

pub fn binding_rule(id: &str, method: &str) -> AclBindingRule {
    AclBindingRule {
        id: id.into(),
        description: String::new(),
        auth_method: method.into(),
        selector: "value.namespace==default".into(),
        bind_type: "service".into(),
        bind_name: "${value.name}".into(),
        bind_vars_name: String::new(),
        create_index: 0,
        modify_index: 0,
    }
}

/// A token created by a login through `method`.
pub fn login_token(accessor: &str, secret: &str, method: &str) -> AclToken {
    AclToken {
        auth_method: method.into(),
        local: true,
        create_time_unix_ms: Some(1_700_000_000_000),
        ..AclToken::new(accessor, secret)
    }
}

/// A registration of `node` at `address`, nothing else.
pub fn node_reg(node: &str, address: &str) -> tribune_kvstore::Registration {
    tribune_kvstore::Registration {
        node: node.into(),
        address: address.into(),
        ..Default::default()
    }
}

/// An instance `id` of service `name` with tags.
pub fn svc(id: &str, name: &str, tags: &[&str]) -> tribune_kvstore::ServiceRegistration {
    tribune_kvstore::ServiceRegistration {
        id: id.into(),
        service: name.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        port: 8080,
        ..Default::default()
    }
}

/// A check `id` in `status`, of instance `service_id` (empty: node-level).
pub fn chk(
    id: &str,
    status: Option<tribune_kvstore::CheckStatus>,
    service_id: &str,
) -> tribune_kvstore::CheckRegistration {
    tribune_kvstore::CheckRegistration {
        check_id: id.into(),
        name: format!("{id} check"),
        status,
        service_id: service_id.into(),
        check_type: "ttl".into(),
        ..Default::default()
    }
}

/// `CatalogRegister` of a node with an optional instance and checks.
pub fn register(
    node: &str,
    service: Option<tribune_kvstore::ServiceRegistration>,
    checks: Vec<tribune_kvstore::CheckRegistration>,
) -> Command {
    Command::CatalogRegister(tribune_kvstore::Registration {
        service,
        checks,
        ..node_reg(node, "10.0.0.1")
    })
}

/// `CatalogDeregister`.
pub fn deregister(node: &str, service_id: Option<&str>, check_id: Option<&str>) -> Command {
    Command::CatalogDeregister {
        node: node.into(),
        service_id: service_id.map(str::to_owned),
        check_id: check_id.map(str::to_owned),
    }
}

/// A session on `node` bound to `checks`.
pub fn bound_session(id: &str, node: &str, behavior: SessionBehavior, checks: &[&str]) -> Command {
    Command::SessionCreate(NewSession {
        id: id.into(),
        name: format!("{id}-name"),
        node: node.into(),
        lock_delay: Duration::from_secs(15),
        behavior,
        ttl: None,
        node_checks: checks.iter().map(|c| (*c).to_owned()).collect(),
    })
}

/// `CatalogRegister` of an instance and checks on `node`, leaving the node record as it is.
pub fn add_to(
    node: &str,
    service: Option<tribune_kvstore::ServiceRegistration>,
    checks: Vec<tribune_kvstore::CheckRegistration>,
) -> Command {
    Command::CatalogRegister(tribune_kvstore::Registration {
        node: node.into(),
        skip_node_update: true,
        service,
        checks,
        ..Default::default()
    })
}

/// Every catalog read of the given service names and nodes, rendered, so two stores can be compared
/// read for read (the derived lookup rows included, which `dump` does not show).
pub fn catalog_view<B: Backend>(s: &Store<B>, services: &[&str], nodes: &[&str]) -> String {
    use tribune_kvstore::CheckStatus;
    let mut out = format!("{:?}\n{:?}\n", s.nodes().unwrap(), s.services().unwrap());
    for name in services {
        out += &format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n",
            s.service_nodes(name).unwrap(),
            s.service_health(name).unwrap(),
            s.service_checks(name).unwrap(),
            s.scope_index(&tribune_kvstore::WatchScope::Service((*name).into()))
                .unwrap()
        );
    }
    for node in nodes {
        out += &format!(
            "{:?}\n{:?}\n",
            s.node(node).unwrap(),
            s.node_checks(node).unwrap()
        );
    }
    for state in [
        None,
        Some(CheckStatus::Passing),
        Some(CheckStatus::Warning),
        Some(CheckStatus::Critical),
    ] {
        out += &format!("{:?}\n", s.checks_in_state(state).unwrap());
    }
    out
}
