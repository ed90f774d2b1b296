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
/// corrupt length would try to allocate up to 2^64 bytes. A configured limit caps what one decode may claim.
/// bincode charges every decoded value its in-memory size (a one-byte varint `u128` claims 16 bytes, a string
/// its length), so a valid payload never claims more than [`CLAIM_PER_BYTE`] times its own length: a limit of
/// that many times the payload rejects only corrupt input. The limit is a const generic, so payload sizes are
/// grouped into powers of four: a corrupt payload can make the decoder allocate at most 64 times its size
/// (at least 4 KiB), at the price of 13 instantiations per decoded type.
pub(crate) fn decode_bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    fn with<T: DeserializeOwned, const N: usize>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
        let config: Configuration<_, _, Limit<N>> = ENCODE_CONFIG.with_limit::<N>();
        bincode::serde::decode_from_slice(bytes, config)
    }
    const fn limit(max_payload: usize) -> usize {
        max_payload.saturating_mul(CLAIM_PER_BYTE)
    }
    const K: usize = 1024;
    const M: usize = 1024 * K;
    match bytes.len() {
        len if len <= 256 => with::<T, { limit(256) }>(bytes),
        len if len <= K => with::<T, { limit(K) }>(bytes),
        len if len <= 4 * K => with::<T, { limit(4 * K) }>(bytes),
        len if len <= 16 * K => with::<T, { limit(16 * K) }>(bytes),
        len if len <= 64 * K => with::<T, { limit(64 * K) }>(bytes),
        len if len <= 256 * K => with::<T, { limit(256 * K) }>(bytes),
        len if len <= M => with::<T, { limit(M) }>(bytes),
        len if len <= 4 * M => with::<T, { limit(4 * M) }>(bytes),
        len if len <= 16 * M => with::<T, { limit(16 * M) }>(bytes),
        len if len <= 64 * M => with::<T, { limit(64 * M) }>(bytes),
        len if len <= 256 * M => with::<T, { limit(256 * M) }>(bytes),
        len if len <= 1024 * M => with::<T, { limit(1024 * M) }>(bytes),
        // Payload lengths are u32 on the wire, so this covers every payload a reader accepts.
        _ => with::<T, { limit(u32::MAX as usize) }>(bytes),
    }
}

/// The most bytes bincode charges against its limit per encoded byte: a 16-byte integer encoded in one byte.
const CLAIM_PER_BYTE: usize = 16;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn payloads_at_every_limit_boundary_decode() {
        // Lengths chosen so the encoded payload lands on and just past each bucket boundary.
        for total in [256usize, 257, 4096, 4097, 65_536, 65_537, 1 << 20, (1 << 20) + 1] {
            for varint_len in [3usize, 5] {
                let Some(len) = total.checked_sub(varint_len) else {
                    continue;
                };
                let value = vec![0x5au8; len];
                let mut bytes = Vec::new();
                encode_into(&value, &mut bytes).unwrap();
                let (decoded, used) = decode_bounded::<Vec<u8>>(&bytes).unwrap();
                assert_eq!((decoded.len(), used), (len, bytes.len()));
            }
        }
    }

    #[test]
    fn payloads_of_small_integers_that_claim_the_most_decode() {
        // Every element is a one-byte varint that bincode charges 16 bytes for: the worst valid ratio.
        for len in [10usize, 250, 1000, 4000, 70_000] {
            let value: Vec<u128> = (0..len).map(|i| (i % 200) as u128).collect();
            let mut bytes = Vec::new();
            encode_into(&value, &mut bytes).unwrap();
            let (decoded, _) = decode_bounded::<Vec<u128>>(&bytes).unwrap();
            assert_eq!(decoded, value);
        }
    }

    #[test]
    fn a_declared_length_far_beyond_the_input_is_refused() {
        let mut bytes = vec![0xfc];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_bounded::<String>(&bytes),
            Err(DecodeError::LimitExceeded)
        ));
    }

    proptest! {
        #[test]
        fn nested_strings_and_bytes_round_trip_under_the_limit(
            value in prop::collection::vec((".{0,40}", prop::collection::vec(any::<u8>(), 0..200)), 0..60)
        ) {
            let mut bytes = Vec::new();
            encode_into(&value, &mut bytes).unwrap();
            let (decoded, used) = decode_bounded::<Vec<(String, Vec<u8>)>>(&bytes).unwrap();
            prop_assert_eq!(decoded, value);
            prop_assert_eq!(used, bytes.len());
        }
    }
}
