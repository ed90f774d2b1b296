//! The node's own replication Source and Sink (`NodeHandle::replication_source` / `replication_sink`):
//! a source in dc2 reads dc1's prefix through the cross-datacenter path (in full, then in deltas,
//! blocking); a sink applies batches to its datacenter through consensus, fenced by a session lock
//! and checked by ACLs; and tribune-replicate's runner replicates dc1 into dc2 over the two.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, dev_server, request, start_leader, wait_for, wan_server};
use serde_json::json;
use tribune::NodeHandle;
use tribune::config::{Config, DefaultPolicy};
use tribune_replicate::{
    Batch, DeletedKey, Fence, Op, ReadContent, ReadQuery, ReplicateConfig, Replicator, RunOutcome, Sink,
    SinkError, Source, SourceError,
};

const LIMIT: Duration = Duration::from_secs(30);

/// dc1 and dc2, one server each, dc2 routing to dc1.
async fn two_datacenters() -> (NodeHandle, NodeHandle) {
    let dc1 = start_leader(wan_server("dc1", "a", &[])).await;
    let dc2 = start_leader(wan_server("dc2", "b", &[&dc1])).await;
    let c2 = Client::of(&dc2);
    wait_for("dc1 routed to from dc2", LIMIT, || async {
        c2.get("/v1/kv/nothing?dc=dc1").await.status == 404
    })
    .await;
    (dc1, dc2)
}

async fn put(http: &Client, key: &str, value: &str) -> u64 {
    let reply = http.put(&format!("/v1/kv/{key}"), value.as_bytes()).await;
    assert_eq!(reply.text(), "true");
    http.get(&format!("/v1/kv/{key}")).await.index()
}

fn query(index: u64, changes_since: Option<u64>) -> ReadQuery {
    ReadQuery {
        prefix: "app/".into(),
        datacenter: "dc1".into(),
        index,
        wait: Duration::from_secs(20),
        stale: false,
        changes_since,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_reads_another_datacenter_in_full_then_in_deltas() {
    let (dc1, dc2) = two_datacenters().await;
    let c1 = Client::of(&dc1);
    let source = dc2.replication_source(None).unwrap();

    // An empty prefix is an empty full read.
    let empty = source.read(&query(0, None)).await.unwrap();
    assert_eq!(empty.content, ReadContent::Full(Vec::new()));
    assert!(empty.known_leader);

    put(&c1, "app/a", "1").await;
    put(&c1, "app/b", "2").await;
    put(&c1, "app/c", "3").await;
    let full = source.read(&query(0, None)).await.unwrap();
    assert_eq!(full.index, c1.get("/v1/kv/app/?recurse").await.index());
    let ReadContent::Full(entries) = &full.content else {
        panic!("a full read: {full:?}");
    };
    let got: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice()))
        .collect();
    assert_eq!(
        got,
        [("app/a", b"1".as_slice()), ("app/b", b"2"), ("app/c", b"3")]
    );
    assert_eq!(full.last_contact, Duration::ZERO, "dc1's leader answered");

    // A delta after the full read.
    let since = full.index;
    let a2 = put(&c1, "app/a", "1b").await;
    assert_eq!(c1.delete("/v1/kv/app/b").await.text(), "true");
    let deleted = c1.get("/v1/kv/app/b").await.index();
    let read = source.read(&query(0, Some(since))).await.unwrap();
    let ReadContent::Delta {
        since: from,
        changed,
        deleted: gone,
    } = &read.content
    else {
        panic!("a delta: {read:?}");
    };
    assert_eq!(*from, since);
    assert_eq!(
        changed
            .iter()
            .map(|e| (e.key.as_str(), e.modify_index, e.value.as_slice()))
            .collect::<Vec<_>>(),
        [("app/a", a2, b"1b".as_slice())]
    );
    assert_eq!(
        gone,
        &[DeletedKey {
            key: "app/b".into(),
            modify_index: deleted
        }]
    );
    assert_eq!(read.index, deleted);

    // A blocking delta waits in dc1 until the prefix changes.
    let index = read.index;
    let blocked = {
        let source = dc2.replication_source(None).unwrap();
        tokio::spawn(async move { source.read(&query(index, Some(index))).await })
    };
    wait_for("the read parked in dc1", LIMIT, || async {
        dc1.parked_blocking_queries() >= 1
    })
    .await;
    let d = put(&c1, "app/d", "4").await;
    let woke = blocked.await.unwrap().unwrap();
    assert_eq!(woke.index, d);
    assert!(
        matches!(&woke.content, ReadContent::Delta { changed, deleted, .. } if changed.len() == 1 && deleted.is_empty()),
        "{woke:?}"
    );

    // Not this datacenter, nor one nobody knows.
    let local = source
        .read(&ReadQuery {
            datacenter: "dc2".into(),
            ..query(0, None)
        })
        .await;
    assert!(
        matches!(local, Err(SourceError::Status { status: 400, .. })),
        "{local:?}"
    );
    let nowhere = source
        .read(&ReadQuery {
            datacenter: "nowhere".into(),
            ..query(0, None)
        })
        .await;
    assert!(
        matches!(&nowhere, Err(SourceError::Unreachable { reason, .. }) if reason == "No path to datacenter"),
        "{nowhere:?}"
    );
    dc2.shutdown().await;
    dc1.shutdown().await;
}

