//! `tribune agent`: loads Consul-style configuration (built-in `-dev` values, then `-config-file` and
//! `-config-dir` in the order given, then flags, then `-hcl` fragments), runs a node and stops it
//! cleanly on SIGINT/SIGTERM, leaving the pool first when `skip_leave_on_interrupt` /
//! `leave_on_terminate` say so.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Bootstrap mode: a single server that elects itself (`bootstrap`; same as -bootstrap-expect=1).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    bootstrap: Option<bool>,
    /// Write the agent's process id to this file; removed on a clean exit (`pid_file`).
    #[arg(long = "pid-file", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Where state lives (`data_dir`).
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The node's name (`node_name`).
    #[arg(long = "node", value_name = "NAME")]
    node: Option<String>,
    /// The node's UUID (`node_id`).
    #[arg(long = "node-id", value_name = "UUID")]
    node_id: Option<String>,
    /// The datacenter (`datacenter`): the command line's global `-datacenter`, which for `agent`
    /// names the datacenter the agent belongs to (set by the caller, see `cli::run`).
    #[arg(skip)]
    pub(crate) datacenter: Option<String>,
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
    /// The DNS port (`ports.dns`), UDP and TCP; 0 for any free one, -1 to disable.
    #[arg(long = "dns-port", value_name = "PORT", allow_hyphen_values = true)]
    dns_port: Option<i32>,
    /// The gRPC port (`ports.grpc`); accepted, gRPC is not served yet.
    #[arg(long = "grpc-port", value_name = "PORT", allow_hyphen_values = true)]
    grpc_port: Option<i32>,
    /// The HTTPS port (`ports.https`); accepted, HTTPS is not served yet.
    #[arg(long = "https-port", value_name = "PORT", allow_hyphen_values = true)]
    https_port: Option<i32>,
    /// The gRPC-over-TLS port (`ports.grpc_tls`); accepted, not served yet.
    #[arg(long = "grpc-tls-port", value_name = "PORT", allow_hyphen_values = true)]
    grpc_tls_port: Option<i32>,
    /// Consul's older -retry-join without the name: joined at start, retried like -retry-join; repeatable.
    #[arg(long = "join", value_name = "ADDR")]
    join: Vec<String>,
    /// Consul's older -retry-join-wan without the name; repeatable.
    #[arg(long = "join-wan", value_name = "ADDR")]
    join_wan: Vec<String>,
    /// A gossip address to join at start (`host[:port]`, port 8301 by default), retried; repeatable (`retry_join`).
    #[arg(long = "retry-join", value_name = "ADDR")]
    retry_join: Vec<String>,
    /// The pause between join attempts (`retry_interval`).
    #[arg(long = "retry-interval", value_name = "DURATION")]
    retry_interval: Option<String>,
    /// Join attempts before giving up, 0 for no limit (`retry_max`).
    #[arg(long = "retry-max", value_name = "N")]
    retry_max: Option<u32>,
    /// A server of another datacenter to join in the WAN pool at start (`host[:port]`, port 8302
    /// by default), retried; repeatable; servers only (`retry_join_wan`).
    #[arg(long = "retry-join-wan", value_name = "ADDR")]
    retry_join_wan: Vec<String>,
    /// The pause between WAN join attempts (`retry_interval_wan`).
    #[arg(long = "retry-interval-wan", value_name = "DURATION")]
    retry_interval_wan: Option<String>,
    /// WAN join attempts before giving up, 0 for no limit (`retry_max_wan`).
    #[arg(long = "retry-max-wan", value_name = "N")]
    retry_max_wan: Option<u32>,
    /// The address servers of other datacenters reach this one at (`advertise_addr_wan`).
    #[arg(long = "advertise-wan", value_name = "IP")]
    advertise_wan: Option<String>,
    /// Rejoin the cluster after a graceful leave (`rejoin_after_leave`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    rejoin: Option<bool>,
    /// The gossip encryption key, base64 (`encrypt`).
    #[arg(long, value_name = "KEY")]
    encrypt: Option<String>,
    /// trace, debug, info, warn or err (`log_level`).
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Also write the log to this file, or to `tribune.log` in this directory (`log_file`).
    #[arg(long = "log-file", value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Log lines as JSON objects (`log_json`).
    #[arg(long = "log-json", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    log_json: Option<bool>,
    /// Accepted for Consul's command lines (`ui_config.enabled`); the web UI is not served yet.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    ui: Option<bool>,
    /// An inline HCL configuration fragment, merged after the files and flags; repeatable, later wins.
    #[arg(long = "hcl", value_name = "HCL")]
    hcl: Vec<String>,
}

