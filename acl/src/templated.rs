//! Consul's built-in policy templates (`builtin/service`, `builtin/node`, `builtin/dns`, ...): the catalog
//! `GET /v1/acl/templated-policies` shows, validation of a [`TemplatedPolicy`]'s variables, and the policy
//! it synthesizes (also what `POST /v1/acl/templated-policy/preview/:name` answers).

use serde::Serialize;

use crate::identity::{TemplateVariables, TemplatedPolicy, is_valid_identity_name, synthetic_policy};
use crate::token::Policy;

/// Name of the template granting a service (and its sidecar proxy) its rights.
pub const TEMPLATE_SERVICE: &str = "builtin/service";
/// Name of the template granting an agent the rights to register its node.
pub const TEMPLATE_NODE: &str = "builtin/node";
/// Name of the template granting the DNS interface read access to the catalog.
pub const TEMPLATE_DNS: &str = "builtin/dns";
/// Name of the template for a Nomad server's Consul integration.
pub const TEMPLATE_NOMAD_SERVER: &str = "builtin/nomad-server";
/// Name of the template for an API gateway.
pub const TEMPLATE_API_GATEWAY: &str = "builtin/api-gateway";
/// Name of the template for a Nomad client's Consul integration.
pub const TEMPLATE_NOMAD_CLIENT: &str = "builtin/nomad-client";

/// Where a template's `Name` variable goes (Go template syntax, shown as is by the catalog endpoints).
const NAME_PLACEHOLDER: &str = "{{.Name}}";

/// The JSON schema of templates that need a non-empty `name`, as the catalog shows it.
const NAME_REQUIRED_SCHEMA: &str = "{\n\t\"type\": \"object\",\n\t\"properties\": {\n\t\t\"name\": { \"type\": \"string\", \"$ref\": \"#/definitions/min-length-one\" }\n\t},\n\t\"required\": [\"name\"],\n\t\"definitions\": {\n\t\t\"min-length-one\": {\n\t\t\t\t\"type\": \"string\",\n\t\t\t\t\"minLength\": 1\n\t\t}\n\t}\n}";

/// The schema of templates that take no variables: empty, as Consul shows it.
const NO_VARIABLES_SCHEMA: &str = "";

pub(crate) const SERVICE_TEMPLATE: &str = "\nservice \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice \"{{.Name}}-sidecar-proxy\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}";

pub(crate) const NODE_TEMPLATE: &str =
    "\nnode \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}";

const DNS_TEMPLATE: &str = "\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nquery_prefix \"\" {\n\tpolicy = \"read\"\n}";

const NOMAD_SERVER_TEMPLATE: &str = "\nacl = \"write\"\nagent_prefix \"\" {\n  policy = \"read\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\nservice_prefix \"\" {\n  policy = \"write\"\n}";

const API_GATEWAY_TEMPLATE: &str = "mesh = \"read\"\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nservice \"{{.Name}}\" {\n\tpolicy = \"write\"\n}";

const NOMAD_CLIENT_TEMPLATE: &str = "agent \"{{.Name}}\" {\n  policy = \"read\"\n}\nnode \"{{.Name}}\" {\n  policy = \"write\"\n}\nservice_prefix \"\" {\n  policy = \"write\"\n}\n";

/// One built-in template. Serialises as an entry of `GET /v1/acl/templated-policies` (`TemplateName`,
/// `Schema`, `Template`, `Description`; the ID stays hidden as in Consul).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TemplateDefinition {
    /// `builtin/...`.
    #[serde(rename = "TemplateName")]
    pub name: &'static str,
    /// Consul's fixed ID for the template (never shown by the API).
    #[serde(skip)]
    pub id: &'static str,
    /// JSON schema of the variables; empty when the template takes none.
    #[serde(rename = "Schema")]
    pub schema: &'static str,
    /// Rules text with `{{.Name}}` where the `Name` variable goes.
    #[serde(rename = "Template")]
    pub template: &'static str,
    /// What the template grants.
    #[serde(rename = "Description")]
    pub description: &'static str,
}

