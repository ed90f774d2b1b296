//! `HttpSink` against a fake Consul: the local datacenter, consistent reads, and transactions with
//! their fence, index and failures.
#![cfg(feature = "http")]

mod http_fake;

use http_fake::{Canned, FakeConsul};
use serde_json::json;
use tribune_replicate::http::HttpSink;
use tribune_replicate::{Batch, Fence, Op, Sink, SinkError};

fn fenced(ops: Vec<Op>) -> Batch {
    Batch {
        ops,
        fence: Some(Fence {
            key: "global/.lock".into(),
            session: "sess-1".into(),
        }),
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 7,
    }
}

#[tokio::test]
async fn the_local_datacenter_comes_from_agent_self() {
    let fake = FakeConsul::start(|request| async move {
        assert_eq!(request.path, "/v1/agent/self");
        Canned::ok().json(json!({"Config": {"Datacenter": "dc2", "NodeName": "n1"}, "Member": {}}))
    })
    .await;
    let sink = HttpSink::new(fake.client());
    assert_eq!(sink.local_datacenter().await.unwrap(), "dc2");
}

#[tokio::test]
async fn list_and_get_are_consistent_reads_and_404_is_empty() {
    let fake = FakeConsul::start(|request| async move {
        match request.path.as_str() {
            "/v1/kv/global/" => Canned::ok().index(9).json(json!([
                {"Key":"global/b","Value":"Yg==","Flags":0,"CreateIndex":8,"ModifyIndex":9,"LockIndex":0},
                {"Key":"global/a","Value":"YQ==","Flags":3,"CreateIndex":2,"ModifyIndex":2,"LockIndex":0},
            ])),
            "/v1/kv/global/a" => Canned::ok().index(2).json(json!([
                {"Key":"global/a","Value":"YQ==","Flags":3,"CreateIndex":2,"ModifyIndex":2,"LockIndex":0},
            ])),
            _ => Canned::status(404).index(9),
        }
    })
    .await;
    let sink = HttpSink::new(fake.client());
    let listed = sink.list("global/").await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["global/a", "global/b"]
    );
    assert_eq!(listed[0].value, b"a");
    assert_eq!(listed[0].flags, 3);
    assert!(sink.list("empty/").await.unwrap().is_empty());
    let got = sink.get("global/a").await.unwrap().unwrap();
    assert_eq!((got.key.as_str(), got.value.as_slice()), ("global/a", &b"a"[..]));
    assert_eq!(sink.get("global/missing").await.unwrap(), None);

    let requests = fake.requests();
    assert_eq!(requests[0].query, "recurse&consistent");
    assert_eq!(requests[1].query, "recurse&consistent");
    assert_eq!(requests[2].query, "consistent");
    assert!(requests.iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn a_batch_is_one_fenced_transaction_and_answers_its_index() {
    let fake = FakeConsul::start(|_| async {
        Canned::ok().index(120).json(json!({
            "Results": [
                {"KV":{"Key":"global/.lock","Session":"sess-1","ModifyIndex":100}},
                {"KV":{"Key":"global/a","Value":null,"ModifyIndex":120}},
            ],
            "Errors": null,
        }))
    })
    .await;
    let sink = HttpSink::new(fake.client());
    sink.apply(&fenced(vec![
        put("global/a", "1"),
        Op::Delete {
            key: "global/b".into(),
        },
    ]))
    .await
    .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("PUT", "/v1/txn")
    );
    assert_eq!(
        requests[0].json(),
        json!([
            {"KV":{"Verb":"check-session","Key":"global/.lock","Session":"sess-1"}},
            {"KV":{"Verb":"set","Key":"global/a","Value":"MQ==","Flags":7}},
            {"KV":{"Verb":"delete","Key":"global/b"}},
        ])
    );
}

