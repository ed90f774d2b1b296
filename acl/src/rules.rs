//! The rule language: HCL or JSON text in, validated and merged [`PolicyRules`] out.

use std::collections::BTreeMap;
use std::fmt;

use crate::access::{AccessLevel, LABELLED_COUNT, Resource};
use crate::hcl1::{self, Item, Key, Node, Pos, Value};

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
    /// Another error, at a known place in the text (1-based line and column, in characters). HCL
    /// errors always carry one; JSON syntax errors do, JSON shape errors do not.
    #[error("line {line}, column {column}: {error}")]
    At {
        /// The line.
        line: usize,
        /// The column.
        column: usize,
        /// What is wrong there.
        error: Box<RuleError>,
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

impl RuleError {
    /// What is wrong, without the place ([`RuleError::At`] unwrapped).
    pub fn kind(&self) -> &RuleError {
        match self {
            RuleError::At { error, .. } => error.kind(),
            other => other,
        }
    }

    /// The 1-based line the error is on, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RuleError::At { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The 1-based column (in characters) the error is at, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            RuleError::At { column, .. } => Some(*column),
            _ => None,
        }
    }

    fn at(self, pos: Option<Pos>) -> RuleError {
        match (pos, self) {
            (_, located @ RuleError::At { .. }) => located,
            (Some(pos), error) => RuleError::At {
                line: pos.line,
                column: pos.column,
                error: Box::new(error),
            },
            (None, error) => error,
        }
    }
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
    /// `mesh` and `peering` are validated and kept (so Consul's own policies parse and merge) but not
    /// evaluated: this crate has no service-mesh or peering operations.
    pub(crate) mesh: Option<AccessLevel>,
    pub(crate) peering: Option<AccessLevel>,
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

    /// Parses HCL rules as Consul's HCL 1 parser reads them: blocks `key "foo" { policy = "write" }`
    /// (several attributes on one line need no separator, commas are optional), object assignments
    /// `key = { "foo" = { policy = "write" } }`, attributes `acl = "write"`, comments `#`, `//` and
    /// `/* */`, heredocs. Errors name the line and column.
    pub fn parse_hcl(text: &str) -> Result<PolicyRules, RuleError> {
        let items = hcl1::parse(text).map_err(|e| {
            RuleError::Syntax {
                syntax: RuleSyntax::Hcl,
                message: e.message,
            }
            .at(Some(e.pos))
        })?;
        Self::from_items(&items)
    }

    /// Parses JSON rules (`{"key":{"foo":{"policy":"write"}},"acl":"write"}`).
    pub fn parse_json(text: &str) -> Result<PolicyRules, RuleError> {
        // serde_json bounds nesting depth itself, so hostile input cannot exhaust the stack.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            let located = e.line() > 0;
            let mut message = e.to_string();
            if located {
                // The place goes into `RuleError::At`; do not say it twice.
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
            }
            let error = RuleError::Syntax {
                syntax: RuleSyntax::Json,
                message,
            };
            error.at(located.then(|| Pos {
                line: e.line(),
                column: e.column(),
            }))
        })?;
        let root = hcl1::from_json(&value);
        match &root.value {
            Value::Object(items) => Self::from_items(items),
            _ => Err(RuleError::Malformed {
                resource: None,
                segment: None,
                expected: "an object",
            }),
        }
    }

    fn from_items(items: &[Item]) -> Result<PolicyRules, RuleError> {
        let mut rules = PolicyRules::default();
        for item in items {
            let Some((name, labels)) = item.keys.split_first() else {
                continue;
            };
            match block_kind(&name.name) {
                Some(Block::Unlabelled(slot)) => {
                    let access = unlabelled_access(&name.name, slot, labels, &item.value)?;
                    merge_level(rules.unlabelled_mut(slot), access);
                }
                Some(Block::Labelled(resource, kind)) => {
                    rules.add_labelled(&name.name, resource, kind, labels, &item.value)?;
                }
                None => {
                    return Err(RuleError::UnknownResource {
                        resource: name.name.clone(),
                    }
                    .at(name.pos));
                }
            }
        }
        Ok(rules)
    }

    /// One labelled block: `key "a" { ... }` (the label is in `labels`) or `key = { "a" = { ... } }`
    /// (the labels are the object's keys), or a list of such objects, as HCL's JSON form allows.
    fn add_labelled(
        &mut self,
        block: &str,
        resource: Resource,
        kind: MatchKind,
        labels: &[Key],
        value: &Node,
    ) -> Result<(), RuleError> {
        if let Some((segment, rest)) = labels.split_first() {
            return self.add_rule(block, resource, kind, segment, rest, value);
        }
        let malformed = |pos: Option<Pos>| {
            RuleError::Malformed {
                resource: Some(block.to_owned()),
                segment: None,
                expected: "an object of segment labels to rule bodies",
            }
            .at(pos)
        };
        let groups: Vec<&[Item]> = match &value.value {
            Value::Object(items) => vec![items],
            Value::List(nodes) => nodes
                .iter()
                .map(|node| match &node.value {
                    Value::Object(items) => Ok(items.as_slice()),
                    _ => Err(malformed(node.pos)),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(malformed(value.pos)),
        };
        for group in groups {
            for item in group {
                if let Some((segment, rest)) = item.keys.split_first() {
                    self.add_rule(block, resource, kind, segment, rest, &item.value)?;
                }
            }
        }
        Ok(())
    }

    fn add_rule(
        &mut self,
        block: &str,
        resource: Resource,
        kind: MatchKind,
        segment: &Key,
        rest: &[Key],
        body: &Node,
    ) -> Result<(), RuleError> {
        let access = labelled_access(block, resource, segment, rest, body)?;
        if let Some(index) = resource.labelled_index()
            && let Some(rules) = self.labelled.get_mut(index)
        {
            merge_into(rules.map_mut(kind), &segment.name, access);
        }
        Ok(())
    }

    fn unlabelled_mut(&mut self, slot: Unlabelled) -> &mut Option<AccessLevel> {
        match slot {
            Unlabelled::Acl => &mut self.acl,
            Unlabelled::Operator => &mut self.operator,
            Unlabelled::Keyring => &mut self.keyring,
            Unlabelled::Mesh => &mut self.mesh,
            Unlabelled::Peering => &mut self.peering,
        }
    }

    /// The `mesh` rule, if any. Validated and merged, not evaluated by this crate.
    pub fn mesh(&self) -> Option<AccessLevel> {
        self.mesh
    }

    /// The `peering` rule, if any. Validated and merged, not evaluated by this crate.
    pub fn peering(&self) -> Option<AccessLevel> {
        self.peering
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
            (&mut self.mesh, other.mesh),
            (&mut self.peering, other.peering),
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
    Unlabelled(Unlabelled),
}

/// The rules that take one disposition and no label.
#[derive(Clone, Copy)]
enum Unlabelled {
    Acl,
    Operator,
    Keyring,
    Mesh,
    Peering,
}

impl Unlabelled {
    /// The resource whose rules a `list` check applies to; `mesh` and `peering` follow the same rule
    /// as the others (no `list`).
    fn resource(self) -> Resource {
        match self {
            Unlabelled::Operator => Resource::Operator,
            Unlabelled::Keyring => Resource::Keyring,
            Unlabelled::Acl | Unlabelled::Mesh | Unlabelled::Peering => Resource::Acl,
        }
    }
}

/// Resource names match case-insensitively, as HCL 1's decoder matches field names.
fn block_kind(name: &str) -> Option<Block> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "mesh" => return Some(Block::Unlabelled(Unlabelled::Mesh)),
        "peering" => return Some(Block::Unlabelled(Unlabelled::Peering)),
        _ => {}
    }
    let (base, kind) = match lower.strip_suffix("_prefix") {
        Some(base) => (base, MatchKind::Prefix),
        None => (lower.as_str(), MatchKind::Exact),
    };
    let resource = Resource::from_name(base)?;
    match (resource, kind) {
        (resource, kind) if resource.is_labelled() => Some(Block::Labelled(resource, kind)),
        (Resource::Acl, MatchKind::Exact) => Some(Block::Unlabelled(Unlabelled::Acl)),
        (Resource::Operator, MatchKind::Exact) => Some(Block::Unlabelled(Unlabelled::Operator)),
        (Resource::Keyring, MatchKind::Exact) => Some(Block::Unlabelled(Unlabelled::Keyring)),
        // `acl_prefix` and friends do not exist.
        _ => None,
    }
}

