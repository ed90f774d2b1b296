//! The service catalog, on every backend: Consul's register and deregister rules, refusals that
//! change nothing, indexes (per table, per service name, per node, extinctions), sessions destroyed
//! with their checks and nodes, blocking reads woken by their scope only, and catalog state through
//! exports, imports and staged restores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use tribune_kvstore::{
    ApplyError, Backend, CatalogOutcome, CheckStatus, Command, ExportOptions, Outcome, Registration,
    ServiceWeights, SessionBehavior, StateRecord, Store, WaitOutcome, Wake, WatchScope,
};

use CheckStatus::{Critical, Passing, Warning};

const N1_ID: &str = "6f1d5c3a-2b4e-4c8d-9a7f-0e1b2c3d4e5f";
const N2_ID: &str = "0a9b8c7d-6e5f-4a3b-8c1d-2e3f4a5b6c7d";

fn catalog(outcome: Result<Outcome, ApplyError>) -> CatalogOutcome {
    match outcome.unwrap() {
        Outcome::Catalog(out) => out,
        other => panic!("expected a catalog outcome, got {other:?}"),
    }
}

fn service_index<B: Backend>(s: &Store<B>, name: &str) -> u64 {
    s.scope_index(&WatchScope::Service(name.into())).unwrap()
}

fn node_index<B: Backend>(s: &Store<B>, name: &str) -> u64 {
    s.scope_index(&WatchScope::Node(name.into())).unwrap()
}

/// Every catalog read of the names these tests use.
fn catalog_view<B: Backend>(s: &Store<B>) -> String {
    common::catalog_view(s, &["web", "api", "db", "ghost"], &["n1", "n2", N1_ID, "ghost"])
}

fn register_and_read<B: Backend>(s: &Store<B>) {
    // A fresh catalog never reports index 0.
    assert_eq!(s.nodes().unwrap().index, 1);
    assert_eq!(s.services().unwrap().index, 1);
    assert_eq!(s.service_nodes("web").unwrap().index, 1);
    assert_eq!(s.node("n1").unwrap().index, 1);
    assert!(s.node("n1").unwrap().value.is_none());
    assert_eq!(s.checks_in_state(None).unwrap().index, 1);

    let registration = Registration {
        id: N1_ID.into(),
        tagged_addresses: BTreeMap::from([("wan".to_owned(), "198.51.100.1".to_owned())]),
        node_meta: BTreeMap::from([("rack".to_owned(), "r1".to_owned())]),
        service: Some(svc("web-1", "web", &["v1", "blue"])),
        checks: vec![
            chk("serfHealth", Some(Passing), ""),
            chk("web-alive", None, "web-1"),
        ],
        ..node_reg("n1", "10.0.0.1")
    };
    let out = catalog(s.apply(10, &Command::CatalogRegister(registration)));
    assert!(out.destroyed_sessions.is_empty());

    let nodes = s.nodes().unwrap();
    assert_eq!(nodes.index, 10);
    let node = &nodes.value[0];
    assert_eq!(
        (node.id.as_str(), node.node.as_str(), node.address.as_str()),
        (N1_ID, "n1", "10.0.0.1")
    );
    assert_eq!(node.meta["rack"], "r1");
    assert_eq!(node.tagged_addresses["wan"], "198.51.100.1");
    assert_eq!((node.create_index, node.modify_index), (10, 10));

    let read = s.node("n1").unwrap();
    assert_eq!(read.index, 10);
    let services = read.value.unwrap().services;
    assert_eq!(services.len(), 1);
    let web = &services[0];
    assert_eq!(
        (web.node.as_str(), web.id.as_str(), web.service.as_str(), web.port),
        ("n1", "web-1", "web", 8080)
    );
    assert_eq!(web.tags, ["v1", "blue"]);
    assert_eq!(
        web.weights,
        ServiceWeights {
            passing: 1,
            warning: 1
        }
    );
    assert_eq!((web.create_index, web.modify_index), (10, 10));
    // By ID, and whatever the case.
    assert_eq!(
        s.node(&N1_ID.to_uppercase()).unwrap().value.unwrap().node.node,
        "n1"
    );
    assert_eq!(s.node("N1").unwrap().index, 10);
    assert_eq!(s.node_services("n1").unwrap().value, services);
    assert_eq!(s.node_service("N1", "WEB-1").unwrap().value.unwrap().id, "web-1");

    let listed = s.services().unwrap();
    assert_eq!(listed.index, 10);
    assert_eq!(
        listed.value,
        BTreeMap::from([("web".to_owned(), vec!["blue".to_owned(), "v1".to_owned()])])
    );
    let instances = s.service_nodes("WEB").unwrap();
    assert_eq!(instances.index, 10);
    assert_eq!(instances.value.len(), 1);
    assert_eq!(instances.value[0].node.node, "n1");

    let health = s.service_health("web").unwrap();
    assert_eq!(health.index, 10);
    let checks = &health.value[0].checks;
    let ids: Vec<_> = checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(ids, ["serfHealth", "web-alive"], "node-level checks first");
    let alive = &checks[1];
    assert_eq!(alive.status, Critical, "a check without a status starts critical");
    assert_eq!(
        (alive.service_id.as_str(), alive.service_name.as_str()),
        ("web-1", "web")
    );
    assert_eq!(alive.service_tags, ["v1", "blue"]);
    assert_eq!(checks[0].service_name, "");

    assert_eq!(s.node_checks("n1").unwrap().value.len(), 2);
    assert_eq!(s.node_checks("n1").unwrap().index, 10);
    let service_checks = s.service_checks("web").unwrap().value;
    assert_eq!(service_checks.len(), 1);
    assert_eq!(service_checks[0].check_id, "web-alive");
    assert_eq!(s.checks_in_state(Some(Critical)).unwrap().value.len(), 1);
    assert_eq!(
        s.checks_in_state(Some(Passing)).unwrap().value[0].check_id,
        "serfHealth"
    );
    assert!(s.checks_in_state(Some(Warning)).unwrap().value.is_empty());
    assert_eq!(s.checks_in_state(None).unwrap().value.len(), 2);
    assert_eq!(
        s.node_check("n1", "SERFHEALTH").unwrap().value.unwrap().status,
        Passing
    );
    assert!(s.node("ghost").unwrap().value.is_none());
    assert!(s.service_nodes("ghost").unwrap().value.is_empty());
}

