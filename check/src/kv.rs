//! The linearizability search over Consul's KV register.
//!
//! Each key is checked on its own (a register's operations on one key never constrain another's), with
//! the Wing-Gong-Lowe algorithm: call and return events sorted by time in a linked list; the search
//! linearizes any pending call whose model step succeeds, and backtracks when it meets the return of an
//! operation it has not linearized. Memoising (linearized set, model state) keeps it from exploring the
//! same configuration twice. An indeterminate operation's return lies at infinity: it can be linearized
//! anywhere after its call, and an indeterminate operation left over at the end never took effect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hash};

use crate::{CheckOptions, CheckReport, KeyReport, KvOp, KvOperation, KvOutcome, Verdict};

/// Checks that every key's operations are linearizable on Consul's KV register.
///
/// The register holds a value (or nothing) and the `ModifyIndex` that wrote it. Writes do not report
/// the index they produced, so the index of each value is learned from the reads in the history (in any
/// mode); a value seen with two indexes, or two values with one index, is a violation. A `?cas=index`
/// write succeeds iff the current value is the one read with `index` (0: the key is absent; an index
/// no read returned matches only a value whose index no read returned, as the history cannot say
/// more), and writes with a known index must be linearized in increasing index order. Reads in modes not in
/// [`CheckOptions::modes`], failed operations and writes answered `false` take no part; a CAS answered
/// `false` does (its condition did not hold).
pub fn check_kv(history: &[KvOperation], options: &CheckOptions) -> CheckReport {
    let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        keys.entry(op.key.as_str()).or_default().push(i);
    }
    CheckReport::from_keys(
        keys.into_iter()
            .map(|(key, ops)| check_key(key, history, &ops, options))
            .collect(),
    )
}

/// No value: the key is absent.
const ABSENT: u32 = u32::MAX;
/// The end of the event list.
const NIL: u32 = u32::MAX;
/// The list's head sentinel.
const HEAD: u32 = 0;
/// The return time of an operation that may take effect at any time after its call.
const INFINITY: u64 = u64::MAX;

/// What must hold for a CAS to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    /// The key is absent (`?cas=0`).
    Absent,
    /// The key holds this value (the one read with the CAS's index).
    Value(u32),
    /// The CAS's index was never read. It can apply only to a value whose own index was never read
    /// either, and only once: the value it writes comes later.
    Unobserved(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Read {
        value: u32,
    },
    /// A PUT that took effect, or an indeterminate one (which the search may leave out).
    Write {
        value: u32,
        index: Option<u64>,
    },
    CasOk {
        cond: Cond,
        value: u32,
        index: Option<u64>,
    },
    CasFailed {
        cond: Cond,
    },
    /// An indeterminate CAS: it applies where its condition holds, or never.
    CasMaybe {
        cond: Cond,
        value: u32,
        index: Option<u64>,
    },
    Delete,
}

/// The register: a value and the largest known `ModifyIndex` written so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    value: u32,
    last_index: u64,
}

const INITIAL: State = State {
    value: ABSENT,
    last_index: 0,
};

impl Cond {
    /// The state the CAS writes over, if it can apply to `state`.
    fn may_hold(self, state: State, index_of: &[Option<u64>]) -> Option<State> {
        match self {
            Cond::Absent => (state.value == ABSENT).then_some(state),
            Cond::Value(v) => (state.value == v).then_some(state),
            Cond::Unobserved(index) => {
                let unread = state.value != ABSENT && index_of.get(state.value as usize) == Some(&None);
                (unread && index > state.last_index).then_some(State {
                    value: state.value,
                    last_index: index,
                })
            }
        }
    }

    /// Whether the CAS can fail on `state`.
    fn may_fail(self, state: State) -> bool {
        match self {
            Cond::Absent => state.value != ABSENT,
            Cond::Value(v) => state.value != v,
            Cond::Unobserved(_) => true,
        }
    }
}

