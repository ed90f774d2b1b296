//! Agent configuration with Consul's keys, read from JSON and HCL files and merged like Consul does.
//!
//! Loading happens in two steps. Each source (a file, a directory of files, or values from flags) is parsed into a
//! tree and checked against the schema on its own, so an unknown key or a value of the wrong type is reported with
//! the file that holds it. The trees are then merged in order — objects key by key, lists appended, scalars
//! replaced, later sources winning — and the result is resolved into a [`Config`] with defaults filled in and
//! cross-field rules checked. Every error names the source, the key and the reason.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// The datacenter an agent belongs to when none is configured, as in Consul.
pub const DEFAULT_DATACENTER: &str = "dc1";

/// A fully resolved, validated agent configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The datacenter this agent belongs to, lower-cased.
    pub datacenter: String,
    /// The node's name in the gossip pool and the catalog.
    pub node_name: String,
    /// A stable node identifier (a UUID); generated and persisted in `data_dir` when absent.
    pub node_id: Option<String>,
    /// Where state lives; `None` only for a development agent, which keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// Whether this agent is a server (holds the replicated state) or a client.
    pub server: bool,
    /// Servers to wait for before forming the cluster; 0 disables automatic bootstrap.
    pub bootstrap_expect: u32,
    /// The address gossip and the server RPC port bind to.
    pub bind_addr: IpAddr,
    /// The address other agents use to reach this one, when it differs from `bind_addr`.
    pub advertise_addr: Option<IpAddr>,
    /// The addresses the HTTP API binds to.
    pub client_addr: Vec<IpAddr>,
    /// The ports of each listener.
    pub ports: Ports,
    /// LAN addresses to join at start, retried until one answers.
    pub retry_join: Vec<String>,
    /// The pause between join attempts.
    pub retry_interval: Duration,
    /// The number of join attempts before giving up; 0 retries forever.
    pub retry_max: u32,
    /// WAN addresses to join at start (servers only).
    pub retry_join_wan: Vec<String>,
    /// The pause between WAN join attempts (servers only; Consul's default 30 s).
    pub retry_interval_wan: Duration,
    /// The number of WAN join attempts before giving up; 0 retries forever (servers only).
    pub retry_max_wan: u32,
    /// The address servers of other datacenters reach this one at (WAN gossip and server RPC), when
    /// it differs from the LAN one.
    pub advertise_addr_wan: Option<IpAddr>,
    /// Consul's `translate_wan_addrs`, accepted; answers do not translate addresses yet.
    pub translate_wan_addrs: bool,
    /// Overrides of the LAN pool's gossip timing (Consul's `gossip_lan`).
    pub gossip_lan: GossipTuning,
    /// Overrides of the WAN pool's gossip timing (Consul's `gossip_wan`; servers only).
    pub gossip_wan: GossipTuning,
    /// Whether a node that left gracefully rejoins its old cluster on restart.
    pub rejoin_after_leave: bool,
    /// Whether a terminate signal (SIGTERM) makes the agent leave the cluster gracefully
    /// (Consul's default: clients do, servers do not).
    pub leave_on_terminate: bool,
    /// Whether an interrupt (SIGINT, Ctrl-C) stops the agent without leaving the cluster
    /// (Consul's default: servers skip the leave, clients leave).
    pub skip_leave_on_interrupt: bool,
    /// Where the agent writes its process id at start; removed on a clean exit.
    pub pid_file: Option<PathBuf>,
    /// A file the agent writes its log lines to, besides standard error.
    pub log_file: Option<PathBuf>,
    /// Whether log lines are JSON objects rather than text.
    pub log_json: bool,
    /// The web UI's settings, accepted from Consul configurations; no UI is served yet.
    pub ui: UiConfig,
    /// Consul's `enable_script_checks`: script checks may be registered through the HTTP API and
    /// from the configuration.
    pub enable_script_checks: bool,
    /// Consul's `enable_local_script_checks`: script checks only from the configuration files.
    pub enable_local_script_checks: bool,
    /// The gossip encryption key (16 or 32 bytes), decoded.
    pub encrypt: Option<Vec<u8>>,
    /// The log level.
    pub log_level: LogLevel,
    /// The datacenter authoritative for ACLs; defaults to this agent's datacenter.
    pub primary_datacenter: String,
    /// The shortest session TTL accepted (Consul's `session_ttl_min`, default 10 s).
    pub session_ttl_min: Duration,
    /// The ACL settings.
    pub acl: AclConfig,
    /// The agent's metrics (Consul's `telemetry` block).
    pub telemetry: TelemetryConfig,
    /// The DNS interface (Consul's `domain`, `alt_domain`, `recursors` and `dns_config`).
    pub dns: DnsConfig,
    /// Emulated link conditions under this agent's gossip pools and server RPC connections, for
    /// tests and embedders that run several agents in one process; never read from a file.
    pub network: Option<tribune_netem::link::Network>,
    /// The agent's own services and checks from its configuration, and the timing of their sync.
    pub local: LocalConfig,
}

/// The agent's own services and checks (Consul's `service`, `services`, `check` and `checks`
/// blocks) and how they are synced to the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalConfig {
    /// Service definitions as written (snake_case or Consul's PascalCase keys); each one was checked
    /// when the configuration was resolved.
    pub services: Vec<serde_json::Value>,
    /// Check definitions as written, checked likewise.
    pub checks: Vec<serde_json::Value>,
    /// Consul's `watches`: what the agent watches and the handler it runs on a change.
    pub watches: Vec<crate::watches::WatchPlan>,
    /// Consul's `check_update_interval`: how long a check result that changes only the output may
    /// wait before it is synced (default 5 min; 0 syncs every change).
    pub check_update_interval: std::time::Duration,
    /// Between two full anti-entropy syncs (about a minute, as Consul's); set in-process only (tests
    /// shorten it), never read from a file.
    pub sync_interval: std::time::Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            services: Vec::new(),
            checks: Vec::new(),
            watches: Vec::new(),
            check_update_interval: std::time::Duration::from_secs(5 * 60),
            sync_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// A `service`/`check` value: one block (an object) or several (HCL's repeated blocks, an array).
fn definitions(one: Option<Value>, many: Option<Vec<Value>>) -> Vec<Value> {
    let mut out = match one {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    };
    out.extend(many.unwrap_or_default());
    out
}

impl Config {
    /// A development server, as `consul agent -dev`: datacenter `dc1`, node `dev`, state in memory, a
    /// one-server cluster, and every listener on 127.0.0.1 with port 0 (the OS picks free ports; the
    /// running node reports them).
    pub fn dev() -> Self {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        Config {
            datacenter: DEFAULT_DATACENTER.to_owned(),
            node_name: "dev".to_owned(),
            node_id: None,
            data_dir: None,
            server: true,
            bootstrap_expect: 1,
            bind_addr: loopback,
            advertise_addr: None,
            client_addr: vec![loopback],
            ports: Ports {
                http: Some(0),
                serf_lan: Some(0),
                serf_wan: None,
                server: Some(0),
                dns: Some(0),
                ..Ports::default()
            },
            retry_join: Vec::new(),
            retry_interval: DEFAULT_RETRY_INTERVAL,
            retry_max: 0,
            retry_join_wan: Vec::new(),
            retry_interval_wan: DEFAULT_RETRY_INTERVAL,
            retry_max_wan: 0,
            advertise_addr_wan: None,
            translate_wan_addrs: false,
            gossip_lan: GossipTuning::default(),
            gossip_wan: GossipTuning::default(),
            rejoin_after_leave: false,
            leave_on_terminate: false,
            skip_leave_on_interrupt: true,
            pid_file: None,
            log_file: None,
            log_json: false,
            ui: UiConfig::default(),
            enable_script_checks: false,
            enable_local_script_checks: false,
            encrypt: None,
            log_level: LogLevel::Info,
            primary_datacenter: DEFAULT_DATACENTER.to_owned(),
            session_ttl_min: DEFAULT_SESSION_TTL_MIN,
            acl: AclConfig::default(),
            telemetry: TelemetryConfig::default(),
            dns: DnsConfig::default(),
            network: None,
            local: LocalConfig::default(),
        }
    }

    /// The address other agents reach this one at, as Consul chooses it: `advertise_addr` when set,
    /// else `bind_addr`, else — bound to every address (`0.0.0.0` or `::`) — the machine's one private
    /// IPv4 address (its one public IPv6 address for `::`). None or several such addresses is an
    /// error that asks for `bind_addr` or `advertise_addr`.
    pub fn advertise_ip(&self) -> Result<IpAddr, AdvertiseError> {
        if let Some(ip) = self.advertise_addr {
            return Ok(ip);
        }
        if !self.bind_addr.is_unspecified() {
            return Ok(self.bind_addr);
        }
        let interfaces = if_addrs::get_if_addrs().map_err(|e| AdvertiseError::Interfaces {
            reason: e.to_string(),
        })?;
        let addrs: Vec<IpAddr> = interfaces
            .iter()
            // Consul counts an interface that is administratively up; a tunnel or bridge often
            // reports its operational state as unknown, so only a known-down one is left out.
            .filter(|i| {
                !i.is_loopback()
                    && !matches!(
                        i.oper_status,
                        if_addrs::IfOperStatus::Down
                            | if_addrs::IfOperStatus::NotPresent
                            | if_addrs::IfOperStatus::LowerLayerDown
                    )
            })
            .map(if_addrs::Interface::ip)
            .collect();
        pick_advertise_ip(self.bind_addr, &addrs)
    }
}

impl Config {
    /// Settings taken from Consul configurations that Tribune accepts but does not act on yet, one
    /// sentence each naming the key, for the agent to warn about once at start.
    pub fn not_implemented(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ui.enabled || self.ui.dir.is_some() {
            out.push("ui: the web UI is not served yet".to_owned());
        }
        for (key, port, what) in [
            ("ports.grpc", self.ports.grpc, "gRPC (xDS)"),
            ("ports.https", self.ports.https, "HTTPS"),
            ("ports.grpc_tls", self.ports.grpc_tls, "gRPC over TLS"),
        ] {
            if port.is_some() {
                out.push(format!("{key}: {what} is not served yet"));
            }
        }
        if self.translate_wan_addrs {
            out.push("translate_wan_addrs: WAN addresses are not translated yet".to_owned());
        }
        out
    }
}

