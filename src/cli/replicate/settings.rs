//! The settings of `tribune replicate` as layers: what each config file and the command line say,
//! every value optional, merged in order (a later layer wins, lists append), then resolved against
//! the environment and consul-replicate's defaults into a [`Resolved`] the command runs.
//!
//! This module neither reads files nor parses flags (`file.rs` and `args.rs` do) and starts nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tribune_replicate::{PrefixSpec, ReplicateConfig, RetryConfig, WaitConfig};

/// consul-replicate's log levels (hashicorp/logutils names), lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Err,
}

impl LogLevel {
    /// The tracing-subscriber filter directive for this level.
    pub(super) fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Err => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "err" | "error" => Ok(LogLevel::Err),
            _ => Err(format!(
                "invalid log level {text:?} (expected trace, debug, info, warn or err)"
            )),
        }
    }
}

/// The signals `kill_signal` and `reload_signal` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Hup,
    Int,
    Term,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    /// `""` (listen for none) or a name with or without `SIG`, any case.
    pub(super) fn parse_setting(text: &str) -> Result<Option<Signal>, String> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        Ok(Some(match name {
            "" => return Ok(None),
            "HUP" => Signal::Hup,
            "INT" => Signal::Int,
            "TERM" => Signal::Term,
            "QUIT" => Signal::Quit,
            "USR1" => Signal::Usr1,
            "USR2" => Signal::Usr2,
            _ => {
                return Err(format!(
                    "unsupported signal {text:?} (expected SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2 or \"\")"
                ));
            }
        }))
    }
}

/// `-wait` / `wait`: `min[:max]`, max defaulting to four times min.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WaitSettings {
    pub(super) min: Option<Duration>,
    pub(super) max: Option<Duration>,
}

impl WaitSettings {
    /// Parses `min` or `min:max` (Go durations), as consul-template does.
    pub(super) fn parse(text: &str) -> Result<WaitSettings, String> {
        let text = text.trim();
        let duration = |part: &str| {
            tribune::duration::parse_go_duration(part.trim())
                .map_err(|error| format!("wait {text:?}: {error}"))
        };
        let (min, max) = match text.split(':').collect::<Vec<_>>().as_slice() {
            [""] => return Err("wait: empty value (expected min or min:max)".to_owned()),
            [min] => {
                let min = duration(min)?;
                (min, min.saturating_mul(4))
            }
            [min, max] => (duration(min)?, duration(max)?),
            _ => return Err(format!("wait {text:?}: expected min or min:max")),
        };
        if max < min {
            return Err(format!("wait {text:?}: max is less than min"));
        }
        Ok(WaitSettings {
            min: Some(min),
            max: Some(max),
        })
    }

    fn merge(&mut self, other: WaitSettings) {
        set(&mut self.min, other.min);
        set(&mut self.max, other.max);
    }
}

/// `consul { auth { } }` / `-consul-auth user[:pass]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct AuthSettings {
    pub(super) enabled: Option<bool>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
}

impl AuthSettings {
    /// `user` or `user:password`.
    pub(super) fn parse(text: &str) -> Result<AuthSettings, String> {
        if text.is_empty() {
            return Err("auth: empty value (expected user[:password])".to_owned());
        }
        let (username, password) = match text.split_once(':') {
            Some((user, password)) => (user, Some(password.to_owned())),
            None => (text, None),
        };
        Ok(AuthSettings {
            enabled: None,
            username: Some(username.to_owned()),
            password,
        })
    }
}

/// `consul { retry { } }` and the retry flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RetrySettings {
    pub(super) enabled: Option<bool>,
    pub(super) attempts: Option<u32>,
    pub(super) backoff: Option<Duration>,
    pub(super) max_backoff: Option<Duration>,
}

/// `consul { ssl { } }` and the TLS flags: only whether TLS was asked for matters, since the HTTP
/// client speaks plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SslSettings {
    pub(super) enabled: Option<bool>,
    /// The first TLS option given (`verify`, `cert`, ...): consul-template turns TLS on when any is.
    pub(super) implied_by: Option<String>,
}

