//! The task that turns raft's state into series: a count of each role taken (`raft.state.*`) and,
//! on a follower, the time since the leader was last heard from, sampled every second
//! (`raft.leader.lastContact`, as hashicorp/raft samples it on its heartbeat check).
//!
//! It is not consensus (it only reads openraft's metrics channel) nor the gauges read when the
//! endpoint is asked (`http/metrics.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tribune_consensus::openraft::ServerState;
use tribune_consensus::{Consensus, StateMachine};

use super::{RaftRole, Telemetry};

/// How often a follower's time since the leader's last contact is sampled.
const LAST_CONTACT_SAMPLE: Duration = Duration::from_secs(1);

fn role(state: ServerState) -> Option<RaftRole> {
    match state {
        ServerState::Leader => Some(RaftRole::Leader),
        ServerState::Candidate => Some(RaftRole::Candidate),
        ServerState::Follower | ServerState::Learner => Some(RaftRole::Follower),
        ServerState::Shutdown => None,
    }
}

/// Feeds `telemetry` from `consensus` until `shutdown` turns true or consensus stops.
pub(crate) async fn watch_raft<S: StateMachine>(
    telemetry: Arc<Telemetry>,
    consensus: Consensus<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = consensus.raft().metrics();
    let mut current = role(metrics.borrow_and_update().state);
    if let Some(initial) = current {
        telemetry.raft_role(initial);
    }
    let mut tick = tokio::time::interval(LAST_CONTACT_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = role(metrics.borrow_and_update().state);
                if now != current {
                    if let Some(role) = now {
                        telemetry.raft_role(role);
                    }
                    current = now;
                }
            }
            _ = tick.tick() => {
                if current == Some(RaftRole::Follower)
                    && let Some(since) = consensus.last_contact()
                {
                    telemetry.leader_last_contact(since);
                }
            }
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}
