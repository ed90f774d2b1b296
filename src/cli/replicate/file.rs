//! consul-replicate's configuration files: HCL or JSON, a file or a directory of them (merged in
//! lexical order, recursively), read into a settings layer.
//!
//! The keys are consul-replicate's (`consul { address token auth retry ssl transport }`, `prefix`,
//! `exclude`, `wait`, `max_stale`, `status_dir`, `log_level`, `pid_file`, `syslog`, `kill_signal`,
//! `reload_signal`), the older forms it still reads (`consul = "addr"`, top-level `token`, `auth`,
//! `ssl`, `retry = "10s"`, an ignored `path`), and Tribune's own (`lock`, `max_delete_fraction`,
//! `force_deletes`, `metrics_addr`). A key it does not know is an error naming the key and the file.
//!
//! Written once, a block is an object; written several times, HCL gives a list of them: for
//! `prefix` and `exclude` each counts, for the others the last one wins, as consul-replicate
//! flattens them. `-once` is a flag only, as in consul-replicate.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tribune_replicate::PrefixSpec;

use super::settings::{AuthSettings, LogLevel, RetrySettings, Settings, Signal, SslSettings, WaitSettings};

/// Why a configuration path could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// The path does not exist or cannot be listed or read.
    #[error("config {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Neither a file nor a directory.
    #[error("config {0}: not a file or directory")]
    NotAFile(PathBuf),
    /// The text is not HCL (or JSON).
    #[error("config {path}: invalid {format}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// `HCL` or `JSON`.
        format: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A key is unknown or its value is wrong.
    #[error("config {path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted from the top (`consul.retry.attempts`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads every path in order into one layer (later paths win).
pub(super) fn load(paths: &[PathBuf]) -> Result<Settings, FileError> {
    let mut settings = Settings::default();
    for path in paths {
        load_path(path, &mut settings)?;
    }
    Ok(settings)
}

fn load_path(path: &Path, into: &mut Settings) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        into.merge(parse_file(path)?);
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(FileError::NotAFile(path.to_owned()));
    }
    let mut entries = std::fs::read_dir(path)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    // Go's filepath.Walk visits names in byte order; so does this.
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    for entry in entries {
        // Like Walk, do not follow a link to a directory (reading it then fails as a file).
        let is_dir = std::fs::symlink_metadata(&entry)
            .map_err(|source| FileError::Io {
                path: entry.clone(),
                source,
            })?
            .is_dir();
        if is_dir {
            load_path(&entry, into)?;
        } else {
            into.merge(parse_file(&entry)?);
        }
    }
    Ok(())
}

fn parse_file(path: &Path) -> Result<Settings, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    // consul-replicate's HCL parser reads JSON as well, whatever the file is called.
    let json = path.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
    parse_str(&text, json, path)
}

