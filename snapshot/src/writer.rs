//! Streaming archive writer.

use std::io::Write;

use ring::digest;
use serde::Serialize;

use crate::codec::{self, MAGIC, RECORD_HEADER_LEN, TAG_RECORD, TAG_TRAILER};
use crate::error::SnapshotError;
use crate::types::{Inspection, RecordKind, SnapshotMeta, Tally};
use crate::{DEFAULT_MAX_RECORD_LEN, FORMAT_VERSION, MAX_META_LEN};

/// Bytes collected before they are hashed and handed to the output in one call. Hashing and writing in large
/// chunks rather than per record is what keeps small records cheap.
const CHUNK: usize = 64 * 1024;

/// Writes an archive to any [`Write`], one record at a time.
///
/// Memory use is one chunk buffer (64 KiB) plus the largest single record; nothing else grows with the archive.
/// The writer does its own buffering, so `out` need not be buffered. Call [`finish`](Self::finish) to write the
/// trailer: an archive without one is rejected by every reader.
///
/// After an I/O error the writer is poisoned and every later call fails with [`SnapshotError::Poisoned`].
/// Encoding errors and over-long records are reported before any byte of the record is written, so the writer
/// stays usable after them.
pub struct SnapshotWriter<W: Write> {
    out: W,
    /// Bytes not yet hashed and written.
    pending: Vec<u8>,
    digest: digest::Context,
    /// Bytes hashed and written so far.
    flushed: u64,
    max_record_len: u32,
    tally: Tally,
    meta: SnapshotMeta,
    poisoned: bool,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts an archive with `meta`, allowing records up to [`DEFAULT_MAX_RECORD_LEN`] bytes.
    ///
    /// The header is buffered, not yet written: the first I/O happens once a chunk fills, or in `finish`.
    pub fn new(out: W, meta: &SnapshotMeta) -> Result<Self, SnapshotError> {
        Self::with_max_record_len(out, meta, DEFAULT_MAX_RECORD_LEN)
    }

    /// Starts an archive whose records may be at most `max_record_len` payload bytes each.
    ///
    /// Readers enforce their own limit; an archive with records over a reader's limit is unreadable by it.
    pub fn with_max_record_len(
        out: W,
        meta: &SnapshotMeta,
        max_record_len: u32,
    ) -> Result<Self, SnapshotError> {
        let mut pending = Vec::with_capacity(CHUNK + CHUNK / 4);
        pending.extend_from_slice(&MAGIC);
        pending.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let len_at = pending.len();
        pending.extend_from_slice(&[0; 4]);
        let meta_len =
            codec::encode_into(meta, &mut pending).map_err(|source| SnapshotError::MetaEncode { source })?;
        let meta_len = u32::try_from(meta_len)
            .ok()
            .filter(|len| *len <= MAX_META_LEN)
            .ok_or(SnapshotError::MetaTooLarge {
                len: meta_len as u64,
                limit: MAX_META_LEN,
            })?;
        pending[len_at..len_at + 4].copy_from_slice(&meta_len.to_le_bytes());
        Ok(Self {
            out,
            pending,
            digest: digest::Context::new(&digest::SHA256),
            flushed: 0,
            max_record_len,
            tally: Tally::default(),
            meta: meta.clone(),
            poisoned: false,
        })
    }