fn unchanged_registrations_move_nothing<B: Backend>(s: &Store<B>) {
    let command = register(
        "n1",
        Some(svc("web-1", "web", &["v1"])),
        vec![
            chk("serfHealth", Some(Passing), ""),
            chk("web-alive", Some(Passing), "web-1"),
        ],
    );
    s.apply(10, &command).unwrap();
    let before = s.dump().unwrap();
    assert!(catalog(s.apply(11, &command)).destroyed_sessions.is_empty());
    assert_eq!(s.dump().unwrap(), before, "nothing rewritten, no index moved");
    for scope in [
        WatchScope::Nodes,
        WatchScope::Services,
        WatchScope::Checks,
        WatchScope::Service("web".into()),
        WatchScope::Node("n1".into()),
    ] {
        assert_eq!(s.scope_index(&scope).unwrap(), 10, "{scope:?}");
    }
    // Only a check's output changes: the checks and the service move, not the node or the services.
    let mut changed = chk("web-alive", Some(Passing), "web-1");
    changed.output = "HTTP 200".into();
    s.apply(12, &register("n1", None, vec![changed])).unwrap();
    assert_eq!(s.scope_index(&WatchScope::Checks).unwrap(), 12);
    assert_eq!(service_index(s, "web"), 12);
    assert_eq!(s.scope_index(&WatchScope::Nodes).unwrap(), 10);
    assert_eq!(s.scope_index(&WatchScope::Services).unwrap(), 10);
    assert_eq!(node_index(s, "n1"), 10);
    let check = s.node_check("n1", "web-alive").unwrap().value.unwrap();
    assert_eq!((check.create_index, check.modify_index), (10, 12));
}

fn defaults_and_skip_node_update<B: Backend>(s: &Store<B>) {
    let mut service = svc("", "api", &[]);
    service.weights = Some(ServiceWeights {
        passing: 0,
        warning: 3,
    });
    let mut check = chk("", Some(Warning), "api");
    check.name = "api-up".into();
    s.apply(1, &register("n1", Some(service), vec![check])).unwrap();
    let api = s.node_service("n1", "api").unwrap().value.unwrap();
    assert_eq!(api.id, "api", "the service name is the ID when none is given");
    assert_eq!(
        api.weights,
        ServiceWeights::default(),
        "invalid weights store Consul's default"
    );
    let check = s.node_check("n1", "api-up").unwrap().value.unwrap();
    assert_eq!(
        (check.name.as_str(), check.service_id.as_str()),
        ("api-up", "api")
    );

    let mut weighted = svc("api", "api", &[]);
    weighted.weights = Some(ServiceWeights {
        passing: 5,
        warning: 2,
    });
    s.apply(2, &register("n1", Some(weighted), vec![])).unwrap();
    assert_eq!(
        s.node_service("n1", "api").unwrap().value.unwrap().weights,
        ServiceWeights {
            passing: 5,
            warning: 2
        }
    );

    // skip_node_update leaves an existing node alone, yet the service is written.
    let skip = Registration {
        address: String::new(),
        node_meta: BTreeMap::from([("ignored".to_owned(), "yes".to_owned())]),
        skip_node_update: true,
        service: Some(svc("db-1", "db", &[])),
        ..node_reg("n1", "")
    };
    s.apply(3, &Command::CatalogRegister(skip.clone())).unwrap();
    let n1 = s.node("n1").unwrap().value.unwrap();
    assert_eq!(n1.node.address, "10.0.0.1");
    assert!(n1.node.meta.is_empty());
    assert_eq!(n1.node.modify_index, 1);
    assert_eq!(n1.services.len(), 2);
    // ...and still creates a node that does not exist.
    s.apply(
        4,
        &Command::CatalogRegister(Registration {
            node: "n2".into(),
            ..skip
        }),
    )
    .unwrap();
    let n2 = s.node("n2").unwrap().value.unwrap();
    assert_eq!((n2.node.address.as_str(), n2.node.create_index), ("", 4));
    assert_eq!(n2.node.meta["ignored"], "yes");
}

