//! An immutable radix tree over rule segments, so a decision costs O(length of the name).
//!
//! Each node's edge label is a byte string; a node whose path (the concatenation of labels from the root)
//! equals a rule segment carries that segment's exact and/or prefix rule. Nodes live in one arena and
//! children are found by their label's first byte.

use std::collections::BTreeMap;

use crate::access::AccessLevel;

#[derive(Debug, Clone, Default)]
struct Node {
    /// The edge label from the parent; empty only for the root.
    label: Box<[u8]>,
    /// First bytes of the children's labels, sorted, parallel to `child_nodes`.
    child_bytes: Vec<u8>,
    child_nodes: Vec<u32>,
    exact: Option<AccessLevel>,
    prefix: Option<AccessLevel>,
    /// Whether any rule at this node or below it is not `write` (for delete-tree checks).
    subtree_has_non_write: bool,
}

impl Node {
    fn child(&self, first: u8) -> Option<usize> {
        let slot = self.child_bytes.binary_search(&first).ok()?;
        self.child_nodes.get(slot).map(|&n| n as usize)
    }
}

/// The rules of one labelled resource, indexed for lookup.
#[derive(Debug, Clone)]
pub(crate) struct RuleTree {
    nodes: Vec<Node>,
}

impl Default for RuleTree {
    fn default() -> Self {
        RuleTree {
            nodes: vec![Node::default()],
        }
    }
}

impl RuleTree {
    pub(crate) fn build(
        exact: &BTreeMap<String, AccessLevel>,
        prefix: &BTreeMap<String, AccessLevel>,
    ) -> RuleTree {
        let mut tree = RuleTree::default();
        for (segment, access) in exact {
            let node = tree.insert(segment.as_bytes());
            if let Some(n) = tree.nodes.get_mut(node) {
                n.exact = Some(*access);
            }
        }
        for (segment, access) in prefix {
            let node = tree.insert(segment.as_bytes());
            if let Some(n) = tree.nodes.get_mut(node) {
                n.prefix = Some(*access);
            }
        }
        tree.compute_subtree_flags();
        tree
    }

    /// Returns the node whose path is exactly `key`, creating (and splitting edges) as needed.
    fn insert(&mut self, key: &[u8]) -> usize {
        let mut node = 0usize;
        let mut rest = key;
        loop {
            let Some(&first) = rest.first() else { return node };
            let Some(child) = self.nodes.get(node).and_then(|n| n.child(first)) else {
                return self.add_child(node, rest);
            };
            let (common, label_len) = self
                .nodes
                .get(child)
                .map_or((0, 0), |c| (common_prefix_len(&c.label, rest), c.label.len()));
            if common == label_len {
                node = child;
                rest = rest.get(common..).unwrap_or_default();
                continue;
            }
            // Split the edge: parent -> mid (label[..common]) -> child (label[common..]). Only splits copy
            // labels; plain descents borrow them.
            let label = self.nodes.get(child).map(|c| c.label.clone()).unwrap_or_default();
            let (head, tail) = label.split_at(common.min(label.len()));
            let mid = self.nodes.len();
            let tail_first = tail.first().copied().unwrap_or_default();
            self.nodes.push(Node {
                label: head.into(),
                child_bytes: vec![tail_first],
                child_nodes: vec![to_u32(child)],
                ..Node::default()
            });
            if let Some(c) = self.nodes.get_mut(child) {
                c.label = tail.into();
            }
            if let Some(parent) = self.nodes.get_mut(node)
                && let Ok(slot) = parent.child_bytes.binary_search(&first)
                && let Some(entry) = parent.child_nodes.get_mut(slot)
            {
                *entry = to_u32(mid);
            }
            let remaining = rest.get(common..).unwrap_or_default();
            return if remaining.is_empty() {
                mid
            } else {
                self.add_child(mid, remaining)
            };
        }
    }

    fn add_child(&mut self, parent: usize, label: &[u8]) -> usize {
        let index = self.nodes.len();
        self.nodes.push(Node {
            label: label.into(),
            ..Node::default()
        });
        if let (Some(&first), Some(p)) = (label.first(), self.nodes.get_mut(parent)) {
            let slot = p.child_bytes.partition_point(|&b| b < first);
            p.child_bytes.insert(slot, first);
            p.child_nodes.insert(slot, to_u32(index));
        }
        index
    }