/// A disposition; like Consul, the spelling is case-insensitive (`"Write"` is `write`).
fn parse_level(
    block: &str,
    resource: Resource,
    segment: Option<&str>,
    value: &Node,
) -> Result<AccessLevel, RuleError> {
    let invalid = || {
        RuleError::InvalidPolicy {
            resource: block.to_owned(),
            segment: segment.map(str::to_owned),
            value: value.value.render(),
        }
        .at(value.pos)
    };
    let Value::Str(text) = &value.value else {
        return Err(invalid());
    };
    let access = AccessLevel::from_name(&text.to_ascii_lowercase()).ok_or_else(invalid)?;
    if access == AccessLevel::List && resource != Resource::Key {
        return Err(RuleError::ListNotAllowed {
            resource: block.to_owned(),
            segment: segment.map(str::to_owned),
        }
        .at(value.pos));
    }
    Ok(access)
}

fn unlabelled_access(
    block: &str,
    slot: Unlabelled,
    labels: &[Key],
    value: &Node,
) -> Result<AccessLevel, RuleError> {
    match (&value.value, labels.first()) {
        (Value::Str(_), None) => parse_level(block, slot.resource(), None, value),
        (_, label) => Err(RuleError::Malformed {
            resource: Some(block.to_owned()),
            segment: None,
            expected: "a string such as \"read\", \"write\" or \"deny\"",
        }
        .at(label.and_then(|l| l.pos).or(value.pos))),
    }
}

