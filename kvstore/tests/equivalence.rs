//! Property tests: random command sequences (KV, sessions, ACL, catalog) give identical outcomes and
//! identical state on every backend, survive a restore round trip, and never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use proptest::prelude::*;
use tribune_kvstore::{
    AclReplicationBatch, Backend, CheckRegistration, CheckStatus, Command, NewSession, Registration,
    ServiceRegistration, SessionBehavior, Store, TxnOp,
};

const KEYS: &[&str] = &[
    "a", "a/b", "a/b/c", "a/d", "b", "b/x", "c d", "/bad", "x/../y", "",
];
const SESSIONS: &[&str] = &["s1", "s2", "s3", ""];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn session_id() -> impl Strategy<Value = String> {
    prop::sample::select(SESSIONS).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), value(), 0u64..2).prop_map(|(key, value, flags)| TxnOp::Set { key, value, flags }),
        (key(), value(), 0u64..12).prop_map(|(key, value, index)| TxnOp::Cas {
            key,
            value,
            flags: 0,
            index
        }),
        (key(), value(), session_id()).prop_map(|(key, value, session)| TxnOp::Lock {
            key,
            value,
            flags: 0,
            session
        }),
        (key(), value(), session_id()).prop_map(|(key, value, session)| TxnOp::Unlock {
            key,
            value,
            flags: 0,
            session
        }),
        key().prop_map(|key| TxnOp::Get { key }),
        key().prop_map(|prefix| TxnOp::GetTree { prefix }),
        (key(), 0u64..12).prop_map(|(key, index)| TxnOp::CheckIndex { key, index }),
        (key(), session_id()).prop_map(|(key, session)| TxnOp::CheckSession { key, session }),
        key().prop_map(|key| TxnOp::CheckNotExists { key }),
        key().prop_map(|key| TxnOp::Delete { key }),
        key().prop_map(|prefix| TxnOp::DeleteTree { prefix }),
        (key(), 0u64..12).prop_map(|(key, index)| TxnOp::DeleteCas { key, index }),
    ]
}

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(options).prop_map(str::to_owned)
}

/// ACL commands over a handful of IDs and names, so links, name clashes, cascades and refusals happen.
fn acl_command() -> impl Strategy<Value = Command> {
    let policies = || pick(&["p1", "p2"]);
    let roles = || pick(&["r1", "r2"]);
    let names = || pick(&["a", "b"]);
    let methods = || pick(&["m1", "m2"]);
    let token = || {
        (
            pick(&["t1", "t2"]),
            pick(&["s1", "s2"]),
            prop::collection::vec(policies(), 0..2),
            prop::collection::vec(roles(), 0..2),
            pick(&["", "m1"]),
        )
            .prop_map(|(accessor, secret, policies, roles, method)| {
                let mut token = common::token(&accessor, &secret, &[]);
                token.policies = policies
                    .iter()
                    .map(|id| tribune_kvstore::PolicyLink {
                        id: id.clone(),
                        name: String::new(),
                    })
                    .collect();
                token.roles = roles.iter().map(|id| common::role_link(id)).collect();
                token.auth_method = method;
                token
            })
    };
    let role = move || {
        (roles(), names(), prop::collection::vec(policies(), 0..2)).prop_map(|(id, name, links)| {
            let links: Vec<&str> = links.iter().map(String::as_str).collect();
            common::role(&id, &name, &links)
        })
    };
    prop_oneof![
        (policies(), names()).prop_map(|(id, name)| Command::AclPolicyUpsert(common::policy(&id, &name))),
        policies().prop_map(|id| Command::AclPolicyDelete { id }),
        role().prop_map(Command::AclRoleUpsert),
        roles().prop_map(|id| Command::AclRoleDelete { id }),
        token().prop_map(Command::AclTokenUpsert),
        pick(&["t1", "t2"]).prop_map(|accessor_id| Command::AclTokenDelete { accessor_id }),
        (methods(), pick(&["jwt", "kubernetes"]))
            .prop_map(|(name, kind)| Command::AclAuthMethodUpsert(common::auth_method(&name, &kind))),
        methods().prop_map(|name| Command::AclAuthMethodDelete { name }),
        (pick(&["b1", "b2"]), methods())
            .prop_map(|(id, method)| Command::AclBindingRuleUpsert(common::binding_rule(&id, &method))),
        pick(&["b1", "b2"]).prop_map(|id| Command::AclBindingRuleDelete { id }),
        (
            prop::collection::vec(policies(), 0..2),
            prop::collection::vec((policies(), names()), 0..2),
            prop::collection::vec(roles(), 0..2),
            prop::collection::vec(role(), 0..2),
            prop::collection::vec(pick(&["t1", "t2"]), 0..2),
            prop::collection::vec(token(), 0..2),
        )
            .prop_map(
                |(policy_deletes, policies, role_deletes, role_upserts, token_deletes, token_upserts)| {
                    Command::AclReplicationBatch(AclReplicationBatch {
                        policy_deletes,
                        policy_upserts: policies
                            .iter()
                            .map(|(id, name)| common::policy(id, name))
                            .collect(),
                        role_deletes,
                        role_upserts,
                        token_deletes,
                        token_upserts,
                    })
                }
            ),
    ]
}