fn write(state: State, value: u32, index: Option<u64>) -> Option<State> {
    match index {
        // ModifyIndex is the raft index of the write: later writes carry larger ones.
        Some(index) if index <= state.last_index => None,
        Some(index) => Some(State {
            value,
            last_index: index,
        }),
        None => Some(State {
            value,
            last_index: state.last_index,
        }),
    }
}

impl Step {
    fn apply(self, state: State, index_of: &[Option<u64>]) -> Option<State> {
        match self {
            Step::Read { value } => (state.value == value).then_some(state),
            Step::Write { value, index } => write(state, value, index),
            Step::CasOk { cond, value, index } | Step::CasMaybe { cond, value, index } => {
                write(cond.may_hold(state, index_of)?, value, index)
            }
            Step::CasFailed { cond } => cond.may_fail(state).then_some(state),
            Step::Delete => Some(State {
                value: ABSENT,
                last_index: state.last_index,
            }),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone)]
struct SearchOp {
    /// Its position in the caller's history.
    origin: usize,
    step: Step,
    call: u64,
    ret: u64,
    /// An indeterminate write whose value no read returned.
    unread: bool,
}

/// A key's values, interned, and the index each was read with.
#[derive(Default)]
struct Values<'h> {
    ids: HashMap<&'h str, u32>,
    names: Vec<&'h str>,
    index_of: Vec<Option<u64>>,
}

impl<'h> Values<'h> {
    fn intern(&mut self, value: &'h str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(ABSENT - 1);
        self.ids.insert(value, id);
        self.names.push(value);
        self.index_of.push(None);
        id
    }

    fn name(&self, id: u32) -> String {
        if id == ABSENT {
            return "nothing (absent)".to_owned();
        }
        let name = self.names.get(id as usize).copied().unwrap_or("?");
        match self.index_of.get(id as usize).copied().flatten() {
            Some(index) => format!("{name:?}@{index}"),
            None => format!("{name:?}"),
        }
    }
}