fn refusals_change_nothing<B: Backend>(s: &Store<B>) {
    let mut with_id = node_reg("n1", "10.0.0.1");
    with_id.id = N1_ID.into();
    with_id.checks = vec![chk("serfHealth", Some(Passing), "")];
    s.apply(1, &Command::CatalogRegister(with_id.clone())).unwrap();
    let mut index = 1;
    let mut refuse = |command: Command, what: &str| -> ApplyError {
        let before = s.dump().unwrap();
        index += 1;
        let err = s.apply(index, &command).unwrap_err();
        assert!(err.is_deterministic());
        assert_eq!(s.dump().unwrap(), before, "{what}: {err}");
        assert_eq!(s.last_applied(), index);
        err
    };

    // All or nothing: a new node, a service and a check of a missing instance write none of them.
    let err = refuse(
        register(
            "n3",
            Some(svc("web-1", "web", &[])),
            vec![chk("ok", Some(Passing), "web-1"), chk("bad", None, "nope")],
        ),
        "missing service",
    );
    assert!(
        matches!(&err, ApplyError::MissingService { service_id, node } if service_id == "nope" && node == "n3")
    );
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let mut elsewhere = chk("c", None, "");
    elsewhere.node = "n2".into();
    let err = refuse(register("n1", None, vec![elsewhere]), "check of another node");
    assert!(matches!(err, ApplyError::CheckNodeMismatch { .. }), "{err}");

    let mut taken = node_reg("n2", "10.0.0.2");
    taken.id = N1_ID.to_uppercase();
    let err = refuse(Command::CatalogRegister(taken), "ID of another node");
    assert!(
        matches!(&err, ApplyError::NodeIdInUse { node, .. } if node == "n1"),
        "{err}"
    );

    let mut renamed_id = with_id.clone();
    renamed_id.id = N2_ID.into();
    renamed_id.checks.clear();
    let err = refuse(
        Command::CatalogRegister(renamed_id.clone()),
        "healthy node keeps its ID",
    );
    assert!(matches!(err, ApplyError::NodeNameReserved { .. }), "{err}");

    for (command, field) in [
        (register("", None, vec![]), "registration.node"),
        (
            Command::CatalogRegister(node_reg("n9", "")),
            "registration.address",
        ),
        (
            Command::CatalogRegister(Registration {
                id: "not-a-uuid".into(),
                ..node_reg("n9", "10.0.0.9")
            }),
            "registration.id",
        ),
        (register("n9", Some(svc("x", "", &[])), vec![]), "service.service"),
        (register("bad\0name", None, vec![]), "registration.node"),
        (
            register("n9", None, vec![tribune_kvstore::CheckRegistration::default()]),
            "check.check_id",
        ),
        (
            register(
                "n9",
                Some(tribune_kvstore::ServiceRegistration {
                    meta: BTreeMap::from([("consul-x".to_owned(), "1".to_owned())]),
                    ..svc("x", "x", &[])
                }),
                vec![],
            ),
            "service.meta",
        ),
        (
            register(
                "n9",
                Some(svc(
                    "x",
                    "x",
                    &vec!["t"; tribune_kvstore::MAX_CATALOG_LIST_ITEMS + 1],
                )),
                vec![],
            ),
            "service.tags",
        ),
        (deregister("", None, None), "deregistration.node"),
    ] {
        let err = refuse(command, field);
        assert!(
            matches!(&err, ApplyError::InvalidField { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }

    // Once its serfHealth is critical, the node may take a new ID; the old one is free again.
    let mut failed = with_id.clone();
    failed.checks = vec![chk("serfHealth", Some(Critical), "")];
    index += 1;
    s.apply(index, &Command::CatalogRegister(failed)).unwrap();
    index += 1;
    s.apply(index, &Command::CatalogRegister(renamed_id)).unwrap();
    assert!(s.node(N1_ID).unwrap().value.is_none());
    assert_eq!(s.node(N2_ID).unwrap().value.unwrap().node.node, "n1");
    let mut reuse = node_reg("n2", "10.0.0.2");
    reuse.id = N1_ID.into();
    index += 1;
    s.apply(index, &Command::CatalogRegister(reuse)).unwrap();
    assert_eq!(s.node(N1_ID).unwrap().value.unwrap().node.node, "n2");
}

fn service_indexes_move_for_the_services_concerned<B: Backend>(s: &Store<B>) {
    s.apply(
        10,
        &register(
            "n1",
            Some(svc("web-1", "web", &[])),
            vec![chk("web-chk", Some(Passing), "web-1")],
        ),
    )
    .unwrap();
    s.apply(11, &register("n1", Some(svc("api-1", "api", &[])), vec![]))
        .unwrap();
    s.apply(
        12,
        &register(
            "n2",
            Some(svc("db-1", "db", &[])),
            vec![chk("serfHealth", Some(Passing), "")],
        ),
    )
    .unwrap();
    let indexes = |s: &Store<B>| {
        (
            service_index(s, "web"),
            service_index(s, "api"),
            service_index(s, "db"),
        )
    };
    assert_eq!(
        indexes(s),
        (10, 11, 12),
        "adding api to an unchanged n1 moved only api"
    );
    assert_eq!(s.service_health("web").unwrap().index, 10);

    // A node-level check on n1 concerns every service on n1.
    s.apply(
        13,
        &register("n1", None, vec![chk("serfHealth", Some(Passing), "")]),
    )
    .unwrap();
    assert_eq!(indexes(s), (13, 13, 12));
    // An instance's check concerns its service only.
    s.apply(
        14,
        &register("n1", None, vec![chk("web-chk", Some(Warning), "web-1")]),
    )
    .unwrap();
    assert_eq!(indexes(s), (14, 13, 12));
    // n1's serfHealth failing wakes the health of everything on n1.
    s.apply(
        15,
        &register("n1", None, vec![chk("serfHealth", Some(Critical), "")]),
    )
    .unwrap();
    assert_eq!(indexes(s), (15, 15, 12));
    let health = s.service_health("api").unwrap();
    assert_eq!(health.index, 15);
    assert_eq!(health.value[0].checks[0].status, Critical);
    // So does a change of the node record.
    s.apply(16, &Command::CatalogRegister(node_reg("n1", "10.0.0.99")))
        .unwrap();
    assert_eq!(indexes(s), (16, 16, 12));
    assert_eq!(s.scope_index(&WatchScope::Nodes).unwrap(), 16);
    assert_eq!((node_index(s, "n1"), node_index(s, "n2")), (16, 12));
    assert_eq!(s.service_nodes("web").unwrap().value[0].node.address, "10.0.0.99");
    // Removing n2's node-level check moves db, the checks and (as in Consul) the services index.
    s.apply(17, &deregister("n2", None, Some("serfHealth"))).unwrap();
    assert_eq!(indexes(s), (16, 16, 17));
    assert_eq!(s.scope_index(&WatchScope::Checks).unwrap(), 17);
    assert_eq!(s.scope_index(&WatchScope::Services).unwrap(), 17);
    assert_eq!(s.scope_index(&WatchScope::Nodes).unwrap(), 16);
}

fn critical_checks_destroy_their_sessions<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &register(
            "n1",
            Some(svc("web-1", "web", &[])),
            vec![
                chk("serfHealth", Some(Passing), ""),
                chk("web-chk", Some(Passing), "web-1"),
            ],
        ),
    )
    .unwrap();
    s.apply(
        2,
        &bound_session("s1", "n1", SessionBehavior::Release, &["serfHealth"]),
    )
    .unwrap();
    s.apply(
        3,
        &bound_session("s2", "N1", SessionBehavior::Delete, &["SERFHEALTH"]),
    )
    .unwrap();
    s.apply(
        4,
        &bound_session("s3", "n1", SessionBehavior::Release, &["web-chk"]),
    )
    .unwrap();
    s.apply(
        5,
        &bound_session("s4", "n2", SessionBehavior::Release, &["serfHealth"]),
    )
    .unwrap();
    s.apply(6, &lock("locks/a", "1", "s1")).unwrap();
    s.apply(7, &lock("locks/b", "2", "s2")).unwrap();
    s.apply(8, &lock("locks/c", "3", "s3")).unwrap();

    let out = catalog(s.apply(
        9,
        &register("n1", None, vec![chk("serfHealth", Some(Critical), "")]),
    ));
    let ids: Vec<_> = out.destroyed_sessions.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    let first = &out.destroyed_sessions[0].invalidation;
    assert!(first.existed);
    assert_eq!(first.held_keys, ["locks/a"]);
    assert_eq!(first.lock_delay, Duration::from_secs(15));
    let released = s.get("locks/a").unwrap().value.unwrap();
    assert_eq!((released.session, released.value), (None, b"1".to_vec()));
    assert!(
        s.get("locks/b").unwrap().value.is_none(),
        "the delete behavior deletes"
    );
    assert!(s.session("s3").unwrap().value.is_some());
    assert!(s.session("s4").unwrap().value.is_some(), "another node's check");
    assert_eq!(
        s.get("locks/c").unwrap().value.unwrap().session.as_deref(),
        Some("s3")
    );

    // A session bound to a check that is already critical goes at the next registration of it, even
    // an unchanged one (which writes nothing else).
    s.apply(
        10,
        &bound_session("s5", "n1", SessionBehavior::Release, &["serfHealth"]),
    )
    .unwrap();
    let checks_index = s.scope_index(&WatchScope::Checks).unwrap();
    let out = catalog(s.apply(
        11,
        &register("n1", None, vec![chk("serfHealth", Some(Critical), "")]),
    ));
    assert_eq!(out.destroyed_sessions.len(), 1);
    assert_eq!(out.destroyed_sessions[0].id, "s5");
    assert_eq!(s.scope_index(&WatchScope::Checks).unwrap(), checks_index);
    assert!(s.session("s5").unwrap().value.is_none());

    // Removing a check destroys its sessions whatever its state.
    let out = catalog(s.apply(12, &deregister("n1", None, Some("web-chk"))));
    assert_eq!(out.destroyed_sessions[0].id, "s3");
    assert_eq!(s.get("locks/c").unwrap().value.unwrap().session, None);
}

/// A session is created only bound to checks its node has and that are not critical, so that none
/// outlives a failure that came before it; `serfHealth` is the leader's to vouch for.
fn sessions_bind_only_to_live_checks<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &register(
            "n1",
            Some(svc("web-1", "web", &[])),
            vec![
                chk("web-chk", Some(Warning), "web-1"),
                chk("disk", Some(Critical), ""),
            ],
        ),
    )
    .unwrap();
    let before = s.dump().unwrap();
    for (index, node, checks, refusal) in [
        (2, "n1", &["nope"][..], "Missing check 'nope' registration"),
        (
            3,
            "n1",
            &["web-chk", "disk"][..],
            "Check 'disk' is in critical state",
        ),
        (4, "n2", &["web-chk"][..], "Missing check 'web-chk' registration"),
    ] {
        let refused = s
            .apply(index, &bound_session("s", node, SessionBehavior::Release, checks))
            .unwrap_err();
        assert_eq!(refused.to_string(), refusal);
        assert!(refused.is_deterministic());
        assert_eq!(s.dump().unwrap(), before, "a refusal writes nothing");
    }
    // A warning check, a check named in another case, and serfHealth the catalog lacks all bind.
    s.apply(
        5,
        &bound_session("s1", "N1", SessionBehavior::Release, &["WEB-CHK", "serfHealth"]),
    )
    .unwrap();
    assert!(s.session("s1").unwrap().value.is_some());
    // Then the check fails: the session goes with it.
    let out = catalog(s.apply(
        6,
        &add_to("n1", None, vec![chk("web-chk", Some(Critical), "web-1")]),
    ));
    assert_eq!(out.destroyed_sessions.len(), 1);
    assert!(s.session("s1").unwrap().value.is_none());
}

