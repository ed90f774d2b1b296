//! The leader's duties: one task on every server that acts only while this server leads — the
//! session duties of `sessions.rs` on their schedule, tombstone reaping ([`TombstoneReaper`]), and,
//! on gaining leadership, the timers re-armed from the state and the initial management token.
//!
//! It is not raft reconciliation (the leader's other loop, in `membership.rs`) nor the session
//! rules themselves (`sessions.rs`); it only decides when each duty runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tribune_kvstore::{
    AclPolicy, AclToken, Backend, Command, GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME,
    GLOBAL_MANAGEMENT_RULES, PolicyLink,
};

use super::agent::{Agent, ProposeError};
use super::sessions::{self, SESSION_HEALTH_SWEEP};
use crate::fsm::{ApplyResponse, Rejection};

/// How long a deleted key's tombstone is kept before the leader reaps it (Consul's `TombstoneTTL`).
const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

/// How often the leader samples the applied index for tombstone reaping (Consul's granularity).
const TOMBSTONE_GRANULARITY: Duration = Duration::from_secs(30);

/// How often the leader's duty loop looks at session timers.
const LEADER_TICK: Duration = Duration::from_millis(100);

/// Runs on every server and acts only while this server leads; timers are re-armed from the state
/// on each new term of leadership.
pub(super) async fn leader_duties<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    let mut was_leader = false;
    let mut tombstones = TombstoneReaper::default();
    let mut next_health_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEADER_TICK) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let leader = agent.consensus.is_leader();
        if !leader {
            if was_leader {
                agent.sessions.clear_all_timers();
                tombstones.forget();
            }
            was_leader = false;
            continue;
        }
        let now = Instant::now();
        if !was_leader {
            was_leader = true;
            agent.sessions.arm_all_timers(&agent.store);
            tombstones.start_at(now);
            // Failures seen while another server led (or none did) are acted on by the sweep.
            next_health_sweep = now;
            if let Err(e) = install_initial_management(&agent).await {
                tracing::warn!(error = ?e, "installing the initial management token");
            }
        }
        sessions::invalidate_failed_nodes(&agent).await;
        if now >= next_health_sweep {
            next_health_sweep = now + SESSION_HEALTH_SWEEP;
            sessions::sweep_unhealthy_sessions(&agent).await;
        }
        sessions::expire_sessions(&agent, now).await;
        if let Some(up_to_index) = tombstones.due(now, || agent.store.last_applied())
            && let Err(e) = agent.propose(&Command::ReapTombstones { up_to_index }).await
        {
            tracing::warn!(error = ?e, "reaping tombstones");
        }
    }
}

/// When tombstones may be reaped: the applied index is sampled every [`TOMBSTONE_GRANULARITY`],
/// and tombstones at or below a sample can go once [`TOMBSTONE_TTL`] has passed since it was
/// taken. Time is handed in; nothing here reads a clock.
#[derive(Debug, Default)]
struct TombstoneReaper {
    /// (when sampled, applied index then), oldest first.
    marks: VecDeque<(Instant, u64)>,
    next_mark: Option<Instant>,
}

impl TombstoneReaper {
    /// Leadership gained at `now`: the first sample is due at once.
    fn start_at(&mut self, now: Instant) {
        self.next_mark = Some(now);
    }

    /// Leadership lost: the samples belong to the term that took them.
    fn forget(&mut self) {
        self.marks.clear();
    }

    /// Takes a sample (of `applied`) if one is due at `now`, and returns the highest index whose
    /// tombstones are now old enough to reap, if any became so.
    fn due(&mut self, now: Instant, applied: impl FnOnce() -> u64) -> Option<u64> {
        if self.next_mark.is_none_or(|next| now >= next) {
            self.marks.push_back((now, applied()));
            self.next_mark = Some(now + TOMBSTONE_GRANULARITY);
        }
        let mut reap_up_to = None;
        while let Some(&(at, index)) = self.marks.front() {
            if at + TOMBSTONE_TTL > now {
                break;
            }
            reap_up_to = Some(index);
            self.marks.pop_front();
        }
        reap_up_to
    }
}

