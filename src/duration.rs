//! Durations written the way Go's `time.ParseDuration` reads them, since Consul's clients produce them
//! with Go (or imitate Go): `10s`, `1m30s`, `1.5h`, `100ms`, `1.8982439041137695s` (Patroni), `+5s`.
//!
//! A duration is an optional sign and one or more `<number><unit>` terms; a number has any count of
//! digits before and after an optional decimal point (at least one digit in all); units are `ns`, `us`,
//! `µs`, `μs`, `ms`, `s`, `m`, `h`; a bare `0` needs no unit. Fractions finer than a nanosecond are
//! dropped with Go's own arithmetic (a float64 product, truncated), so the same text gives the same
//! nanoseconds as in Consul. Tribune has no use for a negative duration, so one is refused, as is a
//! total beyond Go's limit (2^63 - 1 ns, about 292 years).

use std::time::Duration;

/// Why a text is not a duration; every variant carries the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not of the form `[-+]?(<number><unit>)+` (empty, a number without digits, a stray character).
    #[error("invalid duration {input:?}")]
    Invalid {
        /// The text given.
        input: String,
    },
    /// A number is not followed by a unit (`"3"`, `"1h30"`).
    #[error("missing unit in duration {input:?}")]
    MissingUnit {
        /// The text given.
        input: String,
    },
    /// A unit other than ns, us, µs, ms, s, m, h (`"1d"`).
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The text given.
        input: String,
    },
    /// Longer than 2^63 - 1 nanoseconds.
    #[error("duration {input:?} is too long (at most 2562047h47m16.854775807s)")]
    Overflow {
        /// The text given.
        input: String,
    },
    /// Below zero.
    #[error("duration {input:?} is negative")]
    Negative {
        /// The text given.
        input: String,
    },
}

/// Go's ceiling for a sum of terms before the sign is applied (`-2^63 ns` is Go's least duration).
const LIMIT: u64 = 1 << 63;

/// Parses a Go duration; see the module documentation for the syntax.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid {
        input: input.to_owned(),
    };
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };
    let (negative, mut rest) = match (input.strip_prefix('-'), input.strip_prefix('+')) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, whole_digits, after) = leading_int(rest).ok_or_else(overflow)?;
        rest = after;
        let mut fraction = Fraction::default();
        if let Some(after_point) = rest.strip_prefix('.') {
            let (parsed, after) = leading_fraction(after_point);
            fraction = parsed;
            rest = after;
        }
        if whole_digits == 0 && fraction.digits == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit {
                input: input.to_owned(),
            });
        }
        let (unit_text, after) = rest.split_at(unit_len);
        rest = after;
        let unit = unit_nanos(unit_text).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit_text.to_owned(),
            input: input.to_owned(),
        })?;
        if whole > LIMIT / unit {
            return Err(overflow());
        }
        let mut term = whole * unit;
        if fraction.value > 0 {
            // Go's own formula: the float product is what makes `0.3333333333333333333h` 20m, and a
            // fraction of an hour needs at most 3.6e12 ns, well inside a float's exact integers.
            let nanos = (fraction.value as f64 * (unit as f64 / fraction.scale)) as u64;
            term = term
                .checked_add(nanos)
                .filter(|t| *t <= LIMIT)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(term)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(overflow)?;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative {
            input: input.to_owned(),
        });
    }
    if total > LIMIT - 1 {
        return Err(overflow());
    }
    Ok(Duration::from_nanos(total))
}