fn deregistrations<B: Backend>(s: &Store<B>) {
    s.apply(
        1,
        &register(
            "n1",
            Some(svc("web-1", "web", &["a"])),
            vec![
                chk("serfHealth", Some(Passing), ""),
                chk("web1-chk", Some(Passing), "web-1"),
            ],
        ),
    )
    .unwrap();
    s.apply(
        2,
        &register(
            "n1",
            Some(svc("web-2", "web", &["b"])),
            vec![chk("web2-chk", Some(Passing), "web-2")],
        ),
    )
    .unwrap();
    s.apply(3, &register("n2", Some(svc("web-3", "web", &[])), vec![]))
        .unwrap();
    s.apply(4, &bound_session("s1", "n1", SessionBehavior::Release, &[]))
        .unwrap();
    s.apply(
        5,
        &bound_session("s2", "n1", SessionBehavior::Release, &["web1-chk"]),
    )
    .unwrap();
    s.apply(6, &bound_session("s3", "n2", SessionBehavior::Release, &[]))
        .unwrap();

    // Absent things: successful no-ops.
    let before = s.dump().unwrap();
    for (i, command) in [
        deregister("ghost", None, None),
        deregister("n1", Some("nope"), None),
        deregister("n1", None, Some("nope")),
        deregister("ghost", Some("web-1"), None),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(catalog(s.apply(7 + i as u64, command)), CatalogOutcome::default());
    }
    assert_eq!(s.dump().unwrap(), before);

    // An instance goes with its checks (and the sessions bound to them); the service ID takes
    // precedence over a check ID given with it.
    let out = catalog(s.apply(20, &deregister("n1", Some("web-1"), Some("serfHealth"))));
    assert_eq!(out.destroyed_sessions.len(), 1);
    assert_eq!(out.destroyed_sessions[0].id, "s2");
    assert!(s.node_service("n1", "web-1").unwrap().value.is_none());
    assert!(s.node_check("n1", "web1-chk").unwrap().value.is_none());
    assert!(s.node_check("n1", "serfHealth").unwrap().value.is_some());
    assert_eq!(service_index(s, "web"), 20);
    assert_eq!(node_index(s, "n1"), 20);
    assert_eq!(s.services().unwrap().value["web"], ["b"]);

    // A node goes with everything on it, and its sessions.
    let out = catalog(s.apply(21, &deregister("N1", None, None)));
    let ids: Vec<_> = out.destroyed_sessions.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["s1"]);
    assert!(s.node("n1").unwrap().value.is_none());
    assert_eq!(
        node_index(s, "n1"),
        21,
        "an absent node reports the node extinction"
    );
    assert_eq!(node_index(s, "n2"), 3);
    assert!(s.node_checks("n1").unwrap().value.is_empty());
    assert_eq!(s.nodes().unwrap().value.len(), 1);
    assert!(s.session("s3").unwrap().value.is_some());
    let web = s.service_nodes("web").unwrap();
    assert_eq!((web.index, web.value.len()), (21, 1));

    // The last instance: the service is extinct, its index gone, reads report the extinction.
    s.apply(22, &deregister("n2", Some("web-3"), None)).unwrap();
    let web = s.service_health("web").unwrap();
    assert_eq!((web.index, web.value.len()), (22, 0));
    assert_eq!(service_index(s, "anything-else"), 22);
    assert!(s.services().unwrap().value.is_empty());
    assert!(
        !s.dump()
            .unwrap()
            .iter()
            .any(|r| matches!(r, StateRecord::ServiceIndex { .. }))
    );
    // A new instance brings the service back with its own index.
    s.apply(23, &register("n2", Some(svc("web-4", "web", &[])), vec![]))
        .unwrap();
    assert_eq!(service_index(s, "web"), 23);
    assert_eq!(service_index(s, "anything-else"), 22);
}

