//! Vivaldi network coordinates, as Serf computes them: each member places itself in a small
//! Euclidean space plus a height so that the distance between two members' coordinates estimates
//! the round-trip time between them.
//!
//! The model (Dabek et al., "Vivaldi", SIGCOMM 2004, with the refinements of Ledlie et al.,
//! "Network Coordinates in the Wild", NSDI 2007, that Serf adopted):
//! - a coordinate is an 8-dimensional vector, a *height* (the latency of the member's own access
//!   link, which no direction can shorten), an *error* estimate and an *adjustment*;
//! - the estimated RTT between `a` and `b` is `‖a.vec − b.vec‖ + a.height + b.height`, plus both
//!   adjustments when that sum stays positive;
//! - each observed RTT to a peer moves the local coordinate along the line to the peer's, by a step
//!   weighted by how sure this member is relative to the peer (`error`), and updates the error as a
//!   moving average of the relative misprediction;
//! - the adjustment is the mean of the last few residuals (`rtt − raw distance`) halved, which
//!   absorbs what the Euclidean model cannot fit for close neighbours;
//! - a weak pull toward the origin (gravity) stops the whole system from drifting away;
//! - each peer's RTT samples pass a median filter first, so a single delayed packet does not fling
//!   the coordinate.
//!
//! Everything is in seconds, as in Serf and Consul's JSON. The client is deterministic: it reads
//! no clock (the caller measures the RTT) and its only "random" choice — a direction to separate two
//! members whose coordinates coincide — comes from a generator seeded by the caller.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Below this, two coordinates are considered to be on top of each other and a distance or RTT is
/// treated as this value, which keeps every division finite.
const ZERO_THRESHOLD: f64 = 1.0e-6;

/// Longest RTT accepted as a sample: anything longer is a measurement artefact (a paused process,
/// a clock jump), not a network property, and would throw the coordinate far off.
pub const MAX_RTT: Duration = Duration::from_secs(10);

/// Dimensions of the Euclidean part of a coordinate (Serf's and Consul's 8).
pub const DIMENSIONALITY: usize = 8;

/// A member's network coordinate, in Consul's JSON shape:
/// `{"Vec":[8 numbers],"Error":1.5,"Adjustment":0,"Height":1e-05}` (seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// Position in the Euclidean part of the space.
    #[serde(rename = "Vec")]
    pub vec: Vec<f64>,
    /// How unsure the member is of its position (moving average of relative error); starts at the
    /// maximum, 1.5.
    #[serde(rename = "Error")]
    pub error: f64,
    /// Correction added to distances (may be negative), fitted from recent residuals.
    #[serde(rename = "Adjustment")]
    pub adjustment: f64,
    /// Latency of the member's own link to the core, added to every distance.
    #[serde(rename = "Height")]
    pub height: f64,
}