fn check_key(key: &str, history: &[KvOperation], ops: &[usize], options: &CheckOptions) -> KeyReport {
    let report = |verdict, operations, steps, explanation| KeyReport {
        key: key.to_owned(),
        verdict,
        operations,
        steps,
        explanation,
    };
    let mut values = Values::default();
    // Learn each value's ModifyIndex from every read that returned both.
    let mut value_by_index: HashMap<u64, (u32, usize)> = HashMap::new();
    let mut index_seen_at: HashMap<u32, usize> = HashMap::new();
    for &i in ops {
        let Some(op) = history.get(i) else { continue };
        if let (
            KvOp::Read { .. },
            KvOutcome::Read {
                value: Some(value),
                modify_index: Some(index),
            },
        ) = (&op.op, &op.outcome)
        {
            let id = values.intern(value);
            if let Some(slot) = values.index_of.get_mut(id as usize) {
                match *slot {
                    Some(known) if known != *index => {
                        let first = index_seen_at.get(&id).copied().unwrap_or(i);
                        let why = format!(
                            "value {value:?} was read with two ModifyIndexes, {known} and {index} \
                             (values must be unique per write):\n#{first}: {}\n#{i}: {op}",
                            describe(history, first)
                        );
                        return report(Verdict::Violation, ops.len(), 0, Some(why));
                    }
                    _ => {
                        *slot = Some(*index);
                        index_seen_at.entry(id).or_insert(i);
                    }
                }
            }
            match value_by_index.get(index) {
                Some(&(other, at)) if other != id => {
                    let why = format!(
                        "ModifyIndex {index} was read with two values:\n#{at}: {}\n#{i}: {op}",
                        describe(history, at)
                    );
                    return report(Verdict::Violation, ops.len(), 0, Some(why));
                }
                _ => {
                    value_by_index.insert(*index, (id, i));
                }
            }
        }
    }
    let cond_of = |index: u64| match index {
        0 => Cond::Absent,
        index => value_by_index
            .get(&index)
            .map_or(Cond::Unobserved(index), |&(id, _)| Cond::Value(id)),
    };

    // Which values a write that may have happened produced, and which some read returned.
    let mut written: HashSet<&str> = HashSet::new();
    let mut read_back: HashSet<&str> = HashSet::new();
    let mut has_failed_cas = false;
    for &i in ops {
        let Some(op) = history.get(i) else { continue };
        match (&op.op, &op.outcome) {
            (KvOp::Write { value } | KvOp::Cas { value, .. }, outcome)
                if !matches!(outcome, KvOutcome::Failed | KvOutcome::Written { ok: false }) =>
            {
                written.insert(value);
            }
            (
                KvOp::Read { .. },
                KvOutcome::Read {
                    value: Some(value), ..
                },
            ) => {
                read_back.insert(value);
            }
            _ => {}
        }
        if matches!(
            (&op.op, &op.outcome),
            (KvOp::Cas { .. }, KvOutcome::Written { ok: false })
        ) {
            has_failed_cas = true;
        }
    }

    let mut search = Vec::new();
    for &i in ops {
        let Some(op) = history.get(i) else { continue };
        let definite = !matches!(op.outcome, KvOutcome::Indeterminate);
        let (call, ret) = (
            op.invoked_ns,
            if definite {
                op.completed_ns.max(op.invoked_ns)
            } else {
                INFINITY
            },
        );
        let step = match (&op.op, &op.outcome) {
            (_, KvOutcome::Failed) => continue,
            (KvOp::Read { mode }, KvOutcome::Read { value, .. }) => {
                if !options.modes.contains(mode) {
                    continue;
                }
                let value = match value {
                    None => ABSENT,
                    Some(value) => {
                        if !written.contains(value.as_str()) {
                            let why = format!(
                                "#{i}: {op}\nreturned a value that no write which may have happened wrote"
                            );
                            return report(Verdict::Violation, ops.len(), 0, Some(why));
                        }
                        values.intern(value)
                    }
                };
                Step::Read { value }
            }
            // A read that timed out or was answered with something else tells nothing.
            (KvOp::Read { .. }, _) => continue,
            (KvOp::Write { .. } | KvOp::Delete, KvOutcome::Written { ok: false }) => continue,
            (KvOp::Write { value }, outcome) => {
                // Left out, an indeterminate write nobody read stands for "never happened", which
                // is as good as any other placement unless a failed CAS needs it.
                let unread =
                    !matches!(outcome, KvOutcome::Written { .. }) && !read_back.contains(value.as_str());
                if unread && !has_failed_cas {
                    continue;
                }
                let value = values.intern(value);
                Step::Write {
                    value,
                    index: index_of(&values, value),
                }
            }
            (KvOp::Cas { index, value }, KvOutcome::Written { ok: true }) => {
                let value = values.intern(value);
                Step::CasOk {
                    cond: cond_of(*index),
                    value,
                    index: index_of(&values, value),
                }
            }
            (KvOp::Cas { index, .. }, KvOutcome::Written { ok: false }) => Step::CasFailed {
                cond: cond_of(*index),
            },
            (KvOp::Cas { index, value }, _) => {
                let unread = !read_back.contains(value.as_str());
                if unread && !has_failed_cas {
                    continue;
                }
                let value = values.intern(value);
                Step::CasMaybe {
                    cond: cond_of(*index),
                    value,
                    index: index_of(&values, value),
                }
            }
            (KvOp::Delete, _) => Step::Delete,
        };
        let ret = if matches!(op.outcome, KvOutcome::Written { .. } | KvOutcome::Read { .. }) {
            ret
        } else {
            // A write answered with a read's outcome is as good as unanswered.
            INFINITY
        };
        let unread = ret == INFINITY
            && match &op.op {
                KvOp::Write { value } | KvOp::Cas { value, .. } => !read_back.contains(value.as_str()),
                _ => false,
            };
        search.push(SearchOp {
            origin: i,
            step,
            call,
            ret,
            unread,
        });
    }

    let operations = search.len();
    let mut spent = 0;
    if search.iter().any(|op| op.unread) {
        // First without the indeterminate writes nobody read: leaving them out means they never
        // happened, so a linearization found is one of the whole history. Only if none is found
        // must the search place them too (a failed CAS may need one), which costs far more.
        let without: Vec<SearchOp> = search.iter().filter(|op| !op.unread).cloned().collect();
        match wgl(&without, &values.index_of, options.step_budget) {
            Outcome::Linearizable { steps } => {
                return report(Verdict::Linearizable, operations, steps, None);
            }
            Outcome::Violation { steps, .. } | Outcome::Unknown { steps, .. } => spent = steps,
        }
    }
    match wgl(
        &search,
        &values.index_of,
        options.step_budget.saturating_sub(spent),
    ) {
        Outcome::Linearizable { steps } => report(Verdict::Linearizable, operations, spent + steps, None),
        Outcome::Violation { steps, prefix } => {
            let why = explain_violation(history, &search, &prefix, &values);
            report(Verdict::Violation, operations, spent + steps, Some(why))
        }
        Outcome::Unknown { steps, prefix } => {
            let steps = spent + steps;
            let why = format!(
                "the step budget ({}) ran out; the longest explainable prefix found has {} of {} operations",
                options.step_budget,
                prefix.len(),
                operations
            );
            report(Verdict::Unknown, operations, steps, Some(why))
        }
    }
}

