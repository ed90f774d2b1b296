//! The `tribune` command line: Consul's verbs, flags and output over the agent's HTTP API.
//!
//! Each verb group lives in its own module and talks to an agent through [`http::ApiClient`]; only
//! `agent` (which runs a node in this process), `keygen` and `snapshot inspect` work without one.
//! Consul spells long flags with one dash (`-recurse`); [`normalize_args`] rewrites them to clap's
//! two-dash form before parsing, so both spellings work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod acl;
mod agent;
mod bench;
mod catalog;
mod event;
pub(crate) mod http;
mod info;
mod keyring;
mod kv;
mod lock;
mod login;
mod maint;
mod members;
mod monitor;
mod operator;
mod replicate;
mod rtt;
mod services;
mod snapshot;
mod watch;

/// Why a command failed. The message is what the user sees after `Error`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The agent could not be reached.
    #[error("connecting to the agent at {authority}: {reason}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Why.
        reason: String,
    },
    /// The connection failed mid-request.
    #[error("talking to the agent at {authority}: {source}")]
    Http {
        /// `host:port`.
        authority: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The agent answered with an error status (Consul's wording).
    #[error("Unexpected response code: {status} ({body})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The agent's explanation.
        body: String,
    },
    /// Something could not be decoded.
    #[error("decoding {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A command-specific failure, already worded.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// Prefixes the error with what the command was doing, as Consul's messages do.
    pub(crate) fn context(self, doing: &str) -> CliError {
        CliError::Failed(format!("{doing}: {self}"))
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> CliError {
        CliError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// The arguments every command accepts.
#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// The agent's HTTP address (`host:port` or `http://host:port`); also TRIBUNE_HTTP_ADDR or
    /// CONSUL_HTTP_ADDR (TRIBUNE_ wins); default 127.0.0.1:8500.
    #[arg(long = "http-addr", global = true, value_name = "ADDR")]
    pub(crate) http_addr: Option<String>,
    /// The ACL token to send; also TRIBUNE_HTTP_TOKEN or CONSUL_HTTP_TOKEN (TRIBUNE_ wins).
    #[arg(long = "token", global = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// The datacenter to ask (sent as `?dc=` on every request; the agent forwards it there). For
    /// `agent`, the datacenter the agent belongs to (`datacenter`).
    #[arg(long = "datacenter", global = true, value_name = "DC")]
    pub(crate) datacenter: Option<String>,
}

impl GlobalArgs {
    /// A client for the agent these arguments name.
    pub(crate) fn client(&self) -> Result<http::ApiClient, CliError> {
        let target = http::Target::resolve(self.http_addr.as_deref(), self.token.as_deref())?
            .with_datacenter(self.datacenter.as_deref());
        Ok(http::ApiClient::new(target))
    }
}

/// Tribune: a Consul-compatible datacenter node. Flags take one dash or two (`-recurse`, `--recurse`).
#[derive(Debug, Parser)]
#[command(name = "tribune", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs an agent (a server; `-dev` for a one-server in-memory datacenter).
    Agent(Box<agent::AgentArgs>),
    /// Reads and writes the key/value store.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Saves, inspects and restores snapshots of the whole state.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Prints a new gossip encryption key (32 random bytes, base64).
    Keygen,
    /// Lists, installs, uses and removes gossip encryption keys on every member of the pool.
    Keyring(keyring::KeyringArgs),
    /// Manages ACLs: bootstrap, policies, tokens, roles, auth methods, binding rules, templated
    /// policies, the agent's tokens.
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Trades a bearer token an auth method accepts for an ACL token, written to -token-sink-file.
    Login(login::LoginArgs),
    /// Deletes the token a login minted (the one -token or the environment names).
    Logout,
    /// Operator tools for the servers.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Runs a command while holding a lock in the KV store.
    Lock(lock::LockArgs),
    /// Lists the members of the LAN gossip pool (-wan: the servers of every datacenter).
    Members(members::MembersArgs),
    /// Joins the agent to a pool through other members' gossip addresses.
    Join(members::JoinArgs),
    /// Makes the agent leave the pool gracefully and stop.
    Leave,
    /// Marks a failed member as left (-prune: removes it; -wan: a member of the WAN pool).
    #[command(name = "force-leave")]
    ForceLeave(members::ForceLeaveArgs),
    /// Reads the catalog: the known datacenters, nodes and services.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Fires a user event in the agent's LAN pool (-node, -service, -tag filter who keeps it).
    Event(event::EventArgs),
    /// Watches a view (key, keyprefix, services, nodes, service, checks, event) and runs a handler
    /// with the JSON on stdin on every change; without a handler, prints it once.
    Watch(watch::WatchArgs),
    /// Prints the agent's statistics, as `consul info`.
    Info,
    /// Registers or deregisters a service of the agent.
    #[command(subcommand)]
    Services(services::ServicesCommand),
    /// Puts the agent's node or one of its services in maintenance mode, or lists what is.
    Maint(maint::MaintArgs),
    /// Streams the agent's log lines (-log-level, -log-json) until interrupted.
    Monitor(monitor::MonitorArgs),
    /// Makes the agent reload its configuration files' services and checks.
    Reload,
    /// Estimates the round trip time between two nodes from their network coordinates.
    Rtt(rtt::RttArgs),
    /// Load generator: N concurrent HTTP clients writing or reading a Tribune, Consul or etcd cluster.
    Bench(bench::BenchArgs),
    /// Replicates KV prefixes from other datacenters into this one (consul-replicate's flags and
    /// config files), without mass deletes.
    Replicate(Box<replicate::ReplicateArgs>),
}

/// Parses the process arguments and runs the command.
pub(crate) fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches_from(normalize_args(std::env::args_os()))
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            // clap prints help and version to stdout with exit 0, usage errors to stderr with exit 2.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1));
        }
    };
    let config_sources = matches
        .subcommand_matches("agent")
        .map(agent_config_sources)
        .unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config_sources)) {
        Ok(code) => code,
        Err(error) => {
            // Consul's messages read "Error! ..." for verdicts and "Error doing X: ..." for failures.
            let text = error.to_string();
            let separator = if text.starts_with('!') { "" } else { " " };
            eprintln!("Error{separator}{text}");
            ExitCode::FAILURE
        }
    }
}

