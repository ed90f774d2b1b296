//! `tribune maint`: puts the agent's node, or one of its services, in maintenance mode
//! (`/v1/agent/maintenance`, `/v1/agent/service/maintenance/:id`), or lists what is in it now
//! (the agent's `_node_maintenance` and `_service_maintenance:<id>` checks), as Consul's command.

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use super::http::{add_query_param, encode_key};
use super::{CliError, GlobalArgs};

const NODE_MAINTENANCE: &str = "_node_maintenance";
const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

#[derive(Debug, clap::Args)]
pub(crate) struct MaintArgs {
    /// Enables maintenance mode.
    #[arg(long)]
    enable: bool,
    /// Disables maintenance mode.
    #[arg(long)]
    disable: bool,
    /// Why (shown in the maintenance check's notes).
    #[arg(long)]
    reason: Option<String>,
    /// A service ID: its maintenance instead of the node's.
    #[arg(long)]
    service: Option<String>,
}

/// What the listing prints for the agent's maintenance checks.
fn listing(node: &str, checks: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    let field = |check: &Value, name: &str| {
        check
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    for (id, check) in checks {
        if id == NODE_MAINTENANCE {
            out.push_str(&format!(
                "Node:\n  Name:   {node}\n  Reason: {}\n",
                field(check, "Notes")
            ));
        } else if let Some(service) = id.strip_prefix(SERVICE_MAINTENANCE_PREFIX) {
            out.push_str(&format!(
                "Service:\n  ID:     {service}\n  Reason: {}\n",
                field(check, "Notes")
            ));
        }
    }
    out
}

pub(crate) async fn run(args: MaintArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    if args.enable && args.disable {
        return Err(CliError::Usage(
            "Only one of -enable or -disable may be provided".into(),
        ));
    }
    if !args.enable && args.reason.is_some() {
        return Err(CliError::Usage("Reason may only be provided with -enable".into()));
    }
    if !args.enable && !args.disable && args.service.is_some() {
        return Err(CliError::Usage(
            "Service requires either -enable or -disable".into(),
        ));
    }
    let mut client = global.client()?;
    if !args.enable && !args.disable {
        let node: Value = client
            .call(Method::GET, "/v1/agent/self", Vec::new())
            .await
            .and_then(|reply| reply.ok())
            .and_then(|reply| reply.json())
            .map_err(|error| error.context("Error reading the agent"))?;
        let node = node
            .pointer("/Config/NodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let checks: serde_json::Map<String, Value> = client
            .call(Method::GET, "/v1/agent/checks", Vec::new())
            .await
            .and_then(|reply| reply.ok())
            .and_then(|reply| reply.json())
            .map_err(|error| error.context("Error reading the agent's checks"))?;
        print!("{}", listing(&node, &checks));
        return Ok(ExitCode::SUCCESS);
    }
    let base = match &args.service {
        Some(id) => format!("/v1/agent/service/maintenance/{}", encode_key(id)),
        None => "/v1/agent/maintenance".to_owned(),
    };
    let mut path = add_query_param(&base, "enable", if args.enable { "true" } else { "false" });
    if let Some(reason) = &args.reason {
        path = add_query_param(&path, "reason", reason);
    }
    client
        .call(Method::PUT, &path, Vec::new())
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("Error toggling maintenance mode"))?;
    let state = if args.enable { "enabled" } else { "disabled" };
    match &args.service {
        Some(id) => println!("Service maintenance is now {state} for {id:?}"),
        None => println!("Node maintenance is now {state}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_listing_names_the_node_and_services_in_maintenance() {
        let checks: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"_node_maintenance": {"Notes": "upgrade"},
                "_service_maintenance:web": {"Notes": "deploy"},
                "service:web": {"Notes": ""}}"#,
        )
        .unwrap();
        assert_eq!(
            listing("n1", &checks),
            "Node:\n  Name:   n1\n  Reason: upgrade\nService:\n  ID:     web\n  Reason: deploy\n"
        );
    }
}
