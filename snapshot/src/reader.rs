//! Streaming archive reader, `verify` and `inspect`.

use std::io::{self, Read, Seek, SeekFrom};

use ring::digest;

use crate::codec::{self, DIGEST_LEN, MAGIC, TAG_RECORD, TAG_TRAILER};
use crate::error::SnapshotError;
use crate::types::{Inspection, Record, RecordKind, SnapshotMeta, Tally};
use crate::{DEFAULT_MAX_RECORD_LEN, FORMAT_VERSION, MAX_META_LEN};

/// Size of the reader's input buffer.
const CHUNK: usize = 64 * 1024;
/// A payload buffer is first sized to at most this much; beyond it, it grows only as bytes actually arrive, so a
/// corrupt length on a short input costs little memory.
const INITIAL_PAYLOAD_RESERVE: usize = 1024 * 1024;

/// Reads an archive from any [`Read`], one record at a time.
///
/// Memory use is one input buffer (64 KiB) plus the record being read; records over the reader's limit are
/// rejected from their declared length, before anything is allocated for them. The reader buffers its input
/// itself, so `input` need not be buffered; it may read past the archive's end, so an archive embedded in a
/// longer stream should be given as `input.take(len)`.
///
/// Two ways to read:
/// - [`new`](Self::new) streams in a single pass. Records are yielded as they are read, and the digest is checked
///   only when the trailer is reached, so a caller of `next_record` must stage what it reads and act on it only
///   once `next_record` has returned `Ok(None)`.
/// - [`open_verified`](Self::open_verified) (for seekable inputs) checks the whole archive first and yields
///   nothing from an archive that fails.
///
/// After an error the reader is poisoned: later calls fail with [`SnapshotError::Poisoned`].
pub struct SnapshotReader<R: Read> {
    input: HashingInput<R>,
    meta: SnapshotMeta,
    format_version: u16,
    max_record_len: u32,
    tally: Tally,
    /// For the second pass of `open_verified`: the digest the first pass accepted.
    expected_digest: Option<[u8; DIGEST_LEN]>,
    /// The trailer's digest, once it has been checked.
    verified_digest: Option<[u8; DIGEST_LEN]>,
    state: State,
}

enum State {
    Records,
    Done(Box<Inspection>),
    Poisoned,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header (magic, format version, metadata), allowing records up to
    /// [`DEFAULT_MAX_RECORD_LEN`] bytes.
    pub fn new(input: R) -> Result<Self, SnapshotError> {
        Self::with_max_record_len(input, DEFAULT_MAX_RECORD_LEN)
    }

