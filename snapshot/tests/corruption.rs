//! Property tests: every truncation and every single-bit flip of small archives, and random garbage, end in a
//! typed error — never a panic, never a record from `open_verified`, never a clean end from the streaming reader.
// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Cursor;

use common::*;
use proptest::prelude::*;
use tribune_snapshot::{
    FORMAT_VERSION, RecordKind, SnapshotError, SnapshotMeta, SnapshotReader, SnapshotWriter, verify,
};

/// Reads `bytes` to the end with the streaming reader. Returns the records yielded before the outcome.
fn stream(bytes: &[u8]) -> (usize, Result<(), SnapshotError>) {
    let mut reader = match SnapshotReader::new(bytes) {
        Ok(reader) => reader,
        Err(error) => return (0, Err(error)),
    };
    let mut yielded = 0;
    loop {
        match reader.next_record() {
            Ok(Some(record)) => {
                // Decoding unverified payloads must be just as safe.
                let _ = record.decode::<Entry>();
                let _ = record.decode::<String>();
                yielded += 1;
            }
            Ok(None) => return (yielded, Ok(())),
            Err(error) => return (yielded, Err(error)),
        }
    }
}

/// `open_verified` either fails before yielding anything, or (only for the intact archive) reads cleanly.
fn open_verified_yields_nothing(bytes: &[u8]) -> Result<(), SnapshotError> {
    let reader = SnapshotReader::open_verified(Cursor::new(bytes.to_vec()));
    match reader {
        Ok(_) => panic!("open_verified accepted a damaged archive"),
        Err(error) => Err(error),
    }
}

fn archive_from(meta: &SnapshotMeta, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut writer = SnapshotWriter::new(Vec::new(), meta).unwrap();
    for (kind, payload) in records {
        if kind % 2 == 0 {
            writer.write_raw(RecordKind(*kind), payload).unwrap();
        } else {
            writer.write_record(RecordKind(*kind), payload).unwrap();
        }
    }
    writer.finish().unwrap().0
}

fn assert_every_truncation_fails(archive: &[u8]) {
    assert!(verify(archive).is_ok());
    for len in 0..archive.len() {
        let cut = &archive[..len];
        let err = verify(cut).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Truncated { .. }),
            "cut at {len}: {err}"
        );
        let (_, outcome) = stream(cut);
        assert!(
            matches!(outcome, Err(SnapshotError::Truncated { .. })),
            "cut at {len}: {outcome:?}"
        );
        open_verified_yields_nothing(cut).unwrap_err();
    }
}

fn assert_every_bit_flip_fails(archive: &[u8]) {
    let mut flipped = archive.to_vec();
    for byte in 0..archive.len() {
        for bit in 0..8 {
            flipped[byte] ^= 1 << bit;
            let err = verify(flipped.as_slice()).unwrap_err();
            assert!(
                !matches!(err, SnapshotError::Io(_) | SnapshotError::Poisoned { .. }),
                "byte {byte} bit {bit}: {err}"
            );
            let (_, outcome) = stream(&flipped);
            assert!(
                outcome.is_err(),
                "byte {byte} bit {bit}: the streaming reader ended cleanly"
            );
            open_verified_yields_nothing(&flipped).unwrap_err();
            flipped[byte] ^= 1 << bit;
        }
    }
    assert_eq!(flipped, archive);
}

#[test]
fn every_truncation_of_a_small_archive_is_truncated() {
    assert_every_truncation_fails(&small_archive());
}

#[test]
fn every_bit_flip_of_a_small_archive_is_an_error() {
    assert_every_bit_flip_fails(&small_archive());
}

#[test]
fn flips_in_the_fixed_header_name_the_header_problem() {
    let archive = small_archive();
    let mut flipped = archive.clone();
    for byte in 0..8 {
        flipped[byte] ^= 0x01;
        assert!(matches!(
            verify(flipped.as_slice()),
            Err(SnapshotError::BadMagic { .. })
        ));
        flipped[byte] ^= 0x01;
    }
    for bit in 0..16 {
        let version = FORMAT_VERSION ^ (1 << bit);
        flipped[8..10].copy_from_slice(&version.to_le_bytes());
        assert!(
            matches!(verify(flipped.as_slice()), Err(SnapshotError::UnsupportedVersion { found, .. }) if found == version)
        );
    }
}

