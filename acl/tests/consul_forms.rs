//! Rules written the ways Consul's HCL 1 parser accepts them, their JSON equivalents, and errors that
//! name the line.

use proptest::prelude::*;
use tribune_acl::{AccessLevel, MatchKind, PolicyRules, Resource, RuleError, RuleSyntax};

fn parse(text: &str) -> PolicyRules {
    match PolicyRules::parse(text) {
        Ok(rules) => rules,
        Err(e) => panic!("{text:?} was refused: {e}"),
    }
}

fn rule(rules: &PolicyRules, resource: Resource, kind: MatchKind, segment: &str) -> Option<AccessLevel> {
    rules.rule(resource, kind, segment)
}

#[test]
fn one_line_blocks_with_several_attributes() {
    // The form of Consul's own global-management policy, refused by an HCL 2 parser.
    let rules = parse(r#"service_prefix "" { policy = "read" intentions = "read" }"#);
    assert_eq!(
        rule(&rules, Resource::Service, MatchKind::Prefix, ""),
        Some(AccessLevel::Read)
    );
    // Commas between attributes and after the last one are optional.
    for text in [
        r#"service "web" { policy = "write", intentions = "read" }"#,
        r#"service "web" { policy = "write", intentions = "read", }"#,
        r#"service "web" { intentions = "read" policy = "write" }"#,
        "service \"web\" {\n  policy = \"write\"\n  intentions = \"read\"\n}",
    ] {
        assert_eq!(
            rule(&parse(text), Resource::Service, MatchKind::Exact, "web"),
            Some(AccessLevel::Write),
            "{text}"
        );
    }
    // Several items on one line at the top level too.
    let rules = parse(r#"acl = "read" operator = "write", keyring = "deny" key "k" { policy = "list" }"#);
    assert_eq!(rules.len(), 4);
    assert_eq!(
        rule(&rules, Resource::Operator, MatchKind::Exact, ""),
        Some(AccessLevel::Write)
    );
}

#[test]
fn object_and_quoted_forms_match_the_block_form() {
    let block =
        parse("key \"a\" { policy = \"read\" }\nkey_prefix \"b/\" { policy = \"write\" }\nacl = \"read\"");
    for text in [
        // Assignment of an object, labels as keys.
        r#"key = { "a" = { policy = "read" } } key_prefix = { "b/" = { policy = "write" } } acl = "read""#,
        // Block without labels, segments as nested blocks.
        r#"key { "a" { policy = "read" } } key_prefix { "b/" { policy = "write" } } acl = "read""#,
        // Bare-word segment, quoted names everywhere.
        r#""key" a { "policy" = "read" } "key_prefix" "b/" { "policy" = "write" } "acl" = "read""#,
        // A list of objects, as HCL's JSON form allows.
        r#"key = [{ a = { policy = "read" } }] key_prefix "b/" { policy = "write" } acl = "read""#,
        // HCL 1 matches names case-insensitively and Consul reads dispositions case-insensitively.
        r#"KEY "a" { Policy = "READ" } Key_Prefix "b/" { POLICY = "Write" } ACL = "Read""#,
        // Comments of every kind, and a heredoc-free multi-line layout.
        "# top\nkey \"a\" { // why\n  policy = \"read\" /* inline */\n}\nkey_prefix \"b/\" {\n  policy = \"write\"\n}\nacl = \"read\"\n",
    ] {
        assert_eq!(parse(text), block, "{text}");
    }
}

#[test]
fn mesh_and_peering_are_accepted_and_merged() {
    let consul_global_management = r#"
acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" { policy = "write" intentions = "write" }
session_prefix "" { policy = "write" }
"#;
    let rules = parse(consul_global_management);
    assert_eq!(rules.mesh(), Some(AccessLevel::Write));
    assert_eq!(rules.peering(), Some(AccessLevel::Write));
    let deny = parse(r#"{"mesh": "deny", "peering": "read"}"#);
    let merged = PolicyRules::merged([&rules, &deny]);
    assert_eq!(merged.mesh(), Some(AccessLevel::Deny));
    assert_eq!(merged.peering(), Some(AccessLevel::Write));
    assert!(matches!(
        PolicyRules::parse("mesh = \"list\"").map_err(|e| e.kind().clone()),
        Err(RuleError::ListNotAllowed { .. })
    ));
}

#[test]
fn json_equivalents_agree_with_hcl() {
    let pairs = [
        (
            r#"service_prefix "" { policy = "read" intentions = "read" }"#,
            r#"{"service_prefix": {"": {"policy": "read", "intentions": "read"}}}"#,
        ),
        (
            r#"key "a" { policy = "list" } key "a" { policy = "deny" } node_prefix "n" { policy = "write" }"#,
            r#"{"key": [{"a": {"policy": "list"}}, {"a": {"policy": "deny"}}], "node_prefix": {"n": {"policy": "write"}}}"#,
        ),
        (
            r#"operator = "read" keyring = "write" mesh = "read" peering = "deny""#,
            r#"{"operator": "read", "keyring": "write", "mesh": "read", "peering": "deny"}"#,
        ),
        (
            r#"Session "s" { Policy = "Deny" }"#,
            r#"{"SESSION": {"s": {"POLICY": "deny"}}}"#,
        ),
    ];
    for (hcl, json) in pairs {
        assert_eq!(parse(hcl), parse(json), "{hcl} vs {json}");
    }
}

#[test]
fn forms_hcl1_refuses_are_refused() {
    for text in [
        // Labels followed by `=`: HCL 1's "nested object expected".
        r#"key "a" = { policy = "read" }"#,
        r#"key "a" = "read""#,
        // A bare word as a value.
        r#"key "a" { policy = read }"#,
        // The same attribute twice in one object.
        r#"key "a" { policy = "read" policy = "write" }"#,
        "acl = \"read\"\nacl = \"write\"",
    ] {
        let e = PolicyRules::parse(text).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                RuleError::Syntax {
                    syntax: RuleSyntax::Hcl,
                    ..
                }
            ),
            "{text}: {e}"
        );
    }
}

#[test]
fn errors_name_the_line() {
    // (text, line, column, words the message must contain)
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "key_prefix \"\" {\n  policy = \"read\"\n}\nkey \"x\" {\n  policy \"write\"\n}",
            5,
            10,
            "expected `=` after `policy`",
        ),
        (
            "acl = \"write\"\n\nnode \"n\" {\n  policy = \"admin\"\n}",
            4,
            12,
            "invalid node \"n\" policy \"admin\"",
        ),
        (
            "acl = \"write\"\nkeys \"x\" { policy = \"read\" }",
            2,
            1,
            "unknown ACL resource \"keys\"",
        ),
        (
            "service \"web\" {\n  policy = \"read\"\n  intention = \"read\"\n}",
            3,
            3,
            "unknown attribute \"intention\"",
        ),
        ("key \"a\" {\n  policy = \"read\"\n", 3, 1, "missing `}`"),
        (
            "\n\n\nacl = \"read\"\noperator = \"write\"\nacl = \"deny\"",
            6,
            1,
            "already set on line 4",
        ),
        ("node \"n\" { policy = \"list\" }", 1, 21, "only valid for key"),
        ("key \"a\" {}\n", 1, 5, "has no policy"),
        ("acl {\n policy = \"write\"\n}", 1, 5, "acl is malformed"),
        ("key \"a\" = \"read\"", 1, 9, "expected `{` after `key \"a\"`"),
        ("key \"a\" { policy = \"read }", 1, 20, "not terminated"),
        (
            "{\n  \"key\": {\"a\": {\"policy\": \"read\"}},\n  \"acl\": \n}",
            4,
            1,
            "expected value",
        ),
    ];
    for (text, line, column, needle) in cases {
        let e = PolicyRules::parse(text).unwrap_err();
        assert_eq!(
            (e.line(), e.column()),
            (Some(*line), Some(*column)),
            "{text:?}: {e}"
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("line {line}, column {column}: ")),
            "{shown}"
        );
        assert!(shown.contains(needle), "{text:?}: {shown}");
    }
}

