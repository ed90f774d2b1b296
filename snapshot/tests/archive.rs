//! Round trips and one test per error variant of the public API.
// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{self, Cursor, Seek, SeekFrom, Write};

use common::*;
use serde::{Serialize, Serializer};
use tribune_snapshot::{
    DEFAULT_MAX_RECORD_LEN, FORMAT_VERSION, KindStats, MAX_META_LEN, Record, RecordKind, SnapshotError,
    SnapshotMeta, SnapshotReader, SnapshotWriter, inspect, save_to_path, unverified_path, verify,
    verify_with_max_record_len,
};

fn read_all(bytes: &[u8]) -> Result<Vec<Record>, SnapshotError> {
    let mut reader = SnapshotReader::new(bytes)?;
    let mut records = Vec::new();
    while let Some(record) = reader.next_record()? {
        records.push(record);
    }
    Ok(records)
}

#[test]
fn typed_and_raw_records_round_trip_with_matching_figures() {
    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    let entries: Vec<Entry> = (0..50).map(entry).collect();
    for e in &entries {
        writer.write_record(KV, e).unwrap();
    }
    writer.write_raw(TOMBSTONE, b"raw bytes").unwrap();
    writer.write_raw(RecordKind(9), b"").unwrap();
    assert_eq!(writer.record_count(), 52);
    let (bytes, written) = writer.finish().unwrap();

    assert_eq!(written.meta, meta());
    assert_eq!(written.format_version, FORMAT_VERSION);
    assert_eq!(written.record_count, 52);
    assert_eq!(written.total_bytes, bytes.len() as u64);
    assert_eq!(written.kinds[&TOMBSTONE], KindStats { count: 1, bytes: 9 });
    assert_eq!(written.kinds[&RecordKind(9)], KindStats { count: 1, bytes: 0 });
    assert_eq!(written.kinds[&KV].count, 50);

    let mut reader = SnapshotReader::new(bytes.as_slice()).unwrap();
    assert_eq!(reader.meta(), &meta());
    assert_eq!(reader.format_version(), FORMAT_VERSION);
    assert!(reader.inspection().is_none());
    for expected in &entries {
        let record = reader.next_record().unwrap().unwrap();
        assert_eq!(record.kind, KV);
        assert_eq!(&record.decode::<Entry>().unwrap(), expected);
    }
    let raw = reader.next_record().unwrap().unwrap();
    assert_eq!((raw.kind, raw.payload.as_slice()), (TOMBSTONE, &b"raw bytes"[..]));
    let empty = reader.next_record().unwrap().unwrap();
    assert_eq!((empty.kind, empty.payload.len()), (RecordKind(9), 0));
    assert!(reader.next_record().unwrap().is_none());
    assert!(reader.next_record().unwrap().is_none(), "stays finished");
    assert_eq!(reader.inspection(), Some(&written));

    assert_eq!(verify(bytes.as_slice()).unwrap(), written);
    assert_eq!(inspect(bytes.as_slice()).unwrap(), written);
}

#[test]
fn digest_is_sha256_of_everything_before_it_and_is_reported_in_hex() {
    let bytes = small_archive();
    let digest_at = bytes.len() - 32;
    let expected = ring::digest::digest(&ring::digest::SHA256, &bytes[..digest_at]);
    assert_eq!(&bytes[digest_at..], expected.as_ref());
    let hex: String = expected.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(verify(bytes.as_slice()).unwrap().sha256_hex, hex);
}

#[test]
fn empty_archive_round_trips() {
    let (bytes, written) = SnapshotWriter::new(Vec::new(), &SnapshotMeta::default())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(written.record_count, 0);
    assert!(written.kinds.is_empty());
    assert!(read_all(&bytes).unwrap().is_empty());
    assert_eq!(verify(bytes.as_slice()).unwrap(), written);
}

