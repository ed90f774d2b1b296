//! ACL replication at scale, in one process: a primary dc1 holding 10,000 policies, 20 roles and
//! 10,000 global tokens (plus a few local ones) and a fresh secondary dc2 that replicates them all,
//! enforces them, follows 1,000 deletes of each kind and 500 updates, and leaves its own local
//! tokens alone.
//!
//! The figures of BENCHMARKS.md ("ACL replication") come from the ignored tests at the end:
//! `cargo test -p tribune --test t32_acl_replication_scale -- --ignored --nocapture --test-threads=1`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Client, Reply, request, start_leader, wait_for};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tribune::NodeHandle;
use tribune::config::{Config, DefaultPolicy};
use tribune_netem::link::{Conditions, Network};

const ROOT: &str = "8f4a7f1e-1d2c-4c3b-9a55-0c0ffee00032";
const POLICIES: usize = 10_000;
const TOKENS: usize = 10_000;
const ROLES: usize = 20;
/// Requests a test keeps in flight against one server.
const IN_FLIGHT: usize = 32;
/// How long a secondary may take to match the primary after a bulk change.
const SYNC_LIMIT: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(30);
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

async fn call(client: Client, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    request(client.0, method, path, &[("X-Consul-Token", token)], &body).await
}

/// `call` that fails the test unless the answer is a 200.
async fn ok(client: Client, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let reply = call(client, method, path, token, body).await;
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    reply
}

