//! Lock safety of Consul sessions: `?acquire`, `?release`, invalidation, lock-delay and fencing tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{Anomaly, AnomalyClass, KvOutcome, LockEvent, LockObservation};

/// An `?acquire` or `?release`.
struct Attempt<'e> {
    at: usize,
    client: u64,
    key: &'e str,
    session: &'e str,
    invoked: u64,
    completed: u64,
    outcome: &'e KvOutcome,
}

impl Attempt<'_> {
    fn succeeded(&self) -> bool {
        matches!(self.outcome, KvOutcome::Written { ok: true })
    }

    fn may_have_happened(&self) -> bool {
        matches!(
            self.outcome,
            KvOutcome::Written { ok: true } | KvOutcome::Indeterminate
        )
    }

    fn describe(&self, what: &str) -> String {
        format!(
            "#{}: client {} {what} by session {} [{}, {}] ns -> {}",
            self.at,
            self.client,
            self.session,
            self.invoked,
            self.completed,
            match self.outcome {
                KvOutcome::Written { ok } => ok.to_string(),
                KvOutcome::Indeterminate => "indeterminate".to_owned(),
                KvOutcome::Failed => "failed".to_owned(),
                KvOutcome::Read { .. } => "a read's answer".to_owned(),
            }
        )
    }
}

fn anomaly(class: AnomalyClass, key: &str, detail: String) -> Anomaly {
    Anomaly {
        class,
        key: key.to_owned(),
        detail,
    }
}

fn describe_observation(at: usize, o: &LockObservation) -> String {
    format!(
        "#{at}: observed ModifyIndex {} LockIndex {} session {} at {} ns",
        o.modify_index,
        o.lock_index,
        o.session.as_deref().unwrap_or("(none)"),
        o.observed_ns
    )
}

