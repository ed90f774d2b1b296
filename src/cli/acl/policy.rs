//! `tribune acl policy create|list|read|delete`.

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