/// Runs `each(i)` for every `i` in `items`, at most [`IN_FLIGHT`] at once; the answers in order.
async fn bounded<T, F, Fut>(items: impl IntoIterator<Item = usize>, each: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures::stream::iter(items)
        .map(each)
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

fn server(datacenter: &str, network: Option<&Network>) -> Config {
    let mut config = Config::dev();
    config.datacenter = datacenter.into();
    config.node_name = format!("{datacenter}-s1");
    config.primary_datacenter = "dc1".into();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.network = network.cloned();
    config.ports.serf_wan = Some(0);
    config.gossip_wan.probe_interval = Some(Duration::from_millis(300));
    config.gossip_wan.probe_timeout = Some(Duration::from_millis(150));
    config.gossip_wan.gossip_interval = Some(Duration::from_millis(20));
    config.gossip_wan.suspicion_mult = Some(3);
    config
}

async fn start_primary(network: Option<&Network>) -> NodeHandle {
    let mut config = server("dc1", network);
    config.acl.tokens.initial_management = Some(ROOT.into());
    let node = start_leader(config).await;
    // The leader writes the management token just after it is elected.
    wait_for("the management token in dc1", LIMIT, || async {
        call(Client::of(&node), "GET", "/v1/acl/token/self", ROOT, &Value::Null)
            .await
            .status
            == 200
    })
    .await;
    if let Some(network) = network {
        network.assign(node.serf_wan_addr().unwrap(), "dc1");
        network.assign(node.rpc_addr(), "dc1");
    }
    node
}

/// A secondary that replicates with the management token, joined to dc1 from dc1's side (dc2
/// cannot resolve the management token before it reaches the primary), `one_way` from dc1 under
/// `network`.
async fn start_secondary(
    datacenter: &str,
    replicate_tokens: bool,
    dc1: &NodeHandle,
    network: Option<&Network>,
    one_way: Duration,
) -> NodeHandle {
    let mut config = server(datacenter, network);
    config.acl.enable_token_replication = replicate_tokens;
    config.acl.tokens.replication = Some(ROOT.into());
    let node = start_leader(config).await;
    if let Some(network) = network {
        network.assign(node.serf_wan_addr().unwrap(), datacenter);
        network.assign(node.rpc_addr(), datacenter);
        if !one_way.is_zero() {
            network
                .set_between("dc1", datacenter, Conditions::delay(one_way))
                .unwrap();
        }
    }
    let wan = node.serf_wan_addr().unwrap();
    ok(
        Client::of(dc1),
        "PUT",
        &format!("/v1/agent/join/{wan}?wan=1"),
        ROOT,
        &Value::Null,
    )
    .await;
    node
}

async fn replication_status(node: &NodeHandle) -> Value {
    ok(Client::of(node), "GET", "/v1/acl/replication", "", &Value::Null)
        .await
        .json()
}

fn accessor(j: usize) -> String {
    format!("acce5500-0000-4000-8000-{j:012x}")
}

fn secret(j: usize) -> String {
    format!("5ec7e700-0000-4000-8000-{j:012x}")
}

/// The key prefix policy `i` grants write on, before (`p`) and after (`q`) its update.
fn policy_rules(prefix: &str) -> String {
    format!("key_prefix \"{prefix}/\" {{ policy = \"write\" }}")
}

fn ids(links: &Value) -> BTreeSet<String> {
    links
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| l["ID"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A policy as the list shows it; the hash covers its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PolicyView {
    name: String,
    description: String,
    hash: String,
}

/// A token as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenView {
    secret: String,
    description: String,
    policies: BTreeSet<String>,
    roles: BTreeSet<String>,
    local: bool,
    hash: String,
}

/// A datacenter's policies, roles and tokens, read by ID.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AclView {
    policies: BTreeMap<String, PolicyView>,
    roles: BTreeMap<String, (String, BTreeSet<String>)>,
    tokens: BTreeMap<String, TokenView>,
}

impl AclView {
    async fn of(node: &NodeHandle) -> AclView {
        let client = Client::of(node);
        let policies = ok(client, "GET", "/v1/acl/policies", ROOT, &Value::Null).await;
        let roles = ok(client, "GET", "/v1/acl/roles", ROOT, &Value::Null).await;
        let tokens = ok(client, "GET", "/v1/acl/tokens", ROOT, &Value::Null).await;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        AclView {
            policies: policies
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let view = PolicyView {
                        name: text(&p["Name"]),
                        description: text(&p["Description"]),
                        hash: text(&p["Hash"]),
                    };
                    (text(&p["ID"]), view)
                })
                .collect(),
            roles: roles
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (text(&r["ID"]), (text(&r["Name"]), ids(&r["Policies"]))))
                .collect(),
            tokens: tokens
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let view = TokenView {
                        secret: text(&t["SecretID"]),
                        description: text(&t["Description"]),
                        policies: ids(&t["Policies"]),
                        roles: ids(&t["Roles"]),
                        local: t["Local"].as_bool().unwrap(),
                        hash: text(&t["Hash"]),
                    };
                    (text(&t["AccessorID"]), view)
                })
                .collect(),
        }
    }

    /// The records replication copies: every policy and role, the global tokens.
    fn replicated(mut self) -> AclView {
        self.tokens.retain(|_, t| !t.local);
        self
    }

    /// What differs from `other`, briefly, for a failure message.
    fn difference(&self, other: &AclView) -> String {
        fn one<V: PartialEq>(what: &str, a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> String {
            let missing = a.keys().filter(|k| !b.contains_key(*k)).count();
            let extra = b.keys().filter(|k| !a.contains_key(*k)).count();
            let differ: Vec<&String> = a
                .iter()
                .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
                .map(|(k, _)| k)
                .collect();
            format!(
                "{what}: {} vs {}, {missing} missing, {extra} extra, {} differ (e.g. {:?}); ",
                a.len(),
                b.len(),
                differ.len(),
                differ.first()
            )
        }
        one("policies", &self.policies, &other.policies)
            + &one("roles", &self.roles, &other.roles)
            + &one("tokens", &self.tokens, &other.tokens)
    }
}

