//! Linearizability and lock-safety checking for histories of operations on a key/value store.
//!
//! A test records what its clients asked a KV store and what they got back, each operation with the
//! monotonic times it was sent and answered ([`KvOperation`]), and hands the history to this crate, which
//! says whether some sequential execution of Consul's KV register explains it.
//!
//! Entry points:
//! - [`check_kv`]: Wing-Gong-Lowe search with memoisation, one key at a time (as Porcupine does), over
//!   a model of Consul's KV register — a value and the `ModifyIndex` that wrote it, `?cas=` writes, deletes
//!   and reads in the consistency modes [`CheckOptions::modes`] names. Operations whose outcome is unknown
//!   ([`KvOutcome::Indeterminate`]) may take effect at any point after they were sent, or never. A step
//!   budget bounds the search per key; running out gives [`Verdict::Unknown`], never a pass.
//! - [`check_stale_reads`]: `?stale` reads make no linearizability promise, but they must not return a
//!   value no write produced, and one server must not go back to an older write.
//! - [`lost_writes`]: acknowledged writes that the final `?consistent` read of their key cannot explain.
//! - [`check_locks`]: Consul session locks (`?acquire`/`?release`): one holder per key at a time,
//!   `LockIndex` +1 per acquisition, no acquisition inside a lock-delay, fencing tokens that never go back.
//! - [`read_jsonl`] / [`to_jsonl`]: histories saved as JSON lines, so a failed run can be checked again.
//! - [`generate`]: seeded histories that are linearizable by construction, for tests and benchmarks.
//!
//! What it does not do: no IO, no clocks and no randomness of its own (the caller records times and
//! passes seeds), no knowledge of any particular server. It checks single-key registers and locks only:
//! transactions and the anomalies of multi-key isolation (Elle's cycles) are out of scope, and a
//! transaction's effects must be recorded as the single-key operations they are.

mod gen_history;
mod jsonl;
mod kv;
mod locks;
mod stale;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use jsonl::{JsonlError, read_jsonl, to_jsonl};
pub use kv::check_kv;
pub use locks::check_locks;
pub use stale::{check_stale_reads, lost_writes};

/// Histories that are linearizable by construction: a seeded simulation of clients on a register.
pub mod generate {
    pub use crate::gen_history::{GenOptions, generate_history};
}

/// Consul's three read modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    /// `?stale`: any server answers from its own state.
    Stale,
    /// No flag: the leader answers, trusting its lease.
    Default,
    /// `?consistent`: the leader confirms its leadership with a quorum first.
    Consistent,
}

/// What a client asked for on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvOp {
    /// A GET of the key.
    Read {
        /// The consistency mode it was sent with.
        mode: ReadMode,
    },
    /// A PUT. Every write in a history carries a value no other write carries.
    Write {
        /// The value written.
        value: String,
    },
    /// A PUT with `?cas=index`: applied only if the key's `ModifyIndex` is `index` (0: only if absent).
    Cas {
        /// The `ModifyIndex` the key must have.
        index: u64,
        /// The value written if it has.
        value: String,
    },
    /// A DELETE of the key.
    Delete,
}

/// What a client got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvOutcome {
    /// A read's answer.
    Read {
        /// The value, or `None` for a 404.
        value: Option<String>,
        /// The `ModifyIndex` returned with the value.
        modify_index: Option<u64>,
    },
    /// A PUT, CAS or DELETE answered `true` (`ok`) or `false`.
    Written {
        /// The answer's body.
        ok: bool,
    },
    /// A timeout, a connection broken after the request was sent, a 5xx on a write: the operation may or
    /// may not have taken effect.
    Indeterminate,
    /// Definitely did not happen: refused before sending, a 4xx, a read that errored.
    Failed,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvOperation {
    /// The client that sent it; a client sends one operation at a time.
    pub client: u64,
    /// The key it touched.
    pub key: String,
    /// What was asked.
    pub op: KvOp,
    /// What came back.
    pub outcome: KvOutcome,
    /// When it was sent: monotonic nanoseconds since the history started.
    pub invoked_ns: u64,
    /// When the answer arrived; ignored for [`KvOutcome::Indeterminate`].
    pub completed_ns: u64,
    /// The server that answered, for reports.
    #[serde(default)]
    pub server: Option<String>,
}

