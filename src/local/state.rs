//! [`LocalState`]: the services and checks registered on this agent, each with an "in sync" flag
//! and a generation, deleted entries kept as tombstones until the catalog forgets them, a
//! notification when anything changes, maintenance mode, output-only updates deferred by
//! `check_update_interval`, and the reaping of services critical for longer than their
//! `DeregisterCriticalServiceAfter`.
//!
//! It is not the sync (`anti_entropy.rs` reads [`LocalState::snapshot`] and reports back through
//! [`LocalState::mark_synced`]) nor the check runners (`runners.rs` starts them; they report
//! through [`LocalState::update_check`]). Time is passed in by the caller or read through the
//! injected [`Clock`], so tests drive it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tribune_kvstore::CheckStatus;

use super::definition::{CheckSpec, ServiceSpec};
use super::model::{LocalCheck, LocalService, NODE_MAINTENANCE_CHECK, SERVICE_MAINTENANCE_PREFIX};

/// Consul's note on a node put in maintenance without a reason.
pub(crate) const DEFAULT_NODE_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.";
/// Consul's note on a service put in maintenance without a reason.
pub(crate) const DEFAULT_SERVICE_MAINTENANCE_REASON: &str =
    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// Where the state reads the time (the tokio clock in an agent; a test may pause it).
pub(crate) type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Why an operation on the local state was refused; the texts are Consul's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StateError {
    /// No service with that ID.
    #[error("Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name.")]
    UnknownService(String),
    /// No check with that ID.
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    /// A check names a service this agent does not have.
    #[error("ServiceID {0:?} does not exist")]
    CheckServiceMissing(String),
}

/// A running check, as the state holds it: dropping the last reference stops the check.
pub(crate) trait RunningCheck: Send + Sync {
    /// A TTL check updated through the API: the runner reports the (bounded) output back through
    /// [`LocalState::update_check`] and starts its TTL again. `false` when it is not a TTL check.
    fn ttl_set_status(&self, status: CheckStatus, output: &str) -> bool;
}

/// Starts the runner of a check (the seam to `src/checks`).
pub(crate) trait CheckStarter: Send + Sync {
    /// Starts `spec`'s runner, reporting into `state`; `None` for a check that needs none.
    fn start(&self, spec: &CheckSpec, state: std::sync::Weak<LocalState>) -> Option<Arc<dyn RunningCheck>>;
}

/// One entry and its sync bookkeeping.
#[derive(Debug, Clone)]
struct Tracked<T> {
    /// `None`: deleted locally, still to be deregistered from the catalog.
    value: Option<T>,
    in_sync: bool,
    /// Bumped by every change, so a sync that raced a change does not mark it synced.
    generation: u64,
    token: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct CheckTiming {
    /// An output-only change waits until then before it is synced.
    deferred_until: Option<Instant>,
    /// Since when the check has been critical.
    critical_since: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    services: BTreeMap<String, Tracked<LocalService>>,
    checks: BTreeMap<String, Tracked<LocalCheck>>,
    timing: HashMap<String, CheckTiming>,
    runners: HashMap<String, Arc<dyn RunningCheck>>,
    next_generation: u64,
}

impl Inner {
    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

/// A copy of one entry for the sync.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Synced<T> {
    pub(crate) id: String,
    /// `None` for an entry deleted locally.
    pub(crate) value: Option<T>,
    pub(crate) in_sync: bool,
    pub(crate) generation: u64,
    pub(crate) token: Option<String>,
    /// For a check: an output-only change is waiting (compare without the output).
    pub(crate) output_deferred: bool,
}

/// Everything the sync needs, copied under one lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) services: Vec<Synced<LocalService>>,
    pub(crate) checks: Vec<Synced<LocalCheck>>,
}

/// Which entry the sync reports on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum EntryKey {
    Service(String),
    Check(String),
}

/// The agent's services and checks.
pub(crate) struct LocalState {
    inner: Mutex<Inner>,
    changed: Notify,
    clock: Clock,
    /// Consul's `check_update_interval`: how long an output-only change may wait (zero: never).
    check_update_interval: Duration,
    starter: Option<Arc<dyn CheckStarter>>,
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("LocalState")
            .field("services", &inner.services.len())
            .field("checks", &inner.checks.len())
            .finish()
    }
}

