//! One reading of every series ([`Snapshot`]) and its two renderings: Consul's JSON (go-metrics'
//! in-memory shape: `Timestamp`, `Gauges`, `Points`, `Counters`, `Samples`) and Prometheus's text
//! exposition format 0.0.4 (what Consul answers to `?format=prometheus`).
//!
//! Both renderings read the same [`Snapshot`], so they never disagree. It is not where values are
//! recorded (`mod.rs`, `series.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::names;
use super::series::{QUANTILES, SampleStats};

/// The labels of a series, sorted by name.
pub(crate) type Labels = Vec<(String, String)>;

/// A series' name (without the prefix) and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SeriesId {
    /// Consul's dotted name, without `metrics_prefix`.
    pub(crate) name: String,
    /// Its labels.
    pub(crate) labels: Labels,
}

/// A gauge's value at the reading.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GaugeReading {
    /// Its name (without the prefix).
    pub(crate) name: &'static str,
    /// Its value.
    pub(crate) value: f64,
}

/// Every series at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// When it was read.
    pub(crate) taken_at: SystemTime,
    /// How long the agent had been running: the JSON's rates are per second of it.
    pub(crate) uptime: Duration,
    /// The configured `metrics_prefix`.
    pub(crate) prefix: String,
    /// The host name gauges carry after the prefix (`None` with `disable_hostname`).
    pub(crate) gauge_host: Option<String>,
    /// The gauges.
    pub(crate) gauges: Vec<GaugeReading>,
    /// The counters' totals.
    pub(crate) counters: Vec<(SeriesId, u64)>,
    /// The timing series.
    pub(crate) samples: Vec<(SeriesId, SampleStats)>,
}

/// `/v1/agent/metrics` as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MetricsJson {
    timestamp: String,
    gauges: Vec<GaugeJson>,
    /// go-metrics' key/value points; Tribune records none.
    points: Vec<serde_json::Value>,
    counters: Vec<AggregateJson>,
    samples: Vec<AggregateJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GaugeJson {
    name: String,
    value: f64,
    labels: BTreeMap<String, String>,
}

/// go-metrics' aggregate of a counter or a sample series.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AggregateJson {
    name: String,
    count: u64,
    rate: f64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
    labels: BTreeMap<String, String>,
}

impl AggregateJson {
    fn new(name: String, labels: &Labels, stats: &SampleStats, uptime: Duration) -> Self {
        let count = stats.count;
        let n = count as f64;
        let mean = if count == 0 { 0.0 } else { stats.sum / n };
        // The sample standard deviation, as go-metrics reports it; 0 below two samples.
        let stddev = if count < 2 {
            0.0
        } else {
            ((n * stats.sum_sq - stats.sum * stats.sum) / (n * (n - 1.0)))
                .max(0.0)
                .sqrt()
        };
        let seconds = uptime.as_secs_f64();
        AggregateJson {
            name,
            count,
            rate: if seconds > 0.0 { stats.sum / seconds } else { 0.0 },
            sum: stats.sum,
            min: stats.min,
            max: stats.max,
            mean,
            stddev,
            labels: labels.iter().cloned().collect(),
        }
    }
}

/// A counter's increments, as a sample series for the JSON: every increment is 1, so the count
/// and the sum are both the total.
fn counter_stats(total: u64) -> SampleStats {
    let (sum, unit) = (total as f64, if total == 0 { 0.0 } else { 1.0 });
    SampleStats {
        count: total,
        sum,
        sum_sq: sum,
        min: unit,
        max: unit,
        quantiles: [None; 3],
    }
}

/// The kinds of Prometheus families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// The lines of one Prometheus family.
struct Family {
    kind: Kind,
    help: &'static str,
    lines: Vec<String>,
}

impl Snapshot {
    /// The full dotted name of a series: the prefix, for a gauge the host name, then the name.
    fn full_name(&self, name: &str, gauge: bool) -> String {
        let mut parts: Vec<&str> = Vec::with_capacity(3);
        if !self.prefix.is_empty() {
            parts.push(&self.prefix);
        }
        if gauge && let Some(host) = &self.gauge_host {
            parts.push(host);
        }
        parts.push(name);
        parts.join(".")
    }

