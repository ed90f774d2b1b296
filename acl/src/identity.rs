//! What a token or role can carry besides policy links: links to roles, service and node identities, and
//! templated policies. Each identity stands for a policy Consul synthesizes from a name.

use serde::{Deserialize, Serialize};

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
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    /// Datacenters where it applies; empty means everywhere.
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A node identity: the rights an agent needs to register its node, granted in one datacenter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node the identity speaks for.
    #[serde(rename = "NodeName")]
    pub node_name: String,
    /// The one datacenter where it applies.
    #[serde(rename = "Datacenter")]
    pub datacenter: String,
}

/// The variables a templated policy is filled with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateVariables {
    /// The name the template is instantiated for (a service or node name).
    #[serde(rename = "Name", default)]
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
    #[serde(rename = "TemplateVariables", default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<TemplateVariables>,
    /// Datacenters where it applies; empty means everywhere.
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}
