//! The faults, one at a time: each is applied to the servers (or the links between them), held for
//! a seeded while, healed, and followed by a quiet period in which the cluster must elect a leader.

use std::fmt;
use std::time::Duration;

use rand::Rng as _;
use rand::rngs::SmallRng;
use tokio::runtime::Runtime;

use super::acl;
use super::cluster::{Cluster, SERVERS};
use super::net::Net;
use super::wan::{self, Wan};
use super::workload::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// SIGKILL the leader, restart it from disk 1-3 s later.
    KillLeader,
    /// SIGKILL a follower, restart it 1-3 s later.
    KillFollower,
    /// SIGKILL every server, restart all from disk 1-2 s later.
    KillAll,
    /// SIGSTOP the leader for 2-6 s, then SIGCONT.
    PauseLeader,
    /// Cut the leader off from both followers (minority: the leader; majority: the followers).
    PartitionLeader,
    /// Cut one follower off from the other two.
    PartitionFollower,
    /// Drop everything the leader sends to the others; what they send still arrives.
    OneWayLeader,
    /// Drop 30 % of the packets on every link between servers.
    PacketLoss,
    /// Cut dc2 off from dc1 (iptables), until dc1 declares it failed and a little more.
    WanCut,
    /// 25 ms one-way delay on everything dc1 sends dc2 and its answers (the proxy).
    WanDelay,
    /// Drop 20 % of the packets between the datacenters (iptables).
    WanLoss,
}

impl Fault {
    pub(crate) const ALL: [Fault; 11] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillAll,
        Fault::PauseLeader,
        Fault::PartitionLeader,
        Fault::PartitionFollower,
        Fault::OneWayLeader,
        Fault::PacketLoss,
        Fault::WanCut,
        Fault::WanDelay,
        Fault::WanLoss,
    ];

    /// The faults between datacenters (a run with one starts dc2).
    pub(crate) const WAN: [Fault; 3] = [Fault::WanCut, Fault::WanDelay, Fault::WanLoss];

    pub(crate) fn wan(self) -> bool {
        Fault::WAN.contains(&self)
    }

    /// Whether it needs the private network namespace.
    pub(crate) fn network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader | Fault::PartitionFollower | Fault::OneWayLeader | Fault::PacketLoss
        ) || self.wan()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::KillLeader => "kill -9 leader",
            Fault::KillFollower => "kill -9 follower",
            Fault::KillAll => "kill -9 all",
            Fault::PauseLeader => "SIGSTOP leader",
            Fault::PartitionLeader => "partition: isolate leader",
            Fault::PartitionFollower => "partition: isolate follower",
            Fault::OneWayLeader => "one-way: leader's packets dropped",
            Fault::PacketLoss => "30% packet loss",
            Fault::WanCut => "WAN: dc2 cut off",
            Fault::WanDelay => "WAN: 25 ms each way (proxy)",
            Fault::WanLoss => "WAN: 20% packet loss",
        })
    }
}

/// A fault as it happened, in the history's clock.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) fault: Fault,
    pub(crate) start_ns: u64,
    pub(crate) heal_ns: u64,
    /// The server it hit (`None`: all of them, or the links).
    pub(crate) target: Option<usize>,
    /// The leader it found before, if the servers agreed on one.
    pub(crate) leader_before: Option<usize>,
    /// WAN faults: ms from the cut until every dc1 server listed dc2 as failed.
    pub(crate) wan_declared_failed_ms: Option<u64>,
    /// WAN faults: ms from the heal until every dc1 server routed `?dc=dc2` again.
    pub(crate) wan_routable_ms: Option<u64>,
    /// WAN delay: the fastest and the median forwarded read under the delay, in ms.
    pub(crate) wan_read_ms: Option<(u64, u64)>,
    /// ACL runs, WAN cut: ms from the cut until a `?dc=dc1` call through dc2 failed fast with
    /// Consul's error (dc2 knows dc1 cannot be reached).
    pub(crate) dc2_fails_fast_ms: Option<u64>,
    /// ACL runs, WAN faults: ms from the heal until dc2 carried a call to dc1 again.
    pub(crate) dc2_reaches_primary_ms: Option<u64>,
    /// When everything the nemesis waits for after the heal (routing both ways, a leader) was
    /// back, before the quiet period.
    pub(crate) settled_ns: u64,
    /// What the checks beyond the histories found wrong (WAN routing).
    pub(crate) problems: Vec<String>,
}

