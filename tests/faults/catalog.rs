//! The catalog scenario of every run: service instances on external nodes registered, flipped and
//! deregistered through random dc1 servers while the nemesis works, then every server's catalog
//! held to the leader's and the leader's to what the registrar was told.
//!
//! - A registrar works on instances of `cat-svc-0..2` on the external nodes `cat-node-0..9`
//!   (Address `192.0.2.10+i`): `PUT /v1/catalog/register` of the node, the instance (service ID =
//!   name, `Meta.seq`) and one check bound to it (`cat-chk-N`, `Output` `seq <seq>`, a status), and
//!   `PUT /v1/catalog/deregister` of the instance (its check goes with it). A flip re-registers the
//!   instance with another status, as an agent's anti-entropy sends a service with its checks, so
//!   every operation sets or removes one instance whole. `seq` counts every operation of the run
//!   (deregistrations included) and is never reused, so a shown `seq` names one operation. Each
//!   outcome is recorded as the register clients classify theirs (workload.rs's `write_outcome`):
//!   acknowledged, failed (never sent, or refused), or unknown (it may take effect at any later time).
//! - An observer per dc1 server reads that server's own `?stale` health of each service and
//!   `/v1/health/state/any` every [`OBSERVE_EVERY`]: every instance and check it shows must name an
//!   operation of that instance that may have happened by then (sent, not failed), with that
//!   operation's status, address and `Meta.seq` (else **catalog phantom**).
//! - Once the faults are healed and the registrar has stopped, each server's `?stale` catalog of
//!   these nodes must equal the leader's `?consistent` one — instances, checks, their statuses,
//!   outputs and `ModifyIndex`es — within [`CONVERGE_LIMIT`] (else **catalog divergence**); the time
//!   it took is a campaign figure. The leader's final catalog must be explained by the outcomes:
//!   each instance as its last acknowledged operation left it, or as any unknown one did (an
//!   unknown request may be applied after a later one was acknowledged), and no check without its
//!   instance (else **lost acked write**).
//!
//! The servers' own nodes, `serfHealth` checks and `consul` instances (which the leader reconciles
//! from the LAN pool, and which a killed server legitimately changes) are left out: the reads
//! filter on the `cat-node-` prefix. It checks single-instance state, not node deregistration, the
//! order a server goes through states (a server restarted from disk may answer `?stale` from an
//! older state while it replays), nor blocking queries. Everything the scenario saw is in
//! `catalog.txt` of the run's directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tribune_check::KvOutcome;

use super::http::{self, NoResponse, Response};
use super::workload::{REQUEST_TIMEOUT, Shared, write_outcome};

/// External nodes and services the registrar works on (an instance is one service on one node).
const NODES: usize = 10;
const SERVICES: usize = 3;
/// The prefix of the registrar's node names; everything else in the catalog is left out.
const NODE_PREFIX: &str = "cat-node-";
/// Bounds on the registrar: operations, and time.
const REGISTRAR_MAX_OPS: usize = 5000;
const REGISTRAR_MAX_TIME: Duration = Duration::from_secs(600);
/// Percent of operations on a registered instance that deregister it.
const DEREGISTER_PERCENT: u32 = 15;
/// Each observer's pause between rounds of reads.
const OBSERVE_EVERY: Duration = Duration::from_millis(300);
/// A bound on each observer's rounds (a run lasts minutes; this is hours).
const MAX_OBSERVATIONS: usize = 20_000;
/// How long every server's catalog may take to equal the leader's once the registrar stopped.
pub(crate) const CONVERGE_LIMIT: Duration = Duration::from_secs(30);
/// Successful observer rounds a run must have made for its phantom checks to count.
const MIN_OBSERVATIONS: usize = 10;
const STATUSES: [&str; 3] = ["passing", "warning", "critical"];
/// Timeout of one read (an observer's, or the convergence wait's).
const READ_TIMEOUT: Duration = Duration::from_secs(3);

fn node(i: usize) -> String {
    format!("{NODE_PREFIX}{i}")
}

fn service(j: usize) -> String {
    format!("cat-svc-{j}")
}

fn check_id(j: usize) -> String {
    format!("cat-chk-{j}")
}

fn address(i: usize) -> String {
    format!("192.0.2.{}", 10 + i)
}

fn output(seq: u64) -> String {
    format!("seq {seq}")
}

fn secs(at_ns: u64) -> f64 {
    at_ns as f64 / 1e9
}

/// What a registrar operation was known to have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged: it took effect before the answer.
    Acked,
    /// It cannot have taken effect (never sent, or refused).
    Failed,
    /// It may take effect at any time after it was sent.
    Unknown,
}

