//! Two datacenters in one process: three servers in dc1, one in dc2, joined by the WAN pool
//! through a single `join -wan`. Each keeps its own data; `?dc=` reaches the other one through
//! any server, blocking queries included; an unknown datacenter and one whose servers are all
//! down answer Consul's errors, and a datacenter that comes back is routed to again by itself.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, fast_wan, three_server_dc_with, wait_for, wan_server};
use tribune::config::Config;
use tribune::{Node, NodeHandle};

const LIMIT: Duration = Duration::from_secs(30);

async fn wan_names(node: &NodeHandle) -> Vec<String> {
    let reply = Client::of(node).get("/v1/agent/members?wan=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut names: Vec<String> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["Status"] == 1)
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_datacenters_federate_and_serve_each_other() {
    let dc1 = three_server_dc_with(LIMIT, |c| {
        c.datacenter = "dc1".into();
        fast_wan(c);
    })
    .await;
    let d1 = common::start_leader(wan_server("dc2", "d1", &[])).await;

    // One join, from one server of dc2 to one server of dc1; flooding brings in the rest.
    let join = Client::of(&d1)
        .put(
            &format!("/v1/agent/join/{}?wan=1", dc1[0].serf_wan_addr().unwrap()),
            b"",
        )
        .await;
    assert_eq!(join.status, 200, "{}", join.text());
    let everyone = ["d1.dc2", "s1.dc1", "s2.dc1", "s3.dc1"];
    for node in dc1.iter().chain([&d1]) {
        wait_for("every server in every WAN member list", LIMIT, || async {
            wan_names(node).await == everyone
        })
        .await;
    }
    // Vivaldi coordinates from the WAN pool's probes, per datacenter, in Consul's shape; the LAN
    // pool's per node, `?dc=` giving the other datacenter's.
    wait_for("WAN coordinates of every server", LIMIT, || async {
        let maps = Client::of(&d1).get("/v1/coordinate/datacenters").await.json();
        let counts: Vec<(String, usize)> = maps
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["AreaID"], "wan");
                let coords = m["Coordinates"].as_array().unwrap();
                assert!(
                    coords
                        .iter()
                        .all(|c| c["Coord"]["Vec"].as_array().unwrap().len() == 8)
                );
                (m["Datacenter"].as_str().unwrap().to_owned(), coords.len())
            })
            .collect();
        counts == [("dc1".to_owned(), 3), ("dc2".to_owned(), 1)]
    })
    .await;
    wait_for("LAN coordinates of dc1's servers", LIMIT, || async {
        let nodes = Client::of(&dc1[0]).get("/v1/coordinate/nodes").await.json();
        let names: Vec<&str> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["Node"].as_str().unwrap())
            .collect();
        names == ["s1", "s2", "s3"]
    })
    .await;
    let remote_nodes = Client::of(&dc1[0])
        .get("/v1/coordinate/nodes?dc=dc2")
        .await
        .json();
    assert_eq!(remote_nodes[0]["Node"], "d1", "{remote_nodes}");
    assert_eq!(
        Client::of(&dc1[0]).get("/v1/coordinate/node/s2").await.json()[0]["Node"],
        "s2"
    );
    assert_eq!(
        Client::of(&dc1[0]).get("/v1/coordinate/node/nobody").await.status,
        404
    );

    let datacenters = Client::of(&dc1[1]).get("/v1/catalog/datacenters").await.json();
    assert_eq!(datacenters, serde_json::json!(["dc1", "dc2"]));
    let datacenters = Client::of(&d1).get("/v1/catalog/datacenters").await.json();
    assert_eq!(
        datacenters,
        serde_json::json!(["dc2", "dc1"]),
        "own datacenter first"
    );

    // Each datacenter has its own data.
    let follower = dc1.iter().find(|n| !n.is_leader()).unwrap();
    let (c1, c2) = (Client::of(follower), Client::of(&d1));
    assert_eq!(c1.put("/v1/kv/app/where", b"dc1").await.text(), "true");
    assert_eq!(c2.get("/v1/kv/app/where").await.status, 404);

    // `?dc=` reaches the other datacenter, writes included, from a follower too.
    let remote = c2.get("/v1/kv/app/where?dc=dc1&raw").await;
    assert_eq!((remote.status, remote.body.as_slice()), (200, b"dc1".as_slice()));
    assert_eq!(remote.header("x-consul-knownleader"), Some("true"));
    assert!(remote.index() > 0);
    assert_eq!(c1.put("/v1/kv/app/where?dc=dc2", b"dc2").await.text(), "true");
    assert_eq!(c2.get("/v1/kv/app/where?raw").await.body, b"dc2");
    assert_eq!(c1.get("/v1/kv/app/where?raw").await.body, b"dc1");
    let consistent = c1.get("/v1/kv/app/where?dc=DC2&raw&consistent").await;
    assert_eq!(consistent.body, b"dc2");
    assert_eq!(
        consistent.header("x-consul-effective-consistency"),
        Some("consistent"),
        "the remote server's mode comes back"
    );
    let stale = c1.get("/v1/kv/app/where?dc=dc2&stale").await;
    assert_eq!(stale.header("x-consul-effective-consistency"), Some("stale"));

    // A blocking query waits in the other datacenter and wakes on its write there.
    let index = c1.get("/v1/kv/app/where?dc=dc2").await.index();
    let waiter = tokio::spawn(async move {
        c1.get(&format!("/v1/kv/app/where?dc=dc2&index={index}&wait=20s&raw"))
            .await
    });
    wait_for("the remote blocking query parked in dc2", LIMIT, || async {
        d1.parked_blocking_queries() >= 1
    })
    .await;
    assert_eq!(c2.put("/v1/kv/app/where", b"dc2-v2").await.text(), "true");
    let woke = waiter.await.unwrap();
    assert_eq!(woke.body, b"dc2-v2");
    assert!(woke.index() > index);

    // Consul's errors for a datacenter nobody knows and for one whose servers are all down.
    let unknown = c1.get("/v1/kv/app/where?dc=nowhere").await;
    assert_eq!(
        (unknown.status, unknown.text()),
        (500, "No path to datacenter".to_owned())
    );
    d1.shutdown().await;
    wait_for("dc2's server reported failed in the WAN pool", LIMIT, || async {
        let members = c1.get("/v1/agent/members?wan=1").await.json();
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == "d1.dc2" && m["Status"] == 4)
    })
    .await;
    let started = std::time::Instant::now();
    let down = c1.get("/v1/kv/app/where?dc=dc2").await;
    assert_eq!(
        (down.status, down.text()),
        (500, "Remote DC has no server currently reachable".to_owned())
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failing took {:?}",
        started.elapsed()
    );

    // dc2 comes back (a new server, joining through retry_join_wan) and is routed to again.
    let d1 = common::start_leader(wan_server("dc2", "d1", &[&dc1[2]])).await;
    assert_eq!(Client::of(&d1).put("/v1/kv/back", b"yes").await.text(), "true");
    wait_for("dc2 routed to again", LIMIT, || async {
        c1.get("/v1/kv/back?dc=dc2&raw").await.body == b"yes"
    })
    .await;

    d1.shutdown().await;
    for node in dc1 {
        node.shutdown().await;
    }
}

