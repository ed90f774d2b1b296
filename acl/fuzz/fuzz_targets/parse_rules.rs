//! Fuzzes the rule parser (HCL and JSON) and, when rules parse, the authorizer built from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tribune_acl::{Access, Authorizer, DefaultPolicy, MatchKind, PolicyRules, Resource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PolicyRules::parse_json(text);
    // An HCL error always says where it is.
    if let Err(e) = PolicyRules::parse_hcl(text) {
        assert!(e.line().is_some() && e.column().is_some(), "{e}");
    }
    if let Ok(rules) = PolicyRules::parse(text) {
        // Whatever parsed must index and answer without panicking, and a rule's own segment must be
        // decided by that rule: an exact rule always, a prefix rule when no exact rule shares its segment.
        let authz = Authorizer::from_merged(&rules, DefaultPolicy::Deny);
        for rule in rules.rules() {
            let name = rule.segment.unwrap_or("");
            let shadowed =
                rule.kind == MatchKind::Prefix && rules.rule(rule.resource, MatchKind::Exact, name).is_some();
            for access in [Access::Read, Access::List, Access::Write] {
                let decision = authz.allowed(rule.resource, name, access);
                if !shadowed {
                    assert_eq!(
                        decision.is_allowed(),
                        rule.access.grants(access),
                        "{rule:?} {access:?}"
                    );
                }
            }
            if rule.resource == Resource::Key {
                let _ = authz.key_write_prefix(name);
            }
        }
    }
});
