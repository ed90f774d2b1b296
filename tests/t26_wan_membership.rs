//! The WAN pool across datacenters, driven from one of them: `force-leave -wan <node>.<dc>` run in
//! dc1 removes another datacenter's WAN member (Consul cannot: consul#8100), `-prune` erases it
//! from every server's list, and `keyring` on a server of dc1 acts on the WAN pool and on the LAN
//! pool of every datacenter, listing each pool.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Client, pool_agent, start_leader, tribune_cli, wait_for, wan_server};
use serde_json::{Value, json};
use tribune::config::Config;
use tribune::{Node, NodeHandle};

const LIMIT: Duration = Duration::from_secs(30);

/// `/v1/agent/members?wan=1` as (name, Serf status) pairs, sorted by name.
async fn wan_members(node: &NodeHandle) -> Vec<(String, u64)> {
    let reply = Client::of(node).get("/v1/agent/members?wan=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut members: Vec<(String, u64)> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_owned(),
                m["Status"].as_u64().unwrap(),
            )
        })
        .collect();
    members.sort();
    members
}

fn status_of(members: &[(String, u64)], name: &str) -> Option<u64> {
    members.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_leave_from_dc1_removes_and_prunes_other_datacenters_wan_members() {
    let s1 = start_leader(wan_server("dc1", "s1", &[])).await;
    let d1 = start_leader(wan_server("dc2", "d1", &[&s1])).await;
    let e1 = start_leader(wan_server("dc3", "e1", &[&s1])).await;
    let f1 = start_leader(wan_server("dc4", "f1", &[&s1])).await;
    let everyone = ["d1.dc2", "e1.dc3", "f1.dc4", "s1.dc1"];
    for node in [&s1, &d1] {
        wait_for("every server alive in the WAN pool", LIMIT, || async {
            let members = wan_members(node).await;
            members.len() == 4 && everyone.iter().all(|n| status_of(&members, n) == Some(1))
        })
        .await;
    }

    // dc3's and dc4's servers stop without leaving: failed, as both remaining servers see them.
    e1.shutdown().await;
    f1.shutdown().await;
    for node in [&s1, &d1] {
        wait_for("the stopped servers to fail", LIMIT, || async {
            let members = wan_members(node).await;
            status_of(&members, "e1.dc3") == Some(4) && status_of(&members, "f1.dc4") == Some(4)
        })
        .await;
    }

    // Unknown names are Consul's error (a 500, which clients raise on), and the LAN pool knows no
    // WAN names.
    let unknown = Client::of(&s1)
        .put("/v1/agent/force-leave/nobody.dc9?wan=1", b"")
        .await;
    assert_eq!(unknown.status, 500, "{}", unknown.text());
    assert!(
        unknown.text().contains("No node found with name 'nobody.dc9'"),
        "{}",
        unknown.text()
    );
    let lan = Client::of(&s1).put("/v1/agent/force-leave/e1.dc3", b"").await;
    assert_eq!(lan.status, 500, "{}", lan.text());

    // From dc1, dc3's server is forced out of the WAN pool: left everywhere, still listed.
    let (ok, out) = tribune_cli(s1.http_addr().unwrap(), &["force-leave", "-wan", "e1.dc3"]).await;
    assert!(ok, "{out}");
    for node in [&s1, &d1] {
        wait_for("dc3's server listed as left", LIMIT, || async {
            status_of(&wan_members(node).await, "e1.dc3") == Some(3)
        })
        .await;
    }

    // With -prune, dc4's server is erased from every server's list, dc2's included.
    let (ok, out) = tribune_cli(
        s1.http_addr().unwrap(),
        &["force-leave", "-prune", "-wan", "f1.dc4"],
    )
    .await;
    assert!(ok, "{out}");
    for node in [&s1, &d1] {
        wait_for("dc4's server gone from the WAN pool", LIMIT, || async {
            status_of(&wan_members(node).await, "f1.dc4").is_none()
        })
        .await;
    }
    // A member that already left can be pruned too, through the API's `?prune`.
    let pruned = Client::of(&s1)
        .put("/v1/agent/force-leave/e1.dc3?wan=1&prune", b"")
        .await;
    assert_eq!(pruned.status, 200, "{}", pruned.text());
    for node in [&s1, &d1] {
        wait_for("only the live servers in the WAN pool", LIMIT, || async {
            wan_members(node).await == [("d1.dc2".to_owned(), 1), ("s1.dc1".to_owned(), 1)]
        })
        .await;
    }
    // The datacenters whose last server left are gone from routing.
    wait_for("dc3 and dc4 out of catalog/datacenters", LIMIT, || async {
        let dcs = Client::of(&s1).get("/v1/catalog/datacenters").await.json();
        dcs == json!(["dc1", "dc2"])
    })
    .await;

    for node in [d1, s1] {
        node.shutdown().await;
    }
}

/// The entries of a keyring listing, by pool title (`WAN`, `dc1 (LAN)`): (keys, primary keys,
/// number of nodes).
async fn keyring_pools(node: &NodeHandle) -> Vec<(String, Value, Value, u64)> {
    let reply = Client::of(node).get("/v1/operator/keyring").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut pools: Vec<(String, Value, Value, u64)> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let title = if p["WAN"] == true {
                "WAN".to_owned()
            } else {
                format!("{} (LAN)", p["Datacenter"].as_str().unwrap())
            };
            assert_eq!(p["Segment"], "", "{p}");
            (
                title,
                p["Keys"].clone(),
                p["PrimaryKeys"].clone(),
                p["NumNodes"].as_u64().unwrap(),
            )
        })
        .collect();
    pools.sort_by(|a, b| a.0.cmp(&b.0));
    pools
}

