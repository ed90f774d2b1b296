//! `HttpSource` and `ConsulClient` against a fake Consul: what a read asks for, how its answer is read,
//! and how failures come back.
#![cfg(feature = "http")]

mod http_fake;

use std::time::Duration;

use http_fake::{Canned, FakeConsul};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tribune_replicate::http::{BasicAuth, ClientConfig, ConsulClient, HttpError, HttpSource};
use tribune_replicate::{DeletedKey, Entry, ReadContent, ReadQuery, Source, SourceError};

fn query(prefix: &str) -> ReadQuery {
    ReadQuery {
        prefix: prefix.into(),
        datacenter: "dc1".into(),
        index: 0,
        wait: Duration::from_secs(3),
        stale: false,
        changes_since: None,
    }
}

fn entries_json() -> serde_json::Value {
    json!([
        {"Key":"global/b","Value":null,"Flags":0,"CreateIndex":5,"ModifyIndex":6,"LockIndex":0},
        {"Key":"global/a","Value":"aGVsbG8=","Flags":42,"CreateIndex":3,"ModifyIndex":4,"LockIndex":1,
         "Session":"3f2a"},
    ])
}

#[tokio::test]
async fn a_read_sends_the_query_token_and_auth_and_reads_the_meta_headers() {
    let fake = FakeConsul::start(|_| async {
        Canned::ok()
            .index(57)
            .header("X-Consul-KnownLeader", "true")
            .header("X-Consul-LastContact", 12)
            .json(entries_json())
    })
    .await;
    let client = ConsulClient::new(ClientConfig {
        token: Some("secret-token".into()),
        auth: Some("ops:pw".parse::<BasicAuth>().unwrap()),
        ..fake.config()
    })
    .unwrap();
    let source = HttpSource::new(client);
    let read = source
        .read(&ReadQuery {
            prefix: "global/my app".into(),
            index: 5,
            stale: true,
            ..query("")
        })
        .await
        .unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/v1/kv/global/my%20app");
    assert_eq!(request.query, "recurse&dc=dc1&index=5&wait=3s&stale");
    assert_eq!(request.header("x-consul-token").as_deref(), Some("secret-token"));
    assert_eq!(request.header("authorization").as_deref(), Some("Basic b3BzOnB3"));

    assert_eq!(read.index, 57);
    assert!(read.known_leader);
    assert_eq!(read.last_contact, Duration::from_millis(12));
    let ReadContent::Full(entries) = read.content else {
        panic!("expected a full read, got {:?}", read.content);
    };
    assert_eq!(
        entries,
        vec![
            Entry {
                key: "global/a".into(),
                value: b"hello".to_vec(),
                flags: 42,
                create_index: 3,
                modify_index: 4,
                lock_index: 1,
                session: Some("3f2a".into()),
            },
            Entry {
                key: "global/b".into(),
                value: Vec::new(),
                flags: 0,
                create_index: 5,
                modify_index: 6,
                lock_index: 0,
                session: None,
            },
        ]
    );
}

#[tokio::test]
async fn a_missing_prefix_is_an_empty_full_read_and_no_leader_is_reported() {
    let fake = FakeConsul::start(|_| async {
        Canned::status(404)
            .index(9)
            .header("X-Consul-KnownLeader", "false")
    })
    .await;
    let read = HttpSource::new(fake.client())
        .read(&query("nothing/"))
        .await
        .unwrap();
    assert_eq!(read.index, 9);
    assert!(!read.known_leader);
    assert_eq!(read.last_contact, Duration::ZERO);
    assert_eq!(read.content, ReadContent::Full(Vec::new()));
    assert_eq!(fake.requests()[0].query, "recurse&dc=dc1&index=0&wait=3s");
}

#[tokio::test]
async fn a_delta_answer_is_read_as_a_delta() {
    let fake = FakeConsul::start(|request| async move {
        assert_eq!(request.param("changes-since").as_deref(), Some("40"));
        Canned::ok()
            .index(44)
            .header("X-Consul-KnownLeader", "true")
            .header("X-Tribune-Changes-Since", 40)
            .json(json!({
                "Changed": [
                    {"Key":"global/c","Value":"Yw==","Flags":1,"CreateIndex":41,"ModifyIndex":43,"LockIndex":0}
                ],
                "Deleted": [{"Key":"global/z","ModifyIndex":44}, {"Key":"global/y","ModifyIndex":42}],
            }))
    })
    .await;
    let read = HttpSource::new(fake.client())
        .read(&ReadQuery {
            index: 40,
            changes_since: Some(40),
            ..query("global/")
        })
        .await
        .unwrap();
    assert_eq!(
        fake.requests()[0].query,
        "recurse&dc=dc1&index=40&wait=3s&changes-since=40"
    );
    assert_eq!(read.index, 44);
    let ReadContent::Delta {
        since,
        changed,
        deleted,
    } = read.content
    else {
        panic!("expected a delta, got {:?}", read.content);
    };
    assert_eq!(since, 40);
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].key.as_str(), changed[0].value.as_slice()),
        ("global/c", &b"c"[..])
    );
    assert_eq!(
        deleted,
        vec![
            DeletedKey {
                key: "global/y".into(),
                modify_index: 42
            },
            DeletedKey {
                key: "global/z".into(),
                modify_index: 44
            },
        ]
    );
}

