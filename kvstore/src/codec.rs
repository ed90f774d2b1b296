//! The one place commands and stored records are turned into bytes: serde + bincode 2.
//!
//! A command is `[CODEC_VERSION][bincode body]`. Decoding checks the version byte, bounds every
//! length prefix by [`MAX_COMMAND_BYTES`] before allocating, rejects trailing bytes, and never panics.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::Command;
use crate::error::CodecError;

/// Version byte written in front of every encoded command. Versions 1 (sessions without
/// `node_checks`) and 2 (tokens without roles, identities and auth method) are still read; see the
/// `legacy` module.
pub const CODEC_VERSION: u8 = 3;

/// The oldest command version [`decode_command`] reads.
const OLDEST_CODEC_VERSION: u8 = 1;

/// Largest encoded command accepted: a full transaction (128 ops of 512 KiB) with room to spare.
pub const MAX_COMMAND_BYTES: usize = 96 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_COMMAND_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_COMMAND_BYTES>()
}

/// The oldest format that can carry `command`. Format 3 changed only the token's shape and added
/// commands, so every other command is written as format 2, whose bytes it has: a server of the
/// previous release can then apply everything but the new ACL commands during a rolling upgrade.
fn oldest_format_for(command: &Command) -> u8 {
    match command {
        Command::KvSet { .. }
        | Command::KvCas { .. }
        | Command::KvDelete { .. }
        | Command::KvDeleteCas { .. }
        | Command::KvDeleteTree { .. }
        | Command::KvLock { .. }
        | Command::KvUnlock { .. }
        | Command::Txn { .. }
        | Command::SessionCreate(_)
        | Command::SessionDestroy { .. }
        | Command::AclTokenDelete { .. }
        | Command::AclPolicyUpsert(_)
        | Command::AclPolicyDelete { .. }
        | Command::ReapTombstones { .. }
        | Command::RestoreBegin { .. }
        | Command::RestoreCommit { .. } => crate::legacy::FORMAT_2,
        // Tokens changed shape; restore chunks carry tokens; the rest is new.
        _ => CODEC_VERSION,
    }
}

/// Encodes a command for the raft log, in the oldest format that carries it.
pub fn encode_command(command: &Command) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![oldest_format_for(command)];
    bincode::serde::encode_into_std_write(command, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a command from raft log bytes. Any input, however malformed, gives a value or a typed error.
pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        CODEC_VERSION => decode_exact(body),
        crate::legacy::FORMAT_2 => crate::legacy::decode_command_v2(body, decode_exact),
        OLDEST_CODEC_VERSION => crate::legacy::decode_command_v1(body, decode_exact),
        found => Err(CodecError::UnknownVersion {
            found,
            supported: CODEC_VERSION,
        }),
    }
}

/// Decodes exactly `bytes` as one `T`: malformed input or bytes left over are errors.
pub(crate) fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

impl Command {
    /// Same as [`encode_command`].
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        encode_command(self)
    }

    /// Same as [`decode_command`].
    pub fn decode(bytes: &[u8]) -> Result<Command, CodecError> {
        decode_command(bytes)
    }
}

/// Encodes a stored record. The records are plain structs of strings, integers and byte vectors, which
/// bincode always encodes; the empty fallback keeps this path panic-free all the same.
pub(crate) fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).unwrap_or_default()
}

/// Decodes a stored record, rejecting trailing bytes.
pub(crate) fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    decode_exact(bytes).map_err(|e| e.to_string())
}

/// A record type kept in a table: how bytes that this or an earlier version stored are read.
pub(crate) trait StoredRecord: DeserializeOwned {
    /// Decodes a stored record, in today's format or an earlier one.
    fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        decode_record(bytes)
    }
}

impl StoredRecord for crate::model::KvEntry {}
impl StoredRecord for crate::model::Tombstone {}
impl StoredRecord for crate::model::AclRole {}
impl StoredRecord for crate::model::AclAuthMethod {}
impl StoredRecord for crate::model::AclBindingRule {}

impl StoredRecord for crate::model::AclToken {
    fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        decode_record::<Self>(bytes).or_else(|current| {
            decode_record::<crate::legacy::AclTokenV2>(bytes)
                .map(Self::from)
                .map_err(|_| current)
        })
    }
}
impl StoredRecord for crate::model::AclPolicy {}
impl StoredRecord for crate::catalog::Node {}
impl StoredRecord for crate::catalog::ServiceInstance {}
impl StoredRecord for crate::catalog::HealthCheck {}
impl StoredRecord for crate::model::AclBootstrapState {}

impl StoredRecord for crate::model::Session {
    fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        decode_record::<Self>(bytes).or_else(|current| {
            decode_record::<crate::legacy::SessionV1>(bytes)
                .map(Self::from)
                .map_err(|_| current)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::TxnOp;
    use proptest::prelude::*;

    #[test]
    fn round_trips_a_transaction() {
        let cmd = Command::Txn {
            ops: vec![
                TxnOp::Set {
                    key: "a".into(),
                    value: b"1".to_vec(),
                    flags: 7,
                },
                TxnOp::DeleteCas {
                    key: "b".into(),
                    index: 3,
                },
            ],
        };
        let bytes = encode_command(&cmd).unwrap();
        // Transactions did not change in format 3: written so the previous release reads them too.
        assert_eq!(bytes[0], crate::legacy::FORMAT_2);
        assert_eq!(decode_command(&bytes).unwrap(), cmd);
        assert_eq!(Command::decode(&cmd.encode().unwrap()).unwrap(), cmd);
    }

    #[test]
    fn rejects_empty_unknown_version_and_trailing_bytes() {
        assert!(matches!(decode_command(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode_command(&[9, 0]),
            Err(CodecError::UnknownVersion { found: 9, .. })
        ));
        let mut bytes = encode_command(&Command::KvDelete { key: "k".into() }).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_command(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        // Variant 0 (KvSet), then a key length claiming ~2^64 bytes.
        let bytes = [
            CODEC_VERSION,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(matches!(decode_command(&bytes), Err(CodecError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_command(&bytes);
        }

        #[test]
        fn decoding_mutated_commands_never_panics(flip in 0usize..64, bit in 0u8..8) {
            let cmd = Command::KvLock { key: "svc/leader".into(), value: b"me".to_vec(), flags: 1, session: "s1".into() };
            let mut bytes = encode_command(&cmd).unwrap();
            let at = flip % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = decode_command(&bytes);
        }
    }
}

#[cfg(test)]
mod format_choice_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::AclToken;

    /// What the previous release can read is written in its format: its servers keep applying KV and
    /// session commands while a rolling upgrade is under way.
    #[test]
    fn commands_that_did_not_change_are_written_in_format_2() {
        let unchanged = Command::KvSet {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 0,
        };
        let bytes = encode_command(&unchanged).unwrap();
        assert_eq!(bytes.first(), Some(&crate::legacy::FORMAT_2));
        assert_eq!(decode_command(&bytes).unwrap(), unchanged);
        // The body is exactly what format 3 would write.
        let mut as_format_3 = bytes.clone();
        as_format_3[0] = CODEC_VERSION;
        assert_eq!(decode_command(&as_format_3).unwrap(), unchanged);

        let token = Command::AclTokenUpsert(AclToken::new("a", "s"));
        let bytes = encode_command(&token).unwrap();
        assert_eq!(bytes.first(), Some(&CODEC_VERSION));
        assert_eq!(decode_command(&bytes).unwrap(), token);
    }
}
