//! The tokio runtime over real UDP and TCP on 127.0.0.1: join, failure detection, graceful leave,
//! user events, encryption and retry-join. Every wait is a condition with a deadline.

#![cfg(feature = "tokio-runtime")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tribune_gossip::{Config, Event, Gossip, GossipOptions, Keyring, MemberStatus, RuntimeError};

const DEADLINE: Duration = Duration::from_secs(15);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(name: &str, keyring: Option<Keyring>) -> (Gossip, UnboundedReceiver<Event>) {
    let mut opts = GossipOptions::new(name, loopback());
    opts.config = Config::local();
    opts.keyring = keyring;
    Gossip::start(opts).await.unwrap()
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
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

/// Waits for the first event matching `pick`, failing the test after [`DEADLINE`].
async fn wait_event(rx: &mut UnboundedReceiver<Event>, what: &str, pick: impl Fn(&Event) -> bool) -> Event {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(e) = rx.recv().await {
            if pick(&e) {
                return Some(e);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        _ => panic!("timed out waiting for event: {what}"),
    }
}

async fn status_of(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.status)
}

async fn live_count(g: &Gossip) -> usize {
    g.members()
        .await
        .unwrap()
        .iter()
        .filter(|m| m.status.is_live())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_detect_a_kill_and_see_a_leave() {
    let (a, mut a_events) = start("a", None).await;
    let (b, mut b_events) = start("b", None).await;
    let (c, _c_events) = start("c", None).await;
    assert_eq!(b.join(&[a.local_addr()]).await.unwrap(), 1);
    assert_eq!(c.join(&[a.local_addr()]).await.unwrap(), 1);
    wait_for("three live members everywhere", || async {
        live_count(&a).await == 3 && live_count(&b).await == 3 && live_count(&c).await == 3
    })
    .await;

    // A user event reaches the others once.
    a.send_user_event("deploy", b"v1").await.unwrap();
    wait_event(
        &mut a_events,
        "own user event",
        |e| matches!(e, Event::User(u) if u.name == "deploy"),
    )
    .await;
    let e = wait_event(&mut b_events, "user event at b", |e| matches!(e, Event::User(_))).await;
    assert!(matches!(e, Event::User(u) if u.name == "deploy" && u.payload == b"v1"));

    // Kill c without a leave: a and b declare it failed.
    c.shutdown().await;
    wait_event(
        &mut a_events,
        "c failed",
        |e| matches!(e, Event::Failed(m) if m.name == "c"),
    )
    .await;
    wait_for("b sees c failed", || async {
        status_of(&b, "c").await == Some(MemberStatus::Failed)
    })
    .await;

    // b leaves gracefully: a reports it as left, never failed.
    b.leave().await.unwrap();
    b.shutdown().await;
    let e = wait_event(
        &mut a_events,
        "b left or failed",
        |e| matches!(e, Event::Left(m) | Event::Failed(m) if m.name == "b"),
    )
    .await;
    assert!(
        matches!(e, Event::Left(_)),
        "a graceful leave was reported as {e:?}"
    );
    assert_eq!(status_of(&a, "b").await, Some(MemberStatus::Left));
    a.shutdown().await;
    assert!(matches!(a.members().await, Err(RuntimeError::Stopped)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_key_is_kept_out() {
    let key1 = [1u8; 32];
    let (a, _ae) = start("a", Some(Keyring::new(&key1).unwrap())).await;
    let (b, _be) = start("b", Some(Keyring::new(&key1).unwrap())).await;
    let (intruder, _ie) = start("x", Some(Keyring::new(&[2u8; 32]).unwrap())).await;
    let (plain, _pe) = start("p", None).await;

    assert_eq!(b.join(&[a.local_addr()]).await.unwrap(), 1);
    assert!(matches!(
        intruder.join(&[a.local_addr()]).await,
        Err(RuntimeError::JoinFailed { .. })
    ));
    assert!(matches!(
        plain.join(&[a.local_addr()]).await,
        Err(RuntimeError::JoinFailed { .. })
    ));
    wait_for("a and b see each other", || async {
        live_count(&a).await == 2 && live_count(&b).await == 2
    })
    .await;
    let stats = a.stats().await.unwrap();
    assert!(stats.undecryptable_dropped >= 1, "{stats:?}");
    assert!(stats.plaintext_dropped >= 1, "{stats:?}");
    let names: Vec<String> = a.members().await.unwrap().into_iter().map(|m| m.name).collect();
    assert!(
        !names.contains(&"x".to_string()) && !names.contains(&"p".to_string()),
        "{names:?}"
    );
    assert_eq!(live_count(&intruder).await, 1);

    // Rotation through the handle: install, use, and removing the primary is refused.
    let key2 = [3u8; 16];
    assert_eq!(a.install_key(&key2).await.unwrap().len(), 2);
    a.use_key(&key2).await.unwrap();
    assert!(matches!(
        a.remove_key(&key2).await,
        Err(RuntimeError::Keyring(tribune_gossip::KeyringError::RemovePrimary))
    ));
    a.remove_key(&key1).await.unwrap();
    assert!(matches!(
        plain.install_key(&key2).await,
        Err(RuntimeError::NoKeyring)
    ));
    for g in [a, b, intruder, plain] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn retry_join_gives_up_after_max_attempts_and_succeeds_when_a_member_appears() {
    // A port with nothing listening: bind then drop.
    let closed = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        l.local_addr().unwrap()
    };
    let (a, _ae) = start("a", None).await;
    let err = a
        .retry_join(&[closed], Duration::from_millis(10), 3)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::JoinFailed { attempts: 3 }), "{err}");

    // With no limit it keeps trying until a member appears at the address.
    let later = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        l.local_addr().unwrap()
    };
    let before = a.stats().await.unwrap().streams_sent;
    let unlimited = {
        let a = a.clone();
        tokio::spawn(async move { a.retry_join(&[later], Duration::from_millis(10), 0).await })
    };
    wait_for("a few failed attempts", || async {
        a.stats().await.unwrap().streams_sent >= before + 3
    })
    .await;
    assert!(!unlimited.is_finished());
    let mut opts = GossipOptions::new("late", later);
    opts.config = Config::local();
    let (late, _le) = Gossip::start(opts).await.unwrap();
    let joined = tokio::time::timeout(DEADLINE, unlimited)
        .await
        .expect("retry_join kept failing");
    assert_eq!(joined.unwrap().unwrap(), 1);
    late.shutdown().await;
    let (b, _be) = start("b", None).await;

    assert_eq!(
        a.retry_join(&[closed, b.local_addr()], Duration::from_millis(10), 3)
            .await
            .unwrap(),
        1
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_over_loopback_give_coordinates_a_loopback_sized_estimate() {
    let (a, _a_events) = start("a", None).await;
    let (b, _b_events) = start("b", None).await;
    assert_eq!(b.join(&[a.local_addr()]).await.unwrap(), 1);
    // Each pool probes the other every 100 ms (Config::local) and learns its coordinate.
    wait_for("a holds b's coordinate after a few probes", || async {
        let all = a.coordinates().await.unwrap();
        all.iter().any(|(n, _)| n == "b") && a.stats().await.unwrap().coordinate_updates >= 5
    })
    .await;
    let all = a.coordinates().await.unwrap();
    assert_eq!(all.first().map(|(n, _)| n.as_str()), Some("a"));
    let ours = &all[0].1;
    let theirs = &all.iter().find(|(n, _)| n == "b").unwrap().1;
    // Loopback RTTs are well under a millisecond (a loaded machine may stretch one to a few):
    // an RTT read in the wrong unit, or a step in the wrong direction, lands far above this bound.
    let estimate = ours.distance_to(theirs);
    assert!(estimate < Duration::from_millis(20), "estimate {estimate:?}");

    let mut bad = ours.clone();
    bad.height = f64::NAN;
    assert!(matches!(
        a.set_coordinate(bad).await,
        Err(RuntimeError::Pool(tribune_gossip::PoolError::Coordinate(_)))
    ));
    a.set_coordinate(theirs.clone()).await.unwrap();
    assert_eq!(a.coordinates().await.unwrap()[0].1, *theirs);

    // An application may report a member's coordinate too; unknown names and bad values are refused.
    let mut reported = ours.clone();
    reported.error = 1.25;
    // b's next ack replaces it, which may land between the set and the read: a few tries.
    let mut seen = false;
    for _ in 0..5 {
        a.set_member_coordinate("b", reported.clone()).await.unwrap();
        if a.coordinates()
            .await
            .unwrap()
            .iter()
            .any(|(n, c)| n == "b" && c.error == 1.25)
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "the reported coordinate was never read back");
    assert!(matches!(
        a.set_member_coordinate("nobody", reported).await,
        Err(RuntimeError::Pool(
            tribune_gossip::PoolError::UnknownMember { .. }
        ))
    ));
    let mut short = ours.clone();
    short.vec.pop();
    assert!(a.set_member_coordinate("b", short).await.is_err());
    a.shutdown().await;
    b.shutdown().await;
}
