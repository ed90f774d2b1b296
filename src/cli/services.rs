//! `tribune services register|deregister`: adds a service to the agent's own state, or removes
//! it, through `/v1/agent/service/register` and `/v1/agent/service/deregister/:id` — the agent's
//! anti-entropy then carries it to the catalog. A service is described by flags or by definition
//! files (JSON or HCL with `service {}` or `services []` blocks, as the agent's configuration has
//! them), as Consul's command takes them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;

use super::http::encode_key;
use super::{CliError, GlobalArgs};

/// The service verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ServicesCommand {
    /// Registers a service on the agent (-name, -id, -address, -port, -tag, -meta).
    Register(RegisterArgs),
    /// Deregisters a service of the agent by its -id.
    Deregister(DeregisterArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct RegisterArgs {
    /// The service's name.
    #[arg(long)]
    name: Option<String>,
    /// The instance's ID (default: the name).
    #[arg(long)]
    id: Option<String>,
    /// The instance's address (default: the node's).
    #[arg(long)]
    address: Option<String>,
    /// The instance's port.
    #[arg(long)]
    port: Option<u16>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata as key=value (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
    /// Definition files (JSON or HCL) with `service` or `services` blocks, instead of flags.
    files: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeregisterArgs {
    /// The ID of the instance to remove.
    #[arg(long)]
    id: Option<String>,
    /// Definition files whose services are removed, instead of -id.
    files: Vec<String>,
}

/// The service definitions of `files`, in order, each as the agent's register body takes it.
fn definitions(files: &[String]) -> Result<Vec<serde_json::Value>, CliError> {
    let mut services = Vec::new();
    for file in files {
        let mut loader = tribune::config::ConfigLoader::new();
        let config = loader
            .add_file(std::path::Path::new(file))
            .and_then(|loader| loader.resolve())
            .map_err(|error| CliError::Failed(format!("Error reading {file}: {error}")))?;
        if config.local.services.is_empty() {
            return Err(CliError::Failed(format!(
                "Error reading {file}: no service definition in it"
            )));
        }
        services.extend(config.local.services);
    }
    Ok(services)
}

/// A definition's name and instance ID (the name when it sets none), in any key spelling.
fn name_and_id(definition: &serde_json::Value) -> (String, String) {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| definition.get(*n).and_then(serde_json::Value::as_str))
            .unwrap_or_default()
            .to_owned()
    };
    let name = field(&["Name", "name"]);
    let id = field(&["ID", "Id", "id"]);
    let id = if id.is_empty() { name.clone() } else { id };
    (name, id)
}

/// The registration body the flags describe, or why they describe none.
fn registration(args: &RegisterArgs) -> Result<serde_json::Value, CliError> {
    let name = args.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Err(CliError::Usage(
            "Service name must be specified with -name".into(),
        ));
    }
    let mut meta = BTreeMap::new();
    for pair in &args.meta {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("-meta {pair:?}: expected key=value")))?;
        meta.insert(key.to_owned(), value.to_owned());
    }
    let mut body = json!({"Name": name, "Tags": args.tags, "Meta": meta});
    if let Some(fields) = body.as_object_mut() {
        if let Some(id) = &args.id {
            fields.insert("ID".into(), json!(id));
        }
        if let Some(address) = &args.address {
            fields.insert("Address".into(), json!(address));
        }
        if let Some(port) = args.port {
            fields.insert("Port".into(), json!(port));
        }
    }
    Ok(body)
}

pub(crate) async fn run(command: ServicesCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    match command {
        ServicesCommand::Register(args) if !args.files.is_empty() => {
            if args.name.is_some() || args.id.is_some() || args.port.is_some() || args.address.is_some() {
                return Err(CliError::Usage(
                    "Service flags and definition files cannot be mixed".into(),
                ));
            }
            for definition in definitions(&args.files)? {
                let (name, _) = name_and_id(&definition);
                client
                    .call(
                        Method::PUT,
                        "/v1/agent/service/register",
                        definition.to_string().into_bytes(),
                    )
                    .await
                    .and_then(|reply| reply.ok())
                    .map_err(|error| error.context("Error registering service"))?;
                println!("Registered service: {name}");
            }
        }
        ServicesCommand::Deregister(args) if !args.files.is_empty() => {
            for definition in definitions(&args.files)? {
                let (_, id) = name_and_id(&definition);
                client
                    .call(
                        Method::PUT,
                        &format!("/v1/agent/service/deregister/{}", encode_key(&id)),
                        Vec::new(),
                    )
                    .await
                    .and_then(|reply| reply.ok())
                    .map_err(|error| error.context("Error deregistering service"))?;
                println!("Deregistered service: {id}");
            }
        }
        ServicesCommand::Register(args) => {
            let body = registration(&args)?;
            client
                .call(
                    Method::PUT,
                    "/v1/agent/service/register",
                    body.to_string().into_bytes(),
                )
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context("Error registering service"))?;
            println!("Registered service: {}", args.name.unwrap_or_default());
        }
        ServicesCommand::Deregister(args) => {
            let id = args.id.unwrap_or_default();
            if id.is_empty() {
                return Err(CliError::Usage("Service ID must be specified with -id".into()));
            }
            client
                .call(
                    Method::PUT,
                    &format!("/v1/agent/service/deregister/{}", encode_key(&id)),
                    Vec::new(),
                )
                .await
                .and_then(|reply| reply.ok())
                .map_err(|error| error.context("Error deregistering service"))?;
            println!("Deregistered service: {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(name: Option<&str>, meta: &[&str]) -> RegisterArgs {
        RegisterArgs {
            name: name.map(str::to_owned),
            id: Some("web-1".into()),
            address: None,
            port: Some(80),
            tags: vec!["v1".into()],
            meta: meta.iter().map(|m| (*m).to_owned()).collect(),
            files: Vec::new(),
        }
    }

    #[test]
    fn flags_make_the_agent_registration() {
        let body = registration(&args(Some("web"), &["team=core", "url=a=b"])).unwrap();
        assert_eq!(
            body,
            json!({"Name": "web", "ID": "web-1", "Port": 80, "Tags": ["v1"],
                   "Meta": {"team": "core", "url": "a=b"}})
        );
        assert!(registration(&args(None, &[])).is_err());
        assert!(registration(&args(Some("web"), &["nokey"])).is_err());
    }

    #[test]
    fn definition_files_give_their_services_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let hcl = dir.path().join("web.hcl");
        std::fs::write(&hcl, "service {\n  name = \"web\"\n  port = 80\n}\n").unwrap();
        let json = dir.path().join("more.json");
        std::fs::write(
            &json,
            r#"{"services": [{"name": "db", "id": "db-1"}, {"name": "cache"}]}"#,
        )
        .unwrap();
        let found = definitions(&[hcl.display().to_string(), json.display().to_string()]).unwrap();
        let names: Vec<(String, String)> = found.iter().map(name_and_id).collect();
        assert_eq!(
            names,
            [
                ("web".into(), "web".into()),
                ("db".into(), "db-1".into()),
                ("cache".into(), "cache".into())
            ]
        );
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "{}").unwrap();
        assert!(definitions(&[empty.display().to_string()]).is_err());
        assert!(definitions(&[dir.path().join("missing.json").display().to_string()]).is_err());
    }
}