/// Writes a duration as Go's `Duration.String` does: `0s`, `1.5µs`, `250ms`, `1m30s`, `24h0m0s`.
pub fn format_go_duration(duration: Duration) -> String {
    const SECOND: u128 = 1_000_000_000;
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < SECOND {
        let (unit, per) = match nanos {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("\u{b5}s", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(nanos, per));
    }
    let whole_seconds = nanos / SECOND;
    let (hours, minutes) = (whole_seconds / 3600, whole_seconds / 60 % 60);
    let seconds = decimal(whole_seconds % 60 * SECOND + nanos % SECOND, SECOND);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / per` in decimal, without trailing zeros; `per` is a power of ten.
fn decimal(value: u128, per: u128) -> String {
    let (whole, fraction) = (value / per, value % per);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Nanoseconds per unit; `µ` is U+00B5 (micro sign) and `μ` U+03BC (Greek mu), both as Go has them.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// The leading `[0-9]*` of `text` as a number, how many digits it had, and the rest; `None` past 2^63.
fn leading_int(text: &str) -> Option<(u64, usize, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = text.split_at(digits);
    let mut value: u64 = 0;
    for digit in number.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))
            .filter(|v| *v <= LIMIT)?;
    }
    Some((value, digits, rest))
}

/// The digits after a decimal point: `value / scale` is the fraction.
#[derive(Debug, Default)]
struct Fraction {
    value: u64,
    scale: f64,
    digits: usize,
}

/// The leading `[0-9]*` of `text` as a fraction. Digits past what a u64 holds are consumed but no
/// longer counted: they are far below a nanosecond whatever the unit.
fn leading_fraction(text: &str) -> (Fraction, &str) {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = text.split_at(digits);
    let mut fraction = Fraction {
        value: 0,
        scale: 1.0,
        digits,
    };
    for digit in number.bytes() {
        let next = fraction
            .value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .filter(|v| *v <= LIMIT);
        match next {
            Some(value) => {
                fraction.value = value;
                fraction.scale *= 10.0;
            }
            None => break,
        }
    }
    (fraction, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NS: u64 = 1;
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;

    /// The accepted rows of Go's own `parseDurationTests` (time_test.go) that are not negative.
    #[test]
    fn go_accepts() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12\u{b5}s", 12 * US),
            ("12\u{3bc}s", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", (1 << 63) - 1),
            ("9223372036854775.807us", (1 << 63) - 1),
            ("9223372036s854ms775us807ns", (1 << 63) - 1),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
            ("1.5h", 90 * M),
            // Patroni's `wait`: digits below a nanosecond are dropped.
            ("1.8982439041137695s", 1_898_243_904),
            ("0.0000000001s", 0),
        ];
        for (text, nanos) in table {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_nanos(*nanos)),
                "{text}"
            );
        }
    }

    /// The refused rows of Go's table, and Go's accepted negative rows, which Tribune refuses.
    #[test]
    fn go_refuses() {
        let invalid = [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "hello \u{ff}ff world",
            "1h30",
            " 5s",
            "5s ",
            "5 s",
            "1e3s",
            "0x10s",
            "--5s",
        ];
        for text in invalid {
            let error = parse_go_duration(text).unwrap_err();
            assert!(
                matches!(
                    error,
                    DurationError::Invalid { .. }
                        | DurationError::MissingUnit { .. }
                        | DurationError::UnknownUnit { .. }
                ),
                "{text:?}: {error:?}"
            );
            assert!(error.to_string().contains(&format!("{text:?}")), "{error}");
        }
        assert_eq!(
            parse_go_duration("1d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "1d".into()
            })
        );
        assert!(matches!(
            parse_go_duration("3"),
            Err(DurationError::MissingUnit { .. })
        ));
        for text in [
            "9223372036854775810ns",
            "9223372036854775808ns",
            "9223372036s854ms775us808ns",
            "9223372036854775.808us",
            "9223372037s",
            "3000000h",
            "99999999999999999999999s",
            "2562047h47m16.854775808s",
        ] {
            assert_eq!(
                parse_go_duration(text),
                Err(DurationError::Overflow { input: text.into() }),
                "{text}"
            );
        }
        for text in ["-5s", "-2m3.4s", "-9223372036854775808ns", "-1ns", "-.5s"] {
            assert_eq!(
                parse_go_duration(text),
                Err(DurationError::Negative { input: text.into() }),
                "{text}"
            );
        }
    }

    #[test]
    fn formats_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5\u{b5}s"),
            (250 * MS, "250ms"),
            (1_234_567, "1.234567ms"),
            (S, "1s"),
            (90 * S, "1m30s"),
            (10 * S + 5 * MS, "10.005s"),
            (H, "1h0m0s"),
            (24 * H, "24h0m0s"),
            ((1 << 63) - 1, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(format_go_duration(Duration::from_nanos(nanos)), text);
            assert_eq!(parse_go_duration(text), Ok(Duration::from_nanos(nanos)), "{text}");
        }
    }

    proptest! {
        /// What Go writes, Go reads back to the same nanosecond.
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..(1 << 63)) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_go_duration(&text);
        }

        #[test]
        fn never_panics_on_duration_like_text(text in "[-+]?([0-9.]{0,25}(ns|us|µs|ms|s|m|h|d|)){1,4}") {
            let _ = parse_go_duration(&text);
        }

        /// Whole numbers of each unit round-trip, and a sum of terms is the sum of the parts.
        #[test]
        fn terms_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1_000_000, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_nanos(h * H + m * M + s * S + ms * MS);
            prop_assert_eq!(parse_go_duration(&text), Ok(expected));
        }
    }
}
