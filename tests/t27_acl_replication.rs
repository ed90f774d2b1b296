//! ACLs across two datacenters in one process: dc1 is the primary, dc2 replicates its policies and
//! global tokens through its leader, writes policies and global tokens in dc1, keeps its local
//! tokens, resolves a token dc1 just created before it replicated, and reports its replication
//! status — including a replication token that lacks the rights.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::NodeHandle;
use tribune::config::{Config, DefaultPolicy};

const LIMIT: Duration = Duration::from_secs(30);
const ROOT: &str = "8f4a7f1e-1d2c-4c3b-9a55-0c0ffee00001";

async fn call(node: &NodeHandle, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    request(
        Client::of(node).0,
        method,
        path,
        &[("X-Consul-Token", token)],
        &body,
    )
    .await
}

fn acl_server(datacenter: &str) -> Config {
    let mut config = Config::dev();
    config.datacenter = datacenter.into();
    config.node_name = format!("{datacenter}-s1");
    config.primary_datacenter = "dc1".into();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.ports.serf_wan = Some(0);
    config.gossip_wan.probe_interval = Some(Duration::from_millis(100));
    config.gossip_wan.probe_timeout = Some(Duration::from_millis(50));
    config.gossip_wan.gossip_interval = Some(Duration::from_millis(20));
    config.gossip_wan.suspicion_mult = Some(3);
    config
}

