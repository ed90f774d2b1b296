//! `tribune agent`: loads Consul-style configuration (built-in `-dev` values, then `-config-file` and
//! `-config-dir` in the order given, then flags), runs a node and stops it cleanly on SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Map, Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tribune::config::{Config, ConfigError, ConfigLoader, LogLevel, SourceName};
use tribune::{Node, NodeHandle};

use super::CliError;

/// `tribune agent`: flags mirror `consul agent`'s; each one overrides the same key of the files.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// A one-server datacenter kept in memory, on 127.0.0.1 and Consul's ports (8500 HTTP, 8300 RPC).
    #[arg(long)]
    dev: bool,
    /// A JSON or HCL configuration file; repeatable, merged in the order given with -config-dir.
    #[arg(long = "config-file", value_name = "FILE")]
    config_file: Vec<PathBuf>,
    /// A directory whose .json and .hcl files are merged in lexical order; repeatable.
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dir: Vec<PathBuf>,
    /// Run as a server (`server`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    server: Option<bool>,
    /// Servers to wait for before forming the cluster (`bootstrap_expect`).
    #[arg(long = "bootstrap-expect", value_name = "N")]
    bootstrap_expect: Option<u32>,
    /// Where state lives (`data_dir`).
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The node's name (`node_name`).
    #[arg(long = "node", value_name = "NAME")]
    node: Option<String>,
    /// The node's UUID (`node_id`).
    #[arg(long = "node-id", value_name = "UUID")]
    node_id: Option<String>,
    /// The datacenter (`datacenter`).
    #[arg(long, value_name = "DC")]
    datacenter: Option<String>,
    /// The ACL primary datacenter (`primary_datacenter`).
    #[arg(long = "primary-datacenter", value_name = "DC")]
    primary_datacenter: Option<String>,
    /// The address cluster traffic binds to (`bind_addr`).
    #[arg(long = "bind", value_name = "IP")]
    bind: Option<String>,
    /// The address other agents reach this one at (`advertise_addr`).
    #[arg(long = "advertise", value_name = "IP")]
    advertise: Option<String>,
    /// The address(es) the HTTP API binds to, space separated (`client_addr`).
    #[arg(long = "client", value_name = "IP")]
    client: Option<String>,
    /// The HTTP API's port, 0 for any free one, -1 to disable (`ports.http`).
    #[arg(long = "http-port", value_name = "PORT", allow_hyphen_values = true)]
    http_port: Option<i32>,
    /// The server RPC port (raft, forwarded requests), 0 for any free one (`ports.server`).
    #[arg(long = "server-port", value_name = "PORT", allow_hyphen_values = true)]
    server_port: Option<i32>,
    /// The LAN gossip port (`ports.serf_lan`).
    #[arg(long = "serf-lan-port", value_name = "PORT", allow_hyphen_values = true)]
    serf_lan_port: Option<i32>,
    /// The WAN gossip port (`ports.serf_wan`).
    #[arg(long = "serf-wan-port", value_name = "PORT", allow_hyphen_values = true)]
    serf_wan_port: Option<i32>,
    /// A gossip address to join at start (`host[:port]`, port 8301 by default), retried; repeatable (`retry_join`).
    #[arg(long = "retry-join", value_name = "ADDR")]
    retry_join: Vec<String>,
    /// The pause between join attempts (`retry_interval`).
    #[arg(long = "retry-interval", value_name = "DURATION")]
    retry_interval: Option<String>,
    /// Join attempts before giving up, 0 for no limit (`retry_max`).
    #[arg(long = "retry-max", value_name = "N")]
    retry_max: Option<u32>,
    /// A WAN address to join at start; repeatable (`retry_join_wan`).
    #[arg(long = "retry-join-wan", value_name = "ADDR")]
    retry_join_wan: Vec<String>,
    /// Rejoin the cluster after a graceful leave (`rejoin_after_leave`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    rejoin: Option<bool>,
    /// The gossip encryption key, base64 (`encrypt`).
    #[arg(long, value_name = "KEY")]
    encrypt: Option<String>,
    /// trace, debug, info, warn or err (`log_level`).
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
}

/// Each flag, the configuration key it sets, for errors about a flag's value.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("-server", "server"),
    ("-bootstrap-expect", "bootstrap_expect"),
    ("-data-dir", "data_dir"),
    ("-node", "node_name"),
    ("-node-id", "node_id"),
    ("-datacenter", "datacenter"),
    ("-primary-datacenter", "primary_datacenter"),
    ("-bind", "bind_addr"),
    ("-advertise", "advertise_addr"),
    ("-client", "client_addr"),
    ("-http-port", "ports.http"),
    ("-server-port", "ports.server"),
    ("-serf-lan-port", "ports.serf_lan"),
    ("-serf-wan-port", "ports.serf_wan"),
    ("-retry-join", "retry_join"),
    ("-retry-interval", "retry_interval"),
    ("-retry-max", "retry_max"),
    ("-retry-join-wan", "retry_join_wan"),
    ("-rejoin", "rejoin_after_leave"),
    ("-encrypt", "encrypt"),
    ("-log-level", "log_level"),
];

