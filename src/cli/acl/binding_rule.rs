//! `tribune acl binding-rule create|list|read|update|delete`.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::CliError;
use super::super::http::{ApiClient, add_query_param, encode_query_value};
use super::{Meta, OutputArgs, fetch, field_line, id_from_prefix, object};

const RULES: &str = "/v1/acl/binding-rules";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BindingRuleCommand {
    /// Creates a binding rule.
    Create {
        /// The auth method whose logins the rule applies to.
        #[arg(long)]
        method: String,
        /// What the rule grants: service, node, role, policy or templated-policy.
        #[arg(long = "bind-type", default_value = "service")]
        bind_type: String,
        /// The name granted; may use `${value.<field>}`.
        #[arg(long = "bind-name")]
        bind_name: String,
        #[command(flatten)]
        fields: RuleFields,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Lists the binding rules, of one auth method with -method.
    List {
        /// Only this auth method's rules.
        #[arg(long)]
        method: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Reads one binding rule.
    Read {
        /// The rule's ID (a unique prefix).
        #[arg(long)]
        id: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Updates a binding rule: by default the flags given replace those fields and the rest is kept;
    /// with -no-merge the rule becomes exactly what the flags say.
    Update {
        /// The rule's ID (a unique prefix).
        #[arg(long)]
        id: String,
        /// What the rule grants.
        #[arg(long = "bind-type")]
        bind_type: Option<String>,
        /// The name granted.
        #[arg(long = "bind-name")]
        bind_name: Option<String>,
        #[command(flatten)]
        fields: RuleFields,
        /// Replace every field instead of merging with the current rule.
        #[arg(long = "no-merge")]
        no_merge: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deletes a binding rule.
    Delete {
        /// The rule's ID (a unique prefix).
        #[arg(long)]
        id: String,
    },
}

/// The optional fields `create` and `update` share.
#[derive(Debug, clap::Args)]
pub(crate) struct RuleFields {
    /// A description.
    #[arg(long)]
    description: Option<String>,
    /// A selector over the login's verified fields (`value.team == "app"`); empty matches every login.
    #[arg(long)]
    selector: Option<String>,
    /// A variable of a templated policy binding, `name=VALUE` (may use `${value.<field>}`); repeatable.
    #[arg(long = "bind-vars", value_name = "name=VALUE")]
    bind_vars: Vec<String>,
}

impl RuleFields {
    fn apply(self, rule: &mut Value) -> Result<(), CliError> {
        if let Some(description) = self.description {
            rule["Description"] = json!(description);
        }
        if let Some(selector) = self.selector {
            rule["Selector"] = json!(selector);
        }
        if !self.bind_vars.is_empty() {
            let mut name = String::new();
            for var in &self.bind_vars {
                match var.split_once('=') {
                    Some((key, value)) if key.trim().eq_ignore_ascii_case("name") => {
                        name = value.trim().to_owned();
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "Bind variable {var:?} is not in the form name=VALUE"
                        )));
                    }
                }
            }
            rule["BindVars"] = json!({ "Name": name });
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BindingRule {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    auth_method: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    bind_type: String,
    #[serde(default)]
    bind_name: String,
    #[serde(default)]
    bind_vars: Option<tribune_acl::TemplateVariables>,
    #[serde(default)]
    selector: String,
    #[serde(flatten)]
    meta: Meta,
}

fn rule_path(id: &str) -> String {
    format!("/v1/acl/binding-rule/{}", encode_query_value(id))
}

pub(super) async fn run(client: &mut ApiClient, command: BindingRuleCommand) -> Result<(), CliError> {
    match command {
        BindingRuleCommand::Create {
            method,
            bind_type,
            bind_name,
            fields,
            output,
        } => {
            let mut rule = json!({ "AuthMethod": method, "BindType": bind_type, "BindName": bind_name });
            fields.apply(&mut rule)?;
            let created: Value = fetch(
                client,
                Method::PUT,
                "/v1/acl/binding-rule",
                rule.to_string(),
                "Failed to create new binding rule",
            )
            .await?;
            output.print(&created, format_rule)?;
        }
        BindingRuleCommand::List { method, output } => {
            let path = match method.filter(|name| !name.is_empty()) {
                Some(name) => add_query_param(RULES, "authmethod", &name),
                None => RULES.to_owned(),
            };
            let rules: Value = fetch(
                client,
                Method::GET,
                &path,
                "",
                "Failed to retrieve the binding rule list",
            )
            .await?;
            output.print_list(&rules, "", format_rule_list_entry)?;
        }
        BindingRuleCommand::Read { id, output } => {
            let id = id_from_prefix(client, &id, RULES, "ID", "binding rule").await?;
            let rule: Value = fetch(
                client,
                Method::GET,
                &rule_path(&id),
                "",
                "Error reading binding rule",
            )
            .await?;
            output.print(&rule, format_rule)?;
        }
        BindingRuleCommand::Update {
            id,
            bind_type,
            bind_name,
            fields,
            no_merge,
            output,
        } => {
            let id = id_from_prefix(client, &id, RULES, "ID", "binding rule").await?;
            let path = rule_path(&id);
            let current: Value = fetch(
                client,
                Method::GET,
                &path,
                "",
                "Error when retrieving current binding rule",
            )
            .await?;
            let current = object(current, "the current binding rule")?;
            let mut rule = if no_merge {
                // The auth method cannot change, so it is kept even here.
                json!({
                    "ID": id,
                    "AuthMethod": current.get("AuthMethod").cloned().unwrap_or(Value::Null),
                    "BindType": bind_type.clone().unwrap_or_default(),
                    "BindName": bind_name.clone().unwrap_or_default(),
                })
            } else {
                current
            };
            if let Some(bind_type) = bind_type {
                rule["BindType"] = json!(bind_type);
            }
            if let Some(bind_name) = bind_name {
                rule["BindName"] = json!(bind_name);
            }
            fields.apply(&mut rule)?;
            let updated: Value = fetch(
                client,
                Method::PUT,
                &path,
                rule.to_string(),
                &format!("Error updating binding rule {id:?}"),
            )
            .await?;
            output.print(&updated, format_rule)?;
        }
        BindingRuleCommand::Delete { id } => {
            let id = id_from_prefix(client, &id, RULES, "ID", "binding rule").await?;
            client
                .call(Method::DELETE, &rule_path(&id), "")
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context(&format!("Error deleting binding rule {id:?}")))?;
            println!("Binding rule {id:?} deleted successfully");
        }
    }
    Ok(())
}

fn write_rule(rule: &BindingRule, meta: bool, indent: &str, out: &mut String) {
    field_line(out, indent, 14, "AuthMethod", &rule.auth_method);
    field_line(out, indent, 14, "Description", &rule.description);
    field_line(out, indent, 14, "BindType", &rule.bind_type);
    field_line(out, indent, 14, "BindName", &rule.bind_name);
    if let Some(vars) = rule.bind_vars.as_ref().filter(|vars| !vars.name.is_empty()) {
        field_line(out, indent, 14, "BindVars", "");
        out.push_str(&format!("{indent}     - Name: {}\n", vars.name));
    }
    field_line(out, indent, 14, "Selector", &rule.selector);
    if meta {
        rule.meta.write(out, indent, 14, false);
    }
}

fn format_rule(rule: &BindingRule, meta: bool) -> String {
    let mut out = String::new();
    field_line(&mut out, "", 14, "ID", &rule.id);
    write_rule(rule, meta, "", &mut out);
    out
}

fn format_rule_list_entry(rule: &BindingRule, meta: bool) -> String {
    let mut out = format!("{}:\n", rule.id);
    write_rule(rule, meta, "   ", &mut out);
    out
}
