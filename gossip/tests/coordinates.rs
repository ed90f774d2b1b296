//! Vivaldi coordinates in the simulator: 100 members with a known RTT matrix probe each other
//! for a bounded stretch of virtual time, then every pair's estimate is compared with the truth.
//! Run with `--nocapture` to see the figures quoted in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tribune_gossip::sim::{Link, SimConfig, Simulation};
use tribune_gossip::{Config, Coordinate};

const NODES: usize = 100;

/// A seeded RTT matrix that a Vivaldi space can hold: members on a 110 × 110 ms plane, each with
/// an access link of 10 to 20 ms (the height), so every RTT is plane distance plus both heights,
/// between 20 ms and 196 ms (clamped to 20..=200 ms, which it already is).
fn rtt_matrix(seed: u64) -> Vec<Vec<Duration>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let points: Vec<(f64, f64, f64)> = (0..NODES)
        .map(|_| {
            (
                rng.random_range(0.0..110.0),
                rng.random_range(0.0..110.0),
                rng.random_range(10.0..20.0),
            )
        })
        .collect();
    points
        .iter()
        .map(|&(x1, y1, h1)| {
            points
                .iter()
                .map(|&(x2, y2, h2)| {
                    let ms = ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt() + h1 + h2;
                    Duration::from_secs_f64(ms.clamp(20.0, 200.0) / 1000.0)
                })
                .collect()
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Relative errors |estimate − truth| / truth over every ordered pair, each member's own
/// coordinate against the other's (as Consul compares catalog coordinates), sorted.
fn relative_errors(sim: &Simulation, truth: &[Vec<Duration>]) -> Vec<f64> {
    let coords: Vec<Coordinate> = (0..NODES)
        .map(|i| sim.pool(i).unwrap().coordinate().unwrap().clone())
        .collect();
    let mut errors = Vec::with_capacity(NODES * NODES);
    for i in 0..NODES {
        for j in 0..NODES {
            if i == j {
                continue;
            }
            let t = truth[i][j].as_secs_f64();
            errors.push((coords[i].distance_secs(&coords[j]) - t).abs() / t);
        }
    }
    errors.sort_by(f64::total_cmp);
    errors
}

/// A symmetric matrix of independent uniform RTTs in 20..200 ms: no space holds it (it breaks the
/// triangle inequality everywhere), which shows the error floor of the model rather than of the
/// algorithm.
fn random_matrix(seed: u64) -> Vec<Vec<Duration>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Row i holds the RTTs from i to every j > i; the rest mirrors them.
    let m: Vec<Vec<Duration>> = (0..NODES)
        .map(|i| {
            (0..NODES)
                .map(|j| {
                    if j > i {
                        Duration::from_micros(rng.random_range(20_000..=200_000))
                    } else {
                        Duration::ZERO
                    }
                })
                .collect()
        })
        .collect();
    (0..NODES)
        .map(|i| (0..NODES).map(|j| m[i.min(j)][i.max(j)]).collect())
        .collect()
}

/// Runs 100 LAN pools over links whose one-way latency is half the matrix's RTT (plus `jitter`
/// drawn per packet, and `loss`), and returns (minutes, median, p90) at a few points of virtual time.
fn run(truth: &[Vec<Duration>], jitter: Duration, loss: f64, label: &str) -> Vec<(u64, f64, f64)> {
    run_with(Config::lan(), &[1, 2, 5, 10], truth, jitter, loss, label)
}

/// [`run`] with another pool configuration, reporting after each of `minutes`.
fn run_with(
    pool: Config,
    minutes: &[u64],
    truth: &[Vec<Duration>],
    jitter: Duration,
    loss: f64,
    label: &str,
) -> Vec<(u64, f64, f64)> {
    let mut sim = Simulation::new(SimConfig {
        nodes: NODES,
        seed: 42,
        pool,
        jitter,
        ..SimConfig::default()
    });
    for (i, row) in truth.iter().enumerate() {
        for (j, rtt) in row.iter().enumerate() {
            if i != j {
                sim.set_link(
                    i,
                    j,
                    Link {
                        latency: *rtt / 2,
                        loss,
                    },
                );
            }
        }
    }
    let mut report = Vec::new();
    for &minutes in minutes {
        sim.run_to(tribune_gossip::Instant::ZERO + Duration::from_secs(60 * minutes));
        let errors = relative_errors(&sim, truth);
        let (median, p90) = (percentile(&errors, 0.5), percentile(&errors, 0.9));
        println!(
            "{label}: after {minutes:>2} min of virtual time, median relative error {:.1} %, p90 {:.1} %",
            median * 100.0,
            p90 * 100.0
        );
        report.push((minutes, median, p90));
    }
    let updates: u64 = (0..NODES)
        .map(|i| sim.pool(i).unwrap().stats().coordinate_updates)
        .sum();
    let resets: u64 = (0..NODES)
        .map(|i| sim.pool(i).unwrap().coordinate_stats().unwrap().resets)
        .sum();
    println!("{label}: {updates} RTT samples applied");
    assert!(sim.converged());
    assert_eq!(resets, 0, "a coordinate became non-finite");
    // The pool's own estimate between two members agrees with their coordinates.
    let p0 = sim.pool(0).unwrap();
    if let Some(c1) = p0.coordinate_of("n1") {
        let est = p0.estimated_rtt("n0", "n1").unwrap();
        assert_eq!(est, p0.coordinate().unwrap().distance_to(c1));
    }
    report
}

/// The acceptance figure: an embeddable matrix, exact links. Serf's own simulations of such
/// topologies (a grid, a line, two clusters) end at ≤ 0.31 % average error; Vivaldi's paper reports
/// an 11 % median on measured Internet latencies, which no plane reproduces. The bounds below sit
/// about 4× above what this run measures, so they catch a broken update rule (a coordinate stuck
/// at the origin is 100 % off; a wrong sign diverges) without failing on a change of seed.
#[test]
fn coordinates_estimate_a_100_node_rtt_matrix() {
    let report = run(&rtt_matrix(42), Duration::ZERO, 0.0, "plane+height");
    let &(_, median, p90) = report.last().unwrap();
    assert!(median < 0.03, "median relative error {median}");
    assert!(p90 < 0.12, "p90 relative error {p90}");
    // Estimates improve with samples: the first minute is far worse than the tenth.
    assert!(report[0].1 > 2.0 * median, "{report:?}");
}

/// The same with 0..4 ms of jitter per packet and 1 % loss: noise the median filter and the error
/// weighting must absorb.
#[test]
fn coordinates_tolerate_jitter_and_loss() {
    let report = run(
        &rtt_matrix(42),
        Duration::from_millis(4),
        0.01,
        "plane+height, jitter 0-4 ms, 1 % loss",
    );
    let &(_, median, p90) = report.last().unwrap();
    assert!(median < 0.06, "median relative error {median}");
    assert!(p90 < 0.20, "p90 relative error {p90}");
}

/// A matrix no space holds: independent RTTs carry no structure to learn, so no estimate can be
/// good (Vivaldi ends near 32 % at the median, where the best constant guess, 140 ms, is 29 %
/// off). What must hold is stability: contradictory samples do not make coordinates diverge or
/// turn non-finite (`run` checks no reset happened), and the error stays at the model's floor.
/// Serf's comparable simulation (25 nodes, 100 ± 10 ms) bounds the average error at 7.5 %.
#[test]
fn coordinates_stay_bounded_on_a_matrix_no_space_holds() {
    let report = run(&random_matrix(7), Duration::ZERO, 0.0, "random 20-200 ms");
    let &(_, median, p90) = report.last().unwrap();
    assert!(median < 0.40, "median relative error {median}");
    assert!(p90 < 2.5, "p90 relative error {p90}");
}

/// The WAN preset probes every 5 s instead of every second: the same matrix takes about five
/// times longer to learn, and gets there.
#[test]
fn wan_pools_learn_coordinates_too() {
    let report = run_with(
        Config::wan(),
        &[5, 10, 20],
        &rtt_matrix(42),
        Duration::ZERO,
        0.0,
        "WAN preset, plane+height",
    );
    let &(_, median, p90) = report.last().unwrap();
    assert!(median < 0.05, "median relative error {median}");
    assert!(p90 < 0.15, "p90 relative error {p90}");
}
