#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use std::time::Duration;
use tribune_gossip::sim::{SimConfig, Simulation};
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(200);
    let lifeguard: bool = std::env::args().nth(2).map(|s| s == "1").unwrap_or(true);
    let mut cfg = tribune_gossip::Config::lan();
    cfg.tcp_fallback_probe = false;
    cfg.lifeguard = lifeguard;
    let mut sim = Simulation::new(SimConfig {
        nodes: n,
        pool: cfg,
        seed: 500,
        ..SimConfig::default()
    });
    sim.run_until(Duration::from_secs(120), Duration::from_millis(250), |s| {
        s.converged()
    });
    sim.run_for(Duration::from_secs(30));
    sim.set_loss(0.10);
    let start = sim.now();
    sim.run_for(Duration::from_secs(150));
    let mut last = String::new();
    for _ in 0..800 {
        sim.run_for(Duration::from_millis(100));
        let v = sim
            .pool(180)
            .unwrap()
            .member("n136")
            .map(|m| (m.status, m.incarnation));
        let own = sim.pool(136).unwrap().incarnation();
        let others: usize = sim
            .up_nodes()
            .filter(|&i| {
                sim.pool(i)
                    .unwrap()
                    .member("n136")
                    .is_some_and(|m| m.status != tribune_gossip::MemberStatus::Alive)
            })
            .count();
        let line = format!("{:?} own {own} non-alive-views {others}", v);
        if line != last {
            println!("t={:.1} {line}", sim.now().since_epoch().as_secs_f64());
            last = line;
        }
        if sim.false_failures() > 0 {
            break;
        }
    }
    println!(
        "ran {:?}, suspicions {}",
        sim.now().saturating_duration_since(start),
        sim.suspicions()
    );
    for v in sim.verdicts().iter().filter(|v| v.subject_was_up).take(5) {
        println!("{v:?}");
        let p = sim.pool(v.observer).unwrap();
        let m = p.member(&format!("n{}", v.subject)).unwrap();
        let subj = sim.pool(v.subject).unwrap();
        println!(
            "  observer view: {:?} inc {}; subject's own inc {} health {}",
            m.status,
            m.incarnation,
            subj.incarnation(),
            subj.health_score()
        );
    }
}