/// Fires a subscription that was due, or reports that it was not.
async fn fired(subscription: tribune_kvstore::Subscription) -> Option<Wake> {
    subscription.wait_until(Instant::now()).await
}

async fn blocking_reads_wake_on_their_scope<B: Backend>(s: &Store<B>) {
    // Before any service went extinct, an absent service's index is the highest catalog index:
    // any catalog write moves it.
    let soon = || Instant::now() + Duration::from_millis(50);
    s.apply(1, &register("n9", None, vec![])).unwrap();
    assert_eq!(service_index(s, "ghost"), 1);
    let ghost = s.watch_hub().subscribe(WatchScope::Service("ghost".into()));
    s.apply(2, &register("n9", Some(svc("tmp", "tmp", &[])), vec![]))
        .unwrap();
    assert_eq!(fired(ghost).await, Some(Wake::Changed { index: 2 }));
    s.apply(3, &deregister("n9", None, None)).unwrap();
    assert_eq!(service_index(s, "ghost"), 3, "now the extinction");

    let mut n1 = node_reg("n1", "10.0.0.1");
    n1.id = N1_ID.into();
    n1.service = Some(svc("web-1", "web", &[]));
    s.apply(4, &Command::CatalogRegister(n1.clone())).unwrap();
    s.apply(5, &add_to("n1", Some(svc("api-1", "api", &[])), vec![]))
        .unwrap();
    s.apply(6, &register("n2", Some(svc("db-1", "db", &[])), vec![]))
        .unwrap();

    let hub = s.watch_hub();
    let subscribe_all = || {
        [
            ("web", WatchScope::Service("WEB".into())),
            ("api", WatchScope::Service("api".into())),
            ("db", WatchScope::Service("db".into())),
            ("ghost", WatchScope::Service("ghost".into())),
            ("nodes", WatchScope::Nodes),
            ("services", WatchScope::Services),
            ("checks", WatchScope::Checks),
            ("n1", WatchScope::Node("n1".into())),
            ("n1-id", WatchScope::Node(N1_ID.into())),
            ("n2", WatchScope::Node("n2".into())),
            ("kv", WatchScope::Prefix(String::new())),
            ("sessions", WatchScope::Sessions),
        ]
        .map(|(name, scope)| (name, hub.subscribe(scope)))
    };
    async fn woken(subscriptions: [(&'static str, tribune_kvstore::Subscription); 12]) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, subscription) in subscriptions {
            if fired(subscription).await.is_some() {
                out.push(name);
            }
        }
        out
    }

    let subs = subscribe_all();
    s.apply(
        10,
        &add_to("n1", None, vec![chk("web-chk", Some(Passing), "web-1")]),
    )
    .unwrap();
    assert_eq!(woken(subs).await, ["web", "checks"]);

    let subs = subscribe_all();
    s.apply(
        11,
        &add_to("n1", None, vec![chk("serfHealth", Some(Passing), "")]),
    )
    .unwrap();
    assert_eq!(woken(subs).await, ["web", "api", "checks"]);

    let subs = subscribe_all();
    s.apply(12, &register("n2", Some(svc("db-2", "db", &[])), vec![]))
        .unwrap();
    assert_eq!(woken(subs).await, ["db", "nodes", "services", "n2"]);

    let subs = subscribe_all();
    n1.address = "10.0.0.7".into();
    n1.service = None;
    s.apply(13, &Command::CatalogRegister(n1)).unwrap();
    assert_eq!(woken(subs).await, ["web", "api", "nodes", "n1", "n1-id"]);

    // An extinction wakes every service and... only services: readers of present ones look again.
    let subs = subscribe_all();
    s.apply(14, &deregister("n1", Some("api-1"), None)).unwrap();
    assert_eq!(
        woken(subs).await,
        [
            "web", "api", "db", "ghost", "nodes", "services", "checks", "n1", "n1-id"
        ]
    );
    assert_eq!(hub.waiter_count(), 0);

    // Through `Store::wait`: a reader of web is not returned by a write to db, then is by web's.
    let web = WatchScope::Service("web".into());
    let at = service_index(s, "web");
    let (outcome, ()) = tokio::join!(
        s.wait(&web, at, Instant::now() + Duration::from_secs(10)),
        async {
            while hub.waiter_count() == 0 {
                tokio::task::yield_now().await;
            }
            s.apply(20, &add_to("n2", None, vec![chk("db-chk", None, "db-1")]))
                .unwrap();
            s.apply(
                21,
                &add_to("n1", None, vec![chk("web-chk", Some(Critical), "web-1")]),
            )
            .unwrap();
        }
    );
    assert_eq!(outcome.unwrap(), WaitOutcome::Changed { index: 21 });
    // A reader of an absent service sleeps through unrelated writes now that an extinction exists.
    let ghost = WatchScope::Service("ghost".into());
    assert_eq!(
        s.wait(&ghost, service_index(s, "ghost"), soon()).await.unwrap(),
        WaitOutcome::TimedOut { index: 14 }
    );
    // A node reader, by ID, wakes when the node goes.
    let by_id = WatchScope::Node(N1_ID.into());
    let at = s.scope_index(&by_id).unwrap();
    let (outcome, ()) = tokio::join!(
        s.wait(&by_id, at, Instant::now() + Duration::from_secs(10)),
        async {
            while hub.waiter_count() == 0 {
                tokio::task::yield_now().await;
            }
            s.apply(30, &deregister("n1", None, None)).unwrap();
        }
    );
    assert_eq!(outcome.unwrap(), WaitOutcome::Changed { index: 30 });
}

/// A catalog with every kind of record, and sessions bound to its checks.
fn populate<B: Backend>(s: &Store<B>) {
    let mut n1 = node_reg("n1", "10.0.0.1");
    n1.id = N1_ID.into();
    n1.node_meta = BTreeMap::from([("rack".to_owned(), "r1".to_owned())]);
    n1.service = Some(svc("web-1", "web", &["v1"]));
    n1.checks = vec![
        chk("serfHealth", Some(Passing), ""),
        chk("web-chk", Some(Warning), "web-1"),
    ];
    n1.checks[1].definition = tribune_kvstore::CheckDefinition {
        http: "http://10.0.0.1:8080/health".into(),
        method: "GET".into(),
        header: BTreeMap::from([("X-Probe".to_owned(), vec!["1".to_owned()])]),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        ..Default::default()
    };
    s.apply(1, &Command::CatalogRegister(n1)).unwrap();
    s.apply(2, &add_to("n1", Some(svc("api-1", "api", &["x"])), vec![]))
        .unwrap();
    s.apply(
        3,
        &register(
            "n2",
            Some(svc("web-2", "web", &["v2"])),
            vec![chk("web2-chk", Some(Critical), "web-2")],
        ),
    )
    .unwrap();
    s.apply(4, &register("n3", Some(svc("gone", "gone", &[])), vec![]))
        .unwrap();
    s.apply(5, &deregister("n3", None, None)).unwrap();
    s.apply(
        6,
        &bound_session("s1", "n1", SessionBehavior::Release, &["serfHealth"]),
    )
    .unwrap();
    s.apply(
        7,
        &bound_session("s2", "n1", SessionBehavior::Delete, &["web-chk"]),
    )
    .unwrap();
    s.apply(8, &lock("locks/x", "1", "s2")).unwrap();
}

/// What both copies must do identically after a restore: this exercises the rebuilt derived rows.
fn continue_after_restore<B: Backend, C: Backend>(a: &Store<B>, b: &Store<C>) {
    let next = a.last_applied().max(b.last_applied()) + 1;
    for (i, command) in [
        add_to("n1", None, vec![chk("web-chk", Some(Critical), "web-1")]),
        deregister("n2", Some("web-2"), None),
        deregister("n1", None, None),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            format!("{:?}", a.apply(next + i as u64, command)),
            format!("{:?}", b.apply(next + i as u64, command))
        );
        assert_eq!(catalog_view(a), catalog_view(b));
    }
    assert_eq!(a.dump().unwrap(), b.dump().unwrap());
    assert!(a.get("locks/x").unwrap().value.is_none(), "s2 went with web-chk");
}

