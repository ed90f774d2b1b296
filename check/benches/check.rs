//! Times `check_kv` on a 20,000-operation, 8-key, 8-client history with 2 % indeterminate
//! operations, linearizable by construction.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tribune_check::generate::{GenOptions, generate_history};
use tribune_check::{CheckOptions, Verdict, check_kv};

fn bench(c: &mut Criterion) {
    let history = generate_history(&GenOptions {
        seed: 2026,
        operations: 20_000,
        keys: 8,
        clients: 8,
        indeterminate: 0.02,
    });
    let options = CheckOptions::default();
    let report = check_kv(&history, &options);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    let mut group = c.benchmark_group("check_kv");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("20k_ops_8_keys_8_clients_2pct_indeterminate", |b| {
        b.iter(|| check_kv(black_box(&history), &options))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