/// Parses one file's text (`json`: JSON, else HCL); `path` names it in errors.
pub(super) fn parse_str(text: &str, json: bool, path: &Path) -> Result<Settings, FileError> {
    let syntax = |format, reason: String| FileError::Syntax {
        path: path.to_owned(),
        format,
        reason,
    };
    let value: serde_json::Value = if json {
        serde_json::from_str(text).map_err(|e| syntax("JSON", e.to_string()))?
    } else {
        hcl::from_str(text).map_err(|e| syntax("HCL", e.to_string()))?
    };
    let raw: RawFile = serde_path_to_error::deserialize(value).map_err(|error| {
        let key = error.path().to_string();
        FileError::Invalid {
            path: path.to_owned(),
            key,
            reason: error.into_inner().to_string(),
        }
    })?;
    raw.into_settings(path)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, deserialize_with = "block")]
    consul: Option<RawConsul>,
    #[serde(default, deserialize_with = "blocks")]
    prefix: Vec<PrefixItem>,
    #[serde(default, deserialize_with = "blocks")]
    exclude: Vec<RawExclude>,
    #[serde(default, deserialize_with = "block")]
    wait: Option<RawWait>,
    #[serde(default, deserialize_with = "duration")]
    max_stale: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    read_wait: Option<Duration>,
    status_dir: Option<String>,
    log_level: Option<String>,
    pid_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "block")]
    syslog: Option<RawSyslog>,
    kill_signal: Option<String>,
    reload_signal: Option<String>,
    // The older top-level forms consul-replicate still reads.
    token: Option<String>,
    #[serde(default, deserialize_with = "block")]
    auth: Option<RawAuth>,
    #[serde(default, deserialize_with = "block")]
    ssl: Option<RawSsl>,
    #[serde(default, deserialize_with = "duration")]
    retry: Option<Duration>,
    path: Option<IgnoredAny>,
    // Tribune's.
    lock: Option<String>,
    max_delete_fraction: Option<f64>,
    force_deletes: Option<bool>,
    metrics_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsul {
    address: Option<String>,
    namespace: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "block")]
    auth: Option<RawAuth>,
    #[serde(default, deserialize_with = "block")]
    retry: Option<RawRetry>,
    #[serde(default, deserialize_with = "block")]
    ssl: Option<RawSsl>,
    #[serde(default, deserialize_with = "block")]
    transport: Option<RawTransport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    enabled: Option<bool>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    enabled: Option<bool>,
    attempts: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    max_backoff: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsl {
    enabled: Option<bool>,
    verify: Option<bool>,
    cert: Option<String>,
    key: Option<String>,
    ca_cert: Option<String>,
    ca_cert_bytes: Option<String>,
    ca_path: Option<String>,
    server_name: Option<String>,
}

/// consul-template's connection tuning: read so that such files load, without effect here.
#[derive(Debug, Default, Deserialize)]
#[expect(dead_code, reason = "read so that such files load; the values have no effect")]
#[serde(deny_unknown_fields)]
struct RawTransport {
    dial_keep_alive: Option<IgnoredAny>,
    dial_timeout: Option<IgnoredAny>,
    disable_keep_alives: Option<IgnoredAny>,
    idle_conn_timeout: Option<IgnoredAny>,
    max_idle_conns: Option<IgnoredAny>,
    max_idle_conns_per_host: Option<IgnoredAny>,
    max_conns_per_host: Option<IgnoredAny>,
    tls_handshake_timeout: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    enabled: Option<bool>,
    facility: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWait {
    #[serde(default, deserialize_with = "duration")]
    min: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    max: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclude {
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrefix {
    source: String,
    #[serde(alias = "dc")]
    datacenter: Option<String>,
    destination: Option<String>,
}

/// One `prefix`, written as `"src@dc[:dest]"` or as a block.
#[derive(Debug)]
struct PrefixItem(PrefixSpec);

/// A block that may also be written as a string (`consul = "addr"`, `wait = "5s:10s"`,
/// `prefix = "global@dc1"`, `exclude = "global/private"`).
trait Shorthand: Sized {
    /// The value a string stands for; an error if the block has no string form.
    fn from_shorthand(text: &str) -> Result<Self, String>;
}

fn no_shorthand<T>(text: &str) -> Result<T, String> {
    Err(format!("expected a block, found the string {text:?}"))
}

impl Shorthand for RawConsul {
    fn from_shorthand(text: &str) -> Result<Self, String> {
        Ok(RawConsul {
            address: Some(text.to_owned()),
            ..RawConsul::default()
        })
    }
}

impl Shorthand for RawWait {
    fn from_shorthand(text: &str) -> Result<Self, String> {
        let wait = WaitSettings::parse(text)?;
        Ok(RawWait {
            min: wait.min,
            max: wait.max,
        })
    }
}

impl Shorthand for RawExclude {
    fn from_shorthand(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("empty exclude".to_owned());
        }
        Ok(RawExclude {
            source: text.to_owned(),
        })
    }
}

impl Shorthand for PrefixItem {
    fn from_shorthand(text: &str) -> Result<Self, String> {
        text.parse()
            .map(PrefixItem)
            .map_err(|e: tribune_replicate::PrefixSpecError| e.to_string())
    }
}

impl<'de> Deserialize<'de> for PrefixItem {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PrefixVisitor;
        impl<'de> Visitor<'de> for PrefixVisitor {
            type Value = PrefixItem;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"source@datacenter[:destination]\" or a prefix block")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<PrefixItem, E> {
                PrefixItem::from_shorthand(text).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PrefixItem, A::Error> {
                let block = RawPrefix::deserialize(de::value::MapAccessDeserializer::new(map))?;
                // As consul-replicate does: rebuild the `src@dc:dest` text and parse that.
                let mut spec = block.source;
                if let Some(dc) = block.datacenter {
                    spec = format!("{spec}@{dc}");
                }
                if let Some(destination) = block.destination {
                    spec = format!("{spec}:{destination}");
                }
                PrefixItem::from_shorthand(&spec).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(PrefixVisitor)
    }
}

macro_rules! no_shorthand {
    ($($t:ty),*) => {$(
        impl Shorthand for $t {
            fn from_shorthand(text: &str) -> Result<Self, String> {
                no_shorthand(text)
            }
        }
    )*};
}
no_shorthand!(RawAuth, RawRetry, RawSsl, RawTransport, RawSyslog);

/// A block or its string form, once.
struct One<T>(T);

impl<'de, T: Deserialize<'de> + Shorthand> Deserialize<'de> for One<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Shorthand> Visitor<'de> for OneVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a block")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
                T::from_shorthand(text).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_any(OneVisitor(PhantomData)).map(One)
    }
}

/// Every occurrence of a block: a string (comma-separated, as mapstructure splits it), one block, or
/// a list of blocks and strings.
fn blocks<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + Shorthand,
{
    struct ManyVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de> + Shorthand> Visitor<'de> for ManyVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a block or a list of them")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<T>, E> {
            text.split(',')
                .map(|part| T::from_shorthand(part).map_err(E::custom))
                .collect()
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|block| vec![block])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut all = Vec::new();
            while let Some(One(item)) = seq.next_element::<One<T>>()? {
                all.push(item);
            }
            Ok(all)
        }
    }
    deserializer.deserialize_any(ManyVisitor(PhantomData))
}

