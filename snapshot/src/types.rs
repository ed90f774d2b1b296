//! The plain data types of the API: metadata, record kinds, records and inspection figures.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::SnapshotError;

/// What an archive says about itself, stored in its header.
///
/// The codec never reads a clock or the environment: every field, `created_at_unix_ms` included, is supplied by
/// the producer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Raft index of the last log entry the captured state includes.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// Datacenter the state belongs to.
    pub datacenter: String,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub created_at_unix_ms: u64,
    /// The software that wrote the archive, e.g. `"tribune 0.1.0"`.
    pub producer: String,
    /// Free-form labels (node name, reason for the snapshot, ...).
    pub labels: BTreeMap<String, String>,
}

/// The type of a record, chosen by the producer (the kvstore defines its own kinds).
///
/// The codec attaches no meaning to a kind; it only counts records and bytes per kind and hands the kind back to
/// the reader, which decides how to decode the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKind(pub u16);

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One record read from an archive: its kind and its encoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's kind.
    pub kind: RecordKind,
    /// The payload bytes, as given to [`SnapshotWriter::write_raw`](crate::SnapshotWriter::write_raw) or
    /// produced by [`SnapshotWriter::write_record`](crate::SnapshotWriter::write_record).
    pub payload: Vec<u8>,
}

impl Record {
    /// Decodes the payload as a `T` written with [`SnapshotWriter::write_record`](crate::SnapshotWriter::write_record).
    ///
    /// The whole payload must be used: bytes left over mean the type does not match
    /// ([`SnapshotError::PayloadNotConsumed`]). Lengths inside the payload are checked against the payload's size,
    /// so a corrupt payload cannot make the decoder allocate far more than the payload itself.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, SnapshotError> {
        let (value, used) =
            codec::decode_bounded::<T>(&self.payload).map_err(|source| SnapshotError::Decode {
                kind: self.kind,
                source,
            })?;
        if used != self.payload.len() {
            return Err(SnapshotError::PayloadNotConsumed {
                kind: self.kind,
                used,
                len: self.payload.len(),
            });
        }
        Ok(value)
    }
}

/// Record count and payload bytes of one record kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindStats {
    /// Number of records of this kind.
    pub count: u64,
    /// Sum of their payload lengths (frame headers not included).
    pub bytes: u64,
}

/// The figures of a complete, verified archive: what `consul snapshot inspect` shows, plus the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The archive's metadata.
    pub meta: SnapshotMeta,
    /// The format version the archive was written in.
    pub format_version: u16,
    /// Number of records.
    pub record_count: u64,
    /// Size of the whole archive in bytes, header and trailer included.
    pub total_bytes: u64,
    /// Count and payload bytes per record kind.
    pub kinds: BTreeMap<RecordKind, KindStats>,
    /// The SHA-256 stored in (and checked against) the trailer, in lowercase hex.
    pub sha256_hex: String,
}

/// Per-kind tallies kept by both the writer and the reader.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) record_count: u64,
    pub(crate) kinds: BTreeMap<RecordKind, KindStats>,
}

impl Tally {
    pub(crate) fn add(&mut self, kind: RecordKind, payload_len: usize) {
        self.record_count += 1;
        let stats = self.kinds.entry(kind).or_default();
        stats.count += 1;
        stats.bytes += payload_len as u64;
    }
}
