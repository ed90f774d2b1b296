//! Times and durations as Consul's ACL API writes and reads them (RFC 3339, Go durations), and the
//! rules for a new token's expiration.

use std::time::{Duration, SystemTime};

use super::super::ApiError;

/// Go's zero `time.Time` in RFC 3339, as Consul renders an unset time.
pub(super) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub(super) use crate::http::now_unix_ms;

/// A unix time in milliseconds as Go's JSON encoding prints a UTC time (RFC 3339, fraction
/// without trailing zeros).
pub(super) fn format_unix_ms(ms: u64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let text = humantime::format_rfc3339_millis(time).to_string();
    match text.strip_suffix('Z').and_then(|t| t.split_once('.')) {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{fraction}Z")
            }
        }
        None => text,
    }
}

/// A duration as Go prints one (`24h0m0s`, `1m0s`, `1.5s`, `500ms`), to the millisecond.
pub(super) fn go_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let seconds = if rest % 1000 == 0 {
        format!("{}s", rest / 1000)
    } else {
        let text = format!("{}.{:03}", rest / 1000, rest % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// Reads `ExpirationTTL`: a Go duration string or a number of nanoseconds.
pub(super) fn parse_expiration_ttl(value: &serde_json::Value) -> Result<Option<Duration>, ApiError> {
    let decoding = |reason: String| ApiError::bad_request(format!("Token decoding failed: {reason}"));
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) if text.is_empty() => Ok(None),
        serde_json::Value::String(text) => match text.strip_prefix('-') {
            Some(_) => Err(ApiError::internal(format!(
                "Token Expiration TTL '{text}' should be > 0"
            ))),
            None => crate::duration::parse_go_duration(text)
                .map(|ttl| (!ttl.is_zero()).then_some(ttl))
                .map_err(|e| decoding(e.to_string())),
        },
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(0) => Ok(None),
            Some(ns) if ns < 0 => Err(ApiError::internal(format!(
                "Token Expiration TTL '{}' should be > 0",
                go_duration(Duration::from_nanos(ns.unsigned_abs()))
            ))),
            Some(ns) => Ok(Some(Duration::from_nanos(ns.unsigned_abs()))),
            None => Err(decoding(format!("ExpirationTTL {number} is not a duration"))),
        },
        other => Err(decoding(format!("ExpirationTTL {other} is not a duration"))),
    }
}

/// Reads `ExpirationTime` (RFC 3339) as unix milliseconds.
pub(super) fn parse_expiration_time(text: Option<&str>) -> Result<Option<u64>, ApiError> {
    // Go's zero time, which some clients send for "no expiration", is before what the parser takes.
    let Some(text) = text.filter(|t| !t.is_empty() && *t != ZERO_TIME) else {
        return Ok(None);
    };
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| ApiError::bad_request(format!("Token decoding failed: parsing time {text:?}: {e}")))?;
    let ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    Ok((ms > 0).then_some(ms))
}

/// The bounds a new token's lifetime must fall within.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExpirationBounds {
    pub(super) min: Duration,
    pub(super) max: Duration,
}

/// Consul's rules for a new token's expiration, given the time of creation: a TTL or a time but not
/// both, not in the past, within the configured bounds. Returns the expiration in unix ms.
pub(super) fn new_token_expiration(
    ttl: Option<Duration>,
    time_ms: Option<u64>,
    now_ms: u64,
    bounds: ExpirationBounds,
) -> Result<Option<u64>, String> {
    let expires_ms = match (ttl, time_ms) {
        (Some(_), Some(_)) => {
            return Err("Token Expiration TTL and Expiration Time cannot both be set".into());
        }
        (Some(ttl), None) => now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        (None, Some(ms)) => ms,
        (None, None) => return Ok(None),
    };
    if expires_ms < now_ms {
        return Err("ExpirationTime cannot be before CreateTime".into());
    }
    let expires_in = Duration::from_millis(expires_ms - now_ms);
    if expires_in > bounds.max {
        return Err(format!(
            "ExpirationTime cannot be more than {} in the future (was {})",
            go_duration(bounds.max),
            go_duration(expires_in)
        ));
    }
    if expires_in < bounds.min {
        return Err(format!(
            "ExpirationTime cannot be less than {} in the future (was {})",
            go_duration(bounds.min),
            go_duration(expires_in)
        ));
    }
    Ok(Some(expires_ms))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    const BOUNDS: ExpirationBounds = ExpirationBounds {
        min: Duration::from_secs(60),
        max: Duration::from_secs(24 * 3600),
    };
    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn a_ttl_counts_from_creation_within_consul_s_bounds() {
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            new_token_expiration(Some(ten_minutes), None, NOW, BOUNDS),
            Ok(Some(NOW + 600_000))
        );
        assert_eq!(new_token_expiration(None, None, NOW, BOUNDS), Ok(None));
        assert_eq!(
            new_token_expiration(Some(Duration::from_secs(30)), None, NOW, BOUNDS),
            Err("ExpirationTime cannot be less than 1m0s in the future (was 30s)".to_owned())
        );
        assert_eq!(
            new_token_expiration(Some(Duration::from_secs(25 * 3600)), None, NOW, BOUNDS),
            Err("ExpirationTime cannot be more than 24h0m0s in the future (was 25h0m0s)".to_owned())
        );
        assert_eq!(
            new_token_expiration(Some(ten_minutes), Some(NOW + 1), NOW, BOUNDS),
            Err("Token Expiration TTL and Expiration Time cannot both be set".to_owned())
        );
        assert_eq!(
            new_token_expiration(None, Some(NOW - 1), NOW, BOUNDS),
            Err("ExpirationTime cannot be before CreateTime".to_owned())
        );
    }

    #[test]
    fn expiration_ttl_takes_go_durations_and_nanoseconds() {
        let ttl = |v: serde_json::Value| parse_expiration_ttl(&v).map_err(|e| e.status());
        assert_eq!(ttl(serde_json::json!("10m")), Ok(Some(Duration::from_secs(600))));
        assert_eq!(
            ttl(serde_json::json!(60_000_000_000u64)),
            Ok(Some(Duration::from_secs(60)))
        );
        assert_eq!(ttl(serde_json::json!("")), Ok(None));
        assert_eq!(
            ttl(serde_json::json!("-1m")),
            Err(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert_eq!(ttl(serde_json::json!("soon")), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn times_print_and_parse_as_go_does() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            parse_expiration_time(Some("1970-01-01T00:00:01.5Z")).map_err(|e| e.status()),
            Ok(Some(1_500))
        );
        assert_eq!(
            parse_expiration_time(Some(ZERO_TIME)).map_err(|e| e.status()),
            Ok(None)
        );
        assert_eq!(go_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(3_660)), "1h1m0s");
    }
}
