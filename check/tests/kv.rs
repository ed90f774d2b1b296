//! Hand-written histories that must fail or pass, generated ones, a mutation, the budget.

use tribune_check::generate::{GenOptions, generate_history};
use tribune_check::*;

const MS: u64 = 1_000_000;

fn op(client: u64, op: KvOp, outcome: KvOutcome, from_ms: u64, to_ms: u64) -> KvOperation {
    KvOperation {
        client,
        key: "k".to_owned(),
        op,
        outcome,
        invoked_ns: from_ms * MS,
        completed_ns: to_ms * MS,
        server: None,
    }
}

fn put(client: u64, value: &str, from: u64, to: u64) -> KvOperation {
    op(
        client,
        KvOp::Write { value: value.into() },
        KvOutcome::Written { ok: true },
        from,
        to,
    )
}

fn cas(client: u64, index: u64, value: &str, ok: bool, from: u64, to: u64) -> KvOperation {
    op(
        client,
        KvOp::Cas {
            index,
            value: value.into(),
        },
        KvOutcome::Written { ok },
        from,
        to,
    )
}

fn get(client: u64, mode: ReadMode, value: Option<(&str, u64)>, from: u64, to: u64) -> KvOperation {
    let outcome = KvOutcome::Read {
        value: value.map(|(v, _)| v.to_owned()),
        modify_index: value.map(|(_, i)| i),
    };
    op(client, KvOp::Read { mode }, outcome, from, to)
}

fn read(client: u64, value: Option<(&str, u64)>, from: u64, to: u64) -> KvOperation {
    get(client, ReadMode::Default, value, from, to)
}

fn indeterminate(mut o: KvOperation) -> KvOperation {
    o.outcome = KvOutcome::Indeterminate;
    o
}

fn verdict(history: &[KvOperation]) -> CheckReport {
    check_kv(history, &CheckOptions::default())
}

fn must_fail(history: &[KvOperation]) -> CheckReport {
    let report = verdict(history);
    assert_eq!(report.verdict, Verdict::Violation, "{report}");
    assert!(report.keys[0].explanation.is_some());
    report
}

fn must_pass(history: &[KvOperation]) {
    let report = verdict(history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
}

#[test]
fn stale_read_after_a_completed_write_fails() {
    let report = must_fail(&[
        put(1, "a", 0, 1),
        read(2, Some(("a", 5)), 2, 3),
        put(1, "b", 4, 5),
        read(2, Some(("a", 5)), 6, 7),
    ]);
    let text = report.to_string();
    assert!(text.contains("#3"), "the report names the stale read: {text}");
    // The same read in ?stale mode is left out.
    let mut h = vec![
        put(1, "a", 0, 1),
        read(2, Some(("a", 5)), 2, 3),
        put(1, "b", 4, 5),
    ];
    h.push(get(2, ReadMode::Stale, Some(("a", 5)), 6, 7));
    must_pass(&h);
}

#[test]
fn lost_acknowledged_write_fails() {
    let h = [
        put(1, "a", 0, 1),
        put(2, "b", 2, 3),
        get(3, ReadMode::Consistent, Some(("a", 5)), 4, 5),
    ];
    must_fail(&h);
    let lost = lost_writes(&h);
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].class, AnomalyClass::LostWrite);
    assert!(lost[0].detail.contains("#1"), "{}", lost[0]);
    // Overwritten by a concurrent write, it is not lost.
    let fine = [
        put(1, "a", 0, 3),
        put(2, "b", 1, 2),
        get(3, ReadMode::Consistent, Some(("a", 5)), 4, 5),
    ];
    assert!(lost_writes(&fine).is_empty());
    must_pass(&fine);
    // A write acknowledged before a final 404 with no delete after it is lost.
    let gone = [put(1, "a", 0, 1), get(3, ReadMode::Consistent, None, 4, 5)];
    assert_eq!(lost_writes(&gone).len(), 1);
}

#[test]
fn double_cas_success_on_one_index_fails() {
    must_fail(&[
        put(1, "a", 0, 1),
        read(1, Some(("a", 7)), 2, 3),
        cas(1, 7, "b", true, 4, 6),
        cas(2, 7, "c", true, 4, 6),
    ]);
    // One of them succeeding is fine, whichever.
    must_pass(&[
        put(1, "a", 0, 1),
        read(1, Some(("a", 7)), 2, 3),
        cas(1, 7, "b", false, 4, 6),
        cas(2, 7, "c", true, 4, 6),
    ]);
}

#[test]
fn cas_zero_only_on_an_absent_key() {
    must_pass(&[cas(1, 0, "a", true, 0, 1), cas(2, 0, "b", false, 2, 3)]);
    must_fail(&[cas(1, 0, "a", true, 0, 1), cas(2, 0, "b", true, 2, 3)]);
}