#[test]
fn records_larger_than_the_internal_buffers_round_trip() {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    writer.write_raw(KV, &big).unwrap();
    writer
        .write_record(
            KV,
            &Entry {
                key: "big".into(),
                value: big.clone(),
                modify_index: 1,
            },
        )
        .unwrap();
    writer.write_raw(TOMBSTONE, b"after").unwrap();
    let (bytes, _) = writer.finish().unwrap();
    let records = read_all(&bytes).unwrap();
    assert_eq!(records[0].payload, big);
    assert_eq!(records[1].decode::<Entry>().unwrap().value, big);
    assert_eq!(records[2].payload, b"after");
}

#[test]
fn reads_from_an_input_that_trickles_and_interrupts() {
    let bytes = small_archive();
    let expected = read_all(&bytes).unwrap();
    for step in [1, 3, 64] {
        let mut reader = SnapshotReader::new(Trickle {
            data: &bytes,
            step,
            interrupt_next: false,
        })
        .unwrap();
        let mut records = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            records.push(record);
        }
        assert_eq!(records, expected);
    }
}

#[test]
fn open_verified_rewinds_to_where_the_archive_starts() {
    let archive = small_archive();
    let mut input = b"prefix".to_vec();
    input.extend_from_slice(&archive);
    let mut cursor = Cursor::new(input);
    cursor.seek(SeekFrom::Start(6)).unwrap();
    let mut reader = SnapshotReader::open_verified(cursor).unwrap();
    let mut count = 0;
    while reader.next_record().unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 4);
}

#[test]
fn an_archive_embedded_in_a_longer_stream_reads_through_take() {
    let archive = small_archive();
    let mut stream = archive.clone();
    stream.extend_from_slice(b"next message");
    use std::io::Read;
    assert!(matches!(
        verify(stream.as_slice()),
        Err(SnapshotError::TrailingData { .. })
    ));
    assert!(verify(stream.as_slice().take(archive.len() as u64)).is_ok());
}

// ---- error variants ----

#[test]
fn io_errors_are_reported_and_poison_the_writer() {
    struct FailingWriter;
    impl Write for FailingWriter {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut writer = SnapshotWriter::new(FailingWriter, &meta()).unwrap();
    let chunk = vec![0u8; 100_000];
    assert!(matches!(writer.write_raw(KV, &chunk), Err(SnapshotError::Io(_))));
    assert!(matches!(
        writer.write_raw(KV, b"x"),
        Err(SnapshotError::Poisoned { what: "writer" })
    ));
    assert!(matches!(writer.finish(), Err(SnapshotError::Poisoned { .. })));

    struct FailingReader;
    impl io::Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("cable cut"))
        }
    }
    assert!(matches!(
        SnapshotReader::new(FailingReader),
        Err(SnapshotError::Io(_))
    ));
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut bytes = small_archive();
    bytes[1] = b'X';
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::BadMagic { found } if found[1] == b'X'),
        "{err}"
    );
    assert!(matches!(
        verify(&b"PK\x03\x04 a zip file, not a snapshot"[..]),
        Err(SnapshotError::BadMagic { .. })
    ));
}

#[test]
fn newer_and_zero_format_versions_are_unsupported() {
    for version in [FORMAT_VERSION + 1, u16::MAX, 0] {
        let mut bytes = small_archive();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        reseal(&mut bytes);
        let err = verify(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsupportedVersion { found, supported } if found == version && supported == FORMAT_VERSION),
            "{err}"
        );
    }
}

#[test]
fn truncation_names_the_part_that_was_cut() {
    let bytes = small_archive();
    let cases = [
        (0, "magic"),
        (9, "format version"),
        (12, "metadata length"),
        (15, "metadata"),
    ];
    for (len, what) in cases {
        let err = verify(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Truncated { what: w, .. } if w == what),
            "{len}: {err}"
        );
    }
    let (tag_at, count_at, digest_at) = trailer_offsets(&bytes);
    for (len, what) in [
        (tag_at, "frame tag"),
        (count_at + 3, "trailer"),
        (digest_at + 5, "trailer digest"),
    ] {
        let err = verify(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Truncated { what: w, .. } if w == what),
            "{len}: {err}"
        );
    }
}