impl AgentArgs {
    /// The flags as one configuration source, keyed like the files.
    fn flags_source(&self) -> Value {
        let mut root = Map::new();
        let mut set = |key: &str, value: Value| {
            root.insert(key.to_owned(), value);
        };
        if let Some(server) = self.server {
            set("server", json!(server));
        }
        if let Some(n) = self.bootstrap_expect {
            set("bootstrap_expect", json!(n));
        }
        if let Some(dir) = &self.data_dir {
            set("data_dir", json!(dir));
        }
        for (key, value) in [
            ("node_name", &self.node),
            ("node_id", &self.node_id),
            ("datacenter", &self.datacenter),
            ("primary_datacenter", &self.primary_datacenter),
            ("bind_addr", &self.bind),
            ("advertise_addr", &self.advertise),
            ("client_addr", &self.client),
            ("retry_interval", &self.retry_interval),
            ("encrypt", &self.encrypt),
            ("log_level", &self.log_level),
        ] {
            if let Some(value) = value {
                set(key, json!(value));
            }
        }
        if !self.retry_join.is_empty() {
            set("retry_join", json!(self.retry_join));
        }
        if !self.retry_join_wan.is_empty() {
            set("retry_join_wan", json!(self.retry_join_wan));
        }
        if let Some(n) = self.retry_max {
            set("retry_max", json!(n));
        }
        if let Some(rejoin) = self.rejoin {
            set("rejoin_after_leave", json!(rejoin));
        }
        let mut ports = Map::new();
        for (key, value) in [
            ("http", self.http_port),
            ("server", self.server_port),
            ("serf_lan", self.serf_lan_port),
            ("serf_wan", self.serf_wan_port),
        ] {
            if let Some(port) = value {
                ports.insert(key.to_owned(), json!(port));
            }
        }
        if !ports.is_empty() {
            root.insert("ports".to_owned(), Value::Object(ports));
        }
        Value::Object(root)
    }
}

/// The values `-dev` starts from, before files and flags: one server on loopback with Consul's ports.
fn dev_source() -> Value {
    json!({
        "server": true,
        "bootstrap_expect": 1,
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
    })
}

/// A configuration source named on the command line, in the order given.
#[derive(Debug, PartialEq)]
pub(crate) enum FileSource {
    File(PathBuf),
    Dir(PathBuf),
}

/// Builds the agent's configuration: `-dev` values, then the files in order, then the flags.
pub(crate) fn load_config(args: &AgentArgs, files: &[FileSource]) -> Result<Config, CliError> {
    let mut loader = ConfigLoader::new();
    let config_error =
        |error: ConfigError| CliError::Failed(format!("loading configuration: {}", name_flag(error)));
    if args.dev {
        loader
            .add_value(SourceName::Builtin("-dev"), dev_source())
            .map_err(config_error)?;
    }
    for source in files {
        match source {
            FileSource::File(path) => loader.add_file(path),
            FileSource::Dir(path) => loader.add_dir(path),
        }
        .map_err(config_error)?;
    }
    loader
        .add_value(SourceName::Flags, args.flags_source())
        .map_err(config_error)?;
    let config = loader.resolve().map_err(config_error)?;
    if config.data_dir.is_none() && !args.dev {
        return Err(CliError::Failed(
            "loading configuration: data_dir must be set (-data-dir or a config file), or use -dev for an in-memory agent"
                .into(),
        ));
    }
    Ok(config)
}

/// Rewrites an error about a value that came from a flag so that it names the flag.
fn name_flag(error: ConfigError) -> String {
    if let ConfigError::InvalidValue {
        source_name: SourceName::Flags,
        key,
        reason,
    } = &error
        && let Some((flag, _)) = FLAG_KEYS.iter().find(|(_, k)| k == key)
    {
        return format!("invalid value for flag {flag} ({key}): {reason}");
    }
    error.to_string()
}

