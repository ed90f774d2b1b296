//! Property tests: no input string panics the rule parser, HCL or JSON; parsing is deterministic.

use proptest::prelude::*;
use tribune_acl::PolicyRules;

/// Fragments of the rule language, so generated inputs get past the tokenizer and into the walker.
fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "key",
        "key_prefix",
        "node",
        "service_prefix",
        "acl",
        "operator",
        "keyring",
        "mesh",
        "policy",
        "intentions",
        " ",
        "\n",
        "\"",
        "\"\"",
        "\"x\"",
        "\"read\"",
        "\"write\"",
        "\"list\"",
        "\"deny\"",
        "=",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "#",
        "//",
        "/*",
        "*/",
        "${",
        "%{",
        "<<EOT\n",
        "EOT",
        "1",
        "-1.5e9",
        "true",
        "null",
        "\\",
        "\\u0000",
        "ü",
        "\u{0}",
        "(",
        ")",
        "?",
        "for",
    ])
}

fn assembled() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_do_not_panic(text in ".{0,200}") {
        let _ = PolicyRules::parse(&text);
        let _ = PolicyRules::parse_hcl(&text);
        let _ = PolicyRules::parse_json(&text);
    }

    #[test]
    fn assembled_fragments_do_not_panic(text in assembled()) {
        let first = PolicyRules::parse_hcl(&text);
        let _ = PolicyRules::parse_json(&text);
        let json_wrapped = format!("{{{text}}}");
        let _ = PolicyRules::parse(&json_wrapped);
        prop_assert_eq!(first, PolicyRules::parse_hcl(&text));
    }

    #[test]
    fn well_formed_rules_always_parse(
        segment in "[a-z/_-]{0,12}",
        level in prop::sample::select(vec!["read", "write", "deny", "list"]),
        prefix in any::<bool>(),
    ) {
        let block = if prefix { "key_prefix" } else { "key" };
        let hcl = format!("{block} {segment:?} {{\n  policy = {level:?}\n}}\n");
        let json = format!("{{{block:?}: {{{segment:?}: {{\"policy\": {level:?}}}}}}}");
        let a = PolicyRules::parse(&hcl);
        let b = PolicyRules::parse(&json);
        prop_assert!(a.is_ok(), "{:?}", a);
        prop_assert_eq!(a, b);
    }
}
