//! `tribune event`: fires a user event through the agent (`PUT /v1/event/fire/{name}`), with
//! Consul's flags, checks and output ("Event ID: …").

use std::process::ExitCode;

use hyper::Method;

use super::http::{add_query_param, encode_query_value};
use super::{CliError, GlobalArgs};

/// `tribune event -name N [-node R -service S -tag T] [payload]`.
#[derive(Debug, clap::Args)]
pub(crate) struct EventArgs {
    /// The event's name.
    #[arg(long)]
    name: Option<String>,
    /// A regexp on node names: only matching agents keep the event.
    #[arg(long, value_name = "REGEXP")]
    node: Option<String>,
    /// A regexp on service names: only agents running a matching service keep the event.
    #[arg(long, value_name = "REGEXP")]
    service: Option<String>,
    /// With -service: a regexp one tag of the matching service must match.
    #[arg(long, value_name = "REGEXP")]
    tag: Option<String>,
    /// The payload (at most one argument).
    payload: Vec<String>,
}

fn check_regexp(which: &str, pattern: &str) -> Result<(), CliError> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| CliError::Usage(format!("Failed to compile {which} filter regexp: {e}")))
}

pub(crate) async fn run(args: EventArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let name = args.name.unwrap_or_default();
    if name.is_empty() {
        return Err(CliError::Usage("Event name must be specified".into()));
    }
    let node = args.node.unwrap_or_default();
    let service = args.service.unwrap_or_default();
    let tag = args.tag.unwrap_or_default();
    check_regexp("node", &node)?;
    check_regexp("service", &service)?;
    check_regexp("tag", &tag)?;
    if !tag.is_empty() && service.is_empty() {
        return Err(CliError::Usage(
            "Cannot provide tag filter without service filter.".into(),
        ));
    }
    if args.payload.len() > 1 {
        return Err(CliError::Usage("Too many command line arguments.".into()));
    }
    let payload = args.payload.into_iter().next().unwrap_or_default();
    let mut path = format!("/v1/event/fire/{}", encode_query_value(&name));
    for (param, value) in [("node", &node), ("service", &service), ("tag", &tag)] {
        if !value.is_empty() {
            path = add_query_param(&path, param, value);
        }
    }
    let mut client = global.client()?;
    let event: serde_json::Value = client
        .call(Method::PUT, &path, payload.into_bytes())
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("Error firing event"))?;
    let id = event
        .get("ID")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    println!("Event ID: {id}");
    Ok(ExitCode::SUCCESS)
}
