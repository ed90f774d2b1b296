//! Measures the figures reported in BENCHMARKS.md with the simulator: broadcast dissemination,
//! crash detection, false positives under loss (with and without Lifeguard) and bandwidth.
//!
//! ```text
//! cargo run --release -p tribune-gossip --example sim_figures -- all 100 1000
//! cargo run --release -p tribune-gossip --example sim_figures -- dissemination 2000
//! cargo run --release -p tribune-gossip --example sim_figures -- --warm dissemination 10000
//! ```
//! `--warm` starts every cluster converged (each node already knows every other), skipping the
//! join storm whose cost grows as N² × log N; the 10,000-node figures use it.
//! Sections: `dissemination`, `detection`, `false-positives`, `slow-node`, `bandwidth`, `all`
//! (LAN pools, memberlist's LAN defaults `Config::lan()`), and `wan` (Consul's WAN pool,
//! `Config::wan()`, over a seeded map of datacenters with 10 % loss; not part of `all`:
//! `sim_figures -- wan 250`). Every run is seeded and reproducible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tribune_gossip::sim::{Link, SimConfig, Simulation, WAN_SERVERS_PER_DC, wan_node_name};
use tribune_gossip::{Config, Tags};

const STEP: Duration = Duration::from_millis(250);

fn consul_tags() -> Tags {
    [
        ("role", "node"),
        ("dc", "dc1"),
        ("port", "8300"),
        ("build", "0.1.0:5f3c2a1"),
        ("vsn", "2"),
        ("segment", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Whether clusters start converged (`--warm`: every node knows every other from the start, no
/// join storm) rather than joining one by one.
static WARM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn cluster(nodes: usize, seed: u64, pool: Config, tags: Tags) -> Simulation {
    cluster_with(
        SimConfig {
            nodes,
            seed,
            pool,
            tags,
            ..SimConfig::default()
        },
        |_| {},
    )
}

/// A cluster on `cfg` (its start window and warm flag set here), with `links` applied before any
/// node starts, converged and drained.
fn cluster_with(cfg: SimConfig, links: impl FnOnce(&mut Simulation)) -> Simulation {
    let wall = std::time::Instant::now();
    let warm = WARM.load(std::sync::atomic::Ordering::Relaxed);
    let nodes = cfg.nodes;
    let mut sim = Simulation::new(SimConfig {
        start_window: Duration::from_millis((nodes as u64 * 5).max(2000)),
        warm_start: warm,
        ..cfg
    });
    links(&mut sim);
    if warm {
        sim.run_for(Duration::from_secs(10));
        assert!(sim.converged(), "a warm start is converged");
    } else {
        assert!(
            sim.run_until(Duration::from_secs(600), STEP, |s| s.converged()),
            "no convergence"
        );
        // Let the join storm's broadcasts drain before measuring.
        sim.run_for(Duration::from_secs(30));
    }
    eprintln!(
        "  [{nodes} nodes converged at {:.1} s virtual; setup took {:.1} s wall]",
        sim.now().since_epoch().as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    sim
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn dissemination(nodes: usize) {
    let mut sim = cluster(nodes, 100 + nodes as u64, Config::lan(), Tags::new());
    let target = ((nodes as f64) * 0.9999).ceil() as usize;
    let mut times = Vec::new();
    for k in 0..5usize {
        let from = (k * 7919) % nodes;
        let name = format!("event-{k}");
        let sent = sim.now();
        assert!(sim.send_user_event(from, &name, b"payload"));
        let done = sim.run_until(Duration::from_secs(60), Duration::from_millis(50), |s| {
            s.deliveries(&name).len() >= nodes
        });
        assert!(done, "event {k} did not reach every node");
        let mut at: Vec<Duration> = sim
            .deliveries(&name)
            .iter()
            .map(|d| d.1.saturating_duration_since(sent))
            .collect();
        at.sort();
        times.push((at[nodes / 2 - 1], at[target - 1]));
        sim.run_for(Duration::from_secs(5));
    }
    let mut t50: Vec<_> = times.iter().map(|t| t.0).collect();
    let mut t9999: Vec<_> = times.iter().map(|t| t.1).collect();
    t50.sort();
    t9999.sort();
    println!(
        "dissemination n={nodes}: 50% in {} (median of 5), 99.99% in {} median, {} worst",
        secs(t50[2]),
        secs(t9999[2]),
        secs(t9999[4])
    );
}

fn detection(nodes: usize) {
    let mut sim = cluster(nodes, 200 + nodes as u64, Config::lan(), Tags::new());
    let mut firsts = Vec::new();
    let mut alls = Vec::new();
    // Each crash costs about 40 s of virtual time: fewer of them at 10,000 nodes.
    let crashes = if nodes >= 5000 { 5 } else { 10 };
    for k in 0..crashes {
        let victim = 1 + (k * 104_729) % (nodes - 1);
        let (first, all) = crash_and_wait(&mut sim, victim, Duration::from_secs(300));
        firsts.push(first);
        alls.push(all);
        // Let the verdict's gossip settle before the next crash.
        sim.run_for(Duration::from_secs(20));
    }
    firsts.sort();
    alls.sort();
    println!(
        "detection n={nodes}: {crashes} crashes, one at a time: first node declares it failed after {} median; every node after {} median, {} p90, {} max (min {}); false failures: {}",
        secs(pct(&firsts, 50)),
        secs(pct(&alls, 50)),
        secs(pct(&alls, 90)),
        secs(pct(&alls, 100)),
        secs(alls[0]),
        sim.false_failures()
    );
}

/// Nearest-rank percentile of sorted durations.
fn pct(v: &[Duration], p: usize) -> Duration {
    v[(v.len() * p).div_ceil(100).max(1) - 1]
}

/// Crashes `victim`, runs until every running node has declared it failed (at most `limit`), and
/// returns how long the first and the last of them took.
fn crash_and_wait(sim: &mut Simulation, victim: usize, limit: Duration) -> (Duration, Duration) {
    sim.crash(victim);
    let t0 = sim.now();
    let up = sim.up_nodes().count();
    let all = |s: &Simulation| {
        s.verdicts()
            .iter()
            .filter(|v| v.subject == victim && !v.left && v.at >= t0)
            .count()
            >= up
    };
    assert!(
        sim.run_until(limit, Duration::from_millis(100), all),
        "{} was not declared failed everywhere within {limit:?}",
        sim.name(victim)
    );
    let about: Vec<_> = sim
        .verdicts()
        .iter()
        .filter(|v| v.subject == victim && v.at >= t0)
        .collect();
    let first = about.first().unwrap().at.saturating_duration_since(t0);
    let last = about
        .iter()
        .map(|v| v.at)
        .max()
        .unwrap()
        .saturating_duration_since(t0);
    (first, last)
}

fn false_positives(nodes: usize) {
    let window = Duration::from_secs(300);
    for tcp_fallback in [true, false] {
        for loss in [0.0, 0.05, 0.10, 0.20] {
            for lifeguard in [true, false] {
                let mut cfg = Config::lan();
                cfg.lifeguard = lifeguard;
                cfg.tcp_fallback_probe = tcp_fallback;
                let mut sim = cluster(nodes, 300 + nodes as u64, cfg, Tags::new());
                let before = (sim.false_failures(), sim.suspicions());
                sim.set_loss(loss);
                sim.run_for(window);
                let mut subjects: Vec<usize> = sim
                    .verdicts()
                    .iter()
                    .filter(|v| !v.left && v.subject_was_up)
                    .map(|v| v.subject)
                    .collect();
                subjects.sort_unstable();
                subjects.dedup();
                println!(
                    "false-positives n={nodes} tcp_fallback={tcp_fallback:<5} loss={:>2}% lifeguard={lifeguard:<5}: {} false failure verdicts ({} healthy members declared failed), {} suspect events in {} s",
                    (loss * 100.0) as u32,
                    sim.false_failures() - before.0,
                    subjects.len(),
                    sim.suspicions() - before.1,
                    window.as_secs()
                );
            }
        }
    }
}

/// Lifeguard's own scenario: one member is slow (600 ms each way, as if CPU-starved), so its probes
/// of healthy members time out. Counts the suspicions it raises and any false failure.
fn slow_node(nodes: usize) {
    let window = Duration::from_secs(300);
    for lifeguard in [true, false] {
        let mut cfg = Config::lan();
        cfg.lifeguard = lifeguard;
        cfg.tcp_fallback_probe = false;
        let mut sim = cluster(nodes, 500 + nodes as u64, cfg, Tags::new());
        let slow = Link {
            latency: Duration::from_millis(600),
            loss: 0.0,
        };
        for j in 1..nodes {
            sim.set_link(0, j, slow);
            sim.set_link(j, 0, slow);
        }
        let before = (
            sim.false_failures(),
            sim.suspicions(),
            sim.pool(0).unwrap().stats().failed_probes,
        );
        sim.run_for(window);
        println!(
            "slow-node n={nodes} lifeguard={lifeguard:<5}: the slow member failed {} probes, {} suspect events, {} false failure verdicts in {} s (health score {})",
            sim.pool(0).unwrap().stats().failed_probes - before.2,
            sim.suspicions() - before.1,
            sim.false_failures() - before.0,
            window.as_secs(),
            sim.pool(0).unwrap().health_score()
        );
    }
}

/// The WAN pool (`Config::wan()`) of `nodes / 5` datacenters × 5 servers over the seeded WAN map
/// with 10 % loss on every link: false failures over 10 minutes without a crash, then crash
/// detection (10 crashes one after another, victims in different datacenters).
fn wan(nodes: usize) {
    let loss = 0.10;
    let window = Duration::from_secs(600);
    for tcp_fallback in [true, false] {
        let seed = 600 + nodes as u64;
        let mut pool = Config::wan();
        pool.tcp_fallback_probe = tcp_fallback;
        let mut rtt = (Duration::ZERO, Duration::ZERO);
        let mut sim = cluster_with(
            SimConfig {
                nodes,
                seed,
                pool,
                name_of: wan_node_name,
                ..SimConfig::default()
            },
            |s| {
                rtt = s.set_wan_layout(seed, loss);
            },
        );
        let setup_false = sim.false_failures();
        let before = (sim.verdicts().len(), sim.suspicions());
        sim.run_for(window);
        let mut accused: Vec<usize> = sim.verdicts()[before.0..]
            .iter()
            .filter(|v| !v.left && v.subject_was_up)
            .map(|v| v.subject)
            .collect();
        let verdicts = accused.len();
        accused.sort_unstable();
        accused.dedup();
        println!(
            "wan n={nodes} ({} dcs x {WAN_SERVERS_PER_DC}, RTT between dcs {:.0}-{:.0} ms) loss=10% tcp_fallback={tcp_fallback:<5}: {} healthy members declared failed ({verdicts} verdicts), {} suspect events in {} s (false failures while joining: {setup_false})",
            nodes / WAN_SERVERS_PER_DC,
            rtt.0.as_secs_f64() * 1000.0,
            rtt.1.as_secs_f64() * 1000.0,
            accused.len(),
            sim.suspicions() - before.1,
            window.as_secs()
        );
        let crashes = 10;
        let mut firsts = Vec::new();
        let mut alls = Vec::new();
        for k in 0..crashes {
            // Stride through the datacenters so that no two victims share one.
            let victim = (1 + k * (nodes / crashes + 1)) % nodes;
            let (first, all) = crash_and_wait(&mut sim, victim, Duration::from_secs(900));
            firsts.push(first);
            alls.push(all);
            sim.run_for(Duration::from_secs(30));
        }
        firsts.sort();
        alls.sort();
        println!(
            "wan n={nodes} loss=10% tcp_fallback={tcp_fallback:<5}: {crashes} crashes, one at a time: first node declares it failed after {} median; every live node after {} median, {} max (min {}); false failures over the whole run: {}",
            secs(pct(&firsts, 50)),
            secs(pct(&alls, 50)),
            secs(pct(&alls, 100)),
            secs(alls[0]),
            sim.false_failures()
        );
    }
}

fn bandwidth(nodes: usize) {
    for (label, tags) in [("no tags", Tags::new()), ("Consul-like tags", consul_tags())] {
        let mut sim = cluster(nodes, 400 + nodes as u64, Config::lan(), tags);
        let before: Vec<u64> = (0..nodes).map(|i| sim.bytes_sent(i)).collect();
        let window = Config::lan().scaled_push_pull_interval(nodes);
        sim.run_for(window);
        let per_node: Vec<f64> = (0..nodes)
            .map(|i| (sim.bytes_sent(i) - before[i]) as f64 / window.as_secs_f64())
            .collect();
        let mean = per_node.iter().sum::<f64>() / nodes as f64;
        let max = per_node.iter().cloned().fold(0.0, f64::max);
        println!(
            "bandwidth n={nodes} ({label}): {:.0} B/s mean, {:.0} B/s max sent per node over {} s (one push-pull period)",
            mean,
            max,
            window.as_secs()
        );
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--warm") {
        args.remove(pos);
        WARM.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let mut args = args.into_iter();
    let section = args.next().unwrap_or_else(|| "all".into());
    let mut sizes: Vec<usize> = args.map(|a| a.parse().expect("node count")).collect();
    if sizes.is_empty() {
        sizes = vec![100, 1000];
    }
    let wall = std::time::Instant::now();
    for &n in &sizes {
        match section.as_str() {
            "dissemination" => dissemination(n),
            "detection" => detection(n),
            "false-positives" => false_positives(n),
            "bandwidth" => bandwidth(n),
            "slow-node" => slow_node(n),
            "wan" => wan(n),
            "all" => {
                dissemination(n);
                detection(n);
                false_positives(n);
                slow_node(n);
                bandwidth(n);
            }
            other => panic!("unknown section {other}"),
        }
    }
    eprintln!("total wall time {:.1} s", wall.elapsed().as_secs_f64());
}