impl TemplateDefinition {
    /// Whether the template needs a `Name` variable.
    pub fn requires_name(&self) -> bool {
        !self.schema.is_empty()
    }
}

static BUILTIN_TEMPLATES: [TemplateDefinition; 6] = [
    TemplateDefinition {
        name: TEMPLATE_SERVICE,
        id: "00000000-0000-0000-0000-000000000003",
        schema: NAME_REQUIRED_SCHEMA,
        template: SERVICE_TEMPLATE,
        description: "Gives the token or role permissions to register a service and discover services in the Consul catalog. It also gives the specified service's sidecar proxy the permission to discover and route traffic to other services.",
    },
    TemplateDefinition {
        name: TEMPLATE_NODE,
        id: "00000000-0000-0000-0000-000000000004",
        schema: NAME_REQUIRED_SCHEMA,
        template: NODE_TEMPLATE,
        description: "Gives the token or role permissions for a register an agent/node into the catalog. A node is typically a consul agent but can also be a physical server, cloud instance or a container.",
    },
    TemplateDefinition {
        name: TEMPLATE_DNS,
        id: "00000000-0000-0000-0000-000000000005",
        schema: NO_VARIABLES_SCHEMA,
        template: DNS_TEMPLATE,
        description: "Gives the token or role permissions for the Consul DNS to query services in the network.",
    },
    TemplateDefinition {
        name: TEMPLATE_NOMAD_SERVER,
        id: "00000000-0000-0000-0000-000000000006",
        schema: NO_VARIABLES_SCHEMA,
        template: NOMAD_SERVER_TEMPLATE,
        description: "Gives the token or role permissions required for integration with a nomad server.",
    },
    TemplateDefinition {
        name: TEMPLATE_API_GATEWAY,
        id: "00000000-0000-0000-0000-000000000008",
        schema: NAME_REQUIRED_SCHEMA,
        template: API_GATEWAY_TEMPLATE,
        description: "Gives the token or role permissions for a Consul api gateway",
    },
    TemplateDefinition {
        name: TEMPLATE_NOMAD_CLIENT,
        id: "00000000-0000-0000-0000-000000000009",
        schema: NO_VARIABLES_SCHEMA,
        template: NOMAD_CLIENT_TEMPLATE,
        description: "Gives the token or role permissions required for integration with a nomad client.",
    },
];

/// Every built-in template, in a fixed order.
pub fn builtin_templates() -> &'static [TemplateDefinition] {
    &BUILTIN_TEMPLATES
}

/// The built-in template named `name`, if there is one.
pub fn builtin_template(name: &str) -> Option<&'static TemplateDefinition> {
    BUILTIN_TEMPLATES.iter().find(|t| t.name == name)
}

/// Why a templated policy is refused. Messages are Consul's, except [`TemplateError::UnsafeName`],
/// a check Consul lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// No built-in template bears this name.
    #[error("acl templated policy does not exist: {name}")]
    UnknownTemplate {
        /// The requested template name.
        name: String,
    },
    /// The template needs variables and none were given (JSON `null`).
    #[error("Invalid type. Expected: object, given: null")]
    MissingVariables {
        /// The template.
        template: String,
    },
    /// The template needs a non-empty `Name` variable.
    #[error("name is required")]
    MissingName {
        /// The template.
        template: String,
    },
    /// `builtin/service` instantiated with a name that is not a valid service identity name.
    #[error(
        "service identity {name:?} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    )]
    InvalidServiceName {
        /// The refused name.
        name: String,
    },
    /// `builtin/node` instantiated with a name that is not a valid node identity name. (Consul's message
    /// has the doubled space.)
    #[error(
        "node identity {name:?}  has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
    )]
    InvalidNodeName {
        /// The refused name.
        name: String,
    },
    /// A name that would break out of the quoted string it is pasted into (quotes, backslashes, control
    /// characters, `${`/`%{`). Consul only checks service and node names; the others would let a name
    /// smuggle rules in.
    #[error("templated policy {template} cannot be instantiated with name {name:?}")]
    UnsafeName {
        /// The template.
        template: String,
        /// The refused name.
        name: String,
    },
}

