//! `tribune members|join|leave|force-leave`: the LAN gossip pool through `/v1/agent/*`, printed as
//! Consul prints it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;

use super::http::encode_query_value;
use super::{CliError, GlobalArgs, columns};

/// `tribune members`.
#[derive(Debug, clap::Args)]
pub(crate) struct MembersArgs {
    /// Print every member's tags instead of the summary columns.
    #[arg(long)]
    detailed: bool,
    /// Only members with this status (alive, leaving, left, failed); several separated by `|`.
    #[arg(long)]
    status: Option<String>,
    /// The WAN pool (servers of every datacenter).
    #[arg(long)]
    wan: bool,
}

/// `tribune join`.
#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {
    /// Gossip addresses to join through (`host[:port]`, port 8301 by default).
    #[arg(required = true)]
    addresses: Vec<String>,
    /// Join the WAN pool.
    #[arg(long)]
    wan: bool,
}

/// `tribune force-leave`.
#[derive(Debug, clap::Args)]
pub(crate) struct ForceLeaveArgs {
    /// The failed member's node name.
    node: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Member {
    name: String,
    addr: String,
    port: u16,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    status: u8,
}

impl Member {
    fn status_name(&self) -> &'static str {
        match self.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            4 => "failed",
            _ => "none",
        }
    }

    fn kind(&self) -> &'static str {
        match self.tags.get("role").map(String::as_str) {
            Some("consul") => "server",
            Some("node") => "client",
            _ => "unknown",
        }
    }

    fn address(&self) -> String {
        match self.addr.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.addr, self.port),
        }
    }
}

pub(crate) async fn members(args: MembersArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let path = if args.wan {
        "/v1/agent/members?wan=1"
    } else {
        "/v1/agent/members"
    };
    let mut members: Vec<Member> = client
        .call(Method::GET, path, "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("retrieving members"))?;
    if let Some(wanted) = &args.status {
        let wanted: Vec<&str> = wanted.split('|').collect();
        members.retain(|member| wanted.contains(&member.status_name()));
    }
    if members.is_empty() {
        // Consul's exit code when nothing matches.
        return Ok(ExitCode::from(2));
    }
    // Servers first, then by name, as Consul sorts.
    members.sort_by(|a, b| (a.kind() != "server", &a.name).cmp(&(b.kind() != "server", &b.name)));
    print!("{}", format_members(&members, args.detailed));
    Ok(ExitCode::SUCCESS)
}

fn format_members(members: &[Member], detailed: bool) -> String {
    let mut rows = Vec::new();
    if detailed {
        rows.push(["Node", "Address", "Status", "Tags"].map(str::to_owned).to_vec());
        for member in members {
            let tags: Vec<String> = member.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(vec![
                member.name.clone(),
                member.address(),
                member.status_name().to_owned(),
                tags.join(","),
            ]);
        }
    } else {
        rows.push(
            [
                "Node",
                "Address",
                "Status",
                "Type",
                "Build",
                "Protocol",
                "DC",
                "Partition",
                "Segment",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
        for member in members {
            let build = member
                .tags
                .get("build")
                .filter(|build| !build.is_empty())
                .map_or("< 0.3", |build| build.split(':').next().unwrap_or(build));
            let segment = if member.kind() == "server" {
                "<all>"
            } else {
                "<default>"
            };
            rows.push(vec![
                member.name.clone(),
                member.address(),
                member.status_name().to_owned(),
                member.kind().to_owned(),
                build.to_owned(),
                member.tags.get("vsn").cloned().unwrap_or_default(),
                member.tags.get("dc").cloned().unwrap_or_default(),
                "default".to_owned(),
                segment.to_owned(),
            ]);
        }
    }
    columns(&rows)
}

pub(crate) async fn join(args: JoinArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let wan = if args.wan { "?wan=1" } else { "" };
    let mut joined = 0;
    for address in &args.addresses {
        let path = format!("/v1/agent/join/{}{wan}", encode_query_value(address));
        match client
            .call(Method::PUT, &path, "")
            .await
            .and_then(|reply| reply.ok())
        {
            Ok(_) => joined += 1,
            Err(error) => eprintln!("Error joining address '{address}': {error}"),
        }
    }
    if joined == 0 {
        return Err(CliError::Failed("Failed to join any nodes.".into()).context("joining"));
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn leave(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    client
        .call(Method::PUT, "/v1/agent/leave", "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("leaving cluster"))?;
    println!("Graceful leave complete");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn force_leave(args: ForceLeaveArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let path = format!("/v1/agent/force-leave/{}", encode_query_value(&args.node));
    client
        .call(Method::PUT, &path, "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("force leaving"))?;
    Ok(ExitCode::SUCCESS)
}
