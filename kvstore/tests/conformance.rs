//! One conformance suite, run against every backend: Consul's KV, transaction, session and ACL
//! semantics (../shared/reference/consul.md §1.1-1.3), staged restore and the watch hub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tribune_kvstore::{
    ANONYMOUS_TOKEN_ACCESSOR, ApplyError, Backend, Command, GLOBAL_MANAGEMENT_POLICY_ID, KeyProblem,
    MAX_TXN_OPS, MAX_VALUE_BYTES, Outcome, SessionBehavior, Store, TxnOp, TxnOpError, WaitOutcome,
    WatchScope,
};

fn kv(outcome: Result<Outcome, ApplyError>) -> bool {
    match outcome.unwrap() {
        Outcome::Kv(ok) => ok,
        other => panic!("expected a KV outcome, got {other:?}"),
    }
}

fn txn_outcome(outcome: Result<Outcome, ApplyError>) -> tribune_kvstore::TxnOutcome {
    match outcome.unwrap() {
        Outcome::Txn(t) => t,
        other => panic!("expected a txn outcome, got {other:?}"),
    }
}

fn set_get_and_indexes<B: Backend>(s: &Store<B>) {
    // A fresh store never reports index 0.
    assert_eq!(s.get("a").unwrap().index, 1);
    assert_eq!(s.list("").unwrap().index, 1);
    assert!(kv(s.apply(5, &set_flags("a", "1", 42))));
    let got = s.get("a").unwrap();
    let e = got.value.unwrap();
    assert_eq!(
        (e.create_index, e.modify_index, e.lock_index, e.flags),
        (5, 5, 0, 42)
    );
    assert_eq!(e.value, b"1");
    assert_eq!(got.index, 5);
    // Overwrite bumps ModifyIndex only.
    assert!(kv(s.apply(6, &set("a", "2"))));
    let e = s.get("a").unwrap().value.unwrap();
    assert_eq!((e.create_index, e.modify_index, e.flags), (5, 6, 0));
    // An identical write does not bump ModifyIndex.
    assert!(kv(s.apply(7, &set("a", "2"))));
    assert_eq!(s.get("a").unwrap().value.unwrap().modify_index, 6);
    // Changing only the flags does.
    assert!(kv(s.apply(8, &set_flags("a", "2", 1))));
    assert_eq!(s.get("a").unwrap().value.unwrap().modify_index, 8);
    // A missing key reports the KV table's index.
    assert_eq!(
        s.get("zzz").unwrap(),
        tribune_kvstore::Indexed {
            index: 8,
            value: None
        }
    );
    assert_eq!(s.last_applied(), 8);
}

fn replay_is_a_no_op<B: Backend>(s: &Store<B>) {
    s.apply(3, &set("a", "1")).unwrap();
    let before = s.dump().unwrap();
    assert_eq!(
        s.apply(3, &set("a", "other")).unwrap(),
        Outcome::AlreadyApplied { last_applied: 3 }
    );
    assert_eq!(
        s.apply(2, &del("a")).unwrap(),
        Outcome::AlreadyApplied { last_applied: 3 }
    );
    assert_eq!(
        s.apply(0, &del("a")).unwrap(),
        Outcome::AlreadyApplied { last_applied: 3 }
    );
    assert_eq!(s.dump().unwrap(), before);
    assert_eq!(s.last_applied(), 3);
}

fn cas_rules<B: Backend>(s: &Store<B>) {
    // cas=0 creates only.
    assert!(kv(s.apply(1, &cas("k", "v1", 0))));
    assert!(!kv(s.apply(2, &cas("k", "v2", 0))));
    assert_eq!(s.get("k").unwrap().value.unwrap().value, b"v1");
    // cas=N needs ModifyIndex == N.
    assert!(!kv(s.apply(3, &cas("k", "v3", 99))));
    assert!(kv(s.apply(4, &cas("k", "v4", 1))));
    let e = s.get("k").unwrap().value.unwrap();
    assert_eq!(
        (e.value.as_slice(), e.create_index, e.modify_index),
        (&b"v4"[..], 1, 4)
    );
    // cas=N on a missing key fails.
    assert!(!kv(s.apply(5, &cas("missing", "x", 4))));
    assert!(s.get("missing").unwrap().value.is_none());
}

