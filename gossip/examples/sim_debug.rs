#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use std::time::Duration;
use tribune_gossip::sim::{SimConfig, Simulation};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1000);
    let mut tags = tribune_gossip::Tags::new();
    tags.insert("role".into(), "node-with-a-long-tag-value".into());
    let mut sim = Simulation::new(SimConfig {
        nodes: n,
        tags,
        ..SimConfig::default()
    });
    for _ in 0..8 {
        sim.run_for(Duration::from_secs(30));
        let p = sim.pool(5).unwrap();
        println!(
            "t={:?} stats {:?} bytes {} tags {:?}",
            sim.now().since_epoch(),
            p.stats(),
            sim.bytes_sent(5),
            p.member("n7").map(|m| m.tags.clone())
        );
    }
}