impl LocalState {
    pub(crate) fn new(
        clock: Clock,
        check_update_interval: Duration,
        starter: Option<Arc<dyn CheckStarter>>,
    ) -> Arc<Self> {
        Arc::new(LocalState {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            clock,
            check_update_interval,
            starter,
        })
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    /// Resolves once something changed since the last call (changes in between coalesce).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn notify(&self) {
        self.changed.notify_one();
    }

    /// Registers (or replaces) a service and its checks. Checks the service had before and the
    /// new definition leaves out stay, unless `replace_existing_checks`.
    pub(crate) fn add_service(self: &Arc<Self>, spec: ServiceSpec, replace_existing_checks: bool) {
        let now = self.now();
        let mut stale_runners = Vec::new();
        let mut to_start = Vec::new();
        {
            let mut inner = self.inner.lock();
            let id = spec.service.id.clone();
            if replace_existing_checks {
                let keep: Vec<&str> = spec.checks.iter().map(|c| c.check.check_id.as_str()).collect();
                let dropped: Vec<String> = inner
                    .checks
                    .iter()
                    .filter(|(cid, t)| {
                        t.value
                            .as_ref()
                            .is_some_and(|c| c.service_id == id && !c.is_maintenance())
                            && !keep.contains(&cid.as_str())
                    })
                    .map(|(cid, _)| cid.clone())
                    .collect();
                for cid in dropped {
                    stale_runners.extend(remove_check_locked(&mut inner, &cid));
                }
            }
            let generation = inner.generation();
            inner.services.insert(
                id.clone(),
                Tracked {
                    value: Some(spec.service.clone()),
                    in_sync: false,
                    generation,
                    token: spec.token.clone(),
                },
            );
            // A service whose name changed: its checks carry the new name.
            for tracked in inner.checks.values_mut() {
                if let Some(check) = &mut tracked.value
                    && check.service_id == id
                    && check.service_name != spec.service.service
                {
                    check.service_name = spec.service.service.clone();
                    tracked.in_sync = false;
                }
            }
            for mut check in spec.checks {
                if check.token.is_none() {
                    check.token = spec.token.clone();
                }
                stale_runners.extend(put_check_locked(&mut inner, &check, now));
                to_start.push(check);
            }
        }
        drop(stale_runners);
        for check in &to_start {
            self.start_runner(check);
        }
        self.notify();
    }

    /// Registers (or replaces) a check; its service, when it names one, must be registered.
    pub(crate) fn add_check(self: &Arc<Self>, mut spec: CheckSpec) -> Result<(), StateError> {
        let now = self.now();
        let stale = {
            let mut inner = self.inner.lock();
            if !spec.check.service_id.is_empty() {
                let service = inner
                    .services
                    .get(&spec.check.service_id)
                    .and_then(|t| t.value.as_ref())
                    .ok_or_else(|| StateError::CheckServiceMissing(spec.check.service_id.clone()))?;
                spec.check.service_name = service.service.clone();
            }
            put_check_locked(&mut inner, &spec, now)
        };
        drop(stale);
        self.start_runner(&spec);
        self.notify();
        Ok(())
    }

    fn start_runner(self: &Arc<Self>, spec: &CheckSpec) {
        let Some(starter) = &self.starter else {
            return;
        };
        if let Some(runner) = starter.start(spec, Arc::downgrade(self)) {
            let replaced = self
                .inner
                .lock()
                .runners
                .insert(spec.check.check_id.clone(), runner);
            drop(replaced);
        }
    }

    /// Deregisters a service and its checks.
    pub(crate) fn remove_service(&self, id: &str) -> Result<(), StateError> {
        let stale = {
            let mut inner = self.inner.lock();
            let generation = inner.generation();
            match inner.services.get_mut(id) {
                Some(tracked) if tracked.value.is_some() => {
                    tracked.value = None;
                    tracked.in_sync = false;
                    tracked.generation = generation;
                }
                _ => return Err(StateError::UnknownService(id.to_owned())),
            }
            let owned: Vec<String> = inner
                .checks
                .iter()
                .filter(|(_, t)| t.value.as_ref().is_some_and(|c| c.service_id == id))
                .map(|(cid, _)| cid.clone())
                .collect();
            let mut stale = Vec::new();
            for cid in owned {
                stale.extend(remove_check_locked(&mut inner, &cid));
            }
            stale
        };
        drop(stale);
        self.notify();
        Ok(())
    }

