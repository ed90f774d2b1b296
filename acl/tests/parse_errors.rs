//! Invalid rules give typed errors that name the resource and what is wrong.

use tribune_acl::{PolicyRules, RuleError, RuleSyntax};

/// The error with its place (`RuleError::At`) unwrapped.
fn err(text: &str) -> RuleError {
    located(text).kind().clone()
}

/// The error as returned, with its place.
fn located(text: &str) -> RuleError {
    match PolicyRules::parse(text) {
        Ok(rules) => panic!("expected an error for {text:?}, got {rules:?}"),
        Err(e) => e,
    }
}

#[test]
fn unknown_resources() {
    assert_eq!(
        err("keys \"x\" { policy = \"read\" }"),
        RuleError::UnknownResource {
            resource: "keys".into()
        }
    );
    assert_eq!(
        err("acl_prefix \"\" { policy = \"read\" }"),
        RuleError::UnknownResource {
            resource: "acl_prefix".into()
        }
    );
    assert_eq!(
        err(r#"{"namespace": {"x": {"policy": "read"}}}"#),
        RuleError::UnknownResource {
            resource: "namespace".into()
        }
    );
    assert_eq!(
        located("acl = \"read\"\n\n  identity = \"write\"").to_string(),
        "line 3, column 3: unknown ACL resource \"identity\""
    );
}

#[test]
fn invalid_policies_name_resource_segment_and_value() {
    let e = err("key \"a\" { policy = \"admin\" }");
    assert_eq!(
        e,
        RuleError::InvalidPolicy {
            resource: "key".into(),
            segment: Some("a".into()),
            value: "\"admin\"".into()
        }
    );
    assert_eq!(e.to_string(), "invalid key \"a\" policy \"admin\"");
    assert_eq!(
        located("key \"a\" { policy = \"admin\" }").to_string(),
        "line 1, column 20: invalid key \"a\" policy \"admin\""
    );
    assert!(
        matches!(err("operator = \"admin\""), RuleError::InvalidPolicy { resource, segment: None, .. } if resource == "operator")
    );
    assert!(
        matches!(err("key_prefix \"\" { policy = \"\" }"), RuleError::InvalidPolicy { value, .. } if value == "\"\"")
    );
    assert!(
        matches!(err(r#"{"node":{"n":{"policy":5}}}"#), RuleError::InvalidPolicy { value, .. } if value == "5")
    );
    assert!(matches!(
        err("keyring = \"writer\""),
        RuleError::InvalidPolicy { .. }
    ));
    assert!(matches!(err("keyring = 1"), RuleError::Malformed { .. }));
}

#[test]
fn list_only_on_key_rules() {
    assert_eq!(
        err("node_prefix \"\" { policy = \"list\" }"),
        RuleError::ListNotAllowed {
            resource: "node_prefix".into(),
            segment: Some(String::new())
        }
    );
    assert_eq!(
        err("acl = \"list\""),
        RuleError::ListNotAllowed {
            resource: "acl".into(),
            segment: None
        }
    );
    for block in ["session", "service", "agent", "event", "query"] {
        let e = err(&format!("{block} \"x\" {{ policy = \"list\" }}"));
        assert!(
            matches!(&e, RuleError::ListNotAllowed { resource, .. } if resource == block),
            "{e}"
        );
        assert!(e.to_string().contains(block));
    }
    assert!(PolicyRules::parse("key \"x\" { policy = \"list\" }").is_ok());
    assert!(PolicyRules::parse("key_prefix \"x\" { policy = \"list\" }").is_ok());
}

#[test]
fn missing_and_unknown_attributes() {
    assert_eq!(
        err(r#"{"key":{"a":{}}}"#),
        RuleError::MissingPolicy {
            resource: "key".into(),
            segment: "a".into()
        }
    );
    assert_eq!(
        err("service \"web\" {\n  polcy = \"read\"\n}"),
        RuleError::UnknownAttribute {
            resource: "service".into(),
            segment: "web".into(),
            attribute: "polcy".into()
        }
    );
    // `intentions` is a service attribute only.
    assert!(matches!(
        err("key \"a\" {\n  policy = \"read\"\n  intentions = \"read\"\n}"),
        RuleError::UnknownAttribute { attribute, .. } if attribute == "intentions"
    ));
    assert!(matches!(
        err("service \"a\" {\n  policy = \"read\"\n  intentions = \"admin\"\n}"),
        RuleError::InvalidPolicy { resource, .. } if resource == "service"
    ));
}

#[test]
fn wrong_shapes() {
    assert!(
        matches!(err("acl { policy = \"write\" }"), RuleError::Malformed { resource: Some(r), .. } if r == "acl")
    );
    assert!(matches!(err("key = \"write\""), RuleError::Malformed { resource: Some(r), .. } if r == "key"));
    assert!(
        matches!(err(r#"{"key":{"a":"write"}}"#), RuleError::Malformed { segment: Some(s), .. } if s == "a")
    );
    assert!(matches!(err(r#"{"key":{"a":[]}}"#), RuleError::Malformed { .. }));
    assert!(matches!(err(r#"{"key":[1]}"#), RuleError::Malformed { .. }));
    assert!(matches!(
        PolicyRules::parse_json("[1, 2]"),
        Err(RuleError::Malformed { resource: None, .. })
    ));
}

#[test]
fn syntax_errors_say_which_syntax() {
    assert!(matches!(
        err("{\"key\": "),
        RuleError::Syntax {
            syntax: RuleSyntax::Json,
            ..
        }
    ));
    assert!(matches!(
        err("key \"a\" { policy = "),
        RuleError::Syntax {
            syntax: RuleSyntax::Hcl,
            ..
        }
    ));
    assert!(matches!(
        err("key \"a\" policy"),
        RuleError::Syntax {
            syntax: RuleSyntax::Hcl,
            ..
        }
    ));
    let deep = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        err(&deep),
        RuleError::Syntax {
            syntax: RuleSyntax::Hcl,
            ..
        }
    ));
    let deep_json = format!("{{\"key\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        err(&deep_json),
        RuleError::Syntax {
            syntax: RuleSyntax::Json,
            ..
        }
    ));
}

#[test]
fn json_arrays_of_blocks_are_accepted() {
    // HCL's JSON form may wrap blocks and bodies in arrays.
    let rules = PolicyRules::parse(r#"{"key":[{"a":{"policy":"read"}},{"a":[{"policy":"deny"}]}]}"#).unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules.rule(tribune_acl::Resource::Key, tribune_acl::MatchKind::Exact, "a"),
        Some(tribune_acl::AccessLevel::Deny)
    );
}
