//! Sessions and the safety of their locks beyond one server's memory: a session follows its node's
//! health in the LAN pool (a crashed client agent loses its sessions and their locks) and the
//! service checks it is bound to (refused while one is critical, ended when one fails), lock-delay is
//! recorded by every server as the invalidation applies, so a new leader enforces it, and the txn
//! `lock` verb honours it as `?acquire` does.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, dev_server, pool_agent, wait_for};
use tokio::time::Instant;
use tribune::{Node, NodeHandle};

const FORMATION: Duration = Duration::from_secs(30);
/// Failure detection with Consul's LAN timings (1 s probes, Lifeguard suspicion) takes seconds.
const DETECTION: Duration = Duration::from_secs(90);

/// `(Session, LockIndex)` of a key, or `None` when the key does not exist.
async fn lock_state(http: &Client, key: &str) -> Option<(Option<String>, u64)> {
    let reply = http.get(&format!("/v1/kv/{key}")).await;
    if reply.status == 404 {
        return None;
    }
    assert_eq!(reply.status, 200, "{}", reply.text());
    let entry = &reply.json()[0];
    Some((
        entry["Session"].as_str().map(str::to_owned),
        entry["LockIndex"].as_u64().unwrap(),
    ))
}

/// Starts three servers that form a cluster through the LAN pool, and waits until all agree on a
/// leader.
async fn three_servers() -> Vec<NodeHandle> {
    let s1 = Node::start(pool_agent("s1", true, &[])).await.unwrap();
    let s2 = Node::start(pool_agent("s2", true, &[&s1])).await.unwrap();
    let s3 = Node::start(pool_agent("s3", true, &[&s1, &s2])).await.unwrap();
    let nodes = vec![s1, s2, s3];
    wait_for("one leader that every server knows", FORMATION, || async {
        let leaders: Vec<Option<String>> = nodes.iter().map(NodeHandle::leader).collect();
        leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
            && nodes.iter().any(NodeHandle::is_leader)
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_survives_a_leader_failover() {
    let mut nodes = three_servers().await;
    let leader_at = nodes.iter().position(NodeHandle::is_leader).unwrap();
    let old_leader = nodes.remove(leader_at);
    let http = Client::of(&old_leader);

    let delay = Duration::from_secs(5);
    let holder = http.create_session(r#"{"LockDelay":"5s"}"#).await;
    let acquire = format!("/v1/kv/failover/lock?acquire={holder}");
    assert_eq!(http.put(&acquire, b"held").await.text(), "true");
    let destroy = http.put(&format!("/v1/session/destroy/{holder}"), b"").await;
    assert_eq!(destroy.text(), "true");
    let destroyed_at = Instant::now();
    // The leader goes at once: only what the others applied can carry the delay.
    old_leader.shutdown().await;

    wait_for("a new leader that both survivors know", FORMATION, || async {
        let leaders: Vec<Option<String>> = nodes.iter().map(NodeHandle::leader).collect();
        leaders[0].is_some()
            && leaders.iter().all(|l| *l == leaders[0])
            && nodes.iter().any(NodeHandle::is_leader)
    })
    .await;
    let new_leader = nodes.iter().find(|n| n.is_leader()).unwrap();
    let http = Client::of(new_leader);
    let contender = http.create_session(r#"{"LockDelay":"0s"}"#).await;
    let acquire = format!("/v1/kv/failover/lock?acquire={contender}");
    let refused = http.put(&acquire, b"mine").await;
    assert!(
        destroyed_at.elapsed() < delay,
        "the failover took {:?}, longer than the lock-delay under test",
        destroyed_at.elapsed()
    );
    assert_eq!(
        refused.text(),
        "false",
        "the new leader let a lock be taken inside the lock-delay"
    );
    assert_eq!(lock_state(&http, "failover/lock").await, Some((None, 1)));

    wait_for(
        "the lock to be free once the delay ran out",
        Duration::from_secs(20),
        || async { http.put(&acquire, b"mine").await.text() == "true" },
    )
    .await;
    // The new leader recorded the delay when it applied the destroy, which was no earlier than the
    // old leader's own apply; the clock slack covers the old leader's answer on its way back.
    assert!(
        destroyed_at.elapsed() >= delay - Duration::from_millis(500),
        "the lock was taken {:?} after the destroy, inside the {delay:?} lock-delay",
        destroyed_at.elapsed()
    );
    assert_eq!(
        lock_state(&http, "failover/lock").await,
        Some((Some(contender), 2))
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn txn_lock_honours_the_lock_delay() {
    let node = dev_server().await;
    let http = Client::of(&node);
    let holder = http.create_session(r#"{"LockDelay":"30s"}"#).await;
    let acquired = http.put(&format!("/v1/kv/txn/lock?acquire={holder}"), b"x").await;
    assert_eq!(acquired.text(), "true");
    let destroy = http.put(&format!("/v1/session/destroy/{holder}"), b"").await;
    assert_eq!(destroy.text(), "true");

    let contender = http.create_session(r#"{"LockDelay":"0s"}"#).await;
    let body = serde_json::json!([
        {"KV": {"Verb": "set", "Key": "txn/other", "Value": "eQ=="}},
        {"KV": {"Verb": "lock", "Key": "txn/lock", "Value": "eQ==", "Session": contender}},
    ]);
    let reply = http.put("/v1/txn", body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    let errors = reply.json()["Errors"].clone();
    assert_eq!(errors[0]["OpIndex"], 1, "{errors}");
    let what = errors[0]["What"].as_str().unwrap_or_default();
    assert!(what.contains("lock delay"), "{what}");
    // Nothing of the transaction applied.
    assert_eq!(lock_state(&http, "txn/lock").await, Some((None, 1)));
    assert_eq!(lock_state(&http, "txn/other").await, None);
    // `?acquire` refuses the same key for the same reason.
    let acquire = http
        .put(&format!("/v1/kv/txn/lock?acquire={contender}"), b"y")
        .await;
    assert_eq!(acquire.text(), "false");
    node.shutdown().await;
}

/// The serf status (1 alive, 3 left, 4 failed) `client` lists for member `name`.
async fn member_status(client: &Client, name: &str) -> Option<u64> {
    let members = client.get("/v1/agent/members").await.json();
    members
        .as_array()?
        .iter()
        .find(|m| m["Name"] == name)
        .and_then(|m| m["Status"].as_u64())
}

async fn session_exists(http: &Client, id: &str) -> bool {
    let info = http.get(&format!("/v1/session/info/{id}")).await;
    assert_eq!(info.status, 200, "{}", info.text());
    info.json().as_array().is_some_and(|a| !a.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_client_agent_loses_its_sessions_and_locks() {
    let servers = three_servers().await;
    let agent = Node::start(pool_agent("c1", false, &[&servers[0]]))
        .await
        .unwrap();
    let server_clients: Vec<Client> = servers.iter().map(Client::of).collect();
    wait_for(
        "every server to see the client agent alive",
        FORMATION,
        || async {
            for server in &server_clients {
                if member_status(server, "c1").await != Some(1) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let local = Client::of(&agent);
    let server = &server_clients[0];

    // Through the client agent, a session belongs to the client's node and follows its serfHealth.
    let released = local.create_session(r#"{"Name":"release"}"#).await;
    let info = server.get(&format!("/v1/session/info/{released}")).await.json();
    assert_eq!(info[0]["Node"], "c1", "{info}");
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]));
    let deleted = local.create_session(r#"{"Behavior":"delete"}"#).await;
    // Explicitly empty checks: tied to nothing, as in Consul.
    let detached = local.create_session(r#"{"NodeChecks":[]}"#).await;
    let detached_old_style = local.create_session(r#"{"Checks":[]}"#).await;
    let info = server.get(&format!("/v1/session/info/{detached}")).await.json();
    assert_eq!(info[0]["NodeChecks"], serde_json::json!([]));

    // Checks that do not exist, or a node the pool does not know, are refused as Consul does.
    let missing = local
        .put("/v1/session/create", br#"{"NodeChecks":["web"]}"#)
        .await;
    assert_eq!(missing.status, 500);
    assert_eq!(missing.text(), "Missing check 'web' registration");
    let ghost = server.put("/v1/session/create", br#"{"Node":"ghost"}"#).await;
    assert_eq!(ghost.status, 500);
    assert_eq!(ghost.text(), "Missing check 'serfHealth' registration");

    for (key, session) in [
        ("health/release", &released),
        ("health/delete", &deleted),
        ("health/detached", &detached),
    ] {
        let acquired = local
            .put(&format!("/v1/kv/{key}?acquire={session}"), b"held")
            .await;
        assert_eq!(acquired.text(), "true", "acquire {key}");
    }

    // The client crashes: its gossip goes silent without a leave.
    agent.shutdown().await;
    wait_for(
        "the leader to invalidate the sessions of the failed node",
        DETECTION,
        || async { !session_exists(server, &released).await && !session_exists(server, &deleted).await },
    )
    .await;
    assert_eq!(
        member_status(server, "c1").await,
        Some(4),
        "the pool declared c1 failed"
    );
    assert_eq!(lock_state(server, "health/release").await, Some((None, 1)));
    assert_eq!(lock_state(server, "health/delete").await, None);
    assert_eq!(
        lock_state(server, "health/detached").await,
        Some((Some(detached.clone()), 1))
    );
    assert!(session_exists(server, &detached).await);
    assert!(session_exists(server, &detached_old_style).await);
    let critical = server.put("/v1/session/create", br#"{"Node":"c1"}"#).await;
    assert_eq!(critical.status, 500);
    assert_eq!(critical.text(), "Check 'serfHealth' is in critical state");
    for node in servers {
        node.shutdown().await;
    }
}

/// A session bound to a service check, as Patroni and consul-template's lock users bind theirs: the
/// store refuses it while the check is critical or unknown, and ends it (releasing its lock) when
/// the agent's check fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bound_to_a_service_check_ends_when_the_check_fails() {
    let mut config = tribune::config::Config::dev();
    config.local.sync_interval = Duration::from_millis(500);
    let node = common::start_leader(config).await;
    let http = Client::of(&node);
    let registered = http
        .put(
            "/v1/agent/service/register",
            br#"{"Name":"db","ID":"db-1","Port":5432,"Check":{"TTL":"60s"}}"#,
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());
    let check_status = || async {
        let checks = http.get("/v1/health/node/dev").await.json();
        checks
            .as_array()
            .and_then(|all| all.iter().find(|c| c["CheckID"] == "service:db-1"))
            .and_then(|c| c["Status"].as_str().map(str::to_owned))
    };
    wait_for("the TTL check in the catalog", FORMATION, || async {
        check_status().await.is_some()
    })
    .await;

    // A TTL check starts critical: a session bound to it would end at once, so it is refused.
    let bound = br#"{"ServiceChecks":[{"ID":"service:db-1","Namespace":""}]}"#;
    let refused = http.put("/v1/session/create", bound).await;
    assert_eq!(refused.status, 500);
    assert_eq!(refused.text(), "Check 'service:db-1' is in critical state");
    let unknown = http
        .put("/v1/session/create", br#"{"NodeChecks":["serfHealth","nope"]}"#)
        .await;
    assert_eq!(unknown.status, 500);
    assert_eq!(unknown.text(), "Missing check 'nope' registration");

    let pass = http.put("/v1/agent/check/pass/service:db-1", b"").await;
    assert_eq!(pass.status, 200, "{}", pass.text());
    wait_for("the check passing in the catalog", FORMATION, || async {
        check_status().await.as_deref() == Some("passing")
    })
    .await;
    let session = http.create_session(std::str::from_utf8(bound).unwrap()).await;
    let only_service = http
        .create_session(r#"{"NodeChecks":[],"ServiceChecks":[{"ID":"service:db-1"}],"Behavior":"delete"}"#)
        .await;
    let info = http.get(&format!("/v1/session/info/{session}")).await.json();
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]), "{info}");
    assert_eq!(
        info[0]["ServiceChecks"],
        serde_json::json!([{"ID": "service:db-1", "Namespace": ""}]),
        "{info}"
    );
    assert_eq!(
        info[0]["Checks"],
        serde_json::json!(["serfHealth", "service:db-1"])
    );
    let info = http.get(&format!("/v1/session/info/{only_service}")).await.json();
    assert_eq!(info[0]["NodeChecks"], serde_json::json!([]), "{info}");
    for (key, holder) in [("leader/db", &session), ("leader/db-delete", &only_service)] {
        let acquired = http.put(&format!("/v1/kv/{key}?acquire={holder}"), b"me").await;
        assert_eq!(acquired.text(), "true", "{key}");
    }

    // The check fails: both sessions go with it, and their locks are released or deleted.
    let fail = http.put("/v1/agent/check/fail/service:db-1", b"").await;
    assert_eq!(fail.status, 200, "{}", fail.text());
    wait_for("both sessions to end with their check", FORMATION, || async {
        !session_exists(&http, &session).await && !session_exists(&http, &only_service).await
    })
    .await;
    assert_eq!(lock_state(&http, "leader/db").await, Some((None, 1)));
    assert_eq!(lock_state(&http, "leader/db-delete").await, None);
    node.shutdown().await;
}