fn delete_and_tombstones<B: Backend>(s: &Store<B>) {
    s.apply(1, &set("app/a", "1")).unwrap();
    s.apply(2, &set("app/b", "2")).unwrap();
    s.apply(3, &set("other", "3")).unwrap();
    assert_eq!(s.list("app/").unwrap().index, 2);
    // Deleting the max-index key must not make the prefix index slide back.
    assert!(kv(s.apply(10, &del("app/b"))));
    let listed = s.list("app/").unwrap();
    assert_eq!(listed.value.len(), 1);
    assert_eq!(listed.index, 10);
    let stones = s.tombstones("").unwrap();
    assert_eq!(
        stones,
        vec![tribune_kvstore::Tombstone {
            key: "app/b".into(),
            index: 10
        }]
    );
    // Deleting a missing key leaves no tombstone and changes nothing.
    let before = s.dump().unwrap();
    assert!(kv(s.apply(11, &del("app/nope"))));
    assert_eq!(s.dump().unwrap(), before);
    // An empty prefix with nothing under it falls back to the table index.
    assert_eq!(s.list("nothing/").unwrap().index, 10);
    // Recreating the key keeps the tombstone until reaped; the index counts the newest.
    s.apply(12, &set("app/b", "again")).unwrap();
    assert_eq!(s.list("app/").unwrap().index, 12);
    assert_eq!(s.get("app/b").unwrap().value.unwrap().create_index, 12);
}

fn delete_cas_rules<B: Backend>(s: &Store<B>) {
    // A CAS delete of a missing key is true (Consul's quirk).
    assert!(kv(s.apply(1, &del_cas("missing", 5))));
    s.apply(2, &set("k", "v")).unwrap();
    assert!(!kv(s.apply(3, &del_cas("k", 1))));
    // cas=0 never deletes an existing key.
    assert!(!kv(s.apply(4, &del_cas("k", 0))));
    assert!(s.get("k").unwrap().value.is_some());
    assert!(kv(s.apply(5, &del_cas("k", 2))));
    assert!(s.get("k").unwrap().value.is_none());
    assert_eq!(s.tombstones("k").unwrap()[0].index, 5);
}

fn delete_tree_rules<B: Backend>(s: &Store<B>) {
    for (i, key) in ["a/1", "a/2", "a/b/3", "ab", "b/1"].iter().enumerate() {
        s.apply(i as u64 + 1, &set(key, "v")).unwrap();
    }
    assert!(kv(s.apply(10, &del_tree("a/"))));
    let keys: Vec<_> = s.list("").unwrap().value.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["ab", "b/1"]);
    let stones: Vec<_> = s
        .tombstones("")
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.index))
        .collect();
    assert_eq!(
        stones,
        vec![("a/1".into(), 10), ("a/2".into(), 10), ("a/b/3".into(), 10)]
    );
    // Every sub-prefix of the deleted tree keeps its index.
    assert_eq!(s.list("a/b/").unwrap().index, 10);
    // Deleting an empty tree changes nothing.
    let before = s.dump().unwrap();
    assert!(kv(s.apply(11, &del_tree("zzz/"))));
    assert_eq!(s.dump().unwrap(), before);
    // The empty prefix deletes everything.
    assert!(kv(s.apply(12, &del_tree(""))));
    assert!(s.list("").unwrap().value.is_empty());
    assert_eq!(s.list("").unwrap().index, 12);
}

fn keys_with_separator<B: Backend>(s: &Store<B>) {
    for (i, key) in ["web/a", "web/sub/x", "web/sub/y", "web/sub2/z", "webby", "x"]
        .iter()
        .enumerate()
    {
        s.apply(i as u64 + 1, &set(key, "v")).unwrap();
    }
    let all = s.keys("web", None).unwrap();
    assert_eq!(
        all.value,
        vec!["web/a", "web/sub/x", "web/sub/y", "web/sub2/z", "webby"]
    );
    let rolled = s.keys("web/", Some("/")).unwrap();
    assert_eq!(rolled.value, vec!["web/a", "web/sub/", "web/sub2/"]);
    // Rolled-up keys count toward the index.
    assert_eq!(rolled.index, 4);
    assert_eq!(s.keys("", Some("/")).unwrap().value, vec!["web/", "webby", "x"]);
    assert!(s.keys("nope/", None).unwrap().value.is_empty());
}