/// On gaining leadership in the primary datacenter, installs `acl.tokens.initial_management` as a
/// management token unless a token with that secret exists (as Consul's leader does).
pub(super) async fn install_initial_management<B: Backend>(agent: &Agent<B>) -> Result<(), ProposeError> {
    let acl = &agent.config.acl;
    let Some(secret) = acl.tokens.initial_management.as_deref() else {
        return Ok(());
    };
    if !acl.enabled || agent.config.datacenter != agent.config.primary_datacenter {
        return Ok(());
    }
    let read = |e: tribune_kvstore::ReadError| ProposeError::Codec(e.to_string());
    if agent
        .store
        .acl_token_by_secret(secret)
        .map_err(read)?
        .value
        .is_some()
    {
        return Ok(());
    }
    if agent
        .store
        .acl_policy(GLOBAL_MANAGEMENT_POLICY_ID)
        .map_err(read)?
        .value
        .is_none()
    {
        let policy = AclPolicy {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
            description: "Builtin Policy that grants unlimited access".to_owned(),
            rules: GLOBAL_MANAGEMENT_RULES.to_owned(),
            datacenters: Vec::new(),
            create_index: 0,
            modify_index: 0,
        };
        agent.propose(&Command::AclPolicyUpsert(policy)).await?;
    }
    let token = AclToken {
        accessor_id: uuid::Uuid::new_v4().to_string(),
        secret_id: secret.to_owned(),
        description: "Initial Management Token".to_owned(),
        policies: vec![PolicyLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
        }],
        local: false,
        expiration_unix_ms: None,
        create_index: 0,
        modify_index: 0,
    };
    // As Consul's leader does, the initial management token *is* the bootstrap while bootstrap is
    // still open: afterwards `PUT /v1/acl/bootstrap` is refused instead of minting a second
    // management token for an anonymous caller. If an operator bootstrapped already, the token is
    // simply added.
    let bootstrap = Command::AclBootstrap {
        token: token.clone(),
        reset_index: None,
    };
    if let (
        ApplyResponse::Rejected {
            kind: Rejection::BootstrapNotAllowed,
            ..
        },
        _,
    ) = agent.propose(&bootstrap).await?
    {
        agent.propose(&Command::AclTokenUpsert(token)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_reaped_up_to_the_sample_older_than_the_ttl() {
        let start = Instant::now();
        let mut reaper = TombstoneReaper::default();
        reaper.start_at(start);
        assert_eq!(reaper.due(start, || 10), None, "a first sample, nothing old yet");
        // Within the granularity, no new sample: the applied index is not even read.
        assert_eq!(
            reaper.due(start + Duration::from_secs(1), || unreachable!()),
            None
        );
        assert_eq!(reaper.due(start + TOMBSTONE_GRANULARITY, || 20), None);
        assert_eq!(
            reaper.due(start + TOMBSTONE_TTL, || 30),
            Some(10),
            "the first sample is TTL old"
        );
        assert_eq!(
            reaper.due(start + TOMBSTONE_TTL + TOMBSTONE_GRANULARITY, || 40),
            Some(20)
        );
    }

    #[test]
    fn a_lost_leadership_forgets_its_samples() {
        let start = Instant::now();
        let mut reaper = TombstoneReaper::default();
        reaper.start_at(start);
        assert_eq!(reaper.due(start, || 10), None);
        reaper.forget();
        let later = start + TOMBSTONE_TTL + TOMBSTONE_GRANULARITY;
        reaper.start_at(later);
        assert_eq!(reaper.due(later, || 50), None, "the old sample is gone");
        assert_eq!(reaper.due(later + TOMBSTONE_TTL, || 60), Some(50));
    }
}
