//! Serde glue that encodes `Vec<u8>` fields as one byte string instead of a sequence of numbers.
//!
//! With bincode the bytes on the wire are the same (a length, then the bytes), but encoding and
//! decoding become one copy instead of a per-byte loop. Self-describing formats (JSON) that hand back a
//! sequence are still accepted.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Cap the preallocation: the length hint comes from the input.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::codec::{decode_record, encode_record};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        value: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Bytes {
        #[serde(with = "super")]
        value: Vec<u8>,
    }

    #[test]
    fn same_bytes_on_the_wire_as_a_plain_vec() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let plain = encode_record(&Plain { value: value.clone() });
            let bytes = encode_record(&Bytes { value: value.clone() });
            assert_eq!(plain, bytes, "len {len}");
            assert_eq!(
                decode_record::<Bytes>(&plain).unwrap(),
                Bytes { value: value.clone() }
            );
            assert_eq!(decode_record::<Plain>(&bytes).unwrap(), Plain { value });
        }
    }

    #[test]
    fn a_truncated_byte_string_is_an_error() {
        let mut encoded = encode_record(&Bytes { value: vec![7; 40] });
        encoded.truncate(20);
        assert!(decode_record::<Bytes>(&encoded).is_err());
    }
}