fn arb_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        any::<u64>(),
        any::<u64>(),
        "[a-z0-9-]{0,12}",
        any::<u64>(),
        prop::collection::btree_map("[a-z]{1,4}", ".{0,6}", 0..3),
    )
        .prop_map(
            |(index, term, datacenter, created_at_unix_ms, labels)| SnapshotMeta {
                index,
                term,
                datacenter,
                created_at_unix_ms,
                producer: "tribune-proptest".into(),
                labels,
            },
        )
}

fn arb_records(max: usize, max_len: usize) -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    prop::collection::vec((0u16..6, prop::collection::vec(any::<u8>(), 0..max_len)), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_archives_round_trip(meta in arb_meta(), records in arb_records(40, 300)) {
        let archive = archive_from(&meta, &records);
        let inspection = verify(archive.as_slice()).unwrap();
        prop_assert_eq!(inspection.record_count, records.len() as u64);
        prop_assert_eq!(inspection.total_bytes, archive.len() as u64);
        let mut reader = SnapshotReader::open_verified(Cursor::new(archive)).unwrap();
        prop_assert_eq!(reader.meta(), &meta);
        for (kind, payload) in &records {
            let record = reader.next_record().unwrap().unwrap();
            prop_assert_eq!(record.kind, RecordKind(*kind));
            if kind % 2 == 0 {
                prop_assert_eq!(&record.payload, payload);
            } else {
                prop_assert_eq!(&record.decode::<Vec<u8>>().unwrap(), payload);
            }
        }
        prop_assert!(reader.next_record().unwrap().is_none());
        prop_assert_eq!(reader.inspection(), Some(&inspection));
    }

    #[test]
    fn every_truncation_of_arbitrary_small_archives_fails(meta in arb_meta(), records in arb_records(4, 12)) {
        assert_every_truncation_fails(&archive_from(&meta, &records));
    }

    #[test]
    fn every_bit_flip_of_arbitrary_small_archives_fails(meta in arb_meta(), records in arb_records(4, 12)) {
        assert_every_bit_flip_fails(&archive_from(&meta, &records));
    }

    #[test]
    fn random_garbage_is_a_typed_error(garbage in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(verify(garbage.as_slice()).is_err());
        prop_assert!(stream(&garbage).1.is_err());
    }

    #[test]
    fn garbage_behind_a_valid_magic_and_version_is_a_typed_error(garbage in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = small_archive()[..10].to_vec();
        bytes.extend_from_slice(&garbage);
        prop_assert!(verify(bytes.as_slice()).is_err());
        prop_assert!(stream(&bytes).1.is_err());
        prop_assert!(SnapshotReader::open_verified(Cursor::new(bytes)).is_err());
    }

    #[test]
    fn garbage_frames_behind_a_valid_header_are_a_typed_error(garbage in prop::collection::vec(any::<u8>(), 0..600)) {
        // Valid header and metadata, then random frames: exercises the frame parser, not just the header checks.
        let archive = small_archive();
        let (tag_at, _, _) = trailer_offsets(&archive);
        let header_end = tag_at - 4 * 7 - archive_payload_bytes(&archive);
        let mut bytes = archive[..header_end].to_vec();
        bytes.extend_from_slice(&garbage);
        let (_, outcome) = stream(&bytes);
        prop_assert!(outcome.is_err());
        prop_assert!(SnapshotReader::open_verified(Cursor::new(bytes)).is_err());
    }
}

fn archive_payload_bytes(archive: &[u8]) -> usize {
    verify(archive)
        .unwrap()
        .kinds
        .values()
        .map(|stats| stats.bytes as usize)
        .sum()
}