fn index_of(values: &Values<'_>, id: u32) -> Option<u64> {
    values.index_of.get(id as usize).copied().flatten()
}

fn describe(history: &[KvOperation], i: usize) -> String {
    history.get(i).map_or_else(|| "?".to_owned(), ToString::to_string)
}

enum Outcome {
    Linearizable {
        steps: u64,
    },
    /// `prefix`: the longest sequence of operations (positions in the search list) the model explains.
    Violation {
        steps: u64,
        prefix: Vec<u32>,
    },
    Unknown {
        steps: u64,
        prefix: Vec<u32>,
    },
}

/// A fast hasher for the memo: its keys are our own bitsets, not attacker-chosen input.
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // A slice of integers arrives as one run of bytes: take it a word at a time.
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }
    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// Configurations explored: (definite operations linearized, state) → the sets of indeterminate
/// operations linearized along with them. A configuration is dominated by one with the same definite
/// set and state that used a subset of the indeterminate operations (those left out may still be
/// placed later, or never), so it need not be explored again.
type Memo = HashMap<(Box<[u64]>, State), Vec<Box<[u64]>>, BuildHasherDefault<FxHasher>>;

fn subset(small: &[u64], big: &[u64]) -> bool {
    small.iter().zip(big).all(|(s, b)| s & !b == 0)
}

/// The doubly linked list of call and return events.
struct Events {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For a call node, its return node; for a return node, `NIL`.
    partner: Vec<u32>,
    /// The operation (position in the search list) of each node.
    op: Vec<u32>,
}