#[tokio::test]
async fn an_unfenced_batch_has_only_its_writes() {
    let fake = FakeConsul::start(|_| async {
        Canned::ok()
            .index(5)
            .json(json!({"Results": [], "Errors": null, "Index": 77}))
    })
    .await;
    let sink = HttpSink::new(fake.client());
    let batch = Batch {
        ops: vec![Op::Delete { key: "k".into() }],
        fence: None,
    };
    sink.apply(&batch).await.unwrap();
    assert_eq!(
        fake.requests()[0].json(),
        json!([{"KV":{"Verb":"delete","Key":"k"}}])
    );
}

#[tokio::test]
async fn a_committed_batch_costs_one_request_with_or_without_deletes() {
    // Consul's answer to a committed write carries no X-Consul-Index, and a delete answers nothing.
    let fake = FakeConsul::start(|request| async move {
        match (request.method.as_str(), request.path.as_str()) {
            ("PUT", "/v1/txn") => {
                let ops = request.json();
                let results: Vec<_> = ops
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|op| op["KV"]["Verb"] == "set")
                    .map(|op| json!({"KV":{"Key":op["KV"]["Key"],"Value":null,"ModifyIndex":200}}))
                    .collect();
                Canned::ok().json(json!({"Results": results, "Errors": null}))
            }
            _ => Canned::status(400),
        }
    })
    .await;
    let sink = HttpSink::new(fake.client());
    sink.apply(&fenced(vec![put("a", "1"), put("b", "2")]))
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 1);
    sink.apply(&fenced(vec![put("a", "1"), Op::Delete { key: "gone".into() }]))
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_failed_fence_is_fence_lost_and_other_failures_are_refusals() {
    let fake = FakeConsul::start(|request| async move {
        let ops = request.json();
        let first_key = ops[0]["KV"]["Key"].as_str().unwrap_or_default().to_owned();
        match first_key.as_str() {
            "global/.lock" if ops.as_array().unwrap().len() == 2 => Canned::status(409).json(json!({
                "Results": null,
                "Errors": [{"OpIndex": 0, "What": "failed session check for key \"global/.lock\", current session \"\" != \"sess-1\""}],
            })),
            "global/.lock" => Canned::status(409).json(json!({
                "Results": null,
                "Errors": [{"OpIndex": 2, "What": "Permission denied"}],
            })),
            "denied/.lock" => Canned::status(409).json(json!({
                "Results": null,
                "Errors": [{"OpIndex": 0, "What": "Permission denied"}],
            })),
            "big" => Canned::status(413).body("Transaction contains too many operations (65 > 64)"),
            _ => Canned::status(409).body("not json"),
        }
    })
    .await;
    let sink = HttpSink::new(fake.client());

    match sink.apply(&fenced(vec![put("global/a", "1")])).await {
        Err(SinkError::FenceLost { key, session }) => {
            assert_eq!((key.as_str(), session.as_str()), ("global/.lock", "sess-1"));
        }
        other => panic!("{other:?}"),
    }
    match sink
        .apply(&fenced(vec![put("global/a", "1"), put("global/secret", "2")]))
        .await
    {
        Err(SinkError::Refused { status: 409, body }) => {
            assert!(
                body.contains("global/secret") && body.contains("Permission denied"),
                "{body}"
            );
        }
        other => panic!("{other:?}"),
    }
    let denied_fence = Batch {
        ops: vec![put("a", "1")],
        fence: Some(Fence {
            key: "denied/.lock".into(),
            session: "s".into(),
        }),
    };
    assert!(matches!(
        sink.apply(&denied_fence).await,
        Err(SinkError::Refused { status: 409, .. })
    ));
    let big = Batch {
        ops: vec![put("big", "1")],
        fence: None,
    };
    match sink.apply(&big).await {
        Err(SinkError::Refused { status: 413, body }) => assert!(body.contains("too many"), "{body}"),
        other => panic!("{other:?}"),
    }
    let odd = Batch {
        ops: vec![put("odd", "1")],
        fence: None,
    };
    assert!(matches!(
        sink.apply(&odd).await,
        Err(SinkError::Refused { status: 409, .. })
    ));
}
