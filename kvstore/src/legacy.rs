//! What earlier versions of this crate wrote, read back as today's types.
//!
//! Raft logs, RocksDB tables and snapshot archives outlive the binary that wrote them, so every
//! encoding this crate ever wrote stays readable. Two changes so far:
//!
//! - Format 2: sessions gained `node_checks`. A session written before it was bound to no check, so
//!   it comes back with `node_checks` empty, which is exactly how it behaved.
//! - Format 3: tokens gained role links, service and node identities, templated policies, an auth
//!   method and a creation time. A token written before had none of them, so it comes back with
//!   them empty (and no creation time). Roles, auth methods and binding rules are new records and
//!   commands; formats 1 and 2 never held them.
//!
//! Commands carry their format in their first byte, so a command is never guessed at. Records in
//! tables and archives carry no version of their own, yet each old shape can be told apart from
//! today's with certainty:
//!
//! - Sessions: after `ttl`, format 1 holds two integers (`create_index`, `modify_index`), format 2 a
//!   list length, its strings and the same two integers: at least three values. Format-1 bytes read
//!   as format 2 therefore always run out, and format-2 bytes read as format 1 always leave bytes
//!   over, which the decoders reject.
//! - Tokens: format 3 appends its fields after `modify_index`, so a format-3 token is a format-2
//!   token followed by at least six more values (four list lengths, a string length, an option tag).
//!   Format-2 bytes read as format 3 decode the same leading fields and then always run out;
//!   format-3 bytes read as format 2 always leave at least six bytes over.

use std::time::Duration;

use serde::Deserialize;

use crate::command::Command;
use crate::error::CodecError;
use crate::model::{
    AclBootstrapState, AclPolicy, AclToken, IndexedTable, KvEntry, NewSession, PolicyLink, Session,
    SessionBehavior, StateRecord, Tombstone,
};

/// The version byte of format-2 commands.
pub(crate) const FORMAT_2: u8 = 2;

/// The bincode tag of [`Command::SessionCreate`]: a format-1 command with this tag holds a
/// format-1 session. (Tags are variant positions; a test pins them.)
pub(crate) const SESSION_CREATE_TAG: u8 = 8;
/// The bincode tag of [`Command::AclTokenUpsert`], whose token has the format-2 shape in formats 1
/// and 2.
pub(crate) const ACL_TOKEN_UPSERT_TAG: u8 = 10;
/// The bincode tag of [`Command::AclBootstrap`], whose token has the format-2 shape in formats 1
/// and 2.
pub(crate) const ACL_BOOTSTRAP_TAG: u8 = 14;
/// The bincode tag of [`Command::RestoreChunk`], whose records may hold format-1 sessions and
/// format-2 tokens.
pub(crate) const RESTORE_CHUNK_TAG: u8 = 17;
/// How many command variants formats 1 and 2 had: a higher tag was never written by them.
pub(crate) const FORMAT_2_COMMANDS: u8 = 19;

/// A session as format 1 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct SessionV1 {
    id: String,
    name: String,
    node: String,
    lock_delay: Duration,
    behavior: SessionBehavior,
    ttl: Option<Duration>,
    create_index: u64,
    modify_index: u64,
}

impl From<SessionV1> for Session {
    fn from(s: SessionV1) -> Self {
        Session {
            id: s.id,
            name: s.name,
            node: s.node,
            lock_delay: s.lock_delay,
            behavior: s.behavior,
            ttl: s.ttl,
            node_checks: Vec::new(),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// A session to create, as a format-1 command carried it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct NewSessionV1 {
    id: String,
    name: String,
    node: String,
    lock_delay: Duration,
    behavior: SessionBehavior,
    ttl: Option<Duration>,
}

impl From<NewSessionV1> for NewSession {
    fn from(s: NewSessionV1) -> Self {
        NewSession {
            id: s.id,
            name: s.name,
            node: s.node,
            lock_delay: s.lock_delay,
            behavior: s.behavior,
            ttl: s.ttl,
            node_checks: Vec::new(),
        }
    }
}

/// A token as formats 1 and 2 stored it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct AclTokenV2 {
    accessor_id: String,
    secret_id: String,
    description: String,
    policies: Vec<PolicyLink>,
    local: bool,
    expiration_unix_ms: Option<u64>,
    create_index: u64,
    modify_index: u64,
}

impl From<AclTokenV2> for AclToken {
    fn from(t: AclTokenV2) -> Self {
        AclToken {
            description: t.description,
            policies: t.policies,
            local: t.local,
            expiration_unix_ms: t.expiration_unix_ms,
            create_index: t.create_index,
            modify_index: t.modify_index,
            ..AclToken::new(t.accessor_id, t.secret_id)
        }
    }
}

/// [`StateRecord`] as format 1 encoded it: the same first variants in the same order.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) enum StateRecordV1 {
    Kv(KvEntry),
    Tombstone(Tombstone),
    Session(SessionV1),
    AclToken(AclTokenV2),
    AclPolicy(AclPolicy),
    TableIndex { table: IndexedTable, index: u64 },
    AclBootstrap(AclBootstrapState),
}

