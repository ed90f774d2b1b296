//! Resolver behaviour: TTLs, every down_policy, expiry, datacenters, management, caching.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tribune_acl::{
    DefaultPolicy, DownPolicy, Freshness, GLOBAL_MANAGEMENT_POLICY_ID, Policy, PolicyLink, ResolveError,
    Resolver, ResolverConfig, Role, SourceError, Token, TokenSource,
};

#[derive(Default)]
struct State {
    tokens: HashMap<String, Token>,
    policies: HashMap<String, Policy>,
    down: bool,
    token_calls: usize,
    policy_calls: usize,
}

/// An in-memory source that can be switched off and counts its calls.
#[derive(Default)]
struct FakeSource(Mutex<State>);

impl FakeSource {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add_policy(&self, id: &str, name: &str, rules: &str) {
        let policy = Policy {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            rules: rules.into(),
            datacenters: vec![],
            create_index: 1,
            modify_index: 1,
        };
        self.state().policies.insert(id.into(), policy);
    }

    fn add_token(&self, secret: &str, links: Vec<PolicyLink>) {
        let mut token = Token::new(format!("accessor-{secret}"), secret);
        token.policies = links;
        self.state().tokens.insert(secret.into(), token);
    }

    fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    fn calls(&self) -> (usize, usize) {
        let s = self.state();
        (s.token_calls, s.policy_calls)
    }
}

fn unreachable() -> SourceError {
    SourceError::Unreachable {
        reason: "primary datacenter unreachable".into(),
    }
}

impl TokenSource for FakeSource {
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError> {
        let mut s = self.state();
        s.token_calls += 1;
        if s.down {
            return Err(unreachable());
        }
        Ok(s.tokens.get(secret).cloned())
    }

    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError> {
        let mut s = self.state();
        s.policy_calls += 1;
        if s.down {
            return Err(unreachable());
        }
        Ok(s.policies.get(id).cloned())
    }

    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError> {
        let mut s = self.state();
        s.policy_calls += 1;
        if s.down {
            return Err(unreachable());
        }
        Ok(s.policies.values().find(|p| p.name == name).cloned())
    }

    // Roles are covered by tests/roles.rs; this source stores none.
    fn role_by_id(&self, _id: &str) -> Result<Option<Role>, SourceError> {
        if self.state().down {
            return Err(unreachable());
        }
        Ok(None)
    }

    fn role_by_name(&self, _name: &str) -> Result<Option<Role>, SourceError> {
        if self.state().down {
            return Err(unreachable());
        }
        Ok(None)
    }
}

const WEB_RULES: &str = "key_prefix \"web/\" { policy = \"write\" }";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn resolver(default_policy: DefaultPolicy, down_policy: DownPolicy) -> Resolver {
    let mut config = ResolverConfig::new("dc1");
    config.default_policy = default_policy;
    config.down_policy = down_policy;
    Resolver::new(config)
}

/// A source with one token `s1` linked to policy `p1` (write on `web/`).
fn web_source() -> FakeSource {
    let source = FakeSource::default();
    source.add_policy("p1", "web", WEB_RULES);
    source.add_token("s1", vec![PolicyLink::by_id("p1")]);
    source
}

#[test]
fn defaults_match_consul() {
    let c = ResolverConfig::new("dc1");
    assert_eq!(c.token_ttl, Duration::from_secs(30));
    assert_eq!(c.policy_ttl, Duration::from_secs(30));
    assert_eq!(c.default_policy, DefaultPolicy::Allow);
    assert_eq!(c.down_policy, DownPolicy::ExtendCache);
}

#[test]
fn resolves_and_caches_within_ttl_then_refetches() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    let first = r.resolve(&source, "s1", t(0)).unwrap();
    assert_eq!(first.freshness, Freshness::Fresh);
    assert!(first.authorizer.key_write("web/a").is_allowed());
    assert!(!first.authorizer.key_write("db/a").is_allowed());
    assert_eq!(source.calls(), (1, 1));

    // Within both TTLs (age <= 30 s): no source calls.
    let again = r.resolve(&source, "s1", t(30)).unwrap();
    assert_eq!(again.freshness, Freshness::Fresh);
    assert_eq!(source.calls(), (1, 1));
    assert!(Arc::ptr_eq(&first.authorizer, &again.authorizer));

    // Past the TTL: both are fetched again.
    r.resolve(&source, "s1", t(31)).unwrap();
    assert_eq!(source.calls(), (2, 2));
    // Consul's acl.token.cache_hit / cache_miss: the two fetches missed, the one in between hit.
    assert_eq!(
        r.token_cache_counts(),
        tribune_acl::TokenCacheCounts { hits: 1, misses: 2 }
    );
}