fn export_import_round_trip<B: Backend>(source: &Store<B>, target: &Store<B>) {
    populate(source);
    let (bytes, inspection) = source.export(Vec::new(), &ExportOptions::default()).unwrap();
    for (kind, count, what) in [
        (11, 2, "nodes"),
        (12, 3, "instances"),
        (13, 3, "checks"),
        (14, 2, "service indexes"),
        (15, 2, "node indexes"),
    ] {
        assert_eq!(
            inspection.kinds[&tribune_snapshot::RecordKind(kind)].count,
            count,
            "{what}"
        );
    }
    target.apply(1, &register("old", None, vec![])).unwrap();
    target.import(Cursor::new(&bytes)).unwrap();
    assert_eq!(target.dump().unwrap(), source.dump().unwrap());
    assert_eq!(catalog_view(target), catalog_view(source));
    assert_eq!(service_index(target, "gone"), 5, "the extinction index travels");
    assert!(target.node("old").unwrap().value.is_none());
    continue_after_restore(source, target);
}

fn staged_restore_of_the_catalog<B: Backend>(s: &Store<B>) {
    let source = memory();
    populate(&source);
    let records = source.dump().unwrap();
    s.apply(1, &register("old", Some(svc("old", "old", &[])), vec![]))
        .unwrap();
    s.apply(2, &Command::RestoreBegin { restore_id: 3 }).unwrap();
    for (i, chunk) in records.chunks(3).enumerate() {
        let command = Command::RestoreChunk {
            restore_id: 3,
            records: chunk.to_vec(),
        };
        // Through the codec, as log entries travel.
        let decoded = tribune_kvstore::decode_command(&command.encode().unwrap()).unwrap();
        s.apply(3 + i as u64, &decoded).unwrap();
    }
    s.apply(100, &Command::RestoreCommit { restore_id: 3 }).unwrap();
    assert_eq!(s.dump().unwrap(), records);
    assert_eq!(catalog_view(s), catalog_view(&source));
    assert!(s.service_nodes("old").unwrap().value.is_empty());
    continue_after_restore(&source.store, s);
}