/// The `consul` block and its flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ConsulSettings {
    pub(super) address: Option<String>,
    pub(super) namespace: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) auth: AuthSettings,
    pub(super) retry: RetrySettings,
    pub(super) ssl: SslSettings,
}

/// One layer (a file, a directory, the flags) or the merge of several.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Settings {
    pub(super) consul: ConsulSettings,
    pub(super) prefixes: Vec<PrefixSpec>,
    pub(super) excludes: Vec<String>,
    pub(super) kill_signal: Option<Option<Signal>>,
    pub(super) reload_signal: Option<Option<Signal>>,
    pub(super) log_level: Option<LogLevel>,
    pub(super) max_stale: Option<Duration>,
    pub(super) read_wait: Option<Duration>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) status_dir: Option<String>,
    pub(super) syslog_enabled: Option<bool>,
    pub(super) syslog_facility: Option<String>,
    pub(super) wait: WaitSettings,
    pub(super) lock: Option<String>,
    pub(super) max_delete_fraction: Option<f64>,
    pub(super) force_deletes: Option<bool>,
    pub(super) metrics_addr: Option<SocketAddr>,
    /// Things worth a warning found while reading (deprecated forms, settings without effect),
    /// logged once logging is set up.
    pub(super) warnings: Vec<String>,
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

impl Settings {
    /// Lays `other` over `self`: its values win, its prefixes and excludes come after ours.
    pub(super) fn merge(&mut self, other: Settings) {
        let consul = other.consul;
        set(&mut self.consul.address, consul.address);
        set(&mut self.consul.namespace, consul.namespace);
        set(&mut self.consul.token, consul.token);
        set(&mut self.consul.token_file, consul.token_file);
        set(&mut self.consul.auth.enabled, consul.auth.enabled);
        set(&mut self.consul.auth.username, consul.auth.username);
        set(&mut self.consul.auth.password, consul.auth.password);
        set(&mut self.consul.retry.enabled, consul.retry.enabled);
        set(&mut self.consul.retry.attempts, consul.retry.attempts);
        set(&mut self.consul.retry.backoff, consul.retry.backoff);
        set(&mut self.consul.retry.max_backoff, consul.retry.max_backoff);
        set(&mut self.consul.ssl.enabled, consul.ssl.enabled);
        if self.consul.ssl.implied_by.is_none() {
            self.consul.ssl.implied_by = consul.ssl.implied_by;
        }
        self.prefixes.extend(other.prefixes);
        self.excludes.extend(other.excludes);
        set(&mut self.kill_signal, other.kill_signal);
        set(&mut self.reload_signal, other.reload_signal);
        set(&mut self.log_level, other.log_level);
        set(&mut self.max_stale, other.max_stale);
        set(&mut self.read_wait, other.read_wait);
        set(&mut self.pid_file, other.pid_file);
        set(&mut self.status_dir, other.status_dir);
        set(&mut self.syslog_enabled, other.syslog_enabled);
        set(&mut self.syslog_facility, other.syslog_facility);
        self.wait.merge(other.wait);
        set(&mut self.lock, other.lock);
        set(&mut self.max_delete_fraction, other.max_delete_fraction);
        set(&mut self.force_deletes, other.force_deletes);
        set(&mut self.metrics_addr, other.metrics_addr);
        self.warnings.extend(other.warnings);
    }
}

