//! ACL roles, auth methods, binding rules and replication batches, run against every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tribune_kvstore::{
    ANONYMOUS_TOKEN_ACCESSOR, AclReplicationBatch, AclToken, ApplyError, AuthMethodDeletion, Backend,
    Command, MAX_REPLICATION_BATCH_ITEMS, Outcome, ReplicationCounts, Store, Wake, WatchScope,
};

fn applied_role(outcome: Result<Outcome, ApplyError>) -> tribune_kvstore::AclRole {
    match outcome.unwrap() {
        Outcome::AclRole(role) => role,
        other => panic!("expected a role, got {other:?}"),
    }
}

fn applied_token(outcome: Result<Outcome, ApplyError>) -> AclToken {
    match outcome.unwrap() {
        Outcome::AclToken(token) => token,
        other => panic!("expected a token, got {other:?}"),
    }
}

fn roles_and_links<B: Backend>(s: &Store<B>) {
    // A role must link existing policies; the error names the missing one.
    let err = s
        .apply(1, &Command::AclRoleUpsert(role("r1", "ops", &["p1"])))
        .unwrap_err();
    assert!(matches!(err, ApplyError::UnknownPolicy { ref policy_id } if policy_id == "p1"));
    assert!(err.to_string().contains("\"p1\""), "{err}");
    s.apply(2, &Command::AclPolicyUpsert(policy("p1", "readers")))
        .unwrap();
    let r1 = applied_role(s.apply(3, &Command::AclRoleUpsert(role("r1", "ops", &["p1"]))));
    assert_eq!((r1.create_index, r1.modify_index), (3, 3));
    assert_eq!(r1.policies[0].name, "readers");
    assert_eq!(s.acl_role("r1").unwrap().value, Some(r1.clone()));
    assert_eq!(s.acl_role("r1").unwrap().index, 3);
    assert_eq!(s.acl_role_by_name("ops").unwrap().value, Some(r1.clone()));
    // Names are unique; renaming frees the old name and keeps the create index.
    let err = s
        .apply(4, &Command::AclRoleUpsert(role("r2", "ops", &[])))
        .unwrap_err();
    assert!(matches!(err, ApplyError::DuplicateRoleName { ref name } if name == "ops"));
    let renamed = applied_role(s.apply(5, &Command::AclRoleUpsert(role("r1", "operators", &["p1"]))));
    assert_eq!((renamed.create_index, renamed.modify_index), (3, 5));
    assert!(s.acl_role_by_name("ops").unwrap().value.is_none());
    s.apply(6, &Command::AclRoleUpsert(role("r2", "ops", &[])))
        .unwrap();
    let listed = s.acl_roles().unwrap();
    assert_eq!(listed.index, 6);
    assert_eq!(
        listed.value.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );

    // A token's role links must exist; names are filled in.
    let mut with_roles = token("acc", "sec", &["p1"]);
    with_roles.roles = vec![role_link("r1"), role_link("nope")];
    let err = s
        .apply(7, &Command::AclTokenUpsert(with_roles.clone()))
        .unwrap_err();
    assert!(matches!(err, ApplyError::UnknownRole { ref role_id } if role_id == "nope"));
    with_roles.roles.pop();
    with_roles.create_time_unix_ms = Some(1_700_000_000_000);
    let stored = applied_token(s.apply(8, &Command::AclTokenUpsert(with_roles)));
    assert_eq!(stored.roles[0].name, "operators");
    assert_eq!(stored.create_time_unix_ms, Some(1_700_000_000_000));
    // An auth method named by a token must exist.
    let err = s
        .apply(9, &Command::AclTokenUpsert(login_token("l", "ls", "k8s")))
        .unwrap_err();
    assert!(matches!(err, ApplyError::UnknownAuthMethod { ref name } if name == "k8s"));

    // Deleting a role leaves tokens linking it alone (the link resolves to nothing).
    s.apply(10, &Command::AclRoleDelete { id: "r1".into() }).unwrap();
    assert!(s.acl_role("r1").unwrap().value.is_none());
    assert!(s.acl_role_by_name("operators").unwrap().value.is_none());
    assert_eq!(s.acl_roles().unwrap().index, 10);
    assert_eq!(s.acl_token("acc").unwrap().value.unwrap().roles.len(), 1);
    // Deleting what does not exist is a no-op.
    assert_eq!(
        s.apply(11, &Command::AclRoleDelete { id: "r1".into() }).unwrap(),
        Outcome::Done
    );
    assert_eq!(s.acl_roles().unwrap().index, 10);
}

