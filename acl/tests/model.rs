//! The radix-tree authorizer agrees with a direct, O(rules) reading of Consul's algorithm on random rule
//! sets and names.

use proptest::prelude::*;
use tribune_acl::{Access, AccessLevel, Authorizer, Decision, DefaultPolicy, PolicyRules, Resource};

#[derive(Debug, Clone)]
struct RawRule {
    prefix: bool,
    segment: String,
    level: AccessLevel,
}

fn level() -> impl Strategy<Value = AccessLevel> {
    prop::sample::select(vec![
        AccessLevel::Read,
        AccessLevel::List,
        AccessLevel::Write,
        AccessLevel::Deny,
    ])
}

/// A small alphabet makes shared prefixes, edge splits and exact/prefix collisions common.
fn segment() -> impl Strategy<Value = String> {
    "[ab/]{0,5}"
}

fn raw_rule() -> impl Strategy<Value = RawRule> {
    (any::<bool>(), segment(), level()).prop_map(|(prefix, segment, level)| RawRule {
        prefix,
        segment,
        level,
    })
}

fn to_json(policy: &[RawRule]) -> String {
    let mut exact = serde_json::Map::new();
    let mut prefix = serde_json::Map::new();
    let mut bodies: Vec<(bool, String, serde_json::Value)> = Vec::new();
    for r in policy {
        bodies.push((
            r.prefix,
            r.segment.clone(),
            serde_json::json!({ "policy": r.level.as_str() }),
        ));
    }
    // Repeated segments inside one policy become arrays of bodies (HCL's JSON form), merged by precedence.
    for (is_prefix, segment, body) in bodies {
        let map = if is_prefix { &mut prefix } else { &mut exact };
        match map.get_mut(&segment) {
            Some(serde_json::Value::Array(items)) => items.push(body),
            Some(_) | None => {
                map.insert(segment, serde_json::Value::Array(vec![body]));
            }
        }
    }
    serde_json::json!({ "key": exact, "key_prefix": prefix }).to_string()
}

/// Consul's algorithm, read directly: merge, exact on the full name, else longest prefix, else default.
fn naive_rule(policies: &[Vec<RawRule>], name: &str) -> Option<AccessLevel> {
    let all = policies.iter().flatten();
    let exact = all
        .clone()
        .filter(|r| !r.prefix && r.segment == name)
        .map(|r| r.level)
        .max();
    if exact.is_some() {
        return exact;
    }
    let longest = all
        .clone()
        .filter(|r| r.prefix && name.starts_with(&r.segment))
        .map(|r| r.segment.len())
        .max()?;
    all.filter(|r| r.prefix && r.segment.len() == longest && name.starts_with(&r.segment))
        .map(|r| r.level)
        .max()
}

fn grants(level: AccessLevel, access: Access) -> bool {
    match level {
        AccessLevel::Write => true,
        AccessLevel::List => access != Access::Write,
        AccessLevel::Read => access == Access::Read,
        AccessLevel::Deny => false,
    }
}

fn naive_write_prefix(policies: &[Vec<RawRule>], prefix: &str, default: DefaultPolicy) -> Decision {
    let all: Vec<&RawRule> = policies.iter().flatten().collect();
    let merged = |is_prefix: bool, segment: &str| {
        all.iter()
            .filter(|r| r.prefix == is_prefix && r.segment == segment)
            .map(|r| r.level)
            .max()
    };
    let covering = all
        .iter()
        .filter(|r| r.prefix && prefix.starts_with(&r.segment))
        .max_by_key(|r| r.segment.len())
        .and_then(|r| merged(true, &r.segment));
    if covering.is_some_and(|l| l != AccessLevel::Write) {
        return Decision::Deny;
    }
    let below_not_write = all
        .iter()
        .filter(|r| r.segment.starts_with(prefix))
        .any(|r| merged(r.prefix, &r.segment) != Some(AccessLevel::Write));
    if below_not_write {
        return Decision::Deny;
    }
    match (covering, default) {
        (Some(_), _) | (None, DefaultPolicy::Allow) => Decision::Allow,
        (None, DefaultPolicy::Deny) => Decision::Deny,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn tree_agrees_with_direct_reading(
        policies in prop::collection::vec(prop::collection::vec(raw_rule(), 0..8), 1..4),
        names in prop::collection::vec(segment(), 1..8),
        default_allow in any::<bool>(),
    ) {
        let default = if default_allow { DefaultPolicy::Allow } else { DefaultPolicy::Deny };
        let parsed: Vec<PolicyRules> = policies.iter().map(|p| PolicyRules::parse(&to_json(p)).unwrap()).collect();
        let authz = Authorizer::new(&parsed, default);
        for name in &names {
            for access in [Access::Read, Access::List, Access::Write] {
                let expected = match naive_rule(&policies, name) {
                    Some(level) if grants(level, access) => Decision::Allow,
                    Some(_) => Decision::Deny,
                    None if default_allow => Decision::Allow,
                    None => Decision::Deny,
                };
                prop_assert_eq!(authz.allowed(Resource::Key, name, access), expected, "name {:?} {:?}", name, access);
            }
            prop_assert_eq!(authz.key_write_prefix(name), naive_write_prefix(&policies, name, default), "prefix {:?}", name);
        }
    }
}
