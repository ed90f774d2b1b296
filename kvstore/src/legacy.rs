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
        let upsert = encode_command(&Command::AclTokenUpsert(AclToken::new("a", "s"))).unwrap();
        assert_eq!(upsert.get(1), Some(&ACL_TOKEN_UPSERT_TAG));
        let bootstrap = encode_command(&Command::AclBootstrap {
            token: AclToken::new("a", "s"),
            reset_index: None,
        })
        .unwrap();
        assert_eq!(bootstrap.get(1), Some(&ACL_BOOTSTRAP_TAG));
        let commit = encode_command(&Command::RestoreCommit { restore_id: 1 }).unwrap();
        assert_eq!(commit.get(1), Some(&(FORMAT_2_COMMANDS - 1)));
    }

    /// The format-3 commands' tags: appended after every format-2 command, never to move.
    #[test]
    fn the_format_3_commands_have_the_tags_after_format_2() {
        use crate::command::AclReplicationBatch;
        use crate::model::{AclAuthMethod, AclBindingRule, AclRole};
        let role = AclRole {
            id: "r".into(),
            name: "r".into(),
            description: String::new(),
            policies: Vec::new(),
            service_identities: Vec::new(),
            node_identities: Vec::new(),
            templated_policies: Vec::new(),
            create_index: 0,
            modify_index: 0,
        };
        let method = AclAuthMethod {
            name: "m".into(),
            method_type: "jwt".into(),
            display_name: String::new(),
            description: String::new(),
            max_token_ttl_ms: 0,
            token_locality: String::new(),
            config_json: "{}".into(),
            create_index: 0,
            modify_index: 0,
        };
        let rule = AclBindingRule {
            id: "b".into(),
            description: String::new(),
            auth_method: "m".into(),
            selector: String::new(),
            bind_type: "service".into(),
            bind_name: "web".into(),
            bind_vars_name: String::new(),
            create_index: 0,
            modify_index: 0,
        };
        let pinned: [(Command, u8); 7] = [
            (Command::AclRoleUpsert(role), 19),
            (Command::AclRoleDelete { id: "r".into() }, 20),
            (Command::AclAuthMethodUpsert(method), 21),
            (Command::AclAuthMethodDelete { name: "m".into() }, 22),
            (Command::AclBindingRuleUpsert(rule), 23),
            (Command::AclBindingRuleDelete { id: "b".into() }, 24),
            (Command::AclReplicationBatch(AclReplicationBatch::default()), 25),
        ];
        for (command, tag) in pinned {
            let bytes = encode_command(&command).unwrap();
            assert_eq!(
                bytes.get(..2),
                Some(&[crate::CODEC_VERSION, tag][..]),
                "{command:?}"
            );
            assert_eq!(decode_command(&bytes).unwrap(), command);
            // Formats 1 and 2 never wrote these commands: their version bytes with these tags are refused.
            for old in [1, FORMAT_2] {
                let mut old_bytes = bytes.clone();
                old_bytes[0] = old;
                assert!(matches!(
                    decode_command(&old_bytes),
                    Err(CodecError::Malformed(_))
                ));
            }
        }
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

    fn v2_token() -> AclTokenV2 {
        AclTokenV2 {
            accessor_id: "acc".into(),
            secret_id: "sec".into(),
            description: "made by format 2".into(),
            policies: vec![PolicyLink {
                id: "p1".into(),
                name: "readers".into(),
            }],
            local: false,
            expiration_unix_ms: Some(1_900_000_000_000),
            create_index: 5,
            modify_index: 6,
        }
    }

    fn v2_command(tag: u8, body: Vec<u8>) -> Vec<u8> {
        let mut bytes = vec![FORMAT_2, tag];
        bytes.extend(body);
        bytes
    }

    #[test]
    fn a_format_2_token_converts_with_nothing_new() {
        let token = AclToken::from(v2_token());
        assert_eq!(
            (
                token.accessor_id.as_str(),
                token.secret_id.as_str(),
                token.description.as_str()
            ),
            ("acc", "sec", "made by format 2")
        );
        assert_eq!(token.policies.len(), 1);
        assert_eq!(
            (token.expiration_unix_ms, token.create_index, token.modify_index),
            (Some(1_900_000_000_000), 5, 6)
        );
        assert!(token.roles.is_empty() && token.service_identities.is_empty());
        assert!(token.node_identities.is_empty() && token.templated_policies.is_empty());
        assert_eq!(
            (token.auth_method.as_str(), token.create_time_unix_ms),
            ("", None)
        );
    }

    #[test]
    fn format_2_token_commands_apply_as_tokens_with_nothing_new() {
        let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let policy = crate::model::AclPolicy {
            id: "p1".into(),
            name: "readers".into(),
            description: String::new(),
            rules: String::new(),
            datacenters: Vec::new(),
            create_index: 0,
            modify_index: 0,
        };
        store.apply(1, &Command::AclPolicyUpsert(policy)).unwrap();

        let upsert = decode_command(&v2_command(ACL_TOKEN_UPSERT_TAG, encode(&v2_token()))).unwrap();
        assert_eq!(upsert, Command::AclTokenUpsert(v2_token().into()));
        store.apply(2, &upsert).unwrap();
        let stored = store.acl_token("acc").unwrap().value.unwrap();
        assert_eq!((stored.create_index, stored.roles.len()), (2, 0));

        let body = encode(&(v2_token(), Some(7u64)));
        let bootstrap = decode_command(&v2_command(ACL_BOOTSTRAP_TAG, body)).unwrap();
        assert_eq!(
            bootstrap,
            Command::AclBootstrap {
                token: v2_token().into(),
                reset_index: Some(7),
            }
        );
        // Without the bootstrap: no reset index is needed, and the secret matches.
        let fresh = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let bootstrap =
            decode_command(&v2_command(ACL_BOOTSTRAP_TAG, encode(&(v2_token(), None::<u64>)))).unwrap();
        assert!(matches!(
            fresh.apply(1, &bootstrap).unwrap(),
            crate::Outcome::AclBootstrapped(_)
        ));

        // A format-2 command whose token has today's shape is refused, not misread.
        let today = encode(&AclToken::from(v2_token()));
        assert!(decode_command(&v2_command(ACL_TOKEN_UPSERT_TAG, today)).is_err());
        // Format-2 commands that did not change decode as today.
        let mut delete = encode_command(&Command::AclTokenDelete {
            accessor_id: "acc".into(),
        })
        .unwrap();
        delete[0] = FORMAT_2;
        assert!(matches!(
            decode_command(&delete).unwrap(),
            Command::AclTokenDelete { .. }
        ));
    }

    #[test]
    fn format_1_and_2_restore_chunks_keep_their_tokens() {
        let session = Session::from(v1_session());
        let v2_records = vec![
            StateRecordV2::Session(session.clone()),
            StateRecordV2::AclToken(v2_token()),
            StateRecordV2::TableIndex {
                table: IndexedTable::AclTokens,
                index: 6,
            },
        ];
        let bytes = v2_command(RESTORE_CHUNK_TAG, encode(&(4u64, v2_records)));
        let expected = vec![
            StateRecord::Session(session),
            StateRecord::AclToken(v2_token().into()),
            StateRecord::TableIndex {
                table: IndexedTable::AclTokens,
                index: 6,
            },
        ];
        assert_eq!(
            decode_command(&bytes).unwrap(),
            Command::RestoreChunk {
                restore_id: 4,
                records: expected
            }
        );

        let mut v1 = vec![1, RESTORE_CHUNK_TAG];
        v1.extend(encode(&(5u64, vec![StateRecordV1::AclToken(v2_token())])));
        assert_eq!(
            decode_command(&v1).unwrap(),
            Command::RestoreChunk {
                restore_id: 5,
                records: vec![StateRecord::AclToken(v2_token().into())]
            }
        );
        // A format-1 token command has the format-2 token shape too.
        let mut v1_upsert = vec![1, ACL_TOKEN_UPSERT_TAG];
        v1_upsert.extend(encode(&v2_token()));
        assert_eq!(
            decode_command(&v1_upsert).unwrap(),
            Command::AclTokenUpsert(v2_token().into())
        );
    }

    #[test]
    fn a_token_stored_in_format_2_is_read_back_exported_and_deleted() {
        let store = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let mut batch = Batch::new();
        batch.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::AclTokens,
            key: b"acc".to_vec(),
            value: encode(&v2_token()),
        });
        batch.push(BatchOp::Put {
            slot: Slot::Live,
            table: Table::AclTokenSecrets,
            key: b"sec".to_vec(),
            value: b"acc".to_vec(),
        });
        store.backend.commit(batch).unwrap();
        let expected = AclToken::from(v2_token());
        assert_eq!(store.acl_token("acc").unwrap().value, Some(expected.clone()));
        assert_eq!(
            store.acl_token_by_secret("sec").unwrap().value,
            Some(expected.clone())
        );
        assert_eq!(store.acl_tokens().unwrap().value, vec![expected.clone()]);
        assert_eq!(store.dump().unwrap(), vec![StateRecord::AclToken(expected)]);
        store
            .apply(
                1,
                &Command::AclTokenDelete {
                    accessor_id: "acc".into(),
                },
            )
            .unwrap();
        assert!(store.acl_token_by_secret("sec").unwrap().value.is_none());
    }

    #[test]
    fn a_format_2_token_in_an_archive_is_restored() {
        let record = tribune_snapshot::Record {
            kind: crate::ACL_TOKEN_RECORD,
            payload: encode(&v2_token()),
        };
        assert_eq!(
            StateRecord::from_archive(&record).unwrap(),
            StateRecord::AclToken(v2_token().into())
        );
    }

    #[test]
    fn the_two_token_formats_are_never_confused() {
        let v2 = encode(&v2_token());
        // A format-2 record runs out when read as today's shape...
        assert!(crate::codec::decode_record::<AclToken>(&v2).is_err());
        assert_eq!(AclToken::decode_stored(&v2).unwrap(), AclToken::from(v2_token()));
        // ...and today's records, from the emptiest to the fullest, leave bytes over as format 2.
        let mut current = AclToken::new("acc", "");
        let emptiest = encode(&current);
        assert!(crate::codec::decode_record::<AclTokenV2>(&emptiest).is_err());
        assert_eq!(AclToken::decode_stored(&emptiest).unwrap(), current);
        current = AclToken::from(v2_token());
        current.roles = vec![crate::model::RoleLink {
            id: "r".into(),
            name: "ops".into(),
        }];
        current.service_identities = vec![crate::model::ServiceIdentity {
            service_name: "web".into(),
            datacenters: vec!["dc2".into()],
        }];
        current.node_identities = vec![crate::model::NodeIdentity {
            node_name: "n1".into(),
            datacenter: "dc1".into(),
        }];
        current.templated_policies = vec![crate::model::TemplatedPolicy {
            template_name: "builtin/service".into(),
            name: "api".into(),
            datacenters: Vec::new(),
        }];
        current.auth_method = "k8s".into();
        current.create_time_unix_ms = Some(1_700_000_000_000);
        let fullest = encode(&current);
        assert!(crate::codec::decode_record::<AclTokenV2>(&fullest).is_err());
        assert_eq!(AclToken::decode_stored(&fullest).unwrap(), current);
        assert!(AclToken::decode_stored(&[0xff, 0xff]).is_err());
    }

    proptest::proptest! {
        /// Whatever the contents, today's token is never read as format 2, and format 2's never as today's.
        #[test]
        fn token_formats_are_never_confused_for_any_contents(
            accessor in "[a-z0-9-]{0,40}",
            description in ".{0,40}",
            policies in proptest::collection::vec(("[a-z]{0,8}", "[a-z]{0,8}"), 0..4),
            local in proptest::prelude::any::<bool>(),
            expiration in proptest::option::of(proptest::prelude::any::<u64>()),
            indexes in (proptest::prelude::any::<u64>(), proptest::prelude::any::<u64>()),
            roles in proptest::collection::vec("[a-z]{0,8}", 0..3),
            auth_method in "[a-z]{0,8}",
            create_time in proptest::option::of(proptest::prelude::any::<u64>()),
        ) {
            let old = AclTokenV2 {
                accessor_id: accessor.clone(),
                secret_id: "s".into(),
                description,
                policies: policies.into_iter().map(|(id, name)| PolicyLink { id, name }).collect(),
                local,
                expiration_unix_ms: expiration,
                create_index: indexes.0,
                modify_index: indexes.1,
            };
            let old_bytes = encode(&old);
            proptest::prop_assert!(crate::codec::decode_record::<AclToken>(&old_bytes).is_err());
            proptest::prop_assert_eq!(AclToken::decode_stored(&old_bytes).unwrap(), AclToken::from(old.clone()));
            let mut current = AclToken::from(old);
            current.roles = roles.into_iter().map(|id| crate::model::RoleLink { id, name: String::new() }).collect();
            current.auth_method = auth_method;
            current.create_time_unix_ms = create_time;
            let bytes = encode(&current);
            proptest::prop_assert!(crate::codec::decode_record::<AclTokenV2>(&bytes).is_err());
            proptest::prop_assert_eq!(AclToken::decode_stored(&bytes).unwrap(), current);
        }
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