    fn compute_subtree_flags(&mut self) {
        // Pre-order visits parents before children, so the reverse visits children first, without
        // recursion (segment length bounds the depth, and segments come from users).
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0usize];
        while let Some(n) = stack.pop() {
            order.push(n);
            if let Some(node) = self.nodes.get(n) {
                stack.extend(node.child_nodes.iter().map(|&c| c as usize));
            }
        }
        for &n in order.iter().rev() {
            let Some(node) = self.nodes.get(n) else { continue };
            let own = [node.exact, node.prefix]
                .into_iter()
                .flatten()
                .any(|a| a != AccessLevel::Write);
            let below = node.child_nodes.iter().any(|&c| {
                self.nodes
                    .get(c as usize)
                    .is_some_and(|c| c.subtree_has_non_write)
            });
            if let Some(node) = self.nodes.get_mut(n) {
                node.subtree_has_non_write = own || below;
            }
        }
    }

    /// The rule governing `name`: an exact rule on `name` itself, else the longest prefix rule.
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<AccessLevel> {
        let mut best = None;
        let mut node = self.nodes.first()?;
        let mut pos = 0usize;
        loop {
            let rest = name.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                // This node's path is the whole name: an exact rule beats every prefix rule.
                return node.exact.or(node.prefix).or(best);
            }
            if node.prefix.is_some() {
                best = node.prefix;
            }
            let Some(child) = rest
                .first()
                .and_then(|&b| node.child(b))
                .and_then(|c| self.nodes.get(c))
            else {
                return best;
            };
            if !rest.starts_with(&child.label) {
                return best;
            }
            pos += child.label.len();
            node = child;
        }
    }

    /// Delete-tree check, as Consul's `KeyWritePrefix`:
    /// `Some(Deny)` if the longest prefix rule covering `prefix` is not `write`, or if any rule at or below
    /// `prefix` is not `write`; otherwise `Some(Write)` when a covering prefix rule exists, else `None`.
    pub(crate) fn write_prefix(&self, prefix: &[u8]) -> Option<AccessLevel> {
        let mut covering = None;
        let mut node = self.nodes.first()?;
        let mut pos = 0usize;
        // Walk to the first node whose path extends `prefix`, noting prefix rules on the way.
        let subtree = loop {
            if node.prefix.is_some() {
                covering = node.prefix;
            }
            let rest = prefix.get(pos..).unwrap_or_default();
            let Some(&first) = rest.first() else {
                break Some(node);
            };
            let Some(child) = node.child(first).and_then(|c| self.nodes.get(c)) else {
                break None;
            };
            if rest.starts_with(&child.label) {
                pos += child.label.len();
                node = child;
            } else if child.label.starts_with(rest) {
                // `prefix` ends inside this edge: everything below `child` is under `prefix`.
                break Some(child);
            } else {
                break None;
            }
        };
        if covering.is_some_and(|a| a != AccessLevel::Write) {
            return Some(AccessLevel::Deny);
        }
        if subtree.is_some_and(|n| n.subtree_has_non_write) {
            return Some(AccessLevel::Deny);
        }
        covering
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn to_u32(index: usize) -> u32 {
    // Node count is bounded by the total bytes of all segments, far below u32::MAX for any real policy;
    // saturating keeps this total without a panic path.
    u32::try_from(index).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessLevel::*;

    fn tree(exact: &[(&str, AccessLevel)], prefix: &[(&str, AccessLevel)]) -> RuleTree {
        let e = exact.iter().map(|(s, a)| (s.to_string(), *a)).collect();
        let p = prefix.iter().map(|(s, a)| (s.to_string(), *a)).collect();
        RuleTree::build(&e, &p)
    }

    /// The obvious O(rules) definition, to check the tree against.
    fn naive(
        exact: &[(&str, AccessLevel)],
        prefix: &[(&str, AccessLevel)],
        name: &str,
    ) -> Option<AccessLevel> {
        if let Some((_, a)) = exact.iter().find(|(s, _)| *s == name) {
            return Some(*a);
        }
        prefix
            .iter()
            .filter(|(s, _)| name.starts_with(s))
            .max_by_key(|(s, _)| s.len())
            .map(|(_, a)| *a)
    }

    #[test]
    fn lookup_matches_naive_definition() {
        let exact = [("foo", Write), ("foo/bar", Deny), ("fob", Read), ("", List)];
        let prefix = [
            ("", Read),
            ("fo", Deny),
            ("foo/", Write),
            ("foo/b", List),
            ("zzz", Write),
        ];
        let t = tree(&exact, &prefix);
        for name in [
            "", "f", "fo", "foo", "foo/", "foo/b", "foo/bar", "foo/baz", "fob", "fobx", "zz", "zzz", "zzzz",
        ] {
            assert_eq!(
                t.lookup(name.as_bytes()),
                naive(&exact, &prefix, name),
                "name {name:?}"
            );
        }
    }

    #[test]
    fn empty_tree_has_no_rule() {
        let t = RuleTree::default();
        assert_eq!(t.lookup(b"x"), None);
        assert_eq!(t.write_prefix(b"x"), None);
    }

    #[test]
    fn write_prefix_sees_rules_inside_a_split_edge() {
        let t = tree(&[("abcdef", Read)], &[("", Write)]);
        assert_eq!(t.write_prefix(b"abc"), Some(Deny));
        assert_eq!(t.write_prefix(b"abd"), Some(Write));
        assert_eq!(t.write_prefix(b"abcdefg"), Some(Write));
    }
}
