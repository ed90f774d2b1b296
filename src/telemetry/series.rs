//! What one series holds: the registry's storage of counters (an atomic count) and of timing
//! distributions ([`Distribution`]: totals for the JSON, a quantile sketch for Prometheus).
//!
//! It is not the naming of series (`names.rs`) nor their rendering (`render.rs`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use metrics::{HistogramFn, Key};
use metrics_util::registry::Storage;
use metrics_util::storage::Summary;
use parking_lot::Mutex;

/// The quantiles a Prometheus summary reports, as go-metrics' Prometheus sink does.
pub(crate) const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// The quantiles cover the samples of the current window and the one before it: a scrape every
/// minute sees the last one to two minutes, and a slow minute long ago no longer weighs on them.
const WINDOW: Duration = Duration::from_secs(60);

/// The sketch's relative accuracy (1 %) and bounds: timings from a microsecond to hours fit in a
/// few hundred buckets, a few kilobytes per series.
const SKETCH_ALPHA: f64 = 0.01;
const SKETCH_MAX_BUCKETS: u32 = 2048;
const SKETCH_MIN_VALUE: f64 = 1e-3;

fn sketch() -> Summary {
    Summary::new(SKETCH_ALPHA, SKETCH_MAX_BUCKETS, SKETCH_MIN_VALUE)
}

/// The registry's storage: counters and gauges are atomics, histograms are [`Distribution`]s.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SeriesStorage;

impl Storage<Key> for SeriesStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<Distribution>;

    fn counter(&self, _key: &Key) -> Self::Counter {
        Arc::default()
    }

    fn gauge(&self, _key: &Key) -> Self::Gauge {
        Arc::default()
    }

    fn histogram(&self, _key: &Key) -> Self::Histogram {
        Arc::new(Distribution::new(Instant::now()))
    }
}

/// The samples of one timing series (milliseconds): totals since the agent started, and the
/// recent samples' sketch for quantiles. One short lock per sample; nothing is kept per sample.
pub(crate) struct Distribution {
    inner: Mutex<Totals>,
}

struct Totals {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    current: Summary,
    previous: Summary,
    window_start: Instant,
}

impl Totals {
    /// Moves to the window `now` is in: the current sketch becomes the previous one, or both are
    /// emptied when a whole window passed without a sample.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return;
        }
        self.previous = if elapsed < 2 * WINDOW {
            std::mem::replace(&mut self.current, sketch())
        } else {
            self.current = sketch();
            sketch()
        };
        self.window_start = now;
    }
}

/// One reading of a [`Distribution`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SampleStats {
    /// Samples since the agent started.
    pub(crate) count: u64,
    /// Their sum.
    pub(crate) sum: f64,
    /// The sum of their squares, for the standard deviation.
    pub(crate) sum_sq: f64,
    /// The smallest (0 without samples).
    pub(crate) min: f64,
    /// The largest (0 without samples).
    pub(crate) max: f64,
    /// [`QUANTILES`] over the recent windows; `None` when they hold no sample.
    pub(crate) quantiles: [Option<f64>; 3],
}

impl Distribution {
    fn new(now: Instant) -> Self {
        Distribution {
            inner: Mutex::new(Totals {
                count: 0,
                sum: 0.0,
                sum_sq: 0.0,
                min: 0.0,
                max: 0.0,
                current: sketch(),
                previous: sketch(),
                window_start: now,
            }),
        }
    }

    /// Adds a sample taken at `now`; a value that is not finite is dropped.
    pub(crate) fn record_at(&self, value: f64, now: Instant) {
        if !value.is_finite() {
            return;
        }
        let mut totals = self.inner.lock();
        totals.roll(now);
        if totals.count == 0 {
            totals.min = value;
            totals.max = value;
        } else {
            totals.min = totals.min.min(value);
            totals.max = totals.max.max(value);
        }
        totals.count += 1;
        totals.sum += value;
        totals.sum_sq += value * value;
        totals.current.add(value);
    }

    /// The totals, and the quantiles of the windows `now` still covers.
    pub(crate) fn stats_at(&self, now: Instant) -> SampleStats {
        let mut totals = self.inner.lock();
        totals.roll(now);
        let mut recent = totals.previous.clone();
        // Both sketches share one configuration, so the merge cannot fail; if it did, the
        // current window alone still gives quantiles.
        if recent.merge(&totals.current).is_err() {
            recent = totals.current.clone();
        }
        SampleStats {
            count: totals.count,
            sum: totals.sum,
            sum_sq: totals.sum_sq,
            min: totals.min,
            max: totals.max,
            quantiles: QUANTILES.map(|q| recent.quantile(q)),
        }
    }
}

impl HistogramFn for Distribution {
    fn record(&self, value: f64) {
        self.record_at(value, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_cover_everything_and_quantiles_the_recent_windows() {
        let start = Instant::now();
        let distribution = Distribution::new(start);
        for value in 1..=100 {
            distribution.record_at(f64::from(value), start);
        }
        distribution.record_at(f64::NAN, start);
        let stats = distribution.stats_at(start);
        assert_eq!(stats.count, 100);
        assert_eq!((stats.min, stats.max, stats.sum), (1.0, 100.0, 5050.0));
        let median = stats.quantiles[0].unwrap();
        assert!((49.0..=52.0).contains(&median), "{median}");
        let p99 = stats.quantiles[2].unwrap();
        assert!((97.0..=101.0).contains(&p99), "{p99}");

        // One window later the samples are the previous window's: still in the quantiles.
        let later = start + WINDOW + Duration::from_secs(1);
        distribution.record_at(1000.0, later);
        let stats = distribution.stats_at(later);
        assert_eq!(stats.count, 101);
        assert!(stats.quantiles[2].unwrap() > 90.0);

        // Two quiet windows later they are gone from the quantiles, not from the totals.
        let quiet = later + 2 * WINDOW;
        let stats = distribution.stats_at(quiet);
        assert_eq!(stats.quantiles, [None, None, None]);
        assert_eq!((stats.count, stats.max), (101, 1000.0));
    }
}
