//! Export and import through tribune-snapshot archives, on every backend: round trips, point-in-time
//! views, and archives that must be refused without touching the live state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;
use std::time::Duration;

use common::*;
use tribune_kvstore::{
    Backend, CheckStatus, Command, ExportOptions, ImportError, ReadView, SessionBehavior, StateRecord, Store,
    Table, Wake, WatchScope,
};
use tribune_snapshot::{RecordKind, SnapshotMeta, SnapshotReader, SnapshotWriter};

fn populate<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &session("s1", "node1", SessionBehavior::Release, Duration::from_secs(5)),
    )
    .unwrap();
    s.apply(2, &lock("svc/leader", "me", "s1")).unwrap();
    for i in 0..50u64 {
        s.apply(
            3 + i,
            &set_flags(&format!("app/{i:03}"), &format!("value {i}"), i),
        )
        .unwrap();
    }
    s.apply(
        53,
        &Command::AclAuthMethodUpsert(auth_method("k8s", "kubernetes")),
    )
    .unwrap();
    s.apply(54, &Command::AclBindingRuleUpsert(binding_rule("b1", "k8s")))
        .unwrap();
    s.apply(55, &Command::AclRoleUpsert(role("r1", "ops", &[])))
        .unwrap();
    // The catalog: a node with two instances and checks, and an extinct service.
    s.apply(
        56,
        &register(
            "node1",
            Some(svc("web-1", "web", &["v1"])),
            vec![
                chk("serfHealth", Some(CheckStatus::Passing), ""),
                chk("web-chk", Some(CheckStatus::Warning), "web-1"),
            ],
        ),
    )
    .unwrap();
    s.apply(57, &add_to("node1", Some(svc("api-1", "api", &[])), vec![]))
        .unwrap();
    s.apply(58, &register("node2", Some(svc("gone", "gone", &[])), vec![]))
        .unwrap();
    s.apply(59, &deregister("node2", None, None)).unwrap();
    s.apply(60, &del_tree("app/04")).unwrap();
    s.apply(61, &Command::AclPolicyUpsert(policy("p1", "readers")))
        .unwrap();
    let mut linked = token("acc", "secret", &["p1"]);
    linked.roles = vec![role_link("r1")];
    s.apply(62, &Command::AclTokenUpsert(linked)).unwrap();
    s.apply(
        63,
        &Command::AclBootstrap {
            token: token("root", "root-secret", &[]),
            reset_index: None,
        },
    )
    .unwrap();
}

fn export_bytes<B: Backend>(s: &Store<B>) -> Vec<u8> {
    let options = ExportOptions {
        term: 3,
        created_at_unix_ms: 1_700_000_000_000,
        ..ExportOptions::default()
    };
    s.export(Vec::new(), &options).unwrap().0
}

fn round_trip<B: Backend>(s: &Store<B>) {
    populate(s);
    let options = ExportOptions {
        term: 3,
        created_at_unix_ms: 1_700_000_000_000,
        ..ExportOptions::default()
    };
    let (bytes, inspection) = s.export(Vec::new(), &options).unwrap();
    assert_eq!(inspection.meta.index, 63);
    assert_eq!(inspection.meta.datacenter, DC);
    assert_eq!(inspection.meta.term, 3);
    let kv_stats = inspection.kinds[&RecordKind(1)];
    assert_eq!(
        kv_stats.count, 41,
        "50 keys minus the 10 of app/04x, plus the lock"
    );
    assert_eq!(inspection.kinds[&RecordKind(2)].count, 10);
    for (kind, what) in [(8, "role"), (9, "auth method"), (10, "binding rule")] {
        assert_eq!(inspection.kinds[&RecordKind(kind)].count, 1, "{what}");
    }
    for (kind, count, what) in [
        (11, 1, "node"),
        (12, 2, "instances"),
        (13, 2, "checks"),
        (14, 2, "service indexes"),
        (15, 1, "node index"),
    ] {
        assert_eq!(inspection.kinds[&RecordKind(kind)].count, count, "{what}");
    }
    // Every record decodes back to what dump() shows, in order.
    let mut reader = SnapshotReader::new(Cursor::new(&bytes)).unwrap();
    let mut records = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        records.push(StateRecord::from_archive(&record).unwrap());
    }
    assert_eq!(records, s.dump().unwrap());
}

