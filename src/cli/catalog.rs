//! `tribune catalog datacenters`: the datacenters this agent's servers know, nearest first.

use std::process::ExitCode;

use hyper::Method;

use super::{CliError, GlobalArgs};

/// The catalog verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CatalogCommand {
    /// Lists every known datacenter, sorted by estimated round trip time from this one.
    Datacenters,
}

pub(crate) async fn run(command: CatalogCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let CatalogCommand::Datacenters = command;
    let mut client = global.client()?;
    let datacenters: Vec<String> = client
        .call(Method::GET, "/v1/catalog/datacenters", "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("listing datacenters"))?;
    for datacenter in datacenters {
        println!("{datacenter}");
    }
    Ok(ExitCode::SUCCESS)
}
