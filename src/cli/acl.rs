//! `tribune acl ...`: bootstrap, policies, tokens and the agent's tokens, printed as Consul prints them.

use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;
use serde_json::json;

use super::http::{ApiClient, encode_query_value};
use super::{CliError, GlobalArgs, read_value_arg};

/// The ACL verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AclCommand {
    /// Creates the first management token (once per datacenter).
    Bootstrap,
    /// Creates, lists, reads and deletes policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Creates, lists, reads and deletes tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Sets one of the agent's tokens: default, agent, agent_recovery or replication.
    #[command(name = "set-agent-token")]
    SetAgentToken {
        /// Which token.
        kind: String,
        /// The token's secret.
        token: String,
    },
}

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
    },
    /// Lists every policy.
    List,
    /// Reads one policy by -id or -name.
    Read(PolicySelector),
    /// Deletes one policy by -id or -name.
    Delete(PolicySelector),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PolicySelector {
    /// The policy's ID.
    #[arg(long, conflicts_with = "name", required_unless_present = "name")]
    id: Option<String>,
    /// The policy's name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Creates a token.
    Create {
        /// A description.
        #[arg(long, default_value = "")]
        description: String,
        /// A policy to link, by ID; repeatable.
        #[arg(long = "policy-id", value_name = "ID")]
        policy_id: Vec<String>,
        /// A policy to link, by name; repeatable.
        #[arg(long = "policy-name", value_name = "NAME")]
        policy_name: Vec<String>,
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
    },
    /// Lists every token.
    List,
    /// Reads a token by accessor ID, or the one in use with -self.
    Read {
        /// The token's accessor ID (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id", required_unless_present = "self_token")]
        id: Option<String>,
        /// Read the token the command runs with.
        #[arg(long = "self")]
        self_token: bool,
    },
    /// Clones a token: a new accessor and secret with the same policies.
    Clone {
        /// The accessor ID of the token to clone (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id")]
        id: String,
        /// The clone's description (the original's when absent).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Updates a token's description and policies.
    Update {
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
    },
    /// Deletes a token by accessor ID.
    Delete {
        /// The token's accessor ID (a unique prefix, or `anonymous`).
        #[arg(long, alias = "accessor-id")]
        id: String,
    },
}

/// The anonymous token's accessor ID, which `-id anonymous` names.
const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

/// Turns an `-id` argument into an accessor ID as Consul's CLI does: `anonymous`, a full ID, or a
/// prefix that matches exactly one token.
async fn token_accessor(client: &mut ApiClient, id: &str) -> Result<String, CliError> {
    if id == "anonymous" {
        return Ok(ANONYMOUS_ACCESSOR.to_owned());
    }
    if id.len() == 36 {
        return Ok(id.to_owned());
    }
    let tokens: Vec<Token> = client
        .call(Method::GET, "/v1/acl/tokens", "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("Error determining token ID"))?;
    let mut matches = tokens
        .into_iter()
        .filter(|token| token.accessor_id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(token), None) => Ok(token.accessor_id),
        (None, _) => Err(CliError::Failed(format!(
            "Error determining token ID: No such token ID with prefix: {id}"
        ))),
        (Some(_), Some(_)) => Err(CliError::Failed(format!(
            "Error determining token ID: Multiple token IDs with prefix: {id}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Link {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Token {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID", default)]
    secret_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    create_time: Option<String>,
    #[serde(default)]
    expiration_time: Option<String>,
    #[serde(default)]
    policies: Vec<Link>,
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
}

pub(crate) async fn run(command: AclCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    match command {
        AclCommand::Bootstrap => {
            let token: Token = client
                .call(Method::PUT, "/v1/acl/bootstrap", "")
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("Failed ACL bootstrapping"))?;
            print!("{}", format_token(&token));
        }
        AclCommand::Policy(command) => policy(&mut client, command).await?,
        AclCommand::Token(command) => token(&mut client, command).await?,
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

async fn policy(client: &mut ApiClient, command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Create {
            name,
            description,
            rules,
            valid_datacenter,
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
            let policy: Policy = client
                .call(Method::PUT, "/v1/acl/policy", body)
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("creating policy"))?;
            print!("{}", format_policy(&policy));
        }
        PolicyCommand::List => {
            let policies: Vec<Policy> = client
                .call(Method::GET, "/v1/acl/policies", "")
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("retrieving policy list"))?;
            for policy in &policies {
                println!("{}:", policy.name);
                for line in format_policy_summary(policy).lines() {
                    println!("   {line}");
                }
            }
        }
        PolicyCommand::Read(selector) => {
            let policy = read_policy(client, &selector).await?;
            print!("{}", format_policy(&policy));
        }
        PolicyCommand::Delete(selector) => {
            let id = match (&selector.id, &selector.name) {
                (Some(id), _) => id.clone(),
                (None, _) => read_policy(client, &selector).await?.id,
            };
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

async fn read_policy(client: &mut ApiClient, selector: &PolicySelector) -> Result<Policy, CliError> {
    let path = match (&selector.id, &selector.name) {
        (Some(id), _) => format!("/v1/acl/policy/{}", encode_query_value(id)),
        (None, Some(name)) => format!("/v1/acl/policy/name/{}", encode_query_value(name)),
        (None, None) => return Err(CliError::Usage("Must specify either -id or -name".into())),
    };
    client
        .call(Method::GET, &path, "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("reading policy"))
}

async fn token(client: &mut ApiClient, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            description,
            policy_id,
            policy_name,
            accessor,
            secret,
            local,
            expires_ttl,
        } => {
            let policies: Vec<_> = policy_id
                .into_iter()
                .map(|id| json!({ "ID": id }))
                .chain(policy_name.into_iter().map(|name| json!({ "Name": name })))
                .collect();
            let body = json!({
                "Description": description,
                "Policies": policies,
                "AccessorID": accessor.unwrap_or_default(),
                "SecretID": secret.unwrap_or_default(),
                "Local": local,
                "ExpirationTTL": expires_ttl.unwrap_or_default(),
            })
            .to_string();
            let token: Token = client
                .call(Method::PUT, "/v1/acl/token", body)
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("Failed to create new token"))?;
            print!("{}", format_token(&token));
        }
        TokenCommand::List => {
            let tokens: Vec<Token> = client
                .call(Method::GET, "/v1/acl/tokens", "")
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("retrieving the token list"))?;
            for (i, token) in tokens.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", format_token(token));
            }
        }
        TokenCommand::Read { id, self_token } => {
            let path = match id {
                Some(id) if !self_token => {
                    let id = token_accessor(client, &id).await?;
                    format!("/v1/acl/token/{}", encode_query_value(&id))
                }
                _ => "/v1/acl/token/self".to_owned(),
            };
            let token: Token = client
                .call(Method::GET, &path, "")
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("reading token"))?;
            print!("{}", format_token(&token));
        }
        TokenCommand::Clone { id, description } => {
            let id = token_accessor(client, &id).await?;
            let body = json!({ "Description": description }).to_string();
            let token: Token = client
                .call(
                    Method::PUT,
                    &format!("/v1/acl/token/{}/clone", encode_query_value(&id)),
                    body,
                )
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("Error cloning token"))?;
            print!("{}", format_token(&token));
        }
        TokenCommand::Update {
            id,
            description,
            policy_id,
            policy_name,
            append_policy_id,
            append_policy_name,
        } => {
            let id = token_accessor(client, &id).await?;
            let path = format!("/v1/acl/token/{}", encode_query_value(&id));
            let current: Token = client
                .call(Method::GET, &path, "")
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context("Error when retrieving current token"))?;
            let links = |ids: Vec<String>, names: Vec<String>| -> Vec<serde_json::Value> {
                ids.into_iter()
                    .map(|id| json!({ "ID": id }))
                    .chain(names.into_iter().map(|name| json!({ "Name": name })))
                    .collect()
            };
            // As Consul's CLI: -policy-* replace the links, -append-policy-* add to them, and without
            // either the token keeps the links it has.
            let mut policies: Vec<serde_json::Value> = if policy_id.is_empty() && policy_name.is_empty() {
                current
                    .policies
                    .iter()
                    .map(|link| json!({ "ID": link.id }))
                    .collect()
            } else {
                links(policy_id, policy_name)
            };
            policies.extend(links(append_policy_id, append_policy_name));
            let mut body = json!({
                "AccessorID": id,
                "SecretID": current.secret_id,
                "Description": description.unwrap_or(current.description),
                "Policies": policies,
                "Local": current.local,
            });
            if let Some(expiration) = current.expiration_time {
                body["ExpirationTime"] = json!(expiration);
            }
            let token: Token = client
                .call(Method::PUT, &path, body.to_string())
                .await
                .and_then(|reply| reply.ok())
                .and_then(|reply| reply.json())
                .map_err(|error| error.context(&format!("Failed to update token {id}")))?;
            print!("{}", format_token(&token));
        }
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

