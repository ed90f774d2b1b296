//! The small vocabulary every other module speaks: resources, rule levels, required access, decisions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An ACL-covered resource kind.
///
/// The first seven are *labelled*: their rules name a segment (`key "foo"`, `node_prefix "web-"`) and
/// decisions take a name. The last three are *unlabelled*: one rule covers the whole resource
/// (`acl = "write"`) and decisions take no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// KV entries, by key (`key`, `key_prefix`).
    Key,
    /// Sessions, by the node they are bound to (`session`, `session_prefix`).
    Session,
    /// Catalog nodes, by node name (`node`, `node_prefix`).
    Node,
    /// Catalog services, by service name (`service`, `service_prefix`).
    Service,
    /// Agent endpoints, by the agent's node name (`agent`, `agent_prefix`).
    Agent,
    /// User events, by event name (`event`, `event_prefix`).
    Event,
    /// Prepared queries, by query name (`query`, `query_prefix`).
    Query,
    /// The ACL system itself (`acl`); also gates snapshot save and restore.
    Acl,
    /// Cluster operator endpoints such as `operator raft` (`operator`).
    Operator,
    /// The gossip encryption keyring (`keyring`).
    Keyring,
}

impl Resource {
    /// Every resource kind, labelled ones first.
    pub const ALL: [Resource; 10] = [
        Resource::Key,
        Resource::Session,
        Resource::Node,
        Resource::Service,
        Resource::Agent,
        Resource::Event,
        Resource::Query,
        Resource::Acl,
        Resource::Operator,
        Resource::Keyring,
    ];

    /// The name used in rules for exact matches (`key`, `acl`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Session => "session",
            Resource::Node => "node",
            Resource::Service => "service",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Query => "query",
            Resource::Acl => "acl",
            Resource::Operator => "operator",
            Resource::Keyring => "keyring",
        }
    }

    /// Whether rules for this resource carry a segment label and have a `_prefix` form.
    pub fn is_labelled(self) -> bool {
        self.labelled_index().is_some()
    }

    /// Parses a resource name as written in rules and in the data tables (`key`, `operator`...).
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Position among the labelled resources, used to index per-resource arrays.
    pub(crate) fn labelled_index(self) -> Option<usize> {
        match self {
            Resource::Key => Some(0),
            Resource::Session => Some(1),
            Resource::Node => Some(2),
            Resource::Service => Some(3),
            Resource::Agent => Some(4),
            Resource::Event => Some(5),
            Resource::Query => Some(6),
            Resource::Acl | Resource::Operator | Resource::Keyring => None,
        }
    }
}

/// Number of labelled resource kinds (the length of per-resource arrays).
pub(crate) const LABELLED_COUNT: usize = 7;

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The disposition a rule grants, ordered by merge precedence: `Read < List < Write < Deny`.
///
/// When several policies (or one policy twice) give a rule for the same resource, segment and match kind,
/// the greater level wins, so `deny` anywhere beats `write` elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Grants read only; notably *not* list.
    Read,
    /// Grants list and read. Valid for `key` and `key_prefix` rules only.
    List,
    /// Grants write, list and read.
    Write,
    /// Denies everything, and wins every merge.
    Deny,
}

impl AccessLevel {
    /// The rule spelling (`read`, `list`, `write`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Read => "read",
            AccessLevel::List => "list",
            AccessLevel::Write => "write",
            AccessLevel::Deny => "deny",
        }
    }

    /// Parses the rule spelling; anything else (including the empty string) is `None`.
    pub fn from_name(name: &str) -> Option<AccessLevel> {
        match name {
            "read" => Some(AccessLevel::Read),
            "list" => Some(AccessLevel::List),
            "write" => Some(AccessLevel::Write),
            "deny" => Some(AccessLevel::Deny),
            _ => None,
        }
    }

    /// Whether a rule at this level grants `required`.
    pub fn grants(self, required: Access) -> bool {
        match self {
            AccessLevel::Write => true,
            AccessLevel::List => matches!(required, Access::Read | Access::List),
            AccessLevel::Read => required == Access::Read,
            AccessLevel::Deny => false,
        }
    }

    /// The decision a rule at this level gives for `required`.
    pub(crate) fn enforce(self, required: Access) -> Decision {
        if self.grants(required) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The access an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Reading one object.
    Read,
    /// Listing the objects under a prefix (KV `?recurse`/`?keys` with `enable_key_list_policy`).
    List,
    /// Creating, changing or deleting.
    Write,
}

