//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use tribune_snapshot::{RecordKind, SnapshotMeta, SnapshotWriter};

pub(crate) const KV: RecordKind = RecordKind(1);
pub(crate) const TOMBSTONE: RecordKind = RecordKind(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) modify_index: u64,
}

pub(crate) fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 1200,
        term: 4,
        datacenter: "dc1".to_string(),
        created_at_unix_ms: 1_700_000_000_000,
        producer: "tribune-test".to_string(),
        labels: BTreeMap::from([("node".to_string(), "s1".to_string())]),
    }
}

pub(crate) fn entry(i: u64) -> Entry {
    Entry {
        key: format!("app/{i}"),
        value: vec![i as u8; (i % 7) as usize],
        modify_index: i,
    }
}

/// A small archive: three KV entries and one tombstone.
pub(crate) fn small_archive() -> Vec<u8> {
    let mut writer = SnapshotWriter::new(Vec::new(), &meta()).unwrap();
    for i in 0..3 {
        writer.write_record(KV, &entry(i)).unwrap();
    }
    writer.write_record(TOMBSTONE, "app/gone").unwrap();
    writer.finish().unwrap().0
}

/// Byte offsets of the trailer: (tag, count, digest).
pub(crate) fn trailer_offsets(archive: &[u8]) -> (usize, usize, usize) {
    let digest = archive.len() - 32;
    (digest - 9, digest - 8, digest)
}

/// Recomputes the trailer digest after a deliberate edit, so a test reaches the check behind the digest.
pub(crate) fn reseal(archive: &mut [u8]) {
    let digest_at = archive.len() - 32;
    let digest = ring::digest::digest(&ring::digest::SHA256, &archive[..digest_at]);
    archive[digest_at..].copy_from_slice(digest.as_ref());
}

/// A reader that hands out at most `step` bytes per call and interrupts every other call.
pub(crate) struct Trickle<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) step: usize,
    pub(crate) interrupt_next: bool,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt_next = !self.interrupt_next;
        if self.interrupt_next {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}