    /// Like [`new`](Self::new), rejecting any record whose declared payload exceeds `max_record_len` bytes.
    pub fn with_max_record_len(input: R, max_record_len: u32) -> Result<Self, SnapshotError> {
        let mut input = HashingInput::new(input);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic, "magic")?;
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        let mut version = [0u8; 2];
        input.read_exact(&mut version, "format version")?;
        let format_version = u16::from_le_bytes(version);
        if format_version == 0 || format_version > FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: format_version,
                supported: FORMAT_VERSION,
            });
        }
        let mut meta_len = [0u8; 4];
        input.read_exact(&mut meta_len, "metadata length")?;
        let meta_len = u32::from_le_bytes(meta_len);
        if meta_len > MAX_META_LEN {
            return Err(SnapshotError::MetaTooLarge {
                len: u64::from(meta_len),
                limit: MAX_META_LEN,
            });
        }
        let mut meta_bytes = Vec::new();
        input.read_vec(meta_len as usize, &mut meta_bytes, "metadata")?;
        let (meta, used) = codec::decode_bounded::<SnapshotMeta>(&meta_bytes)
            .map_err(|source| SnapshotError::MetaDecode { source })?;
        if used != meta_bytes.len() {
            return Err(SnapshotError::MetaDecode {
                source: bincode::error::DecodeError::OtherString(format!(
                    "metadata uses {used} of its declared {} bytes",
                    meta_bytes.len()
                )),
            });
        }
        Ok(Self {
            input,
            meta,
            format_version,
            max_record_len,
            tally: Tally::default(),
            expected_digest: None,
            verified_digest: None,
            state: State::Records,
        })
    }

    /// The archive's metadata, from its header. Not yet covered by a verified digest unless the reader came from
    /// [`open_verified`](Self::open_verified) or `next_record` has returned `Ok(None)`.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The format version stored in the header.
    pub fn format_version(&self) -> u16 {
        self.format_version
    }

    /// The next record, or `Ok(None)` once the trailer has been read and the digest, the record count and the
    /// end of input have all checked out.
    ///
    /// Checking the end of input means reading until the input reports end of file: over a socket the sender
    /// must close its side, or the caller bounds the input with [`Read::take`].
    pub fn next_record(&mut self) -> Result<Option<Record>, SnapshotError> {
        match self.state {
            State::Records => {}
            State::Done(_) => return Ok(None),
            State::Poisoned => return Err(SnapshotError::Poisoned { what: "reader" }),
        }
        let mut payload = Vec::new();
        match self.next_frame(&mut payload) {
            Ok(Some(kind)) => Ok(Some(Record { kind, payload })),
            Ok(None) => Ok(None),
            Err(error) => {
                self.state = State::Poisoned;
                Err(error)
            }
        }
    }

    /// The archive's figures, once `next_record` has returned `Ok(None)`.
    pub fn inspection(&self) -> Option<&Inspection> {
        match &self.state {
            State::Done(inspection) => Some(inspection),
            State::Records | State::Poisoned => None,
        }
    }

    /// Reads the remaining records without keeping them (one reused payload buffer) and checks the trailer.
    fn drain(&mut self) -> Result<(), SnapshotError> {
        let mut scratch = Vec::new();
        loop {
            match self.state {
                State::Records => {}
                State::Done(_) => return Ok(()),
                State::Poisoned => return Err(SnapshotError::Poisoned { what: "reader" }),
            }
            if let Err(error) = self.next_frame(&mut scratch) {
                self.state = State::Poisoned;
                return Err(error);
            }
        }
    }

    fn verify_rest(mut self) -> Result<Inspection, SnapshotError> {
        self.drain()?;
        match self.state {
            State::Done(inspection) => Ok(*inspection),
            State::Records | State::Poisoned => Err(SnapshotError::Poisoned { what: "reader" }),
        }
    }

    /// Reads one frame. A record's payload goes into `payload` (cleared first) and its kind is returned; the
    /// trailer is checked and moves the reader to `Done`.
    fn next_frame(&mut self, payload: &mut Vec<u8>) -> Result<Option<RecordKind>, SnapshotError> {
        let frame_at = self.input.offset();
        let mut tag = [0u8; 1];
        self.input.read_exact(&mut tag, "frame tag")?;
        match tag[0] {
            TAG_RECORD => {
                let mut header = [0u8; 6];
                self.input.read_exact(&mut header, "record header")?;
                let [k0, k1, l0, l1, l2, l3] = header;
                let kind = RecordKind(u16::from_le_bytes([k0, k1]));
                let len = u32::from_le_bytes([l0, l1, l2, l3]);
                if len > self.max_record_len {
                    return Err(SnapshotError::RecordTooLarge {
                        kind,
                        len: u64::from(len),
                        limit: self.max_record_len,
                        offset: Some(frame_at),
                    });
                }
                payload.clear();
                self.input.read_vec(len as usize, payload, "record payload")?;
                self.tally.add(kind, payload.len());
                Ok(Some(kind))
            }
            TAG_TRAILER => {
                self.finish_trailer()?;
                Ok(None)
            }
            tag => Err(SnapshotError::UnknownFrameTag {
                tag,
                offset: frame_at,
            }),
        }
    }

    fn finish_trailer(&mut self) -> Result<(), SnapshotError> {
        let mut count = [0u8; 8];
        self.input.read_exact(&mut count, "trailer")?;
        let declared = u64::from_le_bytes(count);
        let actual_digest = self.input.finish_digest();
        let mut stored = [0u8; DIGEST_LEN];
        self.input.read_exact(&mut stored, "trailer digest")?;
        let expected = self.expected_digest.unwrap_or(stored);
        if actual_digest.as_ref() != stored.as_slice() || actual_digest.as_ref() != expected.as_slice() {
            return Err(SnapshotError::DigestMismatch {
                expected: codec::hex(&stored),
                actual: codec::hex(actual_digest.as_ref()),
            });
        }
        if declared != self.tally.record_count {
            return Err(SnapshotError::CountMismatch {
                declared,
                actual: self.tally.record_count,
            });
        }
        let end = self.input.offset();
        if !self.input.at_eof()? {
            return Err(SnapshotError::TrailingData { offset: end });
        }
        self.verified_digest = Some(stored);
        self.state = State::Done(Box::new(Inspection {
            meta: self.meta.clone(),
            format_version: self.format_version,
            record_count: self.tally.record_count,
            total_bytes: end,
            kinds: self.tally.kinds.clone(),
            sha256_hex: codec::hex(&stored),
        }));
        Ok(())
    }
}

impl<R: Read + Seek> SnapshotReader<R> {
    /// Verifies the whole archive in one streaming pass, rewinds to where the archive started, and returns a
    /// reader over it. No record is ever yielded from an archive whose digest, count or framing fails.
    ///
    /// The second pass checks the digest again and requires it to equal the first pass's, so an input changed
    /// between the passes ends in [`SnapshotError::DigestMismatch`]; records already yielded by then came from
    /// the changed input, so callers that share the file with a writer must still stage until `Ok(None)`.
    pub fn open_verified(input: R) -> Result<Self, SnapshotError> {
        Self::open_verified_with_max_record_len(input, DEFAULT_MAX_RECORD_LEN)
    }

    /// [`open_verified`](Self::open_verified) with a record length limit.
    pub fn open_verified_with_max_record_len(
        mut input: R,
        max_record_len: u32,
    ) -> Result<Self, SnapshotError> {
        let start = input.stream_position()?;
        let mut first_pass = SnapshotReader::with_max_record_len(&mut input, max_record_len)?;
        first_pass.drain()?;
        let verified_digest = first_pass.verified_digest;
        input.seek(SeekFrom::Start(start))?;
        let mut reader = Self::with_max_record_len(input, max_record_len)?;
        reader.expected_digest = verified_digest;
        Ok(reader)
    }
}

