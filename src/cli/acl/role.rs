//! `tribune acl role create|list|read|update|delete`.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::CliError;
use super::super::http::{ApiClient, encode_query_value};
use super::{
    Identities, IdentityArgs, Link, Meta, OutputArgs, fetch, field_line, id_from_prefix, object, write_links,
};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RoleCommand {
    /// Creates a role.
    Create {
        /// The role's name.
        #[arg(long)]
        name: String,
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// A policy to link, by ID (a unique prefix); repeatable.
        #[arg(long = "policy-id", value_name = "ID")]
        policy_id: Vec<String>,
        /// A policy to link, by name; repeatable.
        #[arg(long = "policy-name", value_name = "NAME")]
        policy_name: Vec<String>,
        #[command(flatten)]
        identities: IdentityArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Lists every role.
    List(OutputArgs),
    /// Reads one role by -id or -name.
    Read {
        #[command(flatten)]
        selector: RoleSelector,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Updates a role: by default what the flags name is added to what the role has (a new -name or
    /// -description replaces the old); with -no-merge the role becomes exactly what the flags say.
    Update {
        /// The role's ID (a unique prefix).
        #[arg(long)]
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// A policy to link, by ID (a unique prefix); repeatable.
        #[arg(long = "policy-id", value_name = "ID")]
        policy_id: Vec<String>,
        /// A policy to link, by name; repeatable.
        #[arg(long = "policy-name", value_name = "NAME")]
        policy_name: Vec<String>,
        #[command(flatten)]
        identities: IdentityArgs,
        /// Replace every field instead of merging with the current role.
        #[arg(long = "no-merge")]
        no_merge: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deletes one role by -id or -name.
    Delete(RoleSelector),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RoleSelector {
    /// The role's ID (a unique prefix).
    #[arg(long, conflicts_with = "name", required_unless_present = "name")]
    id: Option<String>,
    /// The role's name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Role {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    policies: Vec<Link>,
    #[serde(flatten)]
    identities: Identities,
    #[serde(flatten)]
    meta: Meta,
}

const ROLES: &str = "/v1/acl/roles";

pub(super) async fn run(client: &mut ApiClient, command: RoleCommand) -> Result<(), CliError> {
    match command {
        RoleCommand::Create {
            name,
            description,
            policy_id,
            policy_name,
            identities,
            output,
        } => {
            let identities = identities.parse()?;
            let policies = policy_links(client, policy_id, policy_name).await?;
            let body = json!({
                "Name": name,
                "Description": description,
                "Policies": policies,
                "ServiceIdentities": identities.service_identities,
                "NodeIdentities": identities.node_identities,
                "TemplatedPolicies": identities.templated_policies,
            })
            .to_string();
            let role: Value = fetch(
                client,
                Method::PUT,
                "/v1/acl/role",
                body,
                "Failed to create new role",
            )
            .await?;
            output.print(&role, format_role)?;
        }
        RoleCommand::List(output) => {
            let roles: Value =
                fetch(client, Method::GET, ROLES, "", "Failed to retrieve the role list").await?;
            output.print_list(&roles, "", format_role_list_entry)?;
        }
        RoleCommand::Read { selector, output } => {
            let role = read_role(client, &selector).await?;
            output.print(&role, format_role)?;
        }
        RoleCommand::Update {
            id,
            name,
            description,
            policy_id,
            policy_name,
            identities,
            no_merge,
            output,
        } => {
            let id = id_from_prefix(client, &id, ROLES, "ID", "role").await?;
            let path = format!("/v1/acl/role/{}", encode_query_value(&id));
            let identities = identities.parse()?;
            let policies = policy_links(client, policy_id, policy_name).await?;
            // Read it either way, so that a missing role fails before anything is written.
            let current: Value = fetch(
                client,
                Method::GET,
                &path,
                "",
                "Error when retrieving current role",
            )
            .await?;
            let current = object(current, "the current role")?;
            let body = if no_merge {
                json!({
                    "ID": id,
                    "Name": name.unwrap_or_default(),
                    "Description": description.unwrap_or_default(),
                    "Policies": policies,
                    "ServiceIdentities": identities.service_identities,
                    "NodeIdentities": identities.node_identities,
                    "TemplatedPolicies": identities.templated_policies,
                })
            } else {
                merged_role(&current, name, description, policies, identities)
            };
            let role: Value = fetch(
                client,
                Method::PUT,
                &path,
                body.to_string(),
                &format!("Error updating role {id:?}"),
            )
            .await?;
            output.print(&role, format_role)?;
        }
        RoleCommand::Delete(selector) => {
            let id = match (&selector.id, &selector.name) {
                (Some(id), _) => id_from_prefix(client, id, ROLES, "ID", "role").await?,
                _ => {
                    let role = read_role(client, &selector).await?;
                    role.get("ID")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                }
            };
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/role/{}", encode_query_value(&id)),
                    "",
                )
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context(&format!("Error deleting role {id:?}")))?;
            println!("Role {id:?} deleted successfully");
        }
    }
    Ok(())
}

/// Policy links by ID (resolving unique prefixes), then by name.
async fn policy_links(
    client: &mut ApiClient,
    ids: Vec<String>,
    names: Vec<String>,
) -> Result<Vec<Value>, CliError> {
    let mut links = Vec::with_capacity(ids.len() + names.len());
    for id in ids {
        let id = id_from_prefix(client, &id, "/v1/acl/policies", "ID", "policy").await?;
        links.push(json!({ "ID": id }));
    }
    links.extend(names.into_iter().map(|name| json!({ "Name": name })));
    Ok(links)
}

/// The current role with the flags' values added: new links and node identities appended, a service
/// identity replacing one of the same name, a non-empty name or description replacing the old.
fn merged_role(
    current: &Value,
    name: Option<String>,
    description: Option<String>,
    policies: Vec<Value>,
    identities: super::ParsedIdentities,
) -> Value {
    let mut role = current.clone();
    let list = |field: &str| {
        current
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if let Some(name) = name.filter(|name| !name.is_empty()) {
        role["Name"] = json!(name);
    }
    if let Some(description) = description.filter(|text| !text.is_empty()) {
        role["Description"] = json!(description);
    }
    let mut links: Vec<Value> = list("Policies")
        .into_iter()
        .filter_map(|link| link.get("ID").cloned())
        .map(|id| json!({ "ID": id }))
        .collect();
    let current_names: Vec<Value> = list("Policies")
        .into_iter()
        .filter_map(|link| link.get("Name").cloned())
        .collect();
    for link in policies {
        let known = link
            .get("ID")
            .is_some_and(|id| links.iter().any(|l| l.get("ID") == Some(id)))
            || link.get("Name").is_some_and(|name| current_names.contains(name));
        if !known {
            links.push(link);
        }
    }
    role["Policies"] = json!(links);
    let mut services = list("ServiceIdentities");
    for identity in identities.service_identities {
        let identity = json!(identity);
        match services
            .iter_mut()
            .find(|known| known.get("ServiceName") == identity.get("ServiceName"))
        {
            Some(known) => *known = identity,
            None => services.push(identity),
        }
    }
    role["ServiceIdentities"] = json!(services);
    let mut nodes = list("NodeIdentities");
    for identity in identities.node_identities {
        let identity = json!(identity);
        if !nodes.contains(&identity) {
            nodes.push(identity);
        }
    }
    role["NodeIdentities"] = json!(nodes);
    let mut templated = list("TemplatedPolicies");
    for policy in identities.templated_policies {
        let policy = json!(policy);
        if !templated.contains(&policy) {
            templated.push(policy);
        }
    }
    role["TemplatedPolicies"] = json!(templated);
    role
}

async fn read_role(client: &mut ApiClient, selector: &RoleSelector) -> Result<Value, CliError> {
    let path = match (&selector.id, &selector.name) {
        (Some(id), _) => {
            let id = id_from_prefix(client, id, ROLES, "ID", "role").await?;
            format!("/v1/acl/role/{}", encode_query_value(&id))
        }
        (None, Some(name)) => format!("/v1/acl/role/name/{}", encode_query_value(name)),
        (None, None) => {
            return Err(CliError::Usage(
                "Must specify either the -id or -name parameters".into(),
            ));
        }
    };
    fetch(client, Method::GET, &path, "", "Error reading role").await
}

fn format_role(role: &Role, meta: bool) -> String {
    write_role(role, meta, "", "")
}

fn format_role_list_entry(role: &Role, meta: bool) -> String {
    write_role(role, meta, &format!("{}:\n", role.name), "   ")
}

fn write_role(role: &Role, meta: bool, heading: &str, indent: &str) -> String {
    let mut out = heading.to_owned();
    field_line(&mut out, indent, 14, "ID", &role.id);
    if indent.is_empty() {
        field_line(&mut out, indent, 14, "Name", &role.name);
    }
    field_line(&mut out, indent, 14, "Description", &role.description);
    if meta {
        role.meta.write(&mut out, indent, 14, true);
    }
    write_links(&mut out, indent, "Policies", &role.policies);
    role.identities.write(&mut out, indent);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_prints_as_consul_prints_it() {
        let role: Role = serde_json::from_value(json!({
            "ID": "r1", "Name": "web", "Description": "d",
            "Policies": [{"ID": "p1", "Name": "pol"}],
            "ServiceIdentities": [{"ServiceName": "web", "Datacenters": ["dc1"]}],
            "CreateIndex": 5, "ModifyIndex": 6,
        }))
        .unwrap();
        assert_eq!(
            format_role(&role, false),
            "ID:           r1\nName:         web\nDescription:  d\nPolicies:\n   p1 - pol\n\
             Service Identities:\n   web (Datacenters: dc1)\n"
        );
        let entry = format_role_list_entry(&role, true);
        assert!(
            entry.starts_with("web:\n   ID:           r1\n   Description:  d\n"),
            "{entry}"
        );
        assert!(
            entry.contains("   Modify Index: 6\n   Policies:\n      p1 - pol\n"),
            "{entry}"
        );
    }
}
