//! `tribune acl policy create|list|read|update|delete`.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::http::{ApiClient, encode_query_value};
use super::super::{CliError, read_value_arg};
use super::{Meta, OutputArgs, fetch, field_line};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Creates a policy.
    Create {
        /// The policy's name.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// The rules: literal, `@file`, or `-` for stdin.
        #[arg(long)]
        rules: Option<String>,
        /// A datacenter the policy is valid in; repeatable (all when absent).
        #[arg(long = "valid-datacenter", value_name = "DC")]
        valid_datacenter: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Lists every policy.
    List(OutputArgs),
    /// Reads one policy by -id or -name.
    Read {
        #[command(flatten)]
        selector: PolicySelector,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Updates a policy found by -id (then -name renames it) or by -name; what no flag names is kept
    /// unless -no-merge.
    Update {
        /// The policy's ID (a unique prefix).
        #[arg(long, required_unless_present = "name")]
        id: Option<String>,
        /// With -id, the policy's new name; alone, the name of the policy to update.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// New rules: literal, `@file`, or `-` for stdin.
        #[arg(long)]
        rules: Option<String>,
        /// A datacenter the policy is valid in; repeatable; replaces the current list.
        #[arg(long = "valid-datacenter", value_name = "DC")]
        valid_datacenter: Vec<String>,
        /// Replace the whole policy with what the flags give instead of merging.
        #[arg(long = "no-merge")]
        no_merge: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deletes one policy by -id or -name.
    Delete(PolicySelector),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PolicySelector {
    /// The policy's ID (a unique prefix).
    #[arg(long, conflicts_with = "name", required_unless_present = "name")]
    id: Option<String>,
    /// The policy's name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    datacenters: Option<Vec<String>>,
    #[serde(default)]
    rules: Option<String>,
    #[serde(flatten)]
    meta: Meta,
}

pub(super) async fn run(client: &mut ApiClient, command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Create {
            name,
            description,
            rules,
            valid_datacenter,
            output,
        } => {
            let rules = match rules {
                Some(arg) => String::from_utf8(read_value_arg(&arg)?)
                    .map_err(|_| CliError::Usage("The rules are not UTF-8 text".into()))?,
                None => String::new(),
            };
            let body = json!({
                "Name": name,
                "Description": description,
                "Rules": rules,
                "Datacenters": valid_datacenter,
            })
            .to_string();
            let policy: Value = fetch(client, Method::PUT, "/v1/acl/policy", body, "creating policy").await?;
            output.print(&policy, format_policy)?;
        }
        PolicyCommand::List(output) => {
            let policies: Value = fetch(
                client,
                Method::GET,
                "/v1/acl/policies",
                "",
                "retrieving policy list",
            )
            .await?;
            output.print_list(&policies, "", format_policy_list_entry)?;
        }
        PolicyCommand::Read { selector, output } => {
            let policy = read_policy(client, &selector).await?;
            output.print(&policy, format_policy)?;
        }
        PolicyCommand::Update {
            id,
            name,
            description,
            rules,
            valid_datacenter,
            no_merge,
            output,
        } => {
            let selector = PolicySelector {
                name: if id.is_some() { None } else { name.clone() },
                id,
            };
            let current = read_policy(client, &selector).await?;
            let policy_id = current
                .get("ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let rules = match rules {
                Some(arg) => Some(
                    String::from_utf8(read_value_arg(&arg)?)
                        .map_err(|_| CliError::Usage("The rules are not UTF-8 text".into()))?,
                ),
                None => None,
            };
            let body = updated_policy(&current, name, description, rules, valid_datacenter, no_merge)?;
            let path = format!("/v1/acl/policy/{}", encode_query_value(&policy_id));
            let policy: Value =
                fetch(client, Method::PUT, &path, body.to_string(), "updating policy").await?;
            output.print(&policy, format_policy)?;
        }
        PolicyCommand::Delete(selector) => {
            let id = policy_id(client, &selector).await?;
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/policy/{}", encode_query_value(&id)),
                    "",
                )
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context(&format!("deleting policy {id:?}")))?;
            println!("Policy {id:?} deleted successfully");
        }
    }
    Ok(())
}