    /// Encodes `value` with the format's bincode configuration and writes it as one record of `kind`.
    ///
    /// Read it back with [`Record::decode`](crate::Record::decode) into the same type. Byte fields marked
    /// `#[serde(with = "serde_bytes")]` encode to the same bytes as plain `Vec<u8>`, much faster.
    pub fn write_record<T: Serialize + ?Sized>(
        &mut self,
        kind: RecordKind,
        value: &T,
    ) -> Result<(), SnapshotError> {
        self.check_usable()?;
        let start = self.pending.len();
        self.push_record_header(kind, 0);
        let encoded = codec::encode_into(value, &mut self.pending);
        let len = match encoded {
            Ok(len) => len,
            Err(source) => {
                self.pending.truncate(start);
                return Err(SnapshotError::Encode { kind, source });
            }
        };
        let Some(len32) = self.allowed_len(len) else {
            self.pending.truncate(start);
            return Err(self.too_large(kind, len));
        };
        self.pending[start + 3..start + RECORD_HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
        self.tally.add(kind, len);
        self.flush_if_full()
    }

    /// Writes `payload`, already encoded by the caller, as one record of `kind`.
    pub fn write_raw(&mut self, kind: RecordKind, payload: &[u8]) -> Result<(), SnapshotError> {
        self.check_usable()?;
        let Some(len32) = self.allowed_len(payload.len()) else {
            return Err(self.too_large(kind, payload.len()));
        };
        self.push_record_header(kind, len32);
        if payload.len() >= CHUNK {
            // Large payloads go straight through instead of being copied into the chunk buffer.
            self.flush_pending()?;
            self.digest.update(payload);
            self.write_out(payload)?;
        } else {
            self.pending.extend_from_slice(payload);
        }
        self.tally.add(kind, payload.len());
        self.flush_if_full()
    }

    /// Number of records written so far.
    pub fn record_count(&self) -> u64 {
        self.tally.record_count
    }

    /// The output, e.g. to look at a file's metadata. Bytes may still be buffered in the writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Writes the trailer (record count and SHA-256), flushes the output and returns it with the archive's
    /// figures.
    pub fn finish(mut self) -> Result<(W, Inspection), SnapshotError> {
        self.check_usable()?;
        self.pending.push(TAG_TRAILER);
        self.pending
            .extend_from_slice(&self.tally.record_count.to_le_bytes());
        self.flush_pending()?;
        let digest = std::mem::replace(&mut self.digest, digest::Context::new(&digest::SHA256)).finish();
        self.write_out(digest.as_ref())?;
        self.out.flush()?;
        let inspection = Inspection {
            meta: self.meta,
            format_version: FORMAT_VERSION,
            record_count: self.tally.record_count,
            total_bytes: self.flushed,
            kinds: self.tally.kinds,
            sha256_hex: codec::hex(digest.as_ref()),
        };
        Ok((self.out, inspection))
    }

    fn check_usable(&self) -> Result<(), SnapshotError> {
        if self.poisoned {
            Err(SnapshotError::Poisoned { what: "writer" })
        } else {
            Ok(())
        }
    }

    fn allowed_len(&self, len: usize) -> Option<u32> {
        u32::try_from(len).ok().filter(|len| *len <= self.max_record_len)
    }

    fn too_large(&self, kind: RecordKind, len: usize) -> SnapshotError {
        SnapshotError::RecordTooLarge {
            kind,
            len: len as u64,
            limit: self.max_record_len,
            offset: None,
        }
    }

    fn push_record_header(&mut self, kind: RecordKind, len: u32) {
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0] = TAG_RECORD;
        header[1..3].copy_from_slice(&kind.0.to_le_bytes());
        header[3..].copy_from_slice(&len.to_le_bytes());
        self.pending.extend_from_slice(&header);
    }

    fn flush_if_full(&mut self) -> Result<(), SnapshotError> {
        if self.pending.len() >= CHUNK {
            self.flush_pending()?;
            if self.pending.capacity() > 4 * CHUNK {
                // A huge record grew the buffer; do not keep that memory for the rest of the archive.
                self.pending.shrink_to(CHUNK + CHUNK / 4);
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), SnapshotError> {
        self.digest.update(&self.pending);
        let pending = std::mem::take(&mut self.pending);
        let written = self.write_out(&pending);
        self.pending = pending;
        self.pending.clear();
        written
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.flushed += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(SnapshotError::Io(error))
            }
        }
    }
}

impl<W: Write> std::fmt::Debug for SnapshotWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("record_count", &self.tally.record_count)
            .field("bytes_written", &self.flushed)
            .field("bytes_pending", &self.pending.len())
            .field("max_record_len", &self.max_record_len)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}
