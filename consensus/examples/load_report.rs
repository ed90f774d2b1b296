//! Prints write throughput, p50/p99 write latency (1, 16, 64 and 256 concurrent writers) and
//! failover time (leader killed → first successful write, over N trials) for a three-server
//! loopback cluster. Run in release:
//!
//! `cargo run --release -p tribune-consensus --example load_report -- [writes_per_level] [trials]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let writes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let trials: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let durable = cfg!(feature = "rocksdb");
        println!(
            "log store: {}",
            if durable {
                "RocksDB, synced (group commit)"
            } else {
                "memory"
            }
        );
        let mut cluster = support::BenchCluster::start().await;
        let leader = cluster.leader(Duration::from_secs(10)).await;
        // Warm up connections and the log.
        support::run_writes(&leader, 16, 2_000).await;
        for writers in [1usize, 16, 64, 256] {
            let total = if writers == 1 { writes / 10 } else { writes };
            let (wall, mut lat) = support::run_writes(&leader, writers, total).await;
            lat.sort();
            println!(
                "writers={writers:>3} writes={:>6} writes/s={:>8.0} p50={:?} p99={:?}",
                lat.len(),
                lat.len() as f64 / wall.as_secs_f64(),
                support::percentile(&lat, 0.50),
                support::percentile(&lat, 0.99),
            );
        }
        let mut failovers = Vec::new();
        for trial in 0..trials {
            let leader = cluster.leader(Duration::from_secs(10)).await;
            let follower = cluster.any_follower();
            follower.write(b"x".as_slice()).await.unwrap();
            let killed = leader.id();
            let start = Instant::now();
            cluster.kill(killed).await;
            loop {
                if follower.write(b"x".as_slice()).await.is_ok() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "trial {trial}: no write within 30 s"
                );
            }
            failovers.push(start.elapsed());
            cluster.restart(killed).await;
            // Let the restarted server catch up before the next kill.
            let l = cluster.leader(Duration::from_secs(10)).await;
            let idx = l.write(b"x".as_slice()).await.unwrap().log_index;
            for s in cluster.servers.iter().flatten() {
                s.raft()
                    .wait(Some(Duration::from_secs(10)))
                    .applied_index_at_least(Some(idx), "caught up")
                    .await
                    .unwrap();
            }
        }
        failovers.sort();
        println!(
            "failover trials={} p50={:?} p99={:?} max={:?}",
            failovers.len(),
            support::percentile(&failovers, 0.50),
            support::percentile(&failovers, 0.99),
            failovers.last().copied().unwrap_or_default()
        );
    });
}