    /// Deregisters a check.
    pub(crate) fn remove_check(&self, id: &str) -> Result<(), StateError> {
        let stale = {
            let mut inner = self.inner.lock();
            if inner.checks.get(id).is_none_or(|t| t.value.is_none()) {
                return Err(StateError::UnknownCheck(id.to_owned()));
            }
            remove_check_locked(&mut inner, id)
        };
        drop(stale);
        self.notify();
        Ok(())
    }

    /// `/v1/agent/check/{pass,warn,fail,update}`: through the check's TTL runner when it has one
    /// (which bounds the output, reports it here and restarts the TTL), else directly.
    pub(crate) fn set_ttl_status(
        &self,
        id: &str,
        status: CheckStatus,
        output: String,
    ) -> Result<(), StateError> {
        if self.check(id).is_none() {
            return Err(StateError::UnknownCheck(id.to_owned()));
        }
        // Called without the lock: the runner reports back through `update_check`.
        let runner = self.inner.lock().runners.get(id).cloned();
        if let Some(runner) = runner
            && runner.ttl_set_status(status, &output)
        {
            return Ok(());
        }
        self.update_check(id, status, output)
    }

    /// Sets a check's status and output (a runner's result). A status change is synced at once;
    /// an output-only change waits up to `check_update_interval`.
    pub(crate) fn update_check(
        &self,
        id: &str,
        status: CheckStatus,
        output: String,
    ) -> Result<(), StateError> {
        let now = self.now();
        let notify = {
            let mut inner = self.inner.lock();
            let interval = self.check_update_interval;
            let generation = inner.generation();
            let Some(tracked) = inner.checks.get_mut(id) else {
                return Err(StateError::UnknownCheck(id.to_owned()));
            };
            let Some(check) = &mut tracked.value else {
                return Err(StateError::UnknownCheck(id.to_owned()));
            };
            let status_changed = check.status != status;
            let output_changed = check.output != output;
            check.status = status;
            check.output = output;
            // Out of sync at once unless only the output changed on a synced check and updates
            // may wait; a new generation, so a sync already under way does not settle it.
            let notify = status_changed || (output_changed && (interval.is_zero() || !tracked.in_sync));
            if notify {
                tracked.in_sync = false;
                tracked.generation = generation;
            }
            let timing = inner.timing.entry(id.to_owned()).or_default();
            if status_changed {
                timing.deferred_until = None;
            } else if output_changed && !interval.is_zero() && timing.deferred_until.is_none() && !notify {
                timing.deferred_until = Some(now + interval);
            }
            if status == CheckStatus::Critical {
                timing.critical_since.get_or_insert(now);
            } else {
                timing.critical_since = None;
            }
            notify
        };
        if notify {
            self.notify();
        }
        Ok(())
    }

