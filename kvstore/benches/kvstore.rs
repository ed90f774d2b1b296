//! Criterion benches of the store: apply throughput, get latency, a 10k-key list, export and import
//! of a 1M-key state.
//!
//! `cargo bench -p tribune-kvstore --bench kvstore -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tribune_kvstore::{Backend, Command, ExportOptions, Store, StoreConfig};

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

/// Export and import of a 1M-key state: each iteration streams the whole state into a discarding
/// writer, or replaces the whole state from an in-memory archive. The state is built on first use, so a
/// filter that skips these benches also skips the (long) fill.
fn snapshot_1m<B: Backend>(c: &mut Criterion, name: &str, store: &Store<B>) {
    const KEYS: u64 = 1_000_000;
    let options = ExportOptions::default();
    let cell = std::cell::OnceCell::new();
    let archive = || {
        cell.get_or_init(|| {
            fill(store, "snap/", KEYS);
            store.export(Vec::new(), &options).unwrap().0
        })
    };
    let mut group = c.benchmark_group(format!("snapshot_1m/{name}"));
    group.sample_size(10);
    // 1M KV records plus the 10k list keys, the set bench's keys and a few index records.
    group.throughput(Throughput::Elements(KEYS));
    group.bench_function("export", |b| {
        archive();
        b.iter(|| black_box(store.export(std::io::sink(), &options).unwrap().1))
    });
    group.bench_function("import", |b| {
        let archive = archive();
        b.iter(|| black_box(store.import(archive.as_slice()).unwrap().records))
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
    bench_backend(c, "memory", &store);
    snapshot_1m(c, "memory", &store);
}

#[cfg(feature = "rocksdb")]
fn rocksdb(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
    bench_backend(c, "rocksdb", &store);
    snapshot_1m(c, "rocksdb", &store);
}

#[cfg(not(feature = "rocksdb"))]
fn rocksdb(_: &mut Criterion) {}

criterion_group!(benches, memory, rocksdb);
criterion_main!(benches);
