//! Binding rules (`/v1/acl/binding-rule`) and the binder: which rules a verified [`Identity`] matches, and
//! the service/node identities, roles, policies and templated policies the new token gets.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::jwt::{Identity, JwtConfig};
use super::selector::{Selector, SelectorError};
use crate::PolicyLink;
use crate::identity::{NodeIdentity, RoleLink, ServiceIdentity, TemplateVariables, TemplatedPolicy};

/// What Consul answers (HTTP 403) to a login whose identity matched no binding rule, or whose bindings
/// are empty: the node must refuse to mint a token that grants nothing.
pub const PERMISSION_DENIED: &str = "Permission denied";

/// What a matching rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindType {
    /// A service identity named by the bind name.
    Service,
    /// A node identity in the caller's datacenter.
    Node,
    /// A link to the role with that name (when it exists).
    Role,
    /// A link to the policy with that name (when it exists).
    Policy,
    /// A built-in policy template (the bind name) filled with `BindVars`.
    TemplatedPolicy,
}

impl BindType {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BindType::Service => "service",
            BindType::Node => "node",
            BindType::Role => "role",
            BindType::Policy => "policy",
            BindType::TemplatedPolicy => "templated-policy",
        }
    }
}

impl fmt::Display for BindType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `BindType` Consul does not have (or an empty one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindTypeError {
    /// Empty.
    #[error("Invalid Binding Rule: no BindType is set")]
    Missing,
    /// Not one of the five.
    #[error("Invalid Binding Rule: unknown BindType {0:?}")]
    Unknown(String),
}

impl FromStr for BindType {
    type Err = BindTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "service" => BindType::Service,
            "node" => BindType::Node,
            "role" => BindType::Role,
            "policy" => BindType::Policy,
            "templated-policy" => BindType::TemplatedPolicy,
            "" => return Err(BindTypeError::Missing),
            other => return Err(BindTypeError::Unknown(other.to_owned())),
        })
    }
}

impl Serialize for BindType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BindType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An ACL binding rule, with Consul's JSON names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRule {
    /// The rule's UUID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Free text.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// The auth method whose logins this rule applies to.
    #[serde(rename = "AuthMethod", default)]
    pub auth_method: String,
    /// A go-bexpr selector over `value.<name>` and `list.<name>`; empty matches every login.
    #[serde(rename = "Selector", default)]
    pub selector: String,
    /// What the rule grants.
    #[serde(rename = "BindType")]
    pub bind_type: BindType,
    /// The name granted, with `${value.<name>}` filled from the login; for `templated-policy`, the
    /// template's name.
    #[serde(rename = "BindName", default)]
    pub bind_name: String,
    /// For `templated-policy`: the template's variables (`Name` may use `${value.<name>}`).
    #[serde(rename = "BindVars", default, skip_serializing_if = "Option::is_none")]
    pub bind_vars: Option<TemplateVariables>,
    /// Raft index of creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// Why a binding rule may not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingRuleError {
    /// `AuthMethod` is empty.
    #[error("Invalid Binding Rule: no AuthMethod is set")]
    MissingAuthMethod,
    /// The selector does not parse or names fields no login has.
    #[error("invalid Binding Rule: Selector is invalid: {0}")]
    InvalidSelector(#[from] SelectorError),
    /// `BindName` is empty.
    #[error("Invalid Binding Rule: no BindName is set")]
    MissingBindName,
    /// With sample values filled in, the bind name (or variables) is not valid for the bind type.
    #[error("Invalid Binding Rule: invalid BindName: failed to validate bindType {bind_type:?}: {source}")]
    InvalidBindName {
        /// The rule's bind type, as Consul spells it.
        bind_type: &'static str,
        /// What was wrong.
        source: BindError,
    },
}

