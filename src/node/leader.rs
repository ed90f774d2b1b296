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
    ANONYMOUS_TOKEN_ACCESSOR, AclPolicy, AclToken, Backend, Command, GLOBAL_MANAGEMENT_POLICY_ID,
    GLOBAL_MANAGEMENT_POLICY_NAME, GLOBAL_MANAGEMENT_RULES, PolicyLink,
};

use super::agent::{Agent, ProposeError};
use super::sessions::{self, SESSION_HEALTH_SWEEP};
use crate::fsm::{ApplyResponse, Rejection};

/// How long a deleted key's tombstone is kept before the leader reaps it (Consul's `TombstoneTTL`).
const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);

/// How often the leader samples the applied index for tombstone reaping (Consul's granularity).
const TOMBSTONE_GRANULARITY: Duration = Duration::from_secs(30);

/// How often the leader looks for expired ACL tokens to delete.
const TOKEN_REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The most expired tokens one reaping pass deletes; the rest wait for the next pass.
const TOKEN_REAP_BATCH: usize = 128;

/// How long the leader waits before trying again to install the built-in ACL tokens.
const BUILTIN_TOKENS_RETRY: Duration = Duration::from_secs(1);

/// How often the leader looks whether the catalog must follow the LAN pool. Consul reconciles on
/// every member event and every 60 s; a one-second look reacts as fast without an event path, and
/// reads the catalog only when the pool or the catalog's nodes changed (see `Reconciler`).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the leader's duty loop looks at session timers.
const LEADER_TICK: Duration = Duration::from_millis(100);

/// Runs on every server and acts only while this server leads; timers are re-armed from the state
/// on each new term of leadership.
pub(super) async fn leader_duties<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    let mut was_leader = false;
    let mut tombstones = TombstoneReaper::default();
    let mut next_health_sweep = Instant::now();
    let mut next_token_reap = Instant::now();
    // When to (re)try installing the initial management and anonymous tokens; `None` once done.
    let mut builtin_tokens_due: Option<Instant> = None;
    let mut next_reconcile = Instant::now();
    let mut reconciler = super::reconcile::Reconciler::default();
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
            builtin_tokens_due = None;
            continue;
        }
        let now = Instant::now();
        if !was_leader {
            was_leader = true;
            agent.sessions.arm_all_timers(&agent.store);
            tombstones.start_at(now);
            // Failures seen while another server led (or none did) are acted on by the sweep.
            next_health_sweep = now;
            builtin_tokens_due = Some(now);
            next_token_reap = now;
            next_reconcile = now;
            reconciler.forget();
        }
        if now >= next_reconcile {
            next_reconcile = now + RECONCILE_INTERVAL;
            reconciler.run(&agent, now).await;
        }
        // A proposal made just after an election can fail (the term's first entry not yet
        // committed, a busy machine): the built-in tokens are retried until they are in, as
        // Consul's leader retries establishing its leadership, instead of never being installed.
        if let Some(due) = builtin_tokens_due
            && now >= due
        {
            builtin_tokens_due = match install_builtin_tokens(&agent).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = ?e, "installing the built-in ACL tokens; retrying");
                    Some(now + BUILTIN_TOKENS_RETRY)
                }
            };
        }
        if now >= next_token_reap {
            next_token_reap = now + TOKEN_REAP_INTERVAL;
            reap_expired_tokens(&agent, wall_clock_unix_ms()).await;
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

/// The tokens every leader of the primary makes sure exist: the initial management token and the
/// anonymous token.
async fn install_builtin_tokens<B: Backend>(agent: &Agent<B>) -> Result<(), ProposeError> {
    install_initial_management(agent).await?;
    install_anonymous_token(agent).await
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
        create_time_unix_ms: Some(crate::http::now_unix_ms()),
        ..AclToken::default()
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

/// The Anonymous token's record, as Consul's leader writes it when ACLs are on.
fn anonymous_token() -> AclToken {
    AclToken {
        accessor_id: ANONYMOUS_TOKEN_ACCESSOR.to_owned(),
        secret_id: tribune_acl::ANONYMOUS_TOKEN_SECRET.to_owned(),
        description: "Anonymous Token".to_owned(),
        ..AclToken::default()
    }
}

/// On gaining leadership in the primary datacenter with ACLs on, stores the anonymous token unless
/// it exists (its policies are the operator's to edit, so an existing record is left alone). Requests
/// without a token resolve to it, so the policies linked to it apply to them.
pub(super) async fn install_anonymous_token<B: Backend>(agent: &Agent<B>) -> Result<(), ProposeError> {
    if !agent.config.acl.enabled || agent.config.datacenter != agent.config.primary_datacenter {
        return Ok(());
    }
    let read = |e: tribune_kvstore::ReadError| ProposeError::Codec(e.to_string());
    if agent
        .store
        .acl_token(ANONYMOUS_TOKEN_ACCESSOR)
        .map_err(read)?
        .value
        .is_some()
    {
        return Ok(());
    }
    agent.propose(&Command::AclTokenUpsert(anonymous_token())).await?;
    agent.resolver.purge();
    Ok(())
}

/// The wall clock, read here in the duty loop and handed to the reaping logic.
fn wall_clock_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The accessor IDs of at most `limit` tokens whose expiration time is before `now_ms`.
fn expired_accessors(tokens: &[AclToken], now_ms: u64, limit: usize) -> Vec<String> {
    tokens
        .iter()
        .filter(|token| token.expiration_unix_ms.is_some_and(|expires| expires < now_ms))
        .take(limit)
        .map(|token| token.accessor_id.clone())
        .collect()
}

/// Deletes tokens that expired before `now_ms`, a bounded batch per pass. The store never reads a
/// clock, so expiry becomes a replicated delete only through the leader's proposal.
async fn reap_expired_tokens<B: Backend>(agent: &Agent<B>, now_ms: u64) {
    let tokens = match agent.store.acl_tokens() {
        Ok(found) => found.value,
        Err(e) => {
            tracing::warn!(error = %e, "listing tokens to reap");
            return;
        }
    };
    let expired = expired_accessors(&tokens, now_ms, TOKEN_REAP_BATCH);
    if expired.is_empty() {
        return;
    }
    for accessor_id in expired {
        if let Err(e) = agent.propose(&Command::AclTokenDelete { accessor_id }).await {
            tracing::warn!(error = ?e, "reaping an expired token");
            break;
        }
    }
    agent.resolver.purge();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_past_their_expiration_are_reaped_in_bounded_batches() {
        let token = |id: &str, expires: Option<u64>| AclToken {
            accessor_id: id.to_owned(),
            expiration_unix_ms: expires,
            ..anonymous_token()
        };
        let tokens = vec![
            token("never", None),
            token("past", Some(100)),
            token("exactly-now", Some(200)),
            token("future", Some(300)),
            token("long-past", Some(1)),
        ];
        assert_eq!(expired_accessors(&tokens, 200, 10), vec!["past", "long-past"]);
        assert_eq!(expired_accessors(&tokens, 200, 1), vec!["past"]);
        assert!(expired_accessors(&tokens, 0, 10).is_empty());
    }

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