/// Checks a lock history (keys start absent, and every way a session can lose its locks is recorded
/// as [`LockEvent::SessionInvalidated`]):
///
/// - [`AnomalyClass::LockDoubleHolder`]: two sessions seen holding a key at one `ModifyIndex` or one
///   `LockIndex` (observations and accepted fencing tokens), or an acquisition that succeeded entirely
///   while another session's successful acquisition still definitely held the key (before its release
///   or invalidation was even sent).
/// - [`AnomalyClass::LockIndexSkip`]: `LockIndex` falling as `ModifyIndex` grows, or exceeding the
///   number of acquisitions that may have happened before it was read.
/// - [`AnomalyClass::LockDelayViolated`]: another session acquired a key that an invalidated session
///   held, answered before the lock-delay counted from the invalidation's earliest moment was over.
/// - [`AnomalyClass::FencingBackwards`]: a fencing token lower than one the resource already accepted
///   for the key was accepted, or presented by a session that had not been invalidated.
pub fn check_locks(events: &[LockEvent]) -> Vec<Anomaly> {
    let mut acquires: Vec<Attempt<'_>> = Vec::new();
    let mut releases: Vec<Attempt<'_>> = Vec::new();
    let mut invalidated: HashMap<&str, Vec<(usize, u64, u64, u64)>> = HashMap::new();
    let mut observed: BTreeMap<&str, Vec<(usize, &LockObservation)>> = BTreeMap::new();
    let mut fenced: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (at, event) in events.iter().enumerate() {
        match event {
            LockEvent::Acquire {
                client,
                key,
                session,
                invoked_ns,
                completed_ns,
                outcome,
            }
            | LockEvent::Release {
                client,
                key,
                session,
                invoked_ns,
                completed_ns,
                outcome,
            } => {
                let attempt = Attempt {
                    at,
                    client: *client,
                    key,
                    session,
                    invoked: *invoked_ns,
                    completed: (*completed_ns).max(*invoked_ns),
                    outcome,
                };
                if matches!(event, LockEvent::Acquire { .. }) {
                    acquires.push(attempt);
                } else {
                    releases.push(attempt);
                }
            }
            LockEvent::SessionInvalidated {
                session,
                invoked_ns,
                completed_ns,
                lock_delay_ns,
            } => {
                invalidated.entry(session.as_str()).or_default().push((
                    at,
                    *invoked_ns,
                    *completed_ns,
                    *lock_delay_ns,
                ));
            }
            LockEvent::Observed(o) => observed.entry(o.key.as_str()).or_default().push((at, o)),
            LockEvent::Fenced { key, .. } => fenced.entry(key.as_str()).or_default().push(at),
        }
    }
    let invalidated_by = |session: &str| -> Option<u64> {
        invalidated
            .get(session)
            .and_then(|v| v.iter().map(|&(_, invoked, _, _)| invoked).min())
    };
    // When a successful acquisition's hold may first have ended: its release or invalidation was sent.
    // A release whose outcome is unknown may take effect at any time after it was sent, so one sent
    // before the acquisition (by a client that gave up on it and acquired again) may still end it.
    let hold_ends = |a: &Attempt<'_>| -> u64 {
        let release = releases
            .iter()
            .filter(|r| may_end_hold(r, a))
            .map(|r| r.invoked.max(a.invoked))
            .min();
        let invalidation = invalidated
            .get(a.session)
            .into_iter()
            .flatten()
            .filter(|&&(_, _, completed, _)| completed >= a.invoked)
            .map(|&(_, invoked, _, _)| invoked)
            .min();
        release.into_iter().chain(invalidation).min().unwrap_or(u64::MAX)
    };

    let mut anomalies = Vec::new();
    double_holders(events, &acquires, &observed, &fenced, &hold_ends, &mut anomalies);
    lock_index(&acquires, &observed, &mut anomalies);

    // Lock-delay: after a session holding a key is invalidated, no other session may acquire it
    // before the delay has passed.
    for (&session, invalidations) in &invalidated {
        for &(inv_at, invoked, completed, delay) in invalidations {
            let held = acquires.iter().filter(|a| {
                a.session == session
                    && a.succeeded()
                    && a.completed < invoked
                    && !releases
                        .iter()
                        .any(|r| may_end_hold(r, a) && r.invoked <= completed)
            });
            for holding in held {
                let window_end = invoked.saturating_add(delay);
                for other in acquires.iter().filter(|b| {
                    b.key == holding.key
                        && b.session != session
                        && b.succeeded()
                        && b.completed >= invoked
                        && b.completed < window_end
                }) {
                    anomalies.push(anomaly(
                        AnomalyClass::LockDelayViolated,
                        holding.key,
                        format!(
                            "{}\nheld the key when #{inv_at} invalidated the session at [{invoked}, {completed}] \
                             ns with a lock-delay of {delay} ns, yet\n{}\nwas answered before {window_end} ns",
                            holding.describe("acquire"),
                            other.describe("acquire")
                        ),
                    ));
                }
            }
        }
    }

    // Fencing tokens: per key in time order, never below one already accepted.
    for (&key, ats) in &fenced {
        let mut tokens: Vec<(u64, usize, u64, &str, bool)> = ats
            .iter()
            .filter_map(|&at| match events.get(at) {
                Some(LockEvent::Fenced {
                    lock_index,
                    session,
                    accepted,
                    at_ns,
                    ..
                }) => Some((*at_ns, at, *lock_index, session.as_str(), *accepted)),
                _ => None,
            })
            .collect();
        tokens.sort_unstable();
        let mut highest: Option<(u64, usize)> = None;
        for &(at_ns, at, lock_index, session, accepted) in &tokens {
            if let Some((top, top_at)) = highest.filter(|&(top, _)| lock_index < top) {
                let lost_lock = invalidated_by(session).is_some_and(|t| t <= at_ns);
                if accepted || !lost_lock {
                    let verb = if accepted {
                        "was accepted"
                    } else {
                        "was presented by a session still valid"
                    };
                    anomalies.push(anomaly(
                        AnomalyClass::FencingBackwards,
                        key,
                        format!(
                            "#{at}: token (LockIndex {lock_index}, session {session}) at {at_ns} ns {verb} after \
                             #{top_at} had a token with LockIndex {top} accepted"
                        ),
                    ));
                }
            }
            if accepted && highest.is_none_or(|(top, _)| lock_index > top) {
                highest = Some((lock_index, at));
            }
        }
    }
    anomalies
}

/// Whether release `r` may end the hold that acquisition `a` took: same key and session, it may
/// have happened, and it was sent after the acquisition or its outcome is unknown (a release sent
/// earlier whose answer never came may be applied after the acquisition).
fn may_end_hold(r: &Attempt<'_>, a: &Attempt<'_>) -> bool {
    r.key == a.key
        && r.session == a.session
        && r.may_have_happened()
        && (r.invoked >= a.invoked || matches!(r.outcome, KvOutcome::Indeterminate))
}