/// Why the merged settings cannot run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// Nothing to replicate.
    #[error("no prefix to replicate: give -prefix source@datacenter[:destination] or a prefix block")]
    NoPrefixes,
    /// TLS was asked for.
    #[error("TLS is not supported yet ({0}); talk to the agent over plain HTTP")]
    TlsUnsupported(String),
    /// A Consul Enterprise namespace was asked for.
    #[error("namespaces are not supported (consul.namespace = {0:?})")]
    Namespace(String),
    /// The agent address is not `host:port` or `http://host:port`.
    #[error("agent address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `max_delete_fraction` outside 0..=1.
    #[error("max_delete_fraction {0} is not between 0 and 1")]
    DeleteFraction(f64),
    /// The wait settings make no sense.
    #[error("wait: max ({max:?}) is less than min ({min:?})")]
    WaitOrder {
        /// The quiet time.
        min: Duration,
        /// The longest wait.
        max: Duration,
    },
    /// The log level from CR_LOG / CONSUL_REPLICATE_LOG is not one.
    #[error("{0}")]
    LogLevel(String),
    /// The token file could not be read.
    #[error("reading the token file {path}: {source}")]
    TokenFile {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the command runs with, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Resolved {
    /// The engine's settings.
    pub(super) replicate: ReplicateConfig,
    /// The agent, `host:port`.
    pub(super) authority: String,
    /// The ACL token, if any.
    pub(super) token: Option<String>,
    /// HTTP basic authentication (user, password).
    pub(super) auth: Option<(String, String)>,
    /// The KV prefix of the session lock, if one is taken.
    pub(super) lock: Option<String>,
    /// Where `/metrics` is served, if anywhere.
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) log_level: LogLevel,
    pub(super) syslog: bool,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) kill_signal: Option<Signal>,
    pub(super) reload_signal: Option<Signal>,
}

/// consul-replicate's default agent address.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";
/// consul-template's retry attempts.
const DEFAULT_RETRY_ATTEMPTS: u32 = 12;
/// consul-template reads `max_backoff = 0` as no ceiling; an hour stands for it, since an unbounded
/// doubling would soon stop retrying in any useful sense.
const UNBOUNDED_BACKOFF: Duration = Duration::from_secs(3600);

