//! What a token or role can carry besides policy links: links to roles, service and node identities, and
//! templated policies. Each identity stands for a policy Consul synthesizes from a name.

use serde::{Deserialize, Serialize};

use crate::templated::{NODE_TEMPLATE, SERVICE_TEMPLATE, TemplateError, render_template};
use crate::token::Policy;

/// A token's link to a role, by ID or by name (names are resolved to IDs on write; either may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoleLink {
    /// The role ID; empty when the link is by name only.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The role name; empty when the link is by ID only.
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// A service identity: the rights a service instance (and its sidecar proxy) needs, granted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceIdentity {
    /// The service the identity speaks for.
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    /// Datacenters where it applies; empty means everywhere.
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A node identity: the rights an agent needs to register its node, granted in one datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node the identity speaks for.
    #[serde(rename = "NodeName", default)]
    pub node_name: String,
    /// The one datacenter where it applies.
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
}

/// The variables a templated policy is filled with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateVariables {
    /// The name the template is instantiated for (a service or node name).
    #[serde(rename = "name", alias = "Name", default)]
    pub name: String,
}

/// A built-in policy template (`builtin/service`, `builtin/node`, `builtin/dns`, ...) instantiated with
/// variables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplatedPolicy {
    /// The template, e.g. `builtin/service`.
    #[serde(rename = "TemplateName")]
    pub template_name: String,
    /// Its variables; absent for templates that take none.
    #[serde(
        rename = "TemplateVariables",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub template_variables: Option<TemplateVariables>,
    /// Datacenters where it applies; empty means everywhere.
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// The longest name a service or node identity may carry.
pub const IDENTITY_NAME_MAX_LENGTH: usize = 256;

/// Whether `name` may name a service or node identity: 1 to 256 lowercase letters, digits, `-` and `_`,
/// starting and ending with a letter or digit. Stricter than catalog registration on purpose: the name is
/// pasted into rules text.
pub fn is_valid_identity_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= IDENTITY_NAME_MAX_LENGTH && edge(first) && edge(last) && bytes.iter().all(inner)
        }
        _ => false,
    }
}

/// What carries an identity, for error messages ("... on this token", "... on this role").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityOwner {
    /// A token.
    Token,
    /// A role.
    Role,
}

impl std::fmt::Display for IdentityOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentityOwner::Token => "token",
            IdentityOwner::Role => "role",
        })
    }
}

/// Why a service identity, node identity or templated policy on a token or role is refused. The
/// messages are Consul's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A service identity with an empty `ServiceName`.
    #[error("Service identity is missing the service name field on this {owner}")]
    MissingServiceName {
        /// What carries it.
        owner: IdentityOwner,
    },
    /// A service identity whose name fails [`is_valid_identity_name`].
    #[error(
        "Service identity {name:?} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    )]
    InvalidServiceName {
        /// The refused name.
        name: String,
    },
    /// A local token's service identity lists datacenters (a local token lives in one datacenter).
    #[error("Service identity {name:?} cannot specify a list of datacenters on a local token")]
    DatacentersOnLocalToken {
        /// The service identity's name.
        name: String,
    },
    /// A node identity with an empty `NodeName`.
    #[error("Node identity is missing the node name field on this {owner}")]
    MissingNodeName {
        /// What carries it.
        owner: IdentityOwner,
    },
    /// A node identity with an empty `Datacenter`.
    #[error("Node identity is missing the datacenter field on this {owner}")]
    MissingNodeDatacenter {
        /// What carries it.
        owner: IdentityOwner,
    },
    /// A node identity whose name fails [`is_valid_identity_name`] (Consul's message does not name it).
    #[error(
        "Node identity has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    )]
    InvalidNodeName {
        /// The refused name.
        name: String,
    },
    /// A templated policy that does not validate.
    #[error("encountered error validating templated policy: {0}")]
    TemplatedPolicy(#[from] TemplateError),
}

impl RoleLink {
    /// A link by role ID.
    pub fn by_id(id: impl Into<String>) -> Self {
        RoleLink {
            id: id.into(),
            name: String::new(),
        }
    }

    /// A link by role name.
    pub fn by_name(name: impl Into<String>) -> Self {
        RoleLink {
            id: String::new(),
            name: name.into(),
        }
    }
}

impl ServiceIdentity {
    /// A service identity valid in every datacenter.
    pub fn new(service_name: impl Into<String>) -> Self {
        ServiceIdentity {
            service_name: service_name.into(),
            datacenters: Vec::new(),
        }
    }

