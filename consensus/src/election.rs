//! When this server campaigns, and when it stops leading.
//!
//! openraft 0.9 starts an election whenever a follower's timer runs out, raising its term even when
//! it cannot win. A server cut off by a partition thus comes back with a higher term, and its first
//! answer to the leader's heartbeat deposes a healthy leader (elections then churn for seconds).
//! openraft's leader also never steps down on its own when it loses its quorum. Both are decided
//! here instead, by one task per server:
//!
//! - **Pre-vote.** openraft's own election timer is switched off. When this voter has heard from
//!   no leader for a randomised election timeout, it first asks the other voters whether they
//!   would vote for it ([`PreVoteRequest`]); only if a quorum says yes does it start a real
//!   election. A voter says yes only when it has not heard from a leader for an election timeout
//!   itself and the candidate's log is at least as long as its own — so a server returning from
//!   a partition, with a healthy leader around, never raises its term.
//! - **Check-quorum.** A leader that has gone an election timeout without a quorum acknowledging
//!   its heartbeats (measured by the [`LeaseClock`]) steps down, as hashicorp/raft's leader does;
//!   requests to it then fail at once with "no leader" instead of hanging.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::ServerState;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::lease::LeaseClock;
use crate::transport::Transport;
use crate::types::{LogId, NodeId, Raft};
use crate::wire::{PreVoteRequest, Request, Response, RpcRequest};

/// Timing of the election driver, derived from the Raft configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElectionTiming {
    /// How often the driver looks at the state (the heartbeat interval).
    pub(crate) tick: Duration,
    /// A follower campaigns after hearing from no leader for this long, plus a jitter of up to
    /// `jitter`; a voter grants a pre-vote only after this long without a leader. It equals
    /// openraft's leader lease (`election_timeout_max`), during which voters refuse real votes.
    pub(crate) quiet: Duration,
    /// The random part of a follower's timeout, so that followers do not campaign together.
    pub(crate) jitter: Duration,
    /// A leader steps down after this long without a quorum's acknowledgement.
    pub(crate) check_quorum: Duration,
}

/// What a voter knows when asked for a pre-vote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VoterView {
    pub(crate) is_leader: bool,
    pub(crate) current_term: u64,
    pub(crate) last_log_id: Option<LogId>,
    /// How long since this server last heard from a leader (or granted a vote).
    pub(crate) quiet_for: Option<Duration>,
}

/// The pre-vote rule: grant only when this voter would itself be ready for an election and the
/// candidate's log is at least as up to date as this voter's.
pub(crate) fn grant_pre_vote(view: &VoterView, request: &PreVoteRequest, quiet: Duration) -> bool {
    if view.is_leader {
        return false;
    }
    let leaderless = view.quiet_for.is_none_or(|q| q >= quiet);
    leaderless && request.term >= view.current_term && request.last_log_id >= view.last_log_id
}

/// When this server last heard from a leader, or granted a vote to a candidate: the start of its
/// election timeout. Shared between the RPC handlers, which refresh it, and the driver.
#[derive(Debug)]
pub(crate) struct Quiet {
    since: Mutex<Instant>,
}

impl Quiet {
    pub(crate) fn new(now: Instant) -> Self {
        Quiet {
            since: Mutex::new(now),
        }
    }

    pub(crate) fn heard(&self, now: Instant) {
        let mut since = self.since.lock();
        if *since < now {
            *since = now;
        }
    }

    pub(crate) fn since(&self) -> Instant {
        *self.since.lock()
    }
}

/// A deterministic per-server jitter: spreads followers' timeouts without a random source.
fn jitter(id: NodeId, attempt: u64, range: Duration) -> Duration {
    let mut x = id ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let nanos = range.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(x % nanos)
}

pub(crate) struct ElectionDriver {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) lease: Arc<LeaseClock>,
    pub(crate) quiet: Arc<Quiet>,
    pub(crate) timing: ElectionTiming,
}