/// Each flag, the configuration key it sets, for errors about a flag's value.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("-server", "server"),
    ("-bootstrap-expect", "bootstrap_expect"),
    ("-bootstrap", "bootstrap"),
    ("-pid-file", "pid_file"),
    ("-dns-port", "ports.dns"),
    ("-grpc-port", "ports.grpc"),
    ("-https-port", "ports.https"),
    ("-grpc-tls-port", "ports.grpc_tls"),
    ("-log-file", "log_file"),
    ("-log-json", "log_json"),
    ("-ui", "ui_config.enabled"),
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
    ("-retry-interval-wan", "retry_interval_wan"),
    ("-retry-max-wan", "retry_max_wan"),
    ("-advertise-wan", "advertise_addr_wan"),
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
        if let Some(bootstrap) = self.bootstrap {
            set("bootstrap", json!(bootstrap));
        }
        for (key, path) in [
            ("data_dir", &self.data_dir),
            ("pid_file", &self.pid_file),
            ("log_file", &self.log_file),
        ] {
            if let Some(path) = path {
                set(key, json!(path));
            }
        }
        if let Some(json) = self.log_json {
            set("log_json", json!(json));
        }
        if let Some(ui) = self.ui {
            set("ui_config", json!({ "enabled": ui }));
        }
        for (key, value) in [
            ("node_name", &self.node),
            ("node_id", &self.node_id),
            ("datacenter", &self.datacenter),
            ("primary_datacenter", &self.primary_datacenter),
            ("bind_addr", &self.bind),
            ("advertise_addr", &self.advertise),
            ("advertise_addr_wan", &self.advertise_wan),
            ("client_addr", &self.client),
            ("retry_interval", &self.retry_interval),
            ("retry_interval_wan", &self.retry_interval_wan),
            ("encrypt", &self.encrypt),
            ("log_level", &self.log_level),
        ] {
            if let Some(value) = value {
                set(key, json!(value));
            }
        }
        let retry_join: Vec<&String> = self.retry_join.iter().chain(&self.join).collect();
        if !retry_join.is_empty() {
            set("retry_join", json!(retry_join));
        }
        let retry_join_wan: Vec<&String> = self.retry_join_wan.iter().chain(&self.join_wan).collect();
        if !retry_join_wan.is_empty() {
            set("retry_join_wan", json!(retry_join_wan));
        }
        if let Some(n) = self.retry_max {
            set("retry_max", json!(n));
        }
        if let Some(n) = self.retry_max_wan {
            set("retry_max_wan", json!(n));
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
            ("dns", self.dns_port),
            ("grpc", self.grpc_port),
            ("https", self.https_port),
            ("grpc_tls", self.grpc_tls_port),
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

/// Builds the agent's configuration: `-dev` values, then the files in order, then the flags, then
/// the `-hcl` fragments (as Consul orders them).
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
    for (n, fragment) in args.hcl.iter().enumerate() {
        loader
            .add_hcl(SourceName::HclFlag(n + 1), fragment)
            .map_err(config_error)?;
    }
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

/// The pid file, removed when the agent returns (a clean exit or a second signal's fast one).
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile, CliError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CliError::io(dir.display(), source))?;
        }
        std::fs::write(path, std::process::id().to_string())
            .map_err(|source| CliError::io(path.display(), source).context("writing the pid file"))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0) {
            tracing::warn!("removing the pid file {}: {error}", self.0.display());
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub(crate) async fn run(args: AgentArgs, files: Vec<FileSource>) -> Result<ExitCode, CliError> {
    let config = load_config(&args, &files)?;
    let log_filter = init_logging(&config)?;
    for setting in config.not_implemented() {
        tracing::warn!("{setting}; the setting is accepted and ignored");
    }
    let _pid_file = config.pid_file.as_deref().map(PidFile::write).transpose()?;
    // Register before starting, so a signal that arrives while the node starts is not lost.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    println!("==> Starting Tribune agent...");
    let node = Node::start(config.clone())
        .await
        .map_err(|error| CliError::Failed(format!("starting agent: {error}")))?;
    // A reload reads the same files and flags again; the log level is the one other setting
    // applied without a restart.
    node.reload_with(Arc::new(move || {
        let config = load_config(&args, &files).map_err(|error| error.to_string())?;
        if let Some(filter) = &log_filter {
            filter.set(&config)?;
        }
        Ok(config)
    }));
    print_banner(&config, &node);
    println!("==> Tribune agent running!");

    let caught = loop {
        tokio::select! {
            _ = interrupt.recv() => break "interrupt",
            _ = terminate.recv() => break "terminated",
            _ = hangup.recv() => {
                println!("==> Caught signal: hangup");
                println!("==> Reloading configuration...");
                if let Err(error) = node.reload() {
                    tracing::error!("Failed to reload configs: {error}");
                }
            }
            () = node.stopped() => {
                // `/v1/agent/leave` (or `tribune leave`) left the pool and stopped the node.
                println!("==> Agent left the cluster");
                return Ok(ExitCode::SUCCESS);
            }
        }
    };
    println!("==> Caught signal: {caught}");
    // Consul's defaults (see Config): a client leaves on either signal, a server on neither, so
    // that a restarted server keeps its raft seat.
    let leave = match caught {
        "terminated" => config.leave_on_terminate,
        _ => !config.skip_leave_on_interrupt,
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

/// The file `-log-file` names: the path itself, or `tribune.log` inside it when it is a directory
/// (or ends with `/`, as Consul reads it).
fn open_log_file(path: &Path) -> Result<std::fs::File, CliError> {
    let path = if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') {
        std::fs::create_dir_all(path).map_err(|source| CliError::io(path.display(), source))?;
        path.join("tribune.log")
    } else {
        path.to_owned()
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| CliError::io(path.display(), source).context("opening the log file"))
}

/// The log filter's handle, for a reload to change the level.
struct LogFilter(
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
);

impl LogFilter {
    /// Applies `config`'s `log_level` (unless RUST_LOG chose the filter).
    fn set(&self, config: &Config) -> Result<(), String> {
        if std::env::var_os("RUST_LOG").is_some() {
            return Ok(());
        }
        self.0
            .reload(log_filter(config.log_level))
            .map_err(|error| format!("changing the log level: {error}"))
    }
}

/// The filter for `level`: openraft narrates every state change at info; at Consul's default
/// level only its warnings matter.
fn log_filter(level: LogLevel) -> tracing_subscriber::EnvFilter {
    let name = level.as_filter();
    if level >= LogLevel::Info {
        tracing_subscriber::EnvFilter::new(format!("{name},openraft=warn"))
    } else {
        tracing_subscriber::EnvFilter::new(name)
    }
}

/// Installs the agent's logging: stderr and `-log-file` through the `log_level` filter, and the
/// lines `/v1/agent/monitor` streams through the monitors' own filter, so a monitor may ask for more
/// than the agent writes. `None` when a subscriber was already installed (the filter cannot be
/// changed then).
fn init_logging(config: &Config) -> Result<Option<LogFilter>, CliError> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    type Outputs = Vec<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>>;

    // RUST_LOG, when set, replaces the filter for debugging.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| log_filter(config.log_level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let mut outputs: Outputs = Vec::new();
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    outputs.push(if config.log_json {
        stderr.json().boxed()
    } else {
        stderr.with_ansi(std::io::stderr().is_terminal()).boxed()
    });
    if let Some(path) = &config.log_file {
        let file = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Arc::new(open_log_file(path)?));
        outputs.push(if config.log_json {
            file.json().boxed()
        } else {
            file.boxed()
        });
    }
    let installed = tracing_subscriber::registry()
        .with(outputs.with_filter(filter))
        .with(tribune::logs::monitor_layer())
        .try_init();
    Ok(installed.ok().map(|()| LogFilter(handle)))
}

