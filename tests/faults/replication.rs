//! The KV replication scenario of a WAN run: `tribune replicate -prefix repl/@dc1` beside dc2 (two
//! processes racing for one `-lock`, so one replicates and the other waits), copying dc1's `repl/`
//! into dc2 while the nemesis works.
//!
//! - A writer puts `repl/k0` … `repl/k49` in dc1 through random dc1 servers, each value
//!   `<key>:<seq>` with `?flags=<seq>`, and now and then deletes a key. `seq` counts every operation
//!   on the key (deletes included) and never restarts, so a value names one write. Each operation's
//!   outcome is recorded as the register clients record theirs: acknowledged, failed (never sent,
//!   or refused), or unknown (it may take effect at any later time).
//! - An observer reads dc2's `repl/?recurse` (default consistency, dc2's own server) every 200 ms
//!   and the checker holds the sequence of states it saw per key to what replicating dc1's history
//!   in order allows: no value the writer never wrote (or that failed, or was not yet sent), flags
//!   equal to the value's `seq`, and no rewind — a value once replaced never comes back, an
//!   acknowledged value never shows after a later write's value, a key never disappears without a
//!   delete that may explain it, and an acknowledged value never shows after an absence only
//!   later acknowledged deletes explain.
//! - Once the faults are healed and the writer has stopped, dc2's `repl/` must equal dc1's
//!   (`?consistent`) — keys, values and flags — within [`CONVERGE_LIMIT`]; the time it took is a
//!   campaign figure. dc1's final `repl/` must itself be explained by the writer's outcomes (a
//!   key's last acknowledged operation, or any unknown one), or the write was lost in dc1.
//!
//! It checks replication order and convergence, not multi-key atomicity (a pass may show half
//! applied) and not the replicator's lag under faults. Everything the scenario saw is in
//! `replication.txt` of the run's directory, the replicators' output in `replicate-N.log`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::http::{self, NoResponse, Response};
use super::workload::{NOT_SENT_ERRORS, REQUEST_TIMEOUT, Shared};

/// The replicated prefix (dc1's, and dc2's destination).
pub(crate) const PREFIX: &str = "repl/";
/// The source datacenter, as `-prefix` names it.
const SOURCE_DC: &str = "dc1";
/// Keys the writer works on.
const KEYS: usize = 50;
/// Bounds on the writer: operations, and time.
const WRITER_MAX_OPS: usize = 5000;
const WRITER_MAX_TIME: Duration = Duration::from_secs(600);
/// Percent of the writer's operations that delete (well under the replicator's mass-delete guard,
/// which holds a pass deleting half the destination: about a tenth of the keys are absent at once).
const DELETE_PERCENT: u32 = 8;
/// The observer's pause between reads of dc2.
const OBSERVE_EVERY: Duration = Duration::from_millis(200);
/// A bound on the observer's reads (a run lasts minutes; this is hours of reads).
const MAX_OBSERVATIONS: usize = 50_000;
/// How long dc2's `repl/` may take to equal dc1's once the writer stopped (faults healed).
pub(crate) const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// Replicator processes, racing for [`LOCK`].
const REPLICATORS: usize = 2;
/// The replicators' lock prefix in dc2 (outside `repl/`, so it is never compared).
const LOCK: &str = "locks/replicate-repl";
/// Successful reads of dc2 a run must have made for its order checks to count.
const MIN_OBSERVATIONS: usize = 10;

fn key(n: usize) -> String {
    format!("{PREFIX}k{n}")
}

fn secs(at_ns: u64) -> f64 {
    at_ns as f64 / 1e9
}

/// The replicator processes; killed when dropped.
struct Replicators {
    children: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
}