fn lock_and_unlock<B: Backend>(s: &Store<B>) {
    // The session must exist: a typed error, no change, index still recorded.
    let err = s.apply(1, &lock("svc/leader", "me", "s1")).unwrap_err();
    assert!(
        matches!(&err, ApplyError::InvalidSession { session } if session == "s1"),
        "{err}"
    );
    assert!(err.is_deterministic());
    assert!(s.get("svc/leader").unwrap().value.is_none());
    assert_eq!(s.last_applied(), 1);

    s.apply(
        2,
        &session("s1", "node1", SessionBehavior::Release, Duration::from_secs(15)),
    )
    .unwrap();
    s.apply(
        3,
        &session("s2", "node2", SessionBehavior::Release, Duration::ZERO),
    )
    .unwrap();
    // Acquire: LockIndex 1, session set; the key need not exist.
    assert!(kv(s.apply(4, &lock("svc/leader", "me", "s1"))));
    let e = s.get("svc/leader").unwrap().value.unwrap();
    assert_eq!(
        (e.lock_index, e.session.as_deref(), e.modify_index),
        (1, Some("s1"), 4)
    );
    // Re-acquire by the holder: value updated, LockIndex unchanged.
    assert!(kv(s.apply(5, &lock("svc/leader", "me-again", "s1"))));
    let e = s.get("svc/leader").unwrap().value.unwrap();
    assert_eq!(
        (e.lock_index, e.value.as_slice(), e.modify_index),
        (1, &b"me-again"[..], 5)
    );
    // Re-acquire with identical content: no ModifyIndex bump.
    assert!(kv(s.apply(6, &lock("svc/leader", "me-again", "s1"))));
    assert_eq!(s.get("svc/leader").unwrap().value.unwrap().modify_index, 5);
    // Another session cannot take it.
    assert!(!kv(s.apply(7, &lock("svc/leader", "them", "s2"))));
    // A non-holder cannot release it.
    assert!(!kv(s.apply(8, &unlock("svc/leader", "them", "s2"))));
    assert_eq!(
        s.get("svc/leader").unwrap().value.unwrap().session.as_deref(),
        Some("s1")
    );
    // Unlocking a missing key is false.
    assert!(!kv(s.apply(9, &unlock("nope", "", "s1"))));
    // A plain set succeeds on a locked key and keeps the lock.
    assert!(kv(s.apply(10, &set("svc/leader", "plain"))));
    let e = s.get("svc/leader").unwrap().value.unwrap();
    assert_eq!(
        (e.session.as_deref(), e.lock_index, e.value.as_slice()),
        (Some("s1"), 1, &b"plain"[..])
    );
    // Release by the holder: session cleared, LockIndex kept, value set.
    assert!(kv(s.apply(11, &unlock("svc/leader", "bye", "s1"))));
    let e = s.get("svc/leader").unwrap().value.unwrap();
    assert_eq!(
        (e.session, e.lock_index, e.value.as_slice(), e.modify_index),
        (None, 1, &b"bye"[..], 11)
    );
    // The next acquire increments LockIndex.
    assert!(kv(s.apply(12, &lock("svc/leader", "them", "s2"))));
    let e = s.get("svc/leader").unwrap().value.unwrap();
    assert_eq!((e.lock_index, e.session.as_deref()), (2, Some("s2")));
    // Lock without a session is a typed error.
    assert!(matches!(
        s.apply(13, &lock("k", "v", "")),
        Err(ApplyError::MissingSession)
    ));
}

fn session_destroy_release<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &session("s1", "node1", SessionBehavior::Release, Duration::from_secs(15)),
    )
    .unwrap();
    s.apply(2, &lock("l/a", "1", "s1")).unwrap();
    s.apply(3, &lock("l/b", "2", "s1")).unwrap();
    s.apply(4, &set("l/c", "3")).unwrap();
    let Outcome::SessionDestroyed(inv) = s.apply(5, &destroy("s1")).unwrap() else {
        panic!()
    };
    assert!(inv.existed);
    assert_eq!(inv.held_keys, vec!["l/a", "l/b"]);
    assert_eq!(inv.lock_delay_keys, vec!["l/a", "l/b"]);
    assert_eq!(inv.lock_delay, Duration::from_secs(15));
    for key in ["l/a", "l/b"] {
        let e = s.get(key).unwrap().value.unwrap();
        assert_eq!((e.session, e.lock_index, e.modify_index), (None, 1, 5), "{key}");
    }
    assert_eq!(s.get("l/c").unwrap().value.unwrap().modify_index, 4);
    assert!(s.session("s1").unwrap().value.is_none());
    assert_eq!(s.session("s1").unwrap().index, 5);
    // Destroying again (or an unknown session) is a successful no-op.
    let Outcome::SessionDestroyed(inv) = s.apply(6, &destroy("s1")).unwrap() else {
        panic!()
    };
    assert!(!inv.existed && inv.held_keys.is_empty());
}