impl From<StateRecordV1> for StateRecord {
    fn from(r: StateRecordV1) -> Self {
        match r {
            StateRecordV1::Kv(v) => StateRecord::Kv(v),
            StateRecordV1::Tombstone(v) => StateRecord::Tombstone(v),
            StateRecordV1::Session(v) => StateRecord::Session(v.into()),
            StateRecordV1::AclToken(v) => StateRecord::AclToken(v.into()),
            StateRecordV1::AclPolicy(v) => StateRecord::AclPolicy(v),
            StateRecordV1::TableIndex { table, index } => StateRecord::TableIndex { table, index },
            StateRecordV1::AclBootstrap(v) => StateRecord::AclBootstrap(v),
        }
    }
}

/// [`StateRecord`] as format 2 encoded it: today's sessions, format-2 tokens, no roles, auth methods
/// or binding rules.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) enum StateRecordV2 {
    Kv(KvEntry),
    Tombstone(Tombstone),
    Session(Session),
    AclToken(AclTokenV2),
    AclPolicy(AclPolicy),
    TableIndex { table: IndexedTable, index: u64 },
    AclBootstrap(AclBootstrapState),
}

impl From<StateRecordV2> for StateRecord {
    fn from(r: StateRecordV2) -> Self {
        match r {
            StateRecordV2::Kv(v) => StateRecord::Kv(v),
            StateRecordV2::Tombstone(v) => StateRecord::Tombstone(v),
            StateRecordV2::Session(v) => StateRecord::Session(v),
            StateRecordV2::AclToken(v) => StateRecord::AclToken(v.into()),
            StateRecordV2::AclPolicy(v) => StateRecord::AclPolicy(v),
            StateRecordV2::TableIndex { table, index } => StateRecord::TableIndex { table, index },
            StateRecordV2::AclBootstrap(v) => StateRecord::AclBootstrap(v),
        }
    }
}

/// Decodes the body of a format-1 command (after its version byte). Session creation, the two token
/// commands and restore chunks changed shape since; every other command is encoded as it is today.
pub(crate) fn decode_command_v1(
    body: &[u8],
    decode: impl Fn(&[u8]) -> Result<Command, CodecError>,
) -> Result<Command, CodecError> {
    match body.split_first() {
        Some((&SESSION_CREATE_TAG, rest)) => {
            let session: NewSessionV1 = crate::codec::decode_exact(rest)?;
            Ok(Command::SessionCreate(session.into()))
        }
        Some((&RESTORE_CHUNK_TAG, rest)) => {
            let (restore_id, records): (u64, Vec<StateRecordV1>) = crate::codec::decode_exact(rest)?;
            Ok(Command::RestoreChunk {
                restore_id,
                records: records.into_iter().map(StateRecord::from).collect(),
            })
        }
        _ => decode_command_v2(body, decode),
    }
}