impl Replicators {
    fn start(dir: &Path, dc2: SocketAddr) -> Replicators {
        let binary = env!("CARGO_BIN_EXE_tribune");
        let mut children = Vec::new();
        let mut logs = Vec::new();
        for i in 1..=REPLICATORS {
            let log_path = dir.join(format!("replicate-{i}.log"));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
            let err: File = log.try_clone().expect("clone log handle");
            // setpriv execs the replicator; the parent-death signal ends it if the test dies.
            let mut command = Command::new("setpriv");
            command
                .args(["--pdeathsig=KILL", "--", binary, "replicate"])
                .args(["-prefix", &format!("{PREFIX}@{SOURCE_DC}")])
                .args(["-consul", &dc2.to_string()])
                .args(["-max-stale", "2s", "-log-level", "info", "-lock", LOCK]);
            for name in [
                "CONSUL_HTTP_ADDR",
                "CONSUL_HTTP_TOKEN",
                "TRIBUNE_HTTP_ADDR",
                "TRIBUNE_HTTP_TOKEN",
            ] {
                command.env_remove(name);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn replicator {i}: {e}"));
            children.push(Some(child));
            logs.push(log_path);
        }
        Replicators { children, logs }
    }

    /// Each replicator's state: running, or how it ended and its last log line.
    fn states(&mut self) -> Vec<String> {
        let mut states = Vec::new();
        for (i, (child, log)) in self.children.iter_mut().zip(&self.logs).enumerate() {
            let state = match child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => "running".to_owned(),
                Some(Ok(Some(status))) => {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                    format!("exited with {status} (last log line: {last:?})")
                }
                Some(Err(e)) => format!("unknown ({e})"),
                None => "stopped".to_owned(),
            };
            states.push(format!("replicator {}: {state}", i + 1));
        }
        states
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Replicators {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a writer operation was known to have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged: it took effect before the answer.
    Acked,
    /// It cannot have taken effect (never sent, or refused).
    Failed,
    /// It may take effect at any time after it was sent.
    Unknown,
}

/// One writer operation on `repl/k<key>`.
#[derive(Debug, Clone)]
struct WriterOp {
    key: usize,
    seq: u64,
    /// A put of `<key>:<seq>` with flags `seq`, or (false) a delete.
    put: bool,
    outcome: Outcome,
    invoked_ns: u64,
    completed_ns: u64,
}

impl WriterOp {
    fn may_have_happened(&self) -> bool {
        self.outcome != Outcome::Failed
    }
}

fn outcome_of(result: &Result<Response, NoResponse>) -> Outcome {
    match result {
        Ok(reply) if reply.status == 200 && reply.text().trim() == "true" => Outcome::Acked,
        Ok(reply) if reply.status == 500 && NOT_SENT_ERRORS.contains(&reply.text().trim()) => Outcome::Failed,
        Ok(reply) if reply.status >= 500 => Outcome::Unknown,
        // A plain put or delete never answers `false`; anything else 2xx is garbled.
        Ok(reply) if reply.status == 200 => Outcome::Unknown,
        Ok(_) | Err(NoResponse::NotSent) => Outcome::Failed,
        Err(NoResponse::Unknown) => Outcome::Unknown,
    }
}

/// The writer: puts and deletes on dc1's `repl/` keys through random dc1 servers until the clients
/// stop (bounded by [`WRITER_MAX_OPS`] and [`WRITER_MAX_TIME`]). Returns its operations and when it
/// stopped.
async fn writer(shared: Arc<Shared>, seed: u64) -> (Vec<WriterOp>, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut seqs = [0u64; KEYS];
    let mut ops = Vec::new();
    while !shared.stop.load(Ordering::Relaxed)
        && ops.len() < WRITER_MAX_OPS
        && started.elapsed() < WRITER_MAX_TIME
    {
        let n = rng.random_range(0..KEYS);
        seqs[n] += 1;
        let seq = seqs[n];
        let put = rng.random_range(0..100) >= DELETE_PERCENT;
        let server = shared.servers[rng.random_range(0..shared.servers.len())];
        let (method, path, body) = if put {
            (
                "PUT",
                format!("/v1/kv/{}?flags={seq}", key(n)),
                format!("{}:{seq}", key(n)),
            )
        } else {
            ("DELETE", format!("/v1/kv/{}", key(n)), String::new())
        };
        let invoked_ns = shared.now_ns();
        let result = http::call(server, method, &path, body.as_bytes(), REQUEST_TIMEOUT).await;
        let outcome = outcome_of(&result);
        ops.push(WriterOp {
            key: n,
            seq,
            put,
            outcome,
            invoked_ns,
            completed_ns: shared.now_ns(),
        });
        let (low, high) = if outcome == Outcome::Acked {
            (20, 60)
        } else {
            (100, 250)
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(low..=high))).await;
    }
    (ops, shared.now_ns())
}

/// A key's entry as a read showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    value: String,
    flags: u64,
}