fn auth_methods_and_binding_rules<B: Backend>(s: &Store<B>) {
    let err = s
        .apply(1, &Command::AclBindingRuleUpsert(binding_rule("b1", "k8s")))
        .unwrap_err();
    assert!(matches!(err, ApplyError::UnknownAuthMethod { ref name } if name == "k8s"));
    let Outcome::AclAuthMethod(k8s) = s
        .apply(2, &Command::AclAuthMethodUpsert(auth_method("k8s", "kubernetes")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((k8s.create_index, k8s.modify_index), (2, 2));
    s.apply(3, &Command::AclAuthMethodUpsert(auth_method("jwt", "jwt")))
        .unwrap();
    // The type cannot change; other fields can, keeping the create index.
    let err = s
        .apply(4, &Command::AclAuthMethodUpsert(auth_method("k8s", "jwt")))
        .unwrap_err();
    assert!(matches!(err, ApplyError::AuthMethodTypeChanged { .. }));
    let mut changed = auth_method("k8s", "kubernetes");
    changed.description = "cluster logins".into();
    s.apply(5, &Command::AclAuthMethodUpsert(changed)).unwrap();
    let stored = s.acl_auth_method("k8s").unwrap();
    assert_eq!(stored.index, 5);
    let stored = stored.value.unwrap();
    assert_eq!(
        (
            stored.create_index,
            stored.modify_index,
            stored.description.as_str()
        ),
        (2, 5, "cluster logins")
    );
    assert_eq!(s.acl_auth_methods().unwrap().value.len(), 2);

    let Outcome::AclBindingRule(b1) = s
        .apply(6, &Command::AclBindingRuleUpsert(binding_rule("b1", "k8s")))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(b1.create_index, 6);
    s.apply(7, &Command::AclBindingRuleUpsert(binding_rule("b2", "k8s")))
        .unwrap();
    s.apply(8, &Command::AclBindingRuleUpsert(binding_rule("b3", "jwt")))
        .unwrap();
    assert_eq!(s.acl_binding_rule("b1").unwrap().value, Some(b1));
    assert_eq!(s.acl_binding_rules().unwrap().value.len(), 3);
    assert_eq!(s.acl_binding_rules().unwrap().index, 8);

    s.apply(9, &Command::AclTokenUpsert(login_token("t1", "s1", "k8s")))
        .unwrap();
    s.apply(10, &Command::AclTokenUpsert(login_token("t2", "s2", "jwt")))
        .unwrap();
    s.apply(11, &Command::AclTokenUpsert(login_token("t3", "s3", "k8s")))
        .unwrap();
    s.apply(12, &Command::AclTokenUpsert(token("t4", "s4", &[])))
        .unwrap();

    // Deleting a method takes its binding rules and its tokens with it, in the same apply.
    let outcome = s
        .apply(13, &Command::AclAuthMethodDelete { name: "k8s".into() })
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::AclAuthMethodDeleted(AuthMethodDeletion {
            existed: true,
            binding_rule_ids: vec!["b1".into(), "b2".into()],
            token_accessor_ids: vec!["t1".into(), "t3".into()],
        })
    );
    assert!(s.acl_auth_method("k8s").unwrap().value.is_none());
    assert_eq!(
        s.acl_binding_rules()
            .unwrap()
            .value
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["b3"]
    );
    let tokens = s.acl_tokens().unwrap();
    assert_eq!(tokens.index, 13);
    assert_eq!(
        tokens
            .value
            .iter()
            .map(|t| t.accessor_id.as_str())
            .collect::<Vec<_>>(),
        ["t2", "t4"]
    );
    assert!(s.acl_token_by_secret("s1").unwrap().value.is_none());
    assert_eq!(s.acl_auth_methods().unwrap().index, 13);
    assert_eq!(s.acl_binding_rules().unwrap().index, 13);
    // Again: nothing left to delete.
    assert_eq!(
        s.apply(14, &Command::AclAuthMethodDelete { name: "k8s".into() })
            .unwrap(),
        Outcome::AclAuthMethodDeleted(AuthMethodDeletion::default())
    );
    s.apply(15, &Command::AclBindingRuleDelete { id: "b3".into() })
        .unwrap();
    assert!(s.acl_binding_rule("b3").unwrap().value.is_none());
}

fn replication_batches<B: Backend>(s: &Store<B>) {
    // Local state: a local token, a policy that the primary has renamed, a token to be deleted.
    s.apply(1, &Command::AclPolicyUpsert(policy("pa", "x"))).unwrap();
    let mut local = token("local", "local-secret", &[]);
    local.local = true;
    s.apply(2, &Command::AclTokenUpsert(local)).unwrap();
    s.apply(3, &Command::AclTokenUpsert(token("old", "old-secret", &[])))
        .unwrap();

    let mut replicated_role = role("r1", "ops", &["p1", "p-missing"]);
    replicated_role.policies[1].name = "as-sent".into();
    let mut replicated_token = token("t1", "t1-secret", &["p1"]);
    replicated_token.roles = vec![role_link("r1"), role_link("r-missing")];
    replicated_token.auth_method = "primary-only-method".into();
    let batch = AclReplicationBatch {
        policy_deletes: vec!["never-existed".into()],
        // The primary gave pa's name to pb and renamed pa: whichever comes first, both land.
        policy_upserts: vec![policy("pb", "x"), policy("pa", "y"), policy("p1", "readers")],
        role_deletes: vec![],
        role_upserts: vec![replicated_role],
        token_deletes: vec!["old".into(), "local".into()],
        token_upserts: vec![replicated_token],
    };
    let outcome = s.apply(4, &Command::AclReplicationBatch(batch)).unwrap();
    assert_eq!(
        outcome,
        Outcome::AclReplicated(ReplicationCounts {
            policies_deleted: 0,
            policies_upserted: 3,
            roles_deleted: 0,
            roles_upserted: 1,
            tokens_deleted: 1,
            tokens_upserted: 1,
        })
    );
    assert_eq!(s.acl_policy_by_name("x").unwrap().value.unwrap().id, "pb");
    assert_eq!(s.acl_policy_by_name("y").unwrap().value.unwrap().id, "pa");
    // pb took "x" from pa, which was removed then and written again under its new name: no two
    // policies ever shared a name, even between the two upserts.
    assert_eq!(s.acl_policy("pa").unwrap().value.unwrap().create_index, 4);
    let names: Vec<String> = s
        .acl_policies()
        .unwrap()
        .value
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "{names:?}");
    // Links to what exists get their names; links to what does not are kept as sent.
    let r1 = s.acl_role("r1").unwrap().value.unwrap();
    assert_eq!(
        r1.policies
            .iter()
            .map(|l| (l.id.as_str(), l.name.as_str()))
            .collect::<Vec<_>>(),
        [("p1", "readers"), ("p-missing", "as-sent")]
    );
    let t1 = s.acl_token_by_secret("t1-secret").unwrap().value.unwrap();
    assert_eq!((t1.accessor_id.as_str(), t1.create_index), ("t1", 4));
    assert_eq!(t1.roles[0].name, "ops");
    assert_eq!(t1.roles[1].id, "r-missing");
    assert_eq!(t1.auth_method, "primary-only-method");
    // The local token survived a delete it should never have been named in.
    assert!(s.acl_token("local").unwrap().value.is_some());
    assert!(s.acl_token("old").unwrap().value.is_none());
    assert!(s.acl_token_by_secret("old-secret").unwrap().value.is_none());

    // The primary is the authority on a token's secret.
    let batch = AclReplicationBatch {
        token_upserts: vec![token("t1", "t1-new-secret", &[])],
        role_deletes: vec!["r1".into()],
        ..AclReplicationBatch::default()
    };
    s.apply(5, &Command::AclReplicationBatch(batch)).unwrap();
    assert!(s.acl_token_by_secret("t1-secret").unwrap().value.is_none());
    assert_eq!(
        s.acl_token_by_secret("t1-new-secret")
            .unwrap()
            .value
            .unwrap()
            .create_index,
        4
    );
    assert!(s.acl_role("r1").unwrap().value.is_none());

    // All or nothing: one item refused at apply time, and nothing of the batch lands.
    let before = s.dump().unwrap();
    let batch = AclReplicationBatch {
        policy_upserts: vec![policy("p2", "writers")],
        role_upserts: vec![role("r2", "devs", &[])],
        token_upserts: vec![token("t2", "t2-secret", &[])],
        token_deletes: vec![ANONYMOUS_TOKEN_ACCESSOR.into()],
        ..AclReplicationBatch::default()
    };
    assert!(matches!(
        s.apply(6, &Command::AclReplicationBatch(batch)),
        Err(ApplyError::BuiltinDelete { .. })
    ));
    // ...or refused by validation.
    let mut bad_token = token("t3", "", &[]);
    bad_token.description = "no secret".into();
    let batch = AclReplicationBatch {
        policy_upserts: vec![policy("p2", "writers")],
        token_upserts: vec![token("t2", "t2-secret", &[]), bad_token],
        ..AclReplicationBatch::default()
    };
    assert!(matches!(
        s.apply(7, &Command::AclReplicationBatch(batch)),
        Err(ApplyError::InvalidField {
            field: "token.secret_id",
            ..
        })
    ));
    let mut local_token = token("t4", "t4-secret", &[]);
    local_token.local = true;
    let batch = AclReplicationBatch {
        token_upserts: vec![local_token],
        ..AclReplicationBatch::default()
    };
    assert!(matches!(
        s.apply(8, &Command::AclReplicationBatch(batch)),
        Err(ApplyError::InvalidField {
            field: "replication.token_upserts.local",
            ..
        })
    ));
    let batch = AclReplicationBatch {
        token_deletes: (0..=MAX_REPLICATION_BATCH_ITEMS)
            .map(|i| format!("t{i}"))
            .collect(),
        ..AclReplicationBatch::default()
    };
    assert!(matches!(
        s.apply(9, &Command::AclReplicationBatch(batch)),
        Err(ApplyError::ReplicationBatchTooLarge { items, limit })
            if items == MAX_REPLICATION_BATCH_ITEMS + 1 && limit == MAX_REPLICATION_BATCH_ITEMS
    ));
    assert_eq!(s.dump().unwrap(), before);
    assert_eq!(s.last_applied(), 9);
}

