//! The leader's lease, measured by this crate's own clock rather than by openraft's metrics.
//!
//! A default-mode read is served by the leader from its local state without asking a quorum, which
//! is safe only while no other server can have become leader. Followers refuse to vote (and, with
//! pre-vote, to campaign) until an election timeout has passed since they last heard from the
//! leader, so if a majority acknowledged a heartbeat *sent* at `s`, no other leader can exist
//! before `s + election_timeout`. The lease is therefore anchored at send times, which the network
//! layer records as answers come back: a leader that was paused (SIGSTOP) or cut off finds its
//! lease expired when it looks at the clock at read time, whatever its metrics said earlier.
//!
//! The same record drives check-quorum: a leader whose lease has lapsed for a whole election
//! timeout steps down (see [`LeaseClock::request_step_down`]).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::types::NodeId;

/// openraft's vote: a term, the node voted for, and whether a quorum granted it.
pub(crate) type Vote = openraft::Vote<NodeId>;

/// The node id a stepping-down leader pledges its current term's vote to. No server has it (raft
/// ids are derived so that this value is never produced), so the pledge elects nobody; it only
/// ranks above the leader's own vote in the same term, which is what makes openraft demote it.
pub(crate) const STEP_DOWN_NODE_ID: NodeId = NodeId::MAX;

#[derive(Debug, Clone, Copy)]
struct Ack {
    vote: Vote,
    sent_at: Instant,
}

/// Acknowledgements of this server's leadership, by voter, with the time each acknowledged
/// request was sent.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock {
    acks: Mutex<HashMap<NodeId, Ack>>,
    /// The first moment this server was seen leading under a vote: a new leader has no acks yet,
    /// and check-quorum gives it one timeout to collect them.
    leading_since: Mutex<Option<(Vote, Instant)>>,
    /// Set by check-quorum: the leader vote that must step down.
    step_down: Mutex<Option<Vote>>,
}

impl LeaseClock {
    /// Records that `target` accepted a replication request carrying `vote`, sent at `sent_at`.
    pub(crate) fn record_ack(&self, target: NodeId, vote: Vote, sent_at: Instant) {
        let mut acks = self.acks.lock();
        let entry = acks.entry(target).or_insert(Ack { vote, sent_at });
        if entry.vote != vote || entry.sent_at < sent_at {
            *entry = Ack { vote, sent_at };
        }
    }