// Repeated entries weigh the picks towards valid input; one invalid entry each keeps refusals in.
const NODE_IDS: &[&str] = &[
    "",
    "",
    "6f1d5c3a-2b4e-4c8d-9a7f-0e1b2c3d4e5f",
    "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d",
    "not-a-uuid",
];
const CATALOG_NODES: &[&str] = &["n1", "N1", "n2", "n1", "n2", ""];
const CATALOG_SERVICES: &[&str] = &["web", "api", "Web", "web", "api", ""];
const SERVICE_IDS: &[&str] = &["web-1", "web-2", "api-1", ""];
const CHECK_IDS: &[&str] = &["serfHealth", "c1", "C1", ""];

fn check_status() -> impl Strategy<Value = Option<CheckStatus>> {
    prop::option::of(prop::sample::select(
        &[CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical][..],
    ))
}

/// Catalog commands over a few nodes, services and checks, so updates, no-ops, renames of IDs,
/// missing services, sessions bound to failing checks and extinctions all happen.
fn catalog_command() -> impl Strategy<Value = Command> {
    let check = (
        pick(CHECK_IDS),
        check_status(),
        pick(SERVICE_IDS),
        pick(&["", "x"]),
    )
        .prop_map(|(check_id, status, service_id, output)| CheckRegistration {
            name: format!("{check_id} name"),
            check_id,
            status,
            service_id,
            output: output.to_owned(),
            ..CheckRegistration::default()
        });
    let service = (
        pick(SERVICE_IDS),
        pick(CATALOG_SERVICES),
        prop::collection::vec(pick(&["a", "b"]), 0..2),
    )
        .prop_map(|(id, service, tags)| ServiceRegistration {
            id,
            service,
            tags,
            ..ServiceRegistration::default()
        });
    let register = (
        pick(CATALOG_NODES),
        pick(NODE_IDS),
        pick(&["10.0.0.1", "10.0.0.2", "10.0.0.1", ""]),
        prop::option::of(service),
        prop::collection::vec(check, 0..3),
        any::<bool>(),
    )
        .prop_map(|(node, id, address, service, checks, skip_node_update)| {
            Command::CatalogRegister(Registration {
                node,
                id,
                address: address.to_owned(),
                service,
                checks,
                skip_node_update,
                ..Registration::default()
            })
        });
    let deregister = (
        pick(CATALOG_NODES),
        prop::option::weighted(0.3, pick(SERVICE_IDS)),
        prop::option::weighted(0.3, pick(CHECK_IDS)),
    )
        .prop_map(|(node, service_id, check_id)| Command::CatalogDeregister {
            node,
            service_id,
            check_id,
        });
    let bound_session = (
        session_id(),
        pick(CATALOG_NODES),
        prop::collection::vec(pick(CHECK_IDS), 0..2),
        any::<bool>(),
    )
        .prop_map(|(id, node, node_checks, delete)| {
            Command::SessionCreate(NewSession {
                id,
                name: "bound".into(),
                node,
                lock_delay: Duration::from_secs(1),
                behavior: if delete {
                    SessionBehavior::Delete
                } else {
                    SessionBehavior::Release
                },
                ttl: None,
                node_checks,
            })
        });
    prop_oneof![4 => register, 2 => deregister, 2 => bound_session]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (key(), value(), 0u64..2).prop_map(|(key, value, flags)| Command::KvSet { key, value, flags }),
        2 => (key(), value(), 0u64..12).prop_map(|(key, value, index)| Command::KvCas { key, value, flags: 0, index }),
        2 => key().prop_map(|key| Command::KvDelete { key }),
        1 => (key(), 0u64..12).prop_map(|(key, index)| Command::KvDeleteCas { key, index }),
        1 => key().prop_map(|prefix| Command::KvDeleteTree { prefix }),
        3 => (key(), value(), session_id())
            .prop_map(|(key, value, session)| Command::KvLock { key, value, flags: 0, session }),
        2 => (key(), value(), session_id())
            .prop_map(|(key, value, session)| Command::KvUnlock { key, value, flags: 0, session }),
        2 => prop::collection::vec(txn_op(), 0..6).prop_map(|ops| Command::Txn { ops }),
        2 => (session_id(), any::<bool>(), 0u64..3).prop_map(|(id, delete, delay)| Command::SessionCreate(NewSession {
            id,
            name: "n".into(),
            node: "node1".into(),
            lock_delay: Duration::from_secs(delay),
            behavior: if delete { SessionBehavior::Delete } else { SessionBehavior::Release },
            ttl: None,
            node_checks: Vec::new(),
        })),
        1 => session_id().prop_map(|id| Command::SessionDestroy { id }),
        1 => (0u64..30).prop_map(|up_to_index| Command::ReapTombstones { up_to_index }),
        6 => acl_command(),
        6 => catalog_command(),
    ]
}