/// How [`check_kv`] searches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// The most search steps spent on one key before its verdict is [`Verdict::Unknown`].
    pub step_budget: u64,
    /// Reads in these modes must be linearizable; reads in other modes are left out of the search.
    pub modes: Vec<ReadMode>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            step_budget: 5_000_000,
            modes: vec![ReadMode::Default, ReadMode::Consistent],
        }
    }
}

/// The answer for a key or a whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Some sequential execution of the register explains every operation.
    Linearizable,
    /// None does.
    Violation,
    /// The step budget ran out before the search found either.
    Unknown,
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// How many of its operations took part in the search.
    pub operations: usize,
    /// Search steps spent.
    pub steps: u64,
    /// Why it is not linearizable (or why the search stopped), naming the operations.
    pub explanation: Option<String>,
}

/// The verdict on a history: [`Verdict::Violation`] if any key violates, else [`Verdict::Unknown`] if
/// any key is unknown, else [`Verdict::Linearizable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The overall verdict.
    pub verdict: Verdict,
    /// One report per key, in key order.
    pub keys: Vec<KeyReport>,
}

/// A kind of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyClass {
    /// [`check_kv`] found a key not linearizable.
    NotLinearizable,
    /// A stale read returned a value that no write which may have happened produced.
    StalePhantom,
    /// A client's stale reads from one server went back to an older write.
    StaleBackwards,
    /// An acknowledged write that the final consistent read cannot explain.
    LostWrite,
    /// Two sessions held one lock at once.
    LockDoubleHolder,
    /// `LockIndex` did not grow by one per acquisition.
    LockIndexSkip,
    /// A lock was acquired inside the lock-delay of an invalidated session.
    LockDelayViolated,
    /// A fencing token went backwards.
    FencingBackwards,
}

/// One anomaly found in a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its kind.
    pub class: AnomalyClass,
    /// The key it concerns.
    pub key: String,
    /// What happened, naming the operations.
    pub detail: String,
}

/// A `?consistent` read of a lock key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockObservation {
    /// The lock key.
    pub key: String,
    /// Its `ModifyIndex`.
    pub modify_index: u64,
    /// Its `LockIndex`.
    pub lock_index: u64,
    /// Its `Session`, if held.
    pub session: Option<String>,
    /// When the answer arrived.
    pub observed_ns: u64,
}

/// One event of a lock history (Consul sessions and `?acquire`/`?release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LockEvent {
    /// A PUT with `?acquire=session`; outcome [`KvOutcome::Written`], [`KvOutcome::Indeterminate`] or
    /// [`KvOutcome::Failed`].
    Acquire {
        /// The client.
        client: u64,
        /// The lock key.
        key: String,
        /// The session acquiring.
        session: String,
        /// When it was sent.
        invoked_ns: u64,
        /// When the answer arrived.
        completed_ns: u64,
        /// What came back.
        outcome: KvOutcome,
    },
    /// A PUT with `?release=session`.
    Release {
        /// The client.
        client: u64,
        /// The lock key.
        key: String,
        /// The session releasing.
        session: String,
        /// When it was sent.
        invoked_ns: u64,
        /// When the answer arrived.
        completed_ns: u64,
        /// What came back.
        outcome: KvOutcome,
    },
    /// A session ended without a release: destroyed, expired, or its node failed. Every way a session can
    /// lose its locks must be recorded, with `invoked_ns` no later than the earliest moment it may have
    /// happened.
    SessionInvalidated {
        /// The session.
        session: String,
        /// The earliest moment it may have been invalidated.
        invoked_ns: u64,
        /// The latest.
        completed_ns: u64,
        /// The session's lock-delay.
        lock_delay_ns: u64,
    },
    /// A `?consistent` read of the lock key.
    Observed(LockObservation),
    /// A fencing-token-guarded resource accepted (or refused) a token (key, lock index, session).
    Fenced {
        /// The client presenting the token.
        client: u64,
        /// The lock key.
        key: String,
        /// The token's `LockIndex`.
        lock_index: u64,
        /// The token's session.
        session: String,
        /// Whether the resource accepted it.
        accepted: bool,
        /// When.
        at_ns: u64,
    },
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadMode::Stale => "stale",
            ReadMode::Default => "default",
            ReadMode::Consistent => "consistent",
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation => "NOT linearizable",
            Verdict::Unknown => "unknown (step budget exhausted)",
        })
    }
}

