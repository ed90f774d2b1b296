//! The flags of `tribune replicate`: consul-replicate's (current names, and the older ones it still
//! takes: `-consul`, `-auth`, `-retry`, `-ssl*`; `-token` is the global flag), plus Tribune's own
//! (`-lock`, `-max-delete-fraction`, `-force-deletes`, `-metrics-addr`).
//!
//! Go's flag package reads `-once`, `-once=true` and `-once=false` alike, so boolean flags take an
//! optional `=value`. This module turns the flags into a settings layer; it reads no file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tribune_replicate::PrefixSpec;

use super::super::GlobalArgs;
use super::settings::{AuthSettings, LogLevel, Settings, Signal, WaitSettings};

/// `tribune replicate`.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub(crate) struct ReplicateArgs {
    /// A configuration file or directory (HCL or JSON; a directory's files merge in lexical
    /// order). May be repeated; later ones win, flags win over all.
    #[arg(long = "config", value_name = "PATH")]
    config: Vec<PathBuf>,
    /// What to replicate: source@datacenter[:destination]. May be repeated.
    #[arg(long = "prefix", value_name = "SRC@DC[:DEST]")]
    prefix: Vec<PrefixSpec>,
    /// A source key prefix neither written nor deleted. May be repeated.
    #[arg(long = "exclude", value_name = "PREFIX")]
    exclude: Vec<String>,
    /// Quiescence: replicate after min of quiet, at the latest max after a change (max: 4×min).
    #[arg(long = "wait", value_name = "MIN[:MAX]", value_parser = WaitSettings::parse)]
    wait: Option<WaitSettings>,
    /// The longest last contact a stale read may show.
    #[arg(long = "max-stale", value_name = "DURATION", value_parser = duration)]
    max_stale: Option<Duration>,
    /// How long one blocking read of the source may wait for a change (default 60s). A source
    /// whose index went back (restored or rebuilt) is noticed when such a read returns.
    #[arg(long = "read-wait", value_name = "DURATION", value_parser = duration)]
    read_wait: Option<Duration>,
    /// Where replication status records are kept.
    #[arg(long = "status-dir", value_name = "KV_PATH")]
    status_dir: Option<String>,
    /// Replicate every prefix once and exit: 0 when done, 3 when a pass was held (the reason is
    /// printed).
    #[arg(long = "once", value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = go_bool)]
    once: Option<bool>,

    /// The agent's address (host:port or http://host:port); -http-addr also works.
    #[arg(long = "consul-addr", alias = "consul", value_name = "ADDR")]
    consul_addr: Option<String>,
    /// The ACL token (-token also works).
    #[arg(long = "consul-token", value_name = "TOKEN")]
    consul_token: Option<String>,
    /// HTTP basic authentication: user[:password].
    #[arg(long = "consul-auth", alias = "auth", value_name = "USER[:PASS]", value_parser = AuthSettings::parse)]
    consul_auth: Option<AuthSettings>,
    /// Retry failed requests (default true).
    #[arg(long = "consul-retry", value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = go_bool)]
    consul_retry: Option<bool>,
    /// Consecutive failures before giving up (0: never).
    #[arg(long = "consul-retry-attempts", value_name = "N")]
    consul_retry_attempts: Option<u32>,
    /// The first pause between retries; it doubles each time.
    #[arg(long = "consul-retry-backoff", value_name = "DURATION", value_parser = duration)]
    consul_retry_backoff: Option<Duration>,
    /// The longest pause between retries (0: no limit).
    #[arg(long = "consul-retry-max-backoff", value_name = "DURATION", value_parser = duration)]
    consul_retry_max_backoff: Option<Duration>,
    /// The older spelling of the retry pause: sets both -consul-retry-backoff and -max-backoff.
    #[arg(long = "retry", value_name = "DURATION", value_parser = duration)]
    retry: Option<Duration>,
    /// Talk to the agent over TLS (not supported yet: refused).
    #[arg(long = "consul-ssl", alias = "ssl", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    consul_ssl: Option<bool>,
    /// Verify the agent's certificate (turns TLS on, which is not supported yet).
    #[arg(long = "consul-ssl-verify", alias = "ssl-verify", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    consul_ssl_verify: Option<bool>,
    /// TLS CA certificate (turns TLS on, which is not supported yet).
    #[arg(
        long = "consul-ssl-ca-cert",
        alias = "ssl-ca-cert",
        value_name = "PATH",
        hide = true
    )]
    consul_ssl_ca_cert: Option<String>,
    /// TLS CA directory (turns TLS on, which is not supported yet).
    #[arg(
        long = "consul-ssl-ca-path",
        alias = "ssl-ca-path",
        value_name = "PATH",
        hide = true
    )]
    consul_ssl_ca_path: Option<String>,
    /// TLS client certificate (turns TLS on, which is not supported yet).
    #[arg(
        long = "consul-ssl-cert",
        alias = "ssl-cert",
        value_name = "PATH",
        hide = true
    )]
    consul_ssl_cert: Option<String>,
    /// TLS client key (turns TLS on, which is not supported yet).
    #[arg(long = "consul-ssl-key", value_name = "PATH", hide = true)]
    consul_ssl_key: Option<String>,
    /// TLS server name (turns TLS on, which is not supported yet).
    #[arg(
        long = "consul-ssl-server-name",
        alias = "ssl-server-name",
        value_name = "NAME",
        hide = true
    )]
    consul_ssl_server_name: Option<String>,
    /// Accepted for consul-replicate's command lines; the connection settings have no effect here.
    #[arg(
        long = "consul-transport-dial-keep-alive",
        value_name = "DURATION",
        hide = true
    )]
    transport_dial_keep_alive: Option<String>,
    /// Accepted for consul-replicate's command lines; no effect.
    #[arg(long = "consul-transport-dial-timeout", value_name = "DURATION", hide = true)]
    transport_dial_timeout: Option<String>,
    /// Accepted for consul-replicate's command lines; no effect.
    #[arg(long = "consul-transport-disable-keep-alives", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", hide = true)]
    transport_disable_keep_alives: Option<String>,
    /// Accepted for consul-replicate's command lines; no effect.
    #[arg(
        long = "consul-transport-max-idle-conns-per-host",
        value_name = "N",
        hide = true
    )]
    transport_max_idle_conns_per_host: Option<String>,
    /// Accepted for consul-replicate's command lines; no effect.
    #[arg(
        long = "consul-transport-tls-handshake-timeout",
        value_name = "DURATION",
        hide = true
    )]
    transport_tls_handshake_timeout: Option<String>,

    /// The least level logged: trace, debug, info, warn or err (default warn).
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<LogLevel>,
    /// Log to syslog (not supported: logs to stderr with a warning).
    #[arg(long = "syslog", value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = go_bool)]
    syslog: Option<bool>,
    /// The syslog facility (see -syslog).
    #[arg(long = "syslog-facility", value_name = "FACILITY")]
    syslog_facility: Option<String>,
    /// Write the process id to this file while running.
    #[arg(long = "pid-file", value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// The signal that stops the replicator (default SIGINT; SIGTERM always does).
    #[arg(long = "kill-signal", value_name = "SIGNAL", value_parser = SignalArg::parse)]
    kill_signal: Option<SignalArg>,
    /// The signal that reloads the configuration (default SIGHUP).
    #[arg(long = "reload-signal", value_name = "SIGNAL", value_parser = SignalArg::parse)]
    reload_signal: Option<SignalArg>,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub(super) version: bool,

    /// Hold a session lock under this KV prefix while replicating: a second replicator waits and
    /// takes over when the first stops or dies.
    #[arg(long = "lock", value_name = "PREFIX")]
    lock: Option<String>,
    /// The share of a destination prefix one pass may delete before its deletes are held (default
    /// 0.5).
    #[arg(long = "max-delete-fraction", value_name = "F")]
    max_delete_fraction: Option<f64>,
    /// Apply deletes the mass-delete guard would hold.
    #[arg(long = "force-deletes", value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_parser = go_bool)]
    force_deletes: Option<bool>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long = "metrics-addr", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
}