/// Why a matching rule could not be turned into a binding (the login fails), or why a rule's bind name
/// is invalid on write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// `${...}` that does not close, or names no variable of the method.
    #[error("error interpreting template: {0}")]
    Template(#[from] InterpolationError),
    /// The filled-in name is not a valid name for the bind type.
    #[error("invalid bind name: {0:?}")]
    InvalidBindName(String),
    /// A variable's value had uppercase letters; Consul lowercases them and then refuses, since the
    /// names these bind to are lowercase.
    #[error(
        "invalid bind name: the login's values have uppercase letters (filled in as {0:?}); bind names must be lowercase"
    )]
    UppercaseValue(String),
    /// A `templated-policy` bind name that is no built-in template.
    #[error("Bind name for templated-policy bind type does not match existing template name: {0}")]
    UnknownTemplate(String),
    /// The template's variables do not fit it.
    #[error("templated policy failed validation: {0}")]
    TemplateVariables(String),
}

/// A `${...}` problem in a bind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterpolationError {
    /// `${` without `}`.
    #[error("unterminated \"${{\" at position {0}")]
    Unterminated(usize),
    /// A variable the auth method does not define.
    #[error("unknown variable accessed: {0}")]
    UnknownVariable(String),
}

/// Fills `${name}` from `vars` (Consul's HIL subset for bind names; `$${` is a literal `${`). With
/// `lowercase`, values are lowercased as they are filled in.
pub fn interpolate(
    template: &str,
    vars: &BTreeMap<String, String>,
    lowercase: bool,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            offset += start + 2;
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or(InterpolationError::Unterminated(offset + start))?;
        let name = after[..end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| InterpolationError::UnknownVariable(name.to_owned()))?;
        if lowercase {
            out.push_str(&value.to_lowercase());
        } else {
            out.push_str(value);
        }
        rest = &after[end + 1..];
        offset += start + 2 + end + 1;
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Consul's rule for policy names: `[A-Za-z0-9-_]+(/[A-Za-z0-9-_]*)?`, at most 128 bytes, not under
/// the reserved `builtin/` prefix.
pub fn is_valid_policy_name(name: &str) -> bool {
    if !(1..=128).contains(&name.len()) || name.starts_with("builtin/") {
        return false;
    }
    let (head, tail) = name.split_once('/').unwrap_or((name, ""));
    !head.is_empty() && head.bytes().all(is_name_char) && tail.bytes().all(is_name_char)
}

/// Fills a bind name, lowercasing values as Consul does and refusing when that changed anything.
fn compute_name(template: &str, vars: &BTreeMap<String, String>) -> Result<String, BindError> {
    let computed = interpolate(template, vars, true)?;
    if template.contains("${") {
        let original = interpolate(template, vars, false)?;
        if original != computed {
            return Err(BindError::UppercaseValue(original));
        }
    }
    Ok(computed)
}

fn checked_name(
    template: &str,
    vars: &BTreeMap<String, String>,
    valid: fn(&str) -> bool,
) -> Result<String, BindError> {
    let name = compute_name(template, vars)?;
    if valid(&name) {
        Ok(name)
    } else {
        Err(BindError::InvalidBindName(name))
    }
}

fn templated_policy(
    template: &str,
    bind_vars: Option<&TemplateVariables>,
    vars: &BTreeMap<String, String>,
) -> Result<TemplatedPolicy, BindError> {
    let Some(definition) = crate::templated::builtin_template(template) else {
        return Err(BindError::UnknownTemplate(template.to_owned()));
    };
    let needs_name = definition.requires_name();
    let variables = match bind_vars {
        None => None,
        Some(bind_vars) => Some(TemplateVariables {
            name: if bind_vars.name.is_empty() {
                String::new()
            } else {
                compute_name(&bind_vars.name, vars)?
            },
        }),
    };
    let name = variables.as_ref().map_or("", |v| v.name.as_str());
    if needs_name && name.is_empty() {
        return Err(BindError::TemplateVariables(format!(
            "{template} requires a Name variable"
        )));
    }
    let identity_template = matches!(
        template,
        "builtin/service" | "builtin/node" | "builtin/api-gateway"
    );
    if identity_template && !crate::identity::is_valid_identity_name(name) {
        return Err(BindError::TemplateVariables(format!(
            "{name:?} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
        )));
    }
    Ok(TemplatedPolicy {
        template_name: template.to_owned(),
        template_variables: variables,
        datacenters: Vec::new(),
    })
}

fn name_rule(bind_type: BindType) -> fn(&str) -> bool {
    match bind_type {
        BindType::Service => crate::identity::is_valid_identity_name,
        BindType::Node => crate::identity::is_valid_identity_name,
        BindType::Role => crate::role::is_valid_role_name,
        BindType::Policy | BindType::TemplatedPolicy => is_valid_policy_name,
    }
}

/// Variables referenced by `${...}` in a template, each mapped to Consul's sample value `fake`.
fn sample_vars(templates: &[&str]) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for template in templates {
        let mut rest = *template;
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else { break };
            vars.insert(after[..end].trim().to_owned(), "fake".to_owned());
            rest = &after[end + 1..];
        }
    }
    vars
}

