//! ACLs when the primary datacenter cannot be reached. dc1 is the primary; dc2..dc5 are one-server
//! secondaries that replicate policies but not tokens, so each resolves a token at dc1 and caches it
//! for `acl.token_ttl`. Every server sits in tribune-netem's in-process WAN layer under a group named
//! after its datacenter. Once dc1 is cut off and the token's TTL has passed, each secondary follows
//! its `down_policy` as Consul's does:
//! - `extend-cache` and `async-cache` keep serving the cached token with its replicated policy, and
//!   give a secret nothing cached knows the `default_policy` (deny here);
//! - `allow` lets every secret do anything; `deny` refuses every secret.
//!
//! After the heal every secondary resolves at dc1 again: the token is back to its policy, an unknown
//! secret is "ACL not found", the replicated policy is intact, and the caches are refreshed (a token
//! deleted in dc1 stops working everywhere).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::NodeHandle;
use tribune::config::{Config, DefaultPolicy, DownPolicy};
use tribune_netem::link::Network;

const LIMIT: Duration = Duration::from_secs(20);
const ROOT: &str = "8f4a7f1e-1d2c-4c3b-9a55-0c0ffee00031";
/// The secondaries' `acl.token_ttl`: how long a token resolved at dc1 is trusted without asking again.
const TOKEN_TTL: Duration = Duration::from_secs(1);
/// A request under the cut must not wait for the WAN: the down policy answers at once.
const PROMPT: Duration = Duration::from_secs(2);

struct Secondary {
    node: NodeHandle,
    datacenter: String,
    down_policy: DownPolicy,
}

fn acl_server(datacenter: &str, network: &Network) -> Config {
    let mut config = Config::dev();
    config.datacenter = datacenter.into();
    config.node_name = format!("{datacenter}-s1");
    config.primary_datacenter = "dc1".into();
    config.network = Some(network.clone());
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    common::fast_wan(&mut config);
    config
}

async fn call(node: &NodeHandle, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    let headers: &[(&str, &str)] = if token.is_empty() {
        &[]
    } else {
        &[("X-Consul-Token", token)]
    };
    request(Client::of(node).0, method, path, headers, &body).await
}

/// Status and body of a KV write with `token`, and how long it took.
async fn write(node: &NodeHandle, key: &str, token: &str) -> ((u16, String), Duration) {
    let started = Instant::now();
    let reply = request(
        Client::of(node).0,
        "PUT",
        &format!("/v1/kv/{key}"),
        &[("X-Consul-Token", token)],
        b"v",
    )
    .await;
    ((reply.status, reply.text()), started.elapsed())
}

fn allowed() -> (u16, String) {
    (200, "true".to_owned())
}

fn denied() -> (u16, String) {
    (403, "Permission denied".to_owned())
}

fn not_found() -> (u16, String) {
    (403, "ACL not found".to_owned())
}

/// Whether `node` can carry a request to dc1: a read of a missing key there is a 404; with dc1 cut
/// off it is a 500 "Remote DC has no server currently reachable".
async fn reaches_primary(node: &NodeHandle) -> Option<bool> {
    let reply = call(node, "GET", "/v1/kv/absent?dc=dc1", ROOT, &Value::Null).await;
    match reply.status {
        404 => Some(true),
        500 => Some(false),
        _ => None,
    }
}

/// What a secondary answers for the token, for another key, and for a secret nobody knows, when the
/// primary answers: the token's policy, and "ACL not found".
async fn resolves_normally(node: &NodeHandle, secret: &str, unknown: &str) -> bool {
    write(node, "app/x", secret).await.0 == allowed()
        && write(node, "other/x", secret).await.0 == denied()
        && write(node, "app/x", unknown).await.0 == not_found()
}