    /// The send time of the newest acknowledgement that a quorum of every voter set shares for
    /// `vote`: the moment from which the lease runs. This server counts as acknowledging at `now`.
    /// `None` when some voter set has no quorum of acknowledgements for `vote`.
    pub(crate) fn quorum_acked_at(
        &self,
        me: NodeId,
        vote: &Vote,
        voter_sets: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        let acks = self.acks.lock();
        let mut oldest: Option<Instant> = None;
        for set in voter_sets {
            if set.is_empty() {
                continue;
            }
            let mut times: Vec<Instant> = set
                .iter()
                .filter_map(|id| {
                    if *id == me {
                        Some(now)
                    } else {
                        acks.get(id).filter(|a| a.vote == *vote).map(|a| a.sent_at)
                    }
                })
                .collect();
            let quorum = set.len() / 2 + 1;
            if times.len() < quorum {
                return None;
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            let at = *times.get(quorum - 1)?;
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// Whether the lease of leader `vote` holds at `now`.
    pub(crate) fn lease_holds(
        &self,
        me: NodeId,
        vote: &Vote,
        voter_sets: &[BTreeSet<NodeId>],
        lease: Duration,
        now: Instant,
    ) -> bool {
        self.quorum_acked_at(me, vote, voter_sets, now)
            .is_some_and(|at| now.saturating_duration_since(at) < lease)
    }

    /// Check-quorum: whether leader `vote` has gone `limit` without a quorum's acknowledgement
    /// (counting from when it started leading, so a new leader gets time to collect them).
    pub(crate) fn quorum_lost(
        &self,
        me: NodeId,
        vote: &Vote,
        voter_sets: &[BTreeSet<NodeId>],
        limit: Duration,
        now: Instant,
    ) -> bool {
        let since = {
            let mut leading = self.leading_since.lock();
            match *leading {
                Some((v, at)) if v == *vote => at,
                _ => {
                    *leading = Some((*vote, now));
                    now
                }
            }
        };
        let heard = self
            .quorum_acked_at(me, vote, voter_sets, now)
            .map_or(since, |at| at.max(since));
        now.saturating_duration_since(heard) > limit
    }

    /// Asks the network layer to demote leader `vote`: its next replication request is answered,
    /// locally, with [`step_down_vote`]. openraft 0.9 has no other way to make a leader a follower
    /// without a higher term from a peer.
    pub(crate) fn request_step_down(&self, vote: Vote) {
        *self.step_down.lock() = Some(vote);
    }

    /// The vote to answer a replication request with, if its leader must step down.
    pub(crate) fn step_down_answer(&self, request_vote: &Vote) -> Option<Vote> {
        let pending = *self.step_down.lock();
        (pending == Some(*request_vote)).then(|| step_down_vote(request_vote))
    }

    /// Forgets a step-down request once the leader it named is gone.
    pub(crate) fn clear_step_down(&self, current: &Vote) {
        let mut pending = self.step_down.lock();
        if pending.is_some_and(|v| v != *current || !current.is_committed()) {
            *pending = None;
        }
    }
}

/// The vote a stepping-down leader adopts: the same term, pledged to [`STEP_DOWN_NODE_ID`]. It
/// ranks above the leader's own vote, so openraft turns the leader into a follower, and below any
/// vote of a later term, so the leader follows whoever the others elect — without raising its
/// term, which would depose that new leader when the partition heals.
pub(crate) fn step_down_vote(leader_vote: &Vote) -> Vote {
    Vote::new(leader_vote.leader_id.term, STEP_DOWN_NODE_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> Vec<BTreeSet<NodeId>> {
        vec![ids.iter().copied().collect()]
    }

    #[test]
    fn lease_runs_from_the_send_time_a_quorum_acknowledged() {
        let clock = LeaseClock::default();
        let vote = Vote::new_committed(3, 1);
        let t0 = Instant::now();
        let lease = Duration::from_millis(200);
        let voters = set(&[1, 2, 3]);
        assert!(!clock.lease_holds(1, &vote, &voters, lease, t0), "no acks yet");
        clock.record_ack(2, vote, t0);
        assert!(clock.lease_holds(1, &vote, &voters, lease, t0 + Duration::from_millis(150)));
        // The read comes after a pause: the same ack no longer carries a lease.
        assert!(!clock.lease_holds(1, &vote, &voters, lease, t0 + Duration::from_millis(250)));
        // An ack for another vote (an earlier term) does not count.
        let other = Vote::new_committed(2, 1);
        assert!(!clock.lease_holds(1, &other, &voters, lease, t0 + Duration::from_millis(10)));
    }

    #[test]
    fn the_quorum_time_is_the_majority_th_newest_ack() {
        let clock = LeaseClock::default();
        let vote = Vote::new_committed(1, 1);
        let t0 = Instant::now();
        let voters = set(&[1, 2, 3, 4, 5]);
        clock.record_ack(2, vote, t0);
        clock.record_ack(3, vote, t0 + Duration::from_millis(10));
        let now = t0 + Duration::from_millis(20);
        // Self (now), 3 (t0+10), 2 (t0): the third newest is t0.
        assert_eq!(clock.quorum_acked_at(1, &vote, &voters, now), Some(t0));
        clock.record_ack(4, vote, t0 + Duration::from_millis(15));
        assert_eq!(
            clock.quorum_acked_at(1, &vote, &voters, now),
            Some(t0 + Duration::from_millis(10))
        );
        // An older ack never replaces a newer one.
        clock.record_ack(4, vote, t0);
        assert_eq!(
            clock.quorum_acked_at(1, &vote, &voters, now),
            Some(t0 + Duration::from_millis(10))
        );
    }

    #[test]
    fn joint_configurations_need_a_quorum_of_each() {
        let clock = LeaseClock::default();
        let vote = Vote::new_committed(1, 1);
        let t0 = Instant::now();
        let joint = vec![[1, 2, 3].into_iter().collect(), [4, 5, 6].into_iter().collect()];
        clock.record_ack(2, vote, t0);
        assert_eq!(clock.quorum_acked_at(1, &vote, &joint, t0), None);
        clock.record_ack(4, vote, t0);
        clock.record_ack(5, vote, t0);
        assert_eq!(clock.quorum_acked_at(1, &vote, &joint, t0), Some(t0));
    }

    #[test]
    fn check_quorum_gives_a_new_leader_one_limit_then_demands_acks() {
        let clock = LeaseClock::default();
        let vote = Vote::new_committed(1, 1);
        let voters = set(&[1, 2, 3]);
        let limit = Duration::from_millis(250);
        let t0 = Instant::now();
        assert!(!clock.quorum_lost(1, &vote, &voters, limit, t0));
        assert!(!clock.quorum_lost(1, &vote, &voters, limit, t0 + Duration::from_millis(200)));
        assert!(clock.quorum_lost(1, &vote, &voters, limit, t0 + Duration::from_millis(300)));
        clock.record_ack(3, vote, t0 + Duration::from_millis(290));
        assert!(!clock.quorum_lost(1, &vote, &voters, limit, t0 + Duration::from_millis(300)));
        // A single voter always has its quorum.
        assert!(!clock.quorum_lost(1, &vote, &set(&[1]), limit, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn the_step_down_vote_outranks_the_leader_but_not_a_later_term() {
        let leader = Vote::new_committed(7, 3);
        let pledge = step_down_vote(&leader);
        assert!(pledge > leader);
        assert!(Vote::new_committed(8, 1) > pledge);
        assert!(Vote::new(8, 1) > pledge);
        let clock = LeaseClock::default();
        assert_eq!(clock.step_down_answer(&leader), None);
        clock.request_step_down(leader);
        assert_eq!(clock.step_down_answer(&leader), Some(pledge));
        assert_eq!(clock.step_down_answer(&Vote::new_committed(8, 3)), None);
        clock.clear_step_down(&pledge);
        assert_eq!(clock.step_down_answer(&leader), None);
    }
}
