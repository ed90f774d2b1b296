//! The agent's log lines for `/v1/agent/monitor` and `tribune monitor`: a tracing layer that hands
//! each event, formatted as Consul's agent writes its lines (text or JSON), to whoever is streaming.
//!
//! `tribune agent` installs [`monitor_layer`] in its subscriber beside its own outputs, each with its
//! own filter; an embedder who wants the monitor endpoint to stream adds it to theirs. Without it the
//! endpoint stays open and streams nothing. The layer's filter follows the monitors: it lets through
//! the most verbose level one of them asks for, and nothing while none streams, so a monitor at
//! `debug` sees debug lines from an agent that writes only `info`.
//!
//! It is not a log sink of its own: lines nobody streams are dropped, and a reader that falls behind
//! by more than [`BACKLOG`] lines skips the oldest and is told how many.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context, Filter, Layer as _};
use tracing_subscriber::registry::LookupSpan;

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

/// How many monitors stream at each level, most verbose last (error, warn, info, debug, trace).
static STREAMING: Mutex<[usize; 5]> = Mutex::new([0; 5]);

fn level_slot(level: Level) -> usize {
    match level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

const SLOT_FILTERS: [LevelFilter; 5] = [
    LevelFilter::ERROR,
    LevelFilter::WARN,
    LevelFilter::INFO,
    LevelFilter::DEBUG,
    LevelFilter::TRACE,
];

/// The most verbose level a monitor streams now, as its slot + 1 (0: none streams). Kept apart from
/// the counts so that the filter, asked at every event, reads one atomic instead of taking a lock.
static STREAMED: AtomicUsize = AtomicUsize::new(0);

/// The most verbose level a monitor streams now; `OFF` while none does.
fn streamed_level() -> LevelFilter {
    match STREAMED.load(Ordering::Acquire).checked_sub(1) {
        Some(slot) => SLOT_FILTERS.get(slot).copied().unwrap_or(LevelFilter::OFF),
        None => LevelFilter::OFF,
    }
}

/// Counts a monitor at `level` in or out. When the most verbose level streamed changes, tracing is
/// told to ask the filters again, since it caches the most verbose level any of them may enable.
fn count_monitor(level: Level, delta: isize) {
    let changed = {
        let mut counts = STREAMING.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut counts[level_slot(level)];
        *slot = slot.saturating_add_signed(delta);
        let streamed = counts
            .iter()
            .rposition(|count| *count > 0)
            .map_or(0, |slot| slot + 1);
        STREAMED.swap(streamed, Ordering::AcqRel) != streamed
    };
    if changed {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// A monitor's place in the count of what is streamed; leaving it (on drop) lowers the level again.
#[derive(Debug)]
pub(crate) struct Streaming {
    level: Level,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        count_monitor(self.level, -1);
    }
}

/// The lines logged from now on, with the monitor counted in at `level` until the guard drops.
/// Lines of every streamed level arrive; the reader keeps those at or above its own.
pub(crate) fn subscribe(level: Level) -> (broadcast::Receiver<LogLine>, Streaming) {
    let receiver = lines().subscribe();
    count_monitor(level, 1);
    (receiver, Streaming { level })
}

/// The layer that feeds `/v1/agent/monitor`, with its filter (see the module's documentation).
pub fn monitor_layer<S>() -> Filtered<MonitorLayer, MonitorFilter, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    MonitorLayer { _private: () }.with_filter(MonitorFilter { _private: () })
}

/// See [`monitor_layer`].
#[derive(Debug)]
pub struct MonitorLayer {
    _private: (),
}

/// Lets through the levels the monitors now streaming ask for. See [`monitor_layer`].
#[derive(Debug)]
pub struct MonitorFilter {
    _private: (),
}

impl<S> Filter<S> for MonitorFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        *metadata.level() <= streamed_level()
    }

    fn callsite_enabled(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // Monitors come and go: ask at every event rather than caching an answer.
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(streamed_level())
    }
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
        let _serial = serial();
        let (mut reader, _streaming) = subscribe(Level::WARN);
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

    #[test]
    fn the_filter_follows_the_most_verbose_monitor() {
        let _serial = serial();
        assert_eq!(
            streamed_level(),
            LevelFilter::OFF,
            "nothing while no monitor streams"
        );
        let (_reader, warn) = subscribe(Level::WARN);
        let (_reader, debug) = subscribe(Level::DEBUG);
        assert_eq!(streamed_level(), LevelFilter::DEBUG);
        let (_reader, trace) = subscribe(Level::TRACE);
        assert_eq!(streamed_level(), LevelFilter::TRACE);
        drop(trace);
        assert_eq!(streamed_level(), LevelFilter::DEBUG);
        drop(debug);
        assert_eq!(streamed_level(), LevelFilter::WARN);
        drop(warn);
        assert_eq!(streamed_level(), LevelFilter::OFF);
    }

    #[test]
    fn a_debug_monitor_sees_debug_lines_that_the_output_filter_drops() {
        use tracing_subscriber::Layer as _;
        let written = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = std::sync::Arc::clone(&written);
        let output = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Writer(std::sync::Arc::clone(&sink)))
            .with_filter(LevelFilter::INFO);
        let subscriber = tracing_subscriber::registry().with(output).with(monitor_layer());
        let _serial = serial();
        let (mut reader, _streaming) = subscribe(Level::DEBUG);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("probe sent");
            tracing::trace!("too verbose for any reader");
        });
        let line = reader.try_recv().unwrap();
        assert!(line.text.ends_with("probe sent"), "{}", line.text);
        assert!(reader.try_recv().is_err(), "no monitor streams trace lines");
        let written = written.lock().unwrap();
        assert!(written.is_empty(), "{}", String::from_utf8_lossy(&written));
    }

    /// The tests that count monitors in, one at a time: the count is process-wide.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: Mutex<()> = Mutex::new(());
        SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `MakeWriter` into shared memory.
    struct Writer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