impl Access {
    /// The spelling used in the data tables (`read`, `list`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
        }
    }

    /// Parses `read`, `list` or `write`.
    pub fn from_name(name: &str) -> Option<Access> {
        match name {
            "read" => Some(Access::Read),
            "list" => Some(Access::List),
            "write" => Some(Access::Write),
            _ => None,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to "may this token do this?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Decision {
    /// The operation is permitted.
    Allow,
    /// The operation is refused (HTTP 403 "Permission denied").
    Deny,
}

impl Decision {
    /// `true` for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// `acl.default_policy`: what happens when no rule of the token covers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPolicy {
    /// Unmatched requests are allowed (ACLs act as a denylist). Consul's default.
    ///
    /// This never grants `acl` read or write (nor snapshots): those always need an explicit rule.
    #[default]
    Allow,
    /// Unmatched requests are denied (ACLs act as an allowlist).
    Deny,
}

impl DefaultPolicy {
    /// The configuration spelling (`allow`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Allow => "allow",
            DefaultPolicy::Deny => "deny",
        }
    }

    /// Parses `allow` or `deny`.
    pub fn from_name(name: &str) -> Option<DefaultPolicy> {
        match name {
            "allow" => Some(DefaultPolicy::Allow),
            "deny" => Some(DefaultPolicy::Deny),
            _ => None,
        }
    }

    pub(crate) fn decision(self) -> Decision {
        match self {
            DefaultPolicy::Allow => Decision::Allow,
            DefaultPolicy::Deny => Decision::Deny,
        }
    }
}

/// `acl.down_policy`: what the [`Resolver`](crate::Resolver) does when its
/// [`TokenSource`](crate::TokenSource) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum DownPolicy {
    /// Permit everything (except ACL management, which no fallback grants).
    #[serde(rename = "allow")]
    Allow,
    /// Deny everything.
    #[serde(rename = "deny")]
    Deny,
    /// Serve cached tokens and policies past their TTL; an uncached token gets the default policy.
    /// Consul's default.
    #[default]
    #[serde(rename = "extend-cache")]
    ExtendCache,
    /// Like `ExtendCache`, and additionally serve an expired cache entry at once without asking the source,
    /// reporting that a refresh is due so the caller can refresh in the background.
    #[serde(rename = "async-cache")]
    AsyncCache,
}

impl DownPolicy {
    /// The configuration spelling (`allow`, `deny`, `extend-cache`, `async-cache`).
    pub fn as_str(self) -> &'static str {
        match self {
            DownPolicy::Allow => "allow",
            DownPolicy::Deny => "deny",
            DownPolicy::ExtendCache => "extend-cache",
            DownPolicy::AsyncCache => "async-cache",
        }
    }

    /// Parses the configuration spelling.
    pub fn from_name(name: &str) -> Option<DownPolicy> {
        match name {
            "allow" => Some(DownPolicy::Allow),
            "deny" => Some(DownPolicy::Deny),
            "extend-cache" => Some(DownPolicy::ExtendCache),
            "async-cache" => Some(DownPolicy::AsyncCache),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_order_is_deny_write_list_read() {
        assert!(AccessLevel::Deny > AccessLevel::Write);
        assert!(AccessLevel::Write > AccessLevel::List);
        assert!(AccessLevel::List > AccessLevel::Read);
    }

    #[test]
    fn grants_matrix() {
        use Access::*;
        assert!(AccessLevel::Write.grants(Write) && AccessLevel::Write.grants(List));
        assert!(AccessLevel::List.grants(List) && AccessLevel::List.grants(Read));
        assert!(!AccessLevel::List.grants(Write));
        assert!(AccessLevel::Read.grants(Read) && !AccessLevel::Read.grants(List));
        assert!(!AccessLevel::Deny.grants(Read));
    }

    #[test]
    fn names_round_trip() {
        for r in Resource::ALL {
            assert_eq!(Resource::from_name(r.as_str()), Some(r));
        }
        for p in [
            DownPolicy::Allow,
            DownPolicy::Deny,
            DownPolicy::ExtendCache,
            DownPolicy::AsyncCache,
        ] {
            assert_eq!(DownPolicy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(AccessLevel::from_name(""), None);
    }
}
