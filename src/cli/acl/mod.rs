//! `tribune acl ...`: bootstrap, policies, tokens, roles, auth methods, binding rules, templated
//! policies and the agent's tokens, printed as Consul prints them.
//!
//! Each kind of ACL object has its own file; this one holds what they share: the `-format`/`-meta`
//! output flags, turning a unique ID prefix into an ID, the identity flags (`-service-identity`,
//! `-node-identity`, `-templated-policy` with `-var`) and how identities are printed.

mod auth_method;
mod binding_rule;
mod policy;
mod role;
mod templated_policy;
mod token;

use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tribune_acl::{NodeIdentity, ServiceIdentity, TemplateVariables, TemplatedPolicy};

use super::http::ApiClient;
use super::{CliError, GlobalArgs};

/// The ACL verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AclCommand {
    /// Creates the first management token (once per datacenter).
    Bootstrap(OutputArgs),
    /// Creates, lists, reads and deletes policies.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Creates, lists, reads, updates, clones and deletes tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Creates, lists, reads, updates and deletes roles.
    #[command(subcommand)]
    Role(role::RoleCommand),
    /// Creates, lists, reads, updates and deletes auth methods.
    #[command(name = "auth-method", subcommand)]
    AuthMethod(auth_method::AuthMethodCommand),
    /// Creates, lists, reads, updates and deletes binding rules.
    #[command(name = "binding-rule", subcommand)]
    BindingRule(binding_rule::BindingRuleCommand),
    /// Lists, reads and previews the built-in policy templates.
    #[command(name = "templated-policy", subcommand)]
    TemplatedPolicy(templated_policy::TemplatedPolicyCommand),
    /// Sets one of the agent's tokens: default, agent, agent_recovery or replication.
    #[command(name = "set-agent-token")]
    SetAgentToken {
        /// Which token.
        kind: String,
        /// The token's secret.
        token: String,
    },
}

pub(crate) async fn run(command: AclCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    match command {
        AclCommand::Bootstrap(output) => {
            let token: Value = fetch(
                &mut client,
                Method::PUT,
                "/v1/acl/bootstrap",
                "",
                "Failed ACL bootstrapping",
            )
            .await?;
            output.print(&token, token::format_token)?;
        }
        AclCommand::Policy(command) => policy::run(&mut client, command).await?,
        AclCommand::Token(command) => token::run(&mut client, command).await?,
        AclCommand::Role(command) => role::run(&mut client, command).await?,
        AclCommand::AuthMethod(command) => auth_method::run(&mut client, command).await?,
        AclCommand::BindingRule(command) => binding_rule::run(&mut client, command).await?,
        AclCommand::TemplatedPolicy(command) => templated_policy::run(&mut client, command).await?,
        AclCommand::SetAgentToken { kind, token } => {
            let known = [
                "default",
                "agent",
                "agent_recovery",
                "agent_master",
                "replication",
            ];
            if !known.contains(&kind.as_str()) {
                return Err(CliError::Usage(format!(
                    "Unknown token type {kind:?}: expected one of default, agent, agent_recovery, replication"
                )));
            }
            let body = json!({ "Token": token }).to_string();
            client
                .call(Method::PUT, &format!("/v1/agent/token/{kind}"), body)
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context("setting token"))?;
            println!("ACL token {kind:?} set successfully");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends a request, fails on any status but 200, and decodes the answer; `doing` prefixes an error.
pub(super) async fn fetch<T: DeserializeOwned>(
    client: &mut ApiClient,
    method: Method,
    path: &str,
    body: impl Into<bytes::Bytes>,
    doing: &str,
) -> Result<T, CliError> {
    client
        .call(method, path, body)
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context(doing))
}

/// How a command prints what the agent answered: Consul's text, or the JSON itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Consul's aligned `Field: value` text.
    #[default]
    Pretty,
    /// The agent's JSON, indented.
    Json,
}

/// `-format` and `-meta`, as every ACL read and write command of Consul's has them.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub(crate) struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    format: Format,
    /// Also show the content hash and raft indices.
    #[arg(long)]
    meta: bool,
}