    /// Checks the name as Consul does when a token or role is written.
    pub fn validate(&self, owner: IdentityOwner) -> Result<(), IdentityError> {
        if self.service_name.is_empty() {
            return Err(IdentityError::MissingServiceName { owner });
        }
        if !is_valid_identity_name(&self.service_name) {
            return Err(IdentityError::InvalidServiceName {
                name: self.service_name.clone(),
            });
        }
        Ok(())
    }

    /// Whether the identity is in force in `datacenter`.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|dc| dc == datacenter)
    }

    /// The rules the identity stands for: write on the service and its `-sidecar-proxy`, read on every
    /// service and node. Only meaningful for a name that passed [`ServiceIdentity::validate`].
    pub fn rules(&self) -> String {
        render_template(SERVICE_TEMPLATE, &self.service_name)
    }

    /// The policy Consul synthesizes for the identity, scoped to its datacenters.
    pub fn synthesized_policy(&self) -> Policy {
        synthetic_policy(
            self.rules(),
            format!("synthetic policy for service identity {:?}", self.service_name),
            self.datacenters.clone(),
        )
    }
}

impl NodeIdentity {
    /// A node identity for `node_name` in `datacenter`.
    pub fn new(node_name: impl Into<String>, datacenter: impl Into<String>) -> Self {
        NodeIdentity {
            node_name: node_name.into(),
            datacenter: datacenter.into(),
        }
    }

    /// Checks the name and datacenter as Consul does when a token or role is written.
    pub fn validate(&self, owner: IdentityOwner) -> Result<(), IdentityError> {
        if self.node_name.is_empty() {
            return Err(IdentityError::MissingNodeName { owner });
        }
        if self.datacenter.is_empty() {
            return Err(IdentityError::MissingNodeDatacenter { owner });
        }
        if !is_valid_identity_name(&self.node_name) {
            return Err(IdentityError::InvalidNodeName {
                name: self.node_name.clone(),
            });
        }
        Ok(())
    }

    /// Whether the identity is in force in `datacenter`: only in its own.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenter == datacenter
    }

    /// The rules the identity stands for: write on the node, read on every service. Only meaningful for
    /// a name that passed [`NodeIdentity::validate`].
    pub fn rules(&self) -> String {
        render_template(NODE_TEMPLATE, &self.node_name)
    }

    /// The policy Consul synthesizes for the identity, scoped to exactly its datacenter.
    pub fn synthesized_policy(&self) -> Policy {
        synthetic_policy(
            self.rules(),
            format!("synthetic policy for node identity {:?}", self.node_name),
            vec![self.datacenter.clone()],
        )
    }
}

impl TemplateVariables {
    /// Variables naming `name`.
    pub fn named(name: impl Into<String>) -> Self {
        TemplateVariables { name: name.into() }
    }
}

impl TemplatedPolicy {
    /// `template_name` instantiated for `name`, in every datacenter.
    pub fn named(template_name: impl Into<String>, name: impl Into<String>) -> Self {
        TemplatedPolicy {
            template_name: template_name.into(),
            template_variables: Some(TemplateVariables::named(name)),
            datacenters: Vec::new(),
        }
    }

    /// A template that takes no variables (e.g. `builtin/dns`), in every datacenter.
    pub fn unnamed(template_name: impl Into<String>) -> Self {
        TemplatedPolicy {
            template_name: template_name.into(),
            template_variables: None,
            datacenters: Vec::new(),
        }
    }

    /// Whether the synthesized policy is in force in `datacenter`.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|dc| dc == datacenter)
    }
}

/// Consul names a synthesized policy after its rules: the ID is what Go's `fnv.New128a().Sum(rules)`
/// prints, which appends the digest of *nothing* (the FNV-1a 128 offset basis) to the rules bytes rather
/// than hashing them. Reproduced so that IDs match Consul's byte for byte.
pub(crate) fn synthetic_policy_id(rules: &str) -> String {
    const FNV128A_EMPTY_DIGEST: &str = "6c62272e07bb014262b821756295c58d";
    let mut id = String::with_capacity(rules.len() * 2 + FNV128A_EMPTY_DIGEST.len());
    for byte in rules.as_bytes() {
        id.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        id.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    id.push_str(FNV128A_EMPTY_DIGEST);
    id
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn synthetic_policy(rules: String, description: String, datacenters: Vec<String>) -> Policy {
    let id = synthetic_policy_id(&rules);
    Policy {
        name: format!("synthetic-policy-{id}"),
        id,
        description,
        rules,
        datacenters,
        create_index: 0,
        modify_index: 0,
    }
}