#[test]
fn metadata_over_the_limit_is_rejected_on_write_and_on_read() {
    let mut huge = meta();
    huge.labels
        .insert("blob".into(), "x".repeat(MAX_META_LEN as usize));
    assert!(matches!(
        SnapshotWriter::new(Vec::new(), &huge),
        Err(SnapshotError::MetaTooLarge {
            limit: MAX_META_LEN,
            ..
        })
    ));

    let mut bytes = small_archive();
    bytes[10..14].copy_from_slice(&(MAX_META_LEN + 1).to_le_bytes());
    assert!(matches!(
        verify(bytes.as_slice()),
        Err(SnapshotError::MetaTooLarge { len, .. }) if len == u64::from(MAX_META_LEN) + 1
    ));
}

#[test]
fn corrupt_metadata_is_meta_decode() {
    // A declared length one byte longer than the metadata: it decodes but leaves a byte over.
    let bytes = small_archive();
    let meta_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap());
    let mut longer = bytes.clone();
    longer[10..14].copy_from_slice(&(meta_len + 1).to_le_bytes());
    assert!(matches!(
        verify(longer.as_slice()),
        Err(SnapshotError::MetaDecode { .. })
    ));

    // A string length far beyond the block: rejected by the decode limit, not allocated.
    let mut garbage = bytes[..10].to_vec();
    let block = [0u8, 0, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
    garbage.extend_from_slice(&(block.len() as u32).to_le_bytes());
    garbage.extend_from_slice(&block);
    assert!(matches!(
        verify(garbage.as_slice()),
        Err(SnapshotError::MetaDecode { .. })
    ));
}

#[test]
fn record_length_over_the_limit_is_rejected_before_allocating() {
    // Writing: the writer refuses, writes nothing, and stays usable.
    let mut writer = SnapshotWriter::with_max_record_len(Vec::new(), &meta(), 16).unwrap();
    let err = writer.write_raw(KV, &[0u8; 17]).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::RecordTooLarge {
                kind: KV,
                len: 17,
                limit: 16,
                offset: None
            }
        ),
        "{err}"
    );
    let err = writer.write_record(KV, &vec![1u8; 40]).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::RecordTooLarge {
                kind: KV,
                limit: 16,
                ..
            }
        ),
        "{err}"
    );
    writer.write_raw(KV, &[0u8; 16]).unwrap();
    let (bytes, inspection) = writer.finish().unwrap();
    assert_eq!(inspection.record_count, 1);
    assert_eq!(verify(bytes.as_slice()).unwrap(), inspection);

    // Reading with a smaller limit than the writer's.
    let err = verify_with_max_record_len(bytes.as_slice(), 15).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::RecordTooLarge {
                len: 16,
                limit: 15,
                offset: Some(_),
                ..
            }
        ),
        "{err}"
    );

    // A declared length of 4 GiB on a tiny input: a typed error, no allocation of that size.
    let mut forged = bytes[..bytes.len() - 16 - 7 - 41].to_vec();
    forged.push(b'R');
    forged.extend_from_slice(&7u16.to_le_bytes());
    forged.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = verify(forged.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::RecordTooLarge { kind: RecordKind(7), len, limit: DEFAULT_MAX_RECORD_LEN, .. } if len == u64::from(u32::MAX)),
        "{err}"
    );
    // Under a limit that allows it, the same frame is merely truncated.
    let err = verify_with_max_record_len(forged.as_slice(), u32::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Truncated {
                what: "record payload",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_unknown_frame_tag_is_reported_with_its_offset() {
    let mut bytes = small_archive();
    let (tag_at, _, _) = trailer_offsets(&bytes);
    bytes[tag_at] = 0x00;
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::UnknownFrameTag { tag: 0, offset } if offset == tag_at as u64),
        "{err}"
    );
}

#[test]
fn a_changed_payload_byte_is_a_digest_mismatch() {
    let mut bytes = small_archive();
    let (tag_at, _, _) = trailer_offsets(&bytes);
    bytes[tag_at - 1] ^= 0x20;
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::DigestMismatch { ref expected, ref actual } if expected != actual),
        "{err}"
    );
}