/// The register clients' classification, for a catalog write (which answers `true`).
fn outcome_of(result: &Result<Response, NoResponse>) -> Outcome {
    match write_outcome(result) {
        KvOutcome::Written { ok: true } => Outcome::Acked,
        KvOutcome::Failed => Outcome::Failed,
        // Indeterminate, or a 200 other than `true`, which a catalog write never answers.
        _ => Outcome::Unknown,
    }
}

/// What an operation does to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Registers an instance the registrar believed absent, its check with this status.
    Register(&'static str),
    /// Re-registers a registered instance with its check in another status.
    Flip(&'static str),
    Deregister,
}

impl Kind {
    /// The check status the instance has after it (`None`: removed).
    fn status(self) -> Option<&'static str> {
        match self {
            Kind::Register(status) | Kind::Flip(status) => Some(status),
            Kind::Deregister => None,
        }
    }
}

/// One registrar operation on the instance of `cat-svc-<svc>` on `cat-node-<node>`.
#[derive(Debug, Clone)]
struct CatalogOp {
    node: usize,
    svc: usize,
    seq: u64,
    kind: Kind,
    outcome: Outcome,
    invoked_ns: u64,
    completed_ns: u64,
}

impl CatalogOp {
    fn may_have_happened(&self) -> bool {
        self.outcome != Outcome::Failed
    }
}

fn register_body(i: usize, j: usize, seq: u64, status: &str) -> Value {
    json!({
        "Datacenter": "dc1",
        "Node": node(i),
        "Address": address(i),
        "Service": {"ID": service(j), "Service": service(j), "Port": 8000 + j, "Meta": {"seq": seq.to_string()}},
        "Check": {"CheckID": check_id(j), "Name": format!("{} alive", service(j)), "ServiceID": service(j),
                  "Status": status, "Output": output(seq)},
    })
}