fn format_token(token: &Token) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| out.push_str(&format!("{:<18}{value}\n", format!("{name}:")));
    line("AccessorID", &token.accessor_id);
    line("SecretID", &token.secret_id);
    line("Description", &token.description);
    line("Local", &token.local.to_string());
    if let Some(created) = &token.create_time {
        line("Create Time", created);
    }
    if let Some(expires) = &token.expiration_time {
        line("Expiration Time", expires);
    }
    out.push_str("Policies:\n");
    for link in &token.policies {
        out.push_str(&format!("   {} - {}\n", link.id, link.name));
    }
    out
}

fn format_policy_summary(policy: &Policy) -> String {
    let datacenters = policy.datacenters.as_deref().unwrap_or_default().join(", ");
    format!(
        "{:<14}{}\n{:<14}{}\n{:<14}{}\n",
        "ID:", policy.id, "Description:", policy.description, "Datacenters:", datacenters
    )
}

fn format_policy(policy: &Policy) -> String {
    let datacenters = policy.datacenters.as_deref().unwrap_or_default().join(", ");
    let mut out = format!(
        "{:<14}{}\n{:<14}{}\n{:<14}{}\n{:<14}{}\nRules:\n",
        "ID:",
        policy.id,
        "Name:",
        policy.name,
        "Description:",
        policy.description,
        "Datacenters:",
        datacenters
    );
    if let Some(rules) = &policy.rules {
        out.push_str(rules);
        if !rules.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