#[test]
fn a_resealed_wrong_count_is_a_count_mismatch() {
    let mut bytes = small_archive();
    let (_, count_at, _) = trailer_offsets(&bytes);
    bytes[count_at..count_at + 8].copy_from_slice(&5u64.to_le_bytes());
    reseal(&mut bytes);
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::CountMismatch {
                declared: 5,
                actual: 4
            }
        ),
        "{err}"
    );
}

#[test]
fn bytes_after_the_trailer_are_trailing_data() {
    let mut bytes = small_archive();
    let len = bytes.len() as u64;
    bytes.push(0);
    let err = verify(bytes.as_slice()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::TrailingData { offset } if offset == len),
        "{err}"
    );
}

struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be encoded"))
    }
}

#[test]
fn an_encode_failure_writes_nothing_and_leaves_the_writer_usable() {
    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    writer.write_record(KV, &entry(1)).unwrap();
    let err = writer.write_record(TOMBSTONE, &Unserializable).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Encode { kind: TOMBSTONE, .. }),
        "{err}"
    );
    writer.write_record(KV, &entry(2)).unwrap();
    let (bytes, inspection) = writer.finish().unwrap();
    assert_eq!(inspection.record_count, 2);
    let records = read_all(&bytes).unwrap();
    assert_eq!(records[1].decode::<Entry>().unwrap(), entry(2));
}

#[test]
fn decoding_as_the_wrong_type_is_a_typed_error() {
    let record = Record {
        kind: KV,
        payload: vec![5],
    };
    assert!(matches!(
        record.decode::<bool>(),
        Err(SnapshotError::Decode { kind: KV, .. })
    ));

    let record = Record {
        kind: KV,
        payload: vec![1, 2],
    };
    assert!(matches!(
        record.decode::<u8>(),
        Err(SnapshotError::PayloadNotConsumed {
            kind: KV,
            used: 1,
            len: 2
        })
    ));

    // A string whose declared length is 2^60 bytes: the decode limit refuses it instead of allocating.
    let mut payload = vec![0xfd];
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let record = Record {
        kind: TOMBSTONE,
        payload,
    };
    let err = record.decode::<String>().unwrap_err();
    assert!(
        matches!(err, SnapshotError::Decode { kind: TOMBSTONE, .. }),
        "{err}"
    );
}

#[test]
fn a_reader_is_poisoned_after_an_error() {
    let mut bytes = small_archive();
    let (tag_at, _, _) = trailer_offsets(&bytes);
    bytes[tag_at] = 0xee;
    let mut reader = SnapshotReader::new(bytes.as_slice()).unwrap();
    let mut result = reader.next_record();
    while let Ok(Some(_)) = result {
        result = reader.next_record();
    }
    assert!(matches!(
        result,
        Err(SnapshotError::UnknownFrameTag { tag: 0xee, .. })
    ));
    assert!(matches!(
        reader.next_record(),
        Err(SnapshotError::Poisoned { what: "reader" })
    ));
}

#[test]
fn open_verified_yields_nothing_from_a_corrupt_archive() {
    let mut bytes = small_archive();
    let (tag_at, _, _) = trailer_offsets(&bytes);
    bytes[tag_at - 1] ^= 1;
    assert!(matches!(
        SnapshotReader::open_verified(Cursor::new(bytes)),
        Err(SnapshotError::DigestMismatch { .. })
    ));
}

// ---- save_to_path ----