/// Runs the agent until SIGINT or SIGTERM.
pub(crate) async fn run(args: AgentArgs, files: Vec<FileSource>) -> Result<ExitCode, CliError> {
    let config = load_config(&args, &files)?;
    init_logging(&config);
    // Register before starting, so a signal that arrives while the node starts is not lost.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    println!("==> Starting Tribune agent...");
    let node = Node::start(config.clone())
        .await
        .map_err(|error| CliError::Failed(format!("starting agent: {error}")))?;
    print_banner(&config, &node);
    println!("==> Tribune agent running!");

    let caught = tokio::select! {
        _ = interrupt.recv() => "interrupt",
        _ = terminate.recv() => "terminated",
        () = node.stopped() => {
            // `/v1/agent/leave` (or `tribune leave`) left the pool and stopped the node.
            println!("==> Agent left the cluster");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("==> Caught signal: {caught}");
    // Consul's defaults: SIGTERM leaves when `leave_on_terminate` (clients), SIGINT leaves unless
    // the agent is a server (`skip_leave_on_interrupt`), so a server keeps its raft seat on Ctrl-C.
    let leave = match caught {
        "terminated" => config.leave_on_terminate,
        _ => !config.server,
    };
    println!("==> Gracefully shutting down agent...");
    let stop = async move {
        if leave {
            println!("==> Leaving the cluster...");
            node.leave().await;
        } else {
            node.shutdown().await;
        }
    };
    // A second signal stops at once, as Consul's agent does.
    tokio::select! {
        () = stop => {
            println!("==> Shutdown complete");
            Ok(ExitCode::SUCCESS)
        }
        _ = interrupt.recv() => Ok(ExitCode::FAILURE),
        _ = terminate.recv() => Ok(ExitCode::FAILURE),
    }
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal as _;
    // openraft narrates every state change at info; at Consul's default level only its warnings matter.
    let level = config.log_level.as_filter();
    let default = if config.log_level >= LogLevel::Info {
        format!("{level},openraft=warn")
    } else {
        level.to_owned()
    };
    // RUST_LOG, when set, replaces the filter for debugging.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn print_banner(config: &Config, node: &NodeHandle) {
    let clients: Vec<String> = config.client_addr.iter().map(ToString::to_string).collect();
    let http = node
        .http_addr()
        .map_or_else(|| "-1".to_owned(), |addr| addr.port().to_string());
    let rpc = node.rpc_addr();
    let serf_lan = node
        .serf_lan_addr()
        .map_or_else(|| "-1".to_owned(), |addr| addr.port().to_string());
    let storage = config
        .data_dir
        .as_ref()
        .map_or_else(|| "in memory".to_owned(), |dir| dir.display().to_string());
    let rows = [
        ("Version", format!("'{}'", env!("CARGO_PKG_VERSION"))),
        ("Raft ID", format!("'{}'", node.node_id())),
        ("Node name", format!("'{}'", config.node_name)),
        (
            "Datacenter",
            format!(
                "'{}' (Primary: '{}')",
                config.datacenter, config.primary_datacenter
            ),
        ),
        (
            "Server",
            format!("{} (Bootstrap: {})", config.server, config.bootstrap_expect == 1),
        ),
        ("Client Addr", format!("[{}] (HTTP: {http})", clients.join(" "))),
        (
            "Cluster Addr",
            format!("{} (LAN: {serf_lan}, Server: {})", rpc.ip(), rpc.port()),
        ),
        ("Data", storage),
        ("Gossip Encryption", config.encrypt.is_some().to_string()),
    ];
    for (name, value) in rows {
        println!("{name:>21}: {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn args(list: &[&str]) -> AgentArgs {
        let mut argv = vec!["agent"];
        argv.extend_from_slice(list);
        Wrapper::parse_from(argv).agent
    }

    #[test]
    fn flags_win_over_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        std::fs::write(
            &file,
            r#"{"node_name":"from-file","datacenter":"east","ports":{"http":1234}}"#,
        )
        .unwrap();
        let config = load_config(
            &args(&["--dev", "--node", "from-flag", "--http-port", "0"]),
            &[FileSource::File(file)],
        )
        .unwrap();
        assert_eq!(config.node_name, "from-flag");
        assert_eq!(config.datacenter, "east");
        assert_eq!(config.ports.http, Some(0));
        assert_eq!(config.ports.server, Some(8300));
        assert!(config.server);
        assert!(config.data_dir.is_none());
    }

    #[test]
    fn errors_about_flags_name_the_flag() {
        let error = load_config(&args(&["--dev", "--bind", "nowhere"]), &[]).unwrap_err();
        assert!(error.to_string().contains("flag -bind (bind_addr)"), "{error}");
        let error = load_config(&args(&["--dev", "--http-port", "70000"]), &[]).unwrap_err();
        assert!(error.to_string().contains("flag -http-port"), "{error}");
    }

    #[test]
    fn a_server_without_dev_needs_a_data_dir() {
        let error = load_config(&args(&["--server", "--bootstrap-expect", "1"]), &[]).unwrap_err();
        assert!(error.to_string().contains("data_dir"), "{error}");
    }
}