impl Events {
    fn new(ops: &[SearchOp]) -> Events {
        // (time, 0 for a call and 1 for a return, op): calls before returns at equal times, so that
        // operations that touch are concurrent, never ordered.
        let mut order: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(NIL - 1);
            order.push((op.call, 0, i));
            order.push((op.ret.max(op.call), 1, i));
        }
        order.sort_unstable();
        let nodes = order.len() + 1;
        let mut events = Events {
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            partner: vec![NIL; nodes],
            op: vec![NIL; nodes],
        };
        let mut call_node = vec![NIL; ops.len()];
        for (n, &(_, kind, op)) in order.iter().enumerate() {
            let node = n + 1;
            let node32 = u32::try_from(node).unwrap_or(NIL - 1);
            events.prev[node] = node32 - 1;
            events.next[node - 1] = node32;
            events.op[node] = op;
            if kind == 0 {
                call_node[op as usize] = node32;
            } else if let Some(&call) = call_node.get(op as usize) {
                events.partner[call as usize] = node32;
            }
        }
        events
    }

    fn lift(&mut self, call: u32) {
        let (c, r) = (call as usize, self.partner[call as usize]);
        let (p, n) = (self.prev[c], self.next[c]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        let (p, n) = (self.prev[r as usize], self.next[r as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn unlift(&mut self, call: u32) {
        let (c, r) = (call as usize, self.partner[call as usize]);
        let (p, n) = (self.prev[r as usize], self.next[r as usize]);
        self.next[p as usize] = r;
        if n != NIL {
            self.prev[n as usize] = r;
        }
        let (p, n) = (self.prev[c], self.next[c]);
        self.next[p as usize] = call;
        self.prev[n as usize] = call;
    }
}

/// The longest prefix seen, kept up to date with O(1) amortised work per step: `best[..shared]`
/// equals the bottom of the current stack.
struct Best {
    ops: Vec<u32>,
    shared: usize,
}

impl Best {
    /// After a push: `stack` includes the new top.
    fn pushed(&mut self, stack: &[(u32, State)], events: &Events) {
        let depth = stack.len();
        let top = stack.last().map(|&(node, _)| events.op[node as usize]);
        if self.shared + 1 == depth && self.ops.get(depth - 1).copied() == top {
            self.shared = depth;
        }
        if depth > self.ops.len() {
            self.ops.truncate(self.shared);
            for &(node, _) in stack.get(self.shared..).unwrap_or_default() {
                self.ops.push(events.op[node as usize]);
            }
            self.shared = depth;
        }
    }

    /// After a pop: `depth` is the stack's new height.
    fn popped(&mut self, depth: usize) {
        self.shared = self.shared.min(depth);
    }
}

fn wgl(ops: &[SearchOp], index_of: &[Option<u64>], budget: u64) -> Outcome {
    // Definite and indeterminate operations are numbered apart: bit `slot[op]` of `done` or `used`.
    let mut slot = Vec::with_capacity(ops.len());
    let (mut definite_total, mut indeterminate_total) = (0usize, 0usize);
    for op in ops {
        if op.ret == INFINITY {
            slot.push(indeterminate_total);
            indeterminate_total += 1;
        } else {
            slot.push(definite_total);
            definite_total += 1;
        }
    }
    let definite = |op: u32| ops.get(op as usize).is_some_and(|o| o.ret != INFINITY);
    let mut events = Events::new(ops);
    let mut done = vec![0u64; definite_total.div_ceil(64).max(1)].into_boxed_slice();
    let mut used = vec![0u64; indeterminate_total.div_ceil(64).max(1)].into_boxed_slice();
    let mut memo = Memo::default();
    let mut stack: Vec<(u32, State)> = Vec::new();
    let mut best = Best {
        ops: Vec::new(),
        shared: 0,
    };
    let mut state = INITIAL;
    let mut definite_done = 0usize;
    let mut steps = 0u64;
    let mut node = events.next[HEAD as usize];
    // Each candidate set (the calls before the first return in the list) is tried in two passes:
    // definite operations first, then indeterminate ones. Configurations without an indeterminate
    // operation are then explored before those with it, and dominate them in the memo.
    let mut indeterminate_pass = false;
    loop {
        if definite_done == definite_total {
            // Indeterminate operations still pending never took effect.
            return Outcome::Linearizable { steps };
        }
        steps += 1;
        if steps > budget {
            return Outcome::Unknown {
                steps: budget,
                prefix: best.ops,
            };
        }
        if node == NIL {
            // Unreachable while a definite operation is pending (its return lies ahead); stop safely.
            return Outcome::Unknown {
                steps,
                prefix: best.ops,
            };
        }
        let n = node as usize;
        let op = events.op[n];
        let call = events.partner[n] != NIL;
        if call && definite(op) == indeterminate_pass {
            node = events.next[n];
        } else if call {
            let is_definite = !indeterminate_pass;
            let s = slot.get(op as usize).copied().unwrap_or(0);
            let (word, bit) = (s / 64, 1u64 << (s % 64));
            let next_state = ops.get(op as usize).and_then(|o| o.step.apply(state, index_of));
            if let Some(next_state) = next_state {
                let bits = if is_definite { &mut done } else { &mut used };
                bits[word] |= bit;
                let seen = memo.entry((done.clone(), next_state)).or_default();
                if !seen.iter().any(|earlier| subset(earlier, &used)) {
                    seen.push(used.clone());
                    stack.push((node, state));
                    best.pushed(&stack, &events);
                    state = next_state;
                    events.lift(node);
                    if is_definite {
                        definite_done += 1;
                    }
                    node = events.next[HEAD as usize];
                    indeterminate_pass = false;
                    continue;
                }
                let bits = if is_definite { &mut done } else { &mut used };
                bits[word] &= !bit;
            }
            node = events.next[n];
        } else if !indeterminate_pass {
            indeterminate_pass = true;
            node = events.next[HEAD as usize];
        } else {
            let Some((call_node, previous)) = stack.pop() else {
                return Outcome::Violation {
                    steps,
                    prefix: best.ops,
                };
            };
            best.popped(stack.len());
            let op = events.op[call_node as usize];
            let s = slot.get(op as usize).copied().unwrap_or(0);
            indeterminate_pass = !definite(op);
            let bits = if indeterminate_pass { &mut used } else { &mut done };
            bits[s / 64] &= !(1u64 << (s % 64));
            if !indeterminate_pass {
                definite_done -= 1;
            }
            state = previous;
            events.unlift(call_node);
            node = events.next[call_node as usize];
        }
    }
}

/// Names the operation that could not be placed after the longest explainable prefix.
fn explain_violation(
    history: &[KvOperation],
    ops: &[SearchOp],
    prefix: &[u32],
    values: &Values<'_>,
) -> String {
    let mut state = INITIAL;
    let mut writer: Option<usize> = None;
    let mut placed = vec![false; ops.len()];
    for &op in prefix {
        let Some(o) = ops.get(op as usize) else { continue };
        if let Some(next) = o.step.apply(state, &values.index_of) {
            if next.value != state.value || matches!(o.step, Step::Delete | Step::Write { .. }) {
                writer = Some(o.origin);
            }
            state = next;
        }
        if let Some(p) = placed.get_mut(op as usize) {
            *p = true;
        }
    }
    let mut out = format!(
        "no order of the {} operations explains them; the longest explainable prefix has {}",
        ops.len(),
        prefix.len()
    );
    let tail = prefix.len().saturating_sub(4);
    if !prefix.is_empty() {
        out.push_str(", ending with:");
        for &op in prefix.get(tail..).unwrap_or_default() {
            if let Some(o) = ops.get(op as usize) {
                let _ = write!(out, "\n  #{}: {}", o.origin, describe(history, o.origin));
            }
        }
    }
    let _ = write!(out, "\nthe register then holds {}", values.name(state.value));
    if let Some(w) = writer {
        let _ = write!(out, " (from #{w})");
    }
    // The blocked operation: the earliest-returning definite one left out.
    let blocked = ops
        .iter()
        .enumerate()
        .filter(|(i, o)| o.ret != INFINITY && !placed.get(*i).copied().unwrap_or(true))
        .min_by_key(|(_, o)| (o.ret, o.call));
    if let Some((_, o)) = blocked {
        let _ = write!(
            out,
            "\nand #{}: {}\ncannot take effect next, nor after any operation that may still precede its return",
            o.origin,
            describe(history, o.origin)
        );
    }
    out
}
