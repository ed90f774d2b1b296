//! Servers find each other in the LAN gossip pool: `/v1/agent/members` lists them with Consul's
//! tags; a server that joins later is added to raft by the leader, one that leaves gracefully is
//! removed, a failed one is removed as far as a quorum allows, and `force-leave` turns a failed
//! member into a left one.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, pool_agent, wait_for};
use tribune::Node;

const FORMATION: Duration = Duration::from_secs(30);
/// Failure detection with Consul's LAN timings (1 s probes, Lifeguard suspicion) takes seconds.
const DETECTION: Duration = Duration::from_secs(90);

/// `(name, serf status, role tag)` of every member `client` lists.
async fn members(client: &Client) -> Vec<(String, u64, String)> {
    let reply = client.get("/v1/agent/members").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_owned(),
                m["Status"].as_u64().unwrap(),
                m["Tags"]["role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn status_of(client: &Client, name: &str) -> Option<u64> {
    members(client)
        .await
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, status, _)| status)
}

async fn peer_count(client: &Client) -> usize {
    client
        .get("/v1/status/peers")
        .await
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_meet_in_the_lan_pool_and_raft_follows_it() {
    let s1 = Node::start(pool_agent("s1", true, &[])).await.unwrap();
    let s2 = Node::start(pool_agent("s2", true, &[&s1])).await.unwrap();
    let s3 = Node::start(pool_agent("s3", true, &[&s1])).await.unwrap();
    let c1 = Client::of(&s1);
    wait_for("three voters", FORMATION, || async { peer_count(&c1).await == 3 }).await;
    let listed = members(&Client::of(&s3)).await;
    assert_eq!(
        listed,
        ["s1", "s2", "s3"]
            .map(|n| (n.to_owned(), 1, "consul".to_owned()))
            .to_vec()
    );
    let first = &c1.get("/v1/agent/members").await.json()[0];
    assert_eq!(first["Tags"]["dc"], "dc1");
    assert_eq!(first["Tags"]["port"], s1.rpc_addr().port().to_string());
    assert_eq!(first["Port"], s1.serf_lan_addr().unwrap().port());
    // These servers run no WAN pool (`ports.serf_wan` off): listing it says so.
    let wan = c1.get("/v1/agent/members?wan=1").await;
    assert_eq!(wan.status, 500);
    assert!(
        wan.text().contains("ports.serf_wan is disabled"),
        "{}",
        wan.text()
    );

    // A fourth server joins later (through s2, with PUT /v1/agent/join): the leader adds it.
    let mut late = pool_agent("s4", true, &[]);
    late.bootstrap_expect = 0;
    let s4 = Node::start(late).await.unwrap();
    let join = Client::of(&s4)
        .put(&format!("/v1/agent/join/{}", s2.serf_lan_addr().unwrap()), b"")
        .await;
    assert_eq!(join.status, 200, "{}", join.text());
    wait_for("s4 becomes a voter", FORMATION, || async {
        peer_count(&c1).await == 4
    })
    .await;

    // s4 leaves gracefully: everyone reports it left (status 3), never failed, and raft drops it.
    let leave = Client::of(&s4).put("/v1/agent/leave", b"").await;
    assert_eq!(leave.status, 200);
    s4.stopped().await;
    wait_for("s4 reported left", FORMATION, || async {
        status_of(&c1, "s4").await == Some(3)
    })
    .await;
    wait_for("s4 removed from raft", FORMATION, || async {
        peer_count(&c1).await == 3
    })
    .await;
    drop(s4);

    // A follower that stops abruptly is declared failed (status 4) but stays a raft voter: the
    // datacenter expects three servers and a failed one may come back (dead-server cleanup only
    // removes failed servers above bootstrap_expect, after a grace). force-leave removes it.
    let (victim, survivors) = if s3.is_leader() {
        (s2, [s1, s3])
    } else {
        (s3, [s1, s2])
    };
    drop(victim);
    let [a, b] = survivors;
    let ca = Client::of(&a);
    wait_for("a failed member", DETECTION, || async {
        members(&ca).await.iter().any(|(_, status, _)| *status == 4)
    })
    .await;
    assert_eq!(
        peer_count(&ca).await,
        3,
        "a failed server of bootstrap_expect=3 left raft"
    );
    let failed = members(&ca)
        .await
        .into_iter()
        .find(|(_, status, _)| *status == 4)
        .map(|(name, _, _)| name)
        .unwrap();
    assert_eq!(
        Client::of(&a)
            .put("/v1/agent/force-leave/nobody", b"")
            .await
            .status,
        500,
        "Consul's answer for a name no pool knows"
    );
    assert_eq!(
        ca.put(&format!("/v1/agent/force-leave/{failed}"), b"")
            .await
            .status,
        200
    );
    let cb = Client::of(&b);
    wait_for("force-left everywhere", FORMATION, || async {
        status_of(&cb, &failed).await == Some(3)
    })
    .await;
    wait_for("the force-left server removed from raft", FORMATION, || async {
        peer_count(&ca).await == 2
    })
    .await;
    // The two survivors still commit writes.
    assert_eq!(ca.put("/v1/kv/after", b"x").await.text(), "true");
    a.shutdown().await;
    b.shutdown().await;
}

/// Bound to every address, a server announces its advertise address, in gossip and in raft, and
/// never 0.0.0.0 (which other servers would take for themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_bound_to_every_address_advertises_its_advertise_addr() {
    let mut config = pool_agent("s1", true, &[]);
    config.bootstrap_expect = 1;
    config.bind_addr = std::net::IpAddr::from([0, 0, 0, 0]);
    config.advertise_addr = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let s1 = Node::start(config).await.unwrap();
    let c1 = Client::of(&s1);
    wait_for("a leader", FORMATION, || async {
        c1.get("/v1/status/leader").await.text().contains("127.0.0.1:")
    })
    .await;
    let raft = c1.get("/v1/operator/raft/configuration").await.json();
    assert_eq!(
        raft["Servers"][0]["Address"],
        format!("127.0.0.1:{}", s1.rpc_addr().port()),
        "{raft}"
    );
    let member = &c1.get("/v1/agent/members").await.json()[0];
    assert_eq!(member["Addr"], "127.0.0.1", "{member}");
    assert_eq!(member["Port"], s1.serf_lan_addr().unwrap().port());
    s1.shutdown().await;
}

/// Two servers whose raft ids collide (here: data directories carrying the same `raft-id`) do not
/// form a cluster that silently is not one: joining them is refused with Consul's message, naming
/// both.
#[cfg(feature = "rocksdb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_the_same_raft_id_are_refused_by_name() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        std::fs::write(dir.path().join("raft-id"), "4243").unwrap();
    }
    let mut a = pool_agent("alpha", true, &[]);
    a.bootstrap_expect = 2;
    a.data_dir = Some(dirs[0].path().to_owned());
    let a = Node::start(a).await.unwrap();
    let mut b = pool_agent("beta", true, &[]);
    b.bootstrap_expect = 2;
    b.data_dir = Some(dirs[1].path().to_owned());
    let b = Node::start(b).await.unwrap();
    assert_eq!(a.node_id(), b.node_id());
    let join = Client::of(&b)
        .put(&format!("/v1/agent/join/{}", a.serf_lan_addr().unwrap()), b"")
        .await;
    assert_eq!(join.status, 500, "{}", join.text());
    let text = join.text();
    assert!(
        text.contains("conflicting node ID '4243'") && text.contains("'alpha'"),
        "{text}"
    );
    a.shutdown().await;
    b.shutdown().await;
}