#[tokio::test]
async fn the_sink_applies_fenced_batches_and_nothing_under_a_lost_fence() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let sink = node.replication_sink(None).unwrap();
    assert_eq!(sink.local_datacenter().await.unwrap(), "dc1");

    // The replicator's lock: a session holding a key.
    let session = http.create_session("{}").await;
    let acquired = http
        .put(&format!("/v1/kv/replicate/lock?acquire={session}"), b"")
        .await;
    assert_eq!(acquired.text(), "true");
    let fence = Fence {
        key: "replicate/lock".into(),
        session: session.clone(),
    };

    put(&http, "app/gone", "x").await;
    let batch = Batch {
        ops: vec![
            Op::Put {
                key: "app/a".into(),
                value: b"1".to_vec(),
                flags: 7,
            },
            Op::Put {
                key: "app/b".into(),
                value: b"2".to_vec(),
                flags: 0,
            },
            Op::Delete {
                key: "app/gone".into(),
            },
        ],
        fence: Some(fence.clone()),
    };
    let before = sink.list("app/").await.unwrap();
    sink.apply(&batch).await.unwrap();
    let listed = sink.list("app/").await.unwrap();
    // One transaction: both writes carry the same new index.
    let index = listed.first().map(|e| e.modify_index).unwrap();
    assert!(before.iter().all(|e| e.modify_index < index));
    let got: Vec<(&str, &[u8], u64, u64)> = listed
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_slice(), e.flags, e.modify_index))
        .collect();
    assert_eq!(
        got,
        [("app/a", b"1".as_slice(), 7, index), ("app/b", b"2", 0, index)]
    );
    assert_eq!(sink.get("app/b").await.unwrap().unwrap().value, b"2");
    assert_eq!(sink.get("app/gone").await.unwrap(), None);

    // Another session's fence fails: nothing of the batch is written.
    let other = http.create_session("{}").await;
    let stale = Batch {
        ops: vec![
            Op::Put {
                key: "app/c".into(),
                value: b"3".to_vec(),
                flags: 0,
            },
            Op::Delete { key: "app/a".into() },
        ],
        fence: Some(Fence {
            key: "replicate/lock".into(),
            session: other.clone(),
        }),
    };
    let lost = sink.apply(&stale).await;
    assert!(
        matches!(&lost, Err(SinkError::FenceLost { key, session }) if key == "replicate/lock" && *session == other),
        "{lost:?}"
    );
    assert_eq!(sink.get("app/c").await.unwrap(), None);
    assert!(sink.get("app/a").await.unwrap().is_some());

    // Once the lock's session is gone, its own fence fails too.
    assert_eq!(
        http.put(&format!("/v1/session/destroy/{session}"), b"")
            .await
            .text(),
        "true"
    );
    let released = sink
        .apply(&Batch {
            fence: Some(fence),
            ..stale.clone()
        })
        .await;
    assert!(
        matches!(released, Err(SinkError::FenceLost { .. })),
        "{released:?}"
    );
    assert_eq!(sink.get("app/c").await.unwrap(), None);

    // Unfenced, it applies.
    sink.apply(&Batch { fence: None, ..stale }).await.unwrap();
    assert_eq!(
        sink.list("app/")
            .await
            .unwrap()
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["app/b", "app/c"]
    );
    node.shutdown().await;
}