/// The gossip key every agent of these tests shares (both pools use the same keyring).
const GOSSIP_KEY: [u8; 16] = [7; 16];

/// A server started later in a datacenter joins the WAN pool by itself (flooding), with no
/// `join -wan` of its own; keyring operations on a server act on the WAN pool and on every
/// datacenter's LAN pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_later_floods_into_the_wan_pool() {
    let mut first = Config::dev();
    first.datacenter = "dc1".into();
    first.node_name = "a".into();
    first.encrypt = Some(GOSSIP_KEY.to_vec());
    fast_wan(&mut first);
    let a = common::start_leader(first).await;
    let mut dc2 = wan_server("dc2", "d1", &[&a]);
    dc2.encrypt = Some(GOSSIP_KEY.to_vec());
    let d1 = common::start_leader(dc2).await;
    wait_for("the two datacenters joined", LIMIT, || async {
        wan_names(&a).await == ["a.dc1", "d1.dc2"]
    })
    .await;

    let mut second = common::pool_agent("b", true, &[&a]);
    second.datacenter = "dc1".into();
    second.bootstrap_expect = 0;
    second.encrypt = Some(GOSSIP_KEY.to_vec());
    fast_wan(&mut second);
    let b = Node::start(second).await.unwrap();
    wait_for("the new server in dc2's WAN view", LIMIT, || async {
        wan_names(&d1).await == ["a.dc1", "b.dc1", "d1.dc2"]
    })
    .await;

    // A new key installed through one server reaches every member of both pools.
    let new_key = "AQEBAQEBAQEBAQEBAQEBAQ==";
    let body = format!(r#"{{"Key":"{new_key}"}}"#);
    let installed = common::request(
        a.http_addr().unwrap(),
        "POST",
        "/v1/operator/keyring",
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(installed.status, 200, "{}", installed.text());
    let pools = Client::of(&a).get("/v1/operator/keyring").await.json();
    let summary: Vec<(bool, &str, u64, u64)> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["WAN"].as_bool().unwrap(),
                p["Datacenter"].as_str().unwrap(),
                p["NumNodes"].as_u64().unwrap(),
                p["Keys"][new_key].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(true, "dc1", 3, 3), (false, "dc1", 2, 2), (false, "dc2", 1, 1)],
        "{pools}"
    );
    for node in [b, d1, a] {
        node.shutdown().await;
    }
}