/// Commands with their indexes: mostly increasing, sometimes a replay of an old index.
fn history() -> impl Strategy<Value = Vec<(u64, Command)>> {
    prop::collection::vec((0u64..4, command()), 1..40).prop_map(|steps| {
        let mut index = 0;
        steps
            .into_iter()
            .map(|(step, command)| {
                // step 0 replays the current index; the others advance.
                index += step;
                (index, command)
            })
            .collect()
    })
}

/// The catalog as every read shows it, derived lookups included.
fn catalog<B: Backend>(store: &Store<B>) -> String {
    common::catalog_view(
        store,
        &["web", "api", "ghost"],
        &["n1", "n2", NODE_IDS[2], NODE_IDS[3], "ghost"],
    )
}

fn run<B: Backend>(store: &Store<B>, history: &[(u64, Command)]) -> Vec<String> {
    history
        .iter()
        .map(|(index, command)| format!("{:?}", store.apply(*index, command)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn same_history_same_state_and_restore_round_trips(history in history()) {
        let a = common::memory();
        let b = common::memory();
        let outcomes = run(&a, &history);
        prop_assert_eq!(&outcomes, &run(&b, &history));
        let records = a.dump().unwrap();
        prop_assert_eq!(&records, &b.dump().unwrap());
        // Restoring the dump through the log reproduces it exactly.
        let c = common::memory();
        c.apply(1, &Command::RestoreBegin { restore_id: 1 }).unwrap();
        c.apply(2, &Command::RestoreChunk { restore_id: 1, records: records.clone() }).unwrap();
        c.apply(3, &Command::RestoreCommit { restore_id: 1 }).unwrap();
        prop_assert_eq!(c.dump().unwrap(), records);
        prop_assert_eq!(catalog(&c), catalog(&a));
        // And the restored store keeps behaving identically.
        let tail: Vec<_> = history.iter().map(|(i, c)| (i + 1000, c.clone())).collect();
        prop_assert_eq!(run(&a, &tail), run(&c, &tail));
        prop_assert_eq!(a.dump().unwrap(), c.dump().unwrap());
        prop_assert_eq!(catalog(&a), catalog(&c));
    }
}

#[cfg(feature = "rocksdb")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn memory_and_rocksdb_agree(history in history()) {
        let mem = common::memory();
        let disk = common::rocks();
        prop_assert_eq!(run(&mem, &history), run(&disk, &history));
        prop_assert_eq!(mem.dump().unwrap(), disk.dump().unwrap());
        prop_assert_eq!(catalog(&mem), catalog(&disk));
        prop_assert_eq!(mem.last_applied(), disk.last_applied());
        // A restore through the log on both, then more history: still identical.
        let records = mem.dump().unwrap();
        let base = mem.last_applied();
        for (i, command) in [
            Command::RestoreBegin { restore_id: 9 },
            Command::RestoreChunk { restore_id: 9, records },
            Command::RestoreCommit { restore_id: 9 },
        ].iter().enumerate() {
            prop_assert_eq!(
                format!("{:?}", mem.apply(base + 1 + i as u64, command)),
                format!("{:?}", disk.apply(base + 1 + i as u64, command))
            );
        }
        let tail: Vec<_> = history.iter().map(|(i, c)| (i + base + 10, c.clone())).collect();
        prop_assert_eq!(run(&mem, &tail), run(&disk, &tail));
        prop_assert_eq!(mem.dump().unwrap(), disk.dump().unwrap());
        prop_assert_eq!(catalog(&mem), catalog(&disk));
    }
}