#[tokio::test]
async fn an_empty_delta_is_still_a_delta() {
    let fake = FakeConsul::start(|_| async {
        Canned::ok()
            .index(40)
            .header("X-Tribune-Changes-Since", 40)
            .json(json!({"Changed":[],"Deleted":null}))
    })
    .await;
    let read = HttpSource::new(fake.client())
        .read(&ReadQuery {
            changes_since: Some(40),
            ..query("global/")
        })
        .await
        .unwrap();
    assert_eq!(
        read.content,
        ReadContent::Delta {
            since: 40,
            changed: Vec::new(),
            deleted: Vec::new()
        }
    );
}

#[tokio::test]
async fn a_server_without_deltas_answers_the_full_prefix() {
    // A real Consul ignores `changes-since`; a Tribune agent whose tombstones since then were reaped
    // answers the full prefix too. Both without the header.
    let fake = FakeConsul::start(|_| async { Canned::ok().index(60).json(entries_json()) }).await;
    let source = HttpSource::new(fake.client());
    let read = source
        .read(&ReadQuery {
            changes_since: Some(3),
            ..query("global/")
        })
        .await
        .unwrap();
    assert!(matches!(read.content, ReadContent::Full(ref entries) if entries.len() == 2));

    let fake = FakeConsul::start(|_| async { Canned::status(404).index(61) }).await;
    let read = HttpSource::new(fake.client())
        .read(&ReadQuery {
            changes_since: Some(3),
            ..query("global/")
        })
        .await
        .unwrap();
    assert_eq!(read.content, ReadContent::Full(Vec::new()));
}

#[tokio::test]
async fn error_answers_become_source_errors() {
    let fake = FakeConsul::start(|request| async move {
        match request.path.as_str() {
            "/v1/kv/leaderless" => Canned::status(500).body("No cluster leader\n"),
            "/v1/kv/garbage" => Canned::ok().index(3).body("{not json"),
            "/v1/kv/noindex" => Canned::ok().json(json!([])),
            "/v1/kv/badvalue" => Canned::ok()
                .index(3)
                .json(json!([{"Key":"badvalue","Value":"%%"}])),
            _ => Canned::status(403).body("Permission denied"),
        }
    })
    .await;
    let source = HttpSource::new(fake.client());
    match source.read(&query("leaderless")).await {
        Err(SourceError::Status {
            status,
            body,
            prefix,
            datacenter,
        }) => {
            assert_eq!((status, body.as_str()), (500, "No cluster leader"));
            assert_eq!((prefix.as_str(), datacenter.as_str()), ("leaderless", "dc1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        source.read(&query("denied")).await,
        Err(SourceError::Status { status: 403, .. })
    ));
    for prefix in ["garbage", "noindex", "badvalue"] {
        match source.read(&query(prefix)).await {
            Err(SourceError::Decode { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{prefix}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_agent_and_a_silent_one_are_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let source = HttpSource::new(ConsulClient::new(ClientConfig::new(closed.to_string())).unwrap());
    assert!(matches!(
        source.read(&query("a")).await,
        Err(SourceError::Unreachable { .. })
    ));

    // Accepts and never answers: the read gives up after its wait plus the request timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let _holder = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let source = HttpSource::new(
        ConsulClient::new(ClientConfig {
            request_timeout: Duration::from_millis(200),
            ..ClientConfig::new(address.to_string())
        })
        .unwrap(),
    );
    let started = tokio::time::Instant::now();
    let result = source
        .read(&ReadQuery {
            wait: Duration::from_millis(100),
            ..query("a")
        })
        .await;
    match result {
        Err(SourceError::Unreachable { reason, .. }) => {
            assert!(reason.contains("no answer within"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_server_that_closes_every_connection_is_still_read() {
    // One answer per connection, then the server closes it, announced or not: the client opens a
    // new connection for the next request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut count = 0u64;
        while let Ok((mut stream, _)) = listener.accept().await {
            count += 1;
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let connection = if count.is_multiple_of(2) {
                "Connection: close\r\n"
            } else {
                ""
            };
            let response = format!(
                "HTTP/1.1 404 Not Found\r\nX-Consul-Index: {count}\r\n{connection}Content-Length: 0\r\n\r\n"
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    let source = HttpSource::new(ConsulClient::new(ClientConfig::new(address.to_string())).unwrap());
    for _ in 0..4 {
        let read = source.read(&query("a")).await.unwrap();
        assert_eq!(read.content, ReadContent::Full(Vec::new()));
    }
}

#[test]
fn https_is_refused_with_a_typed_error() {
    assert!(matches!(
        ConsulClient::new(ClientConfig::new("https://127.0.0.1:8501")),
        Err(HttpError::TlsUnsupported { .. })
    ));
}