fn unknown_secret(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_down_policy_applies_while_the_primary_is_cut_off_and_resolution_resumes_after_the_heal() {
    let started = Instant::now();
    let network = Network::new(31);
    let mut primary = acl_server("dc1", &network);
    primary.acl.tokens.initial_management = Some(ROOT.into());
    let dc1 = start_leader(primary).await;
    network.assign(dc1.serf_wan_addr().unwrap(), "dc1");
    network.assign(dc1.rpc_addr(), "dc1");

    let policies = [
        ("dc2", DownPolicy::ExtendCache),
        ("dc3", DownPolicy::AsyncCache),
        ("dc4", DownPolicy::Allow),
        ("dc5", DownPolicy::Deny),
    ];
    let mut secondaries = Vec::new();
    for (datacenter, down_policy) in policies {
        let mut config = acl_server(datacenter, &network);
        config.acl.down_policy = down_policy;
        config.acl.token_ttl = TOKEN_TTL;
        config.acl.enable_token_replication = false;
        config.acl.tokens.replication = Some(ROOT.into());
        config.retry_join_wan = vec![dc1.serf_wan_addr().unwrap().to_string()];
        config.retry_interval_wan = Duration::from_millis(200);
        let node = start_leader(config).await;
        network.assign(node.serf_wan_addr().unwrap(), datacenter);
        network.assign(node.rpc_addr(), datacenter);
        secondaries.push(Secondary {
            node,
            datacenter: datacenter.to_owned(),
            down_policy,
        });
    }
    for secondary in &secondaries {
        wait_for(
            &format!("{} to route to dc1", secondary.datacenter),
            LIMIT,
            || async { reaches_primary(&secondary.node).await == Some(true) },
        )
        .await;
    }

    // A policy and a token linking it, created in dc1.
    let policy = call(
        &dc1,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({"Name": "app", "Rules": "key_prefix \"app/\" { policy = \"write\" }"}),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let policy_id = policy.json()["ID"].as_str().unwrap().to_owned();
    let token = call(
        &dc1,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Description": "app", "Policies": [{"ID": policy_id}]}),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let secret = token.json()["SecretID"].as_str().unwrap().to_owned();
    let accessor = token.json()["AccessorID"].as_str().unwrap().to_owned();

    // Every secondary replicated the policy (not the token) and resolves the token at dc1.
    let mut replicated_index = Vec::new();
    for secondary in &secondaries {
        let node = &secondary.node;
        wait_for(
            &format!("the policy to replicate to {}", secondary.datacenter),
            LIMIT,
            || async {
                call(
                    node,
                    "GET",
                    &format!("/v1/acl/policy/{policy_id}"),
                    ROOT,
                    &Value::Null,
                )
                .await
                .status
                    == 200
            },
        )
        .await;
        let status = call(node, "GET", "/v1/acl/replication", "", &Value::Null)
            .await
            .json();
        assert_eq!(status["ReplicationType"], "policies", "{status}");
        replicated_index.push(status["ReplicatedIndex"].as_u64().unwrap());
        assert!(
            resolves_normally(node, &secret, &unknown_secret(1)).await,
            "{} before the cut",
            secondary.datacenter
        );
    }
    let token_last_resolved = Instant::now();

    // dc1 cut off from every secondary (the secondaries still see each other).
    for secondary in &secondaries {
        network.cut("dc1", &secondary.datacenter);
    }
    for secondary in &secondaries {
        wait_for(
            &format!("{} to find dc1 unreachable", secondary.datacenter),
            LIMIT,
            || async { reaches_primary(&secondary.node).await == Some(false) },
        )
        .await;
    }
    // The token's cache entries are past `acl.token_ttl`: a documented duration, not a hope.
    let past_ttl = token_last_resolved + TOKEN_TTL + Duration::from_millis(300);
    tokio::time::sleep_until(past_ttl.into()).await;

    let unknown = unknown_secret(2);
    for secondary in &secondaries {
        let node = &secondary.node;
        let dc = &secondary.datacenter;
        let expected = match secondary.down_policy {
            DownPolicy::ExtendCache | DownPolicy::AsyncCache => [allowed(), denied(), denied(), denied()],
            DownPolicy::Allow => [allowed(), allowed(), allowed(), allowed()],
            DownPolicy::Deny => [denied(), denied(), denied(), denied()],
        };
        // Twice each: once when the primary is asked and fails, once while that failure is
        // remembered.
        for round in 0..2 {
            let answers = [
                write(node, "app/x", &secret).await,
                write(node, "other/x", &secret).await,
                write(node, "app/x", &unknown).await,
                write(node, "other/x", &unknown).await,
            ];
            for (answer, expected) in answers.iter().zip(&expected) {
                assert!(answer.1 < PROMPT, "{dc} took {:?} to answer", answer.1);
                assert_eq!(
                    &answer.0,
                    expected,
                    "{dc} ({:?}) with dc1 cut off, round {round}: token app/x, token other/x, unknown app/x, unknown other/x: {:?}",
                    secondary.down_policy,
                    answers.iter().map(|a| &a.0).collect::<Vec<_>>()
                );
            }
        }
    }
    let cut_at = started.elapsed();

    // Healed: every secondary routes to dc1 again and resolves there as before. dc1 joins them
    // again rather than waiting for the WAN pool's next reconnect attempt (every 30 s; t25 covers
    // that path).
    for secondary in &secondaries {
        network.heal("dc1", &secondary.datacenter);
    }
    for secondary in &secondaries {
        let address = secondary.node.serf_wan_addr().unwrap();
        let join = call(
            &dc1,
            "PUT",
            &format!("/v1/agent/join/{address}?wan=1"),
            ROOT,
            &Value::Null,
        )
        .await;
        assert_eq!(join.status, 200, "{}", join.text());
    }
    for secondary in &secondaries {
        wait_for(
            &format!("{} to route to dc1 again", secondary.datacenter),
            LIMIT,
            || async { reaches_primary(&secondary.node).await == Some(true) },
        )
        .await;
    }
    let unknown = unknown_secret(3);
    for (secondary, index_before) in secondaries.iter().zip(&replicated_index) {
        let node = &secondary.node;
        wait_for(
            &format!("{} to resolve at dc1 again", secondary.datacenter),
            LIMIT,
            || resolves_normally(node, &secret, &unknown),
        )
        .await;
        let policy = call(
            node,
            "GET",
            &format!("/v1/acl/policy/{policy_id}"),
            ROOT,
            &Value::Null,
        )
        .await;
        assert_eq!(policy.status, 200, "{}", policy.text());
        assert_eq!(
            policy.json()["Rules"],
            "key_prefix \"app/\" { policy = \"write\" }"
        );
        let status = call(node, "GET", "/v1/acl/replication", "", &Value::Null)
            .await
            .json();
        assert_eq!(status["Enabled"], true, "{status}");
        assert_eq!(status["SourceDatacenter"], "dc1", "{status}");
        assert!(
            status["ReplicatedIndex"].as_u64().unwrap() >= *index_before,
            "{}: {status}",
            secondary.datacenter
        );
    }

    // The caches are live again: the token deleted in dc1 stops working in every secondary once
    // its TTL has passed, whatever the down policy.
    let deleted = call(
        &dc1,
        "DELETE",
        &format!("/v1/acl/token/{accessor}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    for secondary in &secondaries {
        wait_for(
            &format!("the deleted token to stop working in {}", secondary.datacenter),
            TOKEN_TTL * 5,
            || async { write(&secondary.node, "app/x", &secret).await.0 == not_found() },
        )
        .await;
    }

    eprintln!("cut checked at {cut_at:?}, whole test {:?}", started.elapsed());
    for secondary in secondaries {
        secondary.node.shutdown().await;
    }
    dc1.shutdown().await;
}