impl BindingRule {
    /// The rule's selector, parsed.
    pub fn parsed_selector(&self) -> Result<Selector, SelectorError> {
        Selector::parse(&self.selector)
    }

    /// Checks the rule without knowing its auth method: the auth method is named, the selector parses
    /// against the fields a `jwt` login has, and the bind name with every `${...}` it uses filled with a
    /// sample value is valid for the bind type.
    pub fn validate(&self) -> Result<(), BindingRuleError> {
        let templates: Vec<&str> = std::iter::once(self.bind_name.as_str())
            .chain(self.bind_vars.as_ref().map(|v| v.name.as_str()))
            .collect();
        self.validate_with_vars(&sample_vars(&templates))
    }

    /// [`BindingRule::validate`] against its auth method's configuration, as Consul does on write: the
    /// bind name may only use the variables the method defines (`value.<ClaimMappings target>`).
    pub fn validate_for(&self, config: &JwtConfig) -> Result<(), BindingRuleError> {
        let vars = config
            .projected_var_names()
            .into_iter()
            .map(|name| (name, "fake".to_owned()))
            .collect();
        self.validate_with_vars(&vars)
    }

    fn validate_with_vars(&self, vars: &BTreeMap<String, String>) -> Result<(), BindingRuleError> {
        if self.auth_method.is_empty() {
            return Err(BindingRuleError::MissingAuthMethod);
        }
        self.parsed_selector()?;
        if self.bind_name.is_empty() {
            return Err(BindingRuleError::MissingBindName);
        }
        let result = match self.bind_type {
            BindType::TemplatedPolicy => {
                templated_policy(&self.bind_name, self.bind_vars.as_ref(), vars).map(|_| ())
            }
            other => checked_name(&self.bind_name, vars, name_rule(other)).map(|_| ()),
        };
        result.map_err(|source| BindingRuleError::InvalidBindName {
            bind_type: self.bind_type.as_str(),
            source,
        })
    }
}

/// What a login's matching rules grant, deduplicated, in rule order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bindings {
    /// Service identities (no datacenter restriction).
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities, in the datacenter the caller named.
    pub node_identities: Vec<NodeIdentity>,
    /// Role links by name; the caller drops names no role has (as Consul does) and resolves IDs.
    pub roles: Vec<RoleLink>,
    /// Policy links by name; the caller drops names no policy has and resolves IDs.
    pub policies: Vec<PolicyLink>,
    /// Built-in templated policies.
    pub templated_policies: Vec<TemplatedPolicy>,
}

