//! Write throughput through a three-server loopback cluster (fsync on with the default
//! `rocksdb` feature). Latency percentiles and failover time come from the `load_report`
//! example, since criterion reports means.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(support::BenchCluster::start());
    let leader = rt.block_on(cluster.leader(Duration::from_secs(10)));
    let mut group = c.benchmark_group("consensus_writes");
    for writers in [1usize, 16, 256] {
        // Enough writes per iteration that the writers' ramp-up is noise.
        let per_iter = (writers * 8).max(64);
        group.throughput(Throughput::Elements(per_iter as u64));
        group.bench_function(format!("writers_{writers}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += support::run_writes(&leader, writers, per_iter).await.0;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