impl Coordinate {
    /// The starting coordinate under `config`: at the origin, with the maximum error and the
    /// minimum height.
    pub fn new(config: &CoordinateConfig) -> Coordinate {
        Coordinate {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Checks that every component is a finite number.
    pub fn check_finite(&self) -> Result<(), CoordinateError> {
        if self.vec.iter().any(|x| !x.is_finite()) {
            return Err(CoordinateError::NotFinite { field: "Vec" });
        }
        for (field, value) in [
            ("Error", self.error),
            ("Adjustment", self.adjustment),
            ("Height", self.height),
        ] {
            if !value.is_finite() {
                return Err(CoordinateError::NotFinite { field });
            }
        }
        Ok(())
    }

    /// Checks that the coordinate is finite and has `dimensionality` dimensions: what a coordinate
    /// received from elsewhere (a peer, a JSON body) must pass before it is compared with ours.
    pub fn validate(&self, dimensionality: usize) -> Result<(), CoordinateError> {
        if self.vec.len() != dimensionality {
            return Err(CoordinateError::DimensionMismatch {
                expected: dimensionality,
                got: self.vec.len(),
            });
        }
        self.check_finite()
    }

    /// Whether both coordinates have the same number of dimensions (only those can be compared).
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// The estimated RTT to `other`, in seconds: Euclidean distance plus both heights, plus both
    /// adjustments when that keeps it positive. Meaningless (but finite for finite input) when the
    /// dimensions differ; check [`Coordinate::is_compatible_with`] first.
    pub fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance_secs(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { raw }
    }

    /// [`Coordinate::distance_secs`] as a duration; zero for a non-finite or negative value
    /// (possible only with a coordinate that fails [`Coordinate::validate`]).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        secs_to_duration(self.distance_secs(other))
    }

    /// Distance without the adjustments.
    fn raw_distance_secs(&self, other: &Coordinate) -> f64 {
        magnitude(self.vec.iter().zip(&other.vec).map(|(a, b)| a - b)) + self.height + other.height
    }
}

/// A duration from seconds, saturating: zero for a negative or non-finite value, [`Duration::MAX`]
/// beyond it.
fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_finite() && secs > 0.0 {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

fn magnitude(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// Tuning of the Vivaldi client. [`Default`] is Serf's (and so Consul's) configuration.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CoordinateConfig {
    /// Dimensions of the Euclidean part (8).
    pub dimensionality: usize,
    /// Largest error a coordinate may claim, and the error of a fresh one (1.5).
    pub vivaldi_error_max: f64,
    /// Weight of a new sample in the error's moving average (Vivaldi's `ce`, 0.25).
    pub vivaldi_ce: f64,
    /// Step size of a move (Vivaldi's `cc`, 0.25).
    pub vivaldi_cc: f64,
    /// Residuals averaged into the adjustment; 0 turns adjustments off (20).
    pub adjustment_window_size: usize,
    /// Smallest height, in seconds (10 µs).
    pub height_min: f64,
    /// RTT samples per peer in the median filter (3).
    pub latency_filter_size: usize,
    /// Gravity's reach, in seconds: the pull toward the origin is `(distance / rho)²` (150).
    pub gravity_rho: f64,
}

impl Default for CoordinateConfig {
    fn default() -> Self {
        CoordinateConfig {
            dimensionality: DIMENSIONALITY,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

impl CoordinateConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), CoordinateError> {
        let bad =
            |field: &'static str, reason: &'static str| Err(CoordinateError::InvalidConfig { field, reason });
        if self.dimensionality == 0 || self.dimensionality > 255 {
            return bad("dimensionality", "must be 1..=255");
        }
        if !(self.vivaldi_error_max.is_finite() && self.vivaldi_error_max > 0.0) {
            return bad("vivaldi_error_max", "must be a positive number");
        }
        for (field, v) in [("vivaldi_ce", self.vivaldi_ce), ("vivaldi_cc", self.vivaldi_cc)] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return bad(field, "must be in (0, 1]");
            }
        }
        if !(self.height_min.is_finite() && self.height_min >= 0.0) {
            return bad("height_min", "must be a non-negative number");
        }
        if self.latency_filter_size == 0 {
            return bad("latency_filter_size", "must be at least 1");
        }
        if !(self.gravity_rho.is_finite() && self.gravity_rho > 0.0) {
            return bad("gravity_rho", "must be a positive number");
        }
        Ok(())
    }
}

/// Why a coordinate, a sample or a configuration was refused. Nothing changes when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinateError {
    /// The coordinate has another number of dimensions than ours.
    #[error("coordinate has {got} dimensions, expected {expected}")]
    DimensionMismatch {
        /// Ours.
        expected: usize,
        /// Theirs.
        got: usize,
    },
    /// A component is NaN or infinite.
    #[error("coordinate field {field} is not a finite number")]
    NotFinite {
        /// `Vec`, `Error`, `Adjustment` or `Height`.
        field: &'static str,
    },
    /// The RTT sample is longer than [`MAX_RTT`].
    #[error("round-trip time {rtt:?} is longer than the {max:?} accepted")]
    RttOutOfRange {
        /// The sample.
        rtt: Duration,
        /// The limit.
        max: Duration,
    },
    /// A configuration field is unusable.
    #[error("invalid coordinate config {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Counters of a [`CoordinateClient`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinateStats {
    /// Samples applied.
    pub updates: u64,
    /// Samples refused (bad coordinate or RTT).
    pub rejected: u64,
    /// Times the local coordinate became non-finite and was started over.
    pub resets: u64,
}

