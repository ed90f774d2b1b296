//! Decision, parse and merge costs. Run with
//! `cargo bench -p tribune-acl --bench acl -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, UNIX_EPOCH};

use tribune_acl::{
    Authorizer, DefaultPolicy, MatchKind, Policy, PolicyLink, PolicyRules, Resolver, ResolverConfig, Role,
    SourceError, Token, TokenSource,
};

/// Deterministic segment generator (xorshift), so every run indexes the same rules.
struct Segments(u64);

impl Segments {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Paths such as `team-17/svc-4821/config/`, shaped like real KV layouts.
    fn next_segment(&mut self) -> String {
        let r = self.next_u64();
        format!(
            "team-{}/svc-{}/{}/",
            r % 64,
            (r >> 8) % 10_000,
            ["config", "secrets", "locks", "state"][(r >> 40) as usize % 4]
        )
    }
}

fn hcl_rules(count: usize, seed: u64) -> String {
    let mut segments = Segments(seed);
    let levels = ["read", "write", "list", "deny"];
    let mut text = String::new();
    for i in 0..count {
        let kind = if i % 3 == 0 { "key" } else { "key_prefix" };
        text.push_str(&format!(
            "{kind} \"{}\" {{ policy = \"{}\" }}\n",
            segments.next_segment(),
            levels[i % 4]
        ));
    }
    text
}

fn decision(c: &mut Criterion) {
    let rules = PolicyRules::parse(&hcl_rules(10_000, 0x9e37_79b9_7f4a_7c15)).unwrap();
    assert!(
        rules.len() > 9_900,
        "expected ~10k distinct rules, got {}",
        rules.len()
    );
    let authz = Authorizer::from_merged(&rules, DefaultPolicy::Deny);
    // A 64-byte key under one of the indexed prefixes, so the walk goes deep before falling back.
    let prefix = rules
        .rules()
        .nth(5_000)
        .and_then(|r| r.segment)
        .unwrap()
        .to_owned();
    let mut key = prefix.clone();
    while key.len() < 64 {
        key.push('x');
    }
    key.truncate(64);
    assert_eq!(key.len(), 64);
    c.bench_function("acl/decision_10k_rules_64b_key", |b| {
        b.iter(|| authz.key_read(black_box(&key)))
    });
    c.bench_function("acl/write_prefix_10k_rules", |b| {
        b.iter(|| authz.key_write_prefix(black_box(&prefix)))
    });
}

fn parse(c: &mut Criterion) {
    let text = hcl_rules(1_000, 7);
    eprintln!("1k-rule HCL policy: {} bytes", text.len());
    c.bench_function("acl/parse_1k_rules_hcl", |b| {
        b.iter(|| PolicyRules::parse(black_box(&text)).unwrap())
    });
    // The same rules in JSON, as the HTTP API may carry them.
    let parsed = PolicyRules::parse(&text).unwrap();
    let mut json = serde_json::Map::new();
    for rule in parsed.rules() {
        let block = match rule.kind {
            MatchKind::Exact => "key",
            MatchKind::Prefix => "key_prefix",
        };
        let entry = json.entry(block).or_insert_with(|| serde_json::json!({}));
        entry[rule.segment.unwrap()] = serde_json::json!({ "policy": rule.access.as_str() });
    }
    let json = serde_json::Value::Object(json).to_string();
    assert_eq!(PolicyRules::parse(&json).unwrap(), parsed);
    c.bench_function("acl/parse_1k_rules_json", |b| {
        b.iter(|| PolicyRules::parse(black_box(&json)).unwrap())
    });
}

fn merge(c: &mut Criterion) {
    let policies: Vec<PolicyRules> = (0..10)
        .map(|i| PolicyRules::parse(&hcl_rules(100, 1_000 + i)).unwrap())
        .collect();
    c.bench_function("acl/merge_10_policies_100_rules_each", |b| {
        b.iter(|| Authorizer::new(black_box(&policies), DefaultPolicy::Deny))
    });
}

/// One token linking ten 100-rule policies.
struct OneToken {
    token: Token,
    policies: Vec<Policy>,
}

impl TokenSource for OneToken {
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError> {
        Ok(self.token.secret_id.matches(secret).then(|| self.token.clone()))
    }
    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError> {
        Ok(self.policies.iter().find(|p| p.id == id).cloned())
    }
    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError> {
        Ok(self.policies.iter().find(|p| p.name == name).cloned())
    }
    fn role_by_id(&self, _id: &str) -> Result<Option<Role>, SourceError> {
        Ok(None)
    }
    fn role_by_name(&self, _name: &str) -> Result<Option<Role>, SourceError> {
        Ok(None)
    }
}

fn resolve(c: &mut Criterion) {
    let policies: Vec<Policy> = (0..10)
        .map(|i| Policy {
            id: format!("policy-{i}"),
            name: format!("name-{i}"),
            description: String::new(),
            rules: hcl_rules(100, 2_000 + i),
            datacenters: vec![],
            create_index: 1,
            modify_index: 1,
        })
        .collect();
    let mut token = Token::new("accessor", "0b6c3f9e-3f0e-4d8b-9a51-7d2c1e4f5a60");
    token.policies = policies.iter().map(|p| PolicyLink::by_id(&p.id)).collect();
    let source = OneToken { token, policies };
    let resolver = Resolver::new(ResolverConfig::new("dc1"));
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    resolver
        .resolve(&source, "0b6c3f9e-3f0e-4d8b-9a51-7d2c1e4f5a60", now)
        .unwrap();
    c.bench_function("acl/resolve_cache_hit_10_policies", |b| {
        b.iter(|| {
            resolver
                .resolve(&source, black_box("0b6c3f9e-3f0e-4d8b-9a51-7d2c1e4f5a60"), now)
                .unwrap()
        })
    });
}

criterion_group!(benches, decision, parse, merge, resolve);
criterion_main!(benches);