/// The registrar: registrations, flips and deregistrations through random dc1 servers until the
/// clients stop (bounded by [`REGISTRAR_MAX_OPS`] and [`REGISTRAR_MAX_TIME`]). Returns its
/// operations and when it stopped.
async fn registrar(shared: Arc<Shared>, seed: u64) -> (Vec<CatalogOp>, u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    // The status last sent per instance (`None`: last sent a deregistration, or nothing yet).
    let mut believed: Vec<Option<&'static str>> = vec![None; NODES * SERVICES];
    let mut seq = 0u64;
    let mut ops = Vec::new();
    while !shared.stop.load(Ordering::Relaxed)
        && ops.len() < REGISTRAR_MAX_OPS
        && started.elapsed() < REGISTRAR_MAX_TIME
    {
        let (i, j) = (rng.random_range(0..NODES), rng.random_range(0..SERVICES));
        let slot = i * SERVICES + j;
        seq += 1;
        let kind = match believed[slot] {
            None => Kind::Register(STATUSES[rng.random_range(0..STATUSES.len())]),
            Some(_) if rng.random_range(0..100) < DEREGISTER_PERCENT => Kind::Deregister,
            Some(last) => {
                let others: Vec<&'static str> = STATUSES.into_iter().filter(|s| *s != last).collect();
                Kind::Flip(others[rng.random_range(0..others.len())])
            }
        };
        let (path, body) = match kind.status() {
            Some(status) => ("/v1/catalog/register", register_body(i, j, seq, status)),
            None => (
                "/v1/catalog/deregister",
                json!({"Datacenter": "dc1", "Node": node(i), "ServiceID": service(j)}),
            ),
        };
        let server = shared.servers[rng.random_range(0..shared.servers.len())];
        let invoked_ns = shared.now_ns();
        let result = http::call(server, "PUT", path, body.to_string().as_bytes(), REQUEST_TIMEOUT).await;
        let outcome = outcome_of(&result);
        if outcome != Outcome::Failed {
            believed[slot] = kind.status();
        }
        ops.push(CatalogOp {
            node: i,
            svc: j,
            seq,
            kind,
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

/// A check as a read showed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ShownCheck {
    service_id: String,
    status: String,
    output: String,
    modify_index: u64,
}

/// An instance as `/v1/health/service/:name` showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShownInstance {
    address: String,
    port: u64,
    meta_seq: Option<String>,
    modify_index: u64,
    /// Check ID → check.
    checks: BTreeMap<String, ShownCheck>,
}

/// The registrar's part of one server's catalog: instances by (node, service ID) from the three
/// services' health, and every check of the registrar's nodes by (node, check ID) from
/// `/v1/health/state/any`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Snapshot {
    instances: BTreeMap<(String, String), ShownInstance>,
    checks: BTreeMap<(String, String), ShownCheck>,
}

fn text_of(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number_of(value: &Value, field: &str) -> u64 {
    value.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn shown_check(check: &Value) -> ShownCheck {
    ShownCheck {
        service_id: text_of(check, "ServiceID"),
        status: text_of(check, "Status"),
        output: text_of(check, "Output"),
        modify_index: number_of(check, "ModifyIndex"),
    }
}

/// A GET answered 200 with a JSON array.
async fn get_array(server: SocketAddr, path: &str) -> Result<Vec<Value>, String> {
    let reply = http::call(server, "GET", path, b"", READ_TIMEOUT)
        .await
        .map_err(|e| format!("{server}{path}: no answer ({e:?})"))?;
    if reply.status != 200 {
        return Err(format!(
            "{server}{path}: {} {}",
            reply.status,
            reply.text().chars().take(200).collect::<String>()
        ));
    }
    match reply.json() {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(format!("{server}{path}: 200 without a JSON array")),
    }
}

/// The registrar's part of `server`'s catalog (`mode`: `stale` or `consistent`).
async fn snapshot(server: SocketAddr, mode: &str) -> Result<Snapshot, String> {
    let mut snap = Snapshot::default();
    for j in 0..SERVICES {
        for entry in get_array(server, &format!("/v1/health/service/{}?{mode}", service(j))).await? {
            let node_name = entry.get("Node").map(|n| text_of(n, "Node")).unwrap_or_default();
            if !node_name.starts_with(NODE_PREFIX) {
                continue;
            }
            let svc = entry.get("Service").cloned().unwrap_or(Value::Null);
            let checks = entry
                .get("Checks")
                .and_then(Value::as_array)
                .map(|checks| {
                    checks
                        .iter()
                        .map(|c| (text_of(c, "CheckID"), shown_check(c)))
                        .collect()
                })
                .unwrap_or_default();
            let instance = ShownInstance {
                address: entry
                    .get("Node")
                    .map(|n| text_of(n, "Address"))
                    .unwrap_or_default(),
                port: number_of(&svc, "Port"),
                meta_seq: svc
                    .get("Meta")
                    .and_then(|m| m.get("seq"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                modify_index: number_of(&svc, "ModifyIndex"),
                checks,
            };
            snap.instances.insert((node_name, text_of(&svc, "ID")), instance);
        }
    }
    for check in get_array(server, &format!("/v1/health/state/any?{mode}")).await? {
        let node_name = text_of(&check, "Node");
        if node_name.starts_with(NODE_PREFIX) {
            snap.checks
                .insert((node_name, text_of(&check, "CheckID")), shown_check(&check));
        }
    }
    Ok(snap)
}

/// One successful observer round on one server.
#[derive(Debug, Clone)]
struct Observation {
    server: usize,
    completed_ns: u64,
    snapshot: Snapshot,
}

/// The observer of server `index`: its `?stale` catalog every [`OBSERVE_EVERY`] until the clients
/// stop. Keeps a round only when it differs from the server's previous one (the first time a state
/// is seen is what the phantom check needs). Returns those, the successful rounds and the failed.
async fn observer(shared: Arc<Shared>, index: usize) -> (Vec<Observation>, usize, usize) {
    let server = shared.servers[index];
    let mut kept: Vec<Observation> = Vec::new();
    let (mut rounds, mut failed) = (0, 0);
    for _ in 0..MAX_OBSERVATIONS {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match snapshot(server, "stale").await {
            Ok(snapshot) => {
                rounds += 1;
                if kept.last().is_none_or(|last| last.snapshot != snapshot) {
                    kept.push(Observation {
                        server: index,
                        completed_ns: shared.now_ns(),
                        snapshot,
                    });
                }
            }
            Err(_) => failed += 1,
        }
        tokio::time::sleep(OBSERVE_EVERY).await;
    }
    (kept, rounds, failed)
}

/// A run's catalog figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    /// Registrar operations, how many were acknowledged and how many unknown.
    pub(crate) operations: usize,
    pub(crate) acked: usize,
    pub(crate) unknown: usize,
    /// Successful observer rounds (each: one server's catalog of the registrar's nodes).
    pub(crate) observations: usize,
    /// Changes of an instance seen by the observers.
    pub(crate) changes_seen: usize,
    /// ms from the registrar's stop until every server's catalog equalled the leader's.
    pub(crate) converged_ms: Option<u64>,
}

/// What the scenario found: catalog anomalies, acknowledged writes the leader lost, figures.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) catalog: Vec<String>,
    pub(crate) lost: Vec<String>,
    pub(crate) figures: Figures,
}

type ObserverResult = (Vec<Observation>, usize, usize);

/// The scenario while it runs.
pub(crate) struct Scenario {
    registrar: JoinHandle<(Vec<CatalogOp>, u64)>,
    observers: Vec<JoinHandle<ObserverResult>>,
    dir: PathBuf,
}

impl Scenario {
    /// Starts the registrar and one observer per dc1 server; they stop with the run's clients
    /// (`shared.stop`).
    pub(crate) fn start(runtime: &Runtime, shared: &Arc<Shared>, dir: &Path, seed: u64) -> Scenario {
        Scenario {
            registrar: runtime.spawn(registrar(Arc::clone(shared), seed)),
            observers: (0..shared.servers.len())
                .map(|index| runtime.spawn(observer(Arc::clone(shared), index)))
                .collect(),
            dir: dir.to_owned(),
        }
    }

    /// Once the clients were told to stop (every fault healed): waits for the registrar and the
    /// observers, then for every server's catalog to equal the leader's, judges what was seen and
    /// writes `catalog.txt`.
    pub(crate) fn finish(self, runtime: &Runtime, shared: &Shared) -> Findings {
        let mut findings = Findings::default();
        let joined = runtime.block_on(async {
            let registrar = tokio::time::timeout(Duration::from_secs(30), self.registrar).await;
            let mut observers = Vec::new();
            for observer in self.observers {
                observers.push(tokio::time::timeout(Duration::from_secs(30), observer).await);
            }
            (registrar, observers)
        });
        let (Ok(Ok((ops, stopped_ns))), observed) = joined else {
            findings
                .catalog
                .push("the catalog registrar did not finish".to_owned());
            return findings;
        };
        let mut seen = Vec::new();
        let (mut rounds, mut failed_rounds) = (0, 0);
        for result in observed {
            match result {
                Ok(Ok((kept, ok, failed))) => {
                    seen.extend(kept);
                    rounds += ok;
                    failed_rounds += failed;
                }
                _ => findings
                    .catalog
                    .push("a catalog observer did not finish".to_owned()),
            }
        }
        seen.sort_by_key(|o| o.completed_ns);
        let waited = runtime.block_on(converge(shared, stopped_ns));

        let mut log = String::new();
        let _ = writeln!(
            log,
            "registrar: {} operations on {NODES} nodes × {SERVICES} services ({} acknowledged, {} unknown), stopped at {:.3} s; {rounds} observer rounds ({failed_rounds} failed), {} distinct states kept",
            ops.len(),
            ops.iter().filter(|op| op.outcome == Outcome::Acked).count(),
            ops.iter().filter(|op| op.outcome == Outcome::Unknown).count(),
            secs(stopped_ns),
            seen.len()
        );
        match waited.converged_ms {
            Some(ms) => {
                let _ = writeln!(
                    log,
                    "converged: every server's catalog equalled the leader's ({} instances, {} checks) {ms} ms after the registrar stopped",
                    waited.leader.as_ref().map_or(0, |s| s.instances.len()),
                    waited.leader.as_ref().map_or(0, |s| s.checks.len())
                );
            }
            None => {
                let diff = waited.last_problem.clone().unwrap_or_default();
                let _ = writeln!(log, "NOT converged within {CONVERGE_LIMIT:?}: {diff}");
                findings.catalog.push(format!(
                    "catalog divergence: the servers' catalogs did not equal the leader's within {CONVERGE_LIMIT:?} of the registrar's stop: {diff}"
                ));
            }
        }
        let judged = judge(&ops, &seen);
        findings.catalog.extend(judged.problems);
        if rounds < MIN_OBSERVATIONS || judged.changes == 0 {
            findings.catalog.push(format!(
                "the catalog observers made {rounds} reads and saw {} changes: nothing to judge phantoms on",
                judged.changes
            ));
        }
        if let Some(leader) = &waited.leader {
            findings.lost = explain_final(&ops, leader);
        }
        for problem in findings.catalog.iter().chain(&findings.lost) {
            let _ = writeln!(log, "PROBLEM: {problem}");
        }
        log.push_str("\ninvoked_s\ttook_ms\tseq\top\tinstance\toutcome\n");
        for op in &ops {
            let _ = writeln!(
                log,
                "{:.3}\t{}\t{}\t{}\t{}/{}\t{:?}",
                secs(op.invoked_ns),
                op.completed_ns.saturating_sub(op.invoked_ns) / 1_000_000,
                op.seq,
                match op.kind {
                    Kind::Register(status) => format!("register {status}"),
                    Kind::Flip(status) => format!("flip {status}"),
                    Kind::Deregister => "deregister".to_owned(),
                },
                node(op.node),
                service(op.svc),
                op.outcome
            );
        }
        log.push_str("\nchanges seen (read completed at, server, instance, before -> after):\n");
        log.push_str(&judged.changes_log);
        if let Some(leader) = &waited.leader {
            log.push_str("\nthe leader's final catalog (?consistent):\n");
            for ((n, s), instance) in &leader.instances {
                let _ = writeln!(log, "{n}/{s}\t{instance:?}");
            }
            for ((n, c), check) in &leader.checks {
                let _ = writeln!(log, "{n} check {c}\t{check:?}");
            }
        }
        let _ = std::fs::write(self.dir.join("catalog.txt"), log);
        findings.figures = Figures {
            operations: ops.len(),
            acked: ops.iter().filter(|op| op.outcome == Outcome::Acked).count(),
            unknown: ops.iter().filter(|op| op.outcome == Outcome::Unknown).count(),
            observations: rounds,
            changes_seen: judged.changes,
            converged_ms: waited.converged_ms,
        };
        findings
    }
}

/// The convergence wait's result.
struct Converged {
    converged_ms: Option<u64>,
    /// The leader's catalog at the last successful `?consistent` read.
    leader: Option<Snapshot>,
    /// Why the last comparison failed.
    last_problem: Option<String>,
}

/// Reads the leader's catalog (`?consistent`, through each server in turn) and every server's own
/// (`?stale`) every 200 ms until they are all equal or [`CONVERGE_LIMIT`] has passed since
/// `stopped_ns`.
async fn converge(shared: &Shared, stopped_ns: u64) -> Converged {
    let deadline_ns = stopped_ns + u64::try_from(CONVERGE_LIMIT.as_nanos()).unwrap_or(u64::MAX);
    let mut result = Converged {
        converged_ms: None,
        leader: None,
        last_problem: None,
    };
    // At least one comparison, however late; each round takes at least 200 ms, so the deadline
    // bounds the loop, and the count bounds it should the clock misbehave.
    for attempt in 0..10_000usize {
        let through = shared.servers[attempt % shared.servers.len()];
        match snapshot(through, "consistent").await {
            Ok(leader) => {
                let mut differ = Vec::new();
                for (index, server) in shared.servers.iter().enumerate() {
                    match snapshot(*server, "stale").await {
                        Ok(own) => differ.extend(diff(&leader, &own).map(|d| format!("s{}: {d}", index + 1))),
                        Err(e) => differ.push(format!("s{}: {e}", index + 1)),
                    }
                }
                result.leader = Some(leader);
                if differ.is_empty() {
                    result.converged_ms = Some(shared.now_ns().saturating_sub(stopped_ns) / 1_000_000);
                    return result;
                }
                result.last_problem = Some(differ.join("; "));
            }
            Err(e) => {
                if result.leader.is_none() {
                    result.last_problem = Some(format!("no ?consistent read of the catalog: {e}"));
                }
            }
        }
        if shared.now_ns() >= deadline_ns {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    result
}

/// How a server's catalog differs from the leader's, summarised (`None`: equal).
fn diff(leader: &Snapshot, own: &Snapshot) -> Option<String> {
    fn keys<V: PartialEq>(
        a: &BTreeMap<(String, String), V>,
        b: &BTreeMap<(String, String), V>,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let name = |(n, s): &(String, String)| format!("{n}/{s}");
        let missing = a.keys().filter(|k| !b.contains_key(*k)).map(name).collect();
        let extra = b.keys().filter(|k| !a.contains_key(*k)).map(name).collect();
        let differ = a
            .iter()
            .filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v))
            .map(|(k, _)| name(k))
            .collect();
        (missing, extra, differ)
    }
    if leader == own {
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
    let (im, ie, id) = keys(&leader.instances, &own.instances);
    let (cm, ce, cd) = keys(&leader.checks, &own.checks);
    Some(format!(
        "instances missing {}, extra {}, differing {}; checks missing {}, extra {}, differing {}",
        some(im),
        some(ie),
        some(id),
        some(cm),
        some(ce),
        some(cd)
    ))
}

/// `cat-node-<i>` → i and `cat-svc-<j>` → j, for the registrar's instances.
fn instance_number(node_name: &str, service_id: &str) -> Option<(usize, usize)> {
    let i: usize = node_name.strip_prefix(NODE_PREFIX)?.parse().ok()?;
    let j: usize = service_id.strip_prefix("cat-svc-")?.parse().ok()?;
    (i < NODES && j < SERVICES && node(i) == node_name && service(j) == service_id).then_some((i, j))
}

/// The registration a shown instance names, if it is exactly what that operation registered:
/// its node's address, `Meta.seq`, one check `cat-chk-<j>` bound to it with `Output` `seq <seq>`
/// and the operation's status. `Err`: what is wrong.
fn named_by<'a>(
    by_seq: &BTreeMap<u64, &'a CatalogOp>,
    (i, j): (usize, usize),
    shown: &ShownInstance,
) -> Result<&'a CatalogOp, String> {
    let seq: u64 = shown
        .meta_seq
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("Meta.seq {:?}", shown.meta_seq))?;
    let op = by_seq
        .get(&seq)
        .filter(|op| (op.node, op.svc) == (i, j))
        .ok_or_else(|| format!("Meta.seq {seq}, no operation of this instance"))?;
    let status = op
        .kind
        .status()
        .ok_or_else(|| format!("Meta.seq {seq}, a deregistration"))?;
    let check = shown.checks.get(&check_id(j));
    let right = shown.address == address(i)
        && shown.port == 8000 + j as u64
        && shown.checks.len() == 1
        && check.is_some_and(|c| c.service_id == service(j) && c.status == status && c.output == output(seq));
    if !right {
        return Err(format!("Meta.seq {seq} ({:?}) shown as {shown:?}", op.kind));
    }
    Ok(op)
}

/// The kinds of wrong state, one anomaly per instance and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wrong {
    /// An instance or check no operation that may have happened by then produced, or not as it
    /// registered it.
    Phantom,
}