impl OutputArgs {
    /// Prints `value` as JSON, or decoded as `T` and formatted by `pretty`.
    pub(super) fn print<T: DeserializeOwned>(
        self,
        value: &Value,
        pretty: fn(&T, bool) -> String,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Json => println!("{}", indented_json(value)),
            Format::Pretty => print!("{}", pretty(&decode(value)?, self.meta)),
        }
        Ok(())
    }

    /// Prints a list as JSON, or each entry formatted by `pretty`, separated by `separator`.
    pub(super) fn print_list<T: DeserializeOwned>(
        self,
        value: &Value,
        separator: &str,
        pretty: fn(&T, bool) -> String,
    ) -> Result<(), CliError> {
        match self.format {
            Format::Json => println!("{}", indented_json(value)),
            Format::Pretty => {
                let entries: Vec<T> = decode(value)?;
                let shown: Vec<String> = entries.iter().map(|entry| pretty(entry, self.meta)).collect();
                print!("{}", shown.join(separator));
            }
        }
        Ok(())
    }
}

/// JSON indented by four spaces, as Consul's CLI prints it.
pub(super) fn indented_json(value: &Value) -> String {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    match value.serialize(&mut serializer) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => value.to_string(),
    }
}

/// `value` when it is a JSON object (which the commands that edit an object and send it back need).
pub(super) fn object(value: Value, what: &'static str) -> Result<Value, CliError> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(CliError::Decode {
            what,
            reason: format!("expected a JSON object, got {value}"),
        })
    }
}

pub(super) fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, CliError> {
    T::deserialize(value).map_err(|error| CliError::Decode {
        what: "the agent's answer",
        reason: error.to_string(),
    })
}

/// A `Field:` label padded to `width`, then the value, then a newline.
pub(super) fn field_line(out: &mut String, indent: &str, width: usize, name: &str, value: &str) {
    out.push_str(&format!("{indent}{:<width$}{value}\n", format!("{name}:")));
}

/// A UTC time from the API (RFC 3339) as Consul's CLI prints it, in Go's `time.Time` layout
/// (`2026-12-07 01:12:43.306 +0000 UTC`); anything else is printed as it came.
pub(super) fn go_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z').and_then(|t| t.split_once('T')) {
        Some((date, time)) => format!("{date} {time} +0000 UTC"),
        None => rfc3339.to_owned(),
    }
}

/// The meta lines (`Hash`, `Create Index`, `Modify Index`) of any ACL object.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Meta {
    #[serde(default)]
    hash: String,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
}

impl Meta {
    /// Writes the lines; Consul prints the hash as hex of its bytes, so the base64 is decoded first.
    pub(super) fn write(&self, out: &mut String, indent: &str, width: usize, with_hash: bool) {
        use base64::Engine as _;
        if with_hash {
            let hex: String = base64::engine::general_purpose::STANDARD
                .decode(&self.hash)
                .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_else(|_| self.hash.clone());
            field_line(out, indent, width, "Hash", &hex);
        }
        field_line(out, indent, width, "Create Index", &self.create_index.to_string());
        field_line(out, indent, width, "Modify Index", &self.modify_index.to_string());
    }
}

/// A link from a token or role to a policy or role.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Link {
    #[serde(rename = "ID", default)]
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
}

/// Writes `heading:` and one `ID - Name` line per link, nothing when there are none.
pub(super) fn write_links(out: &mut String, indent: &str, heading: &str, links: &[Link]) {
    if links.is_empty() {
        return;
    }
    out.push_str(&format!("{indent}{heading}:\n"));
    for link in links {
        out.push_str(&format!("{indent}   {} - {}\n", link.id, link.name));
    }
}

/// The identities a token or role carries, as the agent shows them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Identities {
    #[serde(default)]
    pub(super) service_identities: Vec<ServiceIdentity>,
    #[serde(default)]
    pub(super) node_identities: Vec<NodeIdentity>,
    #[serde(default)]
    pub(super) templated_policies: Vec<TemplatedPolicy>,
}