#[test]
fn policy_changes_show_after_policy_ttl() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    assert!(
        r.resolve(&source, "s1", t(0))
            .unwrap()
            .authorizer
            .key_write("web/a")
            .is_allowed()
    );
    source.add_policy("p1", "web", "key_prefix \"web/\" { policy = \"read\" }");
    // Still cached.
    assert!(
        r.resolve(&source, "s1", t(10))
            .unwrap()
            .authorizer
            .key_write("web/a")
            .is_allowed()
    );
    // Policy TTL expired: the new rules apply.
    let later = r.resolve(&source, "s1", t(40)).unwrap();
    assert!(!later.authorizer.key_write("web/a").is_allowed());
    assert!(later.authorizer.key_read("web/a").is_allowed());
}

#[test]
fn custom_ttls_are_honoured() {
    let source = web_source();
    let mut config = ResolverConfig::new("dc1");
    config.token_ttl = Duration::from_secs(5);
    config.policy_ttl = Duration::from_secs(120);
    let r = Resolver::new(config);
    r.resolve(&source, "s1", t(0)).unwrap();
    r.resolve(&source, "s1", t(6)).unwrap();
    assert_eq!(
        source.calls(),
        (2, 1),
        "token refetched after 5 s, policy still cached"
    );
}

#[test]
fn unknown_and_deleted_tokens_are_acl_not_found() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Allow, DownPolicy::ExtendCache);
    assert_eq!(
        r.resolve(&source, "nope", t(0)).unwrap_err(),
        ResolveError::AclNotFound
    );
    assert_eq!(ResolveError::AclNotFound.to_string(), "ACL not found");

    r.resolve(&source, "s1", t(0)).unwrap();
    source.state().tokens.remove("s1");
    // Cached within TTL: still resolves (Consul's caches are not invalidated).
    assert!(r.resolve(&source, "s1", t(10)).is_ok());
    // After the TTL the deletion is seen, and it is not reversed by a later outage.
    assert_eq!(
        r.resolve(&source, "s1", t(31)).unwrap_err(),
        ResolveError::AclNotFound
    );
    source.set_down(true);
    assert_eq!(
        r.resolve(&source, "s1", t(32)).unwrap().freshness,
        Freshness::DownPolicy
    );
}

#[test]
fn expired_tokens_are_rejected_even_from_cache() {
    let source = web_source();
    source.state().tokens.get_mut("s1").unwrap().expiration_time = Some(t(20));
    let r = resolver(DefaultPolicy::Allow, DownPolicy::ExtendCache);
    assert!(r.resolve(&source, "s1", t(0)).is_ok());
    assert!(r.resolve(&source, "s1", t(20)).is_ok());
    assert_eq!(
        r.resolve(&source, "s1", t(21)).unwrap_err(),
        ResolveError::AclNotFound
    );

    let fresh = Resolver::new(ResolverConfig::new("dc1"));
    assert_eq!(
        fresh.resolve(&source, "s1", t(100)).unwrap_err(),
        ResolveError::AclNotFound
    );
}

#[test]
fn a_source_returning_the_wrong_secret_is_not_trusted() {
    let source = web_source();
    let wrong = source.state().tokens.get("s1").cloned().unwrap();
    source.state().tokens.insert("s2".into(), wrong);
    let r = resolver(DefaultPolicy::Allow, DownPolicy::ExtendCache);
    assert_eq!(
        r.resolve(&source, "s2", t(0)).unwrap_err(),
        ResolveError::AclNotFound
    );
}

#[test]
fn down_policy_allow() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::Allow);
    r.resolve(&source, "s1", t(0)).unwrap();
    source.set_down(true);
    // Cached and fresh: the cache is used as normal.
    assert_eq!(
        r.resolve(&source, "s1", t(10)).unwrap().freshness,
        Freshness::Fresh
    );
    // Expired and source down: allow everything (but never ACL management).
    for secret in ["s1", "never-seen"] {
        let res = r.resolve(&source, secret, t(60)).unwrap();
        assert_eq!(res.freshness, Freshness::DownPolicy);
        assert!(res.authorizer.key_write("db/x").is_allowed());
        assert!(res.authorizer.node_write("n").is_allowed());
        assert!(!res.authorizer.acl_write().is_allowed());
    }
}