fn session_destroy_delete<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &session("s1", "node1", SessionBehavior::Delete, Duration::from_secs(600)),
    )
    .unwrap();
    s.apply(2, &lock("l/a", "1", "s1")).unwrap();
    s.apply(3, &lock("l/b", "2", "s1")).unwrap();
    // A key locked then released is not held any more and must survive.
    s.apply(4, &lock("l/c", "3", "s1")).unwrap();
    s.apply(5, &unlock("l/c", "3", "s1")).unwrap();
    // A key deleted while held is forgotten by the session.
    s.apply(6, &del("l/b")).unwrap();
    let Outcome::SessionDestroyed(inv) = s.apply(7, &destroy("s1")).unwrap() else {
        panic!()
    };
    assert_eq!(inv.held_keys, vec!["l/a"]);
    // Lock-delay is clamped to Consul's 60 s maximum.
    assert_eq!(inv.lock_delay, Duration::from_secs(60));
    assert!(s.get("l/a").unwrap().value.is_none());
    assert!(s.get("l/c").unwrap().value.is_some());
    let stones: Vec<_> = s
        .tombstones("l/")
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.index))
        .collect();
    assert_eq!(stones, vec![("l/a".into(), 7), ("l/b".into(), 6)]);
    assert_eq!(s.list("l/").unwrap().index, 7);
}

fn session_reads<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &session("b", "node1", SessionBehavior::Release, Duration::ZERO),
    )
    .unwrap();
    s.apply(2, &session("a", "node2", SessionBehavior::Delete, Duration::ZERO))
        .unwrap();
    s.apply(
        3,
        &session("c", "node1", SessionBehavior::Release, Duration::ZERO),
    )
    .unwrap();
    assert!(matches!(
        s.apply(
            4,
            &session("a", "node3", SessionBehavior::Release, Duration::ZERO)
        ),
        Err(ApplyError::SessionExists { .. })
    ));
    let all = s.sessions().unwrap();
    assert_eq!(
        all.value.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    assert_eq!(all.index, 3);
    let node1 = s.node_sessions("node1").unwrap();
    assert_eq!(
        node1.value.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        vec!["b", "c"]
    );
    let a = s.session("a").unwrap().value.unwrap();
    assert_eq!(
        (a.create_index, a.modify_index, a.behavior),
        (2, 2, SessionBehavior::Delete)
    );
}

fn txn_commit<B: Backend>(s: &Store<B>) {
    s.apply(1, &set("t/existing", "old")).unwrap();
    s.apply(2, &session("s1", "n", SessionBehavior::Release, Duration::ZERO))
        .unwrap();
    let out = txn_outcome(s.apply(
        3,
        &txn(vec![
            t_set("t/a", "1"),
            TxnOp::Cas {
                key: "t/existing".into(),
                value: b"new".to_vec(),
                flags: 0,
                index: 1,
            },
            TxnOp::Lock {
                key: "t/lock".into(),
                value: b"l".to_vec(),
                flags: 0,
                session: "s1".into(),
            },
            TxnOp::Get { key: "t/a".into() },
            TxnOp::CheckIndex {
                key: "t/existing".into(),
                index: 3,
            },
            TxnOp::CheckSession {
                key: "t/lock".into(),
                session: "s1".into(),
            },
            TxnOp::CheckNotExists { key: "t/nope".into() },
            TxnOp::GetTree { prefix: "t/".into() },
            TxnOp::Delete { key: "t/a".into() },
            TxnOp::DeleteCas {
                key: "t/missing".into(),
                index: 9,
            },
        ]),
    ));
    assert!(out.committed(), "{:?}", out.errors);
    let entries: Vec<_> = out.results.iter().map(|r| r.kv().unwrap().clone()).collect();
    // set, cas, lock, get, check-index, check-session, then three get-tree entries; deletes add none.
    assert_eq!(entries.len(), 9);
    assert!(entries[0].value.is_empty(), "values are blanked except for reads");
    assert_eq!((entries[0].key.as_str(), entries[0].modify_index), ("t/a", 3));
    assert_eq!(
        entries[3].value, b"1",
        "get returns the value written earlier in the txn"
    );
    assert_eq!(entries[5].session.as_deref(), Some("s1"));
    let tree: Vec<_> = entries[6..]
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(
        tree,
        vec![
            ("t/a", &b"1"[..]),
            ("t/existing", &b"new"[..]),
            ("t/lock", &b"l"[..])
        ]
    );
    assert!(s.get("t/a").unwrap().value.is_none());
    assert_eq!(s.get("t/existing").unwrap().value.unwrap().value, b"new");
    assert_eq!(s.get("t/lock").unwrap().value.unwrap().lock_index, 1);
}

