//! Membership changes, dead-server cleanup and application requests over the RPC port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, default_config, wait_until};
use futures::future::BoxFuture;
use tribune_consensus::{AppHandler, AppRequest, ConsensusError, ReadMode, ServerRole};

const T: Duration = Duration::from_secs(10);

/// Dead-server cleanup removes failed voters only while a quorum of the current voters and
/// `bootstrap_expect` voters remain: a failed server of a three-server datacenter (expecting
/// three) stays a voter, since it may come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_servers_are_removed_but_never_below_quorum_or_bootstrap_expect() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let l = c.server(leader);
    // Only the leader cleans up.
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let refused = c.server(follower).remove_failed_servers(&[leader]).await;
    assert!(
        matches!(refused, Err(ConsensusError::NotLeader { .. })),
        "{refused:?}"
    );
    // Grow to five voters (bootstrap_expect stays three).
    for _ in 0..2 {
        let id = c.add_slot();
        let n = c.start(id).await;
        l.add_server(id, n.node_info()).await.unwrap();
    }
    let voters = |l: &common::Server| l.servers().iter().filter(|s| s.role == ServerRole::Voter).count();
    assert_eq!(voters(&l), 5);
    let mut others: Vec<u64> = (1..=5).filter(|&i| i != leader).collect();

    let first = others.pop().unwrap();
    c.stop(first).await;
    assert_eq!(l.remove_failed_servers(&[first]).await.unwrap(), vec![first]);
    assert_eq!(voters(&l), 4);
    let second = others.pop().unwrap();
    c.stop(second).await;
    assert_eq!(l.remove_failed_servers(&[second]).await.unwrap(), vec![second]);
    assert_eq!(voters(&l), 3);
    // Three voters of bootstrap_expect = 3: a failed one stays, though two would be a quorum.
    let third = others.pop().unwrap();
    c.stop(third).await;
    assert!(l.remove_failed_servers(&[third]).await.unwrap().is_empty());
    assert_eq!(voters(&l), 3);
    // The two live voters still commit.
    l.write(b"still=ok".as_slice()).await.unwrap();
}

/// A new server joins as a learner, is promoted once caught up, and a removed server leaves the
/// configuration entirely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_servers() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    let l = c.server(leader);
    l.write(b"a=1".as_slice()).await.unwrap();
    let id = c.add_slot();
    let n = c.start(id).await;
    l.add_learner(id, n.node_info()).await.unwrap();
    assert!(
        l.servers()
            .iter()
            .any(|s| s.id == id && s.role == ServerRole::Learner)
    );
    l.add_server(id, n.node_info()).await.unwrap();
    assert!(
        l.servers()
            .iter()
            .any(|s| s.id == id && s.role == ServerRole::Voter)
    );
    assert_eq!(l.peers().len(), 4);
    wait_until(T, "new voter knows the leader", || {
        (n.leader().map(|(x, _)| x) == Some(leader)).then_some(())
    })
    .await;
    // A write forwarded from the new voter commits.
    n.write(b"b=2".as_slice()).await.unwrap();
    l.remove_server(id).await.unwrap();
    assert!(l.servers().iter().all(|s| s.id != id));
    assert_eq!(l.read(ReadMode::Consistent, |m| m.map.len()).await.unwrap(), 2);
}

struct Echo(u64);

impl AppHandler for Echo {
    fn handle(&self, request: AppRequest) -> BoxFuture<'static, Result<Bytes, String>> {
        let id = self.0;
        Box::pin(async move {
            if request.payload.as_ref() == b"fail" {
                return Err("asked to fail".into());
            }
            let dc = request.datacenter.unwrap_or_default();
            Ok(Bytes::from(format!(
                "{id}:{dc}:{}",
                String::from_utf8_lossy(&request.payload)
            )))
        })
    }
}

/// Opaque application requests travel over the same RPC port to a chosen server or the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_requests_over_the_rpc_port() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    let leader = c.bootstrap().await;
    for s in c.running() {
        s.set_app_handler(Arc::new(Echo(s.id())));
    }
    let follower = c.server((1..=3).find(|&i| i != leader).unwrap());
    let req = |p: &'static str| AppRequest {
        datacenter: Some("dc1".into()),
        payload: Bytes::from_static(p.as_bytes()),
    };
    let answer = follower.call_leader(req("hello")).await.unwrap();
    assert_eq!(answer, Bytes::from(format!("{leader}:dc1:hello")));
    let l = c.server(leader);
    let answer = l
        .call_app(follower.id(), &follower.local_addr().to_string(), req("x"))
        .await
        .unwrap();
    assert_eq!(answer, Bytes::from(format!("{}:dc1:x", follower.id())));
    let err = l
        .call_app(follower.id(), &follower.local_addr().to_string(), req("fail"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsensusError::App { ref reason } if reason == "asked to fail"),
        "{err:?}"
    );
    // Many concurrent requests share one connection and each gets its own answer.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let f = follower.clone();
        tasks.push(tokio::spawn(async move {
            let payload = Bytes::from(format!("n{i}"));
            let r = f
                .call_leader(AppRequest {
                    datacenter: None,
                    payload,
                })
                .await
                .unwrap();
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r, Bytes::from(format!("{leader}::n{i}")));
    }
}

/// A server with no handler says so, as a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_request_without_handler_is_a_typed_error() {
    let mut c = Cluster::new(3, default_config);
    c.start_all().await;
    c.bootstrap().await;
    let (a, b) = (c.server(1), c.server(2));
    let err = a
        .call_app(
            2,
            &b.local_addr().to_string(),
            AppRequest {
                datacenter: None,
                payload: Bytes::new(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ConsensusError::NoAppHandler), "{err:?}");
}