#[test]
fn down_policy_deny() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Allow, DownPolicy::Deny);
    r.resolve(&source, "s1", t(0)).unwrap();
    source.set_down(true);
    for secret in ["s1", "never-seen"] {
        let res = r.resolve(&source, secret, t(60)).unwrap();
        assert_eq!(res.freshness, Freshness::DownPolicy);
        assert!(!res.authorizer.key_read("web/a").is_allowed());
        assert!(!res.authorizer.operator_read().is_allowed());
    }
}

#[test]
fn down_policy_extend_cache() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    r.resolve(&source, "s1", t(0)).unwrap();
    source.set_down(true);
    // Long past the TTL: the cached token and policy are still served.
    let res = r.resolve(&source, "s1", t(3_600)).unwrap();
    assert_eq!(res.freshness, Freshness::Extended);
    assert!(res.authorizer.key_write("web/a").is_allowed());
    assert!(!res.authorizer.key_write("db/a").is_allowed());
    // An uncached token falls back to the default policy (deny here).
    let uncached = r.resolve(&source, "never-seen", t(3_600)).unwrap();
    assert_eq!(uncached.freshness, Freshness::DownPolicy);
    assert!(!uncached.authorizer.key_read("web/a").is_allowed());
    // With default allow, the uncached fallback allows.
    let allow = resolver(DefaultPolicy::Allow, DownPolicy::ExtendCache);
    assert!(
        allow
            .resolve(&source, "never-seen", t(0))
            .unwrap()
            .authorizer
            .key_read("x")
            .is_allowed()
    );
    // The source comes back: fresh answers again.
    source.set_down(false);
    assert_eq!(
        r.resolve(&source, "s1", t(3_601)).unwrap().freshness,
        Freshness::Fresh
    );
}

#[test]
fn down_policy_extend_cache_with_only_the_token_cached() {
    let source = web_source();
    let mut config = ResolverConfig::new("dc1");
    config.default_policy = DefaultPolicy::Deny;
    config.token_ttl = Duration::from_secs(600);
    let r = Resolver::new(config);
    r.resolve(&source, "s1", t(0)).unwrap();
    // A second policy appears on the token; it was never cached and the source is now down.
    source.add_policy("p2", "extra", "node_prefix \"\" { policy = \"write\" }");
    source
        .state()
        .tokens
        .get_mut("s1")
        .unwrap()
        .policies
        .push(PolicyLink::by_id("p2"));
    r.purge();
    r.resolve(&source, "s1", t(1)).unwrap();
    source.set_down(true);
    let res = r.resolve(&source, "s1", t(100)).unwrap();
    // Token fresh (TTL 600 s), policies extended past their 30 s TTL.
    assert_eq!(res.freshness, Freshness::Extended);
    assert!(res.authorizer.node_write("n").is_allowed());
}

#[test]
fn down_policy_async_cache_serves_stale_then_refreshes() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::AsyncCache);
    r.resolve(&source, "s1", t(0)).unwrap();
    assert_eq!(source.calls(), (1, 1));
    source.add_policy("p1", "web", "key_prefix \"web/\" { policy = \"read\" }");

    // Expired: served at once, from the cache, without asking the source.
    let stale = r.resolve(&source, "s1", t(45)).unwrap();
    assert_eq!(stale.freshness, Freshness::RefreshDue);
    assert_eq!(source.calls(), (1, 1));
    assert!(stale.authorizer.key_write("web/a").is_allowed());

    // The caller's background refresh picks up the change.
    let refreshed = r.refresh(&source, "s1", t(46)).unwrap();
    assert_eq!(refreshed.freshness, Freshness::Fresh);
    assert_eq!(source.calls(), (2, 2));
    assert!(!refreshed.authorizer.key_write("web/a").is_allowed());
    let after = r.resolve(&source, "s1", t(47)).unwrap();
    assert_eq!(after.freshness, Freshness::Fresh);
    assert!(!after.authorizer.key_write("web/a").is_allowed());
}