#[test]
fn save_to_path_writes_verifies_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.snap");
    std::fs::write(&path, b"previous snapshot").unwrap();
    let saved = save_to_path(&path, &meta(), |writer| {
        for i in 0..1000 {
            writer.write_record(KV, &entry(i))?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(saved.record_count, 1000);
    assert!(!unverified_path(&path).unwrap().exists());
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(saved.total_bytes, on_disk.len() as u64);
    assert_eq!(verify(on_disk.as_slice()).unwrap(), saved);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.snap")]);
}

#[test]
fn a_failing_fill_leaves_the_old_file_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.snap");
    std::fs::write(&path, b"previous snapshot").unwrap();
    let err = save_to_path(&path, &meta(), |writer| {
        writer.write_record(KV, &entry(1))?;
        writer.write_record(KV, &Unserializable)
    })
    .unwrap_err();
    assert!(matches!(err, SnapshotError::Encode { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), b"previous snapshot");
    assert!(!unverified_path(&path).unwrap().exists());
}

#[test]
fn save_to_path_reports_file_errors_and_invalid_paths() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no-such-dir").join("state.snap");
    let err = save_to_path(&missing_dir, &meta(), |_| Ok(())).unwrap_err();
    assert!(
        matches!(err, SnapshotError::File { action: "create", .. }),
        "{err}"
    );

    let err = save_to_path(std::path::Path::new("/"), &meta(), |_| Ok(())).unwrap_err();
    assert!(matches!(err, SnapshotError::InvalidPath { .. }), "{err}");
    assert_eq!(
        unverified_path(std::path::Path::new("dir/state.snap")).unwrap(),
        std::path::Path::new("dir/state.snap.unverified")
    );
}

#[test]
fn save_to_path_refuses_a_file_replaced_before_verification() {
    // Another valid archive is moved over the temporary file while it is being written (as a concurrent save to
    // the same path would): it verifies, but it is not what this save wrote.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.snap");
    let intruder = dir.path().join("other.snap");
    std::fs::write(&intruder, small_archive()).unwrap();
    let err = save_to_path(&path, &meta(), |writer| {
        writer.write_record(KV, &entry(1))?;
        std::fs::rename(&intruder, unverified_path(&path)?).map_err(SnapshotError::Io)
    })
    .unwrap_err();
    assert!(matches!(err, SnapshotError::SavedFileMismatch { .. }), "{err}");
    assert!(!path.exists());
}

#[test]
fn errors_name_what_went_wrong() {
    let err = SnapshotError::RecordTooLarge {
        kind: KV,
        len: 99,
        limit: 10,
        offset: Some(7),
    };
    assert_eq!(
        err.to_string(),
        "record of kind 1 is 99 bytes, over the limit of 10 bytes (frame at byte 7)"
    );
    let err = SnapshotError::UnsupportedVersion {
        found: 2,
        supported: 1,
    };
    assert_eq!(
        err.to_string(),
        "unsupported snapshot format version 2: this build reads versions 1 to 1"
    );
    let _ = BTreeMap::<u8, u8>::new();
}

#[test]
fn a_reader_that_overstates_its_read_count_is_an_io_error() {
    struct Liar;
    impl io::Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }
    assert!(matches!(SnapshotReader::new(Liar), Err(SnapshotError::Io(_))));
}

#[test]
fn open_verified_notices_an_input_replaced_between_its_passes() {
    // First pass sees one valid archive, the second pass another: the second digest must match the first.
    struct Swapping {
        first: Cursor<Vec<u8>>,
        second: Cursor<Vec<u8>>,
        rewound: bool,
    }
    impl io::Read for Swapping {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.rewound {
                self.second.read(buf)
            } else {
                self.first.read(buf)
            }
        }
    }
    impl Seek for Swapping {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            if pos == SeekFrom::Start(0) && self.first.position() > 0 {
                self.rewound = true;
            }
            if self.rewound {
                self.second.seek(pos)
            } else {
                self.first.seek(pos)
            }
        }
    }
    let mut other = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    other.write_record(KV, &entry(99)).unwrap();
    let input = Swapping {
        first: Cursor::new(small_archive()),
        second: Cursor::new(other.finish().unwrap().0),
        rewound: false,
    };
    let mut reader = SnapshotReader::open_verified(input).unwrap();
    assert!(reader.next_record().unwrap().is_some());
    assert!(matches!(
        reader.next_record(),
        Err(SnapshotError::DigestMismatch { .. })
    ));
}