impl fmt::Display for AnomalyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnomalyClass::NotLinearizable => "not-linearizable",
            AnomalyClass::StalePhantom => "stale-phantom",
            AnomalyClass::StaleBackwards => "stale-backwards",
            AnomalyClass::LostWrite => "lost-write",
            AnomalyClass::LockDoubleHolder => "lock-double-holder",
            AnomalyClass::LockIndexSkip => "lock-index-skip",
            AnomalyClass::LockDelayViolated => "lock-delay-violated",
            AnomalyClass::FencingBackwards => "fencing-backwards",
        })
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on key {:?}: {}", self.class, self.key, self.detail)
    }
}

impl fmt::Display for KvOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match &self.op {
            KvOp::Read { mode } => write!(f, "read ({mode})")?,
            KvOp::Write { value } => write!(f, "write {value:?}")?,
            KvOp::Cas { index, value } => write!(f, "cas index {index} -> {value:?}")?,
            KvOp::Delete => f.write_str("delete")?,
        }
        match &self.outcome {
            KvOutcome::Read {
                value: Some(v),
                modify_index: Some(i),
            } => write!(f, " = {v:?}@{i}")?,
            KvOutcome::Read {
                value: Some(v),
                modify_index: None,
            } => write!(f, " = {v:?}")?,
            KvOutcome::Read { value: None, .. } => f.write_str(" = 404")?,
            KvOutcome::Written { ok } => write!(f, " -> {ok}")?,
            KvOutcome::Indeterminate => f.write_str(" -> indeterminate")?,
            KvOutcome::Failed => f.write_str(" -> failed")?,
        }
        if matches!(self.outcome, KvOutcome::Indeterminate) {
            write!(f, " [{} ns, ...)", self.invoked_ns)?;
        } else {
            write!(f, " [{}, {}] ns", self.invoked_ns, self.completed_ns)?;
        }
        if let Some(server) = &self.server {
            write!(f, " via {server}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?}: {} ({} operations, {} steps)",
            self.key, self.verdict, self.operations, self.steps
        )?;
        if let Some(explanation) = &self.explanation {
            for line in explanation.lines() {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |v: Verdict| self.keys.iter().filter(|k| k.verdict == v).count();
        write!(
            f,
            "{} — {} keys: {} linearizable, {} violations, {} unknown",
            self.verdict,
            self.keys.len(),
            count(Verdict::Linearizable),
            count(Verdict::Violation),
            count(Verdict::Unknown)
        )?;
        for key in self.keys.iter().filter(|k| k.verdict != Verdict::Linearizable) {
            write!(f, "\n  {key}")?;
        }
        Ok(())
    }
}

impl CheckReport {
    /// Combines per-key reports under the overall rule (any violation, else any unknown).
    pub fn from_keys(keys: Vec<KeyReport>) -> CheckReport {
        let verdict = if keys.iter().any(|k| k.verdict == Verdict::Violation) {
            Verdict::Violation
        } else if keys.iter().any(|k| k.verdict == Verdict::Unknown) {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        };
        CheckReport { verdict, keys }
    }

    /// The violating keys as [`AnomalyClass::NotLinearizable`] anomalies.
    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.keys
            .iter()
            .filter(|k| k.verdict == Verdict::Violation)
            .map(|k| Anomaly {
                class: AnomalyClass::NotLinearizable,
                key: k.key.clone(),
                detail: k.explanation.clone().unwrap_or_default(),
            })
            .collect()
    }
}
