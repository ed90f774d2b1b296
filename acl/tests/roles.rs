//! The resolver with roles, service/node identities and templated policies: what they grant, their
//! datacenter scoping, the role cache (TTL, extend-cache, async-cache) and the authorizer cache key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tribune_acl::{
    Decision, DefaultPolicy, DownPolicy, Freshness, NodeIdentity, Policy, PolicyLink, ResolveError, Resolver,
    ResolverConfig, Role, RoleLink, ServiceIdentity, SourceError, TEMPLATE_DNS, TEMPLATE_NODE,
    TemplatedPolicy, Token, TokenSource,
};

#[derive(Default)]
struct State {
    tokens: HashMap<String, Token>,
    policies: HashMap<String, Policy>,
    roles: HashMap<String, Role>,
    down: bool,
    role_calls: usize,
}

#[derive(Default)]
struct Source(Mutex<State>);

impl Source {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn policy(&self, id: &str, rules: &str) {
        let policy = Policy {
            id: id.into(),
            name: format!("name-{id}"),
            description: String::new(),
            rules: rules.into(),
            datacenters: vec![],
            create_index: 1,
            modify_index: 1,
        };
        self.state().policies.insert(id.into(), policy);
    }

    fn role(&self, role: Role) {
        self.state().roles.insert(role.id.clone(), role);
    }

    fn token(&self, token: Token) {
        self.state()
            .tokens
            .insert(token.secret_id.expose().to_owned(), token);
    }

    fn check(&self) -> Result<(), SourceError> {
        if self.state().down {
            return Err(SourceError::Unreachable {
                reason: "down".into(),
            });
        }
        Ok(())
    }
}

impl TokenSource for Source {
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError> {
        self.check()?;
        Ok(self.state().tokens.get(secret).cloned())
    }
    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError> {
        self.check()?;
        Ok(self.state().policies.get(id).cloned())
    }
    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError> {
        self.check()?;
        Ok(self.state().policies.values().find(|p| p.name == name).cloned())
    }
    fn role_by_id(&self, id: &str) -> Result<Option<Role>, SourceError> {
        self.state().role_calls += 1;
        self.check()?;
        Ok(self.state().roles.get(id).cloned())
    }
    fn role_by_name(&self, name: &str) -> Result<Option<Role>, SourceError> {
        self.state().role_calls += 1;
        self.check()?;
        Ok(self.state().roles.values().find(|r| r.name == name).cloned())
    }
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn resolver(down_policy: DownPolicy) -> Resolver {
    let mut config = ResolverConfig::new("dc1");
    config.default_policy = DefaultPolicy::Deny;
    config.down_policy = down_policy;
    Resolver::new(config)
}

fn token(secret: &str) -> Token {
    Token::new(format!("accessor-{secret}"), secret)
}

#[test]
fn role_ttl_defaults_to_consul() {
    assert_eq!(ResolverConfig::new("dc1").role_ttl, Duration::from_secs(30));
}

#[test]
fn service_identity_alone_writes_its_service_and_reads_others() {
    let source = Source::default();
    let mut tok = token("s1");
    tok.service_identities.push(ServiceIdentity::new("web"));
    source.token(tok);
    let authz = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.service_write("web"), Decision::Allow);
    assert_eq!(authz.service_write("web-sidecar-proxy"), Decision::Allow);
    assert_eq!(authz.service_read("db"), Decision::Allow);
    assert_eq!(authz.service_write("db"), Decision::Deny);
    assert_eq!(authz.node_read("n1"), Decision::Allow);
    assert_eq!(authz.node_write("n1"), Decision::Deny);
    assert_eq!(authz.key_read("k"), Decision::Deny);
}

#[test]
fn identities_honour_datacenter_scoping() {
    let source = Source::default();
    let mut tok = token("s1");
    tok.node_identities.push(NodeIdentity::new("node-1", "dc2"));
    tok.service_identities.push(ServiceIdentity {
        service_name: "web".into(),
        datacenters: vec!["dc3".into()],
    });
    let mut dns = TemplatedPolicy::unnamed(TEMPLATE_DNS);
    dns.datacenters = vec!["dc2".into()];
    tok.templated_policies.push(dns);
    source.token(tok);

    // In dc1 none of them is in force: default deny everywhere.
    let authz = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.node_write("node-1"), Decision::Deny);
    assert_eq!(authz.service_read("x"), Decision::Deny);
    assert_eq!(authz.service_write("web"), Decision::Deny);
    assert_eq!(authz.query_read("q"), Decision::Deny);

    // In dc2 the node identity and the DNS template apply, the dc3 service identity does not.
    let mut config = ResolverConfig::new("dc2");
    config.default_policy = DefaultPolicy::Deny;
    let authz = Resolver::new(config)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.node_write("node-1"), Decision::Allow);
    assert_eq!(authz.service_read("x"), Decision::Allow);
    assert_eq!(authz.query_read("q"), Decision::Allow);
    assert_eq!(authz.service_write("web"), Decision::Deny);
}