impl Bindings {
    /// True when the login would grant nothing; the node then answers 403 [`PERMISSION_DENIED`].
    pub fn is_empty(&self) -> bool {
        self.service_identities.is_empty()
            && self.node_identities.is_empty()
            && self.roles.is_empty()
            && self.policies.is_empty()
            && self.templated_policies.is_empty()
    }
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Applies binding rules to a verified identity. `rules` are the login's auth method's rules (the
/// caller selects them by `AuthMethod`); a rule matches when its selector is true for the identity (a
/// selector that does not parse or cannot be evaluated matches nothing, as in Consul). Node identities
/// get `datacenter`. A matching rule whose filled-in name is invalid fails the whole login.
pub fn bind(rules: &[BindingRule], identity: &Identity, datacenter: &str) -> Result<Bindings, BindError> {
    let mut bindings = Bindings::default();
    let vars = &identity.projected_vars;
    for rule in rules {
        let matched = rule
            .parsed_selector()
            .is_ok_and(|selector| selector.matches(&identity.fields));
        if !matched {
            continue;
        }
        match rule.bind_type {
            BindType::Service => {
                let name = checked_name(&rule.bind_name, vars, crate::identity::is_valid_identity_name)?;
                push_unique(
                    &mut bindings.service_identities,
                    ServiceIdentity {
                        service_name: name,
                        datacenters: Vec::new(),
                    },
                );
            }
            BindType::Node => {
                let name = checked_name(&rule.bind_name, vars, crate::identity::is_valid_identity_name)?;
                push_unique(
                    &mut bindings.node_identities,
                    NodeIdentity {
                        node_name: name,
                        datacenter: datacenter.to_owned(),
                    },
                );
            }
            BindType::Role => {
                let name = checked_name(&rule.bind_name, vars, crate::role::is_valid_role_name)?;
                push_unique(
                    &mut bindings.roles,
                    RoleLink {
                        id: String::new(),
                        name,
                    },
                );
            }
            BindType::Policy => {
                let name = checked_name(&rule.bind_name, vars, is_valid_policy_name)?;
                push_unique(&mut bindings.policies, PolicyLink::by_name(name));
            }
            BindType::TemplatedPolicy => {
                let policy = templated_policy(&rule.bind_name, rule.bind_vars.as_ref(), vars)?;
                push_unique(&mut bindings.templated_policies, policy);
            }
        }
    }
    Ok(bindings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::{NOW, at, config, ed25519_key, sign};
    use crate::auth::jwt::verify_jwt;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn rule(selector: &str, bind_type: BindType, bind_name: &str) -> BindingRule {
        BindingRule {
            id: String::new(),
            description: String::new(),
            auth_method: "jwt".into(),
            selector: selector.into(),
            bind_type,
            bind_name: bind_name.into(),
            bind_vars: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    fn identity(name: &str, groups: &[&str]) -> Identity {
        let mut id = Identity::default();
        id.fields.values.insert("name".into(), name.into());
        id.fields
            .lists
            .insert("groups".into(), groups.iter().map(|g| g.to_string()).collect());
        id.projected_vars.insert("value.name".into(), name.into());
        id
    }

    #[test]
    fn json_uses_consul_names() {
        let r: BindingRule = serde_json::from_value(json!({
            "ID": "b1", "Description": "d", "AuthMethod": "m", "Selector": "value.name == \"x\"",
            "BindType": "templated-policy", "BindName": "builtin/service", "BindVars": {"Name": "${value.name}"},
            "CreateIndex": 1, "ModifyIndex": 2
        }))
        .unwrap();
        assert_eq!(r.bind_type, BindType::TemplatedPolicy);
        assert_eq!(r.bind_vars.as_ref().unwrap().name, "${value.name}");
        let out = serde_json::to_value(&r).unwrap();
        assert_eq!(out["BindType"], "templated-policy");
        assert_eq!(out["BindVars"]["name"], "${value.name}");
        assert_eq!(out["AuthMethod"], "m");
        let out = serde_json::to_value(rule("", BindType::Service, "x")).unwrap();
        assert!(out.get("BindVars").is_none());

        let err = serde_json::from_value::<BindingRule>(json!({"BindType": "group"})).unwrap_err();
        assert!(
            err.to_string()
                .contains("Invalid Binding Rule: unknown BindType \"group\""),
            "{err}"
        );
    }

    #[test]
    fn validate_checks_selector_and_bind_name() {
        assert_eq!(rule("", BindType::Service, "${value.name}").validate(), Ok(()));
        assert_eq!(
            rule(r#""admins" in list.groups"#, BindType::Role, "Admins").validate(),
            Ok(())
        );

        let mut r = rule("", BindType::Service, "web");
        r.auth_method.clear();
        assert_eq!(r.validate(), Err(BindingRuleError::MissingAuthMethod));

        let err = rule("value.name ==", BindType::Service, "web")
            .validate()
            .unwrap_err();
        assert!(matches!(err, BindingRuleError::InvalidSelector(_)));
        assert!(
            err.to_string()
                .starts_with("invalid Binding Rule: Selector is invalid: "),
            "{err}"
        );

        assert_eq!(
            rule("", BindType::Service, "").validate(),
            Err(BindingRuleError::MissingBindName)
        );

        let err = rule("", BindType::Service, "Web_Server").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Binding Rule: invalid BindName: failed to validate bindType \"service\": invalid bind name: \"Web_Server\""
        );
        assert!(
            rule("", BindType::Node, "node-${value.name}-")
                .validate()
                .is_err()
        );
        assert!(rule("", BindType::Policy, "builtin/x").validate().is_err());
        assert_eq!(rule("", BindType::Policy, "team/ops").validate(), Ok(()));
        assert!(rule("", BindType::Role, "a b").validate().is_err());
        let err = rule("", BindType::Service, "svc-${value.name")
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                BindingRuleError::InvalidBindName {
                    source: BindError::Template(InterpolationError::Unterminated(4)),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validate_for_knows_the_methods_variables() {
        let (_, pem) = ed25519_key();
        let cfg = config(json!({ "ClaimMappings": { "sub": "name" } }), &[&pem]);
        assert_eq!(
            rule("", BindType::Service, "${value.name}").validate_for(&cfg),
            Ok(())
        );
        let err = rule("", BindType::Service, "${value.team}")
            .validate_for(&cfg)
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("error interpreting template: unknown variable accessed: value.team"),
            "{err}"
        );
    }

    #[test]
    fn templated_policy_rules() {
        let mut r = rule("", BindType::TemplatedPolicy, "builtin/service");
        r.bind_vars = Some(TemplateVariables {
            name: "${value.name}".into(),
        });
        assert_eq!(r.validate(), Ok(()));
        let b = bind(std::slice::from_ref(&r), &identity("web", &[]), "dc1").unwrap();
        assert_eq!(
            b.templated_policies,
            vec![TemplatedPolicy {
                template_name: "builtin/service".into(),
                template_variables: Some(TemplateVariables { name: "web".into() }),
                datacenters: vec![],
            }]
        );
        r.bind_vars = None;
        assert!(matches!(
            r.validate(),
            Err(BindingRuleError::InvalidBindName {
                source: BindError::TemplateVariables(_),
                ..
            })
        ));
        let dns = rule("", BindType::TemplatedPolicy, "builtin/dns");
        assert_eq!(dns.validate(), Ok(()));
        let unknown = rule("", BindType::TemplatedPolicy, "builtin/nope");
        assert!(matches!(
            unknown.validate(),
            Err(BindingRuleError::InvalidBindName {
                source: BindError::UnknownTemplate(_),
                ..
            })
        ));
    }

    #[test]
    fn interpolation() {
        let vars: BTreeMap<String, String> = [("value.name".to_string(), "Web".to_string())].into();
        assert_eq!(interpolate("svc-${value.name}", &vars, false).unwrap(), "svc-Web");
        assert_eq!(
            interpolate("svc-${ value.name }", &vars, true).unwrap(),
            "svc-web"
        );
        assert_eq!(
            interpolate("$${value.name}", &vars, false).unwrap(),
            "${value.name}"
        );
        assert_eq!(interpolate("plain", &vars, false).unwrap(), "plain");
        assert_eq!(
            interpolate("${value.other}", &vars, false),
            Err(InterpolationError::UnknownVariable("value.other".into()))
        );
        assert_eq!(
            interpolate("a-${value.name", &vars, false),
            Err(InterpolationError::Unterminated(2))
        );
    }

    #[test]
    fn bind_applies_matching_rules_and_dedupes() {
        let rules = vec![
            rule("", BindType::Service, "${value.name}"),
            rule(r#"value.name == "web""#, BindType::Service, "web"),
            rule(r#""admins" in list.groups"#, BindType::Role, "admins"),
            rule(r#""admins" in list.groups"#, BindType::Role, "admins"),
            rule(r#""ops" in list.groups"#, BindType::Policy, "ops-policy"),
            rule("", BindType::Node, "node-${value.name}"),
            rule("this does not parse", BindType::Role, "never"),
            rule("value.unmapped == \"x\"", BindType::Role, "never"),
        ];
        let b = bind(&rules, &identity("web", &["admins"]), "dc2").unwrap();
        assert_eq!(
            b.service_identities,
            vec![ServiceIdentity {
                service_name: "web".into(),
                datacenters: vec![]
            }]
        );
        assert_eq!(
            b.roles,
            vec![RoleLink {
                id: String::new(),
                name: "admins".into()
            }]
        );
        assert!(b.policies.is_empty());
        assert_eq!(
            b.node_identities,
            vec![NodeIdentity {
                node_name: "node-web".into(),
                datacenter: "dc2".into()
            }]
        );
        assert!(!b.is_empty());

        let b = bind(&rules[2..5], &identity("api", &["ops"]), "dc1").unwrap();
        assert_eq!(b.policies, vec![PolicyLink::by_name("ops-policy")]);
        assert!(b.roles.is_empty());
    }

    #[test]
    fn nothing_bound_is_empty() {
        let rules = vec![rule(r#""admins" in list.groups"#, BindType::Role, "admins")];
        let b = bind(&rules, &identity("web", &["users"]), "dc1").unwrap();
        assert!(b.is_empty());
        assert!(bind(&[], &identity("web", &[]), "dc1").unwrap().is_empty());
        assert_eq!(PERMISSION_DENIED, "Permission denied");
    }

    #[test]
    fn invalid_interpolated_names_fail_the_login() {
        let rules = vec![rule("", BindType::Service, "${value.name}")];
        assert_eq!(
            bind(&rules, &identity("bad name", &[]), "dc1"),
            Err(BindError::InvalidBindName("bad name".into()))
        );
        assert_eq!(
            bind(&rules, &identity("Web", &[]), "dc1"),
            Err(BindError::UppercaseValue("Web".into()))
        );
        assert_eq!(
            bind(&rules, &identity("", &[]), "dc1"),
            Err(BindError::InvalidBindName(String::new())),
            "an absent claim fills in as empty"
        );
    }

    #[test]
    fn end_to_end_from_a_signed_jwt() {
        let (key, pem) = ed25519_key();
        let cfg = config(
            json!({
                "BoundIssuer": "https://ci",
                "BoundAudiences": ["consul"],
                "ClaimMappings": { "/project/slug": "project" },
                "ListClaimMappings": { "teams": "teams" }
            }),
            &[&pem],
        );
        let token = sign(
            &key,
            Algorithm::EdDSA,
            &json!({
                "iss": "https://ci", "aud": ["consul"], "iat": NOW, "exp": NOW + 300,
                "project": { "slug": "billing" }, "teams": ["payments", "sre"]
            }),
        );
        let identity = verify_jwt(&cfg, &token, at(NOW + 10)).unwrap();
        let rules = vec![
            rule(
                r#""sre" in list.teams and value.project matches "^bill""#,
                BindType::Service,
                "${value.project}",
            ),
            rule(r#""payments" not in list.teams"#, BindType::Role, "outsiders"),
        ];
        for r in &rules {
            assert_eq!(r.validate_for(&cfg), Ok(()));
        }
        let b = bind(&rules, &identity, "dc1").unwrap();
        assert_eq!(b.service_identities.len(), 1);
        assert_eq!(b.service_identities[0].service_name, "billing");
        assert!(b.roles.is_empty());
    }
}
