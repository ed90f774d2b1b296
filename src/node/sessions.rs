//! Session keeping: the wall-clock and health duties Consul's leader has towards sessions, which
//! the deterministic store cannot have. [`SessionKeeper`] holds their state — the lock-delays and
//! the gate that orders lock checks against invalidations, the TTL timers, the nodes the LAN pool
//! reported down — and the functions below are the leader's session duties over it (invalidate on
//! TTL expiry, on a node's failure, and in the periodic health sweep).
//!
//! It is not the session endpoints (`http/session.rs`, which arm and clear timers and ask
//! [`Agent::node_health`]), nor the rules of sessions and locks (`tribune-kvstore`'s apply), nor
//! the loop that runs the duties while this server leads (`leader.rs`). Every invalidation is a
//! `SessionDestroy` proposed through [`Agent::propose`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::time::Instant;
use tribune_consensus::{Consensus, ConsensusError, ReadMode};
use tribune_kvstore::{Backend, Command, Session, Store};

use super::agent::Agent;
use crate::fsm::{KvStateMachine, LockDelays};

/// Consul's session TTL multiplier: a session is invalidated after twice its TTL without a renewal.
const SESSION_TTL_MULTIPLIER: u32 = 2;

/// The check every node has (Consul's `serfHealth`): with no catalog yet, its status is the node's
/// membership of the LAN pool (alive or suspect: passing; failed or left: critical).
pub(crate) const SERF_HEALTH_CHECK: &str = "serfHealth";

/// How often the leader looks for sessions of nodes the pool no longer holds alive. Failure events
/// act at once; this catches a session whose creation raced with its node's failure.
pub(super) const SESSION_HEALTH_SWEEP: Duration = Duration::from_secs(10);

/// Most nodes whose failure waits for the leader's attention; beyond it the sweep still finds them.
const MAX_PENDING_NODE_FAILURES: usize = 65_536;

/// A node's `serfHealth` as the LAN pool reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeHealth {
    /// Alive or suspect.
    Passing,
    /// Failed or left.
    Critical,
    /// Not a member of the pool (Consul: no such check registered).
    Unknown,
}

/// The state of the session duties. Timers act only on the leader; lock-delays and node failures
/// are kept on every server, so that a new leader enforces and acts on what its predecessor left.
pub(crate) struct SessionKeeper {
    /// Keys a destroyed session held, and until when the leader refuses to lock them again;
    /// shared with the state machine adapter, which records them as invalidations apply.
    lock_delays: Arc<LockDelays>,
    /// Orders lock-delay checks against session invalidations (see
    /// [`SessionKeeper::lock_delays_now`]).
    lock_gate: RwLock<()>,
    /// Sessions with a TTL and when the leader invalidates them (leader only).
    timers: Mutex<HashMap<String, Instant>>,
    /// Nodes the LAN pool reported failed or left, with this server's applied index then: the
    /// leader destroys their sessions bound to `serfHealth` created up to that index. Kept on every
    /// server, so a failure seen while there was no leader is acted on by the next one.
    node_failures: Mutex<HashMap<String, u64>>,
}

/// The lock-delays as the leader enforces them now, with the gate that keeps invalidations out
/// until the vetted lock command has applied.
pub(crate) struct LockDelayCheck<'a> {
    _gate: RwLockReadGuard<'a, ()>,
    delays: &'a LockDelays,
}

impl LockDelayCheck<'_> {
    /// Whether `key` is inside a lock-delay.
    pub(crate) fn active(&self, key: &str) -> bool {
        self.delays.active(key)
    }
}

impl SessionKeeper {
    /// A keeper over the lock-delays the state machine adapter records.
    pub(super) fn new(lock_delays: Arc<LockDelays>) -> Self {
        SessionKeeper {
            lock_delays,
            lock_gate: RwLock::new(()),
            timers: Mutex::new(HashMap::new()),
            node_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The lock-delays the leader enforces now (it refuses to lock a key of an invalidated session).
    ///
    /// Delays are recorded as invalidations apply, so the leader first makes sure it has applied
    /// everything committed before its term (a consistent barrier waits for its own first entry):
    /// a new leader must not answer from a record that misses its predecessor's last invalidations.
    ///
    /// The returned check also holds the lock-delay gate until it is dropped: keep it until the
    /// lock command it vetted has been proposed and applied. An invalidation waits for the gate, so
    /// no lock command can be vetted before an invalidation applies yet be ordered after it in the
    /// log (where it would take the key the invalidation just freed, inside the delay).
    pub(crate) async fn lock_delays_now<B: Backend>(
        &self,
        consensus: &Consensus<KvStateMachine<B>>,
    ) -> Result<LockDelayCheck<'_>, ConsensusError> {
        let gate = self.lock_gate.read().await;
        consensus.read_barrier(ReadMode::Consistent).await?;
        Ok(LockDelayCheck {
            _gate: gate,
            delays: &self.lock_delays,
        })
    }

    /// The gate a session invalidation holds, exclusively, until it has applied: it waits until no
    /// vetted lock is in flight (see [`SessionKeeper::lock_delays_now`]).
    pub(super) async fn invalidation_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock_gate.write().await
    }

    /// Arms (or re-arms, on renewal) a session's invalidation timer at `2 × ttl` (leader only).
    pub(crate) fn arm_timer(&self, id: &str, ttl: Duration) {
        let deadline = Instant::now() + ttl * SESSION_TTL_MULTIPLIER;
        self.timers.lock().insert(id.to_owned(), deadline);
    }

