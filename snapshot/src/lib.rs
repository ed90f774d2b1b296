//! Tribune's snapshot archive codec: a versioned, self-describing, streaming format with a SHA-256 trailer.
//!
//! An archive carries a whole replicated state from one place to another — a backup on disk, a Raft snapshot
//! sent to a follower, a restore into a fresh cluster. This crate defines the bytes and moves them:
//!
//! - [`SnapshotWriter`] streams records of producer-defined [`RecordKind`]s to any [`std::io::Write`].
//! - [`SnapshotReader`] streams them back from any [`std::io::Read`]; [`SnapshotReader::open_verified`] checks a
//!   seekable input completely before yielding anything.
//! - [`verify`] and [`inspect`] check an archive without building state and report its [`Inspection`]:
//!   metadata, and record count and bytes per kind, as `consul snapshot inspect` does.
//! - [`save_to_path`] writes `<name>.unverified`, syncs, verifies and renames, so a crash never leaves a
//!   half-written file under the final name.
//!
//! Every malformed input — truncation, a flipped bit, wrong magic, a newer format, an over-long record, garbage —
//! is a typed [`SnapshotError`], never a panic. Memory is bounded by the largest record, never by the archive.
//!
//! What it is NOT: it does not know what the records mean (the kvstore defines its kinds and payload types), it
//! does not compress or encrypt, it reads no clock (the producer supplies `created_at_unix_ms`), and it does no
//! I/O beyond the `Read`/`Write` it is given, except for the one file path handed to [`save_to_path`].
//!
//! # Byte layout (format version 1)
//!
//! All integers are little endian. `bincode` means bincode 2's serde encoding with its `standard()`
//! configuration (variable-length integers, little endian), which is fixed for a format version.
//!
//! ```text
//! header   magic          8 bytes   89 54 52 42 53 4e 50 0a   ("\x89TRBSNP\n")
//!          format version u16       1
//!          meta length    u32       at most MAX_META_LEN
//!          meta           bincode(SnapshotMeta), exactly `meta length` bytes
//! record   tag            u8        0x52 ('R')                  -- zero or more record frames
//!          kind           u16       RecordKind, chosen by the producer
//!          length         u32       payload length, at most the reader's limit (DEFAULT_MAX_RECORD_LEN)
//!          payload        `length` bytes (bincode(value) for write_record, caller's bytes for write_raw)
//! trailer  tag            u8        0x54 ('T')
//!          record count   u64       number of record frames
//!          sha256         32 bytes  SHA-256 of every byte above, from the magic to the record count
//! end of input: nothing may follow the trailer
//! ```
//!
//! The tag byte at the start of each frame tells a record from the trailer, so the writer never needs to know
//! the record count in advance. Lengths are checked against their limits before anything is allocated.
//! The digest covers the trailer's tag and count too, so a flipped bit anywhere — header, frame, count or digest
//! — fails verification.
//!
//! # Example
//!
//! ```
//! use tribune_snapshot::{RecordKind, SnapshotMeta, SnapshotReader, SnapshotWriter};
//!
//! # fn main() -> Result<(), tribune_snapshot::SnapshotError> {
//! const KV: RecordKind = RecordKind(1);
//! let meta = SnapshotMeta { index: 42, term: 3, datacenter: "dc1".into(), ..SnapshotMeta::default() };
//!
//! let mut writer = SnapshotWriter::new(Vec::new(), &meta)?;
//! writer.write_record(KV, &("greeting".to_string(), b"hello".to_vec()))?;
//! let (bytes, written) = writer.finish()?;
//! assert_eq!(written.record_count, 1);
//!
//! let mut reader = SnapshotReader::open_verified(std::io::Cursor::new(bytes))?;
//! assert_eq!(reader.meta().index, 42);
//! while let Some(record) = reader.next_record()? {
//!     let (key, value): (String, Vec<u8>) = record.decode()?;
//!     assert_eq!((key.as_str(), value.as_slice()), ("greeting", &b"hello"[..]));
//! }
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod file;
mod reader;
mod types;
mod writer;

pub use error::SnapshotError;
pub use file::{UNVERIFIED_SUFFIX, save_to_path, unverified_path};
pub use reader::{SnapshotReader, inspect, verify, verify_with_max_record_len};
pub use types::{Inspection, KindStats, Record, RecordKind, SnapshotMeta};
pub use writer::SnapshotWriter;

/// The archive format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Default limit on one record's payload: 64 MiB. A longer declared length is
/// [`SnapshotError::RecordTooLarge`], detected before any allocation.
pub const DEFAULT_MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// Limit on the encoded metadata block: 1 MiB.
pub const MAX_META_LEN: u32 = 1024 * 1024;

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme_doctest {}
