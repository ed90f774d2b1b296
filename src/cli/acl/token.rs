//! `tribune acl token create|list|read|clone|update|delete`.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::CliError;
use super::super::http::{ApiClient, encode_query_value};
use super::{
    Identities, IdentityArgs, Link, Meta, OutputArgs, fetch, field_line, id_from_prefix,
    parse_node_identities, parse_service_identities, parse_templated_policy, write_links,
};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Creates a token.
    Create(Box<TokenCreate>),
    /// Lists every token.
    List(OutputArgs),
    /// Reads a token by accessor ID, or the one in use with -self.
    Read {
        /// The token's accessor ID (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id", required_unless_present = "self_token")]
        id: Option<String>,
        /// Read the token the command runs with.
        #[arg(long = "self")]
        self_token: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Clones a token: a new accessor and secret with the same links and identities.
    Clone {
        /// The accessor ID of the token to clone (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id")]
        id: String,
        /// The clone's description (the original's when absent).
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Updates a token. What no flag names is kept; `-policy-*`, `-role-*`, `-service-identity`,
    /// `-node-identity` and `-templated-policy` replace their kind, the `-append-*` variants add to it.
    Update(Box<TokenUpdate>),
    /// Deletes a token by accessor ID.
    Delete {
        /// The token's accessor ID (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id")]
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenCreate {
    /// A description.
    #[arg(long, default_value = "")]
    description: String,
    /// A policy to link, by ID (a unique prefix); repeatable.
    #[arg(long = "policy-id", value_name = "ID")]
    policy_id: Vec<String>,
    /// A policy to link, by name; repeatable.
    #[arg(long = "policy-name", value_name = "NAME")]
    policy_name: Vec<String>,
    /// A role to link, by ID (a unique prefix); repeatable.
    #[arg(long = "role-id", value_name = "ID")]
    role_id: Vec<String>,
    /// A role to link, by name; repeatable.
    #[arg(long = "role-name", value_name = "NAME")]
    role_name: Vec<String>,
    #[command(flatten)]
    identities: IdentityArgs,
    /// The accessor ID (generated when absent).
    #[arg(long)]
    accessor: Option<String>,
    /// The secret (generated when absent).
    #[arg(long)]
    secret: Option<String>,
    /// Keep the token in this datacenter.
    #[arg(long)]
    local: bool,
    /// How long the token lives (a duration such as `10m`); it never expires when absent.
    #[arg(long = "expires-ttl", value_name = "DURATION")]
    expires_ttl: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenUpdate {
    /// The token's accessor ID (a unique prefix, or `anonymous`).
    #[arg(long, alias = "accessor-id")]
    id: String,
    /// A new description.
    #[arg(long)]
    description: Option<String>,
    /// A policy to link, by ID, replacing the current ones; repeatable.
    #[arg(long = "policy-id", value_name = "ID")]
    policy_id: Vec<String>,
    /// A policy to link, by name, replacing the current ones; repeatable.
    #[arg(long = "policy-name", value_name = "NAME")]
    policy_name: Vec<String>,
    /// A policy to add, by ID, keeping the current ones; repeatable.
    #[arg(long = "append-policy-id", value_name = "ID")]
    append_policy_id: Vec<String>,
    /// A policy to add, by name, keeping the current ones; repeatable.
    #[arg(long = "append-policy-name", value_name = "NAME")]
    append_policy_name: Vec<String>,
    /// A role to link, by ID, replacing the current ones; repeatable.
    #[arg(long = "role-id", value_name = "ID")]
    role_id: Vec<String>,
    /// A role to link, by name, replacing the current ones; repeatable.
    #[arg(long = "role-name", value_name = "NAME")]
    role_name: Vec<String>,
    /// A role to add, by ID, keeping the current ones; repeatable.
    #[arg(long = "append-role-id", value_name = "ID")]
    append_role_id: Vec<String>,
    /// A role to add, by name, keeping the current ones; repeatable.
    #[arg(long = "append-role-name", value_name = "NAME")]
    append_role_name: Vec<String>,
    /// A service identity (`NAME` or `NAME:DC1,DC2`), replacing the current ones; repeatable.
    #[arg(long = "service-identity", value_name = "NAME[:DCS]")]
    service_identity: Vec<String>,
    /// A service identity to add (one of the same name is replaced); repeatable.
    #[arg(long = "append-service-identity", value_name = "NAME[:DCS]")]
    append_service_identity: Vec<String>,
    /// A node identity (`NAME:DC`), replacing the current ones; repeatable.
    #[arg(long = "node-identity", value_name = "NAME:DC")]
    node_identity: Vec<String>,
    /// A node identity to add; repeatable.
    #[arg(long = "append-node-identity", value_name = "NAME:DC")]
    append_node_identity: Vec<String>,
    /// A templated policy replacing the current ones; its variables come from -var.
    #[arg(
        long = "templated-policy",
        value_name = "NAME",
        conflicts_with = "append_templated_policy"
    )]
    templated_policy: Option<String>,
    /// A templated policy to add; its variables come from -var.
    #[arg(long = "append-templated-policy", value_name = "NAME")]
    append_templated_policy: Option<String>,
    /// A variable of the templated policy, `name:VALUE`; repeatable.
    #[arg(long = "var", value_name = "name:VALUE")]
    var: Vec<String>,
    /// Deprecated in Consul: -policy-* add to the current policies instead of replacing them.
    #[arg(long = "merge-policies")]
    merge_policies: bool,
    /// Deprecated in Consul: -role-* add to the current roles.
    #[arg(long = "merge-roles")]
    merge_roles: bool,
    /// Deprecated in Consul: -service-identity adds to the current service identities.
    #[arg(long = "merge-service-identities")]
    merge_service_identities: bool,
    /// Deprecated in Consul: -node-identity adds to the current node identities.
    #[arg(long = "merge-node-identities")]
    merge_node_identities: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// The anonymous token's accessor ID, which `-id anonymous` names.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Turns an `-id` argument into an accessor ID as Consul's CLI does: `anonymous`, a full ID, or a
/// prefix that matches exactly one token.
async fn token_accessor(client: &mut ApiClient, id: &str) -> Result<String, CliError> {
    if id == "anonymous" {
        return Ok(ANONYMOUS_ACCESSOR.to_owned());
    }
    id_from_prefix(client, id, "/v1/acl/tokens", "AccessorID", "token").await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Token {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID", default)]
    secret_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    auth_method: String,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    expiration_time: Option<String>,
    #[serde(default)]
    policies: Vec<Link>,
    #[serde(default)]
    roles: Vec<Link>,
    #[serde(flatten)]
    identities: Identities,
    #[serde(flatten)]
    meta: Meta,
}

/// Links by ID (resolving unique prefixes) then by name, as a request body's `Policies` or `Roles`.
async fn links(
    client: &mut ApiClient,
    ids: Vec<String>,
    names: Vec<String>,
    list_path: &str,
    what: &str,
) -> Result<Vec<Value>, CliError> {
    let mut out = Vec::with_capacity(ids.len() + names.len());
    for id in ids {
        let id = id_from_prefix(client, &id, list_path, "ID", what).await?;
        out.push(json!({ "ID": id }));
    }
    out.extend(names.into_iter().map(|name| json!({ "Name": name })));
    Ok(out)
}

pub(super) async fn run(client: &mut ApiClient, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(create) => {
            let TokenCreate {
                description,
                policy_id,
                policy_name,
                role_id,
                role_name,
                identities,
                accessor,
                secret,
                local,
                expires_ttl,
                output,
            } = *create;
            let identities = identities.parse()?;
            let policies = links(client, policy_id, policy_name, "/v1/acl/policies", "policy").await?;
            let roles = links(client, role_id, role_name, "/v1/acl/roles", "role").await?;
            let body = json!({
                "Description": description,
                "Policies": policies,
                "Roles": roles,
                "ServiceIdentities": identities.service_identities,
                "NodeIdentities": identities.node_identities,
                "TemplatedPolicies": identities.templated_policies,
                "AccessorID": accessor.unwrap_or_default(),
                "SecretID": secret.unwrap_or_default(),
                "Local": local,
                "ExpirationTTL": expires_ttl.unwrap_or_default(),
            })
            .to_string();
            let token: Value = fetch(
                client,
                Method::PUT,
                "/v1/acl/token",
                body,
                "Failed to create new token",
            )
            .await?;
            output.print(&token, format_token)?;
        }
        TokenCommand::List(output) => {
            let tokens: Value = fetch(
                client,
                Method::GET,
                "/v1/acl/tokens",
                "",
                "retrieving the token list",
            )
            .await?;
            output.print_list(&tokens, "\n", format_token)?;
        }
        TokenCommand::Read {
            id,
            self_token,
            output,
        } => {
            let path = match id {
                Some(id) if !self_token => {
                    let id = token_accessor(client, &id).await?;
                    format!("/v1/acl/token/{}", encode_query_value(&id))
                }
                _ => "/v1/acl/token/self".to_owned(),
            };
            let token: Value = fetch(client, Method::GET, &path, "", "reading token").await?;
            output.print(&token, format_token)?;
        }
        TokenCommand::Clone {
            id,
            description,
            output,
        } => {
            let id = token_accessor(client, &id).await?;
            let body = json!({ "Description": description }).to_string();
            let path = format!("/v1/acl/token/{}/clone", encode_query_value(&id));
            let token: Value = fetch(client, Method::PUT, &path, body, "Error cloning token").await?;
            output.print(&token, format_token)?;
        }
        TokenCommand::Update(update) => self::update(client, *update).await?,
        TokenCommand::Delete { id } => {
            let id = token_accessor(client, &id).await?;
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/token/{}", encode_query_value(&id)),
                    "",
                )
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context(&format!("deleting token {id:?}")))?;
            println!("Token {id:?} deleted successfully");
        }
    }
    Ok(())
}

/// The current entries of `field` in `current`, as a request body takes them: links by ID only (the
/// agent names them), other entries as they are.
fn current_entries(current: &Value, field: &str) -> Vec<Value> {
    let entries = current
        .get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if field == "Policies" || field == "Roles" {
        entries
            .into_iter()
            .filter_map(|link| link.get("ID").cloned())
            .map(|id| json!({ "ID": id }))
            .collect()
    } else {
        entries
    }
}

/// One kind of entry after an update: replaced when `replace` has entries, else the current ones
/// plus `append`. Both at once is refused, as Consul refuses it. `same` says when an appended entry
/// takes the place of a current one.
fn merge(
    current: Vec<Value>,
    replace: Vec<Value>,
    append: Vec<Value>,
    flags: &str,
    same: fn(&Value, &Value) -> bool,
) -> Result<Vec<Value>, CliError> {
    if !replace.is_empty() && !append.is_empty() {
        return Err(CliError::Usage(format!(
            "Cannot combine {flags} with their -append- variants: the first replace, the second add"
        )));
    }
    if !replace.is_empty() {
        return Ok(replace);
    }
    let mut merged = current;
    for entry in append {
        match merged.iter_mut().find(|known| same(known, &entry)) {
            Some(known) => *known = entry,
            None => merged.push(entry),
        }
    }
    Ok(merged)
}

fn same_field(field: &'static str) -> impl Fn(&Value, &Value) -> bool {
    move |a, b| a.get(field).is_some_and(|value| Some(value) == b.get(field))
}

fn to_values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
    items
        .into_iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

async fn update(client: &mut ApiClient, update: TokenUpdate) -> Result<(), CliError> {
    let id = token_accessor(client, &update.id).await?;
    let path = format!("/v1/acl/token/{}", encode_query_value(&id));
    let current: Value = fetch(
        client,
        Method::GET,
        &path,
        "",
        "Error when retrieving current token",
    )
    .await?;

    // With Consul's deprecated -merge-* flags, the replacing flags add instead.
    let split = |merge: bool, replace: Vec<Value>, append: Vec<Value>| {
        if merge {
            (Vec::new(), replace.into_iter().chain(append).collect())
        } else {
            (replace, append)
        }
    };
    let (replace, append) = split(
        update.merge_policies,
        links(
            client,
            update.policy_id,
            update.policy_name,
            "/v1/acl/policies",
            "policy",
        )
        .await?,
        links(
            client,
            update.append_policy_id,
            update.append_policy_name,
            "/v1/acl/policies",
            "policy",
        )
        .await?,
    );
    let policies = merge(
        current_entries(&current, "Policies"),
        replace,
        append,
        "-policy-id/-policy-name",
        |a, b| same_field("ID")(a, b) || same_field("Name")(a, b),
    )?;
    let (replace, append) = split(
        update.merge_roles,
        links(client, update.role_id, update.role_name, "/v1/acl/roles", "role").await?,
        links(
            client,
            update.append_role_id,
            update.append_role_name,
            "/v1/acl/roles",
            "role",
        )
        .await?,
    );
    let roles = merge(
        current_entries(&current, "Roles"),
        replace,
        append,
        "-role-id/-role-name",
        |a, b| same_field("ID")(a, b) || same_field("Name")(a, b),
    )?;
    let (replace, append) = split(
        update.merge_service_identities,
        to_values(parse_service_identities(&update.service_identity)?),
        to_values(parse_service_identities(&update.append_service_identity)?),
    );
    let service_identities = merge(
        current_entries(&current, "ServiceIdentities"),
        replace,
        append,
        "-service-identity",
        |a, b| same_field("ServiceName")(a, b),
    )?;
    let (replace, append) = split(
        update.merge_node_identities,
        to_values(parse_node_identities(&update.node_identity)?),
        to_values(parse_node_identities(&update.append_node_identity)?),
    );
    let node_identities = merge(
        current_entries(&current, "NodeIdentities"),
        replace,
        append,
        "-node-identity",
        |a, b| a == b,
    )?;
    // The two template flags conflict, so at most one names the template the -var flags fill.
    let appending = update.append_templated_policy.is_some();
    let template = update
        .templated_policy
        .as_deref()
        .or(update.append_templated_policy.as_deref());
    let templated = to_values(
        parse_templated_policy(template, &update.var)?
            .into_iter()
            .collect(),
    );
    let (replace, append) = if appending {
        (Vec::new(), templated)
    } else {
        (templated, Vec::new())
    };
    let templated_policies = merge(
        current_entries(&current, "TemplatedPolicies"),
        replace,
        append,
        "-templated-policy",
        |a, b| a == b,
    )?;

    let description = update.description.unwrap_or_else(|| {
        current
            .get("Description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    });
    let mut body = json!({
        "AccessorID": id,
        "SecretID": current.get("SecretID").cloned().unwrap_or(Value::Null),
        "Description": description,
        "Policies": policies,
        "Roles": roles,
        "ServiceIdentities": service_identities,
        "NodeIdentities": node_identities,
        "TemplatedPolicies": templated_policies,
        "Local": current.get("Local").cloned().unwrap_or(Value::Bool(false)),
    });
    if let Some(expiration) = current.get("ExpirationTime").filter(|value| !value.is_null()) {
        body["ExpirationTime"] = expiration.clone();
    }
    let token: Value = fetch(
        client,
        Method::PUT,
        &path,
        body.to_string(),
        &format!("Failed to update token {id}"),
    )
    .await?;
    update.output.print(&token, format_token)
}

/// A token as Consul prints it.
pub(super) fn format_token(token: &Token, meta: bool) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| field_line(&mut out, "", 18, name, value);
    line("AccessorID", &token.accessor_id);
    line("SecretID", &token.secret_id);
    line("Description", &token.description);
    line("Local", &token.local.to_string());
    if !token.auth_method.is_empty() {
        line("Auth Method", &token.auth_method);
    }
    if let Some(created) = &token.create_time {
        line("Create Time", &super::go_time(created));
    }
    if let Some(expires) = &token.expiration_time {
        line("Expiration Time", &super::go_time(expires));
    }
    if meta {
        token.meta.write(&mut out, "", 18, true);
    }
    write_links(&mut out, "", "Policies", &token.policies);
    write_links(&mut out, "", "Roles", &token.roles);
    token.identities.write(&mut out, "");
    out
}