#[test]
fn catalog_commands_round_trip_through_the_codec_with_pinned_tags() {
    let mut registration = node_reg("n1", "10.0.0.1");
    registration.service = Some(svc("web-1", "web", &["a"]));
    registration.checks = vec![chk("c", Some(Warning), "web-1")];
    let pinned = [
        (Command::CatalogRegister(registration), 26u8),
        (deregister("n1", Some("web-1"), None), 27),
    ];
    for (command, tag) in pinned {
        let bytes = command.encode().unwrap();
        assert_eq!(bytes.get(..2), Some(&[tribune_kvstore::CODEC_VERSION, tag][..]));
        assert_eq!(Command::decode(&bytes).unwrap(), command);
        // Formats 1 and 2 never had these commands.
        for old in [1u8, 2] {
            let mut old_bytes = bytes.clone();
            old_bytes[0] = old;
            assert!(Command::decode(&old_bytes).is_err());
        }
    }
    assert_eq!(CheckStatus::parse("warning"), Some(Warning));
    assert_eq!(Critical.to_string(), "critical");
    assert_eq!(CheckStatus::parse("any"), None);
}

macro_rules! suite {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;

            #[test]
            fn register_and_read() {
                super::register_and_read(&$make());
            }
            #[test]
            fn unchanged_registrations_move_nothing() {
                super::unchanged_registrations_move_nothing(&$make());
            }
            #[test]
            fn defaults_and_skip_node_update() {
                super::defaults_and_skip_node_update(&$make());
            }
            #[test]
            fn refusals_change_nothing() {
                super::refusals_change_nothing(&$make());
            }
            #[test]
            fn service_indexes_move_for_the_services_concerned() {
                super::service_indexes_move_for_the_services_concerned(&$make());
            }
            #[test]
            fn critical_checks_destroy_their_sessions() {
                super::critical_checks_destroy_their_sessions(&$make());
            }
            #[test]
            fn sessions_bind_only_to_live_checks() {
                super::sessions_bind_only_to_live_checks(&$make());
            }
            #[test]
            fn deregistrations() {
                super::deregistrations(&$make());
            }
            #[tokio::test]
            async fn blocking_reads_wake_on_their_scope() {
                super::blocking_reads_wake_on_their_scope(&$make()).await;
            }
            #[test]
            fn export_import_round_trip() {
                super::export_import_round_trip(&$make(), &$make());
            }
            #[test]
            fn staged_restore_of_the_catalog() {
                super::staged_restore_of_the_catalog(&$make());
            }
        }
    };
}