async fn keyring_call(node: &NodeHandle, method: &str, key: &str) -> common::Reply {
    let body = json!({ "Key": key }).to_string();
    common::request(
        node.http_addr().unwrap(),
        method,
        "/v1/operator/keyring",
        &[],
        body.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_on_a_server_covers_the_wan_pool_and_every_datacenters_lan_pool() {
    let old_raw = [31u8; 32];
    let new_raw = [47u8; 32];
    let (old, new) = (BASE64.encode(old_raw), BASE64.encode(new_raw));
    let encrypted = |mut config: Config| {
        config.encrypt = Some(old_raw.to_vec());
        config
    };
    let s1 = start_leader(encrypted(wan_server("dc1", "s1", &[]))).await;
    let d1 = start_leader(encrypted(wan_server("dc2", "d1", &[&s1]))).await;
    // A client agent in dc2: its LAN pool is more than its server, and none of it is in the WAN
    // pool, so only dc2's server can reach it.
    let mut client = encrypted(pool_agent("c2", false, &[&d1]));
    client.datacenter = "dc2".into();
    let c2 = Node::start(client).await.unwrap();
    wait_for(
        "both servers in the WAN pool and c2 in dc2's LAN pool",
        LIMIT,
        || async {
            let lan = Client::of(&d1).get("/v1/agent/members").await.json();
            wan_members(&s1).await.len() == 2 && lan.as_array().is_some_and(|m| m.len() == 2)
        },
    )
    .await;
    wait_for("dc2 routable from dc1", LIMIT, || async {
        Client::of(&s1).get("/v1/catalog/datacenters").await.json() == json!(["dc1", "dc2"])
    })
    .await;

    let only = |key: &str, n: u64| json!({ key: n });
    assert_eq!(
        keyring_pools(&s1).await,
        [
            ("WAN".to_owned(), only(&old, 2), only(&old, 2), 2),
            ("dc1 (LAN)".to_owned(), only(&old, 1), only(&old, 1), 1),
            ("dc2 (LAN)".to_owned(), only(&old, 2), only(&old, 2), 2),
        ]
    );

    // Installed through dc1: dc2's LAN pool, its client included, holds the key.
    let installed = keyring_call(&s1, "POST", &new).await;
    assert_eq!(installed.status, 200, "{}", installed.text());
    let both = |n: u64| json!({ old.clone(): n, new.clone(): n });
    assert_eq!(
        keyring_pools(&d1).await,
        [
            ("WAN".to_owned(), both(2), only(&old, 2), 2),
            ("dc1 (LAN)".to_owned(), both(1), only(&old, 1), 1),
            ("dc2 (LAN)".to_owned(), both(2), only(&old, 2), 2),
        ],
        "the listing is the same from either datacenter"
    );
    let local = Client::of(&c2)
        .get("/v1/operator/keyring?local-only=1")
        .await
        .json();
    assert_eq!(local[0]["Keys"], both(1), "{local}");

    // Used, then the old key removed, through dc1 (the CLI for the removal).
    let used = keyring_call(&s1, "PUT", &new).await;
    assert_eq!(used.status, 200, "{}", used.text());
    let local = Client::of(&c2)
        .get("/v1/operator/keyring?local-only=1")
        .await
        .json();
    assert_eq!(local[0]["PrimaryKeys"], only(&new, 1), "{local}");
    let (ok, out) = tribune_cli(s1.http_addr().unwrap(), &["keyring", "-remove", &old]).await;
    assert!(ok, "{out}");
    assert_eq!(
        keyring_pools(&s1).await,
        [
            ("WAN".to_owned(), only(&new, 2), only(&new, 2), 2),
            ("dc1 (LAN)".to_owned(), only(&new, 1), only(&new, 1), 1),
            ("dc2 (LAN)".to_owned(), only(&new, 2), only(&new, 2), 2),
        ]
    );

    // The CLI lists every pool, WAN first, as Consul prints them.
    let (ok, out) = tribune_cli(s1.http_addr().unwrap(), &["keyring", "-list"]).await;
    assert!(ok, "{out}");
    let expected =
        format!("\nWAN:\n  {new} [2/2]\n\ndc1 (LAN):\n  {new} [1/1]\n\ndc2 (LAN):\n  {new} [2/2]\n");
    assert!(out.contains(&expected), "{out}");

    // A refusal in another datacenter is reported with its pool's name, as Consul words it.
    let refused = keyring_call(&s1, "DELETE", &new).await;
    assert_eq!(refused.status, 500, "{}", refused.text());
    let text = refused.text();
    assert!(text.contains("WAN error: 2/2 nodes reported failure"), "{text}");
    assert!(
        text.contains("dc1 (LAN) error: 1/1 nodes reported failure"),
        "{text}"
    );
    assert!(
        text.contains("dc2 (LAN) error: 2/2 nodes reported failure"),
        "{text}"
    );
    assert!(text.contains("c2: "), "{text}");

    // dc2 unreachable: the operation fails with Consul's routing error.
    c2.shutdown().await;
    d1.shutdown().await;
    wait_for("dc2's server failed in dc1's WAN view", LIMIT, || async {
        status_of(&wan_members(&s1).await, "d1.dc2") == Some(4)
    })
    .await;
    let unreachable = Client::of(&s1).get("/v1/operator/keyring").await;
    assert_eq!(unreachable.status, 500, "{}", unreachable.text());
    assert!(
        unreachable
            .text()
            .contains("Remote DC has no server currently reachable"),
        "{}",
        unreachable.text()
    );
    s1.shutdown().await;
}