/// The web UI's settings (Consul's `ui_config`, and the older `ui` and `ui_dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiConfig {
    /// Whether the UI would be served (`ui_config.enabled`, or `ui`).
    pub enabled: bool,
    /// A directory of UI assets to serve instead of the built-in ones (`ui_config.dir`, or `ui_dir`).
    pub dir: Option<PathBuf>,
    /// The HTTP path the UI would be served under (`ui_config.content_path`).
    pub content_path: Option<String>,
    /// The metrics provider the UI would chart (`ui_config.metrics_provider`).
    pub metrics_provider: Option<String>,
}

/// Consul's `telemetry` block, for `/v1/agent/metrics`. Only these keys are read: Tribune pushes
/// metrics nowhere (no statsd, dogstatsd or Circonus), so their settings are refused as unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Above zero, `/v1/agent/metrics?format=prometheus` is served; zero (the default), it is refused
    /// as Consul refuses it. Tribune never expires a series (their set is fixed), so only whether it
    /// is zero matters.
    pub prometheus_retention_time: Duration,
    /// Whether gauges leave out the node's name after the prefix (`consul.<node>.server.isLeader`
    /// otherwise, as Consul puts its host name there); default false, as Consul.
    pub disable_hostname: bool,
    /// The first part of every metric name (default `consul`).
    pub metrics_prefix: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            prometheus_retention_time: Duration::ZERO,
            disable_hostname: false,
            metrics_prefix: "consul".to_owned(),
        }
    }
}

/// Why no address to advertise could be chosen for an agent bound to every address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertiseError {
    /// The machine has no address of the kind Consul would pick.
    #[error(
        "no {kind} address found; set bind_addr or advertise_addr to the address other agents reach this one at"
    )]
    NoneFound {
        /// `private IPv4` or `public IPv6`.
        kind: &'static str,
    },
    /// The machine has several, and picking one would be a guess.
    #[error("multiple {kind} addresses found ({}); set bind_addr or advertise_addr to one of them", list(.found))]
    Multiple {
        /// `private IPv4` or `public IPv6`.
        kind: &'static str,
        /// The candidates.
        found: Vec<IpAddr>,
    },
    /// The interfaces could not be listed.
    #[error("cannot list the network interfaces: {reason}")]
    Interfaces {
        /// The operating system's word.
        reason: String,
    },
}

fn list(addrs: &[IpAddr]) -> String {
    addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

/// Consul's pick for an agent bound to `bind` (`0.0.0.0` or `::`) among the addresses of the machine's
/// interfaces that are up (loopback addresses never qualify): the one private IPv4 address
/// (10/8, 100.64/10, 172.16/12, 192.168/16) for `0.0.0.0`, the one public (global unicast, not
/// unique-local) IPv6 address for `::`. A specific `bind` is returned as it is.
pub fn pick_advertise_ip(bind: IpAddr, interfaces: &[IpAddr]) -> Result<IpAddr, AdvertiseError> {
    if !bind.is_unspecified() {
        return Ok(bind);
    }
    let (kind, wanted): (&'static str, fn(&IpAddr) -> bool) = match bind {
        IpAddr::V4(_) => ("private IPv4", is_private_ipv4),
        IpAddr::V6(_) => ("public IPv6", is_public_ipv6),
    };
    let mut found: Vec<IpAddr> = interfaces.iter().copied().filter(wanted).collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [] => Err(AdvertiseError::NoneFound { kind }),
        [one] => Ok(*one),
        _ => Err(AdvertiseError::Multiple { kind, found }),
    }
}

fn is_private_ipv4(ip: &IpAddr) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let [a, b, ..] = v4.octets();
    // RFC 1918 plus RFC 6598's shared address space, as Consul counts them.
    a == 10
        || (a == 100 && (64..128).contains(&b))
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
}

fn is_public_ipv6(ip: &IpAddr) -> bool {
    let IpAddr::V6(v6) = ip else { return false };
    let [first, ..] = v6.segments();
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    let mapped = v6.to_ipv4_mapped().is_some();
    !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || unique_local || link_local || mapped)
}

/// Consul's default pause between join attempts, LAN (`retry_interval`) and WAN (`retry_interval_wan`).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// Overrides of a gossip pool's timing (Consul's `gossip_lan` and `gossip_wan` blocks); each unset
/// field keeps the pool's preset (memberlist's LAN or WAN values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipTuning {
    /// Members each gossip round sends to.
    pub gossip_nodes: Option<usize>,
    /// The pause between gossip rounds.
    pub gossip_interval: Option<Duration>,
    /// The pause between failure-detection probes.
    pub probe_interval: Option<Duration>,
    /// How long a direct probe waits for its ack before asking others to probe.
    pub probe_timeout: Option<Duration>,
    /// How many times a message is retransmitted, times log(N+1).
    pub retransmit_mult: Option<u32>,
    /// How long a suspect has to refute before it is declared failed, in probe intervals times log(N+1).
    pub suspicion_mult: Option<u32>,
}

impl GossipTuning {
    /// `base` with the fields set here replaced.
    pub fn apply_to(&self, base: tribune_gossip::Config) -> tribune_gossip::Config {
        // The gossip crate's Config is non-exhaustive: change the fields, do not rebuild it.
        let mut tuned = base;
        tuned.gossip_nodes = self.gossip_nodes.unwrap_or(tuned.gossip_nodes);
        tuned.gossip_interval = self.gossip_interval.unwrap_or(tuned.gossip_interval);
        tuned.probe_interval = self.probe_interval.unwrap_or(tuned.probe_interval);
        tuned.probe_timeout = self.probe_timeout.unwrap_or(tuned.probe_timeout);
        tuned.retransmit_mult = self.retransmit_mult.unwrap_or(tuned.retransmit_mult);
        tuned.suspicion_mult = self.suspicion_mult.unwrap_or(tuned.suspicion_mult);
        tuned
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == GossipTuning::default()
    }
}

/// Consul's default `session_ttl_min`.
pub const DEFAULT_SESSION_TTL_MIN: Duration = Duration::from_secs(10);

/// The ports an agent listens on; `None` means the listener is disabled (Consul's `-1`).
///
/// `grpc`, `https` and `grpc_tls` are accepted from Consul configurations and kept, but nothing
/// listens on them yet; they are `None` unless set. `dns` is served (src/dns) on 8600 unless set
/// otherwise, as Consul: agents started side by side on one address need `-dns-port=0` or `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The HTTP API (Consul: 8500).
    pub http: Option<u16>,
    /// LAN gossip (Consul: 8301).
    pub serf_lan: Option<u16>,
    /// WAN gossip, servers only (Consul: 8302).
    pub serf_wan: Option<u16>,
    /// The server RPC port that carries raft and forwarded requests (Consul: 8300).
    pub server: Option<u16>,
    /// DNS over UDP and TCP (Consul: 8600).
    pub dns: Option<u16>,
    /// gRPC for Envoy's xDS (Consul: 8502 when set); not served yet.
    pub grpc: Option<u16>,
    /// HTTPS (Consul: off unless set); not served yet.
    pub https: Option<u16>,
    /// gRPC over TLS (Consul: 8503 when set); not served yet.
    pub grpc_tls: Option<u16>,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: Some(8500),
            serf_lan: Some(8301),
            serf_wan: Some(8302),
            server: Some(8300),
            dns: Some(8600),
            grpc: None,
            https: None,
            grpc_tls: None,
        }
    }
}

/// The DNS interface's settings: Consul's `domain`, `alt_domain`, `recursors` and `dns_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domain answered for, lower-cased, with its trailing dot (Consul: `consul.`).
    pub domain: String,
    /// A second domain answered like `domain` (Consul's `alt_domain`).
    pub alt_domain: Option<String>,
    /// Servers asked, in order, for names outside the domains (port 53 unless given).
    pub recursors: Vec<SocketAddr>,
    /// How long to wait for one recursor (Consul's `dns_config.recursor_timeout`, default 2 s).
    pub recursor_timeout: Duration,
    /// The TTL of node answers (default 0).
    pub node_ttl: Duration,
    /// The TTL of service answers by service name, `*` for any other (default 0).
    pub service_ttl: BTreeMap<String, Duration>,
    /// Whether lookups may be served by any server rather than the leader (default true).
    pub allow_stale: bool,
    /// How far behind the leader a stale answer may be before the leader is asked (default 87600 h).
    pub max_stale: Duration,
    /// Whether instances with a warning check are left out too (critical ones always are).
    pub only_passing: bool,
    /// The most records in an answer over UDP (default 3).
    pub udp_answer_limit: usize,
    /// Whether a UDP answer that was cut sets the TC bit, so clients retry over TCP.
    pub enable_truncate: bool,
    /// The most records in an A, AAAA or ANY answer over UDP and TCP alike (Consul's
    /// `a_record_limit`; 0, the default, for no limit beyond the UDP ones).
    pub a_record_limit: usize,
    /// Whether answers are written without name compression (Consul's `disable_compression`).
    pub disable_compression: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "consul.".to_owned(),
            alt_domain: None,
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            node_ttl: Duration::ZERO,
            service_ttl: BTreeMap::new(),
            allow_stale: true,
            max_stale: Duration::from_secs(87_600 * 3600),
            only_passing: false,
            udp_answer_limit: 3,
            enable_truncate: false,
            a_record_limit: 0,
            disable_compression: false,
        }
    }
}