/// A signal flag's value: a signal, or none (`""`). A newtype because clap reads `Option<Option<T>>`
/// as a flag whose value is optional.
#[derive(Debug, Clone, Copy)]
struct SignalArg(Option<Signal>);

impl SignalArg {
    fn parse(text: &str) -> Result<SignalArg, String> {
        Signal::parse_setting(text).map(SignalArg)
    }
}

impl ReplicateArgs {
    /// The configuration paths, in the order given.
    pub(super) fn config_paths(&self) -> &[PathBuf] {
        &self.config
    }

    /// `-once`.
    pub(super) fn once(&self) -> bool {
        self.once.unwrap_or(false)
    }

    /// The settings layer the flags make (with the global `-http-addr` and `-token`).
    pub(super) fn settings(&self, global: &GlobalArgs) -> Settings {
        let mut settings = Settings::default();
        let consul = &mut settings.consul;
        consul.address = self.consul_addr.clone().or_else(|| global.http_addr.clone());
        consul.token = self.consul_token.clone().or_else(|| global.token.clone());
        if let Some(auth) = &self.consul_auth {
            consul.auth = auth.clone();
        }
        consul.retry.enabled = self.consul_retry;
        consul.retry.attempts = self.consul_retry_attempts;
        consul.retry.backoff = self.consul_retry_backoff.or(self.retry);
        consul.retry.max_backoff = self.consul_retry_max_backoff.or(self.retry);
        consul.ssl.enabled = self.consul_ssl;
        let tls_options = [
            ("-consul-ssl-verify", self.consul_ssl_verify.is_some()),
            ("-consul-ssl-ca-cert", self.consul_ssl_ca_cert.is_some()),
            ("-consul-ssl-ca-path", self.consul_ssl_ca_path.is_some()),
            ("-consul-ssl-cert", self.consul_ssl_cert.is_some()),
            ("-consul-ssl-key", self.consul_ssl_key.is_some()),
            ("-consul-ssl-server-name", self.consul_ssl_server_name.is_some()),
        ];
        consul.ssl.implied_by = tls_options
            .iter()
            .find(|(_, given)| *given)
            .map(|(name, _)| (*name).to_owned());
        let transport = [
            &self.transport_dial_keep_alive,
            &self.transport_dial_timeout,
            &self.transport_disable_keep_alives,
            &self.transport_max_idle_conns_per_host,
            &self.transport_tls_handshake_timeout,
        ];
        if transport.iter().any(|flag| flag.is_some()) {
            settings
                .warnings
                .push("the -consul-transport-* flags have no effect in tribune replicate".to_owned());
        }
        settings.prefixes = self.prefix.clone();
        settings.excludes = self.exclude.clone();
        settings.wait = self.wait.unwrap_or_default();
        settings.max_stale = self.max_stale;
        settings.read_wait = self.read_wait;
        settings.status_dir = self.status_dir.clone();
        settings.log_level = self.log_level;
        settings.syslog_enabled = self.syslog;
        settings.syslog_facility = self.syslog_facility.clone();
        settings.pid_file = self.pid_file.clone();
        settings.kill_signal = self.kill_signal.map(|SignalArg(signal)| signal);
        settings.reload_signal = self.reload_signal.map(|SignalArg(signal)| signal);
        settings.lock = self.lock.clone();
        settings.max_delete_fraction = self.max_delete_fraction;
        settings.force_deletes = self.force_deletes;
        settings.metrics_addr = self.metrics_addr;
        settings
    }
}