impl ElectionDriver {
    /// Runs until `shutdown` turns true.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u64 = 0;
        let mut last_attempt: Option<Instant> = None;
        let mut ticker = tokio::time::interval(self.timing.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let (state, vote, voters, term, current_leader) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let voters: Vec<BTreeSet<NodeId>> =
                    m.membership_config.membership().get_joint_config().clone();
                (m.state, m.vote, voters, m.current_term, m.current_leader)
            };
            self.lease.clear_step_down(&vote);
            let is_voter = voters.iter().any(|set| set.contains(&self.id));
            if state == ServerState::Leader {
                if self
                    .lease
                    .quorum_lost(self.id, &vote, &voters, self.timing.check_quorum, now)
                {
                    tracing::warn!(
                        term,
                        "no quorum has acknowledged this leader for {:?}: stepping down",
                        self.timing.check_quorum
                    );
                    self.lease.request_step_down(vote);
                    // Replication may be idle; a heartbeat carries the step-down at once.
                    let _ = self.raft.trigger().heartbeat().await;
                }
                continue;
            }
            if !is_voter || state == ServerState::Shutdown {
                continue;
            }
            let quiet_start = match last_attempt {
                Some(at) => at.max(self.quiet.since()),
                None => self.quiet.since(),
            };
            let timeout = self.timing.quiet + jitter(self.id, attempt, self.timing.jitter);
            if now.saturating_duration_since(quiet_start) < timeout {
                continue;
            }
            attempt = attempt.wrapping_add(1);
            last_attempt = Some(now);
            let sole_voter = voters.iter().all(|set| set.len() == 1 && set.contains(&self.id));
            let heard_before = self.quiet.since();
            if !sole_voter && !self.pre_vote(term, &voters).await {
                continue;
            }
            // The round took time: if a leader was heard from or the term moved meanwhile, an
            // election is no longer wanted (campaigning now would depose that leader).
            let term_now = self.raft.metrics().borrow().current_term;
            if term_now != term || self.quiet.since() != heard_before {
                continue;
            }
            tracing::info!(
                term = term + 1,
                ?current_leader,
                "pre-vote won: starting an election"
            );
            let _ = self.raft.trigger().elect().await;
        }
    }

    /// Asks every other voter for a pre-vote; true when every voter set has a quorum of yeses.
    async fn pre_vote(&self, term: u64, voters: &[BTreeSet<NodeId>]) -> bool {
        let last_log_id = self.raft.data_metrics().borrow().last_log;
        let request = PreVoteRequest {
            candidate: self.id,
            term: term + 1,
            last_log_id,
        };
        let others: BTreeSet<NodeId> = voters
            .iter()
            .flatten()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        let nodes = {
            let m = self.raft.metrics();
            let m = m.borrow();
            others
                .iter()
                .filter_map(|id| {
                    m.membership_config
                        .membership()
                        .get_node(id)
                        .map(|n| (*id, n.rpc_addr.clone()))
                })
                .collect::<Vec<_>>()
        };
        // Answers come back concurrently; the round ends as soon as a quorum granted, so an
        // unreachable voter's timeout never delays a winnable election.
        let mut asks: futures::stream::FuturesUnordered<_> = nodes
            .into_iter()
            .map(|(id, addr)| {
                let request = RpcRequest(Request::PreVote(request.clone()));
                let send = self
                    .transport
                    .send(id, &addr, request, self.timing.jitter.max(self.timing.tick));
                async move {
                    match send.await {
                        Ok(resp) => matches!(resp.0, Response::PreVote { granted: true }).then_some(id),
                        Err(_) => None,
                    }
                }
            })
            .collect();
        let mut granted = BTreeSet::from([self.id]);
        let won = |granted: &BTreeSet<NodeId>| {
            voters
                .iter()
                .all(|set| set.is_empty() || set.intersection(granted).count() > set.len() / 2)
        };
        while !won(&granted) {
            match asks.next().await {
                Some(Some(id)) => {
                    granted.insert(id);
                }
                Some(None) => {}
                None => {
                    tracing::debug!(?granted, "pre-vote lost");
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(quiet_ms: Option<u64>, term: u64, last: Option<(u64, u64)>) -> VoterView {
        VoterView {
            is_leader: false,
            current_term: term,
            last_log_id: last.map(|(t, i)| LogId::new(openraft::CommittedLeaderId::new(t, 1), i)),
            quiet_for: quiet_ms.map(Duration::from_millis),
        }
    }

    fn ask(term: u64, last: Option<(u64, u64)>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 2,
            term,
            last_log_id: last.map(|(t, i)| LogId::new(openraft::CommittedLeaderId::new(t, 1), i)),
        }
    }

    #[test]
    fn a_voter_that_hears_its_leader_refuses_a_pre_vote() {
        let quiet = Duration::from_millis(300);
        assert!(!grant_pre_vote(
            &view(Some(100), 3, Some((3, 10))),
            &ask(4, Some((3, 10))),
            quiet
        ));
        assert!(grant_pre_vote(
            &view(Some(400), 3, Some((3, 10))),
            &ask(4, Some((3, 10))),
            quiet
        ));
        assert!(grant_pre_vote(&view(None, 0, None), &ask(1, None), quiet));
        let mut leader = view(Some(400), 3, Some((3, 10)));
        leader.is_leader = true;
        assert!(!grant_pre_vote(&leader, &ask(4, Some((3, 10))), quiet));
    }

    #[test]
    fn a_candidate_with_a_shorter_log_or_older_term_is_refused() {
        let quiet = Duration::from_millis(300);
        let v = view(Some(400), 5, Some((5, 20)));
        assert!(!grant_pre_vote(&v, &ask(6, Some((5, 19))), quiet));
        assert!(!grant_pre_vote(&v, &ask(6, Some((4, 30))), quiet));
        assert!(!grant_pre_vote(&v, &ask(4, Some((5, 20))), quiet));
        assert!(grant_pre_vote(&v, &ask(6, Some((6, 1))), quiet));
    }

    #[test]
    fn jitter_stays_in_range_and_differs_between_servers() {
        let range = Duration::from_millis(125);
        let a: Vec<_> = (0..20).map(|i| jitter(1, i, range)).collect();
        let b: Vec<_> = (0..20).map(|i| jitter(2, i, range)).collect();
        assert!(a.iter().chain(&b).all(|j| *j < range));
        assert_ne!(a, b);
        assert_eq!(jitter(1, 0, Duration::ZERO), Duration::ZERO);
    }
}
