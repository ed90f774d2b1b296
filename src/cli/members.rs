//! `tribune members|join|leave|force-leave`: the LAN and WAN gossip pools through `/v1/agent/*`,
//! printed as Consul prints them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use hyper::Method;
use serde::Deserialize;

use super::http::{add_query_param, encode_query_value};
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
    /// Gossip addresses to join through (`host[:port]`, port 8301 by default, 8302 with -wan).
    #[arg(required = true)]
    addresses: Vec<String>,
    /// Join the WAN pool (servers of every datacenter) through servers of another datacenter.
    #[arg(long)]
    wan: bool,
}

/// `tribune force-leave`.
#[derive(Debug, clap::Args)]
pub(crate) struct ForceLeaveArgs {
    /// The failed member's node name (`<node>.<dc>` in the WAN pool).
    node: String,
    /// Remove the member from the list of members at once instead of keeping it as left.
    #[arg(long)]
    prune: bool,
    /// Act on the WAN pool; the member may belong to any datacenter.
    #[arg(long)]
    wan: bool,
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
            if member.kind() == "unknown" {
                // Consul knows nothing of a member without a role, so it leaves its columns blank.
                let mut row = vec![
                    member.name.clone(),
                    member.address(),
                    member.status_name().to_owned(),
                ];
                row.push("unknown".to_owned());
                row.extend(std::iter::repeat_n(String::new(), 5));
                rows.push(row);
                continue;
            }
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

/// Consul's request for `force-leave`: the flags as `prune=1` and `wan=1`.
fn force_leave_path(node: &str, prune: bool, wan: bool) -> String {
    let mut path = format!("/v1/agent/force-leave/{}", encode_query_value(node));
    for (set, name) in [(prune, "prune"), (wan, "wan")] {
        if set {
            path = add_query_param(&path, name, "1");
        }
    }
    path
}

pub(crate) async fn force_leave(args: ForceLeaveArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let path = force_leave_path(&args.node, args.prune, args.wan);
    client
        .call(Method::PUT, &path, "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("force leaving"))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, port: u16, tags: &[(&str, &str)], status: u8) -> Member {
        Member {
            name: name.to_owned(),
            addr: "127.0.0.1".to_owned(),
            port,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            status,
        }
    }

    #[test]
    fn wan_members_print_consul_columns() {
        let server = |name: &str, dc: &str, port: u16, status: u8| {
            member(
                name,
                port,
                &[
                    ("role", "consul"),
                    ("dc", dc),
                    ("build", "1.21.0:abc"),
                    ("vsn", "2"),
                ],
                status,
            )
        };
        let text = format_members(
            &[
                server("s1.dc1", "dc1", 8302, 1),
                server("s1.dc2", "dc2", 9302, 4),
                member("odd", 7000, &[], 1),
            ],
            false,
        );
        assert_eq!(
            text,
            "Node    Address         Status  Type     Build   Protocol  DC   Partition  Segment\n\
             s1.dc1  127.0.0.1:8302  alive   server   1.21.0  2         dc1  default    <all>\n\
             s1.dc2  127.0.0.1:9302  failed  server   1.21.0  2         dc2  default    <all>\n\
             odd     127.0.0.1:7000  alive   unknown\n"
        );
    }

    #[test]
    fn force_leave_sends_consul_parameters() {
        assert_eq!(force_leave_path("n1", false, false), "/v1/agent/force-leave/n1");
        assert_eq!(
            force_leave_path("n1.dc2", true, true),
            "/v1/agent/force-leave/n1.dc2?prune=1&wan=1"
        );
        assert_eq!(
            force_leave_path("a b", false, true),
            "/v1/agent/force-leave/a%20b?wan=1"
        );
    }
}