struct Judged {
    problems: Vec<String>,
    changes: usize,
    changes_log: String,
}

/// Judges the observers' states: every instance and check must name an operation of its instance
/// that may have happened before the read completed, as that operation registered it.
fn judge(ops: &[CatalogOp], seen: &[Observation]) -> Judged {
    let by_seq: BTreeMap<u64, &CatalogOp> = ops.iter().map(|op| (op.seq, op)).collect();
    // (kind, instance) → (count, first detail)
    let mut wrong: BTreeMap<(Wrong, String), (usize, String)> = BTreeMap::new();
    let mut note = |kind: Wrong, what: String, detail: String| {
        wrong.entry((kind, what)).or_insert((0, detail)).0 += 1;
    };
    let mut changes = 0;
    let mut changes_log = String::new();
    // Per server, the seq each instance showed in its previous kept round.
    let mut previous: BTreeMap<usize, BTreeMap<(String, String), Option<String>>> = BTreeMap::new();
    for o in seen {
        let at = secs(o.completed_ns);
        let server = format!("s{}", o.server + 1);
        for ((n, s), shown) in &o.snapshot.instances {
            let what = format!("{n}/{s}");
            let Some(numbers) = instance_number(n, s) else {
                note(
                    Wrong::Phantom,
                    what,
                    format!("at {at:.1} s on {server}: an instance the registrar never registered"),
                );
                continue;
            };
            match named_by(&by_seq, numbers, shown) {
                Ok(op) if op.may_have_happened() && op.invoked_ns <= o.completed_ns => {}
                Ok(op) => note(
                    Wrong::Phantom,
                    what,
                    format!(
                        "at {at:.1} s on {server}: seq {} ({:?}, invoked at {:.1} s), which cannot have happened by then",
                        op.seq,
                        op.outcome,
                        secs(op.invoked_ns)
                    ),
                ),
                Err(e) => note(Wrong::Phantom, what, format!("at {at:.1} s on {server}: {e}")),
            }
        }
        for ((n, c), check) in &o.snapshot.checks {
            let what = format!("{n} check {c}");
            let numbers = instance_number(n, &check.service_id);
            let seq = check
                .output
                .strip_prefix("seq ")
                .and_then(|s| s.parse::<u64>().ok());
            let op = seq.and_then(|seq| by_seq.get(&seq));
            let explained = match (numbers, op) {
                (Some((i, j)), Some(op)) => {
                    (op.node, op.svc) == (i, j)
                        && *c == check_id(j)
                        && op.kind.status() == Some(check.status.as_str())
                        && op.may_have_happened()
                        && op.invoked_ns <= o.completed_ns
                }
                _ => false,
            };
            if !explained {
                note(
                    Wrong::Phantom,
                    what,
                    format!(
                        "at {at:.1} s on {server}: {check:?}, which no operation that may have happened by then produced"
                    ),
                );
            }
        }
        let before = previous.entry(o.server).or_default();
        let now: BTreeMap<(String, String), Option<String>> = o
            .snapshot
            .instances
            .iter()
            .map(|(k, v)| (k.clone(), v.meta_seq.clone()))
            .collect();
        let show = |seq: Option<&Option<String>>| match seq {
            None => "absent".to_owned(),
            Some(seq) => format!("seq {}", seq.as_deref().unwrap_or("?")),
        };
        let mut names: Vec<&(String, String)> = before.keys().chain(now.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            if before.get(name) != now.get(name) {
                changes += 1;
                let _ = writeln!(
                    changes_log,
                    "{at:.3}\t{server}\t{}/{}\t{} -> {}",
                    name.0,
                    name.1,
                    show(before.get(name)),
                    show(now.get(name))
                );
            }
        }
        *before = now;
    }
    let problems = wrong
        .into_iter()
        .map(|((kind, what), (count, first))| match kind {
            Wrong::Phantom => format!("catalog phantom: {what} ×{count} (first {first})"),
        })
        .collect();
    Judged {
        problems,
        changes,
        changes_log,
    }
}

