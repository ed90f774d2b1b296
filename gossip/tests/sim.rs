//! Cluster behaviour in the deterministic simulator: convergence, failure detection, partitions,
//! loss, restarts. Sized to run in seconds in the dev profile; the 1,000-node and 10,000-node runs
//! are ignored here (run them with `cargo test -p tribune-gossip --release --test sim -- --ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use std::collections::BTreeMap;
use tribune_gossip::sim::{SimConfig, Simulation, node_name, wan_node_name};

use tribune_gossip::{Config, KeyringOp, KeyringReport, MemberStatus};

const STEP: Duration = Duration::from_millis(250);

fn converged_cluster(cfg: SimConfig) -> Simulation {
    let n = cfg.nodes;
    let mut sim = Simulation::new(cfg);
    assert!(
        sim.run_until(Duration::from_secs(120), STEP, |s| s.converged()),
        "{n} nodes did not converge in 120 s of virtual time"
    );
    sim
}

/// Every running node except `subject` has reported it failed.
fn failed_everywhere(sim: &Simulation, subject: usize) -> bool {
    sim.up_nodes().all(|i| {
        i == subject
            || sim
                .pool(i)
                .and_then(|p| p.member(sim.name(subject)))
                .is_some_and(|m| m.status == MemberStatus::Failed)
    })
}

#[test]
fn a_200_node_cluster_converges() {
    let sim = converged_cluster(SimConfig {
        nodes: 200,
        seed: 11,
        ..SimConfig::default()
    });
    assert!(
        sim.now().since_epoch() < Duration::from_secs(60),
        "took {:?}",
        sim.now()
    );
    assert_eq!(sim.false_failures(), 0);
    assert_eq!(
        sim.oversized_packets(),
        0,
        "the join storm fills packets, never past the MTU"
    );
}

#[test]
fn a_crashed_node_is_declared_failed_by_every_node() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 100,
        seed: 12,
        ..SimConfig::default()
    });
    sim.crash(42);
    let crashed_at = sim.now();
    assert!(sim.run_until(Duration::from_secs(60), STEP, |s| failed_everywhere(s, 42)));
    let took = sim.now().saturating_duration_since(crashed_at);
    // memberlist's LAN defaults at this size: suspicion min 8 s, max 48 s, plus the probe that finds it.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let about: Vec<_> = sim.verdicts().iter().filter(|v| v.subject == 42).collect();
    assert_eq!(about.len(), 99);
    assert!(about.iter().all(|v| !v.left && !v.subject_was_up));
    assert_eq!(sim.false_failures(), 0);
}

#[test]
fn a_partition_is_detected_and_heals() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 40,
        seed: 13,
        pool: Config::local(),
        ..SimConfig::default()
    });
    sim.partition(|i| u32::from(i >= 20));
    // Each side declares the other failed.
    assert!(
        sim.run_until(Duration::from_secs(60), STEP, |s| failed_everywhere(s, 0)
            && failed_everywhere(s, 39)
            || (0..20).all(|i| s.pool(i).is_some_and(|p| p.num_live() == 20))
                && (20..40).all(|i| s.pool(i).is_some_and(|p| p.num_live() == 20)))
    );
    // Stay split well past the time the dead are still gossiped to.
    sim.run_for(Config::local().gossip_to_the_dead_time * 3);
    assert!(!sim.converged());
    sim.heal();
    assert!(
        sim.run_until(Duration::from_secs(60), STEP, |s| s.converged()),
        "the two halves did not merge after the partition healed"
    );
}

#[test]
fn no_healthy_node_is_declared_failed_at_10_percent_loss() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 100,
        seed: 14,
        ..SimConfig::default()
    });
    sim.set_loss(0.10);
    sim.run_for(Duration::from_secs(120));
    let indirect: u64 = sim
        .up_nodes()
        .map(|i| sim.pool(i).unwrap().stats().indirect_probes)
        .sum();
    assert!(
        indirect > 100,
        "the loss must defeat direct probes, or the test proves nothing ({indirect})"
    );
    assert_eq!(sim.false_failures(), 0, "verdicts: {:?}", sim.verdicts());
}

#[test]
fn no_false_failures_at_10_percent_loss_over_udp_alone() {
    // Without the stream fallback probe every lost packet counts: suspicions are frequent and the
    // refutations must win every race.
    let mut pool = Config::lan();
    pool.tcp_fallback_probe = false;
    let mut sim = converged_cluster(SimConfig {
        nodes: 100,
        seed: 17,
        pool,
        ..SimConfig::default()
    });
    sim.set_loss(0.10);
    sim.run_for(Duration::from_secs(120));
    assert!(
        sim.suspicions() > 100,
        "the loss must cause suspicions ({})",
        sim.suspicions()
    );
    assert_eq!(sim.false_failures(), 0, "verdicts: {:?}", sim.verdicts());
}