#[test]
fn templated_policy_grants_its_rules() {
    let source = Source::default();
    let mut tok = token("s1");
    tok.templated_policies
        .push(TemplatedPolicy::named(TEMPLATE_NODE, "node-7"));
    // Unknown or invalid templates grant nothing rather than failing the token.
    tok.templated_policies
        .push(TemplatedPolicy::named("builtin/nope", "x"));
    tok.templated_policies
        .push(TemplatedPolicy::unnamed(TEMPLATE_NODE));
    source.token(tok);
    let authz = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.node_write("node-7"), Decision::Allow);
    assert_eq!(authz.node_write("node-8"), Decision::Deny);
    assert_eq!(authz.service_read("any"), Decision::Allow);
}

#[test]
fn invalid_identity_names_are_never_rendered() {
    let source = Source::default();
    let mut tok = token("s1");
    // A damaged store: this name would inject `acl = "write"` if pasted into the rules.
    tok.service_identities.push(ServiceIdentity::new(
        "x\" {\n policy = \"write\"\n}\nacl = \"write",
    ));
    source.token(tok);
    let authz = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.acl_read(), Decision::Deny);
    assert_eq!(authz.service_read("x"), Decision::Deny);
}

#[test]
fn role_policies_and_identities_apply() {
    let source = Source::default();
    source.policy("p-kv", r#"key_prefix "app/" { policy = "write" }"#);
    let mut role = Role::new("r-1", "ops");
    role.policies.push(PolicyLink::by_id("p-kv"));
    role.node_identities.push(NodeIdentity::new("node-1", "dc1"));
    source.role(role);
    let mut by_id = token("s1");
    by_id.roles.push(RoleLink::by_id("r-1"));
    source.token(by_id);
    let mut by_name = token("s2");
    by_name.roles.push(RoleLink::by_name("ops"));
    // A missing role is skipped like a missing policy.
    by_name.roles.push(RoleLink::by_id("r-gone"));
    by_name.roles.push(RoleLink::by_name("gone"));
    source.token(by_name);

    let resolver = resolver(DownPolicy::ExtendCache);
    for secret in ["s1", "s2"] {
        let resolved = resolver.resolve(&source, secret, t(0)).unwrap();
        assert_eq!(resolved.freshness, Freshness::Fresh);
        let authz = resolved.authorizer;
        assert_eq!(authz.key_write("app/x"), Decision::Allow, "{secret}");
        assert_eq!(authz.key_write("other"), Decision::Deny, "{secret}");
        assert_eq!(authz.node_write("node-1"), Decision::Allow, "{secret}");
        assert_eq!(authz.service_read("svc"), Decision::Allow, "{secret}");
    }
}

#[test]
fn role_linking_global_management_is_management() {
    let source = Source::default();
    let mut role = Role::new("r-admin", "admins");
    role.policies
        .push(PolicyLink::by_id(tribune_acl::GLOBAL_MANAGEMENT_POLICY_ID));
    source.role(role);
    let mut tok = token("s1");
    tok.roles.push(RoleLink::by_id("r-admin"));
    source.token(tok);
    let authz = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap()
        .authorizer;
    assert_eq!(authz.acl_write(), Decision::Allow);
}

#[test]
fn role_changed_after_ttl_is_re_read() {
    let source = Source::default();
    source.policy("p-a", r#"key_prefix "a/" { policy = "write" }"#);
    source.policy("p-b", r#"key_prefix "b/" { policy = "write" }"#);
    let mut role = Role::new("r-1", "ops");
    role.policies.push(PolicyLink::by_id("p-a"));
    source.role(role.clone());
    let mut tok = token("s1");
    tok.roles.push(RoleLink::by_id("r-1"));
    source.token(tok);

    let resolver = resolver(DownPolicy::ExtendCache);
    let first = resolver.resolve(&source, "s1", t(0)).unwrap().authorizer;
    assert_eq!(first.key_write("a/x"), Decision::Allow);

    role.policies = vec![PolicyLink::by_id("p-b")];
    source.role(role);
    let calls = source.state().role_calls;
    // Within the TTL the cached role is used, without asking.
    let cached = resolver.resolve(&source, "s1", t(30)).unwrap().authorizer;
    assert_eq!(cached.key_write("a/x"), Decision::Allow);
    assert_eq!(source.state().role_calls, calls);
    // After it the role is read again and the new policy applies.
    let reread = resolver.resolve(&source, "s1", t(31)).unwrap().authorizer;
    assert_eq!(source.state().role_calls, calls + 1);
    assert_eq!(reread.key_write("a/x"), Decision::Deny);
    assert_eq!(reread.key_write("b/x"), Decision::Allow);
}

fn one_role_source() -> Source {
    let source = Source::default();
    source.policy("p-a", r#"key_prefix "a/" { policy = "write" }"#);
    let mut role = Role::new("r-1", "ops");
    role.policies.push(PolicyLink::by_id("p-a"));
    source.role(role);
    let mut tok = token("s1");
    tok.roles.push(RoleLink::by_id("r-1"));
    source.token(tok);
    source
}

#[test]
fn extend_cache_keeps_a_cached_role_when_the_source_is_down() {
    let source = one_role_source();
    let resolver = resolver(DownPolicy::ExtendCache);
    resolver.resolve(&source, "s1", t(0)).unwrap();
    source.state().down = true;
    let resolved = resolver.resolve(&source, "s1", t(3600)).unwrap();
    assert_eq!(resolved.freshness, Freshness::Extended);
    assert_eq!(resolved.authorizer.key_write("a/x"), Decision::Allow);
    assert_eq!(resolved.authorizer.key_write("b/x"), Decision::Deny);
}

#[test]
fn expired_role_with_source_down_under_deny_is_down_policy() {
    let source = one_role_source();
    // Token and policy stay fresh for an hour; only the role expires, so only its fetch fails.
    let mut config = ResolverConfig::new("dc1");
    config.default_policy = DefaultPolicy::Allow;
    config.down_policy = DownPolicy::Deny;
    config.token_ttl = Duration::from_secs(3600);
    config.policy_ttl = Duration::from_secs(3600);
    let resolver = Resolver::new(config);
    resolver.resolve(&source, "s1", t(0)).unwrap();
    source.state().down = true;
    let within_ttl = resolver.resolve(&source, "s1", t(30)).unwrap();
    assert_eq!(within_ttl.freshness, Freshness::Fresh);
    assert_eq!(within_ttl.authorizer.key_write("a/x"), Decision::Allow);
    let calls = source.state().role_calls;
    let resolved = resolver.resolve(&source, "s1", t(31)).unwrap();
    assert_eq!(
        source.state().role_calls,
        calls + 1,
        "the role alone was asked for"
    );
    assert_eq!(resolved.freshness, Freshness::DownPolicy);
    assert_eq!(resolved.authorizer.key_write("a/x"), Decision::Deny);
    assert!(resolved.token.is_some());
}

#[test]
fn async_cache_serves_an_expired_role_and_refresh_rereads_it() {
    let source = one_role_source();
    let resolver = resolver(DownPolicy::AsyncCache);
    resolver.resolve(&source, "s1", t(0)).unwrap();
    let calls = source.state().role_calls;
    let resolved = resolver.resolve(&source, "s1", t(100)).unwrap();
    assert_eq!(resolved.freshness, Freshness::RefreshDue);
    assert_eq!(source.state().role_calls, calls);
    let refreshed = resolver.refresh(&source, "s1", t(100)).unwrap();
    assert_eq!(refreshed.freshness, Freshness::Fresh);
    assert_eq!(source.state().role_calls, calls + 1);
}

#[test]
fn different_identities_never_share_an_authorizer() {
    let source = Source::default();
    for (secret, service) in [("s1", "web"), ("s2", "db")] {
        let mut tok = token(secret);
        tok.service_identities.push(ServiceIdentity::new(service));
        source.token(tok);
    }
    let mut same = token("s3");
    same.service_identities.push(ServiceIdentity::new("web"));
    source.token(same);
    let resolver = resolver(DownPolicy::ExtendCache);
    let web = resolver.resolve(&source, "s1", t(0)).unwrap().authorizer;
    let db = resolver.resolve(&source, "s2", t(0)).unwrap().authorizer;
    let web_again = resolver.resolve(&source, "s3", t(0)).unwrap().authorizer;
    assert!(!Arc::ptr_eq(&web, &db));
    assert!(Arc::ptr_eq(&web, &web_again), "same rules, same authorizer");
    assert_eq!(web.service_write("web"), Decision::Allow);
    assert_eq!(web.service_write("db"), Decision::Deny);
    assert_eq!(db.service_write("db"), Decision::Allow);
    assert_eq!(db.service_write("web"), Decision::Deny);

    // A node identity and a service identity of the same name are different grants too.
    let mut node = token("s4");
    node.node_identities.push(NodeIdentity::new("web", "dc1"));
    source.token(node);
    let node_authz = resolver.resolve(&source, "s4", t(0)).unwrap().authorizer;
    assert!(!Arc::ptr_eq(&web, &node_authz));
    assert_eq!(node_authz.service_write("web"), Decision::Deny);
}

#[test]
fn role_with_damaged_policy_is_reported() {
    let source = Source::default();
    source.policy("p-bad", "key_prefix {");
    let mut role = Role::new("r-1", "ops");
    role.policies.push(PolicyLink::by_id("p-bad"));
    source.role(role);
    let mut tok = token("s1");
    tok.roles.push(RoleLink::by_id("r-1"));
    source.token(tok);
    let err = resolver(DownPolicy::ExtendCache)
        .resolve(&source, "s1", t(0))
        .unwrap_err();
    assert!(matches!(err, ResolveError::InvalidPolicy { ref policy_id, .. } if policy_id == "p-bad"));
}