/// A block written once or several times (the last wins), or its string form.
fn block<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + Shorthand,
{
    Ok(blocks(deserializer)?.pop())
}

/// A Go duration string, or a number of nanoseconds as mapstructure reads an integer.
fn duration<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10s\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            tribune::duration::parse_go_duration(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<Duration, E> {
            Ok(Duration::from_nanos(nanos))
        }

        fn visit_i64<E: de::Error>(self, nanos: i64) -> Result<Duration, E> {
            u64::try_from(nanos)
                .map(Duration::from_nanos)
                .map_err(|_| E::custom("negative duration"))
        }
    }
    deserializer.deserialize_any(DurationVisitor).map(Some)
}

impl RawFile {
    fn into_settings(self, path: &Path) -> Result<Settings, FileError> {
        let invalid = |key: &str, reason: String| FileError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut settings = Settings::default();
        let mut warn = |text: String| settings.warnings.push(format!("{}: {text}", path.display()));
        let mut consul = self.consul.unwrap_or_default();
        // The older top-level forms override the block, as consul-replicate moves them into it.
        if let Some(token) = self.token {
            warn("top-level token is deprecated; write consul { token = \"...\" }".to_owned());
            consul.token = Some(token);
        }
        if let Some(auth) = self.auth {
            warn("top-level auth is deprecated; write consul { auth { ... } }".to_owned());
            consul.auth = Some(auth);
        }
        if let Some(ssl) = self.ssl {
            warn("top-level ssl is deprecated; write consul { ssl { ... } }".to_owned());
            consul.ssl = Some(ssl);
        }
        if let Some(retry) = self.retry {
            warn("top-level retry is deprecated; write consul { retry { ... } }".to_owned());
            consul.retry = Some(RawRetry {
                backoff: Some(retry),
                max_backoff: Some(retry),
                ..RawRetry::default()
            });
        }
        if self.path.is_some() {
            warn("path is no longer a configuration key; it is ignored".to_owned());
        }
        if consul.transport.is_some() {
            warn("consul.transport has no effect in tribune replicate".to_owned());
        }
        let syslog = self.syslog.unwrap_or_default();
        if syslog.name.is_some() {
            warn("syslog.name has no effect in tribune replicate".to_owned());
        }

        let target = &mut settings.consul;
        target.address = consul.address;
        target.namespace = consul.namespace;
        target.token = consul.token;
        target.token_file = consul.token_file;
        if let Some(auth) = consul.auth {
            target.auth = AuthSettings {
                enabled: auth.enabled,
                username: auth.username,
                password: auth.password,
            };
        }
        if let Some(retry) = consul.retry {
            target.retry = RetrySettings {
                enabled: retry.enabled,
                attempts: retry.attempts,
                backoff: retry.backoff,
                max_backoff: retry.max_backoff,
            };
        }
        if let Some(ssl) = consul.ssl {
            let options = [
                ("consul.ssl.verify", ssl.verify.is_some()),
                ("consul.ssl.cert", ssl.cert.is_some_and(|s| !s.is_empty())),
                ("consul.ssl.key", ssl.key.is_some_and(|s| !s.is_empty())),
                ("consul.ssl.ca_cert", ssl.ca_cert.is_some_and(|s| !s.is_empty())),
                (
                    "consul.ssl.ca_cert_bytes",
                    ssl.ca_cert_bytes.is_some_and(|s| !s.is_empty()),
                ),
                ("consul.ssl.ca_path", ssl.ca_path.is_some_and(|s| !s.is_empty())),
                (
                    "consul.ssl.server_name",
                    ssl.server_name.is_some_and(|s| !s.is_empty()),
                ),
            ];
            target.ssl = SslSettings {
                enabled: ssl.enabled,
                implied_by: options
                    .iter()
                    .find(|(_, set)| *set)
                    .map(|(name, _)| (*name).to_owned()),
            };
        }
        settings.prefixes = self.prefix.into_iter().map(|PrefixItem(spec)| spec).collect();
        settings.excludes = self.exclude.into_iter().map(|e| e.source).collect();
        if let Some(wait) = self.wait {
            settings.wait = WaitSettings {
                min: wait.min,
                max: wait.max,
            };
        }
        settings.max_stale = self.max_stale;
        settings.read_wait = self.read_wait;
        settings.status_dir = self.status_dir;
        settings.log_level = self
            .log_level
            .map(|level| level.parse::<LogLevel>())
            .transpose()
            .map_err(|reason| invalid("log_level", reason))?;
        settings.pid_file = self.pid_file;
        settings.syslog_enabled = syslog
            .enabled
            .or((syslog.facility.is_some() || syslog.name.is_some()).then_some(true));
        settings.syslog_facility = syslog.facility;
        settings.kill_signal = self
            .kill_signal
            .map(|s| Signal::parse_setting(&s))
            .transpose()
            .map_err(|reason| invalid("kill_signal", reason))?;
        settings.reload_signal = self
            .reload_signal
            .map(|s| Signal::parse_setting(&s))
            .transpose()
            .map_err(|reason| invalid("reload_signal", reason))?;
        settings.lock = self.lock;
        settings.max_delete_fraction = self.max_delete_fraction;
        settings.force_deletes = self.force_deletes;
        settings.metrics_addr = self
            .metrics_addr
            .map(|addr| addr.parse::<SocketAddr>())
            .transpose()
            .map_err(|e| invalid("metrics_addr", e.to_string()))?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hcl(text: &str) -> Result<Settings, FileError> {
        parse_str(text, false, Path::new("test.hcl"))
    }

    fn spec(text: &str) -> PrefixSpec {
        text.parse().unwrap()
    }

    #[test]
    fn the_readme_example_reads() {
        let settings = hcl(r#"
            consul {
              auth {
                enabled  = true
                username = "test"
                password = "test"
              }
              address = "127.0.0.1:8500"
              token = "abcd1234"
              retry {
                enabled = true
                attempts = 12
                backoff = "250ms"
                max_backoff = "1m"
              }
              ssl {
                enabled = true
                verify = false
                cert = "/path/to/client/cert"
                key  = "/path/to/client/key"
                ca_cert = "/path/to/ca"
                ca_path = "path/to/certs/"
                server_name = "my-server.com"
              }
            }
            exclude {
              source = "my-key"
            }
            kill_signal = "SIGINT"
            log_level = "warn"
            max_stale = "10m"
            pid_file = "/path/to/pid"
            prefix {
              source      = "global"
              datacenter  = "nyc1"
              destination = "default"
            }
            reload_signal = "SIGHUP"
            status_dir = "service/consul-replicate/statuses"
            syslog {
              enabled = true
              facility = "LOCAL5"
            }
            wait {
              min = "5s"
              max = "10s"
            }
        "#)
        .unwrap();
        assert_eq!(settings.consul.address.as_deref(), Some("127.0.0.1:8500"));
        assert_eq!(settings.consul.token.as_deref(), Some("abcd1234"));
        assert_eq!(settings.consul.auth.username.as_deref(), Some("test"));
        assert_eq!(settings.consul.retry.backoff, Some(Duration::from_millis(250)));
        assert_eq!(settings.consul.retry.max_backoff, Some(Duration::from_secs(60)));
        assert_eq!(settings.consul.ssl.enabled, Some(true));
        assert_eq!(settings.excludes, ["my-key"]);
        assert_eq!(settings.kill_signal, Some(Some(Signal::Int)));
        assert_eq!(settings.log_level, Some(LogLevel::Warn));
        assert_eq!(settings.max_stale, Some(Duration::from_secs(600)));
        assert_eq!(settings.prefixes, [spec("global@nyc1:default")]);
        assert_eq!(settings.syslog_enabled, Some(true));
        assert_eq!(settings.syslog_facility.as_deref(), Some("LOCAL5"));
        assert_eq!(settings.wait.min, Some(Duration::from_secs(5)));
        assert_eq!(settings.wait.max, Some(Duration::from_secs(10)));
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn the_older_forms_read() {
        let settings = hcl(r#"
            consul = "10.0.0.1:8500"
            token = "old"
            retry = "10s"
            auth { username = "u" }
            path = "/ignored"
            wait = "2s"
            prefix = "a@dc1"
            exclude = "a/private"
        "#)
        .unwrap();
        assert_eq!(settings.consul.address.as_deref(), Some("10.0.0.1:8500"));
        assert_eq!(settings.consul.token.as_deref(), Some("old"));
        assert_eq!(settings.consul.retry.backoff, Some(Duration::from_secs(10)));
        assert_eq!(settings.consul.retry.max_backoff, Some(Duration::from_secs(10)));
        assert_eq!(settings.consul.auth.username.as_deref(), Some("u"));
        assert_eq!(settings.wait.max, Some(Duration::from_secs(8)));
        assert_eq!(settings.prefixes, [spec("a@dc1")]);
        assert_eq!(settings.excludes, ["a/private"]);
        assert_eq!(settings.warnings.len(), 4, "{:?}", settings.warnings);
    }

    #[test]
    fn repeated_blocks_and_tribunes_keys() {
        let settings = hcl(r#"
            prefix {
              source = "a"
              dc = "dc1"
            }
            prefix {
              source = "b/"
              datacenter = "dc2"
              destination = "copy/"
            }
            exclude { source = "a/x" }
            exclude { source = "a/y" }
            consul { address = "first:1" }
            consul { token = "second" }
            lock = "locks/replicate"
            max_delete_fraction = 1
            force_deletes = true
            metrics_addr = "127.0.0.1:9100"
        "#)
        .unwrap();
        assert_eq!(settings.prefixes, [spec("a@dc1"), spec("b/@dc2:copy/")]);
        assert_eq!(settings.excludes, ["a/x", "a/y"]);
        // The last consul block wins whole, as consul-replicate flattens repeated blocks.
        assert_eq!(settings.consul.address, None);
        assert_eq!(settings.consul.token.as_deref(), Some("second"));
        assert_eq!(settings.lock.as_deref(), Some("locks/replicate"));
        assert_eq!(settings.max_delete_fraction, Some(1.0));
        assert_eq!(settings.force_deletes, Some(true));
        assert_eq!(settings.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn json_reads_the_same_keys() {
        let settings = parse_str(
            r#"{
                "consul": {"address": "10.0.0.1:8500", "retry": {"attempts": 3}},
                "prefix": [{"source": "global", "datacenter": "nyc1"}, "other@nyc2:x"],
                "exclude": [{"source": "global/private"}],
                "wait": {"min": "1s"},
                "max_stale": "0s"
            }"#,
            true,
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(settings.consul.retry.attempts, Some(3));
        assert_eq!(settings.prefixes, [spec("global@nyc1"), spec("other@nyc2:x")]);
        assert_eq!(settings.excludes, ["global/private"]);
        assert_eq!(settings.wait.min, Some(Duration::from_secs(1)));
        assert_eq!(settings.wait.max, None);
        assert_eq!(settings.max_stale, Some(Duration::ZERO));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        for (text, key, word) in [
            ("colour = \"red\"", "colour", "colour"),
            (
                "consul {\n retry { atempts = 3 }\n}",
                "consul.retry.atempts",
                "atempts",
            ),
            ("prefix {\n path = \"a@dc1\"\n}", "prefix.path", "path"),
            ("prefix = \"nodc\"", "prefix", "missing datacenter"),
            ("max_stale = \"5\"", "max_stale", "missing unit"),
            ("log_level = \"loud\"", "log_level", "loud"),
            ("force_deletes = \"yes\"", "force_deletes", "invalid type"),
            ("wait = \"3s:1s\"", "wait", "less than min"),
        ] {
            let error = hcl(text).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("config test.hcl: "), "{message}");
            assert!(message.contains(word), "{text}: {message}");
            match error {
                FileError::Invalid { key: k, .. } => assert_eq!(k, key, "{text}: {message}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(hcl("consul {"), Err(FileError::Syntax { .. })));
    }

    #[test]
    fn a_directory_merges_in_lexical_order_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("b.hcl", "status_dir = \"from-b\"\nprefix = \"b@dc1\"");
        write(
            "a.json",
            r#"{"status_dir": "from-a", "prefix": "a@dc1", "max_stale": "5s"}"#,
        );
        write("c/nested", "status_dir = \"from-c\"\nprefix = \"c@dc1\"");
        let single = dir.path().join("later.hcl");
        std::fs::write(&single, "max_stale = \"7s\"").unwrap();
        let settings = load(&[dir.path().to_owned()]).unwrap();
        assert_eq!(settings.status_dir.as_deref(), Some("from-c"));
        assert_eq!(settings.prefixes, [spec("a@dc1"), spec("b@dc1"), spec("c@dc1")]);

        // The single file is inside the directory too; given again after it, it wins.
        let mut settings = load(&[dir.path().to_owned(), single.clone()]).unwrap();
        assert_eq!(settings.max_stale, Some(Duration::from_secs(7)));
        let flags = Settings {
            status_dir: Some("from-flags".into()),
            prefixes: vec![spec("f@dc1")],
            ..Settings::default()
        };
        settings.merge(flags);
        assert_eq!(settings.status_dir.as_deref(), Some("from-flags"));
        assert_eq!(settings.prefixes.last(), Some(&spec("f@dc1")));

        let missing = load(&[dir.path().join("absent")]).unwrap_err();
        assert!(matches!(missing, FileError::Io { .. }), "{missing}");
        write("zz-bad.hcl", "bogus = 1");
        let error = load(&[dir.path().to_owned()]).unwrap_err().to_string();
        assert!(error.contains("zz-bad.hcl") && error.contains("bogus"), "{error}");
    }
}
