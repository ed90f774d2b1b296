//! What to replicate and how: consul-replicate's settings, with its defaults, plus the guard's.
//!
//! Parsing of files and flags belongs to the program that embeds the crate; this module holds the
//! settled values and parses the one syntax every front end shares, `source@datacenter[:destination]`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The default key prefix for status records (consul-replicate's).
pub const DEFAULT_STATUS_DIR: &str = "service/consul-replicate/statuses";
/// The default longest `X-Consul-LastContact` a stale answer may have before it is asked again of the
/// leader.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(2);
/// The default share of the destination one pass may delete before its deletes are held.
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.5;
/// The default least time between the starts of two source reads. consul-replicate's floor is
/// 100 ms, but it re-reads the whole prefix each time; a delta read costs the changed keys, so half
/// the floor halves the lag under steady writes for little more work.
pub const DEFAULT_MIN_READ_INTERVAL: Duration = Duration::from_millis(50);

/// One replicated prefix: `source@datacenter[:destination]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixSpec {
    /// The source key prefix, a raw string prefix (`app` also matches `apple`); no leading `/`.
    pub source: String,
    /// The datacenter it is read from.
    pub datacenter: String,
    /// The local prefix it is written under; the source prefix when not given.
    pub destination: String,
}

/// Why a `-prefix` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixSpecError {
    /// No `@datacenter`.
    #[error("prefix {0:?}: missing datacenter (expected source@datacenter[:destination])")]
    MissingDatacenter(String),
    /// The source prefix is empty.
    #[error("prefix {0:?}: missing source prefix (expected source@datacenter[:destination])")]
    MissingSource(String),
    /// The datacenter name has characters a datacenter name cannot have.
    #[error("prefix {spec:?}: invalid datacenter name {datacenter:?}")]
    BadDatacenter {
        /// The whole value.
        spec: String,
        /// The datacenter part.
        datacenter: String,
    },
}

impl FromStr for PrefixSpec {
    type Err = PrefixSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (source_part, destination) = match spec.split_once(':') {
            Some((source, destination)) => (source, Some(destination)),
            None => (spec, None),
        };
        let source_part = source_part.strip_prefix('/').unwrap_or(source_part);
        let Some((source, datacenter)) = source_part.split_once('@') else {
            return Err(PrefixSpecError::MissingDatacenter(spec.to_owned()));
        };
        if source.is_empty() {
            return Err(PrefixSpecError::MissingSource(spec.to_owned()));
        }
        let valid_dc = !datacenter.is_empty()
            && datacenter
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_dc {
            return Err(PrefixSpecError::BadDatacenter {
                spec: spec.to_owned(),
                datacenter: datacenter.to_owned(),
            });
        }
        let destination = destination
            .map(|d| d.strip_prefix('/').unwrap_or(d))
            .filter(|d| !d.is_empty())
            .unwrap_or(source);
        Ok(PrefixSpec {
            source: source.to_owned(),
            datacenter: datacenter.to_owned(),
            destination: destination.to_owned(),
        })
    }
}

impl fmt::Display for PrefixSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.source, self.datacenter, self.destination)
    }
}

/// Quiescence: replicate once the source has been quiet for `min`, or at the latest `max` after the
/// first change (consul-replicate's `wait = "min:max"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitConfig {
    /// The quiet time that triggers a pass.
    pub min: Duration,
    /// The longest a change waits; consul-replicate's default is 4 × `min`.
    pub max: Duration,
}

/// Retries of failed reads and writes: exponential back-off from `backoff`, doubling up to
/// `max_backoff`, giving up after `attempts` consecutive failures (0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Consecutive failures before the replicator gives up (0: never).
    pub attempts: u32,
    /// The first pause.
    pub backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 12,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Everything one replicator does.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateConfig {
    /// The prefixes, each replicated independently.
    pub prefixes: Vec<PrefixSpec>,
    /// Source key prefixes neither written nor deleted (raw string prefixes of the source path).
    pub excludes: Vec<String>,
    /// Where status records go; the source datacenter is part of each record's key.
    pub status_dir: String,
    /// The longest last contact a stale read may show before the read is repeated on the leader, and
    /// before a pass is refused to delete anything.
    pub max_stale: Duration,
    /// Quiescence, if any.
    pub wait: Option<WaitConfig>,
    /// Retries.
    pub retry: RetryConfig,
    /// Replicate every prefix once and stop.
    pub once: bool,
    /// The share of a destination prefix one pass may delete before its deletes are held.
    pub max_delete_fraction: f64,
    /// Apply deletes that the guard would hold (the mass-delete guard's override).
    pub force_deletes: bool,
    /// Whether keys missing at the source are deleted at the destination at all.
    pub deletes: bool,
    /// Keys the replicator itself owns at the destination (its lock), never written or deleted.
    pub protected: Vec<String>,
    /// How long one blocking source read may wait.
    pub read_wait: Duration,
    /// The least time between the starts of two source reads after the first pass, so a source that
    /// answers at once (a prefix that changes all the time, an index that never settles) is not read
    /// in a tight loop (default 50 ms; consul-replicate waits 100 ms).
    pub min_read_interval: Duration,
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            prefixes: Vec::new(),
            excludes: Vec::new(),
            status_dir: DEFAULT_STATUS_DIR.to_owned(),
            max_stale: DEFAULT_MAX_STALE,
            wait: None,
            retry: RetryConfig::default(),
            once: false,
            max_delete_fraction: DEFAULT_MAX_DELETE_FRACTION,
            force_deletes: false,
            deletes: true,
            protected: Vec::new(),
            read_wait: Duration::from_secs(60),
            min_read_interval: DEFAULT_MIN_READ_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<PrefixSpec, PrefixSpecError> {
        s.parse()
    }

    #[test]
    fn prefix_specs_parse_as_consul_replicate_reads_them() {
        let plain = spec("global@dc1").unwrap();
        assert_eq!(
            (plain.source.as_str(), plain.datacenter.as_str()),
            ("global", "dc1")
        );
        assert_eq!(plain.destination, "global");
        let mapped = spec("/global/@nyc-1.east:backup/").unwrap();
        assert_eq!(mapped.source, "global/");
        assert_eq!(mapped.datacenter, "nyc-1.east");
        assert_eq!(mapped.destination, "backup/");
        assert_eq!(spec("global@dc1:").unwrap().destination, "global");
        assert_eq!(
            spec("global"),
            Err(PrefixSpecError::MissingDatacenter("global".into()))
        );
        assert_eq!(spec("@dc1"), Err(PrefixSpecError::MissingSource("@dc1".into())));
        assert!(matches!(
            spec("a@dc 1"),
            Err(PrefixSpecError::BadDatacenter { .. })
        ));
        assert!(matches!(spec("a@"), Err(PrefixSpecError::BadDatacenter { .. })));
    }
}
