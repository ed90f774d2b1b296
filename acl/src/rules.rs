//! The rule language: HCL or JSON text in, validated and merged [`PolicyRules`] out.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::access::{AccessLevel, LABELLED_COUNT, Resource};

/// Whether a labelled rule matches one name exactly (`key`) or every name that starts with its segment
/// (`key_prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKind {
    /// `key "foo"`: only the name `foo`.
    Exact,
    /// `key_prefix "foo"`: `foo`, `foo/bar`, `food`... The empty segment matches everything.
    Prefix,
}

/// One rule of a [`PolicyRules`], as yielded by [`PolicyRules::rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// The resource the rule covers.
    pub resource: Resource,
    /// The labelled segment; `None` for the unlabelled resources (`acl`, `operator`, `keyring`).
    pub segment: Option<&'a str>,
    /// Exact or prefix; always `Exact` for unlabelled resources.
    pub kind: MatchKind,
    /// The granted disposition.
    pub access: AccessLevel,
}

/// The syntax a rules text was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSyntax {
    /// HashiCorp Configuration Language.
    Hcl,
    /// JSON (chosen when the text starts with `{`).
    Json,
}

impl fmt::Display for RuleSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleSyntax::Hcl => "HCL",
            RuleSyntax::Json => "JSON",
        })
    }
}

/// Why a rules text was refused. Every variant names the rule block (`resource`, as written, e.g.
/// `key_prefix`) and, for labelled rules, the segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The text is not valid HCL or JSON.
    #[error("failed to parse ACL rules as {syntax}: {message}")]
    Syntax {
        /// The syntax the text was read as.
        syntax: RuleSyntax,
        /// The parser's message.
        message: String,
    },
    /// A top-level name that is not an ACL resource (`keys`, `mesh`, ...).
    #[error("unknown ACL resource {resource:?}")]
    UnknownResource {
        /// The name as written.
        resource: String,
    },
    /// A disposition that is not `read`, `write` or `deny` (or `list` for key rules).
    #[error("invalid {resource}{} policy {value}", segment_suffix(segment))]
    InvalidPolicy {
        /// The rule block.
        resource: String,
        /// The segment, for labelled rules.
        segment: Option<String>,
        /// The offending value, rendered as JSON (so a string shows its quotes).
        value: String,
    },
    /// `list` on a rule other than `key` / `key_prefix`.
    #[error(
        "policy \"list\" is only valid for key and key_prefix rules, not {resource}{}",
        segment_suffix(segment)
    )]
    ListNotAllowed {
        /// The rule block.
        resource: String,
        /// The segment, for labelled rules.
        segment: Option<String>,
    },
    /// A labelled rule without a `policy` attribute.
    #[error("{resource} {segment:?} has no policy attribute")]
    MissingPolicy {
        /// The rule block.
        resource: String,
        /// The segment.
        segment: String,
    },
    /// An attribute other than `policy` (or `intentions` on service rules) inside a labelled rule.
    #[error("{resource} {segment:?} has unknown attribute {attribute:?}")]
    UnknownAttribute {
        /// The rule block.
        resource: String,
        /// The segment.
        segment: String,
        /// The attribute as written.
        attribute: String,
    },
    /// The right names with the wrong shape, e.g. `acl { policy = "write" }` or `key = "write"`.
    #[error("{}{} is malformed: expected {expected}", resource.as_deref().unwrap_or("ACL rules"), segment_suffix(segment))]
    Malformed {
        /// The rule block, or `None` when the whole document is not an object.
        resource: Option<String>,
        /// The segment, when the problem is inside one labelled rule.
        segment: Option<String>,
        /// What was expected there.
        expected: &'static str,
    },
}

fn segment_suffix(segment: &Option<impl AsRef<str>>) -> String {
    match segment {
        Some(s) => format!(" {:?}", s.as_ref()),
        None => String::new(),
    }
}

/// The exact and prefix rules of one labelled resource, each keyed by segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentRules {
    pub(crate) exact: BTreeMap<String, AccessLevel>,
    pub(crate) prefix: BTreeMap<String, AccessLevel>,
}

impl SegmentRules {
    fn map_mut(&mut self, kind: MatchKind) -> &mut BTreeMap<String, AccessLevel> {
        match kind {
            MatchKind::Exact => &mut self.exact,
            MatchKind::Prefix => &mut self.prefix,
        }
    }

    fn merge_from(&mut self, other: &SegmentRules) {
        for (kind, map) in [
            (MatchKind::Exact, &other.exact),
            (MatchKind::Prefix, &other.prefix),
        ] {
            for (segment, access) in map {
                merge_into(self.map_mut(kind), segment, *access);
            }
        }
    }
}

