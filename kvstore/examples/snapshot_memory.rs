//! Peak memory and apply stalls of a Raft snapshot of a large RocksDB-backed store.
//!
//! Loads `KEYS` keys (default 1,000,000) with 100-byte values, then takes a snapshot the way the
//! node's state machine does under consensus: the point-in-time capture runs under the lock that
//! also serialises applies, the writing runs on another thread into a file. Meanwhile a second
//! thread keeps applying commands through the same lock and records how long each one waited.
//!
//! `MODE` chooses the capture: `stream` (default; `Store::snapshot` fixes a RocksDB snapshot under
//! the lock and `StoreSnapshot::write_to` streams the archive from it) or `in-memory` (what the
//! node did before: `Store::export` into a `Vec` under the lock, then the bytes copied to the file).
//!
//! Peak resident memory is reset (`/proc/self/clear_refs`) after the load, so `VmHWM` afterwards
//! covers only the snapshot. Linux only.
//!
//! ```sh
//! cargo run -p tribune-kvstore --example snapshot_memory -- [KEYS] [stream|in-memory]
//! ```

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tribune_kvstore::{Command, ExportOptions, RocksBackend, Store, StoreConfig, StoreSnapshot, TxnOp};

const VALUE_BYTES: usize = 100;
/// Keys per load transaction (the store's limit is 128 operations).
const LOAD_BATCH: u64 = 128;

fn status_kib(field: &str) -> Result<u64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| format!("{field} missing from /proc/self/status"))?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("malformed {field} line"))?;
    Ok(kib.parse()?)
}

enum Captured {
    Frozen(StoreSnapshot<RocksBackend>),
    Archive(Vec<u8>),
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> Result<(), Box<dyn Error>> {
    let keys: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1_000_000,
    };
    let streaming = match std::env::args().nth(2).as_deref() {
        None | Some("stream") => true,
        Some("in-memory") => false,
        Some(other) => return Err(format!("unknown mode {other:?}: stream or in-memory").into()),
    };
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open_rocksdb(
        &dir.path().join("state"),
        StoreConfig::new("dc1"),
    )?);

    let load_started = Instant::now();
    let mut index = 0;
    let mut next_key = 0;
    while next_key < keys {
        let end = (next_key + LOAD_BATCH).min(keys);
        let ops = (next_key..end)
            .map(|i| TxnOp::Set {
                key: format!("bench/{i:010}"),
                value: vec![b'v'; VALUE_BYTES],
                flags: 0,
            })
            .collect();
        index += 1;
        store.apply(index, &Command::Txn { ops })?;
        next_key = end;
    }
    println!(
        "loaded {keys} keys in {} commands in {:.1} s",
        index,
        load_started.elapsed().as_secs_f64()
    );

    // Only the snapshot's own peak counts from here on.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let rss_before = status_kib("VmRSS:")?;

    // The state machine's lock: applies and the snapshot's capture take it in turn.
    let lock = Arc::new(Mutex::new(index));
    let stop = Arc::new(AtomicBool::new(false));
    let applier = {
        let (store, lock, stop) = (Arc::clone(&store), Arc::clone(&lock), Arc::clone(&stop));
        std::thread::spawn(move || -> Result<(u64, Duration), String> {
            let mut applied = 0;
            let mut worst = Duration::ZERO;
            // Bounded: at most a million applies, and the main thread stops it after the snapshot.
            for n in 0..1_000_000u64 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let started = Instant::now();
                let mut last = lock.lock();
                *last += 1;
                let command = Command::KvSet {
                    key: format!("after/{n:010}"),
                    value: vec![b'w'; VALUE_BYTES],
                    flags: 0,
                };
                store.apply(*last, &command).map_err(|e| e.to_string())?;
                drop(last);
                worst = worst.max(started.elapsed());
                applied += 1;
            }
            Ok((applied, worst))
        })
    };
    // Let the applier get going before the snapshot starts.
    std::thread::sleep(Duration::from_millis(200));

    let options = ExportOptions::default();
    let out_path = dir.path().join("snapshot.bin");
    let snapshot_started = Instant::now();
    // The capture, under the lock.
    let capture_started = Instant::now();
    let (captured, held) = {
        let _guard = lock.lock();
        let acquired = Instant::now();
        let captured = if streaming {
            Captured::Frozen(store.snapshot(options)?)
        } else {
            Captured::Archive(store.export(Vec::new(), &options)?.0)
        };
        (captured, acquired.elapsed())
    };
    let captured_in = capture_started.elapsed();
    // The write, outside the lock (consensus runs it on a blocking thread).
    let write_started = Instant::now();
    let writer = std::thread::spawn(move || -> Result<u64, String> {
        let file = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(file);
        let bytes = match captured {
            Captured::Frozen(snapshot) => {
                let (_, inspection) = snapshot.write_to(&mut out).map_err(|e| e.to_string())?;
                inspection.total_bytes
            }
            Captured::Archive(archive) => {
                out.write_all(&archive).map_err(|e| e.to_string())?;
                archive.len() as u64
            }
        };
        out.flush().map_err(|e| e.to_string())?;
        Ok(bytes)
    });
    let bytes = writer.join().map_err(|_| "the writer panicked")??;
    let written_in = write_started.elapsed();
    let total = snapshot_started.elapsed();
    let peak = status_kib("VmHWM:")?;

    stop.store(true, Ordering::Release);
    let (applied, worst) = applier.join().map_err(|_| "the applier panicked")??;
    if streaming {
        println!("path: RocksDB snapshot fixed under the lock, archive streamed from it to the file");
    } else {
        println!("path: archive built in memory under the lock, then copied to the file");
    }
    println!(
        "snapshot: {bytes} bytes; capture {:.3} s (lock held {:.6} s), write {:.3} s, total {:.3} s",
        captured_in.as_secs_f64(),
        held.as_secs_f64(),
        written_in.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "memory: VmRSS before {:.1} MiB, VmHWM during snapshot {:.1} MiB, peak growth {:.1} MiB",
        mib(rss_before),
        mib(peak),
        mib(peak.saturating_sub(rss_before))
    );
    println!(
        "applies meanwhile: {applied}, longest wait+apply {:.3} s",
        worst.as_secs_f64()
    );
    Ok(())
}