fn import_replaces_state<B: Backend>(source: &Store<B>, target: &Store<B>) {
    populate(source);
    let bytes = export_bytes(source);
    target.apply(1, &set("old/key", "x")).unwrap();
    target.apply(500, &set("old/other", "y")).unwrap();
    let report = target.import(Cursor::new(&bytes)).unwrap();
    assert_eq!(report.meta.index, 63);
    assert_eq!(target.dump().unwrap(), source.dump().unwrap());
    assert_eq!(
        target.last_applied(),
        63,
        "the archive's index, even below the old one"
    );
    assert!(target.get("old/key").unwrap().value.is_none());
    // Derived lookups are rebuilt.
    assert_eq!(
        target
            .acl_token_by_secret("secret")
            .unwrap()
            .value
            .unwrap()
            .accessor_id,
        "acc"
    );
    assert_eq!(
        target.acl_policy_by_name("readers").unwrap().value.unwrap().id,
        "p1"
    );
    assert_eq!(target.acl_role_by_name("ops").unwrap().value.unwrap().id, "r1");
    assert_eq!(
        target.acl_token("acc").unwrap().value.unwrap().roles[0].name,
        "ops"
    );
    assert_eq!(target.acl_binding_rules().unwrap().index, 54);
    let view = |s: &Store<B>| catalog_view(s, &["web", "api", "gone"], &["node1", "node2"]);
    assert_eq!(view(target), view(source));
    assert_eq!(target.service_nodes("gone").unwrap().index, 59);
    // The log continues after the snapshot's index; older entries are no-ops.
    assert!(matches!(
        target.apply(63, &set("late", "x")).unwrap(),
        tribune_kvstore::Outcome::AlreadyApplied { .. }
    ));
    let tribune_kvstore::Outcome::SessionDestroyed(inv) = target.apply(64, &destroy("s1")).unwrap() else {
        panic!()
    };
    assert_eq!(inv.held_keys, vec!["svc/leader"]);
    // A plain record stream (consensus's own snapshot format) installs the same way, at its index.
    let records = source.dump().unwrap();
    assert_eq!(
        target
            .import_records(70, records.clone().into_iter().map(Ok))
            .unwrap(),
        records.len() as u64
    );
    assert_eq!(target.dump().unwrap(), records);
    assert_eq!(target.last_applied(), 70);
    // Importing the same archive twice is fine and gives the same state.
    let again = export_bytes(source);
    target.import(Cursor::new(&again)).unwrap();
    assert_eq!(target.dump().unwrap(), source.dump().unwrap());
}