/// Pastes `name` where the template says `{{.Name}}`. The caller has validated the name.
pub(crate) fn render_template(template: &str, name: &str) -> String {
    template.replace(NAME_PLACEHOLDER, name)
}

fn is_safe_in_quoted_string(name: &str) -> bool {
    !name.chars().any(|c| c == '"' || c == '\\' || c.is_control())
        && !name.contains("${")
        && !name.contains("%{")
}

fn validate_variables(
    definition: &'static TemplateDefinition,
    variables: Option<&TemplateVariables>,
) -> Result<(), TemplateError> {
    let template = || definition.name.to_owned();
    let name = variables.map(|v| v.name.as_str());
    if let Some(name) = name
        && !is_safe_in_quoted_string(name)
    {
        return Err(TemplateError::UnsafeName {
            template: template(),
            name: name.to_owned(),
        });
    }
    if !definition.requires_name() {
        return Ok(());
    }
    // Consul checks identity names before the schema, so an empty service name reads as invalid, not
    // missing.
    if let Some(name) = name {
        if definition.name == TEMPLATE_SERVICE && !is_valid_identity_name(name) {
            return Err(TemplateError::InvalidServiceName {
                name: name.to_owned(),
            });
        }
        if definition.name == TEMPLATE_NODE && !is_valid_identity_name(name) {
            return Err(TemplateError::InvalidNodeName {
                name: name.to_owned(),
            });
        }
    }
    match name {
        None => Err(TemplateError::MissingVariables { template: template() }),
        Some("") => Err(TemplateError::MissingName { template: template() }),
        Some(_) => Ok(()),
    }
}

fn instantiate(
    template_name: &str,
    variables: Option<&TemplateVariables>,
    datacenters: Vec<String>,
) -> Result<Policy, TemplateError> {
    let definition = builtin_template(template_name).ok_or_else(|| TemplateError::UnknownTemplate {
        name: template_name.to_owned(),
    })?;
    validate_variables(definition, variables)?;
    let name = variables.map_or("", |v| v.name.as_str());
    Ok(synthetic_policy(
        render_template(definition.template, name),
        format!("synthetic policy generated from templated policy: {template_name}"),
        datacenters,
    ))
}

impl TemplatedPolicy {
    /// Checks that the template exists and that its variables fit its schema (and, for
    /// `builtin/service` and `builtin/node`, the identity name rules), as Consul does when a token or
    /// role is written. Returns the template.
    pub fn validate(&self) -> Result<&'static TemplateDefinition, TemplateError> {
        let definition =
            builtin_template(&self.template_name).ok_or_else(|| TemplateError::UnknownTemplate {
                name: self.template_name.clone(),
            })?;
        validate_variables(definition, self.template_variables.as_ref())?;
        Ok(definition)
    }

    /// The rules the template synthesizes with these variables, after [`TemplatedPolicy::validate`].
    pub fn rules(&self) -> Result<String, TemplateError> {
        let definition = self.validate()?;
        let name = self.template_variables.as_ref().map_or("", |v| v.name.as_str());
        Ok(render_template(definition.template, name))
    }

    /// The policy the template synthesizes with these variables, scoped to the datacenters given.
    pub fn synthesized_policy(&self) -> Result<Policy, TemplateError> {
        instantiate(
            &self.template_name,
            self.template_variables.as_ref(),
            self.datacenters.clone(),
        )
    }
}

/// What `POST /v1/acl/templated-policy/preview/:name` answers: the policy `template_name` synthesizes
/// with `variables` (the request body), valid everywhere.
pub fn preview(template_name: &str, variables: Option<TemplateVariables>) -> Result<Policy, TemplateError> {
    instantiate(template_name, variables.as_ref(), Vec::new())
}