/// `-config-file` and `-config-dir` in the order they were given: Consul merges them in that order.
fn agent_config_sources(matches: &clap::ArgMatches) -> Vec<agent::FileSource> {
    let mut sources = Vec::new();
    for (id, make) in [
        (
            "config_file",
            agent::FileSource::File as fn(PathBuf) -> agent::FileSource,
        ),
        ("config_dir", agent::FileSource::Dir),
    ] {
        let (Some(indices), Some(values)) = (matches.indices_of(id), matches.get_many::<PathBuf>(id)) else {
            continue;
        };
        sources.extend(indices.zip(values.cloned().map(make)));
    }
    sources.sort_by_key(|(index, _)| *index);
    sources.into_iter().map(|(_, source)| source).collect()
}

async fn run(cli: Cli, config_sources: Vec<agent::FileSource>) -> Result<ExitCode, CliError> {
    let global = cli.global;
    match cli.command {
        Command::Agent(mut args) => {
            // `-datacenter` is global (it names the datacenter every other command asks); for the
            // agent it is Consul's `-datacenter` flag of `consul agent`.
            args.datacenter = global.datacenter;
            agent::run(*args, config_sources).await
        }
        Command::Kv(command) => kv::run(command, &global).await,
        Command::Snapshot(command) => snapshot::run(command, &global).await,
        Command::Keygen => {
            let key = tribune_gossip::keygen()
                .map_err(|error| CliError::Failed(format!("generating a key: {error}")))?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keyring(args) => keyring::run(args, &global).await,
        Command::Acl(command) => acl::run(command, &global).await,
        Command::Login(args) => login::login(args, &global).await,
        Command::Logout => login::logout(&global).await,
        Command::Operator(command) => operator::run(command, &global).await,
        Command::Lock(args) => lock::run(args, &global).await,
        Command::Members(args) => members::members(args, &global).await,
        Command::Join(args) => members::join(args, &global).await,
        Command::Leave => members::leave(&global).await,
        Command::ForceLeave(args) => members::force_leave(args, &global).await,
        Command::Catalog(command) => catalog::run(command, &global).await,
        Command::Event(args) => event::run(args, &global).await,
        Command::Watch(args) => watch::run(args, &global).await,
        Command::Info => info::run(&global).await,
        Command::Services(command) => services::run(command, &global).await,
        Command::Maint(args) => maint::run(args, &global).await,
        Command::Monitor(args) => monitor::monitor(args, &global).await,
        Command::Reload => monitor::reload(&global).await,
        Command::Rtt(args) => rtt::run(args, &global).await,
        Command::Bench(args) => bench::run(args, &global).await,
        Command::Replicate(args) => replicate::run(*args, &global).await,
    }
}

/// Rewrites Consul's single-dash long flags (`-recurse`, `-http-addr=x`) as clap's `--recurse`.
///
/// A lone `-` (stdin), negative numbers, one-letter short flags (`-n`), everything after `--`, and
/// the child command of `lock` (whose flags belong to the child) pass through unchanged.
pub(crate) fn normalize_args<I>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = std::ffi::OsString>,
{
    let mut out = Vec::new();
    let mut verbatim = false;
    // `lock PREFIX CHILD...`: once the second positional argument of `lock` is reached, the rest is
    // the child's. Flags of `lock` that take a separate value are listed so their value is not counted.
    let mut in_lock = false;
    let mut lock_positionals = 0;
    let mut skip_value = false;
    for (position, arg) in args.into_iter().enumerate() {
        if position == 0 || verbatim {
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            verbatim = true;
            out.push(arg);
            continue;
        }
        let is_flag = text.starts_with('-') && text.len() > 1;
        if in_lock {
            if skip_value {
                skip_value = false;
            } else if is_flag {
                let name = text.trim_start_matches('-');
                skip_value = !name.contains('=') && lock::FLAGS_WITH_VALUES.contains(&name);
            } else {
                lock_positionals += 1;
                if lock_positionals == 2 {
                    // Tell clap that the child's arguments start here, flags and all.
                    out.push("--".into());
                    out.push(arg);
                    verbatim = true;
                    continue;
                }
            }
        } else if !is_flag && text == "lock" && out.len() == 1 + count_global_args(&out) {
            in_lock = true;
        }
        out.push(single_dash_to_double(text).map_or(arg, Into::into));
    }
    out
}

/// The global flags, each taking a value.
const GLOBAL_FLAGS: [&str; 3] = ["--http-addr", "--token", "--datacenter"];

/// How many of the arguments already emitted (after the program name) are global flags and values.
fn count_global_args(out: &[std::ffi::OsString]) -> usize {
    let mut count = 0;
    let mut expect_value = false;
    for arg in out.iter().skip(1) {
        let text = arg.to_string_lossy();
        if expect_value {
            expect_value = false;
            count += 1;
        } else if GLOBAL_FLAGS.contains(&text.as_ref()) {
            expect_value = true;
            count += 1;
        } else if GLOBAL_FLAGS
            .iter()
            .any(|flag| text.strip_prefix(flag).is_some_and(|rest| rest.starts_with('=')))
        {
            count += 1;
        } else {
            break;
        }
    }
    count
}

fn single_dash_to_double(text: &str) -> Option<String> {
    let rest = text.strip_prefix('-')?;
    if rest.starts_with('-') {
        return None;
    }
    let name = rest.split('=').next().unwrap_or(rest);
    let long = name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic());
    long.then(|| format!("-{text}"))
}