impl Identities {
    /// Writes the identity sections Consul prints, each only when it has entries.
    pub(super) fn write(&self, out: &mut String, indent: &str) {
        let all_or = |dcs: &[String]| {
            if dcs.is_empty() {
                "all".to_owned()
            } else {
                dcs.join(", ")
            }
        };
        if !self.service_identities.is_empty() {
            out.push_str(&format!("{indent}Service Identities:\n"));
            for identity in &self.service_identities {
                out.push_str(&format!(
                    "{indent}   {} (Datacenters: {})\n",
                    identity.service_name,
                    all_or(&identity.datacenters)
                ));
            }
        }
        if !self.node_identities.is_empty() {
            out.push_str(&format!("{indent}Node Identities:\n"));
            for identity in &self.node_identities {
                out.push_str(&format!(
                    "{indent}   {} (Datacenter: {})\n",
                    identity.node_name, identity.datacenter
                ));
            }
        }
        if !self.templated_policies.is_empty() {
            out.push_str(&format!("{indent}Templated Policies:\n"));
            for templated in &self.templated_policies {
                out.push_str(&format!("{indent}   {}\n", templated.template_name));
                if let Some(vars) = templated
                    .template_variables
                    .as_ref()
                    .filter(|v| !v.name.is_empty())
                {
                    out.push_str(&format!("{indent}      Name: {}\n", vars.name));
                }
                out.push_str(&format!(
                    "{indent}      Datacenters: {}\n",
                    all_or(&templated.datacenters)
                ));
            }
        }
    }
}

/// The identity flags of `token create`, `role create` and `role update`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct IdentityArgs {
    /// A service identity, `NAME` or `NAME:DC1,DC2`; repeatable.
    #[arg(long = "service-identity", value_name = "NAME[:DCS]")]
    service_identity: Vec<String>,
    /// A node identity, `NAME:DC`; repeatable.
    #[arg(long = "node-identity", value_name = "NAME:DC")]
    node_identity: Vec<String>,
    /// A templated policy by name (`builtin/service`, ...); its variables come from -var.
    #[arg(long = "templated-policy", value_name = "NAME")]
    templated_policy: Option<String>,
    /// A variable of the templated policy, `name:VALUE`; repeatable.
    #[arg(long = "var", value_name = "name:VALUE")]
    var: Vec<String>,
}

/// The identities the flags name, checked for form (the agent checks the rest).
#[derive(Debug, Default)]
pub(super) struct ParsedIdentities {
    pub(super) service_identities: Vec<ServiceIdentity>,
    pub(super) node_identities: Vec<NodeIdentity>,
    pub(super) templated_policies: Vec<TemplatedPolicy>,
}

impl IdentityArgs {
    pub(super) fn parse(&self) -> Result<ParsedIdentities, CliError> {
        Ok(ParsedIdentities {
            service_identities: parse_service_identities(&self.service_identity)?,
            node_identities: parse_node_identities(&self.node_identity)?,
            templated_policies: parse_templated_policy(self.templated_policy.as_deref(), &self.var)?
                .into_iter()
                .collect(),
        })
    }
}

/// `web` or `web:dc1,dc2`.
pub(super) fn parse_service_identities(args: &[String]) -> Result<Vec<ServiceIdentity>, CliError> {
    args.iter()
        .map(|arg| {
            let (name, datacenters) = match arg.split_once(':') {
                None => (arg.as_str(), Vec::new()),
                Some((name, dcs)) => {
                    let dcs: Vec<String> = dcs.split(',').map(str::trim).map(str::to_owned).collect();
                    if dcs.iter().any(String::is_empty) {
                        return Err(CliError::Usage(format!(
                            "Service identity {arg:?} names an empty datacenter: use NAME or NAME:DC1,DC2"
                        )));
                    }
                    (name, dcs)
                }
            };
            if name.trim().is_empty() {
                return Err(CliError::Usage(format!(
                    "Service identity {arg:?} has no service name: use NAME or NAME:DC1,DC2"
                )));
            }
            Ok(ServiceIdentity {
                service_name: name.trim().to_owned(),
                datacenters,
            })
        })
        .collect()
}

/// `node-1:dc1`.
pub(super) fn parse_node_identities(args: &[String]) -> Result<Vec<NodeIdentity>, CliError> {
    args.iter()
        .map(|arg| match arg.split_once(':') {
            Some((name, dc)) if !name.trim().is_empty() && !dc.trim().is_empty() => Ok(NodeIdentity {
                node_name: name.trim().to_owned(),
                datacenter: dc.trim().to_owned(),
            }),
            _ => Err(CliError::Usage(format!(
                "Node identity {arg:?} is not in the form NODENAME:DATACENTER"
            ))),
        })
        .collect()
}