    /// How many sessions with a TTL the leader is timing (`session_ttl.active`).
    pub(crate) fn active_timers(&self) -> usize {
        self.timers.lock().len()
    }

    /// Forgets a session's timer (destroyed, or invalidated by other means).
    pub(crate) fn clear_timer(&self, id: &str) {
        self.timers.lock().remove(id);
    }

    /// On gaining leadership (or after a restore), every session with a TTL gets a fresh full
    /// timer, as Consul's leader does.
    pub(super) fn arm_all_timers<B: Backend>(&self, store: &Store<B>) {
        let sessions = match store.sessions() {
            Ok(sessions) => sessions.value,
            Err(e) => {
                tracing::warn!(error = %e, "reading sessions to arm their timers");
                return;
            }
        };
        let mut timers = self.timers.lock();
        timers.clear();
        let now = Instant::now();
        for session in sessions {
            if let Some(ttl) = session.ttl {
                timers.insert(session.id, now + ttl * SESSION_TTL_MULTIPLIER);
            }
        }
    }

    /// On losing leadership: timers belong to the leader.
    pub(super) fn clear_all_timers(&self) {
        self.timers.lock().clear();
    }

    /// The sessions whose timer ran out at `now`.
    fn expired(&self, now: Instant) -> Vec<String> {
        self.timers
            .lock()
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Records that the LAN pool declared `node` failed or left, when this server had applied
    /// `applied`: its `serfHealth` went critical.
    pub(crate) fn note_node_down(&self, node: &str, applied: u64) {
        let mut failures = self.node_failures.lock();
        if failures.len() >= MAX_PENDING_NODE_FAILURES && !failures.contains_key(node) {
            tracing::warn!(
                node,
                "too many node failures pending; the leader's sweep will find this one"
            );
            return;
        }
        let mark = failures.entry(node.to_owned()).or_insert(applied);
        *mark = (*mark).max(applied);
    }

    /// The node failures noted since the last call.
    fn take_node_failures(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.node_failures.lock())
    }
}

/// Invalidates every session whose TTL timer ran out at `now` (leader only).
pub(super) async fn expire_sessions<B: Backend>(agent: &Agent<B>, now: Instant) {
    for id in agent.sessions.expired(now) {
        agent.sessions.clear_timer(&id);
        tracing::info!(session = %id, "session TTL expired: invalidating it");
        let timing = agent.telemetry.time_session_invalidate();
        if let Err(e) = agent.propose(&Command::SessionDestroy { id }).await {
            tracing::warn!(error = ?e, "invalidating an expired session");
        }
        drop(timing);
    }
}

/// Acts on the failure events noted since the last call (leader only).
pub(super) async fn invalidate_failed_nodes<B: Backend>(agent: &Agent<B>) {
    for (node, created_up_to) in agent.sessions.take_node_failures() {
        invalidate_node_sessions(agent, &node, created_up_to).await;
    }
}

/// Whether a session is invalidated when its node's `serfHealth` goes critical.
fn bound_to_serf_health(session: &Session) -> bool {
    session.node_checks.iter().any(|c| c == SERF_HEALTH_CHECK)
}

/// Destroys a session whose node's `serfHealth` went critical, as a TTL expiry does: its locks are
/// released or deleted per its behavior and every server records the lock-delay as it applies.
async fn invalidate_unhealthy<B: Backend>(agent: &Agent<B>, session: &Session) {
    tracing::info!(session = %session.id, node = %session.node, "node failed: invalidating its session");
    agent.sessions.clear_timer(&session.id);
    let command = Command::SessionDestroy {
        id: session.id.clone(),
    };
    if let Err(e) = agent.propose(&command).await {
        tracing::warn!(error = ?e, session = %session.id, "invalidating a session of a failed node");
    }
}

/// Acts on a failure event: the node's sessions bound to `serfHealth` that existed when the pool
/// reported it (a later one was created after the node came back).
async fn invalidate_node_sessions<B: Backend>(agent: &Agent<B>, node: &str, created_up_to: u64) {
    let sessions = match agent.store.node_sessions(node) {
        Ok(found) => found.value,
        Err(e) => {
            tracing::warn!(error = %e, node, "reading the sessions of a failed node");
            return;
        }
    };
    for session in sessions
        .iter()
        .filter(|s| s.create_index <= created_up_to && bound_to_serf_health(s))
    {
        invalidate_unhealthy(agent, session).await;
    }
}

/// Destroys every session bound to `serfHealth` whose node the pool holds failed or left now.
pub(super) async fn sweep_unhealthy_sessions<B: Backend>(agent: &Agent<B>) {
    let Some(gossip) = &agent.gossip else {
        return;
    };
    let Ok(members) = gossip.members().await else {
        return;
    };
    let down: HashSet<&str> = members
        .iter()
        .filter(|m| !m.status.is_live())
        .map(|m| m.name.as_str())
        .collect();
    if down.is_empty() {
        return;
    }
    let sessions = match agent.store.sessions() {
        Ok(found) => found.value,
        Err(e) => {
            tracing::warn!(error = %e, "reading sessions to check their nodes' health");
            return;
        }
    };
    for session in sessions
        .iter()
        .filter(|s| down.contains(s.node.as_str()) && bound_to_serf_health(s))
    {
        invalidate_unhealthy(agent, session).await;
    }
}