/// The body of a policy update: the flags given, over the current policy unless `no_merge`.
fn updated_policy(
    current: &Value,
    name: Option<String>,
    description: Option<String>,
    rules: Option<String>,
    datacenters: Vec<String>,
    no_merge: bool,
) -> Result<Value, CliError> {
    let kept = |field: &str| {
        if no_merge {
            Value::Null
        } else {
            current.get(field).cloned().unwrap_or(Value::Null)
        }
    };
    let name = match name {
        Some(name) => Value::String(name),
        None => current.get("Name").cloned().unwrap_or(Value::Null),
    };
    if name.as_str().is_none_or(str::is_empty) {
        return Err(CliError::Usage("Must specify the -name of the policy".into()));
    }
    Ok(json!({
        "ID": current.get("ID").cloned().unwrap_or(Value::Null),
        "Name": name,
        "Description": description.map_or_else(|| kept("Description"), Value::String),
        "Rules": rules.map_or_else(|| kept("Rules"), Value::String),
        "Datacenters": if datacenters.is_empty() { kept("Datacenters") } else { json!(datacenters) },
    }))
}

/// The full ID a selector names: `-id` (a unique prefix) or the ID of the policy named `-name`.
async fn policy_id(client: &mut ApiClient, selector: &PolicySelector) -> Result<String, CliError> {
    match (&selector.id, &selector.name) {
        (Some(id), _) => super::id_from_prefix(client, id, "/v1/acl/policies", "ID", "policy").await,
        (None, Some(_)) => {
            let policy = read_policy(client, selector).await?;
            Ok(policy
                .get("ID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned())
        }
        (None, None) => Err(CliError::Usage("Must specify either -id or -name".into())),
    }
}

async fn read_policy(client: &mut ApiClient, selector: &PolicySelector) -> Result<Value, CliError> {
    let path = match (&selector.id, &selector.name) {
        (Some(id), _) => {
            let id = super::id_from_prefix(client, id, "/v1/acl/policies", "ID", "policy").await?;
            format!("/v1/acl/policy/{}", encode_query_value(&id))
        }
        (None, Some(name)) => format!("/v1/acl/policy/name/{}", encode_query_value(name)),
        (None, None) => return Err(CliError::Usage("Must specify either -id or -name".into())),
    };
    fetch(client, Method::GET, &path, "", "reading policy").await
}

fn format_policy_list_entry(policy: &Policy, meta: bool) -> String {
    let datacenters = policy.datacenters.as_deref().unwrap_or_default().join(", ");
    let mut out = format!("{}:\n", policy.name);
    field_line(&mut out, "   ", 14, "ID", &policy.id);
    field_line(&mut out, "   ", 14, "Description", &policy.description);
    field_line(&mut out, "   ", 14, "Datacenters", &datacenters);
    if meta {
        policy.meta.write(&mut out, "   ", 14, true);
    }
    out
}

fn format_policy(policy: &Policy, meta: bool) -> String {
    let datacenters = policy.datacenters.as_deref().unwrap_or_default().join(", ");
    let mut out = String::new();
    field_line(&mut out, "", 14, "ID", &policy.id);
    field_line(&mut out, "", 14, "Name", &policy.name);
    field_line(&mut out, "", 14, "Description", &policy.description);
    field_line(&mut out, "", 14, "Datacenters", &datacenters);
    if meta {
        policy.meta.write(&mut out, "", 14, true);
    }
    out.push_str("Rules:\n");
    if let Some(rules) = &policy.rules {
        out.push_str(rules);
        if !rules.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_merges_unless_told_not_to() {
        let current =
            json!({"ID": "p", "Name": "app", "Description": "d", "Rules": "r", "Datacenters": ["dc1"]});
        let merged = updated_policy(&current, None, None, Some("r2".into()), Vec::new(), false).unwrap();
        assert_eq!(
            merged,
            json!({"ID": "p", "Name": "app", "Description": "d", "Rules": "r2", "Datacenters": ["dc1"]})
        );
        let replaced = updated_policy(&current, Some("new".into()), None, None, Vec::new(), true).unwrap();
        assert_eq!(
            replaced,
            json!({"ID": "p", "Name": "new", "Description": null, "Rules": null, "Datacenters": null})
        );
    }
}
