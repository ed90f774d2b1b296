//! Go's `time.Duration` text form, which Consul's JSON uses for TTLs and leeways: written as Go prints
//! it ("5m0s", "1h0m0s", "1.5s", "300ms", "0s"), read as Go parses it ("5m", "300s", "1h30m", "-1s"),
//! and also read from a JSON number of nanoseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a duration text was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    /// The text as given.
    pub text: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// A signed Go duration in nanoseconds.
pub(crate) fn parse_go_duration_nanos(text: &str) -> Result<i128, DurationError> {
    let err = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err(err("empty"));
    }
    let mut rest = body;
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(err("expected a number"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if fraction.contains('.') {
            return Err(err("more than one decimal point"));
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("number too large"))?
        };
        let mut value = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| err("number too large"))?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            value += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(|| err("number too large"))?;
        rest = after;
    }
    if total > i128::from(i64::MAX) {
        return Err(err("number too large"));
    }
    Ok(if negative { -total } else { total })
}

/// An unsigned Go duration (a negative one is refused).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_duration_nanos(text)?;
    let nanos = u64::try_from(nanos).map_err(|_| DurationError {
        text: text.to_owned(),
        reason: "negative",
    })?;
    Ok(Duration::from_nanos(nanos))
}

/// The duration as Go's `time.Duration.String` writes it.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    fn with_fraction(whole: u128, fraction: u128, digits: usize) -> String {
        if fraction == 0 {
            return whole.to_string();
        }
        let fraction = format!("{fraction:0digits$}");
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", with_fraction(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", with_fraction(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let seconds_total = nanos / 1_000_000_000;
    let seconds = with_fraction(seconds_total % 60, nanos % 1_000_000_000, 9);
    let minutes = (seconds_total / 60) % 60;
    let hours = seconds_total / 3600;
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

pub(crate) fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_go_duration(*duration))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Nanos(n) => Ok(Duration::from_nanos(n)),
        Raw::Text(t) => parse_go_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(1500), "1.5µs"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_secs(86400), "24h0m0s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_go_duration(d), text);
            assert_eq!(parse_go_duration(text), Ok(d), "{text} round-trips");
        }
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration_nanos("-1s"), Ok(-1_000_000_000));
        for bad in ["", "5", "5x", "m", "1.s.", "-5m", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} must fail");
        }
    }
}