/// Checks the leader's final catalog against the registrar: each instance as its last
/// acknowledged operation left it (absent if none, or a deregistration) or as any unknown one
/// did, and every check of the registrar's nodes the check of such an instance.
fn explain_final(ops: &[CatalogOp], leader: &Snapshot) -> Vec<String> {
    let by_seq: BTreeMap<u64, &CatalogOp> = ops.iter().map(|op| (op.seq, op)).collect();
    let mut problems = Vec::new();
    for (n, s) in leader.instances.keys() {
        if instance_number(n, s).is_none() {
            problems.push(format!(
                "the leader's final catalog has {n}/{s}, an instance the registrar never registered"
            ));
        }
    }
    for i in 0..NODES {
        for j in 0..SERVICES {
            let mine: Vec<&CatalogOp> = ops.iter().filter(|op| (op.node, op.svc) == (i, j)).collect();
            let last_acked = mine.iter().rev().find(|op| op.outcome == Outcome::Acked);
            let mut allowed: Vec<Option<u64>> = mine
                .iter()
                .filter(|op| op.outcome == Outcome::Unknown)
                .map(|op| op.kind.status().map(|_| op.seq))
                .collect();
            allowed.push(last_acked.and_then(|op| op.kind.status().map(|_| op.seq)));
            let shown = leader.instances.get(&(node(i), service(j)));
            let got = match shown {
                None => Ok(None),
                Some(shown) => named_by(&by_seq, (i, j), shown).map(|op| Some(op.seq)),
            };
            let explained = got.as_ref().is_ok_and(|seq| allowed.contains(seq));
            if !explained {
                problems.push(format!(
                    "(catalog) the leader's final {}/{} is {}, but the registrar's last acknowledged operation on it was {} (unknown outcomes: seq {:?})",
                    node(i),
                    service(j),
                    match (&got, shown) {
                        (_, None) => "absent".to_owned(),
                        (Ok(_), Some(shown)) => format!("seq {}", shown.meta_seq.as_deref().unwrap_or("?")),
                        (Err(e), Some(_)) => e.clone(),
                    },
                    last_acked.map_or("none (absent)".to_owned(), |op| format!("seq {} {:?}", op.seq, op.kind)),
                    mine.iter()
                        .filter(|op| op.outcome == Outcome::Unknown)
                        .map(|op| op.seq)
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    // Health's view of the checks must be the instances' checks, exactly.
    let mut expected: BTreeMap<(String, String), ShownCheck> = BTreeMap::new();
    for ((n, _), instance) in &leader.instances {
        for (c, check) in &instance.checks {
            expected.insert((n.clone(), c.clone()), check.clone());
        }
    }
    if expected != leader.checks {
        problems.push(format!(
            "(catalog) the leader's /v1/health/state/any does not list exactly its instances' checks: {}",
            diff(
                &Snapshot {
                    instances: BTreeMap::new(),
                    checks: expected
                },
                &Snapshot {
                    instances: BTreeMap::new(),
                    checks: leader.checks.clone()
                }
            )
            .unwrap_or_default()
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(node: usize, svc: usize, seq: u64, kind: Kind, outcome: Outcome, at: u64) -> CatalogOp {
        CatalogOp {
            node,
            svc,
            seq,
            kind,
            outcome,
            invoked_ns: at,
            completed_ns: at + 1,
        }
    }

    /// A snapshot showing each (node, svc, seq, status) as the registrar registers it.
    fn snap(entries: &[(usize, usize, u64, &str)]) -> Snapshot {
        let mut snap = Snapshot::default();
        for &(i, j, seq, status) in entries {
            let check = ShownCheck {
                service_id: service(j),
                status: status.to_owned(),
                output: output(seq),
                modify_index: seq,
            };
            snap.checks.insert((node(i), check_id(j)), check.clone());
            snap.instances.insert(
                (node(i), service(j)),
                ShownInstance {
                    address: address(i),
                    port: 8000 + j as u64,
                    meta_seq: Some(seq.to_string()),
                    modify_index: seq,
                    checks: BTreeMap::from([(check_id(j), check)]),
                },
            );
        }
        snap
    }

    fn obs(at: u64, entries: &[(usize, usize, u64, &str)]) -> Observation {
        Observation {
            server: 0,
            completed_ns: at + 1,
            snapshot: snap(entries),
        }
    }

    #[test]
    fn registered_states_pass_and_phantoms_are_caught() {
        let ops = [
            op(0, 0, 1, Kind::Register("passing"), Outcome::Acked, 10),
            op(0, 0, 2, Kind::Flip("critical"), Outcome::Acked, 20),
            op(1, 1, 3, Kind::Register("warning"), Outcome::Failed, 30),
        ];
        let fine = [
            obs(5, &[]),
            obs(15, &[(0, 0, 1, "passing")]),
            obs(25, &[(0, 0, 2, "critical")]),
        ];
        let judged = judge(&ops, &fine);
        assert!(judged.problems.is_empty(), "{:?}", judged.problems);
        assert_eq!(judged.changes, 2);
        // A failed registration, a seq before it was sent, a status the operation did not send.
        for wrong in [
            obs(35, &[(1, 1, 3, "warning")]),
            obs(12, &[(0, 0, 2, "critical")]),
            obs(25, &[(0, 0, 2, "passing")]),
        ] {
            let found = judge(&ops, &[wrong]).problems;
            assert!(
                !found.is_empty() && found.iter().all(|p| p.contains("catalog phantom")),
                "{found:?}"
            );
        }
        // A check whose Output names an operation that never was.
        let mut stray = obs(25, &[(0, 0, 2, "critical")]);
        stray
            .snapshot
            .checks
            .get_mut(&(node(0), check_id(0)))
            .unwrap()
            .output = output(9);
        assert_eq!(judge(&ops, &[stray]).problems.len(), 1);
    }

    #[test]
    fn the_final_catalog_is_explained_by_acknowledged_or_unknown_operations() {
        let ops = [
            op(0, 0, 1, Kind::Register("passing"), Outcome::Acked, 10),
            op(0, 0, 2, Kind::Flip("critical"), Outcome::Unknown, 20),
            op(1, 0, 3, Kind::Register("passing"), Outcome::Acked, 30),
            op(1, 0, 4, Kind::Deregister, Outcome::Acked, 40),
        ];
        assert!(explain_final(&ops, &snap(&[(0, 0, 1, "passing")])).is_empty());
        assert!(explain_final(&ops, &snap(&[(0, 0, 2, "critical")])).is_empty());
        // The acknowledged deregistration lost; the acknowledged registration of (0, 0) lost.
        let found = explain_final(&ops, &snap(&[(1, 0, 3, "passing")]));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().any(|p| p.contains("cat-node-1/cat-svc-0")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("cat-node-0/cat-svc-0")),
            "{found:?}"
        );
        // A check health lists without its instance.
        let mut stray = snap(&[(0, 0, 1, "passing")]);
        stray.instances.clear();
        stray.instances.insert(
            (node(0), service(0)),
            snap(&[(0, 0, 1, "passing")]).instances[&(node(0), service(0))].clone(),
        );
        stray.checks.insert(
            (node(2), check_id(1)),
            ShownCheck {
                service_id: service(1),
                status: "passing".to_owned(),
                output: output(1),
                modify_index: 1,
            },
        );
        let found = explain_final(&ops, &stray);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("state/any"), "{found:?}");
    }

    #[test]
    fn diff_summarises() {
        let a = snap(&[(0, 0, 1, "passing"), (1, 0, 2, "passing")]);
        assert!(diff(&a, &a).is_none());
        let b = snap(&[(0, 0, 3, "passing"), (2, 0, 4, "passing")]);
        let text = diff(&a, &b).unwrap();
        assert!(
            text.contains("instances missing 1 [cat-node-1/cat-svc-0]"),
            "{text}"
        );
        assert!(text.contains("extra 1 [cat-node-2/cat-svc-0]"), "{text}");
        assert!(text.contains("differing 1 [cat-node-0/cat-svc-0]"), "{text}");
    }
}