/// Waits until `secondary` holds exactly the primary's policies, roles and global tokens; how long
/// that took.
async fn wait_until_replicated(primary: &NodeHandle, secondary: &NodeHandle, limit: Duration) -> Duration {
    let started = Instant::now();
    let expected = AclView::of(primary).await.replicated();
    loop {
        let seen = AclView::of(secondary).await.replicated();
        if seen == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "dc2 did not match dc1 within {limit:?}: {}",
            expected.difference(&seen)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the test wrote in dc1: policy IDs by number, role IDs, and each global token's links.
struct Written {
    policy_ids: Vec<String>,
    role_ids: Vec<String>,
}

impl Written {
    /// Token `j`'s policy links: policy `j`, and for every third token policy `j + 1` too.
    fn token_policies(&self, j: usize) -> Vec<String> {
        let mut links = vec![self.policy_ids[j].clone()];
        if j.is_multiple_of(3) && j + 1 < POLICIES {
            links.push(self.policy_ids[j + 1].clone());
        }
        links
    }

    /// Every tenth token links a role, whose policy is one of 5000..5020.
    fn token_roles(&self, j: usize) -> Vec<String> {
        if j.is_multiple_of(10) {
            vec![self.role_ids[(j / 10) % ROLES].clone()]
        } else {
            Vec::new()
        }
    }
}

fn links(ids: &[String]) -> Value {
    Value::Array(ids.iter().map(|id| json!({ "ID": id })).collect())
}

/// Writes `POLICIES` policies, `ROLES` roles and `TOKENS` global tokens in dc1 over HTTP.
async fn write_dataset(dc1: &NodeHandle) -> Written {
    let client = Client::of(dc1);
    let policy_ids: Vec<String> = bounded(0..POLICIES, |i| async move {
        let body = json!({
            "Name": format!("p{i:05}"),
            "Description": format!("policy {i}"),
            "Rules": policy_rules(&format!("p{i}")),
        });
        let reply = ok(client, "PUT", "/v1/acl/policy", ROOT, &body).await;
        reply.json()["ID"].as_str().unwrap().to_owned()
    })
    .await;
    let role_ids: Vec<String> = bounded(0..ROLES, |r| {
        let policy = policy_ids[5000 + r].clone();
        async move {
            let body = json!({ "Name": format!("role-{r}"), "Policies": [{ "ID": policy }] });
            let reply = ok(client, "PUT", "/v1/acl/role", ROOT, &body).await;
            reply.json()["ID"].as_str().unwrap().to_owned()
        }
    })
    .await;
    let written = Written { policy_ids, role_ids };
    bounded(0..TOKENS, |j| {
        let body = json!({
            "AccessorID": accessor(j),
            "SecretID": secret(j),
            "Description": format!("token {j}"),
            "Policies": links(&written.token_policies(j)),
            "Roles": links(&written.token_roles(j)),
        });
        async move { ok(client, "PUT", "/v1/acl/token", ROOT, &body).await }
    })
    .await;
    written
}

/// The primary holds what the test wrote (so that matching it means something).
fn assert_primary_holds(view: &AclView, written: &Written, deleted: usize, updated: &BTreeSet<usize>) {
    for (i, id) in written.policy_ids.iter().enumerate().skip(deleted) {
        let policy = view
            .policies
            .get(id)
            .unwrap_or_else(|| panic!("policy {i} missing in dc1"));
        assert_eq!(policy.name, format!("p{i:05}"));
    }
    for j in deleted..TOKENS {
        let token = view
            .tokens
            .get(&accessor(j))
            .unwrap_or_else(|| panic!("token {j} missing in dc1"));
        assert_eq!(token.secret, secret(j));
        assert!(!token.local);
        let mut policies = written.token_policies(j);
        if updated.contains(&j) {
            policies.push(written.policy_ids[j + 10].clone());
        }
        let expected: BTreeSet<String> = policies.into_iter().collect();
        assert_eq!(token.policies, expected, "token {j}'s policies");
        let roles: BTreeSet<String> = written.token_roles(j).into_iter().collect();
        assert_eq!(token.roles, roles, "token {j}'s roles");
    }
    for j in 0..deleted {
        assert!(!view.tokens.contains_key(&accessor(j)), "token {j} not deleted");
    }
}

/// Token `j` may write under `allowed` in `node` and nowhere else.
async fn assert_enforced(node: &NodeHandle, j: usize, allowed: &str) {
    let client = Client::of(node);
    let put = call(
        client,
        "PUT",
        &format!("/v1/kv/{allowed}/x"),
        &secret(j),
        &json!(j),
    )
    .await;
    assert_eq!(put.status, 200, "token {j} writing {allowed}/: {}", put.text());
    let denied = call(client, "PUT", "/v1/kv/elsewhere/x", &secret(j), &json!(j)).await;
    assert_eq!(
        denied.status,
        403,
        "token {j} writing elsewhere/: {}",
        denied.text()
    );
}

/// Full GETs of a sample of policies in `node`: their rules are what the test wrote.
async fn assert_rules(
    node: &NodeHandle,
    written: &Written,
    sample: impl IntoIterator<Item = usize>,
    prefix: &str,
) {
    let client = Client::of(node);
    let sample: Vec<usize> = sample.into_iter().collect();
    bounded(sample.iter().copied(), |i| {
        let path = format!("/v1/acl/policy/{}", written.policy_ids[i]);
        async move {
            let policy = ok(client, "GET", &path, ROOT, &Value::Null).await.json();
            assert_eq!(
                policy["Rules"],
                policy_rules(&format!("{prefix}{i}")),
                "policy {i}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_policies_and_tokens_replicate_and_stay_in_step() {
    let dc1 = start_primary(None).await;
    let c1 = Client::of(&dc1);
    let started = Instant::now();
    let written = write_dataset(&dc1).await;
    let wrote = started.elapsed();
    let mut primary_locals = Vec::new();
    for n in 0..3 {
        let body = json!({
            "Description": format!("dc1 local {n}"),
            "Local": true,
            "Policies": links(&written.policy_ids[5000..5001]),
        });
        let reply = ok(c1, "PUT", "/v1/acl/token", ROOT, &body).await;
        primary_locals.push(reply.json()["AccessorID"].as_str().unwrap().to_owned());
    }
    let view = AclView::of(&dc1).await;
    assert_primary_holds(&view, &written, 0, &BTreeSet::new());
    assert_eq!(view.roles.len(), ROLES);

    // A fresh secondary: the first rounds copy everything.
    let started = Instant::now();
    let dc2 = start_secondary("dc2", true, &dc1, None, Duration::ZERO).await;
    let c2 = Client::of(&dc2);
    let full_sync = wait_until_replicated(&dc1, &dc2, SYNC_LIMIT).await;
    let full_sync_from_start = started.elapsed();
    let view2 = AclView::of(&dc2).await;
    for local in &primary_locals {
        assert!(
            !view2.tokens.contains_key(local),
            "dc1's local token {local} in dc2"
        );
    }
    assert_rules(&dc2, &written, (0..POLICIES).step_by(50), "p").await;
    for j in [1, 2, 3, 10, 4321, 9999] {
        assert_enforced(&dc2, j, &format!("p{j}")).await;
    }
    // Token 10 links role 1, which links policy 5001.
    assert_enforced(&dc2, 10, "p5001").await;

    // dc2's own local tokens, which no round may touch.
    let mut secondary_locals = Vec::new();
    for n in 0..3 {
        let body = json!({
            "Description": format!("dc2 local {n}"),
            "Local": true,
            "Policies": links(&written.policy_ids[7000..7001]),
        });
        let created = ok(c2, "PUT", "/v1/acl/token", ROOT, &body).await.json();
        assert_eq!(created["Local"], true);
        secondary_locals.push(created);
    }

    // 1,000 tokens and 1,000 policies deleted, 250 policies and 250 tokens updated.
    let started = Instant::now();
    bounded(0..1000, |j| async move {
        ok(
            c1,
            "DELETE",
            &format!("/v1/acl/token/{}", accessor(j)),
            ROOT,
            &Value::Null,
        )
        .await
    })
    .await;
    bounded(0..1000, |i| {
        let path = format!("/v1/acl/policy/{}", written.policy_ids[i]);
        async move { ok(c1, "DELETE", &path, ROOT, &Value::Null).await }
    })
    .await;
    bounded(2000..2250, |i| {
        let path = format!("/v1/acl/policy/{}", written.policy_ids[i]);
        let body = json!({
            "Name": format!("p{i:05}"),
            "Description": format!("policy {i}"),
            "Rules": policy_rules(&format!("q{i}")),
        });
        async move { ok(c1, "PUT", &path, ROOT, &body).await }
    })
    .await;
    let updated_tokens: BTreeSet<usize> = (3000..3250).collect();
    bounded(updated_tokens.iter().copied(), |j| {
        let mut policies = written.token_policies(j);
        policies.push(written.policy_ids[j + 10].clone());
        let body = json!({
            "AccessorID": accessor(j),
            "SecretID": secret(j),
            "Description": format!("token {j}, updated"),
            "Policies": links(&policies),
            "Roles": links(&written.token_roles(j)),
        });
        async move { ok(c1, "PUT", &format!("/v1/acl/token/{}", accessor(j)), ROOT, &body).await }
    })
    .await;
    let changed = started.elapsed();
    assert_primary_holds(&AclView::of(&dc1).await, &written, 1000, &updated_tokens);
    let incremental = wait_until_replicated(&dc1, &dc2, SYNC_LIMIT).await;
    assert_rules(&dc2, &written, 2000..2250, "q").await;
    assert_rules(&dc2, &written, (2250..POLICIES).step_by(100), "p").await;
    // Deleted tokens fail in dc2 (the primary does not know them either); updated ones follow.
    for j in [0, 500, 999] {
        let gone = call(c2, "PUT", &format!("/v1/kv/p{j}/x"), &secret(j), &json!(j)).await;
        assert_eq!(gone.status, 403, "deleted token {j}: {}", gone.text());
    }
    assert_enforced(&dc2, 2000, "q2000").await;
    let old_prefix = call(c2, "PUT", "/v1/kv/p2000/x", &secret(2000), &json!(0)).await;
    assert_eq!(old_prefix.status, 403, "{}", old_prefix.text());
    assert_enforced(&dc2, 3001, "p3011").await;

    // dc2's local tokens are exactly as created, and still work.
    for created in &secondary_locals {
        let path = format!("/v1/acl/token/{}", created["AccessorID"].as_str().unwrap());
        let now = ok(c2, "GET", &path, ROOT, &Value::Null).await.json();
        assert_eq!(&now, created);
        let secret = created["SecretID"].as_str().unwrap();
        let put = call(c2, "PUT", "/v1/kv/p7000/local", secret, &json!(1)).await;
        assert_eq!(put.status, 200, "{}", put.text());
    }

    let status = replication_status(&dc2).await;
    assert_eq!(status["Running"], true, "{status}");
    assert_eq!(status["ReplicationType"], "tokens", "{status}");
    for index in ["ReplicatedIndex", "ReplicatedTokenIndex", "ReplicatedRoleIndex"] {
        assert!(status[index].as_u64().unwrap() > 0, "{index}: {status}");
    }
    assert_eq!(status["LastError"], ZERO_TIME, "{status}");
    assert_eq!(status["LastErrorMessage"], "", "{status}");

    println!(
        "dc1: {POLICIES} policies, {ROLES} roles and {TOKENS} tokens written in {wrote:.1?} ({IN_FLIGHT} in flight)"
    );
    println!(
        "dc2 full sync: matched {full_sync:.1?} after the WAN join ({full_sync_from_start:.1?} after its start)"
    );
    println!(
        "1,000 + 1,000 deletes and 500 updates written in {changed:.1?}; dc2 matched {incremental:.1?} later"
    );
    dc2.shutdown().await;
    dc1.shutdown().await;
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (n={})",
        ms(percentile(&samples, 50)),
        ms(percentile(&samples, 99)),
        ms(*samples.last().unwrap()),
        samples.len()
    )
}

/// How often the lag tests ask dc2 whether the change arrived.
const POLL: Duration = Duration::from_millis(1);
/// Between two lag samples: more than one replication round interval, so that the rate limit of
/// rounds is not what is measured.
const SAMPLE_GAP: Duration = Duration::from_millis(250);
const LAG_SAMPLES: usize = 200;

/// Lag from a write in dc1 (its 200) to its effect in dc2, at `one_way` each way between them,
/// with `base` policies and tokens already replicated.
async fn lag_figures(one_way: Duration, base: usize) {
    let network = Network::new(32);
    let dc1 = start_primary(Some(&network)).await;
    let c1 = Client::of(&dc1);
    bounded(0..base, |i| async move {
        let body = json!({ "Name": format!("base{i}"), "Rules": policy_rules(&format!("base{i}")) });
        let id = ok(c1, "PUT", "/v1/acl/policy", ROOT, &body).await.json()["ID"].clone();
        let token = json!({ "AccessorID": accessor(100_000 + i), "SecretID": secret(100_000 + i), "Policies": [{ "ID": id }] });
        ok(c1, "PUT", "/v1/acl/token", ROOT, &token).await
    })
    .await;
    let lag_policy = ok(
        c1,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({ "Name": "lag", "Rules": policy_rules("lag0") }),
    )
    .await
    .json()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let holder =
        json!({ "AccessorID": accessor(0), "SecretID": secret(0), "Policies": [{ "ID": lag_policy }] });
    ok(c1, "PUT", "/v1/acl/token", ROOT, &holder).await;
    let dc2 = start_secondary("dc2", true, &dc1, Some(&network), one_way).await;
    let c2 = Client::of(&dc2);
    wait_until_replicated(&dc1, &dc2, SYNC_LIMIT * 3).await;

    // A policy's rules change in dc1; a token dc2 holds may use the new rules there.
    let mut policy_lag = Vec::new();
    for n in 1..=LAG_SAMPLES {
        tokio::time::sleep(SAMPLE_GAP).await;
        let body = json!({ "Name": "lag", "Rules": policy_rules(&format!("lag{n}")) });
        ok(c1, "PUT", &format!("/v1/acl/policy/{lag_policy}"), ROOT, &body).await;
        let written = Instant::now();
        let path = format!("/v1/kv/lag{n}/x");
        let deadline = written + LIMIT;
        while call(c2, "PUT", &path, &secret(0), &json!(n)).await.status != 200 {
            assert!(Instant::now() < deadline, "policy change {n} not enforced in dc2");
            tokio::time::sleep(POLL).await;
        }
        policy_lag.push(written.elapsed());
    }

    // A new token in dc1 linking that policy: when it works in dc2 (the first use may resolve it
    // at the primary), and when dc2 holds it (replicated).
    let prefix = format!("lag{LAG_SAMPLES}");
    let (mut works, mut replicated) = (Vec::new(), Vec::new());
    for n in 1..=LAG_SAMPLES {
        tokio::time::sleep(SAMPLE_GAP).await;
        let j = 200_000 + n;
        let body =
            json!({ "AccessorID": accessor(j), "SecretID": secret(j), "Policies": [{ "ID": lag_policy }] });
        ok(c1, "PUT", "/v1/acl/token", ROOT, &body).await;
        let written = Instant::now();
        let deadline = written + LIMIT;
        let (mut worked, mut held) = (None, None);
        let write = format!("/v1/kv/{prefix}/t");
        let read = format!("/v1/acl/token/{}", accessor(j));
        while worked.is_none() || held.is_none() {
            assert!(Instant::now() < deadline, "token {n} not in dc2");
            if worked.is_none() && call(c2, "PUT", &write, &secret(j), &json!(n)).await.status == 200 {
                worked = Some(written.elapsed());
            }
            if held.is_none() && call(c2, "GET", &read, ROOT, &Value::Null).await.status == 200 {
                held = Some(written.elapsed());
            }
            tokio::time::sleep(POLL).await;
        }
        works.push(worked.unwrap());
        replicated.push(held.unwrap());
    }

    let rtt = ms(one_way * 2);
    println!("emulated RTT {rtt} ms, {base} policies and tokens besides, {LAG_SAMPLES} samples each:");
    println!("  policy update -> enforced in dc2:    {}", summary(policy_lag));
    println!("  token create  -> works in dc2:       {}", summary(works));
    println!("  token create  -> replicated to dc2:  {}", summary(replicated));
    dc2.shutdown().await;
    dc1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn replication_lag_figures() {
    lag_figures(Duration::ZERO, 100).await;
    lag_figures(Duration::from_millis(25), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn replication_lag_figures_at_ten_thousand() {
    lag_figures(Duration::ZERO, TOKENS).await;
}

/// Full sync of the 10k dataset into a fresh secondary, at `one_way` each way.
async fn full_sync_figure(one_way: Duration) {
    let network = Network::new(32);
    let dc1 = start_primary(Some(&network)).await;
    let started = Instant::now();
    write_dataset(&dc1).await;
    let wrote = started.elapsed();
    let started = Instant::now();
    let dc2 = start_secondary("dc2", true, &dc1, Some(&network), one_way).await;
    let joined = started.elapsed();
    let synced = wait_until_replicated(&dc1, &dc2, SYNC_LIMIT * 5).await;
    println!(
        "emulated RTT {} ms: {POLICIES} policies, {ROLES} roles, {TOKENS} tokens written in dc1 in {wrote:.1?}; \
         dc2 started and joined in {joined:.1?}, matched dc1 {synced:.1?} after the join",
        ms(one_way * 2)
    );
    dc2.shutdown().await;
    dc1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn full_sync_figures() {
    full_sync_figure(Duration::ZERO).await;
    full_sync_figure(Duration::from_millis(25)).await;
}

const RESOLUTION_SAMPLES: usize = 200;

/// `RESOLUTION_SAMPLES` sequential reads, one per secret in `secrets`.
async fn timed_reads(client: Client, secrets: &[String]) -> Vec<Duration> {
    let mut took = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let started = Instant::now();
        let reply = call(client, "GET", "/v1/kv/bench/k", secret, &Value::Null).await;
        took.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    took
}

/// What resolving a token costs a secondary: a cheap authorized read with a replicated token
/// (first use), a cached one (second use), one resolved at the primary (dc3 does not replicate
/// tokens; first use) and that one cached, next to the management token.
async fn resolution_figures(one_way: Duration) {
    let network = Network::new(32);
    let dc1 = start_primary(Some(&network)).await;
    let c1 = Client::of(&dc1);
    let reader = ok(
        c1,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({ "Name": "bench-read", "Rules": "key_prefix \"bench/\" { policy = \"read\" }" }),
    )
    .await
    .json()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets: Vec<String> = (0..RESOLUTION_SAMPLES).map(|n| secret(300_000 + n)).collect();
    bounded(0..RESOLUTION_SAMPLES, |n| {
        let body = json!({ "AccessorID": accessor(300_000 + n), "SecretID": secret(300_000 + n), "Policies": [{ "ID": reader }] });
        async move { ok(c1, "PUT", "/v1/acl/token", ROOT, &body).await }
    })
    .await;
    let dc2 = start_secondary("dc2", true, &dc1, Some(&network), one_way).await;
    let dc3 = start_secondary("dc3", false, &dc1, Some(&network), one_way).await;
    wait_until_replicated(&dc1, &dc2, SYNC_LIMIT).await;
    wait_for("dc3 to replicate the policy", SYNC_LIMIT, || async {
        call(
            Client::of(&dc3),
            "GET",
            &format!("/v1/acl/policy/{reader}"),
            ROOT,
            &Value::Null,
        )
        .await
        .status
            == 200
    })
    .await;
    let (c2, c3) = (Client::of(&dc2), Client::of(&dc3));
    for client in [c2, c3] {
        ok(client, "PUT", "/v1/kv/bench/k", ROOT, &json!("v")).await;
    }
    let management = vec![ROOT.to_owned(); RESOLUTION_SAMPLES];
    timed_reads(c2, &management[..10]).await;
    let dc2_management = timed_reads(c2, &management).await;
    let dc2_replicated = timed_reads(c2, &secrets).await;
    let dc2_cached = timed_reads(c2, &secrets).await;
    let dc3_remote = timed_reads(c3, &secrets).await;
    let dc3_remote_cached = timed_reads(c3, &secrets).await;
    println!(
        "emulated RTT {} ms, {RESOLUTION_SAMPLES} sequential GET /v1/kv/bench/k each:",
        ms(one_way * 2)
    );
    println!(
        "  dc2, management token (cached):        {}",
        summary(dc2_management)
    );
    println!(
        "  dc2, replicated token, first use:      {}",
        summary(dc2_replicated)
    );
    println!("  dc2, replicated token, cached:         {}", summary(dc2_cached));
    println!("  dc3, remote fallback, first use:       {}", summary(dc3_remote));
    println!(
        "  dc3, remote fallback, cached:          {}",
        summary(dc3_remote_cached)
    );
    dc3.shutdown().await;
    dc2.shutdown().await;
    dc1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn token_resolution_figures() {
    resolution_figures(Duration::ZERO).await;
    resolution_figures(Duration::from_millis(25)).await;
}
