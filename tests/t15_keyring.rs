//! Gossip key rotation across a datacenter: `/v1/operator/keyring` and `tribune keyring` install,
//! use and remove a key on every member at once; an agent keeps the rotated keys across a restart
//! even though its configuration still names the old one; an agent with only the old key is shut
//! out.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Client, pool_agent, tribune_cli, wait_for};
use serde_json::{Value, json};
use tribune::Node;
use tribune::config::Config;

const LIMIT: Duration = Duration::from_secs(30);

fn encrypted(mut config: Config, key: &[u8]) -> Config {
    config.encrypt = Some(key.to_vec());
    config
}

/// The one LAN pool entry of a keyring listing.
async fn listing(client: Client) -> Value {
    let reply = client.get("/v1/operator/keyring").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pools = reply.json();
    assert_eq!(pools.as_array().map(Vec::len), Some(1), "{pools}");
    pools[0].clone()
}

async fn keyring_call(client: Client, method: &str, key: &str) -> common::Reply {
    let body = json!({ "Key": key }).to_string();
    common::request(client.0, method, "/v1/operator/keyring", &[], body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reaches_every_member_and_survives_a_restart() {
    let old_raw = [11u8; 32];
    let new_raw = [22u8; 16];
    let (old, new) = (BASE64.encode(old_raw), BASE64.encode(new_raw));
    let client_dir = tempfile::tempdir().unwrap();

    let s1 = Node::start(encrypted(pool_agent("s1", true, &[]), &old_raw))
        .await
        .unwrap();
    let s2 = Node::start(encrypted(pool_agent("s2", true, &[&s1]), &old_raw))
        .await
        .unwrap();
    let s3 = Node::start(encrypted(pool_agent("s3", true, &[&s1]), &old_raw))
        .await
        .unwrap();
    let client_config = || {
        let mut config = encrypted(pool_agent("c1", false, &[&s2]), &old_raw);
        config.data_dir = Some(client_dir.path().to_path_buf());
        config
    };
    let c1 = Node::start(client_config()).await.unwrap();
    let (on_s2, on_s3) = (Client::of(&s2), Client::of(&s3));
    wait_for("four members and a leader", LIMIT, || async {
        let members = on_s2.get("/v1/agent/members").await.json();
        members.as_array().map_or(0, Vec::len) == 4
            && s1.is_leader() as u8 + s2.is_leader() as u8 + s3.is_leader() as u8 == 1
    })
    .await;

    let pool = listing(on_s2).await;
    assert_eq!(pool["WAN"], false);
    assert_eq!(pool["Datacenter"], "dc1");
    assert_eq!(pool["NumNodes"], 4);
    assert_eq!(pool["Keys"], json!({ old.clone(): 4 }));
    assert_eq!(pool["PrimaryKeys"], json!({ old.clone(): 4 }));

    // Install through the client agent (a server carries it to everyone), use on a server, and
    // remove the old key with the CLI.
    let on_client = Client::of(&c1);
    let installed = keyring_call(on_client, "POST", &new).await;
    assert_eq!(installed.status, 200, "{}", installed.text());
    let pool = listing(on_s3).await;
    assert_eq!(pool["Keys"], json!({ old.clone(): 4, new.clone(): 4 }));
    assert_eq!(pool["PrimaryKeys"], json!({ old.clone(): 4 }));

    let used = keyring_call(on_s3, "PUT", &new).await;
    assert_eq!(used.status, 200, "{}", used.text());
    assert_eq!(listing(on_s2).await["PrimaryKeys"], json!({ new.clone(): 4 }));

    let (ok, out) = tribune_cli(on_s2.0, &["keyring", "-remove", &old]).await;
    assert!(ok, "{out}");
    assert!(out.contains("==> Removing gossip encryption key..."), "{out}");
    let (ok, out) = tribune_cli(on_s2.0, &["keyring", "-list"]).await;
    assert!(ok, "{out}");
    assert!(out.contains(&format!("dc1 (LAN):\n  {new} [4/4]\n")), "{out}");
    assert!(!out.contains(&old), "{out}");

    // Refusals are reported per member and change nothing.
    let refused = keyring_call(on_s2, "DELETE", &new).await;
    assert_eq!(refused.status, 500);
    assert!(
        refused.text().contains("4/4 nodes reported failure"),
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("primary"), "{}", refused.text());
    let (ok, out) = tribune_cli(on_s2.0, &["keyring", "-use", &old]).await;
    assert!(!ok && out.contains("not installed"), "{out}");
    let bad = keyring_call(on_s2, "POST", "c2hvcnQ=").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(listing(on_s2).await["Keys"], json!({ new.clone(): 4 }));

    // The client's local view.
    let local = on_client.get("/v1/operator/keyring?local-only=1").await.json();
    assert_eq!(local[0]["NumNodes"], 1);
    assert_eq!(local[0]["Keys"], json!({ new.clone(): 1 }));

    // The client restarts configured with the old key: its keyring file wins, and it is back.
    let saved = std::fs::read_to_string(client_dir.path().join("serf/local.keyring")).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&saved).unwrap(),
        vec![new.clone()]
    );
    c1.shutdown().await;
    let c1 = Node::start(client_config()).await.unwrap();
    let on_client = Client::of(&c1);
    wait_for("the restarted client to rejoin on the new key", LIMIT, || async {
        let members = on_client.get("/v1/agent/members").await.json();
        members
            .as_array()
            .is_some_and(|m| m.len() == 4 && m.iter().all(|m| m["Status"] == 1))
    })
    .await;
    wait_for(
        "every member to answer the restarted client's listing",
        LIMIT,
        || async {
            let reply = on_client.get("/v1/operator/keyring").await;
            reply.status == 200 && reply.json()[0]["Keys"] == json!({ new.clone(): 4 })
        },
    )
    .await;

    // A newcomer holding only the old key cannot join.
    let outsider = Node::start(encrypted(pool_agent("c2", false, &[]), &old_raw))
        .await
        .unwrap();
    let join = Client::of(&outsider)
        .put(&format!("/v1/agent/join/{}", s2.serf_lan_addr().unwrap()), b"")
        .await;
    assert_eq!(join.status, 500, "{}", join.text());

    for node in [outsider, c1, s3, s2, s1] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_operations_without_encryption_say_so() {
    let node = common::dev_server().await;
    let client = Client::of(&node);
    let reply = client.get("/v1/operator/keyring").await;
    assert_eq!(reply.status, 500);
    assert!(reply.text().contains("not enabled"), "{}", reply.text());
    let (ok, out) = tribune_cli(client.0, &["keyring", "-list", "-install", "x"]).await;
    assert!(!ok && out.contains("Only a single action"), "{out}");
    node.shutdown().await;
}
