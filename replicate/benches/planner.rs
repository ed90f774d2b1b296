//! The planner's cost per pass: a full pass of a prefix against an empty or current mirror, and a
//! delta pass of a few changed keys against a large mirror (the steady state). Run with
//! `cargo bench -p tribune-replicate --bench planner -- --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tribune_replicate::{DeletedKey, Entry, Guard, Mirror, Planner, ReadContent, Scope, SourceRead};

fn planner() -> Planner {
    let spec = "global/@dc1".parse().unwrap();
    let guard = Guard {
        max_stale: Duration::from_secs(2),
        max_delete_fraction: 0.5,
        force_deletes: false,
        deletes: true,
    };
    Planner::new(
        Scope::new(&spec, &[], &[], "service/consul-replicate/statuses"),
        guard,
    )
}

fn entry(i: usize, index: u64) -> Entry {
    Entry {
        key: format!("global/k{i:07}"),
        value: format!("value-{i:07}-{index}").into_bytes(),
        flags: 0,
        create_index: 1,
        modify_index: index,
        lock_index: 0,
        session: None,
    }
}

fn read(index: u64, content: ReadContent) -> SourceRead {
    SourceRead {
        index,
        known_leader: true,
        last_contact: Duration::ZERO,
        content,
    }
}

fn full_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("full pass");
    for keys in [10_000usize, 100_000] {
        let source: Vec<Entry> = (0..keys).map(|i| entry(i, 1)).collect();
        let full = read(1, ReadContent::Full(source.clone()));
        let mut planner = planner();
        let empty = Mirror::new(planner.scope().clone());
        let current = planner.mirror(source);
        group.bench_with_input(BenchmarkId::new("empty mirror", keys), &keys, |b, _| {
            b.iter(|| black_box(planner.plan(&full, &empty, 0)));
        });
        group.bench_with_input(BenchmarkId::new("current mirror", keys), &keys, |b, _| {
            b.iter(|| black_box(planner.plan(&full, &current, 0)));
        });
    }
    group.finish();
}

fn delta_pass(c: &mut Criterion) {
    // 50 changes (1,000 updates/s between reads 50 ms apart) against mirrors of growing size: the
    // cost should follow the changes, not the prefix.
    let mut group = c.benchmark_group("delta pass of 50 changes");
    for keys in [10_000usize, 100_000, 1_000_000] {
        let mut planner = planner();
        let mirror: Mirror = planner.mirror((0..keys).map(|i| entry(i, 1)));
        let changed: Vec<Entry> = (0..45).map(|i| entry(i * (keys / 45), 2)).collect();
        let deleted: Vec<DeletedKey> = (0..5)
            .map(|i| DeletedKey {
                key: format!("global/k{:07}", i * (keys / 5) + 1),
                modify_index: 2,
            })
            .collect();
        let delta = read(
            2,
            ReadContent::Delta {
                since: 1,
                changed,
                deleted,
            },
        );
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter(|| black_box(planner.plan(&delta, &mirror, 1)));
        });
    }
    group.finish();
}

criterion_group!(benches, full_pass, delta_pass);
criterion_main!(benches);
