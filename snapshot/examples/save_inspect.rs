//! Tribune snapshot demo: save a sample archive, inspect it like `consul snapshot inspect`, verify it, then show
//! what a single corrupted byte and a cut-short file look like.
//!
//! Run: `cargo run -p tribune-snapshot --example save_inspect`

use std::collections::BTreeMap;
use std::fs::File;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tribune_snapshot::{
    Inspection, RecordKind, SnapshotError, SnapshotMeta, SnapshotReader, save_to_path, verify,
};

const KV: RecordKind = RecordKind(2);
const TOMBSTONE: RecordKind = RecordKind(5);
const SESSION: RecordKind = RecordKind(3);

fn kind_name(kind: RecordKind) -> String {
    match kind {
        KV => "KVS".to_string(),
        TOMBSTONE => "Tombstone".to_string(),
        SESSION => "Session".to_string(),
        other => format!("Unknown({other})"),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct KvEntry {
    key: String,
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tombstone {
    key: String,
    delete_index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Session {
    id: String,
    node: String,
    ttl_seconds: u32,
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("dc1.snap");

    println!("Tribune snapshot demo");
    println!("=====================");
    println!();
    println!(
        "1. Saving a sample state to {} with save_to_path:",
        path.display()
    );
    println!(
        "   it is written to dc1.snap.unverified, synced, read back and verified, then renamed into place."
    );
    // The codec never reads a clock: the producer supplies the creation time.
    let created_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let meta = SnapshotMeta {
        index: 48_213,
        term: 7,
        datacenter: "dc1".to_string(),
        created_at_unix_ms,
        producer: format!("tribune {}", env!("CARGO_PKG_VERSION")),
        labels: BTreeMap::from([("node".to_string(), "server-1".to_string())]),
    };
    let saved = save_to_path(&path, &meta, |writer| {
        for i in 0..3_000u64 {
            let entry = KvEntry {
                key: format!("service/web/config/{i:05}"),
                value: format!("{{\"replicas\":{},\"zone\":\"eu-west-{}\"}}", i % 9, i % 3).into_bytes(),
                flags: 0,
                create_index: 100 + i,
                modify_index: 100 + i * 2,
            };
            writer.write_record(KV, &entry)?;
        }
        for i in 0..800u64 {
            writer.write_record(
                TOMBSTONE,
                &Tombstone {
                    key: format!("service/old/{i:05}"),
                    delete_index: 9_000 + i,
                },
            )?;
        }
        for i in 0..200u64 {
            let session = Session {
                id: format!("{i:08x}-5e55-10n0-0000-000000000000"),
                node: format!("client-{}", i % 40),
                ttl_seconds: 30,
            };
            writer.write_record(SESSION, &session)?;
        }
        Ok(())
    })?;
    println!("   saved and verified snapshot to index {}", saved.meta.index);
    println!();

    println!(
        "2. Inspecting {} (what `consul snapshot inspect` shows):",
        path.display()
    );
    let inspection = tribune_snapshot::inspect(File::open(&path)?)?;
    print_inspection(&inspection);
    println!();

    println!(
        "3. Restoring with SnapshotReader::open_verified (the whole file is checked before any record is yielded):"
    );
    let mut reader = SnapshotReader::open_verified(File::open(&path)?)?;
    let (mut kv, mut tombstones, mut sessions) = (0usize, 0usize, 0usize);
    let mut last_key = String::new();
    while let Some(record) = reader.next_record()? {
        match record.kind {
            KV => {
                last_key = record.decode::<KvEntry>()?.key;
                kv += 1;
            }
            TOMBSTONE => tombstones += record.decode::<Tombstone>().map(|_| 1)?,
            SESSION => sessions += record.decode::<Session>().map(|_| 1)?,
            other => anyhow::bail!("unexpected record kind {other}"),
        }
    }
    println!(
        "   decoded {kv} KV entries (last key {last_key}), {tombstones} tombstones, {sessions} sessions"
    );
    println!();

    let original = std::fs::read(&path)?;
    println!(
        "4. Flipping one bit in the middle of a copy ({} bytes):",
        original.len()
    );
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x04;
    let damaged_path = dir.path().join("dc1-damaged.snap");
    std::fs::write(&damaged_path, &damaged)?;
    match verify(File::open(&damaged_path)?) {
        Ok(_) => anyhow::bail!("a damaged archive verified"),
        Err(error) => println!("   verify         -> {}: {error}", variant(&error)),
    }
    match SnapshotReader::open_verified(File::open(&damaged_path)?) {
        Ok(_) => anyhow::bail!("open_verified accepted a damaged archive"),
        Err(error) => println!(
            "   open_verified  -> {} before any record was yielded",
            variant(&error)
        ),
    }
    println!();

    println!("5. Cutting a copy short at byte {middle}:");
    match verify(&original[..middle]) {
        Ok(_) => anyhow::bail!("a truncated archive verified"),
        Err(error) => println!("   verify         -> {}: {error}", variant(&error)),
    }
    println!();
    println!(
        "The original file still verifies: sha256 {}",
        verify(File::open(&path)?)?.sha256_hex
    );
    Ok(())
}

fn print_inspection(inspection: &Inspection) {
    let meta = &inspection.meta;
    // Raft's snapshot ID shape: term-index-milliseconds.
    let rows = [
        (
            "ID",
            format!("{}-{}-{}", meta.term, meta.index, meta.created_at_unix_ms),
        ),
        (
            "Size",
            format!(
                "{} bytes ({})",
                inspection.total_bytes,
                human_bytes(inspection.total_bytes)
            ),
        ),
        ("Index", meta.index.to_string()),
        ("Term", meta.term.to_string()),
        ("Datacenter", meta.datacenter.clone()),
        ("Producer", meta.producer.clone()),
        (
            "Format",
            format!("tribune-snapshot v{}", inspection.format_version),
        ),
        ("SHA-256", inspection.sha256_hex.clone()),
    ];
    for (name, value) in rows {
        println!("   {name:<11} {value}");
    }
    println!();
    let mut kinds: Vec<(String, u64, u64)> = inspection
        .kinds
        .iter()
        .map(|(kind, stats)| (kind_name(*kind), stats.count, stats.bytes))
        .collect();
    // Largest first, then by name, as consul does.
    kinds.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    println!("   {:<12} {:>7} {:>10}", "Type", "Count", "Size");
    println!(
        "   {:<12} {:>7} {:>10}",
        "-".repeat(12),
        "-".repeat(7),
        "-".repeat(10)
    );
    for (name, count, bytes) in &kinds {
        println!("   {name:<12} {count:>7} {:>10}", human_bytes(*bytes));
    }
    println!(
        "   {:<12} {:>7} {:>10}",
        "-".repeat(12),
        "-".repeat(7),
        "-".repeat(10)
    );
    let payload_bytes = kinds.iter().map(|(_, _, bytes)| bytes).sum::<u64>();
    println!(
        "   {:<12} {:>7} {:>10}",
        "Total",
        inspection.record_count,
        human_bytes(payload_bytes)
    );
}

/// The error's variant name, e.g. `SnapshotError::DigestMismatch`.
fn variant(error: &SnapshotError) -> String {
    let debug = format!("{error:?}");
    let name = debug.split([' ', '(', '{']).next().unwrap_or_default();
    format!("SnapshotError::{name}")
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1}MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1}KB", b as f64 / f64::from(1 << 10)),
        b => format!("{b}B"),
    }
}