/// A rule set rendered in HCL with a random layout, and in JSON.
fn rendered() -> impl Strategy<Value = (String, String)> {
    let block = (
        prop::sample::select(vec![
            "key",
            "key_prefix",
            "service",
            "service_prefix",
            "node_prefix",
        ]),
        "[a-z/]{0,6}",
        prop::sample::select(vec!["read", "write", "deny"]),
        any::<bool>(),
        0..4usize,
    );
    prop::collection::vec(block, 0..6).prop_map(|blocks| {
        let mut hcl = String::new();
        let mut json = Vec::new();
        for (i, (name, segment, level, intentions, layout)) in blocks.iter().enumerate() {
            let intentions = *intentions && name.starts_with("service");
            let extra = if intentions { r#" intentions = "read""# } else { "" };
            let body = match layout {
                0 => format!("{{ policy = {level:?}{extra} }}"),
                1 => format!("{{\n  policy = {level:?},{extra}\n}}"),
                2 => format!("{{ /* c */ policy = {level:?}{} }}", extra.replace(' ', "\n")),
                _ => format!("{{ \"policy\" = {level:?}{extra}, }}"),
            };
            if i % 2 == 0 {
                hcl.push_str(&format!("{name} {segment:?} {body}\n"));
            } else {
                hcl.push_str(&format!("{name} = {{ {segment:?} = {body} }} # {i}\n"));
            }
            let json_extra = if intentions {
                r#", "intentions": "read""#
            } else {
                ""
            };
            json.push(format!(
                "{{{name:?}: {{{segment:?}: {{\"policy\": {level:?}{json_extra}}}}}}}"
            ));
        }
        (
            hcl,
            format!("{{\"key\": [], \"node\": [], \"all\": [{}]}}", json.join(",")),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_hcl1_layout_agrees_with_json((hcl, json) in rendered()) {
        let from_hcl = PolicyRules::parse(&hcl);
        prop_assert!(from_hcl.is_ok(), "{hcl}: {from_hcl:?}");
        // JSON has no repeated keys, so merge one JSON document per block.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let mut merged = PolicyRules::default();
        for block in value["all"].as_array().unwrap() {
            merged.merge_from(&PolicyRules::parse_json(&block.to_string()).unwrap());
        }
        prop_assert_eq!(from_hcl.unwrap(), merged);
    }

    #[test]
    fn errors_always_carry_a_line_within_the_text(text in "[a-z_\"{}=\\[\\],#\n /*0-9<-]{0,80}") {
        if let Err(e) = PolicyRules::parse_hcl(&text) {
            let lines = text.split('\n').count();
            prop_assert!(e.line().is_some_and(|l| l >= 1 && l <= lines), "{text:?}: {e}");
        }
    }
}
