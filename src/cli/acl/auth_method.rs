//! `tribune acl auth-method create|list|read|update|delete`. Only `jwt` methods are implemented by
//! the agent; the command line passes any type through and lets the agent refuse.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::http::{ApiClient, encode_query_value};
use super::super::{CliError, read_value_arg};
use super::{Meta, OutputArgs, fetch, field_line, object};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuthMethodCommand {
    /// Creates an auth method.
    Create {
        /// The method's type (`jwt`).
        #[arg(long = "type")]
        method_type: String,
        /// The method's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: MethodFields,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Lists every auth method (without their configuration).
    List(OutputArgs),
    /// Reads one auth method.
    Read {
        /// The method's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Updates an auth method: by default the flags given replace those fields and the rest is kept;
    /// with -no-merge the method becomes exactly what the flags say.
    Update {
        /// The method's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: MethodFields,
        /// Replace every field instead of merging with the current method.
        #[arg(long = "no-merge")]
        no_merge: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Deletes an auth method, its binding rules and the tokens its logins minted.
    Delete {
        /// The method's name.
        #[arg(long)]
        name: String,
    },
}

/// The fields `create` and `update` set.
#[derive(Debug, clap::Args)]
pub(crate) struct MethodFields {
    /// A name for humans.
    #[arg(long = "display-name")]
    display_name: Option<String>,
    /// A description.
    #[arg(long)]
    description: Option<String>,
    /// How long the tokens a login mints live (a duration such as `10m`).
    #[arg(long = "max-token-ttl", value_name = "DURATION")]
    max_token_ttl: Option<String>,
    /// Whether minted tokens are `local` (the default) or `global` (primary datacenter only).
    #[arg(long = "token-locality", value_name = "local|global")]
    token_locality: Option<String>,
    /// The type's configuration as JSON: literal, `@file`, or `-` for stdin.
    #[arg(long)]
    config: Option<String>,
}

impl MethodFields {
    /// Sets the fields the flags name on `method` (a JSON object).
    fn apply(self, method: &mut Value) -> Result<(), CliError> {
        if let Some(display_name) = self.display_name {
            method["DisplayName"] = json!(display_name);
        }
        if let Some(description) = self.description {
            method["Description"] = json!(description);
        }
        if let Some(ttl) = self.max_token_ttl {
            method["MaxTokenTTL"] = json!(ttl);
        }
        if let Some(locality) = self.token_locality {
            method["TokenLocality"] = json!(locality);
        }
        if let Some(config) = self.config {
            let text = read_value_arg(&config)?;
            let parsed: Value = serde_json::from_slice(&text)
                .map_err(|error| CliError::Usage(format!("Error parsing JSON configuration: {error}")))?;
            method["Config"] = parsed;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AuthMethod {
    name: String,
    #[serde(rename = "Type", default)]
    method_type: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(rename = "MaxTokenTTL", default)]
    max_token_ttl: String,
    #[serde(default)]
    token_locality: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(flatten)]
    meta: Meta,
}

fn method_path(name: &str) -> String {
    format!("/v1/acl/auth-method/{}", encode_query_value(name))
}

pub(super) async fn run(client: &mut ApiClient, command: AuthMethodCommand) -> Result<(), CliError> {
    match command {
        AuthMethodCommand::Create {
            method_type,
            name,
            fields,
            output,
        } => {
            let mut method = json!({ "Name": name, "Type": method_type });
            fields.apply(&mut method)?;
            let created: Value = fetch(
                client,
                Method::PUT,
                "/v1/acl/auth-method",
                method.to_string(),
                "Failed to create new auth method",
            )
            .await?;
            output.print(&created, format_method)?;
        }
        AuthMethodCommand::List(output) => {
            let methods: Value = fetch(
                client,
                Method::GET,
                "/v1/acl/auth-methods",
                "",
                "Failed to retrieve the auth method list",
            )
            .await?;
            output.print_list(&methods, "", format_method_list_entry)?;
        }
        AuthMethodCommand::Read { name, output } => {
            let method: Value = fetch(
                client,
                Method::GET,
                &method_path(&name),
                "",
                "Error reading auth method",
            )
            .await?;
            output.print(&method, format_method)?;
        }
        AuthMethodCommand::Update {
            name,
            fields,
            no_merge,
            output,
        } => {
            let path = method_path(&name);
            let current: Value = fetch(
                client,
                Method::GET,
                &path,
                "",
                "Error when retrieving current auth method",
            )
            .await?;
            let current = object(current, "the current auth method")?;
            let mut method = if no_merge {
                // The type cannot change, so it is kept even here.
                json!({ "Name": name, "Type": current.get("Type").cloned().unwrap_or(Value::Null) })
            } else {
                current
            };
            fields.apply(&mut method)?;
            let updated: Value = fetch(
                client,
                Method::PUT,
                &path,
                method.to_string(),
                &format!("Error updating auth method {name:?}"),
            )
            .await?;
            output.print(&updated, format_method)?;
        }
        AuthMethodCommand::Delete { name } => {
            client
                .call(Method::DELETE, &method_path(&name), "")
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context(&format!("Error deleting auth method {name:?}")))?;
            println!("Auth-method {name:?} deleted successfully");
        }
    }
    Ok(())
}

fn format_method(method: &AuthMethod, meta: bool) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| field_line(&mut out, "", 15, name, value);
    line("Name", &method.name);
    line("Type", &method.method_type);
    if !method.display_name.is_empty() {
        line("DisplayName", &method.display_name);
    }
    line("Description", &method.description);
    if !method.max_token_ttl.is_empty() {
        line("MaxTokenTTL", &method.max_token_ttl);
    }
    if !method.token_locality.is_empty() {
        line("TokenLocality", &method.token_locality);
    }
    if meta {
        method.meta.write(&mut out, "", 15, false);
    }
    out.push_str("Config:\n");
    let config = method.config.clone().unwrap_or(Value::Null);
    out.push_str(&serde_json::to_string_pretty(&config).unwrap_or_else(|_| config.to_string()));
    out.push('\n');
    out
}

fn format_method_list_entry(method: &AuthMethod, meta: bool) -> String {
    let mut out = format!("{}:\n", method.name);
    field_line(&mut out, "   ", 14, "Type", &method.method_type);
    if !method.display_name.is_empty() {
        field_line(&mut out, "   ", 14, "DisplayName", &method.display_name);
    }
    field_line(&mut out, "   ", 14, "Description", &method.description);
    if meta {
        method.meta.write(&mut out, "   ", 14, false);
    }
    out
}
