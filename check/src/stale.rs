//! Stale reads and lost writes: checks that need no search.

use std::collections::{BTreeMap, HashMap};

use crate::{Anomaly, AnomalyClass, KvOp, KvOperation, KvOutcome, ReadMode};

/// Whether a write may have taken effect (it was not refused and not answered `false`).
fn may_have_happened(op: &KvOperation) -> bool {
    !matches!(op.outcome, KvOutcome::Failed | KvOutcome::Written { ok: false })
}

/// Whether a write definitely took effect.
fn acknowledged(op: &KvOperation) -> bool {
    matches!(op.outcome, KvOutcome::Written { ok: true })
}

fn written_value(op: &KvOperation) -> Option<&str> {
    match &op.op {
        KvOp::Write { value } | KvOp::Cas { value, .. } => Some(value),
        _ => None,
    }
}

/// The latest moment an operation may have taken effect.
fn latest(op: &KvOperation) -> u64 {
    if matches!(op.outcome, KvOutcome::Indeterminate) {
        u64::MAX
    } else {
        op.completed_ns
    }
}

/// `?stale` reads make no promise of recency, but every value one returns must come from a write that
/// may have happened and was sent before the read was answered ([`AnomalyClass::StalePhantom`]), and
/// the reads one client sends to one server never go back to a smaller `ModifyIndex` on a key
/// ([`AnomalyClass::StaleBackwards`]).
pub fn check_stale_reads(history: &[KvOperation]) -> Vec<Anomaly> {
    let mut writers: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, op) in history.iter().enumerate() {
        if let Some(value) = written_value(op).filter(|_| may_have_happened(op)) {
            writers.entry((op.key.as_str(), value)).or_default().push(i);
        }
    }
    let mut anomalies = Vec::new();
    // (client, server, key) → the last stale read with an index, in invocation order.
    let mut stale: BTreeMap<(u64, &str, &str), Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        let (
            KvOp::Read {
                mode: ReadMode::Stale,
            },
            KvOutcome::Read { value, modify_index },
        ) = (&op.op, &op.outcome)
        else {
            continue;
        };
        if let Some(value) = value {
            let sent_before = writers.get(&(op.key.as_str(), value.as_str())).is_some_and(|ws| {
                ws.iter()
                    .any(|&w| history.get(w).is_some_and(|w| w.invoked_ns <= op.completed_ns))
            });
            if !sent_before {
                anomalies.push(Anomaly {
                    class: AnomalyClass::StalePhantom,
                    key: op.key.clone(),
                    detail: format!("#{i}: {op} returned a value no write that may have happened had sent"),
                });
            }
        }
        if let (Some(server), Some(_)) = (&op.server, modify_index) {
            stale
                .entry((op.client, server.as_str(), op.key.as_str()))
                .or_default()
                .push(i);
        }
    }
    for reads in stale.values_mut() {
        reads.sort_by_key(|&i| history.get(i).map(|op| (op.invoked_ns, op.completed_ns)));
        let mut highest: Option<(u64, usize)> = None;
        for &i in reads.iter() {
            let Some(op) = history.get(i) else { continue };
            let KvOutcome::Read {
                modify_index: Some(index),
                ..
            } = op.outcome
            else {
                continue;
            };
            match highest {
                Some((seen, at)) if index < seen => {
                    let earlier = history.get(at).map(ToString::to_string).unwrap_or_default();
                    anomalies.push(Anomaly {
                        class: AnomalyClass::StaleBackwards,
                        key: op.key.clone(),
                        detail: format!(
                            "one client's stale reads from one server went back from ModifyIndex {seen} to \
                             {index}:\n#{at}: {earlier}\n#{i}: {op}"
                        ),
                    });
                }
                Some((seen, _)) if index == seen => {}
                _ => highest = Some((index, i)),
            }
        }
    }
    anomalies
}

/// Acknowledged writes that the final `?consistent` read of their key cannot explain.
///
/// For each key with a consistent read, the last one sent is taken as the key's final state. Every
/// write (PUT, CAS, DELETE) acknowledged before that read was sent must be what it returned or be
/// overwritten by a write that may have come after it. The read returned the value of one write `W`
/// (or nothing): an acknowledged write `A` is lost if `W` was answered before `A` was sent (so `W`
/// came first and cannot be the final value after `A`), or, when the key was absent, if no delete that
/// may have happened could come after `A`. Values must be unique per write.
pub fn lost_writes(history: &[KvOperation]) -> Vec<Anomaly> {
    let mut finals: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        if let (
            KvOp::Read {
                mode: ReadMode::Consistent,
            },
            KvOutcome::Read { .. },
        ) = (&op.op, &op.outcome)
        {
            let later = finals
                .get(op.key.as_str())
                .and_then(|&f| history.get(f))
                .is_none_or(|f| op.invoked_ns >= f.invoked_ns);
            if later {
                finals.insert(op.key.as_str(), i);
            }
        }
    }
    let mut anomalies = Vec::new();
    for (key, f) in finals {
        let Some(read) = history.get(f) else { continue };
        let KvOutcome::Read { value, .. } = &read.outcome else {
            continue;
        };
        let on_key = || history.iter().enumerate().filter(move |(_, op)| op.key == key);
        let source = value.as_deref().and_then(|value| {
            on_key().find(|(_, op)| written_value(op) == Some(value) && may_have_happened(op))
        });
        if value.is_some() && source.is_none() {
            // A read of a value no write produced is check_kv's (or check_stale_reads') to report.
            continue;
        }
        // The latest moment a delete that may have happened before the read could have taken effect.
        let last_delete = on_key()
            .filter(|(_, del)| {
                matches!(del.op, KvOp::Delete)
                    && may_have_happened(del)
                    && del.invoked_ns <= read.completed_ns
            })
            .map(|(_, del)| latest(del))
            .max();
        for (a, op) in on_key() {
            if !acknowledged(op) || matches!(op.op, KvOp::Read { .. }) || op.completed_ns >= read.invoked_ns {
                continue;
            }
            let lost = match source {
                Some((w, writer)) => w != a && latest(writer) < op.invoked_ns,
                None => !matches!(op.op, KvOp::Delete) && last_delete.is_none_or(|t| t < op.invoked_ns),
            };
            if lost {
                let found = match source {
                    Some((w, writer)) => format!("#{w}: {writer}, which was answered before it was sent"),
                    None => "nothing, and no delete could have come after it".to_owned(),
                };
                anomalies.push(Anomaly {
                    class: AnomalyClass::LostWrite,
                    key: key.to_owned(),
                    detail: format!(
                        "acknowledged #{a}: {op}\nbut the final consistent read #{f}: {read}\nfound {found}"
                    ),
                });
            }
        }
    }
    anomalies
}
