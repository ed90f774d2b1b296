//! The agent's log lines for `/v1/agent/monitor` and `tribune monitor`: a tracing layer that hands
//! each event, formatted as Consul's agent writes its lines (text or JSON), to whoever is streaming.
//!
//! `tribune agent` installs [`monitor_layer`] in its subscriber; an embedder who wants the monitor
//! endpoint to stream adds it to theirs. Without it the endpoint stays open and streams nothing.
//! The layer sees only what the subscriber's filter lets through, so a monitor asking for a lower
//! level than the agent's `log_level` gets the agent's level. It is not a log sink of its own: lines
//! nobody streams are dropped, and a reader that falls behind by more than [`BACKLOG`] lines skips
//! the oldest and is told how many.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::SystemTime;

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// How many lines a slow monitor reader may fall behind before it skips some.
pub const BACKLOG: usize = 512;

/// One formatted log line, in both of the monitor's formats.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) level: Level,
    /// `2026-12-07T16:00:00.000Z [INFO]  target: message: key=value`.
    pub(crate) text: String,
    /// `{"@level":"info","@message":…,"@module":…,"@timestamp":…, key: value…}`.
    pub(crate) json: String,
}

fn lines() -> &'static broadcast::Sender<LogLine> {
    static LINES: OnceLock<broadcast::Sender<LogLine>> = OnceLock::new();
    LINES.get_or_init(|| broadcast::channel(BACKLOG).0)
}

/// The lines logged from now on.
pub(crate) fn subscribe() -> broadcast::Receiver<LogLine> {
    lines().subscribe()
}

/// The layer that feeds `/v1/agent/monitor`.
pub fn monitor_layer() -> MonitorLayer {
    MonitorLayer { _private: () }
}

/// See [`monitor_layer`].
#[derive(Debug)]
pub struct MonitorLayer {
    _private: (),
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sender = lines();
        // Formatting costs nothing while nobody streams.
        if sender.receiver_count() == 0 {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let level = *metadata.level();
        let timestamp = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let _ = sender.send(LogLine {
            level,
            text: text_line(&timestamp, level, metadata.target(), &fields),
            json: json_line(&timestamp, level, metadata.target(), &fields),
        });
    }
}

/// An event's message and its other fields, in order.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.pairs.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Consul's (hclog's) level names, padded as its text lines are.
fn level_tag(level: Level) -> &'static str {
    match level {
        Level::TRACE => "[TRACE]",
        Level::DEBUG => "[DEBUG]",
        Level::INFO => "[INFO] ",
        Level::WARN => "[WARN] ",
        Level::ERROR => "[ERROR]",
    }
}

fn text_line(timestamp: &str, level: Level, target: &str, fields: &Fields) -> String {
    let mut line = format!("{timestamp} {} {target}: {}", level_tag(level), fields.message);
    for (i, (key, value)) in fields.pairs.iter().enumerate() {
        line.push_str(if i == 0 && !fields.message.is_empty() {
            ": "
        } else {
            " "
        });
        let _ = write!(line, "{key}={value}");
    }
    line
}

fn json_line(timestamp: &str, level: Level, target: &str, fields: &Fields) -> String {
    let mut object = serde_json::Map::new();
    object.insert("@level".into(), level.as_str().to_ascii_lowercase().into());
    object.insert("@message".into(), fields.message.clone().into());
    object.insert("@module".into(), target.into());
    object.insert("@timestamp".into(), timestamp.into());
    for (key, value) in &fields.pairs {
        object.insert(key.clone(), value.clone().into());
    }
    serde_json::Value::Object(object).to_string()
}

/// A monitor's `loglevel`, as Consul reads it (any case; `err` for error); `None` when unknown.
pub(crate) fn parse_level(text: &str) -> Option<Level> {
    match text.to_ascii_lowercase().as_str() {
        "trace" => Some(Level::TRACE),
        "debug" => Some(Level::DEBUG),
        "info" => Some(Level::INFO),
        "warn" | "warning" => Some(Level::WARN),
        "err" | "error" => Some(Level::ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn levels_parse_as_consul_reads_them() {
        assert_eq!(parse_level("INFO"), Some(Level::INFO));
        assert_eq!(parse_level("err"), Some(Level::ERROR));
        assert_eq!(parse_level("warn"), Some(Level::WARN));
        assert_eq!(parse_level("not-a-real-level"), None);
    }

    #[test]
    fn events_reach_a_subscribed_reader_in_both_formats() {
        let subscriber = tracing_subscriber::registry().with(monitor_layer());
        let mut reader = subscribe();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(node = "n1", "member failed");
        });
        let line = reader.try_recv().unwrap();
        assert_eq!(line.level, Level::WARN);
        assert!(
            line.text
                .ends_with("[WARN]  tribune::logs::tests: member failed: node=n1"),
            "{}",
            line.text
        );
        let json: serde_json::Value = serde_json::from_str(&line.json).unwrap();
        assert_eq!(json["@level"], "warn");
        assert_eq!(json["@message"], "member failed");
        assert_eq!(json["node"], "n1");
    }
}
