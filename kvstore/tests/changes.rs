//! Delta reads (`Store::changes_since`) on every backend: entries written and keys deleted after an
//! index, the index they report, and the tombstone horizon below which the store answers `None`
//! (after a reap, a reopen, an import and a staged restore).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;

use common::*;
use tribune_kvstore::{
    Backend, Changes, Command, ExportOptions, KvEntry, MemoryBackend, StateRecord, Store, StoreConfig,
    Tombstone, TxnOp,
};

fn keys(entries: &[KvEntry]) -> Vec<(&str, u64)> {
    entries.iter().map(|e| (e.key.as_str(), e.modify_index)).collect()
}

fn stones(deleted: &[Tombstone]) -> Vec<(&str, u64)> {
    deleted.iter().map(|t| (t.key.as_str(), t.index)).collect()
}

/// The delta, checked to report the index a full read of the prefix reports.
fn delta<B: Backend>(s: &Store<B>, prefix: &str, since: u64) -> Changes {
    let read = s
        .changes_since(prefix, since)
        .unwrap()
        .unwrap_or_else(|| panic!("a delta of {prefix:?} after {since}"));
    assert_eq!(
        read.index,
        s.list(prefix).unwrap().index,
        "the index of {prefix:?}"
    );
    assert_eq!(read.value.since, since);
    read.value
}

fn changes_after_puts_deletes_and_delete_tree<B: Backend>(s: &Store<B>) {
    for (i, key) in ["app/a", "app/b", "app/c", "other/x", "app/d/1", "app/d/2"]
        .iter()
        .enumerate()
    {
        s.apply(i as u64 + 1, &set(key, "v")).unwrap();
    }
    let all = delta(s, "app/", 0);
    assert_eq!(
        keys(&all.changed),
        [
            ("app/a", 1),
            ("app/b", 2),
            ("app/c", 3),
            ("app/d/1", 5),
            ("app/d/2", 6)
        ]
    );
    assert!(all.deleted.is_empty());
    assert_eq!(
        all.changed,
        s.list("app/").unwrap().value,
        "a delta from 0 is the whole prefix"
    );
    assert_eq!(
        keys(&delta(s, "app/", 3).changed),
        [("app/d/1", 5), ("app/d/2", 6)]
    );

    s.apply(7, &set("app/a", "changed")).unwrap();
    s.apply(8, &del("app/b")).unwrap();
    s.apply(9, &del_tree("app/d/")).unwrap();
    s.apply(10, &set("other/y", "v")).unwrap();
    let after = delta(s, "app/", 6);
    assert_eq!(keys(&after.changed), [("app/a", 7)]);
    assert_eq!(after.changed[0].value, b"changed");
    assert_eq!(
        stones(&after.deleted),
        [("app/b", 8), ("app/d/1", 9), ("app/d/2", 9)]
    );
    // A raw prefix, not a folder: `ap` covers `app/`.
    assert_eq!(
        delta(s, "ap", 6),
        Changes {
            since: 6,
            ..after.clone()
        }
    );
    // Nothing after the newest change; `since` beyond the state is an empty delta too.
    for since in [9, 10, 1000] {
        let empty = delta(s, "app/", since);
        assert!(
            empty.changed.is_empty() && empty.deleted.is_empty(),
            "{since}: {empty:?}"
        );
    }
    assert_eq!(s.changes_since("app/", 9).unwrap().unwrap().index, 9);

    // A key deleted and written again is live: changed, not deleted.
    s.apply(11, &set("app/b", "back")).unwrap();
    let again = delta(s, "app/", 6);
    assert_eq!(keys(&again.changed), [("app/a", 7), ("app/b", 11)]);
    assert_eq!(stones(&again.deleted), [("app/d/1", 9), ("app/d/2", 9)]);
    // Deleted again, its tombstone moves to the newer delete.
    s.apply(12, &del("app/b")).unwrap();
    assert_eq!(stones(&delta(s, "app/b", 10).deleted), [("app/b", 12)]);

    // A transaction's writes and deletes count like the verbs'.
    s.apply(
        13,
        &txn(vec![t_set("app/e", "v"), TxnOp::Delete { key: "app/a".into() }]),
    )
    .unwrap();
    let txn_delta = delta(s, "app/", 12);
    assert_eq!(keys(&txn_delta.changed), [("app/e", 13)]);
    assert_eq!(stones(&txn_delta.deleted), [("app/a", 13)]);

    // Changes elsewhere are not in the prefix's delta, whose index stays the prefix's.
    s.apply(14, &del("other/x")).unwrap();
    let quiet = delta(s, "app/", 13);
    assert!(quiet.changed.is_empty() && quiet.deleted.is_empty());
    assert_eq!(s.changes_since("app/", 13).unwrap().unwrap().index, 13);
    // The empty prefix is the whole KV, with the table's index.
    let everything = delta(s, "", 13);
    assert_eq!(stones(&everything.deleted), [("other/x", 14)]);
    assert_eq!(s.changes_since("", 13).unwrap().unwrap().index, 14);
    // A prefix that never held anything reports the table's index, as a full read does.
    assert_eq!(delta(s, "nothing/", 0), Changes::default());
}