/// The ACL settings of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// Whether ACLs are enforced.
    pub enabled: bool,
    /// What happens when no rule matches.
    pub default_policy: DefaultPolicy,
    /// What happens when a token cannot be resolved.
    pub down_policy: DownPolicy,
    /// Whether tokens set through the agent API survive a restart.
    pub enable_token_persistence: bool,
    /// Whether secondary datacenters replicate global tokens.
    pub enable_token_replication: bool,
    /// Whether recursive reads need `list` on the prefix.
    pub enable_key_list_policy: bool,
    /// How long a resolved token is cached.
    pub token_ttl: Duration,
    /// How long a resolved policy is cached.
    pub policy_ttl: Duration,
    /// How long a resolved role is cached.
    pub role_ttl: Duration,
    /// The shortest lifetime a new token may be given (`ExpirationTTL` / `ExpirationTime`).
    pub token_min_expiration_ttl: Duration,
    /// The longest lifetime a new token may be given.
    pub token_max_expiration_ttl: Duration,
    /// The special tokens.
    pub tokens: AclTokens,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            enabled: false,
            default_policy: DefaultPolicy::Allow,
            down_policy: DownPolicy::ExtendCache,
            enable_token_persistence: false,
            enable_token_replication: false,
            enable_key_list_policy: false,
            token_ttl: Duration::from_secs(30),
            policy_ttl: Duration::from_secs(30),
            role_ttl: Duration::from_secs(30),
            token_min_expiration_ttl: Duration::from_secs(60),
            token_max_expiration_ttl: Duration::from_secs(24 * 60 * 60),
            tokens: AclTokens::default(),
        }
    }
}

/// The special tokens of an agent (Consul's `acl.tokens`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclTokens {
    /// Installed as a management token when a server of the primary datacenter becomes leader.
    pub initial_management: Option<String>,
    /// The agent's own token for its internal requests.
    pub agent: Option<String>,
    /// The token used for requests that carry none.
    pub default: Option<String>,
    /// The token a secondary datacenter uses to replicate ACLs.
    pub replication: Option<String>,
}

/// What an ACL decision falls back to when no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Everything not denied is allowed.
    Allow,
    /// Everything not allowed is denied.
    Deny,
}

/// What happens when a token cannot be resolved because its source is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownPolicy {
    /// Allow everything.
    Allow,
    /// Deny everything.
    Deny,
    /// Serve cached tokens past their TTL; unknown tokens get the default policy.
    ExtendCache,
    /// Like `ExtendCache`, but refresh stale entries in the background.
    AsyncCache,
}

/// How much the agent logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Details useful when debugging.
    Debug,
    /// Normal operation (the default).
    Info,
    /// Something unexpected that the agent survives.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// The level's name as `tracing`'s filters spell it.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceName {
    /// A file, by path.
    File(PathBuf),
    /// Command-line flags.
    Flags,
    /// Built-in values, such as `-dev` mode's.
    Builtin(&'static str),
    /// The n-th `-hcl` argument, counted from 1.
    HclFlag(usize),
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceName::File(path) => write!(f, "{}", path.display()),
            SourceName::Flags => f.write_str("command-line flags"),
            SourceName::Builtin(name) => write!(f, "built-in {name} settings"),
            SourceName::HclFlag(n) => write!(f, "-hcl argument {n}"),
        }
    }
}

/// Why a configuration could not be loaded. Each variant names the source and, where it applies, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not valid JSON or HCL.
    #[error("{source_name}: not valid {format}: {message}")]
    Syntax {
        /// The file.
        source_name: SourceName,
        /// "JSON" or "HCL".
        format: &'static str,
        /// The parser's explanation.
        message: String,
    },
    /// A file is neither `.json` nor `.hcl`.
    #[error("{path}: unknown configuration format (expected a .json or .hcl file)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A key that Tribune does not know.
    #[error("{source_name}: unknown key `{key}`")]
    UnknownKey {
        /// Where the key was found.
        source_name: SourceName,
        /// The key's dotted path.
        key: String,
    },
    /// A key whose value is of the wrong type or out of range.
    #[error("{source_name}: invalid value for `{key}`: {reason}")]
    InvalidValue {
        /// Where the value was set (the last source that set it).
        source_name: SourceName,
        /// The key's dotted path.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The on-disk schema: every key optional, unknown keys refused. Values are checked here for their type only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    datacenter: Option<String>,
    node_name: Option<String>,
    node_id: Option<String>,
    data_dir: Option<PathBuf>,
    server: Option<bool>,
    /// Consul's bootstrap mode: a single server that elects itself (`bootstrap_expect = 1`).
    bootstrap: Option<bool>,
    bootstrap_expect: Option<u32>,
    bind_addr: Option<String>,
    advertise_addr: Option<String>,
    client_addr: Option<String>,
    ports: Option<RawPorts>,
    retry_join: Option<Vec<String>>,
    retry_interval: Option<String>,
    retry_max: Option<u32>,
    retry_join_wan: Option<Vec<String>>,
    retry_interval_wan: Option<String>,
    retry_max_wan: Option<u32>,
    advertise_addr_wan: Option<String>,
    translate_wan_addrs: Option<bool>,
    gossip_lan: Option<RawGossip>,
    gossip_wan: Option<RawGossip>,
    rejoin_after_leave: Option<bool>,
    leave_on_terminate: Option<bool>,
    skip_leave_on_interrupt: Option<bool>,
    pid_file: Option<PathBuf>,
    log_file: Option<PathBuf>,
    log_json: Option<bool>,
    ui: Option<bool>,
    ui_dir: Option<PathBuf>,
    ui_config: Option<RawUiConfig>,
    enable_script_checks: Option<bool>,
    enable_local_script_checks: Option<bool>,
    encrypt: Option<String>,
    log_level: Option<String>,
    primary_datacenter: Option<String>,
    session_ttl_min: Option<String>,
    service: Option<Value>,
    services: Option<Vec<Value>>,
    check: Option<Value>,
    checks: Option<Vec<Value>>,
    watches: Option<Vec<Value>>,
    check_update_interval: Option<String>,
    acl: Option<RawAcl>,
    telemetry: Option<RawTelemetry>,
    domain: Option<String>,
    alt_domain: Option<String>,
    recursors: Option<Vec<String>>,
    dns_config: Option<RawDnsConfig>,
}

/// Consul's `dns_config` block (the settings Tribune acts on).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsConfig {
    allow_stale: Option<bool>,
    max_stale: Option<String>,
    node_ttl: Option<String>,
    service_ttl: Option<BTreeMap<String, String>>,
    only_passing: Option<bool>,
    udp_answer_limit: Option<i64>,
    enable_truncate: Option<bool>,
    recursor_timeout: Option<String>,
    a_record_limit: Option<i64>,
    disable_compression: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    http: Option<i32>,
    serf_lan: Option<i32>,
    serf_wan: Option<i32>,
    server: Option<i32>,
    dns: Option<i32>,
    grpc: Option<i32>,
    https: Option<i32>,
    grpc_tls: Option<i32>,
}

/// A `gossip_lan` or `gossip_wan` block. Counts are read signed so a negative one is refused with
/// a message of ours rather than serde's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGossip {
    gossip_nodes: Option<i64>,
    gossip_interval: Option<String>,
    probe_interval: Option<String>,
    probe_timeout: Option<String>,
    retransmit_mult: Option<i64>,
    suspicion_mult: Option<i64>,
}