/// Two sessions holding one key at once.
fn double_holders(
    events: &[LockEvent],
    acquires: &[Attempt<'_>],
    observed: &BTreeMap<&str, Vec<(usize, &LockObservation)>>,
    fenced: &BTreeMap<&str, Vec<usize>>,
    hold_ends: &dyn Fn(&Attempt<'_>) -> u64,
    anomalies: &mut Vec<Anomaly>,
) {
    let keys: BTreeSet<&str> = observed.keys().chain(fenced.keys()).copied().collect();
    for key in keys {
        let observations = observed.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut at_modify: HashMap<u64, (usize, &LockObservation)> = HashMap::new();
        let mut at_lock: HashMap<u64, (String, String)> = HashMap::new();
        for &(at, o) in observations {
            match at_modify.get(&o.modify_index) {
                Some(&(first, f)) if f.session != o.session => anomalies.push(anomaly(
                    AnomalyClass::LockDoubleHolder,
                    key,
                    format!(
                        "two holders at ModifyIndex {}:\n{}\n{}",
                        o.modify_index,
                        describe_observation(first, f),
                        describe_observation(at, o)
                    ),
                )),
                Some(_) => {}
                None => {
                    at_modify.insert(o.modify_index, (at, o));
                }
            }
            if let Some(session) = &o.session {
                note_lock_index(
                    key,
                    o.lock_index,
                    session,
                    describe_observation(at, o),
                    &mut at_lock,
                    anomalies,
                );
            }
        }
        if let Some(ats) = fenced.get(key) {
            for &at in ats {
                if let Some(LockEvent::Fenced {
                    lock_index,
                    session,
                    accepted: true,
                    at_ns,
                    client,
                    ..
                }) = events.get(at)
                {
                    let what = format!(
                        "#{at}: client {client} token (LockIndex {lock_index}, session {session}) accepted at \
                         {at_ns} ns"
                    );
                    note_lock_index(key, *lock_index, session, what, &mut at_lock, anomalies);
                }
            }
        }
    }
    for first in acquires.iter().filter(|a| a.succeeded()) {
        let end = hold_ends(first);
        for second in acquires.iter().filter(|b| {
            b.succeeded()
                && b.key == first.key
                && b.session != first.session
                && b.invoked > first.completed
                && b.completed < end
        }) {
            anomalies.push(anomaly(
                AnomalyClass::LockDoubleHolder,
                first.key,
                format!(
                    "{}\nstill held the key (not released nor invalidated before {}) when\n{}\nsucceeded",
                    first.describe("acquire"),
                    if end == u64::MAX {
                        "the end".to_owned()
                    } else {
                        format!("{end} ns")
                    },
                    second.describe("acquire")
                ),
            ));
        }
    }
}

fn note_lock_index(
    key: &str,
    lock_index: u64,
    session: &str,
    what: String,
    at_lock: &mut HashMap<u64, (String, String)>,
    anomalies: &mut Vec<Anomaly>,
) {
    match at_lock.get(&lock_index) {
        Some((holder, first)) if holder != session => {
            anomalies.push(anomaly(
                AnomalyClass::LockDoubleHolder,
                key,
                format!("two sessions at LockIndex {lock_index}:\n{first}\n{what}"),
            ));
        }
        Some(_) => {}
        None => {
            at_lock.insert(lock_index, (session.to_owned(), what));
        }
    }
}

/// `LockIndex` grows by one per acquisition.
fn lock_index(
    acquires: &[Attempt<'_>],
    observed: &BTreeMap<&str, Vec<(usize, &LockObservation)>>,
    anomalies: &mut Vec<Anomaly>,
) {
    for (&key, observations) in observed {
        let mut by_modify: Vec<(usize, &LockObservation)> = observations.clone();
        by_modify.sort_by_key(|&(at, o)| (o.modify_index, at));
        for pair in by_modify.windows(2) {
            let [(a_at, a), (b_at, b)] = pair else { continue };
            if b.lock_index < a.lock_index {
                anomalies.push(anomaly(
                    AnomalyClass::LockIndexSkip,
                    key,
                    format!(
                        "LockIndex fell as ModifyIndex grew:\n{}\n{}",
                        describe_observation(*a_at, a),
                        describe_observation(*b_at, b)
                    ),
                ));
            }
        }
        for &(at, o) in observations {
            let possible = acquires
                .iter()
                .filter(|x| x.key == key && x.may_have_happened() && x.invoked <= o.observed_ns)
                .count() as u64;
            if o.lock_index > possible {
                anomalies.push(anomaly(
                    AnomalyClass::LockIndexSkip,
                    key,
                    format!(
                        "{}\nbut only {possible} acquisitions may have happened by then (LockIndex grows by \
                         one per acquisition)",
                        describe_observation(at, o)
                    ),
                ));
            }
        }
    }
}