fn horizon_rises_with_every_reap<B: Backend>(s: &Store<B>) {
    assert_eq!(
        s.tombstones_complete_after(),
        0,
        "a new store proves every delete"
    );
    for i in 1..=4 {
        s.apply(i, &set(&format!("k{i}"), "v")).unwrap();
    }
    s.apply(5, &del("k1")).unwrap();
    s.apply(6, &del("k2")).unwrap();
    s.apply(7, &del("k3")).unwrap();
    assert_eq!(
        stones(&delta(s, "", 0).deleted),
        [("k1", 5), ("k2", 6), ("k3", 7)]
    );

    s.apply(8, &Command::ReapTombstones { up_to_index: 6 }).unwrap();
    assert_eq!(s.tombstones_complete_after(), 6);
    // k1 and k2's deletes are gone: from before 6 the delta could not be complete.
    for since in [0, 4, 5] {
        assert_eq!(s.changes_since("", since).unwrap(), None, "since {since}");
    }
    assert_eq!(stones(&delta(s, "", 6).deleted), [("k3", 7)]);
    // A reap up to an older index does not lower the horizon.
    s.apply(9, &Command::ReapTombstones { up_to_index: 3 }).unwrap();
    assert_eq!(s.tombstones_complete_after(), 6);
    // A reap that found nothing to remove still raises it: deletes up to there are no longer kept.
    s.apply(10, &Command::ReapTombstones { up_to_index: 9 }).unwrap();
    assert_eq!(s.tombstones_complete_after(), 9);
    assert_eq!(s.changes_since("", 8).unwrap(), None);
    assert_eq!(
        delta(s, "", 9),
        Changes {
            since: 9,
            ..Changes::default()
        }
    );
}

fn horizon_after_reopen<B: Backend>(s: Store<B>, reopen: impl FnOnce(Store<B>) -> Store<B>) {
    s.apply(1, &set("a", "1")).unwrap();
    s.apply(2, &set("b", "2")).unwrap();
    s.apply(3, &del("a")).unwrap();
    assert_eq!(stones(&delta(&s, "", 0).deleted), [("a", 3)]);
    let s = reopen(s);
    assert_eq!(s.last_applied(), 3);
    // The tombstones survived, but nothing in memory says no reap ran before: only deltas from
    // the applied index on are answered.
    assert_eq!(s.tombstones_complete_after(), 3);
    assert_eq!(s.tombstones("").unwrap().len(), 1);
    for since in [0, 2] {
        assert_eq!(s.changes_since("", since).unwrap(), None, "since {since}");
    }
    assert_eq!(
        delta(&s, "", 3),
        Changes {
            since: 3,
            ..Changes::default()
        }
    );
    s.apply(4, &del("b")).unwrap();
    s.apply(5, &set("c", "3")).unwrap();
    let after = delta(&s, "", 3);
    assert_eq!(keys(&after.changed), [("c", 5)]);
    assert_eq!(stones(&after.deleted), [("b", 4)]);
}