#[test]
fn non_monotonic_reads_fail() {
    // Two sequential reads while two writes are in flight: the second goes back.
    must_fail(&[
        put(1, "a", 0, 1),
        put(2, "b", 2, 20),
        read(3, Some(("b", 9)), 3, 4),
        read(3, Some(("a", 5)), 5, 6),
    ]);
    // The other order is linearizable.
    must_pass(&[
        put(1, "a", 0, 1),
        put(2, "b", 2, 20),
        read(3, Some(("a", 5)), 3, 4),
        read(3, Some(("b", 9)), 5, 6),
    ]);
}

#[test]
fn a_value_never_written_fails() {
    let report = must_fail(&[put(1, "a", 0, 1), read(2, Some(("ghost", 3)), 2, 3)]);
    assert!(report.to_string().contains("no write"), "{report}");
    // A value only a refused write carried is as much a phantom.
    let refused = op(1, KvOp::Write { value: "x".into() }, KvOutcome::Failed, 0, 1);
    must_fail(&[refused, read(2, Some(("x", 3)), 2, 3)]);
}

#[test]
fn modify_index_conflicts_fail() {
    must_fail(&[
        put(1, "a", 0, 1),
        read(2, Some(("a", 3)), 2, 3),
        read(2, Some(("a", 4)), 4, 5),
    ]);
    must_fail(&[
        put(1, "a", 0, 1),
        put(1, "b", 2, 3),
        read(2, Some(("a", 3)), 4, 5),
        read(2, Some(("b", 3)), 6, 7),
    ]);
    // Writes must be linearized in ModifyIndex order: b (index 4) cannot precede a (index 6).
    must_fail(&[
        put(1, "b", 0, 1),
        put(2, "a", 2, 3),
        read(3, Some(("a", 6)), 4, 5),
        read(3, Some(("b", 4)), 6, 7),
    ]);
}

#[test]
fn indeterminate_writes_that_did_and_did_not_happen_pass() {
    // It happened: a later read sees it.
    must_pass(&[
        put(1, "a", 0, 1),
        indeterminate(put(2, "b", 2, 3)),
        read(3, Some(("b", 9)), 50, 51),
    ]);
    // It happened long after its client gave up.
    must_pass(&[
        put(1, "a", 0, 1),
        indeterminate(put(2, "b", 2, 3)),
        read(3, Some(("a", 5)), 10, 11),
        read(3, Some(("b", 9)), 50, 51),
    ]);
    // It never happened.
    must_pass(&[
        put(1, "a", 0, 1),
        indeterminate(put(2, "b", 2, 3)),
        read(3, Some(("a", 5)), 50, 51),
    ]);
    // A failed CAS needs it to have happened, though nobody read it.
    must_pass(&[
        put(1, "a", 0, 1),
        read(1, Some(("a", 5)), 2, 3),
        indeterminate(put(2, "b", 4, 5)),
        cas(1, 5, "c", false, 10, 11),
    ]);
    // But it cannot take effect before it was sent.
    must_fail(&[
        put(1, "a", 0, 1),
        read(3, Some(("b", 9)), 2, 3),
        indeterminate(put(2, "b", 4, 5)),
    ]);
    // And a failed write never happened.
    let failed = op(2, KvOp::Write { value: "b".into() }, KvOutcome::Failed, 2, 3);
    must_pass(&[put(1, "a", 0, 1), failed, read(3, Some(("a", 5)), 10, 11)]);
}

#[test]
fn reads_that_claim_nothing_are_left_out() {
    let timed_out = indeterminate(read(3, Some(("zzz", 1)), 2, 3));
    let errored = op(
        3,
        KvOp::Read {
            mode: ReadMode::Default,
        },
        KvOutcome::Failed,
        4,
        5,
    );
    must_pass(&[
        put(1, "a", 0, 1),
        timed_out,
        errored,
        read(3, Some(("a", 5)), 6, 7),
    ]);
}

#[test]
fn generated_histories_pass() {
    for seed in 0..40 {
        let options = GenOptions {
            seed,
            operations: 600,
            keys: 1 + (seed as usize % 4),
            clients: 2 + (seed as usize % 7),
            indeterminate: 0.05,
        };
        let history = generate_history(&options);
        let report = verdict(&history);
        assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}: {report}");
        assert!(check_stale_reads(&history).is_empty(), "seed {seed}");
        assert!(
            lost_writes(&history).is_empty(),
            "seed {seed}: {:?}",
            lost_writes(&history)
        );
    }
}

#[test]
fn the_benchmark_generator_at_2000_operations_passes() {
    let history = generate_history(&GenOptions {
        seed: 7,
        operations: 2_000,
        keys: 8,
        clients: 8,
        indeterminate: 0.02,
    });
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!(report.keys.len(), 8);
}