type State = BTreeMap<String, Shown>;

/// One successful read of dc2's `repl/`.
#[derive(Debug, Clone)]
struct Observation {
    completed_ns: u64,
    state: State,
}

/// A recursive read of `repl/` (`query`: extra parameters): the entries, or why not.
async fn read_prefix(server: SocketAddr, query: &str) -> Result<State, String> {
    let path = format!("/v1/kv/{PREFIX}?recurse{query}");
    let reply = http::call(server, "GET", &path, b"", Duration::from_secs(3))
        .await
        .map_err(|e| format!("{server}: no answer ({e:?})"))?;
    match reply.status {
        404 => Ok(State::new()),
        200 => {
            let json = reply
                .json()
                .ok_or_else(|| format!("{server}: 200 without JSON"))?;
            let entries = json
                .as_array()
                .ok_or_else(|| format!("{server}: 200 without a JSON array"))?;
            let mut state = State::new();
            for entry in entries {
                let key = entry
                    .get("Key")
                    .and_then(|k| k.as_str())
                    .ok_or_else(|| format!("{server}: an entry without Key: {entry}"))?;
                let value = match entry.get("Value") {
                    Some(serde_json::Value::String(text)) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|e| format!("{server}: {key}'s Value is not base64: {e}"))?;
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                    _ => String::new(),
                };
                let flags = entry.get("Flags").and_then(|f| f.as_u64()).unwrap_or(0);
                state.insert(key.to_owned(), Shown { value, flags });
            }
            Ok(state)
        }
        status => Err(format!(
            "{server}: {status} {}",
            reply.text().chars().take(200).collect::<String>()
        )),
    }
}

async fn observe(shared: &Shared, dc2: SocketAddr) -> Option<Observation> {
    let state = read_prefix(dc2, "").await.ok()?;
    Some(Observation {
        completed_ns: shared.now_ns(),
        state,
    })
}

/// The observer: dc2's `repl/` every [`OBSERVE_EVERY`] until the clients stop. Returns the
/// successful reads and how many failed.
async fn observer(shared: Arc<Shared>, dc2: SocketAddr) -> (Vec<Observation>, usize) {
    let mut seen = Vec::new();
    let mut failed = 0;
    for _ in 0..MAX_OBSERVATIONS {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match observe(&shared, dc2).await {
            Some(observation) => seen.push(observation),
            None => failed += 1,
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
    (seen, failed)
}

/// A run's replication figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    /// Writer operations, and how many were acknowledged.
    pub(crate) writes: usize,
    pub(crate) acked: usize,
    /// Successful reads of dc2's `repl/` (the observer's and the convergence wait's).
    pub(crate) observations: usize,
    /// Changes of a key seen in dc2.
    pub(crate) changes_seen: usize,
    /// ms from the writer's stop until dc2's `repl/` equalled dc1's.
    pub(crate) converged_ms: Option<u64>,
}

/// What the scenario found: replication anomalies, acknowledged writes dc1 itself lost, figures.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) replication: Vec<String>,
    pub(crate) lost_in_dc1: Vec<String>,
    pub(crate) figures: Figures,
}

/// The scenario while it runs.
pub(crate) struct Scenario {
    replicators: Replicators,
    writer: JoinHandle<(Vec<WriterOp>, u64)>,
    observer: JoinHandle<(Vec<Observation>, usize)>,
    dc2: SocketAddr,
    dir: PathBuf,
}

impl Scenario {
    /// Starts the replicators beside dc2, the writer on dc1 and the observer on dc2. They stop with
    /// the run's clients (`shared.stop`).
    pub(crate) fn start(
        runtime: &Runtime,
        shared: &Arc<Shared>,
        dc2: SocketAddr,
        dir: &Path,
        seed: u64,
    ) -> Scenario {
        let replicators = Replicators::start(dir, dc2);
        Scenario {
            replicators,
            writer: runtime.spawn(writer(Arc::clone(shared), seed)),
            observer: runtime.spawn(observer(Arc::clone(shared), dc2)),
            dc2,
            dir: dir.to_owned(),
        }
    }

