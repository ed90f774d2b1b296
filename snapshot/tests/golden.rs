//! Pins the byte layout of format version 1. The files under `fuzz/seeds/read_archive/` were built by a separate
//! encoder written from the layout in the crate docs (not by this crate); the writer must reproduce them byte for
//! byte and the reader must accept them. A failure here means the format changed: bump `FORMAT_VERSION`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use tribune_snapshot::{KindStats, RecordKind, SnapshotMeta, SnapshotWriter, verify};

/// The crate's directory as cargo reports it when running the test, so a test binary reused from a
/// shared target directory built in another checkout still reads this checkout's files.
fn crate_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(), Into::into)
}

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(crate_dir().join("fuzz/seeds/read_archive").join(name)).unwrap()
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 42,
        term: 3,
        datacenter: "dc1".into(),
        created_at_unix_ms: 7,
        producer: "seed".into(),
        labels: BTreeMap::from([("node".into(), "s1".into())]),
    }
}

#[test]
fn the_writer_reproduces_the_reference_files() {
    let (empty, _) = SnapshotWriter::new(Vec::new(), &meta())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(empty, seed("empty"));

    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    writer
        .write_record(RecordKind(1), &("key", b"hi".to_vec(), 5u64))
        .unwrap();
    assert_eq!(writer.finish().unwrap().0, seed("one"));

    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    writer
        .write_record(RecordKind(1), &("a/b", b"xyz".to_vec(), 9u64))
        .unwrap();
    writer.write_record(RecordKind(2), &vec!["p", "q"]).unwrap();
    writer.write_raw(RecordKind(9), b"").unwrap();
    assert_eq!(writer.finish().unwrap().0, seed("mixed"));
}

#[test]
fn the_reader_accepts_the_reference_files() {
    let inspection = verify(seed("mixed").as_slice()).unwrap();
    assert_eq!(inspection.meta, meta());
    assert_eq!(inspection.record_count, 3);
    assert_eq!(inspection.kinds[&RecordKind(2)], KindStats { count: 1, bytes: 5 });
    assert_eq!(inspection.total_bytes, 111);
}

#[test]
fn serde_bytes_values_are_the_same_bytes_as_plain_vectors() {
    // The README and the benches recommend `serde_bytes` for byte fields; it must not change the format.
    #[derive(serde::Serialize)]
    struct Fast<'a>(#[serde(with = "serde_bytes")] &'a [u8], u64);
    let value: Vec<u8> = (0..=255).collect();
    let write = |record: &dyn Fn(&mut SnapshotWriter<Vec<u8>>)| {
        let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
        record(&mut writer);
        writer.finish().unwrap().0
    };
    let fast = write(&|w| w.write_record(RecordKind(1), &Fast(&value, 9)).unwrap());
    let plain = write(&|w| w.write_record(RecordKind(1), &(value.clone(), 9u64)).unwrap());
    assert_eq!(fast, plain);
}