/// Makes one read return a value that was definitely overwritten before the read was sent.
fn mutate(history: &mut [KvOperation]) -> Option<usize> {
    let effective = |o: &KvOperation| {
        matches!(o.op, KvOp::Write { .. } | KvOp::Cas { .. } | KvOp::Delete)
            && o.outcome == KvOutcome::Written { ok: true }
    };
    for r in 0..history.len() {
        let reader = &history[r];
        if !matches!(
            reader.op,
            KvOp::Read {
                mode: ReadMode::Consistent
            }
        ) || !matches!(reader.outcome, KvOutcome::Read { .. })
        {
            continue;
        }
        for w in 0..history.len() {
            let old = &history[w];
            let KvOp::Write { value } = &old.op else { continue };
            if !effective(old) || old.key != reader.key || old.completed_ns >= reader.invoked_ns {
                continue;
            }
            let overwritten = history.iter().any(|o2| {
                effective(o2)
                    && o2.key == old.key
                    && o2.invoked_ns > old.completed_ns
                    && o2.completed_ns < reader.invoked_ns
            });
            if overwritten {
                let value = value.clone();
                history[r].outcome = KvOutcome::Read {
                    value: Some(value),
                    modify_index: None,
                };
                return Some(r);
            }
        }
    }
    None
}

#[test]
fn a_mutated_generated_history_fails() {
    for seed in 0..10 {
        let mut history = generate_history(&GenOptions {
            seed,
            operations: 400,
            keys: 2,
            clients: 4,
            indeterminate: 0.02,
        });
        assert_eq!(verdict(&history).verdict, Verdict::Linearizable);
        let at = mutate(&mut history).expect("a read to make stale");
        let report = verdict(&history);
        assert_eq!(
            report.verdict,
            Verdict::Violation,
            "seed {seed}, mutated #{at}: {report}"
        );
    }
}

#[test]
fn a_tiny_budget_gives_unknown_never_a_pass() {
    let history = generate_history(&GenOptions {
        seed: 3,
        operations: 2_000,
        keys: 1,
        clients: 8,
        indeterminate: 0.02,
    });
    let report = check_kv(
        &history,
        &CheckOptions {
            step_budget: 100,
            ..CheckOptions::default()
        },
    );
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert!(report.keys[0].steps <= 100);
}

#[test]
fn overall_verdict_combines_keys() {
    let mut other = put(1, "x", 0, 1);
    other.key = "other".into();
    let mut history = vec![
        other,
        put(1, "a", 0, 1),
        put(1, "b", 2, 3),
        read(2, Some(("a", 1)), 4, 5),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::Violation);
    assert_eq!(
        report.keys.iter().map(|k| k.verdict).collect::<Vec<_>>(),
        [Verdict::Violation, Verdict::Linearizable]
    );
    assert_eq!(report.anomalies().len(), 1);
    history.truncate(3);
    assert_eq!(verdict(&history).verdict, Verdict::Linearizable);
}

#[test]
fn stale_reads_phantoms_and_going_back() {
    let mut a = get(1, ReadMode::Stale, Some(("a", 5)), 2, 3);
    a.server = Some("s1".into());
    let mut b = get(1, ReadMode::Stale, Some(("b", 6)), 4, 5);
    b.server = Some("s1".into());
    let mut back = get(1, ReadMode::Stale, Some(("a", 5)), 6, 7);
    back.server = Some("s1".into());
    let mut elsewhere = back.clone();
    elsewhere.server = Some("s2".into());
    let writes = [put(1, "a", 0, 1), put(1, "b", 1, 2)];
    let clean: Vec<_> = writes
        .iter()
        .cloned()
        .chain([a.clone(), b.clone(), elsewhere])
        .collect();
    assert!(check_stale_reads(&clean).is_empty());
    let backwards: Vec<_> = writes.iter().cloned().chain([a.clone(), b, back]).collect();
    let found = check_stale_reads(&backwards);
    assert_eq!(
        found.iter().map(|x| x.class).collect::<Vec<_>>(),
        [AnomalyClass::StaleBackwards],
        "{found:?}"
    );
    let phantom = get(2, ReadMode::Stale, Some(("ghost", 9)), 6, 7);
    let found = check_stale_reads(&[writes[0].clone(), phantom]);
    assert_eq!(
        found.iter().map(|x| x.class).collect::<Vec<_>>(),
        [AnomalyClass::StalePhantom]
    );
}

#[test]
fn histories_round_trip_as_json_lines() {
    let history = generate_history(&GenOptions {
        seed: 1,
        operations: 50,
        ..GenOptions::default()
    });
    let text = to_jsonl(&history).unwrap();
    assert_eq!(text.lines().count(), 50);
    let back: Vec<KvOperation> = read_jsonl(&text).unwrap();
    assert_eq!(back, history);
    let err = read_jsonl::<KvOperation>("\n{\"client\": 1}\n").unwrap_err();
    assert!(err.to_string().starts_with("line 2"), "{err}");
}
