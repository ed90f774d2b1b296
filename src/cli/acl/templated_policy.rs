//! `tribune acl templated-policy list|read|preview`: the built-in policy templates.

use hyper::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::CliError;
use super::super::http::{ApiClient, encode_key};
use super::{Format, OutputArgs, fetch, field_line, indented_json, parse_template_variables};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TemplatedPolicyCommand {
    /// Lists the templates' names.
    List(OutputArgs),
    /// Shows one template: what it takes and how to use it (-meta: its schema and raw rules).
    Read {
        /// The template's name (`builtin/service`, ...).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Shows the policy a template synthesizes for the given variables.
    Preview {
        /// The template's name.
        #[arg(long)]
        name: String,
        /// A variable, `name:VALUE`; repeatable.
        #[arg(long = "var", value_name = "name:VALUE")]
        var: Vec<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Template {
    template_name: String,
    #[serde(default)]
    schema: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SynthesizedPolicy {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    datacenters: Vec<String>,
    #[serde(default)]
    rules: String,
}

pub(super) async fn run(client: &mut ApiClient, command: TemplatedPolicyCommand) -> Result<(), CliError> {
    match command {
        TemplatedPolicyCommand::List(output) => {
            let templates: Value = fetch(
                client,
                Method::GET,
                "/v1/acl/templated-policies",
                "",
                "Failed to retrieve the templated policies",
            )
            .await?;
            match output.format {
                Format::Json => println!("{}", indented_json(&templates)),
                Format::Pretty => {
                    let mut names: Vec<&String> = templates
                        .as_object()
                        .map(|map| map.keys().collect())
                        .unwrap_or_default();
                    names.sort();
                    for name in names {
                        println!("{name}");
                    }
                }
            }
        }
        TemplatedPolicyCommand::Read { name, output } => {
            let path = format!("/v1/acl/templated-policy/name/{}", encode_key(&name));
            let template: Value =
                fetch(client, Method::GET, &path, "", "Error reading templated policy").await?;
            output.print(&template, format_template)?;
        }
        TemplatedPolicyCommand::Preview { name, var, output } => {
            let variables = parse_template_variables(&var)?;
            let body = variables.map(|vars| json!(vars).to_string()).unwrap_or_default();
            let path = format!("/v1/acl/templated-policy/preview/{}", encode_key(&name));
            let policy: Value = fetch(
                client,
                Method::POST,
                &path,
                body,
                "Error previewing templated policy",
            )
            .await?;
            output.print(&policy, format_preview)?;
        }
    }
    Ok(())
}

fn format_template(template: &Template, meta: bool) -> String {
    let mut out = String::new();
    field_line(&mut out, "", 17, "Name", &template.template_name);
    field_line(&mut out, "", 17, "Description", &template.description);
    let takes_name = !template.schema.is_empty();
    if takes_name {
        out.push_str(
            "Input variables:\n\tName: String - Required - the name the template is filled in for.\n",
        );
    } else {
        out.push_str("Input variables: None\n");
    }
    out.push_str("Example usage:\n");
    let var = if takes_name { " -var name:NAME" } else { "" };
    out.push_str(&format!(
        "\ttribune acl token create -templated-policy {}{var}\n",
        template.template_name
    ));
    if meta {
        if takes_name {
            out.push_str(&format!("Schema:\n{}\n\n", template.schema));
        }
        out.push_str(&format!("Raw Template:\n{}\n", template.template));
    }
    out
}

fn format_preview(policy: &SynthesizedPolicy, _meta: bool) -> String {
    let mut out = String::new();
    field_line(&mut out, "", 14, "Name", &policy.name);
    field_line(&mut out, "", 14, "Description", &policy.description);
    field_line(&mut out, "", 14, "Datacenters", &policy.datacenters.join(", "));
    out.push_str("Rules:\n");
    out.push_str(&policy.rules);
    if !policy.rules.ends_with('\n') {
        out.push('\n');
    }
    out
}