#[test]
fn a_restarted_node_rejoins_with_a_higher_incarnation() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 30,
        seed: 15,
        pool: Config::local(),
        ..SimConfig::default()
    });
    sim.crash(5);
    assert!(sim.run_until(Duration::from_secs(30), STEP, |s| failed_everywhere(s, 5)));
    sim.restart(5);
    assert!(sim.run_until(Duration::from_secs(30), STEP, |s| s.converged()));
    let inc = sim.pool(5).unwrap().incarnation();
    assert!(
        inc > 1,
        "the restarted node must outbid its failed self, incarnation {inc}"
    );
}

#[test]
fn an_encrypted_cluster_converges_and_detects_failures() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 50,
        seed: 16,
        encrypt: true,
        pool: Config::local(),
        ..SimConfig::default()
    });
    for i in sim.up_nodes().collect::<Vec<_>>() {
        let stats = sim.pool(i).unwrap().stats();
        assert_eq!(
            stats.undecryptable_dropped + stats.plaintext_dropped + stats.malformed_dropped,
            0
        );
    }
    sim.crash(3);
    assert!(sim.run_until(Duration::from_secs(30), STEP, |s| failed_everywhere(s, 3)));
    assert_eq!(sim.oversized_packets(), 0, "encryption overhead included");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim = Simulation::new(SimConfig {
            nodes: 40,
            seed,
            loss: 0.05,
            ..SimConfig::default()
        });
        sim.run_for(Duration::from_secs(20));
        sim.crash(1);
        sim.run_for(Duration::from_secs(20));
        (sim.totals(), sim.verdicts().to_vec(), sim.suspicions())
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3).0, run(4).0);
}

#[test]
#[ignore = "1,000 nodes: run with --release -- --ignored"]
fn a_1000_node_cluster_converges_and_detects_a_crash() {
    let mut sim = converged_cluster(SimConfig {
        nodes: 1000,
        seed: 21,
        ..SimConfig::default()
    });
    sim.crash(500);
    assert!(sim.run_until(Duration::from_secs(60), STEP, |s| failed_everywhere(s, 500)));
    assert_eq!(sim.false_failures(), 0);
}

/// A warm-started cluster is converged from the start and behaves like one that joined: a user
/// event reaches everyone, a crash is detected everywhere, no healthy node is accused.
fn warm_cluster_disseminates_and_detects(nodes: usize, seed: u64) -> Simulation {
    let mut sim = Simulation::new(SimConfig {
        nodes,
        seed,
        warm_start: true,
        ..SimConfig::default()
    });
    sim.run_for(Duration::from_secs(5));
    assert!(sim.converged());
    assert!(sim.send_user_event(1, "hello", b"x"));
    assert!(
        sim.run_until(Duration::from_secs(10), Duration::from_millis(50), |s| {
            s.deliveries("hello").len() == nodes
        })
    );
    sim.crash(7);
    assert!(sim.run_until(Duration::from_secs(120), STEP, |s| failed_everywhere(s, 7)));
    assert_eq!(sim.false_failures(), 0);
    sim
}

#[test]
fn a_warm_started_cluster_is_converged_at_once() {
    let sim = warm_cluster_disseminates_and_detects(150, 21);
    assert_eq!(
        sim.suspicions(),
        149,
        "only the crashed node was suspected, once per observer"
    );
}

#[test]
#[ignore = "10,000 nodes, about 6 GB of memory: run with --release -- --ignored"]
fn a_10000_node_cluster_disseminates_and_detects_a_crash() {
    warm_cluster_disseminates_and_detects(10_000, 22);
}

