#![allow(clippy::unwrap_used, clippy::expect_used)]
//! placeholder
use std::time::Duration;
use tribune_gossip::sim::{SimConfig, Simulation};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1000);
    let t0 = std::time::Instant::now();
    let mut sim = Simulation::new(SimConfig {
        nodes: n,
        ..SimConfig::default()
    });
    let ok = sim.run_until(Duration::from_secs(120), Duration::from_millis(500), |s| {
        s.converged()
    });
    println!(
        "converged={ok} at {:?} wall {:?}",
        sim.now().since_epoch(),
        t0.elapsed()
    );
    sim.run_for(Duration::from_secs(60));
    let (b, p) = sim.totals();
    println!(
        "after 60s more: wall {:?} bytes {b} packets {p} false {} susp {}",
        t0.elapsed(),
        sim.false_failures(),
        sim.suspicions()
    );
}