fn duration(text: &str) -> Result<Duration, tribune::duration::DurationError> {
    tribune::duration::parse_go_duration(text)
}

/// A boolean as Go's `strconv.ParseBool` reads it.
pub(super) fn go_bool(text: &str) -> Result<bool, String> {
    tribune::strconv::parse_go_bool(text).ok_or_else(|| format!("invalid boolean {text:?}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::super::{Cli, Command, normalize_args};
    use super::*;

    fn parse(args: &[&str]) -> (ReplicateArgs, GlobalArgs) {
        let argv = std::iter::once("tribune")
            .chain(std::iter::once("replicate"))
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from);
        let cli = Cli::try_parse_from(normalize_args(argv)).unwrap();
        match cli.command {
            Command::Replicate(args) => (*args, cli.global),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn settings(args: &[&str]) -> Settings {
        let (args, global) = parse(args);
        args.settings(&global)
    }

    #[test]
    fn consul_replicates_readme_invocations_parse() {
        let s = settings(&["-prefix", "global@nyc1"]);
        assert_eq!(s.prefixes, ["global@nyc1".parse::<PrefixSpec>().unwrap()]);
        let s = settings(&["-prefix", "global@nyc1:default"]);
        assert_eq!(s.prefixes[0].destination, "default");
        let (args, _) = parse(&["-prefix", "global@nyc1", "-once"]);
        assert!(args.once());
        let (args, global) = parse(&["-prefix", "global@nyc1", "-exclude", "global/private", "-once"]);
        assert!(args.once());
        assert_eq!(args.settings(&global).excludes, ["global/private"]);
        let (args, _) = parse(&["-config", "/my/config.hcl"]);
        assert_eq!(args.config_paths(), [PathBuf::from("/my/config.hcl")]);
        let (args, _) = parse(&["-log-level", "info", "-prefix=a@dc1"]);
        assert!(!args.once());
    }

    #[test]
    fn every_flag_lands_in_its_setting() {
        let s = settings(&[
            "-prefix=a@dc1",
            "-prefix",
            "b@dc2:c",
            "-wait=5s",
            "-max-stale",
            "10s",
            "-status-dir",
            "st",
            "-consul",
            "10.0.0.1:8500",
            "-token",
            "secret",
            "-auth",
            "u:p",
            "-retry",
            "3s",
            "-consul-retry-attempts=4",
            "-log-level",
            "debug",
            "-syslog",
            "-pid-file",
            "/tmp/pid",
            "-kill-signal=SIGTERM",
            "-reload-signal",
            "",
            "-lock",
            "locks/replicate",
            "-max-delete-fraction",
            "0.25",
            "-force-deletes",
            "-metrics-addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(s.prefixes.len(), 2);
        assert_eq!(s.wait.max, Some(Duration::from_secs(20)));
        assert_eq!(s.max_stale, Some(Duration::from_secs(10)));
        assert_eq!(s.status_dir.as_deref(), Some("st"));
        assert_eq!(s.consul.address.as_deref(), Some("10.0.0.1:8500"));
        assert_eq!(s.consul.token.as_deref(), Some("secret"));
        assert_eq!(s.consul.auth.username.as_deref(), Some("u"));
        assert_eq!(s.consul.auth.password.as_deref(), Some("p"));
        assert_eq!(s.consul.retry.backoff, Some(Duration::from_secs(3)));
        assert_eq!(s.consul.retry.max_backoff, Some(Duration::from_secs(3)));
        assert_eq!(s.consul.retry.attempts, Some(4));
        assert_eq!(s.log_level, Some(LogLevel::Debug));
        assert_eq!(s.syslog_enabled, Some(true));
        assert_eq!(s.pid_file, Some(PathBuf::from("/tmp/pid")));
        assert_eq!(s.kill_signal, Some(Some(Signal::Term)));
        assert_eq!(s.reload_signal, Some(None));
        assert_eq!(s.lock.as_deref(), Some("locks/replicate"));
        assert_eq!(s.max_delete_fraction, Some(0.25));
        assert_eq!(s.force_deletes, Some(true));
        assert!(s.metrics_addr.is_some());
    }

    #[test]
    fn go_booleans_and_new_names() {
        let (args, global) = parse(&[
            "-once=false",
            "-ssl=f",
            "-consul-addr=http://a:1",
            "-http-addr=b:2",
        ]);
        assert!(!args.once());
        let s = args.settings(&global);
        assert_eq!(s.consul.ssl.enabled, Some(false));
        assert_eq!(s.consul.address.as_deref(), Some("http://a:1"));
        let s = settings(&["-http-addr=b:2", "-consul-ssl-verify=false"]);
        assert_eq!(s.consul.address.as_deref(), Some("b:2"));
        assert_eq!(s.consul.ssl.implied_by.as_deref(), Some("-consul-ssl-verify"));
        let (args, _) = parse(&["-v"]);
        assert!(args.version);
        let (args, _) = parse(&["-version"]);
        assert!(args.version);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["-prefix", "global"][..],
            &["-wait", "5s:1s"],
            &["-once=maybe"],
            &["-log-level", "loud"],
            &["-max-stale", "5"],
            &["-kill-signal", "SIGKILL"],
            &["extra"],
        ] {
            let argv = ["tribune", "replicate"]
                .iter()
                .chain(args.iter())
                .map(std::ffi::OsString::from);
            assert!(Cli::try_parse_from(normalize_args(argv)).is_err(), "{args:?}");
        }
    }
}
