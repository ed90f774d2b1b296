//! Criterion benches of the store: apply throughput, get latency, a 10k-key list.
//!
//! `cargo bench -p tribune-kvstore --bench kvstore -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tribune_kvstore::{Backend, Command, Store, StoreConfig};

fn set(i: u64) -> Command {
    Command::KvSet {
        key: format!("bench/{:08}", i % 100_000),
        value: vec![b'v'; 100],
        flags: 0,
    }
}

fn fill<B: Backend>(store: &Store<B>, prefix: &str, count: u64) {
    let base = store.last_applied();
    for i in 0..count {
        let cmd = Command::KvSet {
            key: format!("{prefix}{i:08}"),
            value: vec![b'v'; 100],
            flags: 0,
        };
        store.apply(base + i + 1, &cmd).unwrap();
    }
}

fn bench_backend<B: Backend>(c: &mut Criterion, name: &str, store: &Store<B>) {
    let mut group = c.benchmark_group(format!("apply_set/{name}"));
    group.throughput(Throughput::Elements(1));
    let mut index = store.last_applied();
    group.bench_function("100B value", |b| {
        b.iter(|| {
            index += 1;
            store.apply(index, &set(index)).unwrap()
        })
    });
    group.finish();

    fill(store, "list/", 10_000);
    let mut group = c.benchmark_group(format!("read/{name}"));
    let mut i = 0u64;
    group.bench_function("get (10k keys under the prefix)", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            black_box(store.get(&format!("list/{i:08}")).unwrap())
        })
    });
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("list 10k-key prefix", |b| {
        b.iter_batched(
            || (),
            |()| black_box(store.list("list/").unwrap().value.len()),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
    bench_backend(c, "memory", &store);
}

#[cfg(feature = "rocksdb")]
fn rocksdb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
    bench_backend(c, "rocksdb", &store);
}

#[cfg(not(feature = "rocksdb"))]
fn rocksdb(_: &mut Criterion) {}

criterion_group!(benches, memory, rocksdb);
criterion_main!(benches);