/// Every datacenter-scoped endpoint family carries `?dc=` to the other datacenter, where that
/// datacenter's servers serve it from their own state: KV transactions, sessions, snapshot save
/// and restore, operator raft, status (ACL reads: t27); and a client agent passes `?dc=` through its
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datacenter_scoped_endpoint_reaches_the_other_datacenter() {
    let mut first = Config::dev();
    first.datacenter = "dc1".into();
    first.node_name = "a".into();
    fast_wan(&mut first);
    let a = common::start_leader(first).await;
    let d1 = common::start_leader(wan_server("dc2", "d1", &[&a])).await;
    wait_for("the two datacenters joined", LIMIT, || async {
        wan_names(&a).await == ["a.dc1", "d1.dc2"]
    })
    .await;
    let (c1, c2) = (Client::of(&a), Client::of(&d1));

    // A transaction runs in dc2 only.
    let txn = br#"[{"KV":{"Verb":"set","Key":"t/x","Value":"ZGMy"}}]"#;
    let applied = c1.put("/v1/txn?dc=dc2", txn).await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    assert_eq!(c2.get("/v1/kv/t/x?raw").await.body, b"dc2");
    assert_eq!(c1.get("/v1/kv/t/x").await.status, 404);
    let read = br#"[{"KV":{"Verb":"get","Key":"t/x"}}]"#;
    let remote_read = c1.put("/v1/txn?dc=dc2&stale", read).await;
    assert_eq!(remote_read.status, 200, "{}", remote_read.text());
    assert_eq!(remote_read.json()["Results"][0]["KV"]["Value"], "ZGMy");
    assert_eq!(
        remote_read.header("x-consul-effective-consistency"),
        Some("stale")
    );

    // A session created through dc1 lives in dc2.
    let created = c1.put("/v1/session/create?dc=dc2", br#"{"Name":"far"}"#).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["ID"].as_str().unwrap().to_owned();
    let info = c1.get(&format!("/v1/session/info/{id}?dc=dc2")).await.json();
    assert_eq!(info[0]["Node"], "d1", "{info}");
    assert_eq!(
        c1.get(&format!("/v1/session/info/{id}")).await.json(),
        serde_json::json!([])
    );
    let listed = c1.get("/v1/session/list?dc=dc2").await.json();
    assert!(
        listed.as_array().unwrap().iter().any(|s| s["ID"] == id),
        "{listed}"
    );
    let destroyed = c1.put(&format!("/v1/session/destroy/{id}?dc=dc2"), b"").await;
    assert_eq!(destroyed.text(), "true");
    assert_eq!(c2.get("/v1/session/list").await.json(), serde_json::json!([]));

    // Operator raft and status answer for dc2's servers.
    let raft = c1.get("/v1/operator/raft/configuration?dc=dc2").await.json();
    assert_eq!(raft["Servers"][0]["Node"], "d1", "{raft}");
    assert_eq!(raft["Servers"].as_array().unwrap().len(), 1);
    let leader = c1.get("/v1/status/leader?dc=dc2").await.json();
    assert_eq!(leader, serde_json::json!(d1.rpc_addr().to_string()));
    let peers = c1.get("/v1/status/peers?dc=dc2").await.json();
    assert_eq!(peers, serde_json::json!([d1.rpc_addr().to_string()]));

    // A snapshot of dc2 saved and restored through dc1.
    let saved = c1.get("/v1/snapshot?dc=dc2").await;
    assert_eq!(saved.status, 200, "{}", saved.text());
    let archive = tribune_snapshot::verify(saved.body.as_slice()).expect("a verified archive");
    assert!(archive.meta.index > 0);
    assert_eq!(c2.put("/v1/kv/t/after", b"later").await.text(), "true");
    assert_eq!(c1.put("/v1/kv/t/mine", b"dc1").await.text(), "true");
    let restored = c1.put("/v1/snapshot?dc=dc2", &saved.body).await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    wait_for("dc2 back at the snapshot", LIMIT, || async {
        c2.get("/v1/kv/t/after").await.status == 404
    })
    .await;
    assert_eq!(c2.get("/v1/kv/t/x?raw").await.body, b"dc2");
    assert_eq!(c1.get("/v1/kv/t/mine?raw").await.body, b"dc1", "dc1 untouched");

    // A client agent of dc1 passes `?dc=` through its server.
    let client = Node::start(common::pool_agent("c", false, &[&a])).await.unwrap();
    let via_client = Client::of(&client);
    wait_for("the client reaches dc2", LIMIT, || async {
        via_client.get("/v1/kv/t/x?dc=dc2&raw").await.body == b"dc2"
    })
    .await;
    assert_eq!(via_client.get("/v1/kv/t/x").await.status, 404);

    for node in [client, d1, a] {
        node.shutdown().await;
    }
}
