//! The tokio runtime under tribune-netem's emulated link conditions, on 127.0.0.1: a delay shows
//! in the members' network coordinates, a cut link fails the member behind it, and after the heal
//! the reconnect loop brings it back with nothing re-joined.

#![cfg(feature = "tokio-runtime")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tribune_gossip::{Config, Gossip, GossipOptions, MemberStatus};
use tribune_netem::link::{Conditions, Network};

const DEADLINE: Duration = Duration::from_secs(20);

async fn start(name: &str, network: &Network, group: &str) -> Gossip {
    let mut opts = GossipOptions::new(name, SocketAddr::from(([127, 0, 0, 1], 0)));
    opts.config = Config::local();
    // A probe must outlive the emulated round trip, or a slow link looks like a dead one.
    opts.config.probe_interval = Duration::from_millis(300);
    opts.config.probe_timeout = Duration::from_millis(150);
    opts.network = Some(network.clone());
    let (gossip, mut events) = Gossip::start(opts).await.unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    network.assign(gossip.local_addr(), group);
    gossip
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let result = tokio::time::timeout(DEADLINE, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(result.is_ok(), "timed out waiting for: {what}");
}

async fn status_of(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

/// The coordinate distance from `g` to member `name`.
async fn estimate(g: &Gossip, name: &str) -> Option<Duration> {
    let all = g.coordinates().await.unwrap();
    let own = &all.first()?.1;
    let other = &all.iter().find(|(n, _)| n == name)?.1;
    Some(own.distance_to(other))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_is_measured_a_cut_one_fails_and_a_healed_one_comes_back() {
    let network = Network::new(3);
    network
        .set_between("near", "far", Conditions::delay(Duration::from_millis(30)))
        .unwrap();
    let a = start("a", &network, "near").await;
    let b = start("b", &network, "far").await;
    a.join(&[b.local_addr()]).await.unwrap();
    wait_for("b alive at a", || async {
        status_of(&a, "b").await == Some(MemberStatus::Alive)
    })
    .await;
    // 60 ms round trips, no false failure, and the coordinates come to roughly that.
    wait_for("a's estimate of b near 60 ms", || async {
        estimate(&a, "b")
            .await
            .is_some_and(|d| d >= Duration::from_millis(40) && d <= Duration::from_millis(120))
    })
    .await;
    assert_eq!(status_of(&a, "b").await, Some(MemberStatus::Alive));

    network.cut("near", "far");
    wait_for("b failed at a", || async {
        status_of(&a, "b").await == Some(MemberStatus::Failed)
    })
    .await;
    wait_for("a failed at b", || async {
        status_of(&b, "a").await == Some(MemberStatus::Failed)
    })
    .await;

    network.heal("near", "far");
    wait_for("b alive again at a, by reconnect", || async {
        status_of(&a, "b").await == Some(MemberStatus::Alive)
    })
    .await;
    wait_for("a alive again at b", || async {
        status_of(&b, "a").await == Some(MemberStatus::Alive)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}