    /// Consul's JSON. `Timestamp` is the reading's time in Go's `time.Time` text form.
    pub(crate) fn json(&self) -> MetricsJson {
        let gauges = self
            .gauges
            .iter()
            .map(|gauge| GaugeJson {
                name: self.full_name(gauge.name, true),
                value: gauge.value,
                labels: BTreeMap::new(),
            })
            .collect();
        let counters = self
            .counters
            .iter()
            .map(|(id, total)| {
                AggregateJson::new(
                    self.full_name(&id.name, false),
                    &id.labels,
                    &counter_stats(*total),
                    self.uptime,
                )
            })
            .collect();
        let samples = self
            .samples
            .iter()
            .map(|(id, stats)| {
                AggregateJson::new(self.full_name(&id.name, false), &id.labels, stats, self.uptime)
            })
            .collect();
        MetricsJson {
            timestamp: go_time(self.taken_at),
            gauges,
            points: Vec::new(),
            counters,
            samples,
        }
    }

    /// Prometheus's text format: families sorted by name, each with its `# HELP` and `# TYPE`;
    /// timings are summaries (quantiles 0.5, 0.9, 0.99, `_sum`, `_count`) in milliseconds.
    pub(crate) fn prometheus(&self) -> String {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for gauge in &self.gauges {
            let name = metric_name(&self.full_name(gauge.name, true));
            let line = format!("{name} {}", number(gauge.value));
            family(&mut families, name, Kind::Gauge, gauge.name).push(line);
        }
        for (id, total) in &self.counters {
            let name = metric_name(&self.full_name(&id.name, false));
            let line = format!("{name}{} {total}", label_set(&id.labels, None));
            family(&mut families, name, Kind::Counter, &id.name).push(line);
        }
        for (id, stats) in &self.samples {
            let name = metric_name(&self.full_name(&id.name, false));
            let labels = label_set(&id.labels, None);
            let mut lines: Vec<String> = QUANTILES
                .iter()
                .zip(stats.quantiles)
                .map(|(q, value)| {
                    format!(
                        "{name}{} {}",
                        label_set(&id.labels, Some(("quantile", q.to_string()))),
                        value.map_or_else(|| "NaN".to_owned(), number)
                    )
                })
                .collect();
            lines.push(format!("{name}_sum{labels} {}", number(stats.sum)));
            lines.push(format!("{name}_count{labels} {}", stats.count));
            family(&mut families, name, Kind::Summary, &id.name).extend(lines);
        }
        let mut text = String::new();
        for (name, family) in families {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "# HELP {name} {}", family.help);
            let _ = writeln!(text, "# TYPE {name} {}", family.kind.as_str());
            for line in family.lines {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    }
}

/// The lines of the family `name`, created with its kind and the help of the series `series`.
fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: String,
    kind: Kind,
    series: &str,
) -> &'a mut Vec<String> {
    &mut families
        .entry(name)
        .or_insert_with(|| Family {
            kind,
            help: names::help(series),
            lines: Vec::new(),
        })
        .lines
}

/// A metric name Prometheus accepts: go-metrics' Prometheus sink turns every character outside
/// `[a-zA-Z0-9_:]` into `_` (`consul.raft.apply` → `consul_raft_apply`).
pub(crate) fn metric_name(dotted: &str) -> String {
    let mut name: String = dotted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// `{name="value",…}` (empty without labels), with `extra` last.
fn label_set(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{}=\"{}\"", label_name(name), escape(value)))
        .collect();
    if let Some((name, value)) = extra {
        pairs.push(format!("{name}=\"{}\"", escape(&value)));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value in the text format's spelling (`NaN`, `+Inf`, `-Inf`).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

/// `2026-01-02 03:04:05 +0000 UTC`: how Go prints a UTC time, which go-metrics' JSON carries.
fn go_time(at: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    format!(
        "{} +0000 UTC",
        rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_times_are_spelled_as_prometheus_and_go_do() {
        assert_eq!(metric_name("consul.raft.apply"), "consul_raft_apply");
        assert_eq!(metric_name("consul.http.GET.v1.kv._"), "consul_http_GET_v1_kv__");
        assert_eq!(metric_name("consul.rpc.cross-dc"), "consul_rpc_cross_dc");
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            go_time(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 3_661)),
            "1970-01-02 01:01:01 +0000 UTC"
        );
    }
}