/// How long the servers get to agree on a leader after a heal before the run goes on regardless
/// (the failover figures show it; a run never waits unboundedly).
pub(crate) const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

fn hold(rng: &mut SmallRng, low_ms: u64, high_ms: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(low_ms..=high_ms)));
}

/// Applies `fault`, holds it, heals it, then waits for a leader and a short quiet period. In a
/// federated ACL run (`acl`) a WAN cut also waits for dc2 to see dc1 failed and lasts until the
/// down policy has been in force for a while, a WAN heal waits for dc2 to reach dc1 again, and
/// the quiet period outlasts `acl.token_ttl`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn inject(
    fault: Fault,
    cluster: &mut Cluster,
    net: Option<&Net>,
    wan: Option<&Wan>,
    runtime: &Runtime,
    shared: &Shared,
    rng: &mut SmallRng,
    acl: bool,
) -> Applied {
    let leader_before = runtime.block_on(cluster.wait_leader(RECOVERY_LIMIT));
    let leader = leader_before.unwrap_or_else(|| rng.random_range(0..SERVERS));
    let follower = (leader + rng.random_range(1..SERVERS)) % SERVERS;
    let net = || net.unwrap_or_else(|| panic!("{fault} needs the network namespace"));
    let wan = || wan.unwrap_or_else(|| panic!("{fault} needs the second datacenter"));
    let mut wan_declared_failed_ms = None;
    let mut wan_routable_ms = None;
    let mut wan_read_ms = None;
    let mut dc2_fails_fast_ms = None;
    let mut dc2_reaches_primary_ms = None;
    let mut problems = Vec::new();
    // The fault starts once it is in place (a kill has been delivered, the rules installed); the
    // probes that prove a cut run after that moment, inside the hold.
    let start_ns;
    let target = match fault {
        Fault::KillLeader | Fault::KillFollower => {
            let victim = if fault == Fault::KillLeader {
                leader
            } else {
                follower
            };
            cluster.kill(victim);
            start_ns = shared.now_ns();
            hold(rng, 1000, 3000);
            cluster.restart(victim);
            Some(victim)
        }
        Fault::KillAll => {
            for i in 0..SERVERS {
                cluster.kill(i);
            }
            start_ns = shared.now_ns();
            hold(rng, 1000, 2000);
            for i in 0..SERVERS {
                cluster.restart(i);
            }
            None
        }
        Fault::PauseLeader => {
            cluster.pause(leader);
            start_ns = shared.now_ns();
            hold(rng, 2000, 6000);
            cluster.resume(leader);
            Some(leader)
        }
        Fault::PartitionLeader | Fault::PartitionFollower => {
            let victim = if fault == Fault::PartitionLeader {
                leader
            } else {
                follower
            };
            net().partition(&[victim]);
            start_ns = shared.now_ns();
            net().verify_partition(&[victim]);
            hold(rng, 4000, 6000);
            net().heal();
            Some(victim)
        }
        Fault::OneWayLeader => {
            net().one_way(leader);
            start_ns = shared.now_ns();
            net().verify_one_way(leader);
            hold(rng, 4000, 6000);
            net().heal();
            Some(leader)
        }
        Fault::PacketLoss => {
            net().loss(0.3);
            start_ns = shared.now_ns();
            hold(rng, 4000, 6000);
            net().heal();
            None
        }
        Fault::WanCut => {
            net().wan_cut();
            start_ns = shared.now_ns();
            net().verify_wan_cut();
            wan_declared_failed_ms = runtime.block_on(wan().wait_declared_failed(wan::DETECT_LIMIT));
            match wan_declared_failed_ms {
                Some(_) => {
                    let (found, _) = runtime.block_on(wan().check_fail_fast());
                    problems.extend(found);
                }
                None => problems.push(format!(
                    "dc2, cut off, was not listed as failed by every dc1 server within {:?}",
                    wan::DETECT_LIMIT
                )),
            }
            if acl {
                let dc2 = wan().dc2_http;
                // Counted from the cut, not from this wait's start.
                dc2_fails_fast_ms = runtime
                    .block_on(acl::wait_dc2_fails_fast(dc2, wan::DETECT_LIMIT))
                    .map(|_| shared.now_ns().saturating_sub(start_ns) / 1_000_000);
                if dc2_fails_fast_ms.is_none() {
                    problems.push(format!(
                        "dc2, cut off, did not fail a ?dc=dc1 call fast within {:?}",
                        wan::DETECT_LIMIT
                    ));
                }
            }
            hold(rng, 1000, 3000);
            if acl {
                // The down policy applies from token_ttl after the cut, and answers must be
                // prompt once dc2 knows dc1 is gone; the checker needs both for a while.
                let knows = Duration::from_millis(dc2_fails_fast_ms.unwrap_or(0));
                let down_from = (acl::TOKEN_TTL + acl::MARGIN).max(knows);
                let until_ns =
                    start_ns + u64::try_from((down_from + acl::CUT_HOLD).as_nanos()).unwrap_or(u64::MAX);
                let now_ns = shared.now_ns();
                std::thread::sleep(Duration::from_nanos(until_ns.saturating_sub(now_ns)));
            }
            net().heal();
            None
        }
        Fault::WanDelay => {
            wan().set_delay(wan::WAN_DELAY);
            start_ns = shared.now_ns();
            // The proxy is in the path only if a forwarded call pays the round trip: two one-way
            // delays at least, on a reused connection.
            let times = runtime.block_on(wan().forwarded_read_times(7));
            let round_trip = u64::try_from((wan::WAN_DELAY * 2).as_millis()).unwrap_or(u64::MAX);
            match (times.first(), times.get(times.len() / 2)) {
                (Some(&fastest), Some(&median)) => {
                    wan_read_ms = Some((fastest, median));
                    if fastest < round_trip {
                        problems.push(format!(
                            "a ?dc=dc2 read took {fastest} ms under a {round_trip} ms WAN round trip: the proxy is not in the path"
                        ));
                    }
                }
                _ => problems.push("no ?dc=dc2 read succeeded under the WAN delay".to_owned()),
            }
            hold(rng, 3000, 5000);
            wan().set_delay(Duration::ZERO);
            None
        }
        Fault::WanLoss => {
            net().wan_loss(0.2);
            start_ns = shared.now_ns();
            hold(rng, 4000, 6000);
            net().heal();
            None
        }
    };
    let heal_ns = shared.now_ns();
    if fault.wan() {
        wan_routable_ms = runtime.block_on(wan().wait_routable(wan::REJOIN_LIMIT));
        if wan_routable_ms.is_none() {
            problems.push(format!(
                "after the heal of '{fault}', dc2 was not routable from every dc1 server within {:?}",
                wan::REJOIN_LIMIT
            ));
        }
        if acl {
            dc2_reaches_primary_ms = runtime
                .block_on(acl::wait_dc2_reaches_primary(wan().dc2_http, wan::REJOIN_LIMIT))
                .map(|_| shared.now_ns().saturating_sub(heal_ns) / 1_000_000);
            if dc2_reaches_primary_ms.is_none() {
                problems.push(format!(
                    "after the heal of '{fault}', dc2 did not carry a call to dc1 within {:?}",
                    wan::REJOIN_LIMIT
                ));
            }
        }
    }
    let _ = runtime.block_on(cluster.wait_leader(RECOVERY_LIMIT));
    let settled_ns = shared.now_ns();
    let quiet_started = std::time::Instant::now();
    hold(rng, 2000, 3000);
    if acl {
        std::thread::sleep(acl::QUIET.saturating_sub(quiet_started.elapsed()));
    }
    Applied {
        fault,
        start_ns,
        heal_ns,
        target,
        leader_before,
        wan_declared_failed_ms,
        wan_routable_ms,
        wan_read_ms,
        dc2_fails_fast_ms,
        dc2_reaches_primary_ms,
        settled_ns,
        problems,
    }
}
