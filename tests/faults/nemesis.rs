//! The faults, one at a time: each is applied to the servers (or the links between them), held for
//! a seeded while, healed, and followed by a quiet period in which the cluster must elect a leader.

use std::fmt;
use std::time::Duration;

use rand::Rng as _;
use rand::rngs::SmallRng;
use tokio::runtime::Runtime;

use super::cluster::{Cluster, SERVERS};
use super::net::Net;
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
}

impl Fault {
    pub(crate) const ALL: [Fault; 8] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::KillAll,
        Fault::PauseLeader,
        Fault::PartitionLeader,
        Fault::PartitionFollower,
        Fault::OneWayLeader,
        Fault::PacketLoss,
    ];

    /// Whether it needs the private network namespace.
    pub(crate) fn network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader | Fault::PartitionFollower | Fault::OneWayLeader | Fault::PacketLoss
        )
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
}

/// How long the servers get to agree on a leader after a heal before the run goes on regardless
/// (the failover figures show it; a run never waits unboundedly).
pub(crate) const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

fn hold(rng: &mut SmallRng, low_ms: u64, high_ms: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(low_ms..=high_ms)));
}

/// Applies `fault`, holds it, heals it, then waits for a leader and a short quiet period.
pub(crate) fn inject(
    fault: Fault,
    cluster: &mut Cluster,
    net: Option<&Net>,
    runtime: &Runtime,
    shared: &Shared,
    rng: &mut SmallRng,
) -> Applied {
    let leader_before = runtime.block_on(cluster.wait_leader(RECOVERY_LIMIT));
    let leader = leader_before.unwrap_or_else(|| rng.random_range(0..SERVERS));
    let follower = (leader + rng.random_range(1..SERVERS)) % SERVERS;
    let net = || net.unwrap_or_else(|| panic!("{fault} needs the network namespace"));
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
    };
    let heal_ns = shared.now_ns();
    let _ = runtime.block_on(cluster.wait_leader(RECOVERY_LIMIT));
    hold(rng, 2000, 3000);
    Applied {
        fault,
        start_ns,
        heal_ns,
        target,
        leader_before,
    }
}
