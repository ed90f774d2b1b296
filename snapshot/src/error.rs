//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use crate::types::RecordKind;

/// Everything that can go wrong while writing, reading, verifying or saving an archive.
///
/// Every malformed input maps to one of these variants; none of the crate's functions panics on the bytes it
/// is given. Offsets are absolute byte positions from the start of the archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The underlying reader or writer failed.
    #[error("snapshot I/O failed: {0}")]
    Io(#[from] io::Error),

    /// A file-system step of [`save_to_path`](crate::save_to_path) failed.
    #[error("could not {action} {}: {source}", path.display())]
    File {
        /// What was being done, e.g. "create", "sync", "rename to its final name".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// The path given to [`save_to_path`](crate::save_to_path) cannot name an archive file.
    #[error("invalid snapshot path {}: {reason}", path.display())]
    InvalidPath {
        /// The rejected path.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The input does not start with the archive magic bytes: it is not a Tribune snapshot.
    #[error("not a Tribune snapshot: leading bytes are {found:02x?}")]
    BadMagic {
        /// The eight bytes found where the magic was expected.
        found: [u8; 8],
    },

    /// The archive was written in a format version this build cannot read (newer, or the never-used 0).
    #[error("unsupported snapshot format version {found}: this build reads versions 1 to {supported}")]
    UnsupportedVersion {
        /// The version stored in the archive.
        found: u16,
        /// The newest version this build reads ([`FORMAT_VERSION`](crate::FORMAT_VERSION)).
        supported: u16,
    },

    /// The input ended before the archive did.
    #[error("snapshot truncated: input ended inside the {what} starting at byte {offset}")]
    Truncated {
        /// The part of the archive that was being read.
        what: &'static str,
        /// Where that part starts.
        offset: u64,
    },

    /// The metadata block is larger than [`MAX_META_LEN`](crate::MAX_META_LEN).
    #[error("snapshot metadata is {len} bytes, over the limit of {limit} bytes")]
    MetaTooLarge {
        /// The encoded (or declared) metadata length.
        len: u64,
        /// The limit.
        limit: u32,
    },

    /// A record's payload is longer than the reader's or writer's limit. Checked before any allocation.
    #[error("record of kind {kind} is {len} bytes, over the limit of {limit} bytes{}", at(*offset))]
    RecordTooLarge {
        /// The record's kind.
        kind: RecordKind,
        /// The encoded (or declared) payload length.
        len: u64,
        /// The limit in force.
        limit: u32,
        /// Where the record's frame starts, when reading; `None` when writing.
        offset: Option<u64>,
    },

    /// A frame starts with a byte that is neither the record tag nor the trailer tag.
    #[error("corrupt snapshot: unknown frame tag {tag:#04x} at byte {offset}")]
    UnknownFrameTag {
        /// The byte found.
        tag: u8,
        /// Where it was found.
        offset: u64,
    },

    /// The SHA-256 stored in the trailer does not match the archive's content.
    #[error("snapshot digest mismatch: trailer says sha256 {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The digest stored in the trailer, in lowercase hex.
        expected: String,
        /// The digest of the bytes actually read, in lowercase hex.
        actual: String,
    },

    /// The trailer's record count disagrees with the records actually present.
    #[error("snapshot trailer declares {declared} records but the archive holds {actual}")]
    CountMismatch {
        /// The count stored in the trailer.
        declared: u64,
        /// The number of record frames read.
        actual: u64,
    },

    /// Bytes follow the trailer.
    #[error("corrupt snapshot: unexpected data after the trailer at byte {offset}")]
    TrailingData {
        /// Where the extra data starts.
        offset: u64,
    },

    /// The metadata could not be encoded.
    #[error("could not encode snapshot metadata: {source}")]
    MetaEncode {
        /// bincode's error.
        source: bincode::error::EncodeError,
    },

    /// The metadata block could not be decoded, or did not fill its declared length exactly.
    #[error("corrupt snapshot metadata: {source}")]
    MetaDecode {
        /// bincode's error.
        source: bincode::error::DecodeError,
    },

    /// A value given to [`SnapshotWriter::write_record`](crate::SnapshotWriter::write_record) could not be encoded.
    /// Nothing was written.
    #[error("could not encode a record of kind {kind}: {source}")]
    Encode {
        /// The kind the record was to be written as.
        kind: RecordKind,
        /// bincode's error.
        source: bincode::error::EncodeError,
    },

    /// A record's payload could not be decoded as the requested type.
    #[error("could not decode a record of kind {kind}: {source}")]
    Decode {
        /// The record's kind.
        kind: RecordKind,
        /// bincode's error.
        source: bincode::error::DecodeError,
    },

    /// A record's payload decoded as the requested type but left bytes over: the type does not match.
    #[error(
        "record of kind {kind} decoded from {used} of its {len} bytes: the type does not match the payload"
    )]
    PayloadNotConsumed {
        /// The record's kind.
        kind: RecordKind,
        /// Bytes the decoded value used.
        used: usize,
        /// Bytes in the payload.
        len: usize,
    },

    /// The file read back by [`save_to_path`](crate::save_to_path) verified, but is not what was written.
    #[error("snapshot {} verified but differs from what was written", path.display())]
    SavedFileMismatch {
        /// The temporary file that was read back.
        path: PathBuf,
    },

    /// An earlier error left this reader or writer in an unknown position; it cannot continue.
    #[error("an earlier error left this snapshot {what} unusable")]
    Poisoned {
        /// "reader" or "writer".
        what: &'static str,
    },
}

fn at(offset: Option<u64>) -> String {
    match offset {
        Some(offset) => format!(" (frame at byte {offset})"),
        None => String::new(),
    }
}
