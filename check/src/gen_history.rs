//! Seeded histories, linearizable by construction.
//!
//! Clients send one operation at a time, each to a random key, over random intervals; every operation
//! that takes effect does so at a random instant inside its interval, and outcomes are computed by
//! applying the operations to a register in the order of those instants — so the history is
//! linearizable, whatever the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::{KvOp, KvOperation, KvOutcome, ReadMode};

/// What [`generate_history`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// The seed; one seed gives one history.
    pub seed: u64,
    /// Operations in all.
    pub operations: usize,
    /// Keys, named `k0`, `k1`, …
    pub keys: usize,
    /// Clients.
    pub clients: usize,
    /// The share of operations (0.0 to 1.0) whose outcome is indeterminate; half of the writes among
    /// them take effect.
    pub indeterminate: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 1,
            operations: 2_000,
            keys: 8,
            clients: 8,
            indeterminate: 0.02,
        }
    }
}

/// SplitMix64: small, seedable, good enough to shape a test history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

struct Planned {
    op: KvOperation,
}

/// The registers, replayed in effect order as the simulation advances.
#[derive(Default)]
struct Register {
    values: HashMap<String, (String, u64)>,
    /// The ModifyIndex source: a raft-like counter shared by all keys.
    raft_index: u64,
    /// What each client last read of each key, for its CAS writes.
    seen: HashMap<(u64, String), u64>,
}

impl Register {
    fn apply(&mut self, p: &mut Planned) {
        let current = self.values.get(&p.op.key).cloned();
        let definite = !matches!(p.op.outcome, KvOutcome::Indeterminate);
        match &p.op.op {
            KvOp::Read { .. } => {
                p.op.outcome = KvOutcome::Read {
                    value: current.as_ref().map(|(v, _)| v.clone()),
                    modify_index: current.as_ref().map(|&(_, i)| i),
                };
                self.seen
                    .insert((p.op.client, p.op.key.clone()), current.map_or(0, |(_, i)| i));
            }
            KvOp::Write { value } => {
                self.raft_index += 1;
                self.values
                    .insert(p.op.key.clone(), (value.clone(), self.raft_index));
            }
            KvOp::Cas { index, value } => {
                let applies = match (&current, *index) {
                    (None, 0) => true,
                    (Some((_, current)), index) => *current == index,
                    (None, _) => false,
                };
                if applies {
                    self.raft_index += 1;
                    self.values
                        .insert(p.op.key.clone(), (value.clone(), self.raft_index));
                }
                if definite {
                    p.op.outcome = KvOutcome::Written { ok: applies };
                }
            }
            KvOp::Delete => {
                self.raft_index += 1;
                self.values.remove(&p.op.key);
            }
        }
    }
}

/// A history of clients on registers, linearizable by construction.
///
/// About half the operations are reads (default, consistent and some stale), the rest writes, CAS
/// writes (mostly with the index the client last read, so both outcomes occur) and deletes; 1 % fail
/// outright. Times are nanoseconds; operations last 0.1-5 ms.
pub fn generate_history(options: &GenOptions) -> Vec<KvOperation> {
    let mut rng = Rng(options.seed);
    let clients = options.clients.max(1);
    let keys = options.keys.max(1) as u64;
    let mut clock = vec![0u64; clients];
    let mut planned: Vec<Planned> = Vec::with_capacity(options.operations);
    let mut pending: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut register = Register::default();
    let mut next_value = 0u64;
    for _ in 0..options.operations {
        // The client whose turn comes first, so that effects before its call are known.
        let (client, &free_at) = clock
            .iter()
            .enumerate()
            .min_by_key(|&(_, t)| *t)
            .unwrap_or((0, &0));
        let invoked = free_at + rng.below(1_000_000);
        let completed = invoked + 100_000 + rng.below(4_900_000);
        if let Some(slot) = clock.get_mut(client) {
            *slot = completed;
        }
        // Every later call comes at or after `free_at` (the earliest a client is free), so effects up
        // to it are final; the client's own earlier operations are among them.
        while let Some(&Reverse((at, i))) = pending.peek() {
            if at > free_at {
                break;
            }
            pending.pop();
            if let Some(p) = planned.get_mut(i) {
                register.apply(p);
            }
        }
        let key = format!("k{}", rng.below(keys));
        let roll = rng.below(100);
        let op = if roll < 50 {
            let mode = match rng.below(10) {
                0 => ReadMode::Stale,
                1..=5 => ReadMode::Default,
                _ => ReadMode::Consistent,
            };
            KvOp::Read { mode }
        } else {
            next_value += 1;
            let value = format!("v{next_value}");
            if roll < 75 {
                KvOp::Write { value }
            } else if roll < 92 {
                let index = match rng.below(10) {
                    0 => 0,
                    1 => rng.below(register.raft_index + 1),
                    _ => register
                        .seen
                        .get(&(client as u64, key.clone()))
                        .copied()
                        .unwrap_or(0),
                };
                KvOp::Cas { index, value }
            } else {
                KvOp::Delete
            }
        };
        let is_read = matches!(op, KvOp::Read { .. });
        let (outcome, at) = if rng.chance(options.indeterminate) {
            let happened = !is_read && rng.chance(0.5);
            (
                KvOutcome::Indeterminate,
                happened.then(|| invoked + rng.below(completed - invoked + 1)),
            )
        } else if rng.chance(0.01) {
            (KvOutcome::Failed, None)
        } else {
            // The outcome is filled in when the register applies it.
            (
                KvOutcome::Written { ok: true },
                Some(invoked + rng.below(completed - invoked + 1)),
            )
        };
        if let Some(at) = at {
            pending.push(Reverse((at, planned.len())));
        }
        planned.push(Planned {
            op: KvOperation {
                client: client as u64,
                key,
                op,
                outcome,
                invoked_ns: invoked,
                completed_ns: completed,
                server: Some(format!("s{}", rng.below(3))),
            },
        });
    }
    while let Some(Reverse((_, i))) = pending.pop() {
        if let Some(p) = planned.get_mut(i) {
            register.apply(p);
        }
    }
    planned.into_iter().map(|p| p.op).collect()
}