/// The local member's coordinate and what it needs to improve it from RTT samples.
#[derive(Clone, Debug)]
pub struct CoordinateClient {
    config: CoordinateConfig,
    coord: Coordinate,
    origin: Coordinate,
    /// Ring of the last residuals, for the adjustment.
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
    /// The last few RTT samples (seconds) to each peer, oldest first.
    latency_filters: HashMap<String, VecDeque<f64>>,
    /// State of the direction generator (SplitMix64), seeded by the caller.
    direction_state: u64,
    stats: CoordinateStats,
}

impl CoordinateClient {
    /// A client at the origin. `seed` drives the only arbitrary choice the algorithm makes, the
    /// direction in which to push apart two coordinates that coincide (every fresh one does):
    /// members should use different seeds, or they would all move the same way at first.
    pub fn new(config: CoordinateConfig, seed: u64) -> Result<CoordinateClient, CoordinateError> {
        config.validate()?;
        let coord = Coordinate::new(&config);
        Ok(CoordinateClient {
            origin: coord.clone(),
            coord,
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            adjustment_index: 0,
            latency_filters: HashMap::new(),
            direction_state: seed,
            stats: CoordinateStats::default(),
            config,
        })
    }

    /// The local coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// The configuration.
    pub fn config(&self) -> &CoordinateConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> CoordinateStats {
        self.stats
    }

    /// Replaces the local coordinate, e.g. with one saved before a restart, so that the member
    /// does not start over from the origin.
    pub fn set_coordinate(&mut self, coord: Coordinate) -> Result<(), CoordinateError> {
        coord.validate(self.config.dimensionality)?;
        self.coord = coord;
        Ok(())
    }

    /// Drops the RTT samples kept for `node` (it left or was forgotten).
    pub fn forget_node(&mut self, node: &str) {
        self.latency_filters.remove(node);
    }

    /// Keeps only the RTT samples of the peers for which `keep` holds.
    pub fn retain_nodes(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.latency_filters.retain(|name, _| keep(name));
    }