fn consul_like_tags() -> tribune_gossip::Tags {
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

/// Stream bytes sent by all running pools.
fn stream_bytes(sim: &Simulation) -> u64 {
    sim.up_nodes()
        .filter_map(|i| sim.pool(i))
        .map(|p| p.stats().stream_bytes_sent)
        .sum()
}

#[test]
fn converged_push_pulls_do_not_resend_tags() {
    let measure = |tags: tribune_gossip::Tags| {
        let mut sim = Simulation::new(SimConfig {
            nodes: 100,
            seed: 31,
            tags,
            warm_start: true,
            ..SimConfig::default()
        });
        sim.run_for(Duration::from_secs(5));
        let before = stream_bytes(&sim);
        // Two scaled push-pull periods at 100 members (90 s each).
        sim.run_for(Duration::from_secs(180));
        assert!(sim.converged());
        stream_bytes(&sim) - before
    };
    let bare = measure(tribune_gossip::Tags::new());
    let tagged = measure(consul_like_tags());
    println!("push-pull bytes over 180 s: {bare} without tags, {tagged} with");
    // Only the two full entries per request (sender and target) and one per reply carry tags.
    assert!(bare > 0);
    assert!(
        tagged < bare * 3 / 2,
        "{tagged} bytes with tags against {bare} without"
    );
}

/// Waits for the report of keyring operation `id` started by `origin`.
fn keyring_report(sim: &mut Simulation, origin: usize, id: u64) -> KeyringReport {
    let found = |s: &Simulation| {
        s.keyring_reports()
            .iter()
            .any(|(node, r)| *node == origin && r.id == id)
    };
    assert!(
        sim.run_until(Duration::from_secs(10), STEP, found),
        "keyring operation {id} got no report"
    );
    sim.keyring_reports()
        .iter()
        .find(|(node, r)| *node == origin && r.id == id)
        .map(|(_, r)| r.clone())
        .unwrap()
}

#[test]
fn a_key_rotation_reaches_every_member_and_silent_or_refusing_members_are_named() {
    use base64::Engine as _;
    let mut sim = converged_cluster(SimConfig {
        nodes: 12,
        seed: 21,
        encrypt: true,
        pool: Config::local(),
        ..SimConfig::default()
    });
    let old = sim.pool(0).unwrap().keyring().unwrap().primary();
    let new_raw = vec![7u8; 32];
    let new = base64::engine::general_purpose::STANDARD.encode(&new_raw);
    let counts = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    };

    // Install, use, remove, each started by a different member, each answered by all twelve.
    let id = sim
        .start_keyring_op(5, KeyringOp::Install(new_raw.clone()))
        .unwrap();
    let report = keyring_report(&mut sim, 5, id);
    assert!(report.is_success(), "{report:?}");
    assert_eq!((report.num_nodes, report.num_responses), (12, 12));
    assert_eq!(report.keys, counts(&[(&old, 12), (&new, 12)]));
    assert_eq!(report.primary_keys, counts(&[(&old, 12)]));

    let id = sim.start_keyring_op(7, KeyringOp::Use(new_raw.clone())).unwrap();
    let report = keyring_report(&mut sim, 7, id);
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.primary_keys, counts(&[(&new, 12)]));

    let old_raw = tribune_gossip::decode_key(&old).unwrap();
    let id = sim.start_keyring_op(0, KeyringOp::Remove(old_raw)).unwrap();
    let report = keyring_report(&mut sim, 0, id);
    assert!(report.is_success(), "{report:?}");
    assert_eq!(report.keys, counts(&[(&new, 12)]));
    for i in 0..12 {
        assert_eq!(sim.pool(i).unwrap().keyring().unwrap().keys(), vec![new.clone()]);
    }

    // The pool still works on the new key alone.
    sim.crash(3);
    assert!(sim.run_until(Duration::from_secs(30), STEP, |s| failed_everywhere(s, 3)));

    // A member that crashed but is not yet declared failed is asked and named as silent.
    sim.crash(4);
    let id = sim.start_keyring_op(1, KeyringOp::List).unwrap();
    let report = keyring_report(&mut sim, 1, id);
    assert_eq!((report.num_nodes, report.num_responses), (11, 10), "{report:?}");
    assert!(report.errors[&node_name(4)].contains("no answer"), "{report:?}");
    assert_eq!(report.keys, counts(&[(&new, 10)]));

    // Removing the primary key is refused by every member, and nothing changes.
    assert!(sim.run_until(Duration::from_secs(30), STEP, |s| failed_everywhere(s, 4)));
    let id = sim.start_keyring_op(2, KeyringOp::Remove(new_raw)).unwrap();
    let report = keyring_report(&mut sim, 2, id);
    assert_eq!((report.num_nodes, report.num_responses), (10, 10), "{report:?}");
    assert_eq!(report.errors.len(), 10);
    assert!(
        report.errors.values().all(|e| e.contains("primary")),
        "{report:?}"
    );
    for i in sim.up_nodes().collect::<Vec<_>>() {
        assert_eq!(sim.pool(i).unwrap().keyring().unwrap().keys(), vec![new.clone()]);
    }
}

/// Consul's WAN pool shape: ten datacenters of five servers named `s{i}.dc{j}`, 20–200 ms round
/// trips between datacenters, 10 % loss on every link and UDP probes only (the stream fallback
/// would hide the loss). No healthy server is declared failed in five minutes, and a crash is
/// declared everywhere within the WAN suspicion window (6 × log10(50) × 5 s ≈ 51 s minimum).
#[test]
fn a_wan_pool_at_10_percent_loss_detects_a_crash_without_false_failures() {
    let mut pool = Config::wan();
    pool.tcp_fallback_probe = false;
    let mut sim = Simulation::new(SimConfig {
        nodes: 50,
        seed: 14,
        pool,
        name_of: wan_node_name,
        ..SimConfig::default()
    });
    let (min, max) = sim.set_wan_layout(14, 0.10);
    assert!(
        min >= Duration::from_millis(20) && max <= Duration::from_millis(200),
        "{min:?} {max:?}"
    );
    assert!(sim.run_until(Duration::from_secs(300), STEP, |s| s.converged()));
    assert_eq!(sim.pool(0).unwrap().local_name(), "s0.dc1");
    let suspicions = sim.suspicions();
    sim.run_for(Duration::from_secs(300));
    assert!(
        sim.suspicions() > suspicions,
        "10 % loss over UDP raises suspicions"
    );
    assert_eq!(sim.false_failures(), 0);

    sim.crash(23);
    let t0 = sim.now();
    assert!(sim.run_until(Duration::from_secs(200), STEP, |s| failed_everywhere(s, 23)));
    let took = sim.now().saturating_duration_since(t0);
    assert!(
        took >= Duration::from_secs(50),
        "not before the suspicion timeout: {took:?}"
    );
    assert_eq!(sim.false_failures(), 0);
}
