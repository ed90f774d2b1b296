//! Writes N records of ~100-byte values to a file with `save_to_path`, reads them all back with
//! `open_verified`, and reports the process's peak resident memory: it should not depend on N.
//!
//! Run: `cargo build --release -p tribune-snapshot --example peak_memory` and then
//! `/usr/bin/time -v $CARGO_TARGET_DIR/release/examples/peak_memory 1000000` (default N: 100000).

use std::fs::File;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tribune_snapshot::{RecordKind, SnapshotMeta, SnapshotReader, save_to_path};

const KV: RecordKind = RecordKind(1);

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    value: Vec<u8>,
    modify_index: u64,
}

fn main() -> anyhow::Result<()> {
    let count: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("the argument is the number of records")?,
        None => 100_000,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rss.snap");
    let meta = SnapshotMeta {
        index: count,
        term: 1,
        datacenter: "dc1".into(),
        ..SnapshotMeta::default()
    };

    let mut value = vec![0u8; 100];
    let saved = save_to_path(&path, &meta, |writer| {
        for i in 0..count {
            value[..8].copy_from_slice(&i.to_le_bytes());
            writer.write_record(
                KV,
                &Entry {
                    key: format!("kv/{i:010}"),
                    value: value.clone(),
                    modify_index: i,
                },
            )?;
        }
        Ok(())
    })?;

    let mut reader = SnapshotReader::open_verified(File::open(&path)?)?;
    let mut read = 0u64;
    let mut checksum = 0u64;
    while let Some(record) = reader.next_record()? {
        checksum = checksum.wrapping_add(record.decode::<Entry>()?.modify_index);
        read += 1;
    }
    anyhow::ensure!(
        read == count && checksum == (0..count).fold(0u64, u64::wrapping_add),
        "read back wrong data"
    );

    println!(
        "records: {count}  archive: {:.1} MiB  peak RSS (VmHWM): {}",
        saved.total_bytes as f64 / (1024.0 * 1024.0),
        peak_rss().unwrap_or_else(|| "unavailable".to_string())
    );
    Ok(())
}

/// The kernel's high-water mark of resident memory, on Linux.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}
