//! [`Authorizer`]: a token's merged rules plus the default policy, answering allow or deny.

use crate::access::{Access, AccessLevel, Decision, DefaultPolicy, LABELLED_COUNT, Resource};
use crate::radix::RuleTree;
use crate::rules::PolicyRules;

/// Decides requests for one token: its policies' rules, merged and indexed, then the default policy.
///
/// Built once per distinct set of policies (the [`Resolver`](crate::Resolver) caches it) and then shared
/// read-only; every labelled decision walks one radix tree, so it costs O(length of the name) whatever the
/// number of rules.
///
/// Order of evaluation, as Consul's chained authorizer:
/// 1. a management token allows everything;
/// 2. otherwise the token's own rules: an exact rule on the name, else the longest matching prefix rule;
/// 3. if no rule matched, the default policy — except that `acl` (and snapshots) are never granted by
///    default, even with `default_policy = allow`.
#[derive(Debug, Clone)]
pub struct Authorizer {
    management: bool,
    default_policy: DefaultPolicy,
    trees: [RuleTree; LABELLED_COUNT],
    acl: Option<AccessLevel>,
    operator: Option<AccessLevel>,
    keyring: Option<AccessLevel>,
    rule_count: usize,
}

impl Authorizer {
    /// Merges the given policies' rules (deny > write > list > read per segment) and indexes them.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = &'a PolicyRules>,
        default_policy: DefaultPolicy,
    ) -> Self {
        Self::from_merged(&PolicyRules::merged(policies), default_policy)
    }

    /// Indexes rules that are already merged (or a single policy's rules).
    pub fn from_merged(rules: &PolicyRules, default_policy: DefaultPolicy) -> Self {
        let trees = std::array::from_fn(|i| match rules.labelled.get(i) {
            Some(r) => RuleTree::build(&r.exact, &r.prefix),
            None => RuleTree::default(),
        });
        Authorizer {
            management: false,
            default_policy,
            trees,
            acl: rules.acl,
            operator: rules.operator,
            keyring: rules.keyring,
            rule_count: rules.len(),
        }
    }

    /// The authorizer of a management token (the `global-management` policy): everything is allowed.
    pub fn management() -> Self {
        Authorizer {
            management: true,
            ..Self::from_default(DefaultPolicy::Deny)
        }
    }

    /// An authorizer with no rules: only the default policy decides (Consul's allow-all / deny-all).
    pub fn from_default(default_policy: DefaultPolicy) -> Self {
        Self::from_merged(&PolicyRules::default(), default_policy)
    }

    /// Whether this is a management authorizer.
    pub fn is_management(&self) -> bool {
        self.management
    }

    /// The default policy applied when no rule matches.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default_policy
    }

    /// Number of merged rules behind this authorizer.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The generic decision: may this token perform `access` on `resource` named `name`?
    ///
    /// `name` is ignored for the unlabelled resources (`acl`, `operator`, `keyring`). `Access::List` is
    /// granted only by `list` or `write` rules, and only key rules can be `list`.
    pub fn allowed(&self, resource: Resource, name: &str, access: Access) -> Decision {
        if self.management {
            return Decision::Allow;
        }
        let rule = match resource {
            Resource::Acl => self.acl,
            Resource::Operator => self.operator,
            Resource::Keyring => self.keyring,
            labelled => self.tree(labelled).and_then(|t| t.lookup(name.as_bytes())),
        };
        match rule {
            Some(level) => level.enforce(access),
            // Default-policy authorizers never manage ACLs.
            None if resource == Resource::Acl => Decision::Deny,
            None => self.default_policy.decision(),
        }
    }

    fn tree(&self, resource: Resource) -> Option<&RuleTree> {
        self.trees.get(resource.labelled_index()?)
    }

    /// Read one KV entry.
    pub fn key_read(&self, key: &str) -> Decision {
        self.allowed(Resource::Key, key, Access::Read)
    }

    /// List the keys under `prefix`: needs a `list` or `write` rule covering `prefix`.
    pub fn key_list(&self, prefix: &str) -> Decision {
        self.allowed(Resource::Key, prefix, Access::List)
    }

    /// Write (or delete) one KV entry.
    pub fn key_write(&self, key: &str) -> Decision {
        self.allowed(Resource::Key, key, Access::Write)
    }

    /// Delete a whole tree (`DELETE ?recurse`): the longest prefix rule covering `prefix` must be `write`
    /// (or absent, deferring to the default policy) and **every** rule at or below `prefix`, exact or
    /// prefix, must be `write`.
    pub fn key_write_prefix(&self, prefix: &str) -> Decision {
        if self.management {
            return Decision::Allow;
        }
        match self
            .tree(Resource::Key)
            .and_then(|t| t.write_prefix(prefix.as_bytes()))
        {
            Some(level) => level.enforce(Access::Write),
            None => self.default_policy.decision(),
        }
    }

    /// The gate of a recursive read or key listing under `prefix` (`?recurse`, `?keys`).
    ///
    /// With `acl.enable_key_list_policy` the caller needs [`key_list`](Self::key_list) on the prefix;
    /// without it the listing is always permitted. Either way the results must then go through
    /// [`filter_keys`](Self::filter_keys).
    pub fn key_list_gate(&self, prefix: &str, enable_key_list_policy: bool) -> Decision {
        if enable_key_list_policy {
            self.key_list(prefix)
        } else {
            Decision::Allow
        }
    }

    /// Removes from `entries` every entry whose key is not readable, keeping order; returns how many were
    /// removed (non-zero means the reply carries `X-Consul-Results-Filtered-By-ACLs`).
    pub fn filter_keys<T>(&self, entries: &mut Vec<T>, key_of: impl Fn(&T) -> &str) -> usize {
        let before = entries.len();
        entries.retain(|entry| self.key_read(key_of(entry)).is_allowed());
        before - entries.len()
    }

    /// Read sessions bound to `node`.
    pub fn session_read(&self, node: &str) -> Decision {
        self.allowed(Resource::Session, node, Access::Read)
    }

    /// Create or destroy sessions bound to `node`.
    pub fn session_write(&self, node: &str) -> Decision {
        self.allowed(Resource::Session, node, Access::Write)
    }

    /// Read a catalog node.
    pub fn node_read(&self, node: &str) -> Decision {
        self.allowed(Resource::Node, node, Access::Read)
    }

    /// Register or deregister a catalog node.
    pub fn node_write(&self, node: &str) -> Decision {
        self.allowed(Resource::Node, node, Access::Write)
    }

    /// Read a catalog service.
    pub fn service_read(&self, service: &str) -> Decision {
        self.allowed(Resource::Service, service, Access::Read)
    }

    /// Register or deregister a service.
    pub fn service_write(&self, service: &str) -> Decision {
        self.allowed(Resource::Service, service, Access::Write)
    }

    /// Read agent endpoints of the agent on `node`.
    pub fn agent_read(&self, node: &str) -> Decision {
        self.allowed(Resource::Agent, node, Access::Read)
    }

    /// Change the agent on `node` (join, leave, reload...).
    pub fn agent_write(&self, node: &str) -> Decision {
        self.allowed(Resource::Agent, node, Access::Write)
    }

    /// Read user events named `event`.
    pub fn event_read(&self, event: &str) -> Decision {
        self.allowed(Resource::Event, event, Access::Read)
    }

    /// Fire user events named `event`.
    pub fn event_write(&self, event: &str) -> Decision {
        self.allowed(Resource::Event, event, Access::Write)
    }

    /// Read the prepared query named `query`.
    pub fn query_read(&self, query: &str) -> Decision {
        self.allowed(Resource::Query, query, Access::Read)
    }

    /// Create, change or delete the prepared query named `query`.
    pub fn query_write(&self, query: &str) -> Decision {
        self.allowed(Resource::Query, query, Access::Write)
    }

    /// Read ACL tokens and policies.
    pub fn acl_read(&self) -> Decision {
        self.allowed(Resource::Acl, "", Access::Read)
    }

    /// Change ACL tokens and policies.
    pub fn acl_write(&self) -> Decision {
        self.allowed(Resource::Acl, "", Access::Write)
    }

    /// Save or restore a snapshot: requires `acl = "write"`.
    pub fn snapshot(&self) -> Decision {
        self.acl_write()
    }

    /// Read operator endpoints (e.g. the raft configuration).
    pub fn operator_read(&self) -> Decision {
        self.allowed(Resource::Operator, "", Access::Read)
    }

    /// Change operator state (e.g. remove a raft peer).
    pub fn operator_write(&self) -> Decision {
        self.allowed(Resource::Operator, "", Access::Write)
    }

    /// List gossip encryption keys.
    pub fn keyring_read(&self) -> Decision {
        self.allowed(Resource::Keyring, "", Access::Read)
    }

    /// Install, use or remove gossip encryption keys.
    pub fn keyring_write(&self) -> Decision {
        self.allowed(Resource::Keyring, "", Access::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(rules: &[&str], default_policy: DefaultPolicy) -> Authorizer {
        let parsed: Vec<PolicyRules> = rules.iter().map(|r| PolicyRules::parse(r).unwrap()).collect();
        Authorizer::new(&parsed, default_policy)
    }

    #[test]
    fn deny_in_one_policy_beats_write_in_another() {
        let a = authz(
            &[
                r#"key "a" { policy = "write" }"#,
                r#"key "a" { policy = "deny" }"#,
            ],
            DefaultPolicy::Allow,
        );
        assert_eq!(a.key_read("a"), Decision::Deny);
    }

    #[test]
    fn default_allow_never_grants_acl() {
        let a = Authorizer::from_default(DefaultPolicy::Allow);
        assert_eq!(a.acl_read(), Decision::Deny);
        assert_eq!(a.snapshot(), Decision::Deny);
        assert_eq!(a.operator_write(), Decision::Allow);
        assert_eq!(Authorizer::management().acl_write(), Decision::Allow);
    }

    #[test]
    fn filter_keys_keeps_readable_in_order() {
        let a = authz(
            &["key_prefix \"\" { policy = \"read\" }\nkey_prefix \"secret/\" { policy = \"deny\" }"],
            DefaultPolicy::Deny,
        );
        let mut keys = vec!["a", "secret/x", "b", "secret/y", "c"];
        assert_eq!(a.filter_keys(&mut keys, |k| k), 2);
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn key_list_gate_respects_flag() {
        let a = authz(&[r#"key_prefix "" { policy = "read" }"#], DefaultPolicy::Deny);
        assert_eq!(a.key_list_gate("x/", false), Decision::Allow);
        assert_eq!(a.key_list_gate("x/", true), Decision::Deny);
    }
}