#[tokio::test]
async fn the_sink_checks_its_token() {
    const ROOT: &str = "root-secret-for-t34";
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    let node = start_leader(config).await;
    let http = Client::of(&node);
    let root = |method: &'static str, path: String, body: String| async move {
        request(
            http.0,
            method,
            &path,
            &[("X-Consul-Token", ROOT)],
            body.as_bytes(),
        )
        .await
    };
    wait_for("the initial management token", LIMIT, || async {
        root("GET", "/v1/acl/token/self".into(), String::new())
            .await
            .status
            == 200
    })
    .await;
    let rules =
        "key_prefix \"app/\" { policy = \"write\" }\nkey_prefix \"app/private/\" { policy = \"deny\" }\n";
    let policy = root(
        "PUT",
        "/v1/acl/policy".into(),
        json!({"Name": "app-writer", "Rules": rules}).to_string(),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let token = root(
        "PUT",
        "/v1/acl/token".into(),
        json!({"Policies": [{"Name": "app-writer"}]}).to_string(),
    )
    .await;
    let writer = token.json()["SecretID"].as_str().unwrap().to_owned();
    for key in ["app/a", "app/private/p"] {
        assert_eq!(
            root("PUT", format!("/v1/kv/{key}"), "1".into()).await.text(),
            "true"
        );
    }

    assert!(matches!(
        node.replication_sink(Some("no-such-secret")),
        Err(tribune::ReplicationSetupError::Token(_))
    ));
    let sink = node.replication_sink(Some(&writer)).unwrap();
    // Readable keys only, as a recursive read.
    let listed = sink.list("app/").await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["app/a"]
    );
    let put = |key: &str| Batch {
        ops: vec![Op::Put {
            key: key.into(),
            value: b"w".to_vec(),
            flags: 0,
        }],
        fence: None,
    };
    sink.apply(&put("app/b")).await.unwrap();
    for refused in ["other/x", "app/private/q"] {
        let denied = sink.apply(&put(refused)).await;
        assert!(
            matches!(denied, Err(SinkError::Refused { status: 403, .. })),
            "{denied:?}"
        );
    }
    assert!(matches!(
        sink.get("app/private/p").await,
        Err(SinkError::Refused { status: 403, .. })
    ));
    // The anonymous token (the agent's default, installed by the leader) may do nothing here.
    wait_for("the anonymous token", LIMIT, || async {
        node.replication_sink(None).is_ok()
    })
    .await;
    let anonymous = node.replication_sink(None).unwrap();
    assert!(matches!(
        anonymous.apply(&put("app/c")).await,
        Err(SinkError::Refused { status: 403, .. })
    ));
    node.shutdown().await;
}

/// Every `(key, value, flags)` under `prefix` at `http` (empty for a 404).
async fn contents(http: &Client, prefix: &str) -> Vec<(String, String, u64)> {
    let reply = http.get(&format!("/v1/kv/{prefix}?recurse")).await;
    if reply.status == 404 {
        return Vec::new();
    }
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Key"].as_str().unwrap().to_owned(),
                e["Value"].as_str().unwrap_or("").to_owned(),
                e["Flags"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_replicates_dc1_into_dc2_over_the_node_source_and_sink() {
    let (dc1, dc2) = two_datacenters().await;
    let (c1, c2) = (Client::of(&dc1), Client::of(&dc2));
    for (key, value) in [("app/a", "1"), ("app/b", "2"), ("app/c", "3"), ("app/d/e", "4")] {
        put(&c1, key, value).await;
    }
    assert_eq!(c1.put("/v1/kv/app/flagged?flags=9", b"f").await.text(), "true");

    let config = ReplicateConfig {
        prefixes: vec!["app/@dc1".parse().unwrap()],
        read_wait: Duration::from_secs(2),
        ..ReplicateConfig::default()
    };
    let replicator = Replicator::new(
        config,
        dc2.replication_source(None).unwrap(),
        dc2.replication_sink(None).unwrap(),
    );
    let status = replicator.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(replicator.run(async move {
        let _ = stopped.await;
    }));

    let in_step = || async { contents(&c2, "app/").await == contents(&c1, "app/").await };
    wait_for("the first pass", LIMIT, in_step).await;
    assert!(
        contents(&c2, "app/")
            .await
            .iter()
            .any(|(k, _, f)| k == "app/flagged" && *f == 9)
    );

    // Updates and deletes follow (the runner reads deltas once its mirror is current).
    put(&c1, "app/a", "1b").await;
    assert_eq!(c1.delete("/v1/kv/app/b").await.text(), "true");
    put(&c1, "app/new", "5").await;
    wait_for("the changes replicated", LIMIT, in_step).await;
    assert_eq!(c1.delete("/v1/kv/app/d/?recurse").await.text(), "true");
    wait_for("the tree delete replicated", LIMIT, in_step).await;
    let last = status.borrow()[0].clone();
    assert_eq!((&last.held, &last.last_error), (&None, &None), "{last:?}");
    assert_eq!(last.deletes, 2, "{last:?}");

    let _ = stop.send(());
    assert_eq!(run.await.unwrap().unwrap(), RunOutcome::Stopped);
    dc2.shutdown().await;
    dc1.shutdown().await;
}