impl<R: Read> std::fmt::Debug for SnapshotReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Records => "records",
            State::Done(_) => "done",
            State::Poisoned => "poisoned",
        };
        f.debug_struct("SnapshotReader")
            .field("meta", &self.meta)
            .field("format_version", &self.format_version)
            .field("records_read", &self.tally.record_count)
            .field("offset", &self.input.offset())
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Checks a whole archive in one streaming pass without building any state: header, every frame, record count,
/// digest, and that nothing follows the trailer. Returns the archive's figures.
pub fn verify<R: Read>(input: R) -> Result<Inspection, SnapshotError> {
    verify_with_max_record_len(input, DEFAULT_MAX_RECORD_LEN)
}

/// [`verify`] with a record length limit.
pub fn verify_with_max_record_len<R: Read>(
    input: R,
    max_record_len: u32,
) -> Result<Inspection, SnapshotError> {
    SnapshotReader::with_max_record_len(input, max_record_len)?.verify_rest()
}

/// The metadata plus record count and payload bytes per kind, as `consul snapshot inspect` reports them.
/// The archive is fully verified first: figures of a corrupt archive are never returned.
pub fn inspect<R: Read>(input: R) -> Result<Inspection, SnapshotError> {
    verify(input)
}

/// A buffered reader that feeds every consumed byte to SHA-256 until told to stop, and counts the offset.
///
/// Hashing is lazy: consumed bytes are hashed a buffer-load at a time (when the buffer is refilled, or when the
/// digest is taken), not per read, which keeps small records cheap.
struct HashingInput<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Next unconsumed byte in `buf`.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// `buf[..hashed]` has been fed to the digest; `hashed <= pos`.
    hashed: usize,
    digest: Option<digest::Context>,
    /// Absolute offset of `buf[pos]`.
    offset: u64,
}

impl<R: Read> HashingInput<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            pos: 0,
            end: 0,
            hashed: 0,
            digest: Some(digest::Context::new(&digest::SHA256)),
            offset: 0,
        }
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn hash_consumed(&mut self) {
        if let Some(digest) = &mut self.digest {
            digest.update(&self.buf[self.hashed..self.pos]);
        }
        self.hashed = self.pos;
    }

    /// Refills the empty buffer. Returns the number of bytes now available; 0 means end of input.
    fn fill(&mut self) -> Result<usize, SnapshotError> {
        self.hash_consumed();
        self.pos = 0;
        self.end = 0;
        self.hashed = 0;
        loop {
            match self.inner.read(&mut self.buf) {
                // A `Read` that claims more bytes than the buffer holds breaks its contract; refuse it rather
                // than slice past the buffer.
                Ok(n) if n > self.buf.len() => {
                    return Err(SnapshotError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the input reported reading more bytes than the buffer holds",
                    )));
                }
                Ok(n) => {
                    self.end = n;
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(SnapshotError::Io(error)),
            }
        }
    }

    fn read_exact(&mut self, out: &mut [u8], what: &'static str) -> Result<(), SnapshotError> {
        let started_at = self.offset;
        // Fast path: everything is already buffered.
        if let Some(available) = self.buf.get(self.pos..self.end)
            && let Some(bytes) = available.get(..out.len())
        {
            out.copy_from_slice(bytes);
            self.consume(out.len());
            return Ok(());
        }
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.end && self.fill()? == 0 {
                return Err(SnapshotError::Truncated {
                    what,
                    offset: started_at,
                });
            }
            let n = (self.end - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.consume(n);
            done += n;
        }
        Ok(())
    }

    /// Appends exactly `len` bytes to `out`, growing it as bytes arrive.
    fn read_vec(&mut self, len: usize, out: &mut Vec<u8>, what: &'static str) -> Result<(), SnapshotError> {
        let started_at = self.offset;
        out.reserve_exact(len.min(INITIAL_PAYLOAD_RESERVE));
        let mut remaining = len;
        while remaining > 0 {
            if self.pos == self.end && self.fill()? == 0 {
                return Err(SnapshotError::Truncated {
                    what,
                    offset: started_at,
                });
            }
            let n = (self.end - self.pos).min(remaining);
            out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.consume(n);
            remaining -= n;
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Stops hashing and returns the digest of every byte consumed so far.
    fn finish_digest(&mut self) -> digest::Digest {
        self.hash_consumed();
        match self.digest.take() {
            Some(digest) => digest.finish(),
            // Taking the digest twice would be a bug in this module; an empty-input digest then fails the
            // comparison rather than panicking.
            None => digest::digest(&digest::SHA256, &[]),
        }
    }

    /// True when no byte is left in the input.
    fn at_eof(&mut self) -> Result<bool, SnapshotError> {
        if self.pos < self.end {
            return Ok(false);
        }
        Ok(self.fill()? == 0)
    }
}