    /// The estimated RTT from the local coordinate to `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.coord.distance_to(other)
    }

    /// Applies one observation: `rtt` was measured to `node`, whose coordinate is `other`.
    /// Returns the new local coordinate. An incompatible or non-finite coordinate, or an RTT longer
    /// than [`MAX_RTT`], is refused and changes nothing.
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, CoordinateError> {
        let checked = other.validate(self.config.dimensionality).and_then(|()| {
            if rtt > MAX_RTT {
                Err(CoordinateError::RttOutOfRange { rtt, max: MAX_RTT })
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            self.stats.rejected += 1;
            return Err(e);
        }
        let rtt = self.filtered_rtt(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if self.coord.check_finite().is_err() {
            self.stats.resets += 1;
            self.coord = Coordinate::new(&self.config);
        }
        self.stats.updates += 1;
        Ok(&self.coord)
    }

    /// Records a sample and returns the median of the peer's recent samples.
    fn filtered_rtt(&mut self, node: &str, rtt: f64) -> f64 {
        let size = self.config.latency_filter_size;
        let samples = self.latency_filters.entry(node.to_owned()).or_default();
        samples.push_back(rtt);
        while samples.len() > size {
            samples.pop_front();
        }
        let mut sorted: Vec<f64> = samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(rtt)
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        let rtt = rtt.max(ZERO_THRESHOLD);
        let dist = self.coord.distance_secs(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        // The less sure we are compared with the peer, the more we move and the more this sample
        // counts in our error.
        let weight = self.coord.error / total_error;
        let ce = self.config.vivaldi_ce * weight;
        self.coord.error =
            (ce * wrongness + self.coord.error * (1.0 - ce)).min(self.config.vivaldi_error_max);
        let force = self.config.vivaldi_cc * weight * (rtt - dist);
        self.apply_force(force, &other.vec, other.height);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let window = self.adjustment_samples.len();
        if window == 0 {
            return;
        }
        let residual = rtt - self.coord.raw_distance_secs(other);
        if let Some(slot) = self.adjustment_samples.get_mut(self.adjustment_index) {
            *slot = residual;
        }
        self.adjustment_index = (self.adjustment_index + 1) % window;
        // Half: the other end applies its own adjustment to the same distance.
        self.coord.adjustment = self.adjustment_samples.iter().sum::<f64>() / (2.0 * window as f64);
    }

    fn update_gravity(&mut self) {
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        let origin_vec = std::mem::take(&mut self.origin.vec);
        self.apply_force(force, &origin_vec, self.origin.height);
        self.origin.vec = origin_vec;
    }

    /// Moves the local coordinate by `force` seconds away from the point (`vec`, `height`)
    /// (toward it when negative); the height takes its share of the move in proportion to how
    /// much of the distance the heights make up.
    fn apply_force(&mut self, force: f64, vec: &[f64], height: f64) {
        let (unit, mag) = self.unit_vector_from(vec);
        for (x, u) in self.coord.vec.iter_mut().zip(&unit) {
            *x += u * force;
        }
        if mag > ZERO_THRESHOLD {
            let h = self.coord.height;
            self.coord.height = ((h + height) * force / mag + h).max(self.config.height_min);
        }
    }

    /// The unit vector from `vec` toward the local coordinate, and the distance between them.
    /// When they coincide the distance is 0 and the direction is drawn from the seeded generator.
    fn unit_vector_from(&mut self, vec: &[f64]) -> (Vec<f64>, f64) {
        let diff: Vec<f64> = self.coord.vec.iter().zip(vec).map(|(a, b)| a - b).collect();
        let mag = magnitude(diff.iter().copied());
        if mag > ZERO_THRESHOLD {
            return (diff.into_iter().map(|x| x / mag).collect(), mag);
        }
        let dims = self.coord.vec.len();
        let random: Vec<f64> = (0..dims).map(|_| self.next_unit() - 0.5).collect();
        let rmag = magnitude(random.iter().copied());
        if rmag > ZERO_THRESHOLD {
            return (random.into_iter().map(|x| x / rmag).collect(), 0.0);
        }
        let mut axis = vec![0.0; dims];
        if let Some(first) = axis.first_mut() {
            *first = 1.0;
        }
        (axis, 0.0)
    }

    /// A number in [0, 1) from SplitMix64: tiny, fully determined by the seed, and good enough to
    /// pick a direction.
    fn next_unit(&mut self) -> f64 {
        self.direction_state = self.direction_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.direction_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: f64) -> Duration {
        Duration::from_secs_f64(x / 1000.0)
    }

    fn client(seed: u64) -> CoordinateClient {
        CoordinateClient::new(CoordinateConfig::default(), seed).unwrap()
    }

    #[test]
    fn fresh_coordinate_has_consuls_json_shape() {
        let c = Coordinate::new(&CoordinateConfig::default());
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "Error": 1.5,
                "Adjustment": 0.0,
                "Height": 1.0e-5
            })
        );
        let back: Coordinate = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn distance_adds_heights_and_positive_adjustments() {
        let mut a = Coordinate::new(&CoordinateConfig::default());
        let mut b = a.clone();
        a.vec[0] = 0.003;
        b.vec[1] = 0.004;
        a.height = 0.001;
        b.height = 0.002;
        assert!((a.distance_secs(&b) - 0.008).abs() < 1e-12);
        a.adjustment = 0.001;
        assert!((a.distance_secs(&b) - 0.009).abs() < 1e-12);
        // An adjustment that would make the estimate negative is ignored.
        a.adjustment = -1.0;
        assert!((a.distance_secs(&b) - 0.008).abs() < 1e-12);
        assert!(a.distance_to(&b).abs_diff(Duration::from_millis(8)) < Duration::from_nanos(10));
    }

    #[test]
    fn two_nodes_converge_to_the_true_rtt() {
        let (mut a, mut b) = (client(1), client(2));
        let rtt = ms(40.0);
        for _ in 0..200 {
            let cb = b.coordinate().clone();
            a.update("b", &cb, rtt).unwrap();
            let ca = a.coordinate().clone();
            b.update("a", &ca, rtt).unwrap();
        }
        let est = a.coordinate().distance_secs(b.coordinate());
        assert!((est - 0.040).abs() / 0.040 < 0.01, "estimate {est}");
        assert!(a.coordinate().error < 0.1, "error {}", a.coordinate().error);
        assert_eq!(a.stats().updates, 200);
        assert_eq!(a.stats().resets, 0);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut a = client(1);
        let before = a.coordinate().clone();
        let mut other = Coordinate::new(&CoordinateConfig::default());
        other.vec[3] = f64::NAN;
        assert_eq!(
            a.update("b", &other, ms(10.0)),
            Err(CoordinateError::NotFinite { field: "Vec" })
        );
        let mut other = Coordinate::new(&CoordinateConfig::default());
        other.height = f64::INFINITY;
        assert_eq!(
            a.update("b", &other, ms(10.0)),
            Err(CoordinateError::NotFinite { field: "Height" })
        );
        let mut other = Coordinate::new(&CoordinateConfig::default());
        other.vec.pop();
        assert_eq!(
            a.update("b", &other, ms(10.0)),
            Err(CoordinateError::DimensionMismatch { expected: 8, got: 7 })
        );
        let other = Coordinate::new(&CoordinateConfig::default());
        assert_eq!(
            a.update("b", &other, Duration::from_secs(11)),
            Err(CoordinateError::RttOutOfRange {
                rtt: Duration::from_secs(11),
                max: MAX_RTT
            })
        );
        assert_eq!(*a.coordinate(), before);
        assert_eq!(a.stats().rejected, 4);
        assert_eq!(a.stats().updates, 0);
        // A refused sample does not enter the filter either.
        assert!(a.latency_filters.is_empty());

        let mut bad = before.clone();
        bad.error = f64::NAN;
        assert!(a.set_coordinate(bad).is_err());
        let bad_config = CoordinateConfig {
            dimensionality: 0,
            ..CoordinateConfig::default()
        };
        assert!(matches!(
            CoordinateClient::new(bad_config, 1),
            Err(CoordinateError::InvalidConfig {
                field: "dimensionality",
                ..
            })
        ));
        let json = r#"{"Vec":[0,0],"Error":1.5,"Adjustment":0,"Height":0}"#;
        let parsed: Coordinate = serde_json::from_str(json).unwrap();
        assert!(parsed.validate(DIMENSIONALITY).is_err());
    }

    #[test]
    fn one_outlier_rtt_of_a_peer_is_filtered() {
        let peer = {
            let mut c = Coordinate::new(&CoordinateConfig::default());
            c.vec[0] = 0.01;
            c.error = 0.2;
            c
        };
        let (mut steady, mut spiked) = (client(7), client(7));
        for _ in 0..2 {
            steady.update("p", &peer, ms(20.0)).unwrap();
            spiked.update("p", &peer, ms(20.0)).unwrap();
        }
        steady.update("p", &peer, ms(20.0)).unwrap();
        // A 5 s spike: the median of [20 ms, 20 ms, 5 s] is 20 ms.
        spiked.update("p", &peer, Duration::from_secs(5)).unwrap();
        assert_eq!(steady.coordinate(), spiked.coordinate());

        // Without the filter (one sample kept) the spike moves the coordinate far away.
        let config = CoordinateConfig {
            latency_filter_size: 1,
            ..CoordinateConfig::default()
        };
        let mut unfiltered = CoordinateClient::new(config, 7).unwrap();
        for _ in 0..2 {
            unfiltered.update("p", &peer, ms(20.0)).unwrap();
        }
        unfiltered.update("p", &peer, Duration::from_secs(5)).unwrap();
        assert!(unfiltered.coordinate().distance_secs(&peer) > 0.5);
    }

    #[test]
    fn gravity_pulls_toward_the_origin() {
        let mut a = client(3);
        let mut far = Coordinate::new(&CoordinateConfig::default());
        far.vec[0] = 100.0;
        a.set_coordinate(far.clone()).unwrap();
        a.update_gravity();
        let moved = a.coordinate().vec[0];
        // (100 / 150)² ≈ 0.44 s toward the origin.
        assert!(moved < 100.0 - 0.4 && moved > 99.0, "moved to {moved}");
    }

    #[test]
    fn coincident_coordinates_separate_deterministically() {
        let peer = Coordinate::new(&CoordinateConfig::default());
        let run = |seed| {
            let mut c = client(seed);
            c.update("p", &peer, ms(10.0)).unwrap();
            c.coordinate().clone()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).vec, run(6).vec);
        // It moved off the origin, by about a quarter of the misprediction (its error weighs half).
        let moved = magnitude(run(5).vec.iter().copied());
        assert!(moved > 0.0005 && moved < 0.01, "moved {moved}");
    }
}