/// Reads a value argument the way Consul does: `@path` is a file, `-` is stdin, anything else is itself.
pub(crate) fn read_value_arg(arg: &str) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).map_err(|source| CliError::io(path, source))
    } else if arg == "-" {
        let mut buffer = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buffer)
            .map_err(|source| CliError::io("stdin", source))?;
        Ok(buffer)
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// Formats rows as aligned columns separated by two spaces, as Consul's `columnize` does.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; width];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(std::ffi::OsString::from))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double() {
        assert_eq!(
            normalized(&[
                "tribune",
                "kv",
                "get",
                "-recurse",
                "-http-addr=x:1",
                "--keys",
                "-",
                "-n",
                "-5",
                "a"
            ]),
            [
                "tribune",
                "kv",
                "get",
                "--recurse",
                "--http-addr=x:1",
                "--keys",
                "-",
                "-n",
                "-5",
                "a"
            ]
        );
    }

    #[test]
    fn the_child_of_lock_keeps_its_flags() {
        assert_eq!(
            normalized(&[
                "tribune", "-token", "t", "lock", "-timeout", "5s", "-verbose", "svc", "ls", "-la"
            ]),
            [
                "tribune",
                "--token",
                "t",
                "lock",
                "--timeout",
                "5s",
                "--verbose",
                "svc",
                "--",
                "ls",
                "-la"
            ]
        );
        assert_eq!(
            normalized(&[
                "tribune",
                "-datacenter",
                "dc2",
                "-token=t",
                "lock",
                "svc",
                "ls",
                "-la"
            ]),
            [
                "tribune",
                "--datacenter",
                "dc2",
                "--token=t",
                "lock",
                "svc",
                "--",
                "ls",
                "-la"
            ]
        );
        assert_eq!(
            normalized(&["tribune", "lock", "-n=1", "svc", "sh", "-c", "true"]),
            ["tribune", "lock", "-n=1", "svc", "--", "sh", "-c", "true"]
        );
    }

    #[test]
    fn the_datacenter_flag_is_global_and_names_the_agents_datacenter() {
        for args in [
            &["tribune", "-datacenter=dc2", "kv", "get", "k"][..],
            &["tribune", "kv", "get", "-datacenter", "dc2", "k"],
            &["tribune", "-datacenter", "dc2", "agent", "-dev"],
            &["tribune", "agent", "-dev", "-datacenter=dc2"],
        ] {
            let cli = Cli::try_parse_from(normalized(args)).unwrap();
            assert_eq!(cli.global.datacenter.as_deref(), Some("dc2"), "{args:?}");
        }
    }

    #[test]
    fn columns_are_aligned() {
        let text = columns(&[
            vec!["Node".into(), "ID".into(), "Voter".into()],
            vec!["server-one".into(), "7".into(), "true".into()],
        ]);
        assert_eq!(text, "Node        ID  Voter\nserver-one  7   true\n");
    }
}
