//! `tribune operator raft list-peers`: the raft configuration as Consul's operators see it.

use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;

use super::{CliError, GlobalArgs, columns};

/// The operator verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum OperatorCommand {
    /// Raft tools.
    #[command(subcommand)]
    Raft(RaftCommand),
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RaftCommand {
    /// Lists the servers of the raft configuration.
    #[command(name = "list-peers")]
    ListPeers {
        /// Let any server answer.
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Configuration {
    servers: Vec<RaftServer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    voter: bool,
    #[serde(default)]
    protocol_version: String,
}

pub(crate) async fn run(command: OperatorCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let OperatorCommand::Raft(RaftCommand::ListPeers { stale }) = command;
    let mut client = global.client()?;
    let path = if stale {
        "/v1/operator/raft/configuration?stale"
    } else {
        "/v1/operator/raft/configuration"
    };
    let configuration: Configuration = client
        .call(Method::GET, path, "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("getting peers"))?;
    print!("{}", format_peers(&configuration.servers));
    Ok(ExitCode::SUCCESS)
}

fn format_peers(servers: &[RaftServer]) -> String {
    let mut rows = vec![
        ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for server in servers {
        let state = if server.leader { "leader" } else { "follower" };
        let protocol = if server.protocol_version.is_empty() {
            "<=1"
        } else {
            &server.protocol_version
        };
        rows.push(vec![
            server.node.clone(),
            server.id.clone(),
            server.address.clone(),
            state.to_owned(),
            server.voter.to_string(),
            protocol.to_owned(),
        ]);
    }
    columns(&rows)
}
