//! Encode and decode throughput of the archive codec, SHA-256 included, over 1M records of ~100-byte values.
//!
//! Two groups measure the same work: `snapshot_1M_records` in wall-clock time (criterion's default), and
//! `snapshot_1M_records_cpu` in CPU time of the benchmarking thread, which a busy shared machine distorts far
//! less (it still counts cache and frequency effects of the neighbours).
//!
//! Run: `cargo bench -p tribune-snapshot --bench codec -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use tribune_snapshot::{RecordKind, SnapshotMeta, SnapshotReader, SnapshotWriter, verify};

const RECORDS: usize = 1_000_000;
const VALUE_LEN: usize = 100;
const KV: RecordKind = RecordKind(1);

/// Shaped like a KV entry: a key, a ~100-byte value and a few indexes. The value goes through `serde_bytes`,
/// which bincode writes and reads as one slice instead of byte by byte (the bytes on the wire are the same).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    create_index: u64,
    modify_index: u64,
    flags: u64,
}

/// The same entry with a plain `Vec<u8>` value, which serde visits one byte at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlainEntry {
    key: String,
    value: Vec<u8>,
    create_index: u64,
    modify_index: u64,
    flags: u64,
}

fn entries() -> Vec<Entry> {
    (0..RECORDS)
        .map(|i| Entry {
            key: format!("service/web/{i:08}"),
            value: (0..VALUE_LEN).map(|j| (i + j) as u8).collect(),
            create_index: i as u64,
            modify_index: i as u64 + 7,
            flags: 0,
        })
        .collect()
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: RECORDS as u64,
        term: 3,
        datacenter: "dc1".into(),
        ..SnapshotMeta::default()
    }
}

fn encode<T: Serialize>(entries: &[T], out: &mut Vec<u8>) {
    out.clear();
    let mut writer = SnapshotWriter::new(&mut *out, &meta()).unwrap();
    for entry in entries {
        writer.write_record(KV, entry).unwrap();
    }
    writer.finish().unwrap();
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/stat`: Linux only, 10 ms ticks,
/// so each sample must run far longer than a tick (one iteration here takes hundreds of milliseconds).
struct ThreadCpuTime;

/// Nanoseconds per clock tick, for the USER_HZ of 100 that Linux reports to user space on every common platform.
const NANOS_PER_TICK: u64 = 10_000_000;

fn thread_cpu_nanos() -> u64 {
    let stat =
        std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat (Linux only)");
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are fields 14, 15.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * NANOS_PER_TICK
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = f64;
    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }
    fn end(&self, start: u64) -> f64 {
        (thread_cpu_nanos() - start) as f64
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, value: &f64) -> f64 {
        *value
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, so the wall-clock formatter's units (ns, ms, s; bytes per second) apply.
        WALL.formatter()
    }
}

fn codec_cpu(c: &mut Criterion<ThreadCpuTime>) {
    let entries = entries();
    let mut archive = Vec::new();
    encode(&entries, &mut archive);
    let mut group = c.benchmark_group("snapshot_1M_records_cpu");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(archive.len() as u64));
    let mut out = Vec::with_capacity(archive.len());
    group.bench_function("encode_write_record", |b| {
        b.iter(|| encode(black_box(&entries), &mut out))
    });
    group.bench_function("decode_next_record_and_decode", |b| {
        b.iter(|| {
            let mut reader = SnapshotReader::new(black_box(archive.as_slice())).unwrap();
            let mut sum = 0u64;
            while let Some(record) = reader.next_record().unwrap() {
                sum += record.decode::<Entry>().unwrap().modify_index;
            }
            sum
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| verify(black_box(archive.as_slice())).unwrap())
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let entries = entries();
    let plain: Vec<PlainEntry> = entries
        .iter()
        .map(|e| PlainEntry {
            key: e.key.clone(),
            value: e.value.clone(),
            create_index: e.create_index,
            modify_index: e.modify_index,
            flags: e.flags,
        })
        .collect();
    let mut archive = Vec::new();
    encode(&entries, &mut archive);
    let raw_payloads: Vec<Vec<u8>> = {
        let mut reader = SnapshotReader::new(archive.as_slice()).unwrap();
        std::iter::from_fn(|| reader.next_record().unwrap().map(|record| record.payload)).collect()
    };

    let mut group = c.benchmark_group("snapshot_1M_records");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(archive.len() as u64));

    let mut out = Vec::with_capacity(archive.len());
    group.bench_function("encode_write_record", |b| {
        b.iter(|| encode(black_box(&entries), &mut out))
    });
    group.bench_function("encode_write_record_plain_vec", |b| {
        b.iter(|| encode(black_box(&plain), &mut out))
    });
    group.bench_function("encode_write_raw", |b| {
        b.iter(|| {
            out.clear();
            let mut writer = SnapshotWriter::new(&mut out, &meta()).unwrap();
            for payload in &raw_payloads {
                writer.write_raw(KV, payload).unwrap();
            }
            writer.finish().unwrap();
        })
    });
    group.bench_function("decode_next_record_and_decode", |b| {
        b.iter(|| {
            let mut reader = SnapshotReader::new(black_box(archive.as_slice())).unwrap();
            let mut sum = 0u64;
            while let Some(record) = reader.next_record().unwrap() {
                sum += record.decode::<Entry>().unwrap().modify_index;
            }
            sum
        })
    });
    group.bench_function("decode_next_record_and_decode_plain_vec", |b| {
        b.iter(|| {
            let mut reader = SnapshotReader::new(black_box(archive.as_slice())).unwrap();
            let mut sum = 0u64;
            while let Some(record) = reader.next_record().unwrap() {
                sum += record.decode::<PlainEntry>().unwrap().modify_index;
            }
            sum
        })
    });
    group.bench_function("decode_next_record_raw", |b| {
        b.iter(|| {
            let mut reader = SnapshotReader::new(black_box(archive.as_slice())).unwrap();
            let mut bytes = 0usize;
            while let Some(record) = reader.next_record().unwrap() {
                bytes += record.payload.len();
            }
            bytes
        })
    });
    group.bench_function("verify", |b| {
        b.iter(|| verify(black_box(archive.as_slice())).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = codec_cpu
}
criterion_main!(benches, cpu_benches);
