//! Byte-level constants of the format and the bincode configuration.

use bincode::config::{Configuration, Limit};
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// First eight bytes of every archive. The high first byte catches 7-bit channels and text-mode transfers,
/// the trailing newline catches newline conversion.
pub(crate) const MAGIC: [u8; 8] = *b"\x89TRBSNP\n";
/// Frame tag of a record frame.
pub(crate) const TAG_RECORD: u8 = b'R';
/// Frame tag of the trailer.
pub(crate) const TAG_TRAILER: u8 = b'T';
/// tag + kind + payload length.
pub(crate) const RECORD_HEADER_LEN: usize = 1 + 2 + 4;
/// Length of a SHA-256 digest.
pub(crate) const DIGEST_LEN: usize = 32;

/// The one bincode configuration of format version 1: little endian, variable-length integers. It is part of the
/// format: changing it requires a new format version.
const ENCODE_CONFIG: Configuration = bincode::config::standard();

pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    bincode::serde::encode_into_std_write(value, out, ENCODE_CONFIG)
}

/// Decodes `bytes` with a bincode allocation limit scaled to the input.
///
/// bincode allocates a string's or byte vector's declared length before reading it, so an unbounded decode of a
/// corrupt length would try to allocate up to 2^64 bytes. A byte limit caps everything a decode may allocate
/// for strings and byte sequences, and a valid payload never claims more than its own length, so a limit at
/// least the payload's size rejects only corrupt input. bincode takes the limit as a const generic: picking the
/// smallest of a few sizes keeps the worst allocation within 16 times the payload (or 4 KiB), with six
/// instantiations per type.
pub(crate) fn decode_bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    fn with<T: DeserializeOwned, const N: usize>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
        let config: Configuration<_, _, Limit<N>> = ENCODE_CONFIG.with_limit::<N>();
        bincode::serde::decode_from_slice(bytes, config)
    }
    match bytes.len() {
        len if len <= 4 * KIB => with::<T, { 4 * KIB }>(bytes),
        len if len <= 64 * KIB => with::<T, { 64 * KIB }>(bytes),
        len if len <= MIB => with::<T, { MIB }>(bytes),
        len if len <= 16 * MIB => with::<T, { 16 * MIB }>(bytes),
        len if len <= 256 * MIB => with::<T, { 256 * MIB }>(bytes),
        // Payload lengths are u32 on the wire, so 4 GiB covers every readable payload.
        _ => with::<T, { u32::MAX as usize }>(bytes),
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}