fn txn_rollback<B: Backend>(s: &Store<B>) {
    s.apply(1, &set("r/a", "1")).unwrap();
    s.apply(2, &session("s1", "n", SessionBehavior::Release, Duration::ZERO))
        .unwrap();
    s.apply(3, &session("s2", "n", SessionBehavior::Release, Duration::ZERO))
        .unwrap();
    s.apply(4, &lock("r/held", "x", "s2")).unwrap();
    let before = s.dump().unwrap();
    let out = txn_outcome(s.apply(
        5,
        &txn(vec![
            t_set("r/new", "v"),
            TxnOp::Cas {
                key: "r/a".into(),
                value: b"2".to_vec(),
                flags: 0,
                index: 99,
            },
            TxnOp::Delete { key: "r/a".into() },
            TxnOp::Get {
                key: "r/missing".into(),
            },
            TxnOp::Lock {
                key: "r/held".into(),
                value: b"y".to_vec(),
                flags: 0,
                session: "s1".into(),
            },
            TxnOp::Unlock {
                key: "r/held".into(),
                value: b"y".to_vec(),
                flags: 0,
                session: "s1".into(),
            },
            TxnOp::Lock {
                key: "r/x".into(),
                value: vec![],
                flags: 0,
                session: "ghost".into(),
            },
            TxnOp::CheckIndex {
                key: "r/new".into(),
                index: 1,
            },
            TxnOp::CheckSession {
                key: "r/held".into(),
                session: "s1".into(),
            },
            TxnOp::CheckNotExists { key: "r/new".into() },
            TxnOp::DeleteCas {
                key: "r/held".into(),
                index: 1,
            },
            TxnOp::CheckIndex {
                key: "r/a".into(),
                index: 1,
            },
        ]),
    ));
    assert!(!out.committed());
    assert!(out.results.is_empty());
    let err = |op_index: usize, what: &str| TxnOpError {
        op_index,
        what: what.into(),
    };
    assert_eq!(
        out.errors,
        vec![
            err(1, r#"failed to set key "r/a", index is stale"#),
            err(3, r#"key "r/missing" doesn't exist"#),
            err(4, r#"failed to lock key "r/held", lock is already held"#),
            err(
                5,
                r#"failed to unlock key "r/held", lock isn't held, or is held by another session"#
            ),
            err(6, r#"invalid session "ghost""#),
            err(7, r#"failed to check index, key "r/new" has a modify index of 5"#),
            err(8, r#"failed to check session, key "r/held" in session "s2""#),
            err(9, r#"key "r/new" exists"#),
            err(10, r#"failed to delete key "r/held", index is stale"#),
            // r/a was deleted by op 2 earlier in the same transaction.
            err(11, r#"failed to check index, key "r/a" doesn't exist"#),
        ]
    );
    // Nothing applied, but the index is consumed.
    let mut after = s.dump().unwrap();
    assert_eq!(after.len(), before.len());
    after.retain(|r| !before.contains(r));
    assert!(after.is_empty(), "rolled-back txn changed {after:?}");
    assert_eq!(s.last_applied(), 5);
}

fn txn_limits<B: Backend>(s: &Store<B>) {
    let ops: Vec<_> = (0..=MAX_TXN_OPS).map(|i| t_set(&format!("k{i}"), "v")).collect();
    assert!(matches!(
        s.apply(1, &txn(ops)),
        Err(ApplyError::TooManyTxnOps { ops: 129, limit: 128 })
    ));
    let ops: Vec<_> = (0..MAX_TXN_OPS).map(|i| t_set(&format!("k{i}"), "v")).collect();
    assert!(txn_outcome(s.apply(2, &txn(ops))).committed());
    assert_eq!(s.list("k").unwrap().value.len(), MAX_TXN_OPS);
    // One invalid op rejects the whole txn before anything runs.
    let bad = txn(vec![t_set("ok", "v"), t_set("/bad", "v")]);
    assert!(matches!(
        s.apply(3, &bad),
        Err(ApplyError::InvalidKey {
            problem: KeyProblem::LeadingSlash,
            ..
        })
    ));
    assert!(s.get("ok").unwrap().value.is_none());
}

fn input_validation<B: Backend>(s: &Store<B>) {
    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    type Check = fn(&ApplyError) -> bool;
    let cases: Vec<(Command, Check)> = vec![
        (
            Command::KvSet {
                key: "k".into(),
                value: big.clone(),
                flags: 0,
            },
            |e| matches!(e, ApplyError::ValueTooLarge { len, .. } if *len == MAX_VALUE_BYTES + 1),
        ),
        (set("", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::Empty,
                    ..
                }
            )
        }),
        (del(""), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::Empty,
                    ..
                }
            )
        }),
        (set("/abs", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::LeadingSlash,
                    ..
                }
            )
        }),
        (set("a/../b", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::PathTraversal,
                    ..
                }
            )
        }),
        (set("a/..%2fb", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::PathTraversal,
                    ..
                }
            )
        }),
        (set(" a", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::SurroundingSpace,
                    ..
                }
            )
        }),
        (set("a ", "v"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::SurroundingSpace,
                    ..
                }
            )
        }),
        (del_tree("/x"), |e| {
            matches!(
                e,
                ApplyError::InvalidKey {
                    problem: KeyProblem::LeadingSlash,
                    ..
                }
            )
        }),
    ];
    for (i, (command, expected)) in cases.into_iter().enumerate() {
        let index = i as u64 + 1;
        let err = s.apply(index, &command).unwrap_err();
        assert!(expected(&err), "case {i}: {err}");
        assert!(err.is_deterministic());
        assert_eq!(s.last_applied(), index);
    }
    assert!(s.list("").unwrap().value.is_empty());
    // Exactly at the limit is fine.
    let ok = Command::KvSet {
        key: "k".into(),
        value: vec![1; MAX_VALUE_BYTES],
        flags: 0,
    };
    assert!(kv(s.apply(100, &ok)));
}

