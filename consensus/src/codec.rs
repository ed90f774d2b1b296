//! One binary encoding for everything this crate stores or sends: bincode 2 over serde, with a
//! decode limit so a corrupt length prefix cannot make us allocate gigabytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest value we ever decode: a log entry batch or a snapshot chunk stays well under it.
pub(crate) const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError {
        reason: e.to_string(),
    })
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError {
        reason: e.to_string(),
    })?;
    if used != bytes.len() {
        return Err(CodecError {
            reason: format!("{} trailing bytes after the value", bytes.len() - used),
        });
    }
    Ok(value)
}

/// Bytes that did not encode or decode as the expected type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct CodecError {
    /// What the codec reported.
    pub(crate) reason: String,
}