    /// Once the clients were told to stop (every fault healed): waits for the writer and the
    /// observer, then for dc2's `repl/` to equal dc1's, stops the replicators, judges what was seen
    /// and writes `replication.txt`.
    pub(crate) fn finish(mut self, runtime: &Runtime, shared: &Shared) -> Findings {
        let mut findings = Findings::default();
        let joined = runtime.block_on(async {
            let writer = tokio::time::timeout(Duration::from_secs(30), self.writer).await;
            let observer = tokio::time::timeout(Duration::from_secs(30), self.observer).await;
            (writer, observer)
        });
        let ((ops, stopped_ns), (mut seen, failed_reads)) = match joined {
            (Ok(Ok(writer)), Ok(Ok(observer))) => (writer, observer),
            _ => {
                findings
                    .replication
                    .push("the replication writer or observer did not finish".to_owned());
                return findings;
            }
        };
        let waited = runtime.block_on(converge(shared, self.dc2, stopped_ns));
        seen.extend(waited.observations);
        let states = self.replicators.states();
        self.replicators.stop();

        let mut log = String::new();
        let _ = writeln!(
            log,
            "writer: {} operations on {KEYS} keys, stopped at {:.3} s; {} reads of dc2's {PREFIX} ({} failed)",
            ops.len(),
            secs(stopped_ns),
            seen.len(),
            failed_reads
        );
        for state in &states {
            let _ = writeln!(log, "{state}");
        }
        match waited.converged_ms {
            Some(ms) => {
                let _ = writeln!(
                    log,
                    "converged: dc2's {PREFIX} equalled dc1's ({} keys) {ms} ms after the writer stopped",
                    waited.final_dc1.as_ref().map_or(0, BTreeMap::len)
                );
            }
            None => {
                let diff = waited.last_problem.clone().unwrap_or_default();
                let _ = writeln!(log, "NOT converged within {CONVERGE_LIMIT:?}: {diff}");
                findings.replication.push(format!(
                    "dc2's {PREFIX} did not equal dc1's within {CONVERGE_LIMIT:?} of the writer's stop: {diff}; {}",
                    states.join("; ")
                ));
            }
        }
        let judged = judge(&ops, &seen);
        findings.replication.extend(judged.problems);
        if seen.len() < MIN_OBSERVATIONS || judged.changes == 0 {
            findings.replication.push(format!(
                "the observer made {} reads of dc2's {PREFIX} and saw {} changes: nothing to judge the order on",
                seen.len(),
                judged.changes
            ));
        }
        if let Some(final_dc1) = &waited.final_dc1 {
            findings.lost_in_dc1 = explain_final(&ops, final_dc1);
        }
        log.push_str("\ninvoked_s\ttook_ms\top\toutcome\n");
        for op in &ops {
            let _ = writeln!(
                log,
                "{:.3}\t{}\t{} {}:{}\t{:?}",
                secs(op.invoked_ns),
                op.completed_ns.saturating_sub(op.invoked_ns) / 1_000_000,
                if op.put { "put" } else { "delete" },
                key(op.key),
                op.seq,
                op.outcome
            );
        }
        log.push_str("\nchanges seen in dc2 (read completed at, key, before -> after):\n");
        log.push_str(&judged.changes_log);
        let _ = std::fs::write(self.dir.join("replication.txt"), log);
        findings.figures = Figures {
            writes: ops.len(),
            acked: ops.iter().filter(|op| op.outcome == Outcome::Acked).count(),
            observations: seen.len(),
            changes_seen: judged.changes,
            converged_ms: waited.converged_ms,
        };
        findings
    }
}

/// The convergence wait's result.
struct Converged {
    converged_ms: Option<u64>,
    /// dc1's `repl/` at the last successful comparison.
    final_dc1: Option<State>,
    /// Why the last comparison failed.
    last_problem: Option<String>,
    /// The reads of dc2 it made (they are judged with the observer's).
    observations: Vec<Observation>,
}

