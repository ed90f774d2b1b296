//! Consul compatibility that real applications depend on: Go's duration syntax in query strings and
//! bodies (Patroni's `wait=1.8982439041137695s`), Consul's status and wording for a session TTL out of
//! range, and the fields of `/v1/agent/self` that clients read.

mod common;

use std::time::{Duration, Instant};

use common::{Client, dev_server, pool_agent, three_server_dc, wait_for};
use tribune::Node;

#[tokio::test]
async fn a_blocking_read_takes_a_wait_with_many_decimals() {
    let node = dev_server().await;
    let http = Client::of(&node);
    assert_eq!(http.put("/v1/kv/patroni/leader", b"pg-0").await.text(), "true");
    let index = http.get("/v1/kv/patroni/leader").await.index();

    let started = Instant::now();
    let reply = http
        .get(&format!(
            "/v1/kv/patroni/leader?index={index}&wait=1.8982439041137695s"
        ))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.index(), index, "nothing changed, so the index is the same");
    // 1.898 s plus up to 1/16 of it as jitter; well under a second over in any case.
    assert!(
        took >= Duration::from_millis(1890) && took < Duration::from_secs(3),
        "the read waited {took:?}"
    );

    // Other forms Go accepts: a combined one, a leading `+`, microseconds with the micro sign.
    for wait in ["0h0m0.2s", "%2B150ms", "200000%C2%B5s", ".1s"] {
        let reply = http
            .get(&format!("/v1/kv/patroni/leader?index={index}&wait={wait}"))
            .await;
        assert_eq!(reply.status, 200, "wait={wait}: {}", reply.text());
    }
    // What Go refuses stays a 400 that names the text.
    for wait in ["1d", "1.5", "-1s", "soon"] {
        let reply = http
            .get(&format!("/v1/kv/patroni/leader?index={index}&wait={wait}"))
            .await;
        assert_eq!(reply.status, 400, "wait={wait}");
        assert!(reply.text().starts_with("Invalid wait time"), "{}", reply.text());
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_session_ttl_out_of_range_is_consuls_500() {
    let node = dev_server().await;
    let http = Client::of(&node);
    for (ttl, shown) in [
        ("5s", "5s"),
        ("9.999s", "9.999s"),
        ("24h0m0.001s", "24h0m0.001s"),
        ("25h", "25h0m0s"),
    ] {
        let reply = http
            .put("/v1/session/create", format!(r#"{{"TTL":"{ttl}"}}"#).as_bytes())
            .await;
        assert_eq!(reply.status, 500, "TTL {ttl}: {}", reply.text());
        assert_eq!(
            reply.text(),
            format!("Invalid Session TTL '{shown}', must be between [10s=24h0m0s]")
        );
    }
    let reply = http.put("/v1/session/create", br#"{"TTL":"soon"}"#).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.text().starts_with("Session TTL 'soon' invalid"),
        "{}",
        reply.text()
    );

    // The edges and Go's decimal forms are accepted, and so is a fractional LockDelay.
    for ttl in ["10s", "24h", "15.5s", "0.5m", "1h30m"] {
        let reply = http
            .put(
                "/v1/session/create",
                format!(r#"{{"TTL":"{ttl}","LockDelay":"1.5s"}}"#).as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 200, "TTL {ttl}: {}", reply.text());
        let id = reply.json()["ID"].as_str().unwrap().to_owned();
        let info = http.get(&format!("/v1/session/info/{id}")).await.json();
        assert_eq!(info[0]["LockDelay"], 1_500_000_000u64, "TTL {ttl}");
    }
    let reply = http.put("/v1/session/create", br#"{"LockDelay":"1.5 s"}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    node.shutdown().await;
}

/// The `Stats` values clients read are all strings, as Consul sends them.
fn assert_strings(stats: &serde_json::Value, section: &str, keys: &[&str]) {
    for key in keys {
        assert!(
            stats[section][key].is_string(),
            "Stats.{section}.{key} is {:?}",
            stats[section][key]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_self_names_the_leader_on_every_server() {
    let nodes = three_server_dc(Duration::from_secs(20)).await;
    let leader = nodes.iter().find(|n| n.is_leader()).unwrap();
    let leader_addr = leader.rpc_addr().to_string();
    let (index, follower) = nodes.iter().enumerate().find(|(_, n)| !n.is_leader()).unwrap();
    let name = ["s1", "s2", "s3"][index];

    let me = Client::of(follower).get("/v1/agent/self").await.json();
    let stats = &me["Stats"];
    assert_eq!(stats["consul"]["leader_addr"], leader_addr.as_str());
    assert_eq!(stats["consul"]["server"], "true");
    assert_eq!(stats["consul"]["leader"], "false");
    assert_eq!(stats["consul"]["bootstrap"], "false");
    assert_eq!(stats["consul"]["known_datacenters"], "1");
    assert_eq!(stats["raft"]["state"], "Follower");
    assert_eq!(stats["raft"]["num_peers"], "2");
    assert_ne!(stats["raft"]["term"], "0");
    assert_ne!(stats["raft"]["last_contact"], "never");
    assert_strings(
        stats,
        "raft",
        &["commit_index", "applied_index", "last_log_index", "last_contact"],
    );
    assert_strings(
        stats,
        "agent",
        &["check_monitors", "check_ttls", "checks", "services"],
    );
    assert_strings(
        stats,
        "runtime",
        &["arch", "os", "version", "cpu_count", "goroutines"],
    );
    assert_eq!(stats["serf_lan"]["members"], "3");
    assert_eq!(stats["serf_lan"]["failed"], "0");
    assert_strings(stats, "serf_lan", &["left", "health_score"]);
    let config = &me["Config"];
    assert_eq!(config["NodeName"], name);
    assert_eq!(config["Datacenter"], "dc1");
    assert_eq!(config["PrimaryDatacenter"], "dc1");
    assert_eq!(config["Server"], true);
    assert!(config["NodeID"].is_string() && config["Revision"].is_string() && config["Version"].is_string());
    assert_eq!(me["Member"]["Name"], name);
    assert_eq!(
        me["Member"]["Port"].as_u64(),
        follower.serf_lan_addr().map(|a| u64::from(a.port()))
    );
    assert!(me["Meta"].is_object());

    let on_leader = Client::of(leader).get("/v1/agent/self").await.json();
    assert_eq!(on_leader["Stats"]["consul"]["leader_addr"], leader_addr.as_str());
    assert_eq!(on_leader["Stats"]["consul"]["leader"], "true");
    assert_eq!(on_leader["Stats"]["raft"]["state"], "Leader");
    assert_eq!(on_leader["Stats"]["raft"]["last_contact"], "0");

    // A client agent answers with the parts that apply to it.
    let c = Node::start(pool_agent("c1", false, &[&nodes[0]])).await.unwrap();
    let client = Client::of(&c);
    wait_for(
        "the client to see the three servers",
        Duration::from_secs(20),
        || async { client.get("/v1/agent/self").await.json()["Stats"]["consul"]["known_servers"] == "3" },
    )
    .await;
    let me = client.get("/v1/agent/self").await.json();
    assert_eq!(me["Stats"]["consul"]["server"], "false");
    assert_eq!(me["Config"]["Server"], false);
    assert_strings(&me["Stats"], "agent", &["checks", "services"]);
    assert_strings(&me["Stats"], "runtime", &["arch", "os", "goroutines"]);
    assert_strings(
        &me["Stats"],
        "serf_lan",
        &["members", "failed", "left", "health_score"],
    );
    c.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}