fn horizon_after_import_and_staged_restore<B: Backend>(s: &Store<B>) {
    let source = memory();
    source.apply(10, &set("x/a", "1")).unwrap();
    source.apply(11, &set("x/b", "2")).unwrap();
    source.apply(12, &del("x/b")).unwrap();
    let (archive, _) = source.export(Vec::new(), &ExportOptions::default()).unwrap();

    s.apply(1, &set("old", "v")).unwrap();
    assert_eq!(s.tombstones_complete_after(), 0);
    s.import(Cursor::new(&archive)).unwrap();
    assert_eq!(s.tombstones_complete_after(), 12);
    assert_eq!(s.changes_since("x/", 11).unwrap(), None);
    assert_eq!(
        delta(s, "x/", 12),
        Changes {
            since: 12,
            ..Changes::default()
        }
    );
    s.apply(13, &del("x/a")).unwrap();
    assert_eq!(stones(&delta(s, "x/", 12).deleted), [("x/a", 13)]);

    // A staged restore through the log: the horizon moves to the commit's index.
    let records: Vec<StateRecord> = source.dump().unwrap();
    s.apply(14, &Command::RestoreBegin { restore_id: 5 }).unwrap();
    s.apply(
        15,
        &Command::RestoreChunk {
            restore_id: 5,
            records,
        },
    )
    .unwrap();
    assert_eq!(s.tombstones_complete_after(), 12, "nothing live changed yet");
    s.apply(16, &Command::RestoreCommit { restore_id: 5 }).unwrap();
    assert_eq!(s.tombstones_complete_after(), 16);
    assert_eq!(s.changes_since("x/", 15).unwrap(), None);
    assert_eq!(keys(&s.list("x/").unwrap().value), [("x/a", 10)]);
    // A commit of a restore never begun changes nothing, the horizon included.
    assert!(s.apply(17, &Command::RestoreCommit { restore_id: 99 }).is_err());
    assert_eq!(s.tombstones_complete_after(), 16);
}

fn reopen_memory(s: Store<MemoryBackend>) -> Store<MemoryBackend> {
    Store::with_backend(s.into_backend(), StoreConfig::new(DC)).unwrap()
}

mod memory_backend {
    use super::*;

    #[test]
    fn changes_after_puts_deletes_and_delete_tree() {
        super::changes_after_puts_deletes_and_delete_tree(&memory());
    }

    #[test]
    fn horizon_rises_with_every_reap() {
        super::horizon_rises_with_every_reap(&memory());
    }

    #[test]
    fn horizon_after_reopen() {
        super::horizon_after_reopen(memory().store, reopen_memory);
    }

    #[test]
    fn horizon_after_import_and_staged_restore() {
        super::horizon_after_import_and_staged_restore(&memory());
    }
}

#[cfg(feature = "rocksdb")]
mod rocksdb_backend {
    use super::*;
    use tribune_kvstore::RocksBackend;

    #[test]
    fn changes_after_puts_deletes_and_delete_tree() {
        super::changes_after_puts_deletes_and_delete_tree(&rocks());
    }

    #[test]
    fn horizon_rises_with_every_reap() {
        super::horizon_rises_with_every_reap(&rocks());
    }

    #[test]
    fn horizon_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let store = Store::open_rocksdb(&path, StoreConfig::new(DC)).unwrap();
        let reopen = |s: Store<RocksBackend>| {
            drop(s);
            Store::open_rocksdb(&path, StoreConfig::new(DC)).unwrap()
        };
        super::horizon_after_reopen(store, reopen);
    }

    #[test]
    fn horizon_after_import_and_staged_restore() {
        super::horizon_after_import_and_staged_restore(&rocks());
    }
}