/// Compares dc1's `repl/` (`?consistent`, through each dc1 server in turn) with dc2's every 200 ms
/// until they are equal or [`CONVERGE_LIMIT`] has passed since `stopped_ns`.
async fn converge(shared: &Shared, dc2: SocketAddr, stopped_ns: u64) -> Converged {
    let deadline_ns = stopped_ns + u64::try_from(CONVERGE_LIMIT.as_nanos()).unwrap_or(u64::MAX);
    let mut result = Converged {
        converged_ms: None,
        final_dc1: None,
        last_problem: None,
        observations: Vec::new(),
    };
    let mut attempt = 0usize;
    // At least one comparison, however late.
    loop {
        let server = shared.servers[attempt % shared.servers.len()];
        attempt += 1;
        match read_prefix(server, "&consistent").await {
            Ok(dc1) => {
                let observed = observe(shared, dc2).await;
                match observed {
                    Some(observation) => {
                        let diff = diff(&dc1, &observation.state);
                        let done_ns = observation.completed_ns;
                        result.observations.push(observation);
                        result.final_dc1 = Some(dc1);
                        match diff {
                            None => {
                                result.converged_ms = Some(done_ns.saturating_sub(stopped_ns) / 1_000_000);
                                return result;
                            }
                            Some(diff) => result.last_problem = Some(diff),
                        }
                    }
                    None => result.last_problem = Some("dc2 did not answer a read of repl/".to_owned()),
                }
            }
            Err(e) => {
                if result.final_dc1.is_none() {
                    result.last_problem = Some(format!("no ?consistent read of dc1's {PREFIX}: {e}"));
                }
            }
        }
        if shared.now_ns() >= deadline_ns {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How dc2's state differs from dc1's, summarised (`None`: equal).
fn diff(dc1: &State, dc2: &State) -> Option<String> {
    let missing: Vec<&String> = dc1.keys().filter(|k| !dc2.contains_key(*k)).collect();
    let extra: Vec<&String> = dc2.keys().filter(|k| !dc1.contains_key(*k)).collect();
    let differ: Vec<String> = dc1
        .iter()
        .filter_map(|(k, a)| {
            let b = dc2.get(k)?;
            (a != b).then(|| {
                format!(
                    "{k} dc1 {:?} flags {} / dc2 {:?} flags {}",
                    a.value, a.flags, b.value, b.flags
                )
            })
        })
        .collect();
    if missing.is_empty() && extra.is_empty() && differ.is_empty() {
        return None;
    }
    let some = |items: Vec<String>| {
        let n = items.len();
        let mut shown: Vec<String> = items.into_iter().take(3).collect();
        if n > 3 {
            shown.push("…".to_owned());
        }
        format!("{n} [{}]", shown.join(", "))
    };
    Some(format!(
        "dc1 has {} keys, dc2 {}; missing in dc2: {}; only in dc2: {}; values or flags differ: {}",
        dc1.len(),
        dc2.len(),
        some(missing.into_iter().cloned().collect()),
        some(extra.into_iter().cloned().collect()),
        some(differ)
    ))
}

/// `repl/k<n>` → n, for the writer's keys.
fn key_number(k: &str) -> Option<usize> {
    let n: usize = k.strip_prefix(PREFIX)?.strip_prefix('k')?.parse().ok()?;
    (n < KEYS && key(n) == k).then_some(n)
}

/// `repl/k<n>:<seq>` under key `k` → seq.
fn value_seq(k: &str, value: &str) -> Option<u64> {
    let (named, seq) = value.rsplit_once(':')?;
    (named == k).then_some(())?;
    seq.parse().ok()
}

/// The kinds of wrong state, one anomaly per key and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wrong {
    /// A key or value the writer never wrote, whose write failed, or was not sent yet.
    Phantom,
    /// The flags are not the value's `seq`.
    Flags,
    /// A state older than one already seen.
    Rewind,
    /// A value replaced by absence that no delete can explain.
    Vanished,
}

impl Wrong {
    fn name(self) -> &'static str {
        match self {
            Wrong::Phantom => "phantom in dc2",
            Wrong::Flags => "flags not replicated",
            Wrong::Rewind => "rewind in dc2",
            Wrong::Vanished => "vanished from dc2 without a delete",
        }
    }
}

/// What one key showed in dc2 so far.
#[derive(Debug, Default)]
struct KeyTrack {
    /// The last state seen (`None`: absent).
    current: Option<u64>,
    /// Whether any read has been judged yet (the first absent is the initial state).
    started: bool,
    /// The highest `seq` seen as a value.
    highest: Option<u64>,
    /// Values seen and then replaced: they can never come back (each write applies once).
    left: BTreeSet<u64>,
    /// While absent: the deletes that may explain it (seq, acknowledged), and whether the key may
    /// still be in its initial state.
    absent_by: Vec<(u64, bool)>,
    initial_possible: bool,
}

struct Judged {
    problems: Vec<String>,
    changes: usize,
    changes_log: String,
}

/// Judges dc2's states in the order they were read against the writer's operations.
fn judge(ops: &[WriterOp], seen: &[Observation]) -> Judged {
    let by_seq: BTreeMap<(usize, u64), &WriterOp> = ops.iter().map(|op| ((op.key, op.seq), op)).collect();
    let mut tracks: Vec<KeyTrack> = (0..KEYS)
        .map(|_| KeyTrack {
            initial_possible: true,
            ..KeyTrack::default()
        })
        .collect();
    // (kind, key) → (count, first detail)
    let mut wrong: BTreeMap<(Wrong, String), (usize, String)> = BTreeMap::new();
    let mut note = |kind: Wrong, k: &str, detail: String| {
        wrong.entry((kind, k.to_owned())).or_insert((0, detail)).0 += 1;
    };
    let mut changes = 0;
    let mut changes_log = String::new();
    for o in seen {
        let at = secs(o.completed_ns);
        for k in o.state.keys().filter(|k| key_number(k).is_none()) {
            note(
                Wrong::Phantom,
                k,
                format!("at {at:.1} s: a key the writer never wrote"),
            );
        }
        for (n, track) in tracks.iter_mut().enumerate() {
            let k = key(n);
            let shown = o.state.get(&k);
            // The value's seq, if it names a write of this key that may have happened by now.
            let now = match shown {
                None => None,
                Some(shown) => {
                    let write = value_seq(&k, &shown.value)
                        .and_then(|seq| by_seq.get(&(n, seq)))
                        .filter(|op| op.put && op.may_have_happened() && op.invoked_ns <= o.completed_ns);
                    let Some(write) = write else {
                        note(
                            Wrong::Phantom,
                            &k,
                            format!(
                                "at {at:.1} s: {:?}, which no write that may have happened by then produced",
                                shown.value
                            ),
                        );
                        continue;
                    };
                    if shown.flags != write.seq {
                        note(
                            Wrong::Flags,
                            &k,
                            format!("at {at:.1} s: {:?} with flags {}", shown.value, shown.flags),
                        );
                    }
                    Some(*write)
                }
            };
            let now_seq = now.map(|op| op.seq);
            if track.started && track.current == now_seq {
                continue;
            }
            let show = |seq: Option<u64>| seq.map_or("absent".to_owned(), |s| format!(":{s}"));
            if track.started {
                changes += 1;
                let _ = writeln!(
                    changes_log,
                    "{at:.3}\t{k}\t{} -> {}",
                    show(track.current),
                    show(now_seq)
                );
            }
            match now {
                Some(write) => {
                    let acked = write.outcome == Outcome::Acked;
                    if track.left.contains(&write.seq) {
                        note(
                            Wrong::Rewind,
                            &k,
                            format!(
                                "at {at:.1} s: :{} came back after {} replaced it",
                                write.seq,
                                show(track.current)
                            ),
                        );
                    } else if acked && track.highest.is_some_and(|h| h > write.seq) {
                        // Every later write was sent after this one was acknowledged.
                        note(
                            Wrong::Rewind,
                            &k,
                            format!(
                                "at {at:.1} s: :{} (acknowledged) after :{} was seen",
                                write.seq,
                                track.highest.unwrap_or(0)
                            ),
                        );
                    } else if acked
                        && track.current.is_none()
                        && track.started
                        && !track.initial_possible
                        && !track.absent_by.is_empty()
                        && track
                            .absent_by
                            .iter()
                            .all(|(d, d_acked)| *d_acked && *d > write.seq)
                    {
                        note(
                            Wrong::Rewind,
                            &k,
                            format!(
                                "at {at:.1} s: :{} (acknowledged) after an absence only later acknowledged deletes explain ({:?})",
                                write.seq,
                                track.absent_by.iter().map(|(d, _)| d).collect::<Vec<_>>()
                            ),
                        );
                    }
                    if let Some(previous) = track.current {
                        track.left.insert(previous);
                    }
                    track.highest = track.highest.max(Some(write.seq));
                    track.initial_possible = false;
                    track.absent_by.clear();
                }
                None => {
                    // Deletes that may have happened by now and may be the key's last operation:
                    // later than every value seen, or unknown (applied late).
                    let candidates: Vec<(u64, bool)> = ops
                        .iter()
                        .filter(|op| op.key == n && !op.put && op.may_have_happened())
                        .filter(|op| op.invoked_ns <= o.completed_ns)
                        .filter(|op| {
                            op.outcome == Outcome::Unknown || track.highest.is_none_or(|h| op.seq > h)
                        })
                        .map(|op| (op.seq, op.outcome == Outcome::Acked))
                        .collect();
                    if let Some(previous) = track.current {
                        if candidates.is_empty() {
                            note(
                                Wrong::Vanished,
                                &k,
                                format!(
                                    "at {at:.1} s: :{previous} replaced by absence, and no delete may explain it"
                                ),
                            );
                        }
                        track.left.insert(previous);
                    }
                    track.initial_possible = track.highest.is_none();
                    track.absent_by = candidates;
                }
            }
            track.current = now_seq;
            track.started = true;
        }
    }
    let problems = wrong
        .into_iter()
        .map(|((kind, k), (count, first))| format!("{k}: {} ×{count} (first {first})", kind.name()))
        .collect();
    Judged {
        problems,
        changes,
        changes_log,
    }
}

/// Checks dc1's final `repl/` against the writer: each key must show its last acknowledged
/// operation (absent if there was none) or any operation with an unknown outcome.
fn explain_final(ops: &[WriterOp], final_dc1: &State) -> Vec<String> {
    let mut problems = Vec::new();
    for k in final_dc1.keys().filter(|k| key_number(k).is_none()) {
        problems.push(format!(
            "dc1's final {PREFIX} has {k}, a key the writer never wrote"
        ));
    }
    for n in 0..KEYS {
        let k = key(n);
        let mine: Vec<&WriterOp> = ops.iter().filter(|op| op.key == n).collect();
        let last_acked = mine.iter().rev().find(|op| op.outcome == Outcome::Acked);
        let mut allowed: BTreeSet<Option<u64>> = mine
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .map(|op| op.put.then_some(op.seq))
            .collect();
        allowed.insert(last_acked.and_then(|op| op.put.then_some(op.seq)));
        let shown = final_dc1.get(&k);
        let got = shown.map(|s| value_seq(&k, &s.value));
        let explained = match got {
            None => allowed.contains(&None),
            Some(Some(seq)) => allowed.contains(&Some(seq)),
            Some(None) => false,
        };
        if !explained {
            problems.push(format!(
                "dc1's final {k} is {}, but the writer's last acknowledged operation was {} (unknown outcomes: {:?})",
                shown.map_or("absent".to_owned(), |s| format!("{:?}", s.value)),
                last_acked.map_or("none (absent)".to_owned(), |op| if op.put {
                    format!("put :{}", op.seq)
                } else {
                    format!("delete :{}", op.seq)
                }),
                mine.iter()
                    .filter(|op| op.outcome == Outcome::Unknown)
                    .map(|op| op.seq)
                    .collect::<Vec<_>>()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: usize, seq: u64, put: bool, outcome: Outcome, at: u64) -> WriterOp {
        WriterOp {
            key,
            seq,
            put,
            outcome,
            invoked_ns: at,
            completed_ns: at + 1,
        }
    }

    fn obs(at: u64, entries: &[(usize, u64)]) -> Observation {
        Observation {
            completed_ns: at + 1,
            state: entries
                .iter()
                .map(|(n, seq)| {
                    (
                        key(*n),
                        Shown {
                            value: format!("{}:{seq}", key(*n)),
                            flags: *seq,
                        },
                    )
                })
                .collect(),
        }
    }

    fn problems(ops: &[WriterOp], seen: &[Observation]) -> Vec<String> {
        judge(ops, seen).problems
    }

    #[test]
    fn in_order_replication_passes() {
        let ops = [
            op(0, 1, true, Outcome::Acked, 10),
            op(0, 2, true, Outcome::Acked, 20),
            op(0, 3, false, Outcome::Acked, 30),
            op(0, 4, true, Outcome::Acked, 40),
        ];
        let seen = [
            obs(5, &[]),
            obs(15, &[(0, 1)]),
            obs(25, &[(0, 2)]),
            obs(35, &[]),
            obs(45, &[(0, 4)]),
        ];
        assert!(problems(&ops, &seen).is_empty(), "{:?}", problems(&ops, &seen));
    }

    #[test]
    fn acknowledged_rewind_and_returning_values_are_caught() {
        let ops = [
            op(0, 1, true, Outcome::Acked, 10),
            op(0, 2, true, Outcome::Acked, 20),
        ];
        let found = problems(&ops, &[obs(25, &[(0, 2)]), obs(30, &[(0, 1)])]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("rewind"), "{found:?}");
        // An unknown write may land late, once: seen again after it was replaced is a rewind.
        let ops = [
            op(0, 1, true, Outcome::Unknown, 10),
            op(0, 2, true, Outcome::Acked, 20),
        ];
        assert!(problems(&ops, &[obs(25, &[(0, 2)]), obs(30, &[(0, 1)])]).is_empty());
        let found = problems(
            &ops,
            &[obs(25, &[(0, 1)]), obs(30, &[(0, 2)]), obs(35, &[(0, 1)])],
        );
        assert!(found.iter().any(|p| p.contains("came back")), "{found:?}");
    }

    #[test]
    fn phantoms_flags_and_vanishing_are_caught() {
        let ops = [
            op(0, 1, true, Outcome::Acked, 10),
            op(1, 1, true, Outcome::Failed, 10),
        ];
        let mut wrong_flags = obs(20, &[(0, 1)]);
        wrong_flags.state.get_mut(&key(0)).unwrap().flags = 0;
        let found = problems(&ops, &[obs(15, &[(1, 1)]), wrong_flags, obs(30, &[])]);
        assert!(found.iter().any(|p| p.contains("phantom")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("flags")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("vanished")), "{found:?}");
        // A value seen before its write was sent is a phantom too.
        let found = problems(&ops, &[obs(5, &[(0, 1)])]);
        assert!(found.iter().any(|p| p.contains("phantom")), "{found:?}");
    }

    #[test]
    fn a_value_after_an_absence_only_later_deletes_explain_is_a_rewind() {
        let ops = [
            op(0, 1, true, Outcome::Acked, 10),
            op(0, 2, true, Outcome::Acked, 20),
            op(0, 3, false, Outcome::Acked, 30),
        ];
        let found = problems(&ops, &[obs(25, &[(0, 2)]), obs(35, &[]), obs(40, &[(0, 1)])]);
        assert!(found.iter().any(|p| p.contains("rewind")), "{found:?}");
    }

    #[test]
    fn dc1_final_state_is_explained_by_acknowledged_or_unknown_operations() {
        let ops = [
            op(0, 1, true, Outcome::Acked, 10),
            op(0, 2, true, Outcome::Unknown, 20),
            op(1, 1, true, Outcome::Acked, 10),
            op(1, 2, false, Outcome::Acked, 20),
        ];
        let state = obs(0, &[(0, 2)]).state;
        assert!(explain_final(&ops, &state).is_empty());
        let state = obs(0, &[(0, 1), (1, 1)]).state;
        let found = explain_final(&ops, &state);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("repl/k1"), "{found:?}");
    }

    #[test]
    fn diff_summarises() {
        assert!(diff(&obs(0, &[(0, 1)]).state, &obs(0, &[(0, 1)]).state).is_none());
        let text = diff(&obs(0, &[(0, 1), (1, 1)]).state, &obs(0, &[(0, 2), (2, 1)]).state).unwrap();
        assert!(text.contains("missing in dc2: 1 [repl/k1]"), "{text}");
        assert!(text.contains("only in dc2: 1 [repl/k2]"), "{text}");
        assert!(text.contains("values or flags differ: 1"), "{text}");
    }
}