    /// Marks out of sync every check whose deferred output is due at `now`; the earliest deadline
    /// still to come.
    pub(crate) fn release_deferred(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, timing) in &mut inner.timing {
            match timing.deferred_until {
                Some(at) if at <= now => {
                    timing.deferred_until = None;
                    due.push(id.clone());
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        for id in &due {
            let generation = inner.generation();
            if let Some(tracked) = inner.checks.get_mut(id) {
                tracked.in_sync = false;
                tracked.generation = generation;
            }
        }
        drop(inner);
        if !due.is_empty() {
            self.notify();
        }
        next
    }

    /// Deregisters every service with a check critical for longer than its
    /// `DeregisterCriticalServiceAfter` at `now`; their IDs.
    pub(crate) fn reap(&self, now: Instant) -> Vec<String> {
        let doomed: Vec<String> = {
            let inner = self.inner.lock();
            let mut doomed: Vec<String> = inner
                .checks
                .values()
                .filter_map(|t| t.value.as_ref())
                .filter(|c| !c.service_id.is_empty())
                .filter(|c| !c.definition.deregister_critical_service_after.is_zero())
                .filter(|c| {
                    inner
                        .timing
                        .get(&c.check_id)
                        .and_then(|t| t.critical_since)
                        .is_some_and(|since| {
                            now.saturating_duration_since(since)
                                >= c.definition.deregister_critical_service_after
                        })
                })
                .map(|c| c.service_id.clone())
                .collect();
            doomed.dedup();
            doomed
        };
        doomed
            .into_iter()
            .filter(|id| {
                let removed = self.remove_service(id).is_ok();
                if removed {
                    tracing::info!(service = %id, "deregistering a service critical for longer than its DeregisterCriticalServiceAfter");
                }
                removed
            })
            .collect()
    }

    /// Puts a service in maintenance (a critical `_service_maintenance:<id>` check) or takes it out.
    pub(crate) fn service_maintenance(
        self: &Arc<Self>,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), StateError> {
        let name = self
            .service(id)
            .map(|s| s.service)
            .ok_or_else(|| StateError::UnknownService(id.to_owned()))?;
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        if !enable {
            // Disabling a maintenance that is not on is not an error, as in Consul.
            let _ = self.remove_check(&check_id);
            return Ok(());
        }
        if self.check(&check_id).is_some() {
            return Ok(());
        }
        let mut check = LocalCheck::new(&check_id, "Service Maintenance Mode", CheckStatus::Critical);
        check.notes = if reason.is_empty() {
            DEFAULT_SERVICE_MAINTENANCE_REASON.to_owned()
        } else {
            reason.to_owned()
        };
        check.service_id = id.to_owned();
        check.service_name = name;
        check.check_type = "maintenance".to_owned();
        self.add_check(maintenance_spec(check))
    }

    /// Puts the node in maintenance (a critical `_node_maintenance` check) or takes it out.
    pub(crate) fn node_maintenance(self: &Arc<Self>, enable: bool, reason: &str) {
        if !enable {
            let _ = self.remove_check(NODE_MAINTENANCE_CHECK);
            return;
        }
        if self.check(NODE_MAINTENANCE_CHECK).is_some() {
            return;
        }
        let mut check = LocalCheck::new(
            NODE_MAINTENANCE_CHECK,
            "Node Maintenance Mode",
            CheckStatus::Critical,
        );
        check.notes = if reason.is_empty() {
            DEFAULT_NODE_MAINTENANCE_REASON.to_owned()
        } else {
            reason.to_owned()
        };
        check.check_type = "maintenance".to_owned();
        // A node check needs no service: this cannot fail.
        let _ = self.add_check(maintenance_spec(check));
    }

    /// The service registered under `id`.
    pub(crate) fn service(&self, id: &str) -> Option<LocalService> {
        self.inner.lock().services.get(id).and_then(|t| t.value.clone())
    }

    /// Every registered service, by ID.
    pub(crate) fn services(&self) -> Vec<LocalService> {
        self.inner
            .lock()
            .services
            .values()
            .filter_map(|t| t.value.clone())
            .collect()
    }

    /// The check registered under `id`.
    pub(crate) fn check(&self, id: &str) -> Option<LocalCheck> {
        self.inner.lock().checks.get(id).and_then(|t| t.value.clone())
    }

    /// Every registered check, by ID.
    pub(crate) fn checks(&self) -> Vec<LocalCheck> {
        self.inner
            .lock()
            .checks
            .values()
            .filter_map(|t| t.value.clone())
            .collect()
    }

    /// A copy of every entry, with its flags, for the sync.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let inner = self.inner.lock();
        Snapshot {
            services: inner
                .services
                .iter()
                .map(|(id, t)| Synced {
                    id: id.clone(),
                    value: t.value.clone(),
                    in_sync: t.in_sync,
                    generation: t.generation,
                    token: t.token.clone(),
                    output_deferred: false,
                })
                .collect(),
            checks: inner
                .checks
                .iter()
                .map(|(id, t)| Synced {
                    id: id.clone(),
                    value: t.value.clone(),
                    in_sync: t.in_sync,
                    generation: t.generation,
                    token: t.token.clone(),
                    output_deferred: inner
                        .timing
                        .get(id)
                        .is_some_and(|timing| timing.deferred_until.is_some()),
                })
                .collect(),
        }
    }

    /// The catalog now holds `key` as it was at `generation`: marks it in sync, or forgets a
    /// tombstone. A later change (another generation) stays out of sync.
    pub(crate) fn mark_synced(&self, key: &EntryKey, generation: u64) {
        let mut inner = self.inner.lock();
        match key {
            EntryKey::Service(id) => settle(&mut inner.services, id, generation),
            EntryKey::Check(id) => settle(&mut inner.checks, id, generation),
        }
    }
}

fn settle<T>(entries: &mut BTreeMap<String, Tracked<T>>, id: &str, generation: u64) {
    let Some(tracked) = entries.get_mut(id) else {
        return;
    };
    if tracked.generation != generation {
        return;
    }
    if tracked.value.is_none() {
        entries.remove(id);
    } else {
        tracked.in_sync = true;
    }
}

fn maintenance_spec(check: LocalCheck) -> CheckSpec {
    CheckSpec {
        raw: serde_json::Value::Null,
        check,
        index: None,
        ttl: None,
        token: None,
    }
}

/// Stores a check (new or replacing one); the runner it replaces, to drop outside the lock.
fn put_check_locked(inner: &mut Inner, spec: &CheckSpec, now: Instant) -> Option<Arc<dyn RunningCheck>> {
    let generation = inner.generation();
    let id = spec.check.check_id.clone();
    inner.checks.insert(
        id.clone(),
        Tracked {
            value: Some(spec.check.clone()),
            in_sync: false,
            generation,
            token: spec.token.clone(),
        },
    );
    inner.timing.insert(
        id.clone(),
        CheckTiming {
            deferred_until: None,
            critical_since: (spec.check.status == CheckStatus::Critical).then_some(now),
        },
    );
    inner.runners.remove(&id)
}

/// Turns a check into a tombstone; its runner, to drop outside the lock.
fn remove_check_locked(inner: &mut Inner, id: &str) -> Option<Arc<dyn RunningCheck>> {
    let generation = inner.generation();
    if let Some(tracked) = inner.checks.get_mut(id) {
        tracked.value = None;
        tracked.in_sync = false;
        tracked.generation = generation;
    }
    inner.timing.remove(id);
    inner.runners.remove(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use serde_json::json;

    use super::super::definition::{parse_check, parse_service};
    use super::*;

    fn fixed_clock(at: Arc<Mutex<Instant>>) -> Clock {
        Arc::new(move || *at.lock())
    }

    fn state(interval: Duration) -> (Arc<LocalState>, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        (
            LocalState::new(fixed_clock(Arc::clone(&now)), interval, None),
            now,
        )
    }

    fn web() -> ServiceSpec {
        parse_service(&json!({"Name": "web", "Port": 80, "Check": {"TTL": "10s"}})).unwrap()
    }

    fn flags(state: &LocalState) -> Vec<(String, bool, bool)> {
        let s = state.snapshot();
        s.services
            .iter()
            .map(|e| (format!("s:{}", e.id), e.value.is_some(), e.in_sync))
            .chain(
                s.checks
                    .iter()
                    .map(|e| (format!("c:{}", e.id), e.value.is_some(), e.in_sync)),
            )
            .collect()
    }

    #[test]
    fn registering_and_deregistering_keeps_tombstones_until_synced() {
        let (state, _) = state(Duration::ZERO);
        state.add_service(web(), false);
        assert_eq!(
            flags(&state),
            [
                ("s:web".into(), true, false),
                ("c:service:web".into(), true, false)
            ]
        );
        let snapshot = state.snapshot();
        for e in &snapshot.services {
            state.mark_synced(&EntryKey::Service(e.id.clone()), e.generation);
        }
        for e in &snapshot.checks {
            state.mark_synced(&EntryKey::Check(e.id.clone()), e.generation);
        }
        assert!(flags(&state).iter().all(|(_, _, in_sync)| *in_sync));

        state.remove_service("web").unwrap();
        assert_eq!(
            state.remove_service("web"),
            Err(StateError::UnknownService("web".into()))
        );
        assert!(
            state.check("service:web").is_none(),
            "a service's checks go with it"
        );
        let snapshot = state.snapshot();
        assert_eq!(
            flags(&state),
            [
                ("s:web".into(), false, false),
                ("c:service:web".into(), false, false)
            ]
        );
        for e in &snapshot.services {
            state.mark_synced(&EntryKey::Service(e.id.clone()), e.generation);
        }
        for e in &snapshot.checks {
            state.mark_synced(&EntryKey::Check(e.id.clone()), e.generation);
        }
        assert!(flags(&state).is_empty());
    }

    #[test]
    fn a_change_after_the_snapshot_stays_out_of_sync() {
        let (state, _) = state(Duration::ZERO);
        state.add_service(web(), false);
        let before = state.snapshot();
        state
            .update_check("service:web", CheckStatus::Passing, "ok".into())
            .unwrap();
        let check = &before.checks[0];
        state.mark_synced(&EntryKey::Check(check.id.clone()), check.generation);
        let snapshot = state.snapshot();
        assert_eq!(
            snapshot.checks[0].value.as_ref().unwrap().status,
            CheckStatus::Passing
        );
        assert!(
            !snapshot.checks[0].in_sync,
            "the update came after the snapshot that was synced"
        );
    }

    #[test]
    fn output_only_changes_wait_for_the_update_interval() {
        let (state, now) = state(Duration::from_secs(300));
        state.add_service(web(), false);
        state
            .update_check("service:web", CheckStatus::Passing, "a".into())
            .unwrap();
        let s = state.snapshot();
        state.mark_synced(&EntryKey::Check("service:web".into()), s.checks[0].generation);
        // Output only: stays in sync, deferred.
        state
            .update_check("service:web", CheckStatus::Passing, "b".into())
            .unwrap();
        let s = state.snapshot();
        assert!(s.checks[0].in_sync && s.checks[0].output_deferred);
        let start = *now.lock();
        assert_eq!(
            state.release_deferred(start),
            Some(start + Duration::from_secs(300))
        );
        assert!(state.snapshot().checks[0].in_sync);
        assert_eq!(state.release_deferred(start + Duration::from_secs(300)), None);
        assert!(!state.snapshot().checks[0].in_sync);
        // A status change is out of sync at once.
        let s = state.snapshot();
        state.mark_synced(&EntryKey::Check("service:web".into()), s.checks[0].generation);
        state
            .update_check("service:web", CheckStatus::Warning, "b".into())
            .unwrap();
        assert!(!state.snapshot().checks[0].in_sync);
    }

    #[test]
    fn replace_existing_checks_drops_the_ones_left_out() {
        let (state, _) = state(Duration::ZERO);
        state.add_service(web(), false);
        state
            .add_check(parse_check(&json!({"Name": "extra", "TTL": "5s", "ServiceID": "web"})).unwrap())
            .unwrap();
        state.add_service(web(), false);
        assert!(state.check("extra").is_some());
        assert_eq!(state.check("extra").unwrap().service_name, "web");
        state.add_service(web(), true);
        assert!(state.check("extra").is_none());
        assert!(state.check("service:web").is_some());
        assert_eq!(
            state.add_check(parse_check(&json!({"Name": "x", "TTL": "5s", "ServiceID": "nope"})).unwrap()),
            Err(StateError::CheckServiceMissing("nope".into()))
        );
        assert_eq!(
            state.update_check("nope", CheckStatus::Passing, String::new()),
            Err(StateError::UnknownCheck("nope".into()))
        );
    }

    #[test]
    fn maintenance_adds_and_removes_critical_checks_with_consul_s_notes() {
        let (state, _) = state(Duration::ZERO);
        state.add_service(web(), false);
        state.service_maintenance("web", true, "").unwrap();
        let check = state.check("_service_maintenance:web").unwrap();
        assert_eq!(check.status, CheckStatus::Critical);
        assert_eq!(check.notes, DEFAULT_SERVICE_MAINTENANCE_REASON);
        assert_eq!(check.service_name, "web");
        state.service_maintenance("web", false, "").unwrap();
        assert!(state.check("_service_maintenance:web").is_none());
        assert_eq!(
            state.service_maintenance("db", true, ""),
            Err(StateError::UnknownService("db".into()))
        );
        state.node_maintenance(true, "upgrading");
        assert_eq!(state.check("_node_maintenance").unwrap().notes, "upgrading");
        state.node_maintenance(false, "");
        assert!(state.check("_node_maintenance").is_none());
    }

    #[test]
    fn services_critical_too_long_are_reaped() {
        let (state, now) = state(Duration::ZERO);
        let spec = parse_service(&json!({"Name": "db", "Check": {"TTL": "10s",
            "DeregisterCriticalServiceAfter": "1m"}}))
        .unwrap();
        state.add_service(spec, false);
        state.add_service(web(), false);
        let start = *now.lock();
        assert!(state.reap(start + Duration::from_secs(59)).is_empty());
        assert_eq!(state.reap(start + Duration::from_secs(60)), ["db"]);
        assert!(state.service("db").is_none());
        assert!(
            state.service("web").is_some(),
            "no DeregisterCriticalServiceAfter: kept"
        );
        // Passing resets the clock.
        let spec = parse_service(&json!({"Name": "db", "Check": {"TTL": "10s",
            "DeregisterCriticalServiceAfter": "1m"}}))
        .unwrap();
        state.add_service(spec, false);
        *now.lock() = start + Duration::from_secs(120);
        state
            .update_check("service:db", CheckStatus::Passing, String::new())
            .unwrap();
        assert!(state.reap(start + Duration::from_secs(300)).is_empty());
    }
}