suite!(memory_backend, common::memory);
#[cfg(feature = "rocksdb")]
suite!(rocksdb_backend, common::rocks);

/// A RocksDB directory written before the catalog has none of its column families: opening it
/// creates them, and the state already there stays.
#[cfg(feature = "rocksdb")]
#[test]
fn a_rocksdb_directory_from_before_the_catalog_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = tribune_kvstore::StoreConfig::new(DC);
    let store = Store::open_rocksdb(dir.path(), config.clone()).unwrap();
    store.apply(1, &set("before", "1")).unwrap();
    drop(store);
    // Take the directory back to the layout of a build without the catalog.
    {
        let options = rocksdb::Options::default();
        let names = rocksdb::DB::list_cf(&options, dir.path()).unwrap();
        let mut db = rocksdb::DB::open_cf(&options, dir.path(), &names).unwrap();
        for name in names.iter().filter(|n| n.starts_with("catalog_")) {
            db.drop_cf(name).unwrap();
        }
        let left = rocksdb::DB::list_cf(&options, dir.path()).unwrap();
        assert!(left.iter().all(|n| !n.starts_with("catalog_")), "{left:?}");
        assert!(left.iter().any(|n| n == "kv.0"), "{left:?}");
    }
    let store = Store::open_rocksdb(dir.path(), config.clone()).unwrap();
    assert_eq!(store.last_applied(), 1);
    assert!(store.get("before").unwrap().value.is_some());
    store
        .apply(2, &register("n1", Some(svc("web-1", "web", &[])), vec![]))
        .unwrap();
    drop(store);
    let reopened = Store::open_rocksdb(dir.path(), config).unwrap();
    assert_eq!(reopened.last_applied(), 2);
    assert_eq!(reopened.service_nodes("web").unwrap().value.len(), 1);
}
