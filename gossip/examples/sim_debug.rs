#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use std::time::Duration;
use tribune_gossip::sim::{SimConfig, Simulation};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1000);
    let mut sim = Simulation::new(SimConfig {
        nodes: n,
        ..SimConfig::default()
    });
    for _ in 0..40 {
        sim.run_for(Duration::from_secs(5));
        let mut counts: Vec<usize> = sim.up_nodes().map(|i| sim.pool(i).unwrap().num_live()).collect();
        counts.sort();
        let pend: usize = sim
            .up_nodes()
            .map(|i| sim.pool(i).unwrap().pending_broadcasts())
            .sum();
        println!(
            "t={:?} min {} median {} max {} pending {pend} conv {}",
            sim.now().since_epoch(),
            counts[0],
            counts[counts.len() / 2],
            counts[counts.len() - 1],
            sim.converged()
        );
    }
}