fn reap_tombstones<B: Backend>(s: &Store<B>) {
    for i in 1..=4 {
        s.apply(i, &set(&format!("k{i}"), "v")).unwrap();
    }
    s.apply(5, &del("k1")).unwrap();
    s.apply(6, &del("k2")).unwrap();
    s.apply(7, &del("k3")).unwrap();
    assert_eq!(
        s.apply(8, &Command::ReapTombstones { up_to_index: 6 }).unwrap(),
        Outcome::TombstonesReaped { count: 2 }
    );
    let left: Vec<_> = s.tombstones("").unwrap().into_iter().map(|t| t.key).collect();
    assert_eq!(left, vec!["k3"]);
    assert_eq!(
        s.apply(9, &Command::ReapTombstones { up_to_index: 6 }).unwrap(),
        Outcome::TombstonesReaped { count: 0 }
    );
}

fn acl_records<B: Backend>(s: &Store<B>) {
    // A token must link existing policies.
    let err = s
        .apply(1, &Command::AclTokenUpsert(token("acc1", "sec1", &["p1"])))
        .unwrap_err();
    assert!(matches!(err, ApplyError::UnknownPolicy { ref policy_id } if policy_id == "p1"));
    let Outcome::AclPolicy(p) = s
        .apply(2, &Command::AclPolicyUpsert(policy("p1", "readers")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((p.create_index, p.modify_index), (2, 2));
    let Outcome::AclToken(t) = s
        .apply(3, &Command::AclTokenUpsert(token("acc1", "sec1", &["p1"])))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(t.policies[0].name, "readers");
    assert_eq!(
        s.acl_token_by_secret("sec1").unwrap().value.unwrap().accessor_id,
        "acc1"
    );
    assert_eq!(s.acl_token("acc1").unwrap().index, 3);
    assert!(s.acl_token_by_secret("nope").unwrap().value.is_none());
    // Secrets are unique and immutable.
    assert!(matches!(
        s.apply(4, &Command::AclTokenUpsert(token("acc2", "sec1", &[]))),
        Err(ApplyError::DuplicateSecret { .. })
    ));
    assert!(matches!(
        s.apply(5, &Command::AclTokenUpsert(token("acc1", "other", &[]))),
        Err(ApplyError::SecretChanged { .. })
    ));
    // Policy names are unique; renaming frees the old name.
    assert!(matches!(
        s.apply(6, &Command::AclPolicyUpsert(policy("p2", "readers"))),
        Err(ApplyError::DuplicatePolicyName { .. })
    ));
    s.apply(7, &Command::AclPolicyUpsert(policy("p1", "renamed")))
        .unwrap();
    assert!(s.acl_policy_by_name("readers").unwrap().value.is_none());
    assert_eq!(
        s.acl_policy_by_name("renamed")
            .unwrap()
            .value
            .unwrap()
            .create_index,
        2
    );
    s.apply(8, &Command::AclPolicyUpsert(policy("p2", "readers")))
        .unwrap();
    assert_eq!(s.acl_policies().unwrap().value.len(), 2);
    // Deletes.
    s.apply(
        9,
        &Command::AclTokenDelete {
            accessor_id: "acc1".into(),
        },
    )
    .unwrap();
    assert!(s.acl_token_by_secret("sec1").unwrap().value.is_none());
    assert!(s.acl_tokens().unwrap().value.is_empty());
    s.apply(10, &Command::AclPolicyDelete { id: "p2".into() })
        .unwrap();
    assert!(s.acl_policy("p2").unwrap().value.is_none());
    assert!(matches!(
        s.apply(
            11,
            &Command::AclTokenDelete {
                accessor_id: ANONYMOUS_TOKEN_ACCESSOR.into()
            }
        ),
        Err(ApplyError::BuiltinDelete { .. })
    ));
}

fn acl_bootstrap_once<B: Backend>(s: &Store<B>) {
    assert_eq!(s.acl_bootstrap_state().unwrap().bootstrapped_at, None);
    let boot = |secret: &str, reset_index| Command::AclBootstrap {
        token: token("root", secret, &[]),
        reset_index,
    };
    let Outcome::AclBootstrapped(t) = s.apply(4, &boot("s1", None)).unwrap() else {
        panic!()
    };
    assert_eq!(t.policies[0].id, GLOBAL_MANAGEMENT_POLICY_ID);
    assert_eq!(
        s.acl_policy(GLOBAL_MANAGEMENT_POLICY_ID)
            .unwrap()
            .value
            .unwrap()
            .name,
        "global-management"
    );
    assert_eq!(s.acl_bootstrap_state().unwrap().bootstrapped_at, Some(4));
    let err = s.apply(5, &boot("s2", None)).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::AclBootstrapNotAllowed { reset_index: 4 }
    ));
    assert_eq!(
        err.to_string(),
        "ACL bootstrap no longer allowed (reset index: 4)"
    );
    assert!(matches!(
        s.apply(6, &boot("s2", Some(3))),
        Err(ApplyError::AclBootstrapNotAllowed { .. })
    ));
    // The recorded reset index allows one more bootstrap (the same accessor keeps its secret).
    assert!(matches!(
        s.apply(7, &boot("s1", Some(4))).unwrap(),
        Outcome::AclBootstrapped(_)
    ));
    assert_eq!(s.acl_bootstrap_state().unwrap().bootstrapped_at, Some(7));
    assert!(matches!(
        s.apply(
            8,
            &Command::AclPolicyDelete {
                id: GLOBAL_MANAGEMENT_POLICY_ID.into()
            }
        ),
        Err(ApplyError::BuiltinDelete { .. })
    ));
}

