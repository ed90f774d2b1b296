//! The status record of one replicated prefix: where it is kept at the destination and what it says.
//!
//! The record is a superset of consul-replicate's `{"LastReplicated","Source","Destination"}`, so a
//! record it wrote still reads. Its key differs on purpose: consul-replicate hashes
//! `source-destination`, so the same pair from two datacenters shares one record; here the source
//! datacenter is part of the key, and the prefixes are hex-encoded rather than hashed, so the key is
//! readable and two different replications can never collide.
//!
//! This module formats and parses; the runner decides when a record is written.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::PrefixSpec;
use crate::planner::Hold;

/// The key of `spec`'s status record: `status_dir/datacenter/hex(source)-hex(destination)`, the
/// prefixes hex-encoded byte by byte (lower case) from their UTF-8.
pub fn status_key(status_dir: &str, spec: &PrefixSpec) -> String {
    let dir = status_dir.trim_end_matches('/');
    format!(
        "{dir}/{}/{}-{}",
        spec.datacenter,
        hex(spec.source.as_bytes()),
        hex(spec.destination.as_bytes())
    )
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Why a stored status record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("status record {key}: {reason}")]
pub struct StatusDecodeError {
    /// The record's key.
    pub key: String,
    /// What was wrong with it.
    pub reason: String,
}

/// What one prefix's replication has done, as stored at the destination and published by the
/// runner.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PrefixStatus {
    /// The source index the destination reflects: the index of the last pass that was applied.
    pub last_replicated: u64,
    /// The source prefix.
    pub source: String,
    /// The destination prefix.
    pub destination: String,
    /// The source datacenter.
    pub source_datacenter: String,
    /// The source index last seen (held or applied).
    pub source_index: u64,
    /// When the last pass was applied, RFC 3339 in UTC; `null` before the first.
    pub last_success: Option<String>,
    /// How far the destination is behind: the time since the runner first saw a source index newer
    /// than `LastReplicated`, 0 when caught up. As of the last update of this record.
    pub seconds_behind: f64,
    /// The lag of the last applied pass: from first seeing its changes to applying them, in seconds.
    pub replicate_lag: f64,
    /// Why the last pass was held, in words; `null` when it was not.
    pub held: Option<String>,
    /// The kind of hold ([`Hold::kind`]), for programs; `null` when not held.
    pub held_kind: Option<String>,
    /// Deletes the last pass held back (the mass-delete guard).
    pub held_deletes: usize,
    /// Puts applied, in total, over the record's life.
    pub puts: u64,
    /// Deletes applied, in total, over the record's life.
    pub deletes: u64,
    /// The last failure, cleared by the next applied pass.
    pub last_error: Option<String>,
}

impl PrefixStatus {
    /// A fresh record for `spec`: nothing replicated yet.
    pub fn new(spec: &PrefixSpec) -> Self {
        PrefixStatus {
            source: spec.source.clone(),
            destination: spec.destination.clone(),
            source_datacenter: spec.datacenter.clone(),
            ..PrefixStatus::default()
        }
    }

    /// Records `hold` (or its absence) and the number of deletes it kept back.
    pub fn set_hold(&mut self, hold: Option<&Hold>) {
        self.held = hold.map(ToString::to_string);
        self.held_kind = hold.map(|h| h.kind().to_owned());
        self.held_deletes = match hold {
            Some(Hold::TooManyDeletes { deletes, .. }) => *deletes,
            _ => 0,
        };
    }

    /// The stored form: pretty JSON, as consul-replicate writes its records.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and options always serialises; the fallback is unreachable.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads a stored record. Fields it lacks (a record consul-replicate wrote) take their defaults.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self, StatusDecodeError> {
        serde_json::from_slice(bytes).map_err(|e| StatusDecodeError {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// `time` as RFC 3339 in UTC with whole seconds, e.g. `2024-02-29T23:59:59Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            // Round towards the past so a fraction before a second still names that second.
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let extra = i64::from(before.subsec_nanos() > 0);
            -whole.saturating_add(extra)
        }
    };
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: counted in 400-year eras of 146 097 days,
/// each year starting on 1 March so that the leap day falls at the end of the year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // [0, 146096]
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // day is in [1, 31] and month in [1, 12] by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: i64) -> SystemTime {
        if seconds >= 0 {
            UNIX_EPOCH + Duration::from_secs(seconds as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_709_251_199)), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(at(1_709_251_200)), "2024-03-01T00:00:00Z");
        assert_eq!(rfc3339(at(4_102_444_800)), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339(at(-86_400 * 365)), "1969-01-01T00:00:00Z");
    }

    #[test]
    fn civil_dates_round_trip_day_by_day() {
        // Every day over four centuries either side of the epoch follows the previous one.
        let mut previous = civil_from_days(-146_097 - 1);
        for days in -146_097..146_097 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m) == (py, pm) && d == pd + 1;
            let next_month = y == py && m == pm + 1 && d == 1;
            let next_year = y == py + 1 && (m, d) == (1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} -> {:?}",
                (y, m, d)
            );
            previous = (y, m, d);
        }
    }

    #[test]
    fn key_has_the_datacenter_and_hex_prefixes() {
        let spec: PrefixSpec = "global/@dc1:backup".parse().unwrap();
        assert_eq!(
            status_key("service/consul-replicate/statuses/", &spec),
            "service/consul-replicate/statuses/dc1/676c6f62616c2f-6261636b7570"
        );
        // `a-b` -> `c` and `a` -> `b-c` would collide under consul-replicate's `source-destination`.
        let one: PrefixSpec = "a-b@dc1:c".parse().unwrap();
        let two: PrefixSpec = "a@dc1:b-c".parse().unwrap();
        assert_ne!(status_key("s", &one), status_key("s", &two));
        let other_dc: PrefixSpec = "a-b@dc3:c".parse().unwrap();
        assert_ne!(status_key("s", &one), status_key("s", &other_dc));
    }

    #[test]
    fn json_is_pascal_case_and_reads_consul_replicate_records() {
        let spec: PrefixSpec = "global@dc1".parse().unwrap();
        let mut status = PrefixStatus::new(&spec);
        status.last_replicated = 42;
        status.last_success = Some("2024-01-01T00:00:00Z".into());
        let json: serde_json::Value = serde_json::from_slice(&status.to_json()).unwrap();
        assert_eq!(json["LastReplicated"], 42);
        assert_eq!(json["Source"], "global");
        assert_eq!(json["SourceDatacenter"], "dc1");
        assert_eq!(json["LastSuccess"], "2024-01-01T00:00:00Z");
        assert_eq!(json["Held"], serde_json::Value::Null);
        assert_eq!(PrefixStatus::from_json("k", &status.to_json()).unwrap(), status);

        let old = br#"{"LastReplicated": 7, "Source": "global", "Destination": "global"}"#;
        let read = PrefixStatus::from_json("k", old).unwrap();
        assert_eq!(read.last_replicated, 7);
        assert_eq!(read.puts, 0);
        assert!(PrefixStatus::from_json("k", b"not json").is_err());
    }
}