/// `-templated-policy NAME` with its `-var name:VALUE` flags; `-var` without a template is an error.
pub(super) fn parse_templated_policy(
    template: Option<&str>,
    vars: &[String],
) -> Result<Option<TemplatedPolicy>, CliError> {
    let Some(template) = template else {
        if vars.is_empty() {
            return Ok(None);
        }
        return Err(CliError::Usage(
            "-var needs a -templated-policy to fill in".into(),
        ));
    };
    let variables = parse_template_variables(vars)?;
    Ok(Some(TemplatedPolicy {
        template_name: template.to_owned(),
        template_variables: variables,
        datacenters: Vec::new(),
    }))
}

/// `name:VALUE` pairs; `name` (any case) is the one variable the built-in templates take.
pub(super) fn parse_template_variables(vars: &[String]) -> Result<Option<TemplateVariables>, CliError> {
    let mut variables: Option<TemplateVariables> = None;
    for var in vars {
        let Some((key, value)) = var.split_once(':') else {
            return Err(CliError::Usage(format!(
                "Variable {var:?} is not in the form name:VALUE"
            )));
        };
        if !key.trim().eq_ignore_ascii_case("name") {
            return Err(CliError::Usage(format!(
                "Unknown template variable {key:?}: the templates take only \"name\""
            )));
        }
        variables = Some(TemplateVariables {
            name: value.trim().to_owned(),
        });
    }
    Ok(variables)
}

/// Turns an `-id` argument into a full ID: a 36-character ID as is, else the one ID among `list_path`'s
/// entries (their `id_field`) that starts with it. `what` names the object in Consul's messages
/// ("token", "role", ...).
pub(super) async fn id_from_prefix(
    client: &mut ApiClient,
    prefix: &str,
    list_path: &str,
    id_field: &str,
    what: &str,
) -> Result<String, CliError> {
    if prefix.len() == 36 {
        return Ok(prefix.to_owned());
    }
    let doing = format!("Error determining {what} ID");
    let entries: Vec<Value> = fetch(client, Method::GET, list_path, "", &doing).await?;
    let mut matches = entries
        .iter()
        .filter_map(|entry| entry.get(id_field).and_then(Value::as_str))
        .filter(|id| id.starts_with(prefix));
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(id.to_owned()),
        (None, _) => Err(CliError::Failed(format!(
            "{doing}: No such {what} ID with prefix: {prefix}"
        ))),
        (Some(_), Some(_)) => Err(CliError::Failed(format!(
            "{doing}: Multiple {what} IDs with prefix: {prefix}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_flags_read_as_consul_writes_them() {
        let services = parse_service_identities(&["web".into(), "db:dc1,dc2".into()]).unwrap();
        assert_eq!(services[0].datacenters, Vec::<String>::new());
        assert_eq!(
            (services[1].service_name.as_str(), services[1].datacenters.len()),
            ("db", 2)
        );
        assert!(parse_service_identities(&[":dc1".into()]).is_err());
        assert!(parse_service_identities(&["web:".into()]).is_err());
        let nodes = parse_node_identities(&["n1:dc1".into()]).unwrap();
        assert_eq!(
            (nodes[0].node_name.as_str(), nodes[0].datacenter.as_str()),
            ("n1", "dc1")
        );
        assert!(parse_node_identities(&["n1".into()]).is_err());
        let templated = parse_templated_policy(Some("builtin/service"), &["name:api".into()])
            .unwrap()
            .unwrap();
        assert_eq!(templated.template_variables.unwrap().name, "api");
        assert!(parse_templated_policy(None, &["name:api".into()]).is_err());
        assert!(parse_templated_policy(Some("builtin/service"), &["port:1".into()]).is_err());
        assert_eq!(parse_templated_policy(None, &[]).unwrap(), None);
    }

    #[test]
    fn identities_print_as_consul_prints_them() {
        let identities = Identities {
            service_identities: vec![ServiceIdentity {
                service_name: "web".into(),
                datacenters: vec![],
            }],
            node_identities: vec![NodeIdentity {
                node_name: "n1".into(),
                datacenter: "dc1".into(),
            }],
            templated_policies: vec![TemplatedPolicy {
                template_name: "builtin/service".into(),
                template_variables: Some(TemplateVariables { name: "api".into() }),
                datacenters: vec!["dc1".into(), "dc2".into()],
            }],
        };
        let mut out = String::new();
        identities.write(&mut out, "");
        assert_eq!(
            out,
            "Service Identities:\n   web (Datacenters: all)\nNode Identities:\n   n1 (Datacenter: dc1)\n\
             Templated Policies:\n   builtin/service\n      Name: api\n      Datacenters: dc1, dc2\n"
        );
    }
}