/// Consul's `ui_config`. The settings the UI alone would read are checked for their type and dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUiConfig {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    content_path: Option<String>,
    metrics_provider: Option<String>,
    #[serde(rename = "metrics_provider_files")]
    _metrics_provider_files: Option<Vec<String>>,
    #[serde(rename = "metrics_provider_options_json")]
    _metrics_provider_options_json: Option<String>,
    #[serde(rename = "metrics_proxy")]
    _metrics_proxy: Option<serde::de::IgnoredAny>,
    #[serde(rename = "dashboard_url_templates")]
    _dashboard_url_templates: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcl {
    enabled: Option<bool>,
    default_policy: Option<String>,
    down_policy: Option<String>,
    enable_token_persistence: Option<bool>,
    enable_token_replication: Option<bool>,
    enable_key_list_policy: Option<bool>,
    token_ttl: Option<String>,
    policy_ttl: Option<String>,
    role_ttl: Option<String>,
    token_min_expiration_ttl: Option<String>,
    token_max_expiration_ttl: Option<String>,
    tokens: Option<RawAclTokens>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    prometheus_retention_time: Option<String>,
    disable_hostname: Option<bool>,
    metrics_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAclTokens {
    initial_management: Option<String>,
    /// Consul's name for `initial_management` before 1.11.
    master: Option<String>,
    agent: Option<String>,
    default: Option<String>,
    replication: Option<String>,
}

/// Collects configuration sources in order and resolves them into a [`Config`].
///
/// Later sources win over earlier ones, as with Consul's `-config-file`, `-config-dir` and flags.
#[derive(Debug, Default)]
pub struct ConfigLoader {
    merged: Value,
    /// The source that last set each leaf key, so validation errors can name it.
    origin: BTreeMap<String, SourceName>,
}

impl ConfigLoader {
    /// An empty loader: resolving it gives Consul's defaults.
    pub fn new() -> Self {
        ConfigLoader {
            merged: Value::Object(serde_json::Map::new()),
            origin: BTreeMap::new(),
        }
    }

    /// Adds one file; its format follows its extension (`.json` or `.hcl`).
    pub fn add_file(&mut self, path: &Path) -> Result<&mut Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("json") => self.add_json(SourceName::File(path.to_owned()), &text),
            Some("hcl") => self.add_hcl(SourceName::File(path.to_owned()), &text),
            _ => Err(ConfigError::UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }

    /// Adds every `.json` and `.hcl` file of a directory, in lexical order of their names.
    pub fn add_dir(&mut self, dir: &Path) -> Result<&mut Self, ConfigError> {
        let io_error = |source| ConfigError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            let is_config = matches!(
                path.extension().and_then(|ext| ext.to_str()),
                Some("json" | "hcl")
            );
            if is_config && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        for path in files {
            self.add_file(&path)?;
        }
        Ok(self)
    }

    /// Adds a JSON document.
    pub fn add_json(&mut self, source_name: SourceName, text: &str) -> Result<&mut Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|error| ConfigError::Syntax {
            source_name: source_name.clone(),
            format: "JSON",
            message: error.to_string(),
        })?;
        self.add_value(source_name, value)
    }

    /// Adds an HCL document.
    pub fn add_hcl(&mut self, source_name: SourceName, text: &str) -> Result<&mut Self, ConfigError> {
        let body: hcl::Value = hcl::from_str(text).map_err(|error| ConfigError::Syntax {
            source_name: source_name.clone(),
            format: "HCL",
            message: error.to_string(),
        })?;
        let value = serde_json::to_value(body).map_err(|error| ConfigError::Syntax {
            source_name: source_name.clone(),
            format: "HCL",
            message: error.to_string(),
        })?;
        self.add_value(source_name, value)
    }

    /// Adds an already parsed tree, such as one built from command-line flags.
    pub fn add_value(&mut self, source_name: SourceName, value: Value) -> Result<&mut Self, ConfigError> {
        check_schema(&source_name, value.clone())?;
        let mut leaves = Vec::new();
        collect_leaves(&value, String::new(), &mut leaves);
        for key in leaves {
            self.origin.insert(key, source_name.clone());
        }
        merge(&mut self.merged, value);
        Ok(self)
    }

    /// Resolves the merged sources into a validated configuration.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let raw = check_schema(&SourceName::Builtin("merged"), self.merged.clone())?;
        self.resolve_raw(raw)
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        // A block (`gossip_wan`) is named by the source that set one of its keys.
        let in_block = |leaf: &String| leaf.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'));
        let source_name = self
            .origin
            .get(key)
            .or_else(|| {
                self.origin
                    .iter()
                    .find(|(leaf, _)| in_block(leaf))
                    .map(|(_, source)| source)
            })
            .cloned()
            .unwrap_or(SourceName::Builtin("default"));
        ConfigError::InvalidValue {
            source_name,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn resolve_raw(&self, mut raw: RawConfig) -> Result<Config, ConfigError> {
        let datacenter = match raw.datacenter {
            Some(dc) => self.datacenter_name("datacenter", &dc)?,
            None => DEFAULT_DATACENTER.to_owned(),
        };
        let primary_datacenter = match raw.primary_datacenter {
            Some(dc) => self.datacenter_name("primary_datacenter", &dc)?,
            None => datacenter.clone(),
        };
        let node_name = match raw.node_name {
            Some(name) => {
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(self.invalid(
                        "node_name",
                        "must be non-empty, without spaces or control characters",
                    ));
                }
                name
            }
            None => default_node_name(),
        };
        if let Some(id) = &raw.node_id
            && uuid::Uuid::parse_str(id).is_err()
        {
            return Err(self.invalid("node_id", format!("{id:?} is not a UUID")));
        }
        let server = raw.server.unwrap_or(false);
        let mut bootstrap_expect = raw.bootstrap_expect.unwrap_or(0);
        if raw.bootstrap == Some(true) {
            if !server {
                return Err(self.invalid("bootstrap", "only servers can bootstrap; set \"server\": true"));
            }
            // bootstrap_expect = 1 is the same mode; a larger count contradicts it, as in Consul.
            if bootstrap_expect > 1 {
                return Err(self.invalid(
                    "bootstrap",
                    format!(
                        "bootstrap (a single server that elects itself) and bootstrap_expect = {bootstrap_expect} are mutually exclusive"
                    ),
                ));
            }
            bootstrap_expect = 1;
        }
        if bootstrap_expect > 0 && !server {
            return Err(self.invalid(
                "bootstrap_expect",
                "only servers can bootstrap; set \"server\": true",
            ));
        }
        let bind_addr = match raw.bind_addr {
            Some(addr) => self.ip("bind_addr", &addr)?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let advertise_addr = raw
            .advertise_addr
            .map(|addr| self.ip("advertise_addr", &addr))
            .transpose()?;
        if advertise_addr.is_some_and(|addr| addr.is_unspecified()) {
            return Err(self.invalid("advertise_addr", "must be a routable address, not 0.0.0.0 or ::"));
        }
        let client_addr = match raw.client_addr {
            Some(list) => {
                let addrs = list
                    .split_whitespace()
                    .map(|addr| self.ip("client_addr", addr))
                    .collect::<Result<Vec<_>, _>>()?;
                if addrs.is_empty() {
                    return Err(self.invalid("client_addr", "needs at least one address"));
                }
                addrs
            }
            None => vec![IpAddr::from([127, 0, 0, 1])],
        };
        let ports = self.ports(raw.ports.unwrap_or_default())?;
        let retry_interval = match raw.retry_interval {
            Some(text) => self.duration("retry_interval", &text)?,
            None => DEFAULT_RETRY_INTERVAL,
        };
        let session_ttl_min = match raw.session_ttl_min {
            Some(text) => self.duration("session_ttl_min", &text)?,
            None => DEFAULT_SESSION_TTL_MIN,
        };
        if session_ttl_min.is_zero() {
            return Err(self.invalid("session_ttl_min", "must be above zero"));
        }
        let local = self.local(
            definitions(raw.service.take(), raw.services.take()),
            definitions(raw.check.take(), raw.checks.take()),
            raw.watches.take().unwrap_or_default(),
            raw.check_update_interval.take(),
        )?;
        let retry_join_wan = raw.retry_join_wan.unwrap_or_default();
        // Settings only a member of the WAN pool acts on: a client setting them has misread its role.
        let server_only = [
            ("retry_join_wan", !retry_join_wan.is_empty()),
            ("retry_interval_wan", raw.retry_interval_wan.is_some()),
            ("retry_max_wan", raw.retry_max_wan.is_some()),
            ("gossip_wan", raw.gossip_wan.is_some()),
        ];
        if !server && let Some((key, _)) = server_only.iter().find(|(_, set)| *set) {
            return Err(self.invalid(key, "only servers join the WAN pool"));
        }
        let retry_interval_wan = match raw.retry_interval_wan {
            Some(text) => self.duration("retry_interval_wan", &text)?,
            None => DEFAULT_RETRY_INTERVAL,
        };
        if retry_interval_wan.is_zero() {
            return Err(self.invalid("retry_interval_wan", "must be above zero"));
        }
        let advertise_addr_wan = raw
            .advertise_addr_wan
            .map(|addr| self.ip("advertise_addr_wan", &addr))
            .transpose()?;
        if advertise_addr_wan.is_some_and(|addr| addr.is_unspecified()) {
            return Err(self.invalid(
                "advertise_addr_wan",
                "must be a routable address, not 0.0.0.0 or ::",
            ));
        }
        let gossip_lan = self.gossip_tuning(
            "gossip_lan",
            raw.gossip_lan.unwrap_or_default(),
            tribune_gossip::Config::lan(),
        )?;
        let gossip_wan = self.gossip_tuning(
            "gossip_wan",
            raw.gossip_wan.unwrap_or_default(),
            tribune_gossip::Config::wan(),
        )?;
        let encrypt = raw.encrypt.map(|key| self.gossip_key(&key)).transpose()?;
        let log_level = match raw.log_level.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("trace") => LogLevel::Trace,
            Some("debug") => LogLevel::Debug,
            Some("warn") => LogLevel::Warn,
            Some("err" | "error") => LogLevel::Error,
            Some(other) => {
                return Err(self.invalid(
                    "log_level",
                    format!("{other:?} is not one of trace, debug, info, warn, err"),
                ));
            }
        };
        let acl = self.acl(raw.acl.unwrap_or_default())?;
        let telemetry = self.telemetry(raw.telemetry.unwrap_or_default())?;
        let dns = self.dns(raw.domain, raw.alt_domain, raw.recursors, raw.dns_config)?;
        let ui_config = raw.ui_config.unwrap_or_default();
        let ui = UiConfig {
            enabled: ui_config.enabled.or(raw.ui).unwrap_or(false),
            dir: ui_config.dir.or(raw.ui_dir),
            content_path: ui_config.content_path,
            metrics_provider: ui_config.metrics_provider,
        };
        Ok(Config {
            datacenter,
            node_name,
            node_id: raw.node_id,
            data_dir: raw.data_dir,
            server,
            bootstrap_expect,
            bind_addr,
            advertise_addr,
            client_addr,
            ports,
            retry_join: raw.retry_join.unwrap_or_default(),
            retry_interval,
            retry_max: raw.retry_max.unwrap_or(0),
            retry_join_wan,
            retry_interval_wan,
            retry_max_wan: raw.retry_max_wan.unwrap_or(0),
            advertise_addr_wan,
            translate_wan_addrs: raw.translate_wan_addrs.unwrap_or(false),
            gossip_lan,
            gossip_wan,
            rejoin_after_leave: raw.rejoin_after_leave.unwrap_or(false),
            // Consul: clients leave on terminate by default, servers do not (a server leaving shrinks the quorum).
            leave_on_terminate: raw.leave_on_terminate.unwrap_or(!server),
            // Consul: a server keeps its raft seat on Ctrl-C, a client leaves.
            skip_leave_on_interrupt: raw.skip_leave_on_interrupt.unwrap_or(server),
            pid_file: raw.pid_file,
            log_file: raw.log_file,
            log_json: raw.log_json.unwrap_or(false),
            ui,
            enable_script_checks: raw.enable_script_checks.unwrap_or(false),
            enable_local_script_checks: raw.enable_local_script_checks.unwrap_or(false),
            encrypt,
            log_level,
            primary_datacenter,
            session_ttl_min,
            acl,
            telemetry,
            dns,
            network: None,
            local,
        })
    }

    /// The `service`/`services`/`check`/`checks` blocks, each read as the agent will register it
    /// (a bad one names its block), the `watches`, and `check_update_interval`.
    fn local(
        &self,
        services: Vec<Value>,
        checks: Vec<Value>,
        watches: Vec<Value>,
        check_update_interval: Option<String>,
    ) -> Result<LocalConfig, ConfigError> {
        let watches = watches
            .iter()
            .map(|watch| {
                crate::watches::WatchPlan::parse(watch).map_err(|e| self.invalid("watches", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for service in &services {
            crate::local::parse_service(service).map_err(|e| self.invalid("service", e.to_string()))?;
        }
        for check in &checks {
            crate::local::parse_check(check).map_err(|e| self.invalid("check", e.to_string()))?;
        }
        let check_update_interval = match check_update_interval {
            Some(text) => self.duration("check_update_interval", &text)?,
            None => LocalConfig::default().check_update_interval,
        };
        Ok(LocalConfig {
            services,
            checks,
            watches,
            check_update_interval,
            ..LocalConfig::default()
        })
    }

    fn datacenter_name(&self, key: &str, name: &str) -> Result<String, ConfigError> {
        let lower = name.to_ascii_lowercase();
        let valid = !lower.is_empty()
            && lower
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(lower)
        } else {
            Err(self.invalid(
                key,
                format!("{name:?} may only contain letters, digits, '-' and '_'"),
            ))
        }
    }

    fn ip(&self, key: &str, text: &str) -> Result<IpAddr, ConfigError> {
        text.parse()
            .map_err(|_| self.invalid(key, format!("{text:?} is not an IP address")))
    }

    fn duration(&self, key: &str, text: &str) -> Result<Duration, ConfigError> {
        crate::duration::parse_go_duration(text).map_err(|error| {
            self.invalid(
                key,
                format!("{error}; a duration reads like \"30s\", \"1.5m\" or \"1h30m\""),
            )
        })
    }

    /// A `gossip_lan`/`gossip_wan` block: every value above zero, and the probe timeout below the
    /// probe interval once the block is laid over the pool's preset `base`.
    fn gossip_tuning(
        &self,
        block: &str,
        raw: RawGossip,
        base: tribune_gossip::Config,
    ) -> Result<GossipTuning, ConfigError> {
        let count = |field: &str, value: Option<i64>| -> Result<Option<u32>, ConfigError> {
            let Some(n) = value else { return Ok(None) };
            let key = format!("{block}.{field}");
            if n <= 0 {
                return Err(self.invalid(&key, format!("{n} must be above zero")));
            }
            u32::try_from(n)
                .map(Some)
                .map_err(|_| self.invalid(&key, format!("{n} is too large")))
        };
        let duration = |field: &str, value: Option<String>| -> Result<Option<Duration>, ConfigError> {
            let Some(text) = value else { return Ok(None) };
            let key = format!("{block}.{field}");
            let duration = self.duration(&key, &text)?;
            if duration.is_zero() {
                return Err(self.invalid(&key, "must be above zero"));
            }
            Ok(Some(duration))
        };
        let tuning = GossipTuning {
            gossip_nodes: count("gossip_nodes", raw.gossip_nodes)?.map(|n| n as usize),
            gossip_interval: duration("gossip_interval", raw.gossip_interval)?,
            probe_interval: duration("probe_interval", raw.probe_interval)?,
            probe_timeout: duration("probe_timeout", raw.probe_timeout)?,
            retransmit_mult: count("retransmit_mult", raw.retransmit_mult)?,
            suspicion_mult: count("suspicion_mult", raw.suspicion_mult)?,
        };
        let applied = tuning.apply_to(base);
        if applied.probe_timeout >= applied.probe_interval {
            // Name the key the user set; when both are set, the timeout is the one to shorten.
            let field = if tuning.probe_timeout.is_some() {
                "probe_timeout"
            } else {
                "probe_interval"
            };
            return Err(self.invalid(
                &format!("{block}.{field}"),
                format!(
                    "probe_timeout ({}) must be below probe_interval ({})",
                    crate::duration::format_go_duration(applied.probe_timeout),
                    crate::duration::format_go_duration(applied.probe_interval),
                ),
            ));
        }
        applied
            .validate()
            .map_err(|error| self.invalid(block, error.to_string()))?;
        Ok(tuning)
    }

    fn ports(&self, raw: RawPorts) -> Result<Ports, ConfigError> {
        let defaults = Ports::default();
        let port = |key: &str, value: Option<i32>, default: Option<u16>| match value {
            None => Ok(default),
            Some(-1) => Ok(None),
            Some(n) => u16::try_from(n)
                .map(Some)
                .map_err(|_| self.invalid(key, format!("{n} is not a port (0-65535, or -1 to disable)"))),
        };
        Ok(Ports {
            http: port("ports.http", raw.http, defaults.http)?,
            serf_lan: port("ports.serf_lan", raw.serf_lan, defaults.serf_lan)?,
            serf_wan: port("ports.serf_wan", raw.serf_wan, defaults.serf_wan)?,
            server: port("ports.server", raw.server, defaults.server)?,
            dns: port("ports.dns", raw.dns, defaults.dns)?,
            grpc: port("ports.grpc", raw.grpc, defaults.grpc)?,
            https: port("ports.https", raw.https, defaults.https)?,
            grpc_tls: port("ports.grpc_tls", raw.grpc_tls, defaults.grpc_tls)?,
        })
    }

    /// `domain`, `alt_domain`, `recursors` and `dns_config`, over [`DnsConfig::default`].
    fn dns(
        &self,
        domain: Option<String>,
        alt_domain: Option<String>,
        recursors: Option<Vec<String>>,
        raw: Option<RawDnsConfig>,
    ) -> Result<DnsConfig, ConfigError> {
        let defaults = DnsConfig::default();
        let domain_name = |key: &str, text: &str| -> Result<String, ConfigError> {
            let lower = text.trim_end_matches('.').to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                });
            if valid {
                Ok(format!("{lower}."))
            } else {
                Err(self.invalid(key, format!("{text:?} is not a DNS domain")))
            }
        };
        let domain = match domain {
            Some(text) => domain_name("domain", &text)?,
            None => defaults.domain,
        };
        let alt_domain = alt_domain
            .filter(|text| !text.is_empty())
            .map(|text| domain_name("alt_domain", &text))
            .transpose()?;
        if alt_domain.as_ref() == Some(&domain) {
            return Err(self.invalid("alt_domain", "must differ from domain"));
        }
        let recursors = recursors
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        self.invalid(
                            "recursors",
                            format!("{text:?} is not an IP address with an optional port"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let raw = raw.unwrap_or_default();
        let duration = |key: &str, text: Option<String>, default: Duration| match text {
            Some(text) => self.duration(key, &text),
            None => Ok(default),
        };
        let mut service_ttl = BTreeMap::new();
        for (service, text) in raw.service_ttl.unwrap_or_default() {
            service_ttl.insert(
                service.to_ascii_lowercase(),
                self.duration("dns_config.service_ttl", &text)?,
            );
        }
        let udp_answer_limit = match raw.udp_answer_limit {
            None => defaults.udp_answer_limit,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(n) => return Err(self.invalid("dns_config.udp_answer_limit", format!("{n} is below 1"))),
        };
        let a_record_limit = match raw.a_record_limit {
            None => defaults.a_record_limit,
            Some(n) => usize::try_from(n)
                .map_err(|_| self.invalid("dns_config.a_record_limit", format!("{n} is below 0")))?,
        };
        let recursor_timeout = duration(
            "dns_config.recursor_timeout",
            raw.recursor_timeout,
            defaults.recursor_timeout,
        )?;
        if recursor_timeout.is_zero() {
            return Err(self.invalid("dns_config.recursor_timeout", "must be above zero"));
        }
        Ok(DnsConfig {
            domain,
            alt_domain,
            recursors,
            recursor_timeout,
            node_ttl: duration("dns_config.node_ttl", raw.node_ttl, defaults.node_ttl)?,
            service_ttl,
            allow_stale: raw.allow_stale.unwrap_or(defaults.allow_stale),
            max_stale: duration("dns_config.max_stale", raw.max_stale, defaults.max_stale)?,
            only_passing: raw.only_passing.unwrap_or(defaults.only_passing),
            udp_answer_limit,
            enable_truncate: raw.enable_truncate.unwrap_or(defaults.enable_truncate),
            a_record_limit,
            disable_compression: raw.disable_compression.unwrap_or(defaults.disable_compression),
        })
    }

    fn gossip_key(&self, text: &str) -> Result<Vec<u8>, ConfigError> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|error| self.invalid("encrypt", format!("not valid base64: {error}")))?;
        match key.len() {
            16 | 32 => Ok(key),
            24 => Err(self.invalid(
                "encrypt",
                "24-byte (AES-192) keys are not supported; use 16 or 32 bytes",
            )),
            n => Err(self.invalid("encrypt", format!("the key is {n} bytes; it must be 16 or 32"))),
        }
    }

    fn telemetry(&self, raw: RawTelemetry) -> Result<TelemetryConfig, ConfigError> {
        let defaults = TelemetryConfig::default();
        let prometheus_retention_time = match raw.prometheus_retention_time {
            Some(text) => self.duration("telemetry.prometheus_retention_time", &text)?,
            None => defaults.prometheus_retention_time,
        };
        let metrics_prefix = raw.metrics_prefix.unwrap_or(defaults.metrics_prefix);
        // The prefix becomes part of every Prometheus name; what the text format cannot carry
        // would be rewritten there, so only a name that survives unchanged (dots aside) is taken.
        if !metrics_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(self.invalid(
                "telemetry.metrics_prefix",
                format!("{metrics_prefix:?} may only contain letters, digits, '_', '-', '.' and ':'"),
            ));
        }
        Ok(TelemetryConfig {
            prometheus_retention_time,
            disable_hostname: raw.disable_hostname.unwrap_or(defaults.disable_hostname),
            metrics_prefix,
        })
    }

    fn acl(&self, raw: RawAcl) -> Result<AclConfig, ConfigError> {
        let defaults = AclConfig::default();
        let default_policy = match raw.default_policy.as_deref() {
            None | Some("allow") => DefaultPolicy::Allow,
            Some("deny") => DefaultPolicy::Deny,
            Some(other) => {
                return Err(self.invalid(
                    "acl.default_policy",
                    format!("{other:?} is not \"allow\" or \"deny\""),
                ));
            }
        };
        let down_policy = match raw.down_policy.as_deref() {
            None | Some("extend-cache") => DownPolicy::ExtendCache,
            Some("allow") => DownPolicy::Allow,
            Some("deny") => DownPolicy::Deny,
            Some("async-cache") => DownPolicy::AsyncCache,
            Some(other) => {
                return Err(self.invalid(
                    "acl.down_policy",
                    format!("{other:?} is not one of allow, deny, extend-cache, async-cache"),
                ));
            }
        };
        let ttl = |key: &str, value: Option<String>, default: Duration| match value {
            Some(text) => self.duration(key, &text),
            None => Ok(default),
        };
        let tokens = raw.tokens.unwrap_or_default();
        if tokens.initial_management.is_some() && tokens.master.is_some() {
            return Err(self.invalid(
                "acl.tokens.master",
                "set either acl.tokens.initial_management or its old name acl.tokens.master, not both",
            ));
        }
        Ok(AclConfig {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            default_policy,
            down_policy,
            enable_token_persistence: raw.enable_token_persistence.unwrap_or(false),
            enable_token_replication: raw.enable_token_replication.unwrap_or(false),
            enable_key_list_policy: raw.enable_key_list_policy.unwrap_or(false),
            token_ttl: ttl("acl.token_ttl", raw.token_ttl, defaults.token_ttl)?,
            policy_ttl: ttl("acl.policy_ttl", raw.policy_ttl, defaults.policy_ttl)?,
            role_ttl: ttl("acl.role_ttl", raw.role_ttl, defaults.role_ttl)?,
            token_min_expiration_ttl: ttl(
                "acl.token_min_expiration_ttl",
                raw.token_min_expiration_ttl,
                defaults.token_min_expiration_ttl,
            )?,
            token_max_expiration_ttl: ttl(
                "acl.token_max_expiration_ttl",
                raw.token_max_expiration_ttl,
                defaults.token_max_expiration_ttl,
            )?,
            tokens: AclTokens {
                initial_management: tokens.initial_management.or(tokens.master),
                agent: tokens.agent,
                default: tokens.default,
                replication: tokens.replication,
            },
        })
    }
}