fn validation_names_the_field<B: Backend>(s: &Store<B>) {
    let field_of = |command: Command| match s.apply(s.last_applied() + 1, &command) {
        Err(ApplyError::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(
        field_of(Command::AclRoleUpsert(role("r", "has space", &[]))),
        "role.name"
    );
    assert_eq!(field_of(Command::AclRoleUpsert(role("", "r", &[]))), "role.id");
    let mut bad = role("r", "r", &[]);
    bad.service_identities[0].service_name.clear();
    assert_eq!(
        field_of(Command::AclRoleUpsert(bad)),
        "role.service_identities.service_name"
    );
    let mut bad = role("r", "r", &[]);
    bad.node_identities[0].datacenter.clear();
    assert_eq!(
        field_of(Command::AclRoleUpsert(bad)),
        "role.node_identities.datacenter"
    );
    let mut bad = token("a", "s", &[]);
    bad.roles = vec![role_link("")];
    assert_eq!(field_of(Command::AclTokenUpsert(bad)), "token.roles.id");
    let mut bad = token("a", "s", &[]);
    bad.templated_policies = vec![tribune_kvstore::TemplatedPolicy {
        template_name: String::new(),
        name: String::new(),
        datacenters: Vec::new(),
    }];
    assert_eq!(
        field_of(Command::AclTokenUpsert(bad)),
        "token.templated_policies.template_name"
    );
    let mut bad = token(ANONYMOUS_TOKEN_ACCESSOR, "anonymous", &[]);
    bad.auth_method = "k8s".into();
    assert_eq!(field_of(Command::AclTokenUpsert(bad)), "token.auth_method");
    let mut bad = auth_method("m", "jwt");
    bad.token_locality = "everywhere".into();
    assert_eq!(
        field_of(Command::AclAuthMethodUpsert(bad)),
        "auth_method.token_locality"
    );
    assert_eq!(
        field_of(Command::AclAuthMethodUpsert(auth_method("m", ""))),
        "auth_method.method_type"
    );
    let mut bad = binding_rule("b", "m");
    bad.bind_name.clear();
    assert_eq!(
        field_of(Command::AclBindingRuleUpsert(bad)),
        "binding_rule.bind_name"
    );
    assert_eq!(
        field_of(Command::AclBindingRuleDelete { id: String::new() }),
        "binding_rule.id"
    );
    assert_eq!(
        field_of(Command::AclAuthMethodDelete { name: String::new() }),
        "auth_method.name"
    );
    let mut bad = role("r", "r", &[]);
    bad.policies = (0..=tribune_kvstore::MAX_ACL_LIST_ITEMS)
        .map(|i| tribune_kvstore::PolicyLink {
            id: format!("p{i}"),
            name: String::new(),
        })
        .collect();
    assert_eq!(field_of(Command::AclRoleUpsert(bad)), "role.policies");
    assert!(s.dump().unwrap().is_empty());
}

async fn acl_scope_wakes_on_every_acl_table<B: Backend>(s: &Store<B>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let hub = s.watch_hub();
    let steps = [
        Command::AclPolicyUpsert(policy("p1", "readers")),
        Command::AclRoleUpsert(role("r1", "ops", &["p1"])),
        Command::AclAuthMethodUpsert(auth_method("k8s", "kubernetes")),
        Command::AclBindingRuleUpsert(binding_rule("b1", "k8s")),
        Command::AclBindingRuleDelete { id: "b1".into() },
        Command::AclRoleDelete { id: "r1".into() },
        Command::AclAuthMethodDelete { name: "k8s".into() },
        Command::AclReplicationBatch(AclReplicationBatch {
            role_upserts: vec![role("r2", "devs", &[])],
            ..AclReplicationBatch::default()
        }),
    ];
    for (i, command) in steps.iter().enumerate() {
        let index = i as u64 + 1;
        let acl = hub.subscribe(WatchScope::Acl);
        s.apply(index, command).unwrap();
        assert_eq!(
            acl.wait_until(deadline).await,
            Some(Wake::Changed { index }),
            "{command:?}"
        );
        assert_eq!(s.scope_index(&WatchScope::Acl).unwrap(), index);
    }
    // A blocked wait on the ACL scope returns when a role changes.
    assert_eq!(
        s.wait(&WatchScope::Acl, 8, tokio::time::Instant::now())
            .await
            .unwrap(),
        tribune_kvstore::WaitOutcome::TimedOut { index: 8 }
    );
}

/// The new records travel through a staged restore and an archive, and come back identical.
fn new_records_restore_and_round_trip<B: Backend>(s: &Store<B>) {
    let src = memory();
    src.apply(1, &Command::AclPolicyUpsert(policy("p1", "readers")))
        .unwrap();
    src.apply(2, &Command::AclRoleUpsert(role("r1", "ops", &["p1"])))
        .unwrap();
    src.apply(3, &Command::AclAuthMethodUpsert(auth_method("k8s", "kubernetes")))
        .unwrap();
    src.apply(4, &Command::AclBindingRuleUpsert(binding_rule("b1", "k8s")))
        .unwrap();
    let mut linked = login_token("t1", "s1", "k8s");
    linked.roles = vec![role_link("r1")];
    src.apply(5, &Command::AclTokenUpsert(linked)).unwrap();
    let records = src.dump().unwrap();
    assert_eq!(records.len(), 5 + 5, "five table indexes and five records");

    s.apply(1, &Command::RestoreBegin { restore_id: 1 }).unwrap();
    s.apply(
        2,
        &Command::RestoreChunk {
            restore_id: 1,
            records: records.clone(),
        },
    )
    .unwrap();
    s.apply(3, &Command::RestoreCommit { restore_id: 1 }).unwrap();
    assert_eq!(s.dump().unwrap(), records);
    assert_eq!(s.acl_role_by_name("ops").unwrap().value.unwrap().id, "r1");
    assert_eq!(
        s.acl_token_by_secret("s1").unwrap().value.unwrap().roles[0].name,
        "ops"
    );
    assert_eq!(s.acl_roles().unwrap().index, 2);
    assert_eq!(s.acl_binding_rules().unwrap().index, 4);

    let (archive, _) = src
        .export(Vec::new(), &tribune_kvstore::ExportOptions::default())
        .unwrap();
    let copy = memory();
    copy.import(archive.as_slice()).unwrap();
    assert_eq!(copy.dump().unwrap(), records);
    // The restored derived rows work: names resolve, and the cascade finds the method's records.
    let Outcome::AclAuthMethodDeleted(deleted) = s
        .apply(4, &Command::AclAuthMethodDelete { name: "k8s".into() })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (deleted.binding_rule_ids, deleted.token_accessor_ids),
        (vec!["b1".to_string()], vec!["t1".to_string()])
    );
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
            case!(roles_and_links);
            case!(auth_methods_and_binding_rules);
            case!(replication_batches);
            case!(validation_names_the_field);
            case!(new_records_restore_and_round_trip);
            case!(async acl_scope_wakes_on_every_acl_table);
        }
    };
}

suite!(memory_backend, common::memory);
#[cfg(feature = "rocksdb")]
suite!(rocksdb_backend, common::rocks);