fn merge_into(map: &mut BTreeMap<String, AccessLevel>, segment: &str, access: AccessLevel) {
    match map.get_mut(segment) {
        Some(existing) => *existing = (*existing).max(access),
        None => {
            map.insert(segment.to_owned(), access);
        }
    }
}

fn merge_level(slot: &mut Option<AccessLevel>, access: AccessLevel) {
    *slot = Some(slot.map_or(access, |existing| existing.max(access)));
}

/// The parsed rules of one policy, or the merge of several.
///
/// Rules for the same resource, match kind and segment are merged by precedence (deny > write > list >
/// read), whether they come from one policy or several: merging is associative and commutative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub(crate) labelled: [SegmentRules; LABELLED_COUNT],
    pub(crate) acl: Option<AccessLevel>,
    pub(crate) operator: Option<AccessLevel>,
    pub(crate) keyring: Option<AccessLevel>,
}

impl PolicyRules {
    /// Parses a rules text as Consul stores it in a policy's `Rules` field.
    ///
    /// Text whose first non-blank character is `{` is read as JSON, anything else as HCL; blank text is
    /// an empty policy.
    pub fn parse(text: &str) -> Result<PolicyRules, RuleError> {
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Ok(PolicyRules::default());
        }
        if trimmed.starts_with('{') {
            Self::parse_json(text)
        } else {
            Self::parse_hcl(text)
        }
    }

    /// Parses HCL rules (block form `key "foo" { policy = "write" }`, attributes `acl = "write"`).
    pub fn parse_hcl(text: &str) -> Result<PolicyRules, RuleError> {
        // hcl-rs bounds nesting depth itself (it reports deeper input as a syntax error), so hostile
        // input cannot exhaust the stack; serde_json does the same for JSON.
        let value: Value = hcl::from_str(text).map_err(|e| RuleError::Syntax {
            syntax: RuleSyntax::Hcl,
            message: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    /// Parses JSON rules (`{"key":{"foo":{"policy":"write"}},"acl":"write"}`).
    pub fn parse_json(text: &str) -> Result<PolicyRules, RuleError> {
        let value: Value = serde_json::from_str(text).map_err(|e| RuleError::Syntax {
            syntax: RuleSyntax::Json,
            message: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    fn from_value(root: &Value) -> Result<PolicyRules, RuleError> {
        let Value::Object(blocks) = root else {
            return Err(RuleError::Malformed {
                resource: None,
                segment: None,
                expected: "an object",
            });
        };
        let mut rules = PolicyRules::default();
        for (name, value) in blocks {
            match block_kind(name) {
                Some(Block::Unlabelled(resource)) => {
                    let access = unlabelled_access(name, value)?;
                    merge_level(rules.unlabelled_mut(resource), access);
                }
                Some(Block::Labelled(resource, kind)) => {
                    rules.add_labelled(name, resource, kind, value)?;
                }
                None => {
                    return Err(RuleError::UnknownResource {
                        resource: name.clone(),
                    });
                }
            }
        }
        Ok(rules)
    }

    fn add_labelled(
        &mut self,
        block: &str,
        resource: Resource,
        kind: MatchKind,
        value: &Value,
    ) -> Result<(), RuleError> {
        let malformed = || RuleError::Malformed {
            resource: Some(block.to_owned()),
            segment: None,
            expected: "an object of segment labels to rule bodies",
        };
        // HCL's JSON form may wrap blocks in arrays; accept both shapes.
        let groups: Vec<&serde_json::Map<String, Value>> = match value {
            Value::Object(map) => vec![map],
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_object().ok_or_else(malformed))
                .collect::<Result<_, _>>()?,
            _ => return Err(malformed()),
        };
        for group in groups {
            for (segment, body) in group {
                let access = labelled_access(block, resource, segment, body)?;
                if let Some(index) = resource.labelled_index()
                    && let Some(rules) = self.labelled.get_mut(index)
                {
                    merge_into(rules.map_mut(kind), segment, access);
                }
            }
        }
        Ok(())
    }

    fn unlabelled_mut(&mut self, resource: Resource) -> &mut Option<AccessLevel> {
        match resource {
            Resource::Operator => &mut self.operator,
            Resource::Keyring => &mut self.keyring,
            // Only called with unlabelled resources; `acl` is the remaining one.
            _ => &mut self.acl,
        }
    }

    /// Merges `other` into `self` by precedence.
    pub fn merge_from(&mut self, other: &PolicyRules) {
        for (mine, theirs) in self.labelled.iter_mut().zip(other.labelled.iter()) {
            mine.merge_from(theirs);
        }
        for (slot, theirs) in [
            (&mut self.acl, other.acl),
            (&mut self.operator, other.operator),
            (&mut self.keyring, other.keyring),
        ] {
            if let Some(access) = theirs {
                merge_level(slot, access);
            }
        }
    }

    /// Merges any number of policies' rules into one.
    pub fn merged<'a>(policies: impl IntoIterator<Item = &'a PolicyRules>) -> PolicyRules {
        let mut merged = PolicyRules::default();
        for policy in policies {
            merged.merge_from(policy);
        }
        merged
    }

    /// The rule for one resource, match kind and segment, if any. For unlabelled resources `segment`
    /// and `kind` are ignored.
    pub fn rule(&self, resource: Resource, kind: MatchKind, segment: &str) -> Option<AccessLevel> {
        match resource {
            Resource::Acl => self.acl,
            Resource::Operator => self.operator,
            Resource::Keyring => self.keyring,
            labelled => {
                let rules = self.labelled.get(labelled.labelled_index()?)?;
                match kind {
                    MatchKind::Exact => rules.exact.get(segment).copied(),
                    MatchKind::Prefix => rules.prefix.get(segment).copied(),
                }
            }
        }
    }

    /// Every rule, labelled resources first, in a stable order.
    pub fn rules(&self) -> impl Iterator<Item = Rule<'_>> + '_ {
        let labelled = Resource::ALL
            .into_iter()
            .filter(|r| r.is_labelled())
            .zip(self.labelled.iter())
            .flat_map(|(resource, rules)| {
                let exact = rules
                    .exact
                    .iter()
                    .map(move |(s, a)| (resource, MatchKind::Exact, s, a));
                let prefix = rules
                    .prefix
                    .iter()
                    .map(move |(s, a)| (resource, MatchKind::Prefix, s, a));
                exact.chain(prefix).map(|(resource, kind, segment, access)| Rule {
                    resource,
                    segment: Some(segment.as_str()),
                    kind,
                    access: *access,
                })
            });
        let unlabelled = [
            (Resource::Acl, self.acl),
            (Resource::Operator, self.operator),
            (Resource::Keyring, self.keyring),
        ]
        .into_iter()
        .filter_map(|(resource, access)| {
            access.map(|access| Rule {
                resource,
                segment: None,
                kind: MatchKind::Exact,
                access,
            })
        });
        labelled.chain(unlabelled)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.labelled
            .iter()
            .map(|r| r.exact.len() + r.prefix.len())
            .sum::<usize>()
            + [self.acl, self.operator, self.keyring]
                .iter()
                .filter(|a| a.is_some())
                .count()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

enum Block {
    Labelled(Resource, MatchKind),
    Unlabelled(Resource),
}

fn block_kind(name: &str) -> Option<Block> {
    let (base, kind) = match name.strip_suffix("_prefix") {
        Some(base) => (base, MatchKind::Prefix),
        None => (name, MatchKind::Exact),
    };
    let resource = Resource::from_name(base)?;
    match (resource.is_labelled(), kind) {
        (true, kind) => Some(Block::Labelled(resource, kind)),
        (false, MatchKind::Exact) => Some(Block::Unlabelled(resource)),
        // `acl_prefix` and friends do not exist.
        (false, MatchKind::Prefix) => None,
    }
}

fn parse_level(
    block: &str,
    resource: Resource,
    segment: Option<&str>,
    value: &Value,
) -> Result<AccessLevel, RuleError> {
    let invalid = || RuleError::InvalidPolicy {
        resource: block.to_owned(),
        segment: segment.map(str::to_owned),
        value: value.to_string(),
    };
    let access = value
        .as_str()
        .and_then(AccessLevel::from_name)
        .ok_or_else(invalid)?;
    if access == AccessLevel::List && resource != Resource::Key {
        return Err(RuleError::ListNotAllowed {
            resource: block.to_owned(),
            segment: segment.map(str::to_owned),
        });
    }
    Ok(access)
}

fn unlabelled_access(block: &str, value: &Value) -> Result<AccessLevel, RuleError> {
    let resource = Resource::from_name(block).unwrap_or(Resource::Acl);
    match value {
        Value::String(_) => parse_level(block, resource, None, value),
        _ => Err(RuleError::Malformed {
            resource: Some(block.to_owned()),
            segment: None,
            expected: "a string such as \"read\", \"write\" or \"deny\"",
        }),
    }
}

/// Reads one labelled rule body. Repeated bodies for the same segment (an array, as HCL produces for a
/// repeated block) merge by precedence.
fn labelled_access(
    block: &str,
    resource: Resource,
    segment: &str,
    body: &Value,
) -> Result<AccessLevel, RuleError> {
    let malformed = || RuleError::Malformed {
        resource: Some(block.to_owned()),
        segment: Some(segment.to_owned()),
        expected: "a rule body such as { policy = \"read\" }",
    };
    let bodies: Vec<&serde_json::Map<String, Value>> = match body {
        Value::Object(map) => vec![map],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_object().ok_or_else(malformed))
            .collect::<Result<_, _>>()?,
        _ => return Err(malformed()),
    };
    let mut merged: Option<AccessLevel> = None;
    for attributes in bodies {
        let mut policy = None;
        for (attribute, value) in attributes {
            match attribute.as_str() {
                "policy" => policy = Some(parse_level(block, resource, Some(segment), value)?),
                // Intentions belong to service mesh, which this crate does not evaluate; the attribute is
                // validated so that Consul's own policies (e.g. global-management) still parse.
                "intentions" if resource == Resource::Service => {
                    parse_level(block, resource, Some(segment), value)?;
                }
                _ => {
                    return Err(RuleError::UnknownAttribute {
                        resource: block.to_owned(),
                        segment: segment.to_owned(),
                        attribute: attribute.clone(),
                    });
                }
            }
        }
        let policy = policy.ok_or_else(|| RuleError::MissingPolicy {
            resource: block.to_owned(),
            segment: segment.to_owned(),
        })?;
        merge_level(&mut merged, policy);
    }
    merged.ok_or_else(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_forms_agree() {
        let hcl = r#"
            key_prefix "" { policy = "read" }
            key "foo" { policy = "write" }
            key "bar" { policy = "deny" }
            service_prefix "web" { policy = "write" }
            acl = "write"
            operator = "read"
            keyring = "deny"
        "#;
        let json = r#"{"key_prefix":{"":{"policy":"read"}},"key":{"foo":{"policy":"write"},"bar":{"policy":"deny"}},
            "service_prefix":{"web":{"policy":"write"}},"acl":"write","operator":"read","keyring":"deny"}"#;
        let a = PolicyRules::parse(hcl).unwrap();
        let b = PolicyRules::parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 7);
        assert_eq!(
            a.rule(Resource::Key, MatchKind::Prefix, ""),
            Some(AccessLevel::Read)
        );
        assert_eq!(
            a.rule(Resource::Key, MatchKind::Exact, "bar"),
            Some(AccessLevel::Deny)
        );
        assert_eq!(
            a.rule(Resource::Keyring, MatchKind::Exact, ""),
            Some(AccessLevel::Deny)
        );
    }

    #[test]
    fn repeated_blocks_merge_by_precedence() {
        let rules = PolicyRules::parse(
            r#"
            key "a" { policy = "write" }
            key "a" { policy = "read" }
            node "n" { policy = "deny" }
            node "n" { policy = "write" }
        "#,
        )
        .unwrap();
        assert_eq!(
            rules.rule(Resource::Key, MatchKind::Exact, "a"),
            Some(AccessLevel::Write)
        );
        assert_eq!(
            rules.rule(Resource::Node, MatchKind::Exact, "n"),
            Some(AccessLevel::Deny)
        );
    }

    #[test]
    fn blank_text_is_empty_policy() {
        assert!(PolicyRules::parse("").unwrap().is_empty());
        assert!(PolicyRules::parse("  \n ").unwrap().is_empty());
        assert!(PolicyRules::parse("{}").unwrap().is_empty());
    }

    #[test]
    fn merge_is_commutative() {
        let a = PolicyRules::parse("key \"x\" { policy = \"read\" }\nacl = \"read\"").unwrap();
        let b = PolicyRules::parse("key \"x\" { policy = \"list\" }\nacl = \"deny\"").unwrap();
        assert_eq!(PolicyRules::merged([&a, &b]), PolicyRules::merged([&b, &a]));
        assert_eq!(PolicyRules::merged([&a, &b]).acl, Some(AccessLevel::Deny));
    }

    #[test]
    fn rules_iterator_yields_every_rule() {
        let rules = PolicyRules::parse(
            r#"{"key": {"x": {"policy": "read"}}, "key_prefix": {"x": {"policy": "list"}}, "operator": "write"}"#,
        )
        .unwrap();
        let all: Vec<_> = rules.rules().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].kind, MatchKind::Prefix);
        assert_eq!(all[2].resource, Resource::Operator);
    }
}