/// Checks a tree against the schema, turning serde's complaint into an error that names the key.
fn check_schema(source_name: &SourceName, value: Value) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            // The path already ends with the unknown field; fall back to the field alone at the top level.
            let field = rest.split('`').next().unwrap_or(rest);
            let key = if path.is_empty() || path == "." {
                field.to_owned()
            } else {
                path
            };
            ConfigError::UnknownKey {
                source_name: source_name.clone(),
                key,
            }
        } else {
            ConfigError::InvalidValue {
                source_name: source_name.clone(),
                key: path,
                reason: inner,
            }
        }
    })
}

/// Lists the dotted paths of every leaf of a tree.
fn collect_leaves(value: &Value, prefix: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(child, path, out);
            }
        }
        _ => out.push(prefix),
    }
}

/// Merges `update` into `base` as Consul merges its sources: objects key by key, lists appended, scalars replaced.
fn merge(base: &mut Value, update: Value) {
    match (base, update) {
        (Value::Object(base), Value::Object(update)) => {
            for (key, value) in update {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(update)) => base.extend(update),
        (base, update) => *base = update,
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "tribune".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_json(docs: &[&str]) -> Result<Config, ConfigError> {
        let mut loader = ConfigLoader::new();
        for (i, doc) in docs.iter().enumerate() {
            loader.add_json(SourceName::File(PathBuf::from(format!("{i}.json"))), doc)?;
        }
        loader.resolve()
    }

    #[test]
    fn defaults_follow_consul() {
        let config = load_json(&[]).unwrap();
        assert_eq!(config.datacenter, "dc1");
        assert_eq!(config.primary_datacenter, "dc1");
        assert_eq!(config.ports, Ports::default());
        assert_eq!(config.client_addr, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(config.retry_interval, Duration::from_secs(30));
        assert_eq!(config.session_ttl_min, Duration::from_secs(10));
        assert!(!config.server);
        assert!(config.leave_on_terminate, "clients leave on terminate by default");
        assert_eq!(config.acl.down_policy, DownPolicy::ExtendCache);
        assert_eq!(config.acl.token_ttl, Duration::from_secs(30));
    }

    #[test]
    fn json_and_hcl_give_the_same_config() {
        let json = r#"{"datacenter":"East-1","server":true,"bootstrap_expect":3,"ports":{"http":18500,"serf_wan":-1},
            "retry_join":["10.0.0.1"],"acl":{"enabled":true,"default_policy":"deny","tokens":{"master":"root"}}}"#;
        let hcl = r#"
            datacenter = "East-1"
            server = true
            bootstrap_expect = 3
            ports {
              http = 18500
              serf_wan = -1
            }
            retry_join = ["10.0.0.1"]
            acl {
              enabled = true
              default_policy = "deny"
              tokens { master = "root" }
            }
        "#;
        let from_json = load_json(&[json]).unwrap();
        let mut loader = ConfigLoader::new();
        loader.add_hcl(SourceName::File("a.hcl".into()), hcl).unwrap();
        let from_hcl = loader.resolve().unwrap();
        assert_eq!(from_json, from_hcl);
        assert_eq!(from_json.datacenter, "east-1");
        assert_eq!(from_json.ports.http, Some(18500));
        assert_eq!(from_json.ports.serf_wan, None);
        assert_eq!(from_json.acl.tokens.initial_management.as_deref(), Some("root"));
        assert!(
            !from_json.leave_on_terminate,
            "servers stay on terminate by default"
        );
    }

    #[test]
    fn service_and_check_blocks_are_read_and_checked() {
        let hcl = r#"
            service {
              name = "web"
              port = 80
              check {
                http     = "http://127.0.0.1/health"
                interval = "10s"
              }
            }
            service {
              name = "db"
            }
            checks = [{ name = "mem", ttl = "30s" }]
            check_update_interval = "1m"
        "#;
        let mut loader = ConfigLoader::new();
        loader.add_hcl(SourceName::File("s.hcl".into()), hcl).unwrap();
        let local = loader.resolve().unwrap().local;
        let names: Vec<String> = local
            .services
            .iter()
            .map(|s| crate::local::parse_service(s).unwrap().service.service)
            .collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(local.checks.len(), 1);
        assert_eq!(local.check_update_interval, Duration::from_secs(60));
        let json = r#"{"services":[{"name":"a","port":1}],"check":{"name":"x","ttl":"5s"}}"#;
        let local = load_json(&[json]).unwrap().local;
        assert_eq!((local.services.len(), local.checks.len()), (1, 1));
        match load_json(&[r#"{"service":{"port":1}}"#]).unwrap_err() {
            ConfigError::InvalidValue { key, reason, .. } => {
                assert_eq!(key, "service");
                assert_eq!(reason, "Missing service name");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_telemetry_block_reads_from_hcl_and_json() {
        assert_eq!(load_json(&[]).unwrap().telemetry, TelemetryConfig::default());
        let hcl = r#"
            telemetry {
              prometheus_retention_time = "60s"
              disable_hostname = true
              metrics_prefix = "tribune"
            }
        "#;
        let mut loader = ConfigLoader::new();
        loader.add_hcl(SourceName::File("t.hcl".into()), hcl).unwrap();
        let from_hcl = loader.resolve().unwrap().telemetry;
        let json = r#"{"telemetry":{"prometheus_retention_time":"1m","disable_hostname":true,"metrics_prefix":"tribune"}}"#;
        assert_eq!(load_json(&[json]).unwrap().telemetry, from_hcl);
        assert_eq!(from_hcl.prometheus_retention_time, Duration::from_secs(60));
        assert!(from_hcl.disable_hostname);
        assert_eq!(from_hcl.metrics_prefix, "tribune");
        match load_json(&[r#"{"telemetry":{"statsd_address":"127.0.0.1:8125"}}"#]).unwrap_err() {
            ConfigError::UnknownKey { key, .. } => assert_eq!(key, "telemetry.statsd_address"),
            other => panic!("unexpected {other:?}"),
        }
        let bad_time = load_json(&[r#"{"telemetry":{"prometheus_retention_time":"soon"}}"#]).unwrap_err();
        assert!(
            bad_time
                .to_string()
                .contains("telemetry.prometheus_retention_time"),
            "{bad_time}"
        );
        let bad_prefix = load_json(&[r#"{"telemetry":{"metrics_prefix":"a b"}}"#]).unwrap_err();
        assert!(
            bad_prefix.to_string().contains("telemetry.metrics_prefix"),
            "{bad_prefix}"
        );
    }

    #[test]
    fn later_sources_win_and_lists_append() {
        let config = load_json(&[
            r#"{"node_name":"a","retry_join":["x"],"acl":{"enabled":true,"default_policy":"deny"}}"#,
            r#"{"node_name":"b","retry_join":["y"],"acl":{"default_policy":"allow"}}"#,
        ])
        .unwrap();
        assert_eq!(config.node_name, "b");
        assert_eq!(config.retry_join, vec!["x", "y"]);
        assert!(
            config.acl.enabled,
            "a nested key not overridden survives the merge"
        );
        assert_eq!(config.acl.default_policy, DefaultPolicy::Allow);
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let error = load_json(&[r#"{"acl":{"tokens":{"agnet":"x"}}}"#]).unwrap_err();
        match error {
            ConfigError::UnknownKey { source_name, key } => {
                assert_eq!(source_name, SourceName::File("0.json".into()));
                assert_eq!(key, "acl.tokens.agnet");
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = load_json(&[r#"{"datacentre":"x"}"#]).unwrap_err();
        assert!(
            matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "datacentre"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_the_source_that_set_them() {
        let error = load_json(&[
            r#"{"acl":{"down_policy":"allow"}}"#,
            r#"{"acl":{"down_policy":"maybe"}}"#,
        ])
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("1.json: invalid value for `acl.down_policy`"),
            "{text}"
        );

        let error = load_json(&[r#"{"server":"yes"}"#]).unwrap_err();
        assert!(
            matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "server"),
            "{error}"
        );

        for (doc, key) in [
            (r#"{"ports":{"http":70000}}"#, "ports.http"),
            (r#"{"bind_addr":"not-an-ip"}"#, "bind_addr"),
            (r#"{"bootstrap_expect":3}"#, "bootstrap_expect"),
            (r#"{"datacenter":"dc 1"}"#, "datacenter"),
            (r#"{"log_level":"loud"}"#, "log_level"),
            (r#"{"retry_interval":"soon"}"#, "retry_interval"),
            (r#"{"session_ttl_min":"0s"}"#, "session_ttl_min"),
            (r#"{"node_id":"abc"}"#, "node_id"),
            (r#"{"advertise_addr":"0.0.0.0"}"#, "advertise_addr"),
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { key: ref k, .. } if k == key),
                "{doc}: expected an error on {key}, got {error}"
            );
        }
    }

    #[test]
    fn gossip_keys_must_be_16_or_32_bytes() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        for n in [16, 32] {
            let config = load_json(&[&format!(r#"{{"encrypt":"{}"}}"#, b64(n))]).unwrap();
            assert_eq!(config.encrypt.map(|key| key.len()), Some(n));
        }
        let error = load_json(&[&format!(r#"{{"encrypt":"{}"}}"#, b64(24))]).unwrap_err();
        assert!(error.to_string().contains("AES-192"), "{error}");
        let error = load_json(&[&format!(r#"{{"encrypt":"{}"}}"#, b64(20))]).unwrap_err();
        assert!(error.to_string().contains("20 bytes"), "{error}");
    }

    #[test]
    fn syntax_errors_name_the_format() {
        let mut loader = ConfigLoader::new();
        let error = loader.add_json(SourceName::Flags, "{").unwrap_err();
        assert!(
            matches!(error, ConfigError::Syntax { format: "JSON", .. }),
            "{error}"
        );
        let error = loader.add_hcl(SourceName::Flags, "acl {").unwrap_err();
        assert!(
            matches!(error, ConfigError::Syntax { format: "HCL", .. }),
            "{error}"
        );
    }

    #[test]
    fn a_directory_is_read_in_lexical_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"node_name":"second"}"#).unwrap();
        std::fs::write(dir.path().join("a.hcl"), r#"node_name = "first""#).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let config = ConfigLoader::new()
            .add_dir(dir.path())
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.node_name, "second");
    }

    /// The keys of Consul's own sample server and client configurations, as operators seed them.
    #[test]
    fn the_seeds_keys_are_accepted() {
        let server = r#"{
            "datacenter": "dc1", "data_dir": "/opt/consul", "server": true, "bootstrap_expect": 3,
            "ui": true, "ui_dir": "/opt/ui",
            "ui_config": {"enabled": true, "dir": "/opt/ui2", "content_path": "/ui/",
                "metrics_provider": "prometheus", "metrics_provider_files": ["a.js"],
                "metrics_provider_options_json": "{}",
                "metrics_proxy": {"base_url": "http://prometheus:9090", "add_headers": []},
                "dashboard_url_templates": {"service": "https://grafana/{{Service.Name}}"}},
            "ports": {"dns": 8600, "grpc": 8502, "https": -1, "grpc_tls": 8503},
            "enable_script_checks": false, "enable_local_script_checks": true,
            "leave_on_terminate": true, "skip_leave_on_interrupt": false,
            "pid_file": "/run/consul.pid", "log_file": "/var/log/consul/", "log_json": true
        }"#;
        let config = load_json(&[server]).unwrap();
        assert!(config.ui.enabled);
        assert_eq!(
            config.ui.dir,
            Some(PathBuf::from("/opt/ui2")),
            "ui_config.dir wins over ui_dir"
        );
        assert_eq!(config.ui.content_path.as_deref(), Some("/ui/"));
        assert_eq!(config.ports.dns, Some(8600));
        assert_eq!(config.ports.grpc, Some(8502));
        assert_eq!(config.ports.https, None, "-1 disables");
        assert_eq!(config.ports.grpc_tls, Some(8503));
        assert!(config.leave_on_terminate && !config.skip_leave_on_interrupt);
        assert_eq!(config.pid_file, Some(PathBuf::from("/run/consul.pid")));
        assert!(config.log_json);
        assert_eq!(
            config.not_implemented(),
            [
                "ui: the web UI is not served yet",
                "ports.grpc: gRPC (xDS) is not served yet",
                "ports.grpc_tls: gRPC over TLS is not served yet",
            ]
        );

        let mut loader = ConfigLoader::new();
        loader
            .add_hcl(
                SourceName::File("client.hcl".into()),
                r#"
                ui_config { enabled = false }
                ports { dns = -1 }
                enable_script_checks = false
                "#,
            )
            .unwrap();
        let client = loader.resolve().unwrap();
        assert!(
            client.not_implemented().is_empty(),
            "{:?}",
            client.not_implemented()
        );
    }

    #[test]
    fn dns_settings_resolve_with_consuls_defaults_and_name_bad_values() {
        let defaults = load_json(&["{}"]).unwrap().dns;
        assert_eq!(defaults, DnsConfig::default());
        assert_eq!(defaults.domain, "consul.");
        assert!(defaults.allow_stale);
        assert_eq!(defaults.udp_answer_limit, 3);
        assert_eq!(Config::dev().ports.dns, Some(0), "dev binds DNS on a free port");
        assert_eq!(load_json(&["{}"]).unwrap().ports.dns, Some(8600), "Consul's port");

        let config = load_json(&[r#"{
            "domain": "Example.ORG", "alt_domain": "alt.test.", "recursors": ["192.0.2.53", "[2001:db8::1]:5353"],
            "ports": {"dns": 8600},
            "dns_config": {"allow_stale": false, "max_stale": "5s", "node_ttl": "30s",
                "service_ttl": {"*": "5s", "Web": "1m"}, "only_passing": true,
                "udp_answer_limit": 10, "enable_truncate": true, "recursor_timeout": "500ms",
                "a_record_limit": 2, "disable_compression": true}
        }"#])
        .unwrap();
        let dns = config.dns.clone();
        assert_eq!(dns.domain, "example.org.");
        assert_eq!(dns.alt_domain.as_deref(), Some("alt.test."));
        assert_eq!(
            dns.recursors,
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap()
            ]
        );
        assert!(!dns.allow_stale && dns.only_passing && dns.enable_truncate);
        assert_eq!(dns.max_stale, Duration::from_secs(5));
        assert_eq!(dns.node_ttl, Duration::from_secs(30));
        assert_eq!(dns.service_ttl.get("web"), Some(&Duration::from_secs(60)));
        assert_eq!(dns.service_ttl.get("*"), Some(&Duration::from_secs(5)));
        assert_eq!(dns.udp_answer_limit, 10);
        assert_eq!(dns.recursor_timeout, Duration::from_millis(500));
        assert_eq!(dns.a_record_limit, 2);
        assert!(dns.disable_compression);
        assert!(
            config.not_implemented().is_empty(),
            "{:?}",
            config.not_implemented()
        );

        for (doc, key) in [
            (r#"{"domain": "bad domain"}"#, "domain"),
            (r#"{"alt_domain": "consul"}"#, "alt_domain"),
            (r#"{"recursors": ["dns.example.com"]}"#, "recursors"),
            (
                r#"{"dns_config": {"udp_answer_limit": 0}}"#,
                "dns_config.udp_answer_limit",
            ),
            (r#"{"dns_config": {"node_ttl": "soon"}}"#, "dns_config.node_ttl"),
            (
                r#"{"dns_config": {"a_record_limit": -1}}"#,
                "dns_config.a_record_limit",
            ),
            (
                r#"{"dns_config": {"service_ttl": {"web": "x"}}}"#,
                "dns_config.service_ttl",
            ),
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { key: ref k, .. } if k == key),
                "{doc}: {error}"
            );
        }
        let error = load_json(&[r#"{"dns_config": {"only_passin": true}}"#]).unwrap_err();
        assert!(
            matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "dns_config.only_passin"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_stay_refused_beside_the_seeds() {
        for (doc, key) in [
            (r#"{"ui": true, "ui_colour": "red"}"#, "ui_colour"),
            (
                r#"{"ui_config": {"enabled": true, "theme": "dark"}}"#,
                "ui_config.theme",
            ),
            (r#"{"ports": {"dns": 8600, "dnz": 53}}"#, "ports.dnz"),
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::UnknownKey { key: ref k, .. } if k == key),
                "{doc}: {error}"
            );
            assert!(error.to_string().contains(key), "{error}");
        }
        let error = load_json(&[r#"{"ui_config": {"enabled": "yes"}}"#]).unwrap_err();
        assert!(error.to_string().contains("ui_config.enabled"), "{error}");
    }

    #[test]
    fn leaving_on_signals_follows_consul_defaults_and_the_keys() {
        let client = load_json(&[]).unwrap();
        assert!(client.leave_on_terminate && !client.skip_leave_on_interrupt);
        let server = load_json(&[r#"{"server": true}"#]).unwrap();
        assert!(!server.leave_on_terminate && server.skip_leave_on_interrupt);
        let server =
            load_json(&[r#"{"server": true, "skip_leave_on_interrupt": false, "leave_on_terminate": true}"#])
                .unwrap();
        assert!(server.leave_on_terminate && !server.skip_leave_on_interrupt);
    }

    #[test]
    fn bootstrap_mode_is_one_expected_server() {
        let config = load_json(&[r#"{"server": true, "bootstrap": true}"#]).unwrap();
        assert_eq!(config.bootstrap_expect, 1);
        let config = load_json(&[r#"{"server": true, "bootstrap": true, "bootstrap_expect": 1}"#]).unwrap();
        assert_eq!(config.bootstrap_expect, 1);
        let config = load_json(&[r#"{"server": true, "bootstrap": false, "bootstrap_expect": 3}"#]).unwrap();
        assert_eq!(config.bootstrap_expect, 3);
        for doc in [
            r#"{"server": true, "bootstrap": true, "bootstrap_expect": 3}"#,
            r#"{"bootstrap": true}"#,
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "bootstrap"),
                "{doc}: {error}"
            );
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn an_agent_bound_to_every_address_advertises_the_one_private_address() {
        let any4 = IpAddr::from([0, 0, 0, 0]);
        let any6: IpAddr = "::".parse().unwrap();
        // A specific bind is advertised as it is, whatever the interfaces.
        let bind: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(pick_advertise_ip(bind, &[]), Ok(bind));
        // One private IPv4 address among public, documentation, link-local and IPv6 ones.
        for private in [
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "172.16.0.1",
            "172.31.9.9",
            "192.168.1.5",
        ] {
            let interfaces = ips(&[
                "8.8.4.4",
                "192.0.2.2",
                "169.254.1.1",
                "172.32.0.1",
                "100.128.0.1",
                "fd00::2",
                private,
            ]);
            assert_eq!(
                pick_advertise_ip(any4, &interfaces),
                Ok(private.parse().unwrap()),
                "{private}"
            );
        }
        assert_eq!(
            pick_advertise_ip(any4, &ips(&["192.0.2.2", "fd00::2", "fe80::1"])),
            Err(AdvertiseError::NoneFound { kind: "private IPv4" })
        );
        let two = pick_advertise_ip(any4, &ips(&["192.168.0.9", "10.0.0.4", "10.0.0.4"])).unwrap_err();
        assert_eq!(
            two,
            AdvertiseError::Multiple {
                kind: "private IPv4",
                found: ips(&["10.0.0.4", "192.168.0.9"]),
            }
        );
        assert!(two.to_string().contains("10.0.0.4, 192.168.0.9"), "{two}");
        assert!(two.to_string().contains("advertise_addr"), "{two}");
        // `::` wants a public IPv6 address: not unique-local, link-local or an IPv4 one.
        assert_eq!(
            pick_advertise_ip(
                any6,
                &ips(&["fd00::2", "fe80::1", "10.0.0.1", "2001:db8::5", "::ffff:10.0.0.1"])
            ),
            Ok("2001:db8::5".parse().unwrap())
        );
        assert_eq!(
            pick_advertise_ip(any6, &ips(&["fd00::2", "fe80::1"])),
            Err(AdvertiseError::NoneFound { kind: "public IPv6" })
        );
    }

    #[test]
    fn gossip_blocks_read_from_json_and_hcl_and_override_only_what_they_set() {
        let json = r#"{"server": true,
            "gossip_lan": {"gossip_nodes": 5, "probe_interval": "2s", "probe_timeout": "750ms"},
            "gossip_wan": {"gossip_interval": "1s", "retransmit_mult": 6, "suspicion_mult": 8}}"#;
        let hcl = r#"
            server = true
            gossip_lan {
              gossip_nodes = 5
              probe_interval = "2s"
              probe_timeout = "750ms"
            }
            gossip_wan {
              gossip_interval = "1s"
              retransmit_mult = 6
              suspicion_mult = 8
            }
        "#;
        let from_json = load_json(&[json]).unwrap();
        let mut loader = ConfigLoader::new();
        loader.add_hcl(SourceName::File("a.hcl".into()), hcl).unwrap();
        assert_eq!(from_json, loader.resolve().unwrap());
        assert_eq!(
            from_json.gossip_lan,
            GossipTuning {
                gossip_nodes: Some(5),
                probe_interval: Some(Duration::from_secs(2)),
                probe_timeout: Some(Duration::from_millis(750)),
                ..GossipTuning::default()
            }
        );
        let lan = from_json.gossip_lan.apply_to(tribune_gossip::Config::lan());
        assert_eq!(lan.gossip_nodes, 5);
        assert_eq!(lan.probe_interval, Duration::from_secs(2));
        assert_eq!(lan.probe_timeout, Duration::from_millis(750));
        assert_eq!(
            lan.gossip_interval,
            tribune_gossip::Config::lan().gossip_interval,
            "an unset field keeps the preset"
        );
        let wan = from_json.gossip_wan.apply_to(tribune_gossip::Config::wan());
        assert_eq!(
            (wan.gossip_interval, wan.retransmit_mult, wan.suspicion_mult),
            (Duration::from_secs(1), 6, 8)
        );
        assert_eq!(wan.probe_interval, Duration::from_secs(5));
        assert_eq!(
            GossipTuning::default().apply_to(tribune_gossip::Config::wan()),
            tribune_gossip::Config::wan()
        );
        assert!(load_json(&[]).unwrap().gossip_lan.is_empty());
    }

    #[test]
    fn bad_gossip_values_name_the_key() {
        for (doc, key) in [
            (
                r#"{"gossip_lan": {"gossip_nodes": 0}}"#,
                "gossip_lan.gossip_nodes",
            ),
            (
                r#"{"gossip_lan": {"retransmit_mult": -2}}"#,
                "gossip_lan.retransmit_mult",
            ),
            (
                r#"{"gossip_lan": {"suspicion_mult": 0}}"#,
                "gossip_lan.suspicion_mult",
            ),
            (
                r#"{"gossip_lan": {"gossip_interval": "0s"}}"#,
                "gossip_lan.gossip_interval",
            ),
            (
                r#"{"gossip_lan": {"probe_interval": "-1s"}}"#,
                "gossip_lan.probe_interval",
            ),
            (
                r#"{"gossip_lan": {"probe_timeout": "soon"}}"#,
                "gossip_lan.probe_timeout",
            ),
            // The LAN preset probes every second: a 1 s timeout is not below it.
            (
                r#"{"gossip_lan": {"probe_timeout": "1s"}}"#,
                "gossip_lan.probe_timeout",
            ),
            // The WAN preset's timeout is 3 s: a 2 s interval alone is too short for it.
            (
                r#"{"server": true, "gossip_wan": {"probe_interval": "2s"}}"#,
                "gossip_wan.probe_interval",
            ),
            (
                r#"{"server": true, "gossip_wan": {"probe_interval": "2s", "probe_timeout": "2s"}}"#,
                "gossip_wan.probe_timeout",
            ),
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { key: ref k, .. } if k == key),
                "{doc}: expected an error on {key}, got {error}"
            );
        }
        // A 2 s interval is fine on the LAN preset (500 ms timeout), and with a shorter WAN timeout.
        load_json(&[r#"{"gossip_lan": {"probe_interval": "2s"}}"#]).unwrap();
        load_json(&[r#"{"server": true, "gossip_wan": {"probe_interval": "2s", "probe_timeout": "1s"}}"#])
            .unwrap();
        let error = load_json(&[r#"{"gossip_lan": {"probe_timeout": "1s"}}"#]).unwrap_err();
        assert!(
            error.to_string().contains("must be below probe_interval (1s)"),
            "{error}"
        );
        let error = load_json(&[r#"{"gossip_lan": {"gossip_nodes": 3, "fanout": 2}}"#]).unwrap_err();
        assert!(
            matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "gossip_lan.fanout"),
            "{error}"
        );
    }

    #[test]
    fn wan_keys_follow_consul_and_belong_to_servers() {
        let config = load_json(&[r#"{"server": true}"#]).unwrap();
        assert_eq!(config.retry_interval_wan, Duration::from_secs(30));
        assert_eq!(config.retry_max_wan, 0);
        assert_eq!(config.advertise_addr_wan, None);
        assert!(!config.translate_wan_addrs);

        let config = load_json(&[r#"{"server": true, "retry_join_wan": ["10.0.0.1:8302"],
            "retry_interval_wan": "5s", "retry_max_wan": 4, "advertise_addr_wan": "192.0.2.4"}"#])
        .unwrap();
        assert_eq!(config.retry_interval_wan, Duration::from_secs(5));
        assert_eq!(config.retry_max_wan, 4);
        assert_eq!(config.advertise_addr_wan, Some(IpAddr::from([192, 0, 2, 4])));
        assert!(
            config.not_implemented().is_empty(),
            "the WAN pool is implemented: {:?}",
            config.not_implemented()
        );

        let config =
            load_json(&[r#"{"translate_wan_addrs": true, "advertise_addr_wan": "192.0.2.5"}"#]).unwrap();
        assert!(config.translate_wan_addrs);
        assert_eq!(
            config.not_implemented(),
            ["translate_wan_addrs: WAN addresses are not translated yet"]
        );

        for (doc, key) in [
            (r#"{"retry_join_wan": ["x"]}"#, "retry_join_wan"),
            (r#"{"retry_interval_wan": "10s"}"#, "retry_interval_wan"),
            (r#"{"retry_max_wan": 3}"#, "retry_max_wan"),
            (r#"{"gossip_wan": {"gossip_nodes": 4}}"#, "gossip_wan"),
            (
                r#"{"server": true, "retry_interval_wan": "0s"}"#,
                "retry_interval_wan",
            ),
            (
                r#"{"server": true, "retry_interval_wan": "later"}"#,
                "retry_interval_wan",
            ),
            (r#"{"advertise_addr_wan": "0.0.0.0"}"#, "advertise_addr_wan"),
            (r#"{"advertise_addr_wan": "dc2.example"}"#, "advertise_addr_wan"),
            (r#"{"translate_wan_addrs": "yes"}"#, "translate_wan_addrs"),
        ] {
            let error = load_json(&[doc]).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { key: ref k, .. } if k == key),
                "{doc}: expected an error on {key}, got {error}"
            );
        }
        let error = load_json(&[r#"{"retry_max_wan": 3}"#]).unwrap_err();
        assert!(
            error.to_string().contains("only servers join the WAN pool"),
            "{error}"
        );
        let error = load_json(&[r#"{"gossip_wan": {"probe_timeout": "1s"}}"#]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("0.json: invalid value for `gossip_wan`"),
            "a block is named with the file that set it: {error}"
        );
    }

    #[test]
    fn advertise_addr_and_a_specific_bind_win_over_interface_detection() {
        let config = load_json(&[r#"{"bind_addr":"0.0.0.0","advertise_addr":"127.0.0.9"}"#]).unwrap();
        assert_eq!(config.advertise_ip(), Ok(IpAddr::from([127, 0, 0, 9])));
        let config = load_json(&[r#"{"bind_addr":"127.0.0.3"}"#]).unwrap();
        assert_eq!(config.advertise_ip(), Ok(IpAddr::from([127, 0, 0, 3])));
    }
}
