//! Two datacenters in one process under emulated WAN conditions (tribune-netem's in-process
//! layer under the gossip pools and the server RPC connections): 25 ms one way between them and
//! nothing inside. A `?dc=` read pays the round trip and the WAN coordinates measure it; a
//! datacenter cut off is reported failed and its calls fail fast with Consul's error; once the
//! link heals it is routed to again by itself.
//!
//! The figures of BENCHMARKS.md come from the ignored test at the end:
//! `cargo test -p tribune --test t25_wan_conditions -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, wait_for};
use tribune::NodeHandle;
use tribune_gossip::Coordinate;
use tribune_netem::link::Network;

const LIMIT: Duration = Duration::from_secs(30);
/// One way between the datacenters: a 50 ms round trip.
const ONE_WAY: Duration = Duration::from_millis(25);
const RTT: Duration = Duration::from_millis(50);

/// Three servers in dc1 and one in dc2, 25 ms apart (see [`common::wan::two_datacenters`]), each
/// seeing every server alive in its WAN member list.
async fn two_datacenters(network: &Network) -> ([NodeHandle; 3], NodeHandle) {
    let (dc1, d1) = common::wan::two_datacenters(network, ONE_WAY).await;
    for node in dc1.iter().chain([&d1]) {
        wait_for("every server alive in every WAN member list", LIMIT, || async {
            wan_status(node, "d1.dc2").await == Some(1) && wan_status(node, "s1.dc1").await == Some(1)
        })
        .await;
    }
    (dc1, d1)
}

/// The `Status` of WAN member `name` as `node` sees it (1 alive, 4 failed).
async fn wan_status(node: &NodeHandle, name: &str) -> Option<u64> {
    let reply = Client::of(node).get("/v1/agent/members?wan=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == name)
        .and_then(|m| m["Status"].as_u64())
}

/// The estimated round trip between the two datacenters' servers from `node`'s
/// `/v1/coordinate/datacenters`: the median over every pair of a dc1 and a dc2 server.
async fn estimated_wan_rtt(node: &NodeHandle) -> Option<Duration> {
    let maps = Client::of(node).get("/v1/coordinate/datacenters").await.json();
    let coordinates = |dc: &str| -> Vec<Coordinate> {
        maps.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Datacenter"] == dc)
            .flat_map(|m| m["Coordinates"].as_array().unwrap().clone())
            .map(|c| serde_json::from_value(c["Coord"].clone()).unwrap())
            .collect()
    };
    let (near, far) = (coordinates("dc1"), coordinates("dc2"));
    let mut distances: Vec<Duration> = near
        .iter()
        .flat_map(|a| far.iter().map(move |b| a.distance_to(b)))
        .collect();
    distances.sort();
    distances.get(distances.len() / 2).copied()
}

/// How long each of `n` GETs of `path` takes, sorted; each must answer 200.
async fn timed_reads(client: Client, path: &str, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = client.get(path).await;
        took.push(started.elapsed());
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    took.sort();
    took
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cut_and_healed_wan_link() {
    let network = Network::new(25);
    let (dc1, d1) = two_datacenters(&network).await;
    let leader = dc1.iter().find(|n| n.is_leader()).unwrap();
    let (c1, c2) = (Client::of(leader), Client::of(&d1));
    assert_eq!(c2.put("/v1/kv/where", b"dc2").await.text(), "true");
    assert_eq!(c1.put("/v1/kv/where", b"dc1").await.text(), "true");

    // (a) A forwarded read pays the round trip; a local one does not. Medians of a few reads
    // keep a scheduling hiccup on a loaded machine from deciding the outcome.
    let remote = timed_reads(c1, "/v1/kv/where?dc=dc2&raw", 9).await;
    let local = timed_reads(c1, "/v1/kv/where?raw", 9).await;
    assert!(
        remote[0] >= RTT,
        "a ?dc=dc2 read took {:?}, under the RTT",
        remote[0]
    );
    let (remote_p50, local_p50) = (percentile(&remote, 50), percentile(&local, 50));
    assert!(
        local_p50 < RTT / 2 && local_p50 * 2 < remote_p50,
        "local reads {local:?} not far below remote ones {remote:?}"
    );
    // The WAN coordinates see the same round trip (loosely: Vivaldi fits an estimate).
    wait_for("a WAN RTT estimate near 50 ms", LIMIT, || async {
        estimated_wan_rtt(leader)
            .await
            .is_some_and(|rtt| rtt >= RTT * 6 / 10 && rtt <= RTT * 2)
    })
    .await;

    // (b) dc2 cut off: its server is reported failed, and calls to it fail fast with the error.
    network.cut("dc1", "dc2");
    wait_for("dc2's server failed in dc1's WAN view", LIMIT, || async {
        wan_status(leader, "d1.dc2").await == Some(4)
    })
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let down = c1.get("/v1/kv/where?dc=dc2").await;
        let took = started.elapsed();
        assert_eq!(
            (down.status, down.text()),
            (500, "Remote DC has no server currently reachable".to_owned())
        );
        assert!(took < Duration::from_secs(2), "failing took {took:?}");
    }

    // (c) Healed: dc2 comes back alive and routed to, with nothing restarted or re-joined.
    network.heal("dc1", "dc2");
    wait_for(
        "dc2's server alive again in dc1's WAN view",
        LIMIT * 2,
        || async { wan_status(leader, "d1.dc2").await == Some(1) },
    )
    .await;
    wait_for("?dc=dc2 reads served again", LIMIT, || async {
        c1.get("/v1/kv/where?dc=dc2&raw").await.body == b"dc2"
    })
    .await;

    d1.shutdown().await;
    for node in dc1 {
        node.shutdown().await;
    }
}

/// BENCHMARKS.md's cross-datacenter read overhead over an emulated 50 ms RTT: p50 and p99 of
/// `?dc=dc2` reads from dc1's leader minus the RTT, next to local reads on the same server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for BENCHMARKS.md, not a check"]
async fn cross_datacenter_read_overhead_figures() {
    let network = Network::new(50);
    let (dc1, d1) = two_datacenters(&network).await;
    let leader = dc1.iter().find(|n| n.is_leader()).unwrap();
    let c1 = Client::of(leader);
    assert_eq!(Client::of(&d1).put("/v1/kv/where", b"dc2").await.text(), "true");
    assert_eq!(c1.put("/v1/kv/where", b"dc1").await.text(), "true");
    let n = 500;
    // Warm both paths (connections, routing) before measuring.
    timed_reads(c1, "/v1/kv/where?dc=dc2&raw", 10).await;
    let remote = timed_reads(c1, "/v1/kv/where?dc=dc2&raw", n).await;
    let local = timed_reads(c1, "/v1/kv/where?raw", n).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let over = |d: Duration| ms(d) - ms(RTT);
    println!("{n} sequential reads each, emulated RTT {} ms", ms(RTT));
    println!(
        "?dc=dc2 read:  p50 {:.2} ms  p99 {:.2} ms  (over the RTT: p50 {:.2} ms, p99 {:.2} ms)",
        ms(percentile(&remote, 50)),
        ms(percentile(&remote, 99)),
        over(percentile(&remote, 50)),
        over(percentile(&remote, 99)),
    );
    println!(
        "local read:    p50 {:.2} ms  p99 {:.2} ms",
        ms(percentile(&local, 50)),
        ms(percentile(&local, 99)),
    );
    d1.shutdown().await;
    for node in dc1 {
        node.shutdown().await;
    }
}
