//! Lock histories: each kind of violation is flagged, a clean history passes.

use tribune_check::*;

const MS: u64 = 1_000_000;

fn acquire(client: u64, session: &str, from: u64, to: u64, ok: bool) -> LockEvent {
    LockEvent::Acquire {
        client,
        key: "lock".into(),
        session: session.into(),
        invoked_ns: from * MS,
        completed_ns: to * MS,
        outcome: KvOutcome::Written { ok },
    }
}

fn release(client: u64, session: &str, from: u64, to: u64) -> LockEvent {
    LockEvent::Release {
        client,
        key: "lock".into(),
        session: session.into(),
        invoked_ns: from * MS,
        completed_ns: to * MS,
        outcome: KvOutcome::Written { ok: true },
    }
}

fn observed(modify_index: u64, lock_index: u64, session: Option<&str>, at: u64) -> LockEvent {
    LockEvent::Observed(LockObservation {
        key: "lock".into(),
        modify_index,
        lock_index,
        session: session.map(Into::into),
        observed_ns: at * MS,
    })
}

fn fenced(client: u64, session: &str, lock_index: u64, accepted: bool, at: u64) -> LockEvent {
    LockEvent::Fenced {
        client,
        key: "lock".into(),
        lock_index,
        session: session.into(),
        accepted,
        at_ns: at * MS,
    }
}

fn invalidated(session: &str, from: u64, to: u64, delay_ms: u64) -> LockEvent {
    LockEvent::SessionInvalidated {
        session: session.into(),
        invoked_ns: from * MS,
        completed_ns: to * MS,
        lock_delay_ns: delay_ms * MS,
    }
}

fn classes(events: &[LockEvent]) -> Vec<AnomalyClass> {
    let mut found: Vec<_> = check_locks(events).into_iter().map(|a| a.class).collect();
    found.sort();
    found.dedup();
    found
}

/// Two clients take turns: acquire, observe, fence, release; then one session is invalidated and the
/// other acquires after the lock-delay.
fn clean() -> Vec<LockEvent> {
    vec![
        acquire(1, "s1", 0, 1, true),
        acquire(2, "s2", 0, 2, false),
        observed(10, 1, Some("s1"), 3),
        fenced(1, "s1", 1, true, 4),
        release(1, "s1", 5, 6),
        observed(11, 1, None, 7),
        acquire(2, "s2", 8, 9, true),
        observed(12, 2, Some("s2"), 10),
        fenced(2, "s2", 2, true, 11),
        // s1's late token is refused: it no longer holds the lock and its session is gone.
        invalidated("s1", 12, 13, 0),
        fenced(1, "s1", 1, false, 14),
        invalidated("s2", 20, 21, 15),
        acquire(1, "s3", 22, 40, true),
        observed(13, 3, Some("s3"), 41),
        fenced(1, "s3", 3, true, 42),
    ]
}

#[test]
fn a_clean_history_passes() {
    let anomalies = check_locks(&clean());
    assert!(anomalies.is_empty(), "{anomalies:#?}");
}

#[test]
fn two_holders_at_one_index_are_flagged() {
    let mut events = clean();
    events.push(observed(12, 2, Some("s9"), 10));
    assert_eq!(classes(&events), [AnomalyClass::LockDoubleHolder]);
    // Two successful acquisitions while the first was never released.
    let events = [acquire(1, "s1", 0, 1, true), acquire(2, "s2", 2, 3, true)];
    let found = check_locks(&events);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].class, AnomalyClass::LockDoubleHolder);
    assert!(found[0].to_string().contains("#1"), "{}", found[0]);
    // Two tokens at one LockIndex accepted for different sessions.
    let events = [fenced(1, "s1", 4, true, 1), fenced(2, "s2", 4, true, 2)];
    assert_eq!(classes(&events), [AnomalyClass::LockDoubleHolder]);
}

#[test]
fn lock_index_not_one_per_acquisition_is_flagged() {
    let mut events = clean();
    // s2's acquisition made LockIndex 2; an observation of 5 at the same time cannot be.
    events.insert(8, observed(12, 5, Some("s2"), 10));
    events.remove(7);
    assert_eq!(classes(&events), [AnomalyClass::LockIndexSkip]);
    // Falling as ModifyIndex grows.
    let events = [
        acquire(1, "s1", 0, 1, true),
        release(1, "s1", 2, 3),
        acquire(1, "s2", 4, 5, true),
        observed(20, 2, Some("s2"), 6),
        observed(21, 1, Some("s2"), 7),
    ];
    assert!(classes(&events).contains(&AnomalyClass::LockIndexSkip));
}

#[test]
fn acquisition_inside_lock_delay_is_flagged() {
    let events = [
        acquire(1, "s1", 0, 1, true),
        invalidated("s1", 10, 11, 15),
        acquire(2, "s2", 12, 13, true),
    ];
    assert_eq!(classes(&events), [AnomalyClass::LockDelayViolated]);
    // After the delay it is fine.
    let events = [
        acquire(1, "s1", 0, 1, true),
        invalidated("s1", 10, 11, 15),
        acquire(2, "s2", 26, 27, true),
    ];
    assert!(classes(&events).is_empty());
    // A release is not an invalidation: no delay.
    let events = [
        acquire(1, "s1", 0, 1, true),
        release(1, "s1", 2, 3),
        acquire(2, "s2", 4, 5, true),
    ];
    assert!(classes(&events).is_empty());
}

#[test]
fn fencing_token_going_backwards_is_flagged() {
    // The resource accepted a lower token.
    let events = [fenced(1, "s1", 3, true, 1), fenced(2, "s2", 2, true, 2)];
    assert_eq!(classes(&events), [AnomalyClass::FencingBackwards]);
    // A session that was never invalidated presented an older token than one already accepted.
    let events = [fenced(1, "s1", 3, true, 1), fenced(2, "s2", 2, false, 2)];
    assert_eq!(classes(&events), [AnomalyClass::FencingBackwards]);
}

#[test]
fn lock_events_round_trip_as_json_lines() {
    let events = clean();
    let text = to_jsonl(&events).unwrap();
    assert!(text.contains("\"type\":\"observed\""), "{text}");
    let back: Vec<LockEvent> = read_jsonl(&text).unwrap();
    assert_eq!(back, events);
}

/// A release whose answer never came may be applied later, even after the same session acquired
/// the key again (a server paused with the request in its socket). The session's later hold may
/// thus have ended at any time, so another session's acquisition and the absence of a lock-delay
/// at its destroy are not violations. The same history with the release answered is one.
#[test]
fn an_unanswered_release_may_end_a_later_hold_of_the_same_session() {
    let unanswered = LockEvent::Release {
        client: 1,
        key: "lock".into(),
        session: "s1".into(),
        invoked_ns: 2 * MS,
        completed_ns: 3 * MS,
        outcome: KvOutcome::Indeterminate,
    };
    let events = [
        acquire(1, "s1", 0, 1, true),
        unanswered,
        acquire(1, "s1", 4, 5, true),
        acquire(2, "s2", 6, 7, true),
        release(2, "s2", 8, 9),
        invalidated("s1", 10, 11, 15),
        acquire(3, "s3", 12, 13, true),
    ];
    assert!(classes(&events).is_empty(), "{:?}", check_locks(&events));
    let answered = [
        acquire(1, "s1", 0, 1, true),
        release(1, "s1", 2, 3),
        acquire(1, "s1", 4, 5, true),
        acquire(2, "s2", 6, 7, true),
    ];
    assert_eq!(classes(&answered), [AnomalyClass::LockDoubleHolder]);
}