/// Reads one labelled rule body. `rest` holds any keys written after the segment label
/// (`key "a" "b" { ... }`), which HCL 1 reads as a nested object `{ b = { ... } }`. Repeated bodies for
/// the same segment (a list, as HCL's JSON form allows) merge by precedence.
fn labelled_access(
    block: &str,
    resource: Resource,
    segment: &Key,
    rest: &[Key],
    body: &Node,
) -> Result<AccessLevel, RuleError> {
    let malformed = |pos: Option<Pos>| {
        RuleError::Malformed {
            resource: Some(block.to_owned()),
            segment: Some(segment.name.clone()),
            expected: "a rule body such as { policy = \"read\" }",
        }
        .at(pos)
    };
    if let Some(extra) = rest.first() {
        return Err(attribute_error(block, resource, segment, extra, true, body));
    }
    let bodies: Vec<&[Item]> = match &body.value {
        Value::Object(items) => vec![items],
        Value::List(nodes) if !nodes.is_empty() => nodes
            .iter()
            .map(|node| match &node.value {
                Value::Object(items) => Ok(items.as_slice()),
                _ => Err(malformed(node.pos)),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(malformed(body.pos.or(segment.pos))),
    };
    let mut merged: Option<AccessLevel> = None;
    for attributes in bodies {
        let mut policy = None;
        for item in attributes {
            let Some((name, nested)) = item.keys.split_first() else {
                continue;
            };
            if !nested.is_empty() {
                return Err(attribute_error(block, resource, segment, name, true, &item.value));
            }
            match name.name.to_ascii_lowercase().as_str() {
                "policy" => {
                    let level = parse_level(block, resource, Some(&segment.name), &item.value)?;
                    merge_level(&mut policy, level);
                }
                // Intentions belong to service mesh, which this crate does not evaluate; the attribute is
                // validated so that Consul's own policies (e.g. global-management) still parse.
                "intentions" if resource == Resource::Service => {
                    parse_level(block, resource, Some(&segment.name), &item.value)?;
                }
                _ => {
                    return Err(attribute_error(
                        block,
                        resource,
                        segment,
                        name,
                        false,
                        &item.value,
                    ));
                }
            }
        }
        let policy = policy.ok_or_else(|| {
            RuleError::MissingPolicy {
                resource: block.to_owned(),
                segment: segment.name.clone(),
            }
            .at(segment.pos)
        })?;
        merge_level(&mut merged, policy);
    }
    merged.ok_or_else(|| malformed(body.pos))
}

/// An attribute that is not one of the rule's, or one of the rule's written as a block.
fn attribute_error(
    block: &str,
    resource: Resource,
    segment: &Key,
    name: &Key,
    as_block: bool,
    value: &Node,
) -> RuleError {
    let lower = name.name.to_ascii_lowercase();
    let known = lower == "policy" || (lower == "intentions" && resource == Resource::Service);
    if known && as_block {
        RuleError::InvalidPolicy {
            resource: block.to_owned(),
            segment: Some(segment.name.clone()),
            value: value.value.render(),
        }
        .at(name.pos)
    } else {
        RuleError::UnknownAttribute {
            resource: block.to_owned(),
            segment: segment.name.clone(),
            attribute: name.name.clone(),
        }
        .at(name.pos)
    }
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