/// Decodes the body of a format-2 command (after its version byte). Only the token commands and
/// restore chunks changed shape; the other commands of format 2 are encoded as they are today.
pub(crate) fn decode_command_v2(
    body: &[u8],
    decode: impl Fn(&[u8]) -> Result<Command, CodecError>,
) -> Result<Command, CodecError> {
    match body.split_first() {
        Some((&ACL_TOKEN_UPSERT_TAG, rest)) => {
            let token: AclTokenV2 = crate::codec::decode_exact(rest)?;
            Ok(Command::AclTokenUpsert(token.into()))
        }
        Some((&ACL_BOOTSTRAP_TAG, rest)) => {
            let (token, reset_index): (AclTokenV2, Option<u64>) = crate::codec::decode_exact(rest)?;
            Ok(Command::AclBootstrap {
                token: token.into(),
                reset_index,
            })
        }
        Some((&RESTORE_CHUNK_TAG, rest)) => {
            let (restore_id, records): (u64, Vec<StateRecordV2>) = crate::codec::decode_exact(rest)?;
            Ok(Command::RestoreChunk {
                restore_id,
                records: records.into_iter().map(StateRecord::from).collect(),
            })
        }
        Some((&tag, _)) if tag >= FORMAT_2_COMMANDS => Err(CodecError::Malformed(format!(
            "command tag {tag} did not exist before format 3"
        ))),
        _ => decode(body),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::backend::{Backend, Batch, BatchOp, Slot, Table};
    use crate::codec::{StoredRecord, decode_command, encode_command};
    use crate::store::{Store, StoreConfig};

    /// `PUT /v1/session/create` as format 1 logged it: version 1, tag 8, then id "s1", name "n",
    /// node "a", lock-delay 15 s, behavior release, TTL 10 s (bincode varints, durations as
    /// seconds + nanoseconds).
    const V1_SESSION_CREATE: [u8; 15] = [1, 8, 2, b's', b'1', 1, b'n', 1, b'a', 15, 0, 0, 1, 10, 0];

    fn v1_session() -> SessionV1 {
        SessionV1 {
            id: "s1".into(),
            name: "n".into(),
            node: "a".into(),
            lock_delay: Duration::from_secs(15),
            behavior: SessionBehavior::Release,
            ttl: Some(Duration::from_secs(10)),
            create_index: 3,
            modify_index: 3,
        }
    }

    fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        crate::codec::encode_record(value)
    }

    #[test]
    fn the_pinned_tags_are_the_variant_positions() {
        let create = encode_command(&Command::SessionCreate(NewSessionV1::from_v1_fixture().into())).unwrap();
        assert_eq!(create.get(1), Some(&SESSION_CREATE_TAG));
        let chunk = encode_command(&Command::RestoreChunk {
            restore_id: 1,
            records: Vec::new(),
        })
        .unwrap();
        assert_eq!(chunk.get(1), Some(&RESTORE_CHUNK_TAG));
    }

    impl NewSessionV1 {
        fn from_v1_fixture() -> Self {
            NewSessionV1 {
                id: "s1".into(),
                name: "n".into(),
                node: "a".into(),
                lock_delay: Duration::from_secs(15),
                behavior: SessionBehavior::Release,
                ttl: Some(Duration::from_secs(10)),
            }
        }
    }

    #[test]
    fn a_format_1_session_create_applies_as_a_session_bound_to_no_check() {
        let command = decode_command(&V1_SESSION_CREATE).unwrap();
        let Command::SessionCreate(new) = &command else {
            panic!("decoded {command:?}");
        };
        assert_eq!(new, &NewSession::from(NewSessionV1::from_v1_fixture()));
        assert!(new.node_checks.is_empty());

        let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        store.apply(4, &command).unwrap();
        let stored = store.session("s1").unwrap().value.unwrap();
        assert_eq!(
            (stored.ttl, stored.create_index),
            (Some(Duration::from_secs(10)), 4)
        );
        assert!(stored.node_checks.is_empty());
    }

    #[test]
    fn a_format_1_restore_chunk_keeps_its_sessions() {
        let mut bytes = vec![1, RESTORE_CHUNK_TAG];
        bytes.extend(encode(&(9u64, vec![StateRecordV1::Session(v1_session())])));
        match decode_command(&bytes).unwrap() {
            Command::RestoreChunk { restore_id, records } => {
                assert_eq!(restore_id, 9);
                assert_eq!(records, vec![StateRecord::Session(Session::from(v1_session()))]);
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn other_format_1_commands_decode_as_today() {
        let today = encode_command(&Command::KvDelete { key: "k".into() }).unwrap();
        let mut v1 = today.clone();
        v1[0] = 1;
        assert_eq!(decode_command(&v1).unwrap(), decode_command(&today).unwrap());
    }

    #[test]
    fn a_session_stored_in_format_1_is_read_back_from_the_table() {
        let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let mut batch = Batch::new();
        batch.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::Sessions,
            key: b"s1".to_vec(),
            value: encode(&v1_session()),
        });
        store.backend.commit(batch).unwrap();
        let sessions = store.sessions().unwrap().value;
        assert_eq!(sessions, vec![Session::from(v1_session())]);
        assert_eq!(store.node_sessions("a").unwrap().value.len(), 1);
    }

    #[test]
    fn a_format_1_session_in_an_archive_is_restored() {
        let record = tribune_snapshot::Record {
            kind: crate::SESSION_RECORD,
            payload: encode(&v1_session()),
        };
        assert_eq!(
            StateRecord::from_archive(&record).unwrap(),
            StateRecord::Session(Session::from(v1_session()))
        );
    }

    #[test]
    fn the_two_session_formats_are_never_confused() {
        let v1 = encode(&v1_session());
        let mut current = Session::from(v1_session());
        // A format-1 record must not be taken for a format-2 one with other fields...
        assert!(crate::codec::decode_record::<Session>(&v1).is_err());
        // ...and a format-2 record, with or without checks, is read as itself.
        for checks in [
            vec![],
            vec!["serfHealth".to_string()],
            vec!["a".into(), "b".into()],
        ] {
            current.node_checks = checks;
            let bytes = encode(&current);
            assert!(crate::codec::decode_record::<SessionV1>(&bytes).is_err());
            assert_eq!(Session::decode_stored(&bytes).unwrap(), current);
        }
        // Garbage is an error naming today's format, not a format-1 misreading.
        assert!(Session::decode_stored(&[0xff, 0xff]).is_err());
    }
}