impl Settings {
    /// Applies the environment (`env` looks a variable up) and the defaults.
    pub(super) fn resolve(
        self,
        once: bool,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Resolved, SettingsError> {
        let from_env = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        };
        if self.prefixes.is_empty() {
            return Err(SettingsError::NoPrefixes);
        }
        let consul = self.consul;
        if let Some(namespace) = consul.namespace.filter(|ns| !ns.is_empty()) {
            return Err(SettingsError::Namespace(namespace));
        }
        let address = consul
            .address
            .filter(|a| !a.is_empty())
            .or_else(|| from_env(&["TRIBUNE_HTTP_ADDR", "CONSUL_HTTP_ADDR"]))
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
        match (consul.ssl.enabled, consul.ssl.implied_by) {
            (Some(true), _) => return Err(SettingsError::TlsUnsupported("ssl is enabled".to_owned())),
            (None, Some(option)) => {
                return Err(SettingsError::TlsUnsupported(format!(
                    "ssl option {option} turns TLS on"
                )));
            }
            _ => {}
        }
        if address.starts_with("https://") {
            return Err(SettingsError::TlsUnsupported(format!("address {address}")));
        }
        let authority =
            super::super::http::authority_of(&address).map_err(|error| SettingsError::Address {
                address: address.clone(),
                reason: error.to_string(),
            })?;
        let token = match consul.token.filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None => match consul.token_file {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|source| SettingsError::TokenFile { path, source })?
                        .trim()
                        .to_owned(),
                ),
                None => from_env(&["TRIBUNE_HTTP_TOKEN", "CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"]),
            },
        }
        .filter(|t| !t.is_empty());
        let auth_given = consul.auth.username.as_deref().is_some_and(|u| !u.is_empty())
            || consul.auth.password.as_deref().is_some_and(|p| !p.is_empty());
        let auth = consul.auth.enabled.unwrap_or(auth_given).then(|| {
            (
                consul.auth.username.unwrap_or_default(),
                consul.auth.password.unwrap_or_default(),
            )
        });

        let retry = consul.retry;
        let defaults = RetryConfig::default();
        let retry = if retry.enabled == Some(false) {
            // Without retries the first failure is final.
            RetryConfig {
                attempts: 1,
                ..defaults
            }
        } else {
            RetryConfig {
                attempts: retry.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
                backoff: retry.backoff.unwrap_or(defaults.backoff),
                max_backoff: match retry.max_backoff {
                    Some(Duration::ZERO) => UNBOUNDED_BACKOFF,
                    Some(max) => max,
                    None => defaults.max_backoff,
                },
            }
        };
        let wait = match self.wait.min.filter(|min| !min.is_zero()) {
            None => None,
            Some(min) => {
                let max = self.wait.max.unwrap_or(min.saturating_mul(4));
                if max < min {
                    return Err(SettingsError::WaitOrder { min, max });
                }
                Some(WaitConfig { min, max })
            }
        };
        let max_delete_fraction = self
            .max_delete_fraction
            .unwrap_or(tribune_replicate::config::DEFAULT_MAX_DELETE_FRACTION);
        if !(0.0..=1.0).contains(&max_delete_fraction) {
            return Err(SettingsError::DeleteFraction(max_delete_fraction));
        }
        let log_level = match self.log_level {
            Some(level) => level,
            None => match from_env(&["CR_LOG", "CONSUL_REPLICATE_LOG"]) {
                Some(text) => text.parse().map_err(SettingsError::LogLevel)?,
                None => LogLevel::Warn,
            },
        };
        let defaults = ReplicateConfig::default();
        let replicate = ReplicateConfig {
            prefixes: self.prefixes,
            excludes: self.excludes,
            status_dir: self.status_dir.unwrap_or(defaults.status_dir.clone()),
            max_stale: self.max_stale.unwrap_or(defaults.max_stale),
            read_wait: self.read_wait.unwrap_or(defaults.read_wait),
            wait,
            retry,
            once,
            max_delete_fraction,
            force_deletes: self.force_deletes.unwrap_or(false),
            ..defaults
        };
        Ok(Resolved {
            replicate,
            authority,
            token,
            auth,
            lock: self.lock.filter(|l| !l.is_empty()),
            metrics_addr: self.metrics_addr,
            log_level,
            syslog: self.syslog_enabled.unwrap_or(self.syslog_facility.is_some()),
            pid_file: self.pid_file.filter(|p| !p.as_os_str().is_empty()),
            kill_signal: self.kill_signal.unwrap_or(Some(Signal::Int)),
            reload_signal: self.reload_signal.unwrap_or(Some(Signal::Hup)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn with_prefix() -> Settings {
        Settings {
            prefixes: vec!["global@dc1".parse().unwrap()],
            ..Settings::default()
        }
    }

    #[test]
    fn wait_alone_means_four_times_min() {
        assert_eq!(
            WaitSettings::parse("5s").unwrap(),
            WaitSettings {
                min: Some(Duration::from_secs(5)),
                max: Some(Duration::from_secs(20))
            }
        );
        assert_eq!(
            WaitSettings::parse("1s:3s").unwrap().max,
            Some(Duration::from_secs(3))
        );
        assert!(WaitSettings::parse("3s:1s").is_err());
        assert!(WaitSettings::parse("1s:2s:3s").is_err());
        assert!(WaitSettings::parse("").is_err());
    }

    #[test]
    fn defaults_are_consul_replicates() {
        let resolved = with_prefix().resolve(false, &no_env).unwrap();
        assert_eq!(resolved.authority, "127.0.0.1:8500");
        assert_eq!(resolved.log_level, LogLevel::Warn);
        assert_eq!(resolved.replicate.status_dir, "service/consul-replicate/statuses");
        assert_eq!(resolved.replicate.max_stale, Duration::from_secs(2));
        assert_eq!(resolved.replicate.retry.attempts, 12);
        assert_eq!(resolved.replicate.wait, None);
        assert_eq!(resolved.kill_signal, Some(Signal::Int));
        assert_eq!(resolved.reload_signal, Some(Signal::Hup));
        assert_eq!(resolved.token, None);
        assert_eq!(resolved.auth, None);
    }

    #[test]
    fn the_environment_fills_what_flags_and_files_leave_out() {
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("http://10.0.0.1:8500".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("from-env".to_owned()),
            "CR_LOG" => Some("debug".to_owned()),
            _ => None,
        };
        let resolved = with_prefix().resolve(false, &env).unwrap();
        assert_eq!(resolved.authority, "10.0.0.1:8500");
        assert_eq!(resolved.token.as_deref(), Some("from-env"));
        assert_eq!(resolved.log_level, LogLevel::Debug);
        let mut given = with_prefix();
        given.consul.address = Some("10.0.0.2:8500".into());
        given.consul.token = Some("given".into());
        let resolved = given.resolve(false, &env).unwrap();
        assert_eq!(resolved.authority, "10.0.0.2:8500");
        assert_eq!(resolved.token.as_deref(), Some("given"));
    }

    #[test]
    fn tls_and_bad_values_are_refused() {
        let mut ssl = with_prefix();
        ssl.consul.ssl.enabled = Some(true);
        assert!(matches!(
            ssl.resolve(false, &no_env),
            Err(SettingsError::TlsUnsupported(_))
        ));
        let mut implied = with_prefix();
        implied.consul.ssl.implied_by = Some("cert".into());
        assert!(matches!(
            implied.resolve(false, &no_env),
            Err(SettingsError::TlsUnsupported(_))
        ));
        let mut https = with_prefix();
        https.consul.address = Some("https://a:8501".into());
        assert!(matches!(
            https.resolve(false, &no_env),
            Err(SettingsError::TlsUnsupported(_))
        ));
        let mut fraction = with_prefix();
        fraction.max_delete_fraction = Some(1.5);
        assert!(matches!(
            fraction.resolve(false, &no_env),
            Err(SettingsError::DeleteFraction(_))
        ));
        assert!(matches!(
            Settings::default().resolve(false, &no_env),
            Err(SettingsError::NoPrefixes)
        ));
    }

    #[test]
    fn retry_and_auth_follow_consul_template() {
        let mut settings = with_prefix();
        settings.consul.retry.enabled = Some(false);
        settings.consul.auth = AuthSettings::parse("user:pa:ss").unwrap();
        let resolved = settings.resolve(false, &no_env).unwrap();
        assert_eq!(resolved.replicate.retry.attempts, 1);
        assert_eq!(resolved.auth, Some(("user".into(), "pa:ss".into())));
        let mut settings = with_prefix();
        settings.consul.retry.max_backoff = Some(Duration::ZERO);
        settings.consul.auth = AuthSettings::parse("user").unwrap();
        settings.consul.auth.enabled = Some(false);
        let resolved = settings.resolve(false, &no_env).unwrap();
        assert_eq!(resolved.replicate.retry.max_backoff, UNBOUNDED_BACKOFF);
        assert_eq!(resolved.auth, None);
    }

    #[test]
    fn later_layers_win_and_lists_append() {
        let mut base = with_prefix();
        base.max_stale = Some(Duration::from_secs(1));
        base.wait = WaitSettings::parse("1s:10s").unwrap();
        let mut over = Settings {
            prefixes: vec!["other@dc2:copy".parse().unwrap()],
            excludes: vec!["global/private".into()],
            ..Settings::default()
        };
        over.wait.min = Some(Duration::from_secs(2));
        base.merge(over);
        assert_eq!(base.max_stale, Some(Duration::from_secs(1)));
        assert_eq!(base.prefixes.len(), 2);
        assert_eq!(base.excludes, ["global/private"]);
        assert_eq!(
            base.wait,
            WaitSettings {
                min: Some(Duration::from_secs(2)),
                max: Some(Duration::from_secs(10))
            }
        );
    }
}