fn staged_restore<B: Backend>(s: &Store<B>) {
    // Build a source state in a memory store and restore it through commands.
    let src = memory();
    src.apply(1, &session("s1", "n", SessionBehavior::Delete, Duration::ZERO))
        .unwrap();
    src.apply(2, &lock("r/a", "1", "s1")).unwrap();
    src.apply(3, &set("r/b", "2")).unwrap();
    src.apply(4, &del("r/b")).unwrap();
    src.apply(5, &Command::AclPolicyUpsert(policy("p", "pol")))
        .unwrap();
    src.apply(6, &Command::AclTokenUpsert(token("a", "sec", &["p"])))
        .unwrap();
    let records = src.dump().unwrap();

    s.apply(1, &set("old", "gone")).unwrap();
    // Chunks for a restore that was never begun are rejected.
    assert!(matches!(
        s.apply(
            2,
            &Command::RestoreChunk {
                restore_id: 7,
                records: records.clone()
            }
        ),
        Err(ApplyError::RestoreNotInProgress { restore_id: 7 })
    ));
    s.apply(3, &Command::RestoreBegin { restore_id: 7 }).unwrap();
    let (first, rest) = records.split_at(records.len() / 2);
    s.apply(
        4,
        &Command::RestoreChunk {
            restore_id: 7,
            records: first.to_vec(),
        },
    )
    .unwrap();
    // Live writes continue until the commit, and are then replaced.
    s.apply(5, &set("during", "x")).unwrap();
    assert!(s.get("during").unwrap().value.is_some());
    s.apply(
        6,
        &Command::RestoreChunk {
            restore_id: 7,
            records: rest.to_vec(),
        },
    )
    .unwrap();
    assert!(matches!(
        s.apply(7, &Command::RestoreCommit { restore_id: 8 }),
        Err(ApplyError::RestoreNotInProgress { .. })
    ));
    assert_eq!(
        s.apply(8, &Command::RestoreCommit { restore_id: 7 }).unwrap(),
        Outcome::Restored
    );
    assert_eq!(s.dump().unwrap(), records);
    assert_eq!(s.last_applied(), 8);
    // Derived lookups were rebuilt: the secret index, the session's held keys.
    assert_eq!(
        s.acl_token_by_secret("sec").unwrap().value.unwrap().accessor_id,
        "a"
    );
    let Outcome::SessionDestroyed(inv) = s.apply(9, &destroy("s1")).unwrap() else {
        panic!()
    };
    assert_eq!(inv.held_keys, vec!["r/a"]);
    // The restore is finished: a second commit is rejected.
    assert!(matches!(
        s.apply(10, &Command::RestoreCommit { restore_id: 7 }),
        Err(ApplyError::RestoreNotInProgress { .. })
    ));
}