#[test]
fn down_policy_async_cache_refresh_failure_keeps_stale_entries() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::AsyncCache);
    r.resolve(&source, "s1", t(0)).unwrap();
    source.set_down(true);
    assert_eq!(
        r.resolve(&source, "s1", t(100)).unwrap().freshness,
        Freshness::RefreshDue
    );
    let refreshed = r.refresh(&source, "s1", t(101)).unwrap();
    assert_eq!(refreshed.freshness, Freshness::Extended);
    assert!(refreshed.authorizer.key_write("web/a").is_allowed());
    // Uncached tokens get the default policy.
    assert_eq!(
        r.resolve(&source, "other", t(101)).unwrap().freshness,
        Freshness::DownPolicy
    );
}

#[test]
fn policies_scoped_to_other_datacenters_do_not_apply() {
    let source = web_source();
    source.state().policies.get_mut("p1").unwrap().datacenters = vec!["dc2".into()];
    let dc1 = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    assert!(
        !dc1.resolve(&source, "s1", t(0))
            .unwrap()
            .authorizer
            .key_write("web/a")
            .is_allowed()
    );
    let mut config = ResolverConfig::new("dc2");
    config.default_policy = DefaultPolicy::Deny;
    let dc2 = Resolver::new(config);
    assert!(
        dc2.resolve(&source, "s1", t(0))
            .unwrap()
            .authorizer
            .key_write("web/a")
            .is_allowed()
    );
}

#[test]
fn management_tokens_allow_everything() {
    let source = FakeSource::default();
    source.add_token("root", vec![PolicyLink::by_id(GLOBAL_MANAGEMENT_POLICY_ID)]);
    let r = resolver(DefaultPolicy::Deny, DownPolicy::Deny);
    let res = r.resolve(&source, "root", t(0)).unwrap();
    assert!(res.authorizer.is_management());
    assert!(res.authorizer.acl_write().is_allowed());
    assert!(res.authorizer.key_write_prefix("").is_allowed());
    assert!(res.token.unwrap().is_management());
}

#[test]
fn links_by_name_and_missing_policies() {
    let source = FakeSource::default();
    source.add_policy("p1", "web", WEB_RULES);
    source.add_token(
        "s1",
        vec![
            PolicyLink::by_name("web"),
            PolicyLink::by_id("deleted"),
            PolicyLink::by_name("gone"),
        ],
    );
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    let res = r.resolve(&source, "s1", t(0)).unwrap();
    assert!(res.authorizer.key_write("web/a").is_allowed());
    assert_eq!(res.authorizer.rule_count(), 1);
    // The name is remembered: within the TTL no policy lookups happen.
    let calls = source.calls().1;
    r.resolve(&source, "s1", t(5)).unwrap();
    assert_eq!(
        source.calls().1,
        calls + 1,
        "only the unresolvable name is asked again"
    );
}

#[test]
fn invalid_stored_rules_are_a_typed_error() {
    let source = FakeSource::default();
    source.add_policy("bad", "bad", "keys \"x\" { policy = \"read\" }");
    source.add_token("s1", vec![PolicyLink::by_id("bad")]);
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    match r.resolve(&source, "s1", t(0)) {
        Err(ResolveError::InvalidPolicy { policy_id, .. }) => assert_eq!(policy_id, "bad"),
        other => panic!("expected InvalidPolicy, got {other:?}"),
    }
}

#[test]
fn tokens_with_the_same_policies_share_one_authorizer() {
    let source = web_source();
    source.add_token("s2", vec![PolicyLink::by_id("p1")]);
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    let a = r.resolve(&source, "s1", t(0)).unwrap();
    let b = r.resolve(&source, "s2", t(0)).unwrap();
    assert!(Arc::ptr_eq(&a.authorizer, &b.authorizer));
}

#[test]
fn invalidate_token_forces_a_fetch() {
    let source = web_source();
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    r.resolve(&source, "s1", t(0)).unwrap();
    r.invalidate_token("s1");
    r.resolve(&source, "s1", t(1)).unwrap();
    assert_eq!(source.calls().0, 2);
}

#[test]
fn anonymous_token_resolves_like_any_other() {
    let source = FakeSource::default();
    source
        .state()
        .tokens
        .insert("anonymous".into(), Token::anonymous());
    let r = resolver(DefaultPolicy::Deny, DownPolicy::ExtendCache);
    let res = r
        .resolve(&source, tribune_acl::ANONYMOUS_TOKEN_SECRET, t(0))
        .unwrap();
    assert!(res.token.unwrap().is_anonymous());
    assert!(!res.authorizer.key_read("x").is_allowed());
}