async fn status(node: &NodeHandle) -> Value {
    let reply = call(node, "GET", "/v1/acl/replication", "", &Value::Null).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn set_replication_token(node: &NodeHandle, secret: &str) {
    let reply = call(
        node,
        "PUT",
        "/v1/agent/token/replication",
        ROOT,
        &json!({ "Token": secret }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_replicate_from_the_primary_and_work_across_datacenters() {
    let mut primary = acl_server("dc1");
    primary.acl.tokens.initial_management = Some(ROOT.into());
    let dc1 = start_leader(primary).await;
    let mut secondary = acl_server("dc2");
    secondary.acl.enable_token_replication = true;
    secondary.acl.tokens.replication = Some(ROOT.into());
    secondary.retry_join_wan = vec![dc1.serf_wan_addr().unwrap().to_string()];
    secondary.retry_interval_wan = Duration::from_millis(200);
    let dc2 = start_leader(secondary).await;

    // The first round copies global-management and the initial management token.
    wait_for("a first successful replication round", LIMIT, || async {
        status(&dc2).await["LastSuccess"] != "0001-01-01T00:00:00Z"
    })
    .await;
    let replicated = status(&dc2).await;
    assert_eq!(replicated["Enabled"], true);
    assert_eq!(replicated["Running"], true);
    assert_eq!(replicated["SourceDatacenter"], "dc1");
    assert_eq!(replicated["ReplicationType"], "tokens");
    assert!(
        replicated["ReplicatedIndex"].as_u64().unwrap() > 0,
        "{replicated}"
    );
    assert!(
        replicated["ReplicatedTokenIndex"].as_u64().unwrap() > 0,
        "{replicated}"
    );
    assert!(
        replicated["ReplicatedRoleIndex"].as_u64().unwrap() > 0,
        "{replicated}"
    );
    assert_eq!(replicated["LastErrorMessage"], "");
    let primary_status = status(&dc1).await;
    assert_eq!(primary_status["Enabled"], false, "{primary_status}");
    assert_eq!(primary_status["Running"], false);

    // A policy and a global token written in dc1 appear in dc2 and are enforced there.
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
    let app_secret = token.json()["SecretID"].as_str().unwrap().to_owned();
    let app_accessor = token.json()["AccessorID"].as_str().unwrap().to_owned();
    wait_for("the token to replicate to dc2", LIMIT, || async {
        call(
            &dc2,
            "GET",
            &format!("/v1/acl/token/{app_accessor}"),
            ROOT,
            &Value::Null,
        )
        .await
        .status
            == 200
    })
    .await;
    let in_dc2 = call(
        &dc2,
        "GET",
        &format!("/v1/acl/policy/{policy_id}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(in_dc2.status, 200, "{}", in_dc2.text());
    assert_eq!(in_dc2.json()["Name"], "app");
    let put = call(&dc2, "PUT", "/v1/kv/app/x", &app_secret, &json!("v")).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let denied = call(&dc2, "PUT", "/v1/kv/other", &app_secret, &json!("v")).await;
    assert_eq!(denied.status, 403, "{}", denied.text());

    // A role written in a secondary is written in the primary, replicates back, and a global token
    // linking it works in both datacenters.
    let role = call(
        &dc2,
        "PUT",
        "/v1/acl/role",
        ROOT,
        &json!({"Name": "app-role", "Policies": [{"Name": "app"}], "ServiceIdentities": [{"ServiceName": "web"}]}),
    )
    .await;
    assert_eq!(role.status, 200, "{}", role.text());
    let role_id = role.json()["ID"].as_str().unwrap().to_owned();
    let in_primary = call(
        &dc1,
        "GET",
        &format!("/v1/acl/role/{role_id}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(
        in_primary.status,
        200,
        "the role was written in dc1: {}",
        in_primary.text()
    );
    let via_role = call(
        &dc1,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Description": "via role", "Roles": [{"Name": "app-role"}]}),
    )
    .await;
    assert_eq!(via_role.status, 200, "{}", via_role.text());
    let role_secret = via_role.json()["SecretID"].as_str().unwrap().to_owned();
    let role_accessor = via_role.json()["AccessorID"].as_str().unwrap().to_owned();
    wait_for("the role and its token to replicate to dc2", LIMIT, || async {
        let role = call(
            &dc2,
            "GET",
            &format!("/v1/acl/role/{role_id}"),
            ROOT,
            &Value::Null,
        )
        .await;
        let token = call(
            &dc2,
            "GET",
            &format!("/v1/acl/token/{role_accessor}"),
            ROOT,
            &Value::Null,
        )
        .await;
        role.status == 200 && token.status == 200
    })
    .await;
    let replicated_role = call(&dc2, "GET", "/v1/acl/role/name/app-role", ROOT, &Value::Null).await;
    assert_eq!(
        replicated_role.json()["ServiceIdentities"][0]["ServiceName"],
        "web"
    );
    assert_eq!(replicated_role.json()["Policies"][0]["ID"], policy_id.as_str());
    for dc in [&dc1, &dc2] {
        let put = call(dc, "PUT", "/v1/kv/app/role", &role_secret, &json!("v")).await;
        assert_eq!(put.status, 200, "{}", put.text());
        let denied = call(dc, "PUT", "/v1/kv/other", &role_secret, &json!("v")).await;
        assert_eq!(denied.status, 403, "{}", denied.text());
    }

    // A local token of dc2 stays in dc2, and replication leaves it alone.
    let local = call(
        &dc2,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Description": "dc2 only", "Local": true, "Policies": [{"ID": policy_id}]}),
    )
    .await;
    assert_eq!(local.status, 200, "{}", local.text());
    assert_eq!(local.json()["Local"], true);
    let local_accessor = local.json()["AccessorID"].as_str().unwrap().to_owned();
    let local_path = format!("/v1/acl/token/{local_accessor}");
    assert_eq!(
        call(&dc1, "GET", &local_path, ROOT, &Value::Null).await.status,
        403
    );

    // A policy and a global token written in dc2 are written in dc1.
    let remote_policy = call(
        &dc2,
        "PUT",
        "/v1/acl/policy",
        ROOT,
        &json!({"Name": "from-dc2", "Rules": "key_prefix \"dc2/\" { policy = \"read\" }"}),
    )
    .await;
    assert_eq!(remote_policy.status, 200, "{}", remote_policy.text());
    let remote_policy_id = remote_policy.json()["ID"].as_str().unwrap().to_owned();
    let in_dc1 = call(
        &dc1,
        "GET",
        &format!("/v1/acl/policy/{remote_policy_id}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(in_dc1.status, 200, "{}", in_dc1.text());
    let global = call(
        &dc2,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Description": "global from dc2", "Policies": [{"ID": policy_id}]}),
    )
    .await;
    assert_eq!(global.status, 200, "{}", global.text());
    let global_accessor = global.json()["AccessorID"].as_str().unwrap().to_owned();
    let global_in_dc1 = call(
        &dc1,
        "GET",
        &format!("/v1/acl/token/{global_accessor}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(global_in_dc1.status, 200, "{}", global_in_dc1.text());
    // ...and come back through replication; the local token is still there afterwards.
    wait_for(
        "the policy written through dc2 to replicate back",
        LIMIT,
        || async {
            call(
                &dc2,
                "GET",
                &format!("/v1/acl/policy/{remote_policy_id}"),
                ROOT,
                &Value::Null,
            )
            .await
            .status
                == 200
        },
    )
    .await;
    wait_for(
        "the global token written through dc2 to replicate back",
        LIMIT,
        || async {
            call(
                &dc2,
                "GET",
                &format!("/v1/acl/token/{global_accessor}"),
                ROOT,
                &Value::Null,
            )
            .await
            .status
                == 200
        },
    )
    .await;
    assert_eq!(
        call(&dc2, "GET", &local_path, ROOT, &Value::Null).await.status,
        200
    );

    // Deletes replicate.
    let deleted = call(
        &dc1,
        "DELETE",
        &format!("/v1/acl/token/{app_accessor}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let deleted = call(
        &dc1,
        "DELETE",
        &format!("/v1/acl/policy/{remote_policy_id}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    wait_for("the token's delete to replicate", LIMIT, || async {
        call(
            &dc2,
            "GET",
            &format!("/v1/acl/token/{app_accessor}"),
            ROOT,
            &Value::Null,
        )
        .await
        .status
            == 403
    })
    .await;
    wait_for("the policy's delete to replicate", LIMIT, || async {
        call(
            &dc2,
            "GET",
            &format!("/v1/acl/policy/{remote_policy_id}"),
            ROOT,
            &Value::Null,
        )
        .await
        .status
            == 404
    })
    .await;
    let gone = call(&dc2, "PUT", "/v1/kv/app/x", &app_secret, &json!("v")).await;
    assert_eq!(gone.status, 403, "{}", gone.text());
    assert_eq!(
        call(&dc2, "GET", &local_path, ROOT, &Value::Null).await.status,
        200
    );

    // With replication stopped (no replication token, set at run time), a token created in dc1
    // works in dc2 at once: dc2 resolves it at the primary.
    set_replication_token(&dc2, "").await;
    wait_for("replication to report the missing token", LIMIT, || async {
        status(&dc2).await["LastErrorMessage"]
            .as_str()
            .unwrap()
            .contains("replication token")
    })
    .await;
    let fresh = call(
        &dc1,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Description": "fresh", "Policies": [{"ID": policy_id}]}),
    )
    .await;
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    let fresh_secret = fresh.json()["SecretID"].as_str().unwrap().to_owned();
    let fresh_accessor = fresh.json()["AccessorID"].as_str().unwrap().to_owned();
    let used = call(&dc2, "PUT", "/v1/kv/app/fresh", &fresh_secret, &json!("v")).await;
    assert_eq!(used.status, 200, "{}", used.text());
    let still_denied = call(&dc2, "PUT", "/v1/kv/other", &fresh_secret, &json!("v")).await;
    assert_eq!(still_denied.status, 403, "{}", still_denied.text());
    let own = call(&dc2, "GET", "/v1/acl/token/self", &fresh_secret, &Value::Null).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["AccessorID"], fresh_accessor.as_str());
    let not_replicated = call(
        &dc2,
        "GET",
        &format!("/v1/acl/token/{fresh_accessor}"),
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(
        not_replicated.status,
        403,
        "the token has not replicated: {}",
        not_replicated.text()
    );
    let unknown = call(&dc2, "PUT", "/v1/kv/app/x", "no-such-secret", &json!("v")).await;
    assert_eq!(unknown.status, 403);
    assert_eq!(unknown.text(), "ACL not found");

    // A replication token without acl rights: the status carries the primary's refusal.
    set_replication_token(&dc2, &fresh_secret).await;
    wait_for("replication to report the refusal", LIMIT, || async {
        let message = status(&dc2).await["LastErrorMessage"]
            .as_str()
            .unwrap()
            .to_owned();
        message.contains("Permission denied")
    })
    .await;
    let refused = status(&dc2).await;
    assert_eq!(
        refused["Running"], true,
        "a failing replicator keeps running: {refused}"
    );
    assert_ne!(refused["LastError"], "0001-01-01T00:00:00Z");

    // Back to a good token: replication catches up by itself.
    set_replication_token(&dc2, ROOT).await;
    wait_for("the fresh token to replicate", LIMIT, || async {
        call(
            &dc2,
            "GET",
            &format!("/v1/acl/token/{fresh_accessor}"),
            ROOT,
            &Value::Null,
        )
        .await
        .status
            == 200
    })
    .await;

    dc2.shutdown().await;
    dc1.shutdown().await;
}

/// Whether every server in `servers` holds the policy `name` (read from each one's own state).
async fn replicated_on(servers: Vec<&NodeHandle>, name: &str) -> bool {
    for server in servers {
        let path = format!("/v1/acl/policy/name/{name}?stale");
        if call(server, "GET", &path, ROOT, &Value::Null).await.status != 200 {
            return false;
        }
    }
    true
}

/// consul#12295: replication belongs to the leader and must follow it. With three servers in dc2,
/// the leader replicates; once it is gone, the server that takes over replicates, and what dc1
/// writes afterwards still reaches dc2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_follows_the_leader_of_the_secondary() {
    let mut primary = acl_server("dc1");
    primary.acl.tokens.initial_management = Some(ROOT.into());
    let dc1 = start_leader(primary).await;
    // The leader installs the initial management token just after it is elected.
    wait_for("the initial management token in dc1", LIMIT, || async {
        call(&dc1, "GET", "/v1/acl/token/self", ROOT, &Value::Null)
            .await
            .status
            == 200
    })
    .await;
    let dc1_wan = dc1.serf_wan_addr().unwrap().to_string();
    let servers = common::three_server_dc_with(LIMIT, |config| {
        config.datacenter = "dc2".into();
        config.primary_datacenter = "dc1".into();
        config.acl.enabled = true;
        config.acl.default_policy = DefaultPolicy::Deny;
        config.acl.tokens.replication = Some(ROOT.into());
        common::fast_wan(config);
        config.retry_join_wan = vec![dc1_wan.clone()];
        config.retry_interval_wan = Duration::from_millis(200);
    })
    .await;

    let policy = |name: &str| json!({"Name": name, "Rules": "key_prefix \"app/\" { policy = \"read\" }"});
    let first = call(&dc1, "PUT", "/v1/acl/policy", ROOT, &policy("before")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    wait_for("the first policy in every dc2 server", LIMIT, || {
        replicated_on(servers.iter().collect(), "before")
    })
    .await;

    let [a, b, c] = servers;
    let (leader, followers) = if a.is_leader() {
        (a, [b, c])
    } else if b.is_leader() {
        (b, [a, c])
    } else {
        (c, [a, b])
    };
    leader.shutdown().await;
    wait_for("a new dc2 leader", LIMIT, || async {
        followers.iter().any(NodeHandle::is_leader)
    })
    .await;
    wait_for("replication running under the new leader", LIMIT, || async {
        let reply = call(&followers[0], "GET", "/v1/acl/replication", "", &Value::Null).await;
        reply.status == 200 && reply.json()["Running"] == true
    })
    .await;

    let second = call(&dc1, "PUT", "/v1/acl/policy", ROOT, &policy("after")).await;
    assert_eq!(second.status, 200, "{}", second.text());
    wait_for(
        "the policy written after the change of leader in dc2",
        LIMIT,
        || replicated_on(followers.iter().collect(), "after"),
    )
    .await;
    let status = status(&followers[1]).await;
    assert_eq!(status["LastErrorMessage"], "", "{status}");
}