async fn watch_wakes_only_touched_scopes<B: Backend>(s: &Store<B>) {
    use tokio::time::Instant;
    s.apply(1, &set("app/x", "1")).unwrap();
    let soon = || Instant::now() + Duration::from_millis(50);
    // Already newer than the caller's index: returns at once.
    assert_eq!(
        s.wait(&WatchScope::Prefix("app/".into()), 0, soon())
            .await
            .unwrap(),
        WaitOutcome::Changed { index: 1 }
    );
    // A write elsewhere does not wake a prefix waiter.
    let hub = s.watch_hub();
    let app = hub.subscribe(WatchScope::Prefix("app/".into()));
    let key = hub.subscribe(WatchScope::Key("app/y".into()));
    let sessions = hub.subscribe(WatchScope::Sessions);
    let other = hub.subscribe(WatchScope::Prefix("zzz/".into()));
    assert_eq!(hub.waiter_count(), 4);
    s.apply(2, &set("elsewhere", "1")).unwrap();
    s.apply(3, &set("app/y", "1")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        app.wait_until(deadline).await,
        Some(tribune_kvstore::Wake::Changed { index: 3 })
    );
    assert_eq!(
        key.wait_until(deadline).await,
        Some(tribune_kvstore::Wake::Changed { index: 3 })
    );
    assert_eq!(other.wait_until(soon()).await, None);
    s.apply(4, &session("s", "n", SessionBehavior::Release, Duration::ZERO))
        .unwrap();
    assert_eq!(
        sessions.wait_until(deadline).await,
        Some(tribune_kvstore::Wake::Changed { index: 4 })
    );
    // Dropped or fired subscriptions leave nothing behind.
    assert_eq!(hub.waiter_count(), 0);
    // A blocked wait times out with the current index, then wakes on a change.
    assert_eq!(
        s.wait(&WatchScope::Prefix("app/".into()), 3, soon())
            .await
            .unwrap(),
        WaitOutcome::TimedOut { index: 3 }
    );
    let app_scope = WatchScope::Prefix("app/".into());
    let (outcome, ()) = tokio::join!(s.wait(&app_scope, 3, deadline), async {
        // Wait until the waiter is registered, then write.
        while hub.waiter_count() == 0 {
            tokio::task::yield_now().await;
        }
        s.apply(5, &del("app/x")).unwrap();
    });
    assert_eq!(outcome.unwrap(), WaitOutcome::Changed { index: 5 });
    // A restore wakes everyone with Reset.
    let unrelated = WatchScope::Key("unrelated".into());
    let (outcome, ()) = tokio::join!(s.wait(&unrelated, 5, deadline), async {
        while hub.waiter_count() == 0 {
            tokio::task::yield_now().await;
        }
        s.apply(6, &Command::RestoreBegin { restore_id: 1 }).unwrap();
        s.apply(7, &Command::RestoreCommit { restore_id: 1 }).unwrap();
    });
    assert_eq!(outcome.unwrap(), WaitOutcome::Reset { index: 1 });
}

async fn thousands_of_idle_waiters<B: Backend>(s: &Store<B>) {
    let hub = s.watch_hub();
    let subs: Vec<_> = (0..5000)
        .map(|i| hub.subscribe(WatchScope::Prefix(format!("p{i}/"))))
        .collect();
    assert_eq!(hub.waiter_count(), 5000);
    s.apply(1, &set("p42/x", "v")).unwrap();
    // Exactly one waiter fired; the rest are still registered.
    assert_eq!(hub.waiter_count(), 4999);
    let mut subs = subs;
    let fired = subs.swap_remove(42);
    assert_eq!(
        fired.wait_until(tokio::time::Instant::now()).await,
        Some(tribune_kvstore::Wake::Changed { index: 1 })
    );
    drop(subs);
    assert_eq!(hub.waiter_count(), 0);
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let h = $make();
                        super::$name(&h);
                    }
                };
                (async $name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let h = $make();
                        super::$name(&h).await;
                    }
                };
            }
            case!(set_get_and_indexes);
            case!(replay_is_a_no_op);
            case!(cas_rules);
            case!(delete_and_tombstones);
            case!(delete_cas_rules);
            case!(delete_tree_rules);
            case!(keys_with_separator);
            case!(lock_and_unlock);
            case!(session_destroy_release);
            case!(session_destroy_delete);
            case!(session_reads);
            case!(txn_commit);
            case!(txn_rollback);
            case!(txn_limits);
            case!(input_validation);
            case!(reap_tombstones);
            case!(acl_records);
            case!(acl_bootstrap_once);
            case!(staged_restore);
            case!(async watch_wakes_only_touched_scopes);
            case!(async thousands_of_idle_waiters);
        }
    };
}

suite!(memory_backend, common::memory);
#[cfg(feature = "rocksdb")]
suite!(rocksdb_backend, common::rocks);