fn print_banner(config: &Config, node: &NodeHandle) {
    let clients: Vec<String> = config.client_addr.iter().map(ToString::to_string).collect();
    let http = node
        .http_addr()
        .map_or_else(|| "-1".to_owned(), |addr| addr.port().to_string());
    let dns = node
        .dns_addr()
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
        (
            "Client Addr",
            format!("[{}] (HTTP: {http}, DNS: {dns})", clients.join(" ")),
        ),
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
    fn consul_flags_set_their_keys() {
        let config = load_config(
            &args(&[
                "--dev",
                "--ui",
                "--dns-port",
                "8600",
                "--grpc-port=8502",
                "--join",
                "10.0.0.1",
                "--retry-join",
                "10.0.0.2",
                "--join-wan",
                "10.1.0.1",
                "--pid-file",
                "/tmp/x.pid",
                "--log-json",
                "--hcl",
                "node_name = \"from-hcl\"",
                "--hcl",
                "node_name = \"later-hcl\"\nports { https = 8501 }",
                "--node",
                "from-flag",
            ]),
            &[],
        )
        .unwrap();
        assert!(config.ui.enabled);
        assert_eq!(
            (config.ports.dns, config.ports.grpc, config.ports.https),
            (Some(8600), Some(8502), Some(8501))
        );
        assert_eq!(config.retry_join, ["10.0.0.2", "10.0.0.1"]);
        assert_eq!(config.retry_join_wan, ["10.1.0.1"]);
        assert_eq!(config.pid_file, Some(PathBuf::from("/tmp/x.pid")));
        assert!(config.log_json);
        assert_eq!(
            config.node_name, "later-hcl",
            "-hcl comes after the flags, the later one wins"
        );
        assert!(
            !config
                .not_implemented()
                .iter()
                .any(|w| w.starts_with("retry_join_wan")),
            "the WAN pool is implemented: {:?}",
            config.not_implemented()
        );
    }

    #[test]
    fn wan_flags_set_their_keys() {
        let config = load_config(
            &args(&[
                "--dev",
                "--retry-join-wan",
                "10.1.0.1:8302",
                "--retry-interval-wan",
                "7s",
                "--retry-max-wan",
                "5",
                "--advertise-wan",
                "192.0.2.9",
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(config.retry_join_wan, ["10.1.0.1:8302"]);
        assert_eq!(config.retry_interval_wan, std::time::Duration::from_secs(7));
        assert_eq!(config.retry_max_wan, 5);
        assert_eq!(config.advertise_addr_wan, Some([192, 0, 2, 9].into()));
        let error = load_config(&args(&["--dev", "--retry-interval-wan", "soon"]), &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("flag -retry-interval-wan (retry_interval_wan)"),
            "{error}"
        );
        let error = load_config(&args(&["--dev", "--advertise-wan", "0.0.0.0"]), &[]).unwrap_err();
        assert!(error.to_string().contains("flag -advertise-wan"), "{error}");
        let error = load_config(
            &args(&[
                "--dev",
                "--server=false",
                "--bootstrap-expect=0",
                "--retry-max-wan",
                "2",
            ]),
            &[],
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("only servers join the WAN pool"),
            "{error}"
        );
    }

    #[test]
    fn bootstrap_is_one_server_and_refused_beside_bootstrap_expect() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let config = load_config(&args(&["--server", "--bootstrap", "--data-dir", data]), &[]).unwrap();
        assert_eq!(config.bootstrap_expect, 1);
        let error = load_config(
            &args(&[
                "--server",
                "--bootstrap",
                "--bootstrap-expect",
                "3",
                "--data-dir",
                data,
            ]),
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("flag -bootstrap"), "{error}");
        assert!(error.to_string().contains("mutually exclusive"), "{error}");
    }

    #[test]
    fn an_hcl_fragment_error_names_the_fragment() {
        let error = load_config(&args(&["--dev", "--hcl", "ui_colour = 1"]), &[]).unwrap_err();
        assert!(error.to_string().contains("-hcl argument 1"), "{error}");
        assert!(error.to_string().contains("ui_colour"), "{error}");
    }

    #[test]
    fn a_server_without_dev_needs_a_data_dir() {
        let error = load_config(&args(&["--server", "--bootstrap-expect", "1"]), &[]).unwrap_err();
        assert!(error.to_string().contains("data_dir"), "{error}");
    }
}