fn bad_archives_change_nothing<B: Backend>(source: &Store<B>, target: &Store<B>) {
    populate(source);
    let bytes = export_bytes(source);
    target.apply(7, &set("keep/me", "1")).unwrap();
    let before = target.dump().unwrap();
    let check = |input: Vec<u8>, what: &str| {
        let err = target.import(Cursor::new(input)).unwrap_err();
        assert_eq!(target.dump().unwrap(), before, "{what}: {err}");
        assert_eq!(target.last_applied(), 7, "{what}");
        err
    };
    // Truncated anywhere after the header: the digest is never reached.
    for cut in [bytes.len() - 1, bytes.len() - 40, bytes.len() / 2, 100] {
        let err = check(bytes[..cut].to_vec(), "truncated");
        assert!(matches!(err, ImportError::Snapshot(_)), "{err}");
    }
    // A flipped bit in the last record: detected only by the trailer digest, after staging.
    let mut tampered = bytes.clone();
    let at = tampered.len() - 45;
    tampered[at] ^= 0x01;
    check(tampered, "tampered");
    // An unknown record kind, in an otherwise valid archive.
    let meta = SnapshotMeta {
        index: 9,
        datacenter: DC.into(),
        ..SnapshotMeta::default()
    };
    let mut writer = SnapshotWriter::new(Vec::new(), &meta).unwrap();
    writer
        .write_record(
            RecordKind(1),
            &tribune_kvstore::KvEntry {
                key: "x".into(),
                value: vec![],
                flags: 0,
                create_index: 1,
                modify_index: 1,
                lock_index: 0,
                session: None,
            },
        )
        .unwrap();
    writer.write_raw(RecordKind(999), b"??").unwrap();
    let err = check(writer.finish().unwrap().0, "unknown kind");
    assert!(matches!(
        err,
        ImportError::UnknownKind {
            kind: RecordKind(999)
        }
    ));
    // Another datacenter.
    let meta = SnapshotMeta {
        index: 9,
        datacenter: "dc2".into(),
        ..SnapshotMeta::default()
    };
    let err = check(
        SnapshotWriter::new(Vec::new(), &meta)
            .unwrap()
            .finish()
            .unwrap()
            .0,
        "other dc",
    );
    assert!(matches!(err, ImportError::DatacenterMismatch { .. }));
    // A record stream that fails part-way.
    let stream = source
        .dump()
        .unwrap()
        .into_iter()
        .take(5)
        .map(Ok)
        .chain([Err(ImportError::Source {
            reason: "connection lost".into(),
        })]);
    let err = target.import_records(99, stream).unwrap_err();
    assert!(matches!(err, ImportError::Source { .. }));
    assert_eq!(target.dump().unwrap(), before);
    assert_eq!(target.last_applied(), 7);
    // A good archive still imports afterwards (no staging leftovers leak in).
    target.import(Cursor::new(&bytes)).unwrap();
    assert_eq!(target.dump().unwrap(), source.dump().unwrap());
}

fn export_view_is_point_in_time<B: Backend>(s: &Store<B>) {
    s.apply(1, &set("a", "1")).unwrap();
    let view = s.backend().export_view().unwrap();
    s.apply(2, &set("a", "2")).unwrap();
    s.apply(3, &set("b", "3")).unwrap();
    let old = view.get(Table::Kv, b"a").unwrap().unwrap();
    let new = s.backend().view().unwrap().get(Table::Kv, b"a").unwrap().unwrap();
    assert_ne!(old, new, "a later write leaked into the view");
    assert!(
        view.get(Table::Kv, b"b").unwrap().is_none(),
        "a later write leaked into the view"
    );
    assert_eq!(s.get("a").unwrap().value.unwrap().value, b"2");
    let mut keys = Vec::new();
    view.scan_prefix(Table::Kv, b"", &mut |k, _| {
        keys.push(k.to_vec());
        true
    })
    .unwrap();
    assert_eq!(keys, vec![b"a".to_vec()]);
}

async fn import_wakes_waiters<B: Backend>(source: &Store<B>, target: &Store<B>) {
    populate(source);
    let bytes = export_bytes(source);
    target.apply(100, &set("w", "1")).unwrap();
    let sub = target
        .watch_hub()
        .subscribe(WatchScope::Prefix("nothing/".into()));
    target.import(Cursor::new(&bytes)).unwrap();
    assert_eq!(
        sub.wait_until(tokio::time::Instant::now()).await,
        Some(Wake::Reset)
    );
}

fn restore_through_the_log_from_an_archive<B: Backend>(source: &Store<B>, target: &Store<B>) {
    populate(source);
    let bytes = export_bytes(source);
    // What a leader does: verify, then propose begin, chunks, commit.
    let mut reader = SnapshotReader::open_verified(Cursor::new(&bytes)).unwrap();
    let mut commands = vec![Command::RestoreBegin { restore_id: 42 }];
    let mut chunk = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        chunk.push(StateRecord::from_archive(&record).unwrap());
        if chunk.len() == 16 {
            commands.push(Command::RestoreChunk {
                restore_id: 42,
                records: std::mem::take(&mut chunk),
            });
        }
    }
    commands.push(Command::RestoreChunk {
        restore_id: 42,
        records: chunk,
    });
    commands.push(Command::RestoreCommit { restore_id: 42 });
    for (i, command) in commands.iter().enumerate() {
        // Commands travel through the codec like log entries.
        let decoded = tribune_kvstore::decode_command(&command.encode().unwrap()).unwrap();
        target.apply(1000 + i as u64, &decoded).unwrap();
    }
    assert_eq!(target.dump().unwrap(), source.dump().unwrap());
}

/// A token as archives written before format 3 hold it.
#[derive(serde::Serialize)]
struct TokenFormat2 {
    accessor_id: String,
    secret_id: String,
    description: String,
    policies: Vec<tribune_kvstore::PolicyLink>,
    local: bool,
    expiration_unix_ms: Option<u64>,
    create_index: u64,
    modify_index: u64,
}

/// An archive from before format 3 (tokens without roles or identities) is imported as is.
fn a_format_2_archive_is_imported<B: Backend>(target: &Store<B>) {
    let meta = SnapshotMeta {
        index: 12,
        datacenter: DC.into(),
        ..SnapshotMeta::default()
    };
    let mut writer = SnapshotWriter::new(Vec::new(), &meta).unwrap();
    writer
        .write_record(
            tribune_kvstore::ACL_TOKEN_RECORD,
            &TokenFormat2 {
                accessor_id: "acc".into(),
                secret_id: "sec".into(),
                description: "old".into(),
                policies: Vec::new(),
                local: true,
                expiration_unix_ms: None,
                create_index: 3,
                modify_index: 4,
            },
        )
        .unwrap();
    writer
        .write_record(
            tribune_kvstore::TABLE_INDEX_RECORD,
            &(tribune_kvstore::IndexedTable::AclTokens, 4u64),
        )
        .unwrap();
    let (bytes, _) = writer.finish().unwrap();
    target.import(Cursor::new(&bytes)).unwrap();
    let token = target.acl_token_by_secret("sec").unwrap();
    assert_eq!(token.index, 4);
    let token = token.value.unwrap();
    assert_eq!(
        (token.description.as_str(), token.local, token.create_index),
        ("old", true, 3)
    );
    assert!(token.roles.is_empty() && token.auth_method.is_empty());
    assert_eq!(token.create_time_unix_ms, None);
    // Written again, it is today's record.
    let (again, _) = target.export(Vec::new(), &ExportOptions::default()).unwrap();
    let copy = memory();
    copy.import(Cursor::new(&again)).unwrap();
    assert_eq!(copy.dump().unwrap(), target.dump().unwrap());
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;

            #[test]
            fn export_round_trip() {
                let s = $make();
                super::round_trip(&s);
            }

            #[test]
            fn import_replaces_state() {
                super::import_replaces_state(&$make(), &$make());
            }

            #[test]
            fn bad_archives_change_nothing() {
                super::bad_archives_change_nothing(&$make(), &$make());
            }

            #[test]
            fn export_view_is_point_in_time() {
                super::export_view_is_point_in_time(&$make());
            }

            #[tokio::test]
            async fn import_wakes_waiters() {
                super::import_wakes_waiters(&$make(), &$make()).await;
            }

            #[test]
            fn a_format_2_archive_is_imported() {
                super::a_format_2_archive_is_imported(&$make());
            }

            #[test]
            fn restore_through_the_log_from_an_archive() {
                super::restore_through_the_log_from_an_archive(&$make(), &$make());
            }
        }
    };
}

suite!(memory_backend, common::memory);
#[cfg(feature = "rocksdb")]
suite!(rocksdb_backend, common::rocks);
