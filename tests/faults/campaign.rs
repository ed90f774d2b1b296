//! Seeded runs against three real servers, their histories checked with tribune-check, and the
//! campaign's totals: operations, faults by kind, anomalies by class, failover times per fault.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tribune_check::{
    AnomalyClass, CheckOptions, KvOp, KvOperation, KvOutcome, ReadMode, Verdict, check_kv, check_locks,
    check_stale_reads, lost_writes, to_jsonl,
};

use super::acl::{self, DownPolicy};
use super::catalog;
use super::cluster::{self, Cluster};
use super::nemesis::{self, Applied, Fault};
use super::net::{self, Net};
use super::replication;
use super::wan::{self, Wan};
use super::workload::{self, Shared};

/// Register clients per run.
const CLIENTS: u64 = 6;
/// Register clients on dc2's keys in a WAN run.
const WAN_CLIENTS: u64 = 3;
/// The steady state before the first fault.
const WARM_UP: Duration = Duration::from_secs(2);
/// Set in the re-executed test process that runs inside `unshare -n`.
const INSIDE_NAMESPACE: &str = "TRIBUNE_FAULTS_NETNS";

/// The anomaly classes a campaign reports (the table's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// `?consistent` reads (and writes) not linearizable.
    Consistent,
    /// Default-mode reads not linearizable.
    Default,
    /// A `?stale` read of a value never written, or of a failed write.
    StalePhantom,
    /// A client's `?stale` reads from one server went back to an older write.
    StaleBackwards,
    /// An acknowledged write the final `?consistent` read cannot explain.
    LostWrite,
    /// Double holders, `LockIndex` skips, lock-delay violations, fencing tokens going back.
    LockSafety,
    /// The checker ran out of steps on a consistent-mode key (not a pass).
    UnknownConsistent,
    /// The checker ran out of steps on a default-mode key.
    UnknownDefault,
    /// The final `?consistent` read of a key never succeeded (nothing to check lost writes against).
    NoFinalRead,
    /// A WAN check failed: a cut-off dc2 not declared failed, `?dc=dc2` not failing fast with
    /// Consul's error, dc2 not routable again after a heal, the proxy not in the path.
    WanRouting,
    /// A federated ACL run: dc2 answering T or an unknown secret other than its down policy
    /// dictates while cut off from dc1, or than dc1 would away from faults; an answer slower
    /// than 3 s; the replicated policy differing from dc1's; the setup not completing.
    AclDownPolicy,
    /// A WAN run's `tribune replicate` from dc1's `repl/` into dc2: dc2 showing a value never
    /// written, wrong flags, a key going back to an older state or vanishing without a delete;
    /// dc2's `repl/` not equal to dc1's within 30 s of the writer's stop.
    KvReplication,
    /// The catalog scenario: a server's `?stale` catalog showing an instance or check no
    /// registration that may have happened by then produced (catalog phantom), or the servers'
    /// catalogs not equal to the leader's within 30 s of the registrar's stop (catalog divergence).
    Catalog,
}

impl Class {
    const ALL: [Class; 13] = [
        Class::Consistent,
        Class::Default,
        Class::StalePhantom,
        Class::StaleBackwards,
        Class::LostWrite,
        Class::LockSafety,
        Class::UnknownConsistent,
        Class::UnknownDefault,
        Class::NoFinalRead,
        Class::WanRouting,
        Class::AclDownPolicy,
        Class::KvReplication,
        Class::Catalog,
    ];

    fn name(self) -> &'static str {
        match self {
            Class::Consistent => "consistent",
            Class::Default => "default",
            Class::StalePhantom => "stale phantom",
            Class::StaleBackwards => "stale backwards",
            Class::LostWrite => "lost acked write",
            Class::LockSafety => "lock safety",
            Class::UnknownConsistent => "unknown (consistent)",
            Class::UnknownDefault => "unknown (default)",
            Class::NoFinalRead => "no final read",
            Class::WanRouting => "WAN routing",
            Class::AclDownPolicy => "ACL down_policy",
            Class::KvReplication => "KV replication",
            Class::Catalog => "catalog",
        }
    }
}

/// One run's plan: a seed and its faults, in order.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) seed: u64,
    pub(crate) faults: Vec<Fault>,
    /// A federated ACL run (WAN runs only): dc2's `down_policy`.
    pub(crate) acl: Option<DownPolicy>,
}

/// CI's runs: every fault kind at least once (network kinds only where the namespace exists).
pub(crate) fn short_plans(network: bool) -> Vec<Plan> {
    let plans: Vec<(u64, Vec<Fault>)> = if network {
        vec![
            (1, vec![Fault::KillLeader, Fault::PartitionLeader]),
            (2, vec![Fault::PauseLeader, Fault::PartitionFollower]),
            (3, vec![Fault::KillFollower, Fault::OneWayLeader]),
            (4, vec![Fault::KillAll, Fault::PacketLoss]),
            (5, vec![Fault::WanCut, Fault::WanDelay]),
            (6, vec![Fault::WanLoss, Fault::KillLeader]),
        ]
    } else {
        vec![
            (1, vec![Fault::KillLeader, Fault::PauseLeader]),
            (2, vec![Fault::KillFollower, Fault::KillAll]),
            (3, vec![Fault::PauseLeader, Fault::KillLeader]),
        ]
    };
    plans
        .into_iter()
        .map(|(seed, faults)| Plan {
            seed,
            // The run with the WAN cut is also the federated ACL run, under Consul's default
            // down policy (the long campaign's TRIBUNE_FAULTS_ACL=1 cycles through all four).
            acl: faults.contains(&Fault::WanCut).then_some(DownPolicy::ExtendCache),
            faults,
        })
        .collect()
}

/// A long-campaign run: two faults drawn from the seed; with `wan_first` (and the namespace),
/// the first is a WAN fault; with `acl` (and the namespace), the first is a WAN cut and the run
/// federates ACLs with the seed's down policy.
pub(crate) fn random_plan(seed: u64, network: bool, wan_first: bool, acl: bool) -> Plan {
    let mut rng = SmallRng::seed_from_u64(seed);
    let kinds: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|fault| network || !fault.network())
        .collect();
    let mut faults: Vec<Fault> = (0..2).map(|_| kinds[rng.random_range(0..kinds.len())]).collect();
    if wan_first && network {
        faults[0] = Fault::WAN[rng.random_range(0..Fault::WAN.len())];
    }
    let acl = (acl && network).then(|| DownPolicy::for_seed(seed));
    if acl.is_some() {
        faults[0] = Fault::WanCut;
    }
    Plan { seed, faults, acl }
}

/// What one run found.
#[derive(Debug, Default)]
pub(crate) struct RunResult {
    pub(crate) seed: u64,
    pub(crate) operations: usize,
    pub(crate) lock_events: usize,
    pub(crate) applied: Vec<Applied>,
    pub(crate) anomalies: BTreeMap<Class, usize>,
    pub(crate) details: Vec<String>,
    /// Per fault: ms from its start, and from its heal, to the first accepted write invoked after.
    pub(crate) failover: Vec<(Fault, Option<u64>, Option<u64>)>,
    /// Operations on dc2's keys.
    pub(crate) wan_operations: usize,
    /// A federated ACL run's checker figures.
    pub(crate) acl: Option<acl::Figures>,
    /// A WAN run's KV replication figures.
    pub(crate) replication: Option<replication::Figures>,
    /// The catalog scenario's figures.
    pub(crate) catalog: Option<catalog::Figures>,
    pub(crate) dir: PathBuf,
}

impl RunResult {
    fn add(&mut self, class: Class, detail: String) {
        *self.anomalies.entry(class).or_default() += 1;
        if self.details.len() < 40 {
            self.details.push(format!("[{}] {detail}", class.name()));
        }
    }
}

/// The first write acknowledged among those invoked at or after `from_ns`: ms from `from_ns`.
fn first_accepted_write(ops: &[KvOperation], from_ns: u64) -> Option<u64> {
    ops.iter()
        .filter(|op| !matches!(op.op, KvOp::Read { .. }))
        .filter(|op| op.invoked_ns >= from_ns && op.outcome == (KvOutcome::Written { ok: true }))
        .map(|op| op.completed_ns.saturating_sub(from_ns) / 1_000_000)
        .min()
}

fn checked(ops: &[KvOperation], mode: ReadMode) -> tribune_check::CheckReport {
    check_kv(
        ops,
        &CheckOptions {
            modes: vec![mode],
            ..CheckOptions::default()
        },
    )
}

/// Starts three servers, runs the workload through the plan's faults, heals, reads every key, and
/// checks the histories (saved under `out/run-<seed>/`).
pub(crate) fn run(
    plan: &Plan,
    out: &Path,
    net: Option<&Net>,
    runtime: &tokio::runtime::Runtime,
) -> RunResult {
    let started = Instant::now();
    let dir = out.join(format!("run-{}", plan.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the run directory");
    let wan_run = net.is_some() && plan.faults.iter().any(|f| f.wan());
    let acl_policy = plan.acl.filter(|_| wan_run);
    let (slots, wan) = if wan_run {
        let (mut dc1, mut dc2) = wan::slots(&dir);
        if let Some(policy) = acl_policy {
            acl::configure(&dir, &mut dc1, &mut dc2, policy);
        }
        let wan = Wan::start(runtime, &dc1, dc2);
        (dc1, Some(wan))
    } else {
        (cluster::slots(&dir, net.is_some()), None)
    };
    let mut cluster = Cluster::start(slots);
    let leader = runtime.block_on(cluster.wait_leader(nemesis::RECOVERY_LIMIT));
    assert!(
        leader.is_some(),
        "run {}: three fresh servers elected no leader in {:?}; logs in {}:\n{}",
        plan.seed,
        nemesis::RECOVERY_LIMIT,
        dir.display(),
        log_tails(&cluster)
    );
    if let Some(wan) = &wan {
        let dc2_leader = runtime.block_on(wan.dc2.wait_leader(nemesis::RECOVERY_LIMIT));
        let routable = dc2_leader.and_then(|_| runtime.block_on(wan.wait_routable(wan::REJOIN_LIMIT)));
        assert!(
            routable.is_some(),
            "run {}: dc2 (leader {dc2_leader:?}) was not routable from every dc1 server in {:?}; logs in {}:\n{}{}",
            plan.seed,
            wan::REJOIN_LIMIT,
            dir.display(),
            log_tails(&cluster),
            log_tails(&wan.dc2)
        );
    }
    let shared = Shared::new(
        cluster.slots.iter().map(|slot| slot.http()).collect(),
        wan.as_ref().map(|wan| wan.dc2_http),
    );
    let mut acl_problems = Vec::new();
    let mut acl_checker = None;
    if let (Some(_), Some(wan)) = (acl_policy, &wan) {
        match runtime.block_on(acl::set_up(&wan.dc1_http, wan.dc2_http, plan.seed)) {
            Ok(fixture) => {
                acl_checker = Some((
                    fixture.clone(),
                    runtime.spawn(acl::checker(
                        Arc::clone(&shared),
                        wan.dc2_http,
                        fixture,
                        plan.seed * 1000 + 300,
                    )),
                ));
            }
            Err(problem) => acl_problems.push(problem),
        }
    }
    // The KV replication scenario of every WAN run: replicators beside dc2, a writer on dc1's
    // `repl/`, an observer on dc2's.
    let replication = wan.as_ref().map(|wan| {
        replication::Scenario::start(runtime, &shared, wan.dc2_http, &dir, plan.seed * 1000 + 400)
    });
    // The catalog scenario of every run: a registrar through random dc1 servers, an observer per
    // server.
    let catalog = catalog::Scenario::start(runtime, &shared, &dir, plan.seed * 1000 + 500);
    let mut tasks = Vec::new();
    for worker in 0..CLIENTS {
        let seed = plan.seed * 1000 + worker;
        tasks.push(runtime.spawn(workload::register_client(
            Arc::clone(&shared),
            worker,
            seed,
            false,
        )));
    }
    if wan.is_some() {
        for n in 0..WAN_CLIENTS {
            let worker = 50 + n;
            tasks.push(runtime.spawn(workload::register_client(
                Arc::clone(&shared),
                worker,
                plan.seed * 1000 + worker,
                true,
            )));
        }
    }
    tasks.push(runtime.spawn(workload::txn_client(
        Arc::clone(&shared),
        CLIENTS,
        plan.seed * 1000 + 100,
    )));
    for n in 0..2 {
        tasks.push(runtime.spawn(workload::lock_client(
            Arc::clone(&shared),
            plan.seed * 1000 + 200 + n,
        )));
    }

    std::thread::sleep(WARM_UP);
    let mut rng = SmallRng::seed_from_u64(plan.seed ^ 0x5eed_fa17);
    let mut applied = Vec::new();
    for &fault in &plan.faults {
        applied.push(nemesis::inject(
            fault,
            &mut cluster,
            net,
            wan.as_ref(),
            runtime,
            &shared,
            &mut rng,
            acl_policy.is_some(),
        ));
    }
    // Heal everything (each fault healed itself; this is the backstop), then stop the clients.
    if let Some(net) = net {
        net.heal();
    }
    cluster.revive_all();
    let _ = runtime.block_on(cluster.wait_leader(nemesis::RECOVERY_LIMIT));
    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    });
    // The catalog first: its convergence wait is short, replication's may take seconds, and each
    // figure counts from its own writer's stop.
    let cataloged = catalog.finish(runtime, &shared);
    let replicated = replication.map(|scenario| scenario.finish(runtime, &shared));
    let missing = runtime.block_on(workload::final_reads(&shared, Duration::from_secs(30)));
    let mut acl_figures = None;
    if let (Some(policy), Some(wan), Some((fixture, checker))) = (acl_policy, &wan, acl_checker) {
        let seen = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), checker).await })
            .ok()
            .and_then(Result::ok);
        match seen {
            Some(seen) => {
                let _ = std::fs::write(dir.join("acl.txt"), acl::log(&seen, &applied));
                let (problems, figures) = acl::judge(&seen, &applied, policy);
                acl_problems.extend(problems);
                acl_figures = Some(figures);
            }
            None => acl_problems.push("the ACL checker did not finish".to_owned()),
        }
        acl_problems.extend(runtime.block_on(acl::compare_policies(&wan.dc1_http, wan.dc2_http, &fixture)));
    }
    drop(cluster);
    let proxy_stats = wan.as_ref().map(Wan::stats);
    drop(wan);

    let ops = shared.ops.lock().clone();
    let locks = shared.locks.lock().clone();
    std::fs::write(dir.join("history.jsonl"), to_jsonl(&ops).expect("encode history")).expect("save history");
    std::fs::write(dir.join("locks.jsonl"), to_jsonl(&locks).expect("encode locks")).expect("save locks");
    let mut faults_text = String::new();
    for a in &applied {
        let _ = writeln!(
            faults_text,
            "{}\tstart_ns={}\theal_ns={}\tsettled_ns={}\ttarget={:?}\tleader_before={:?}\twan_failed_ms={:?}\twan_routable_ms={:?}\twan_read_ms={:?}\tdc2_fails_fast_ms={:?}\tdc2_reaches_primary_ms={:?}",
            a.fault,
            a.start_ns,
            a.heal_ns,
            a.settled_ns,
            a.target,
            a.leader_before,
            a.wan_declared_failed_ms,
            a.wan_routable_ms,
            a.wan_read_ms,
            a.dc2_fails_fast_ms,
            a.dc2_reaches_primary_ms
        );
    }
    if let Some(policy) = acl_policy {
        let _ = writeln!(
            faults_text,
            "acl: dc2 down_policy={policy}, token_ttl={:?}",
            acl::TOKEN_TTL
        );
    }
    if let Some(stats) = &proxy_stats {
        let _ = writeln!(faults_text, "proxies (gossip, rpc): {stats:?}");
    }
    std::fs::write(dir.join("faults.txt"), faults_text).expect("save the fault log");

    let mut result = RunResult {
        seed: plan.seed,
        operations: ops.len(),
        lock_events: locks.len(),
        wan_operations: ops.iter().filter(|op| op.key.starts_with("wan/")).count(),
        acl: acl_figures,
        dir: dir.clone(),
        ..RunResult::default()
    };
    for key in missing {
        result.add(Class::NoFinalRead, format!("no final ?consistent read of {key}"));
    }
    for (mode, violation, unknown) in [
        (ReadMode::Consistent, Class::Consistent, Class::UnknownConsistent),
        (ReadMode::Default, Class::Default, Class::UnknownDefault),
    ] {
        let report = checked(&ops, mode);
        for key in &report.keys {
            match key.verdict {
                Verdict::Linearizable => {}
                Verdict::Violation => result.add(violation, key.to_string()),
                Verdict::Unknown => result.add(unknown, key.to_string()),
            }
        }
    }
    for anomaly in check_stale_reads(&ops) {
        let class = if anomaly.class == AnomalyClass::StaleBackwards {
            Class::StaleBackwards
        } else {
            Class::StalePhantom
        };
        result.add(class, anomaly.to_string());
    }
    for anomaly in lost_writes(&ops) {
        result.add(Class::LostWrite, anomaly.to_string());
    }
    for anomaly in check_locks(&locks) {
        result.add(Class::LockSafety, anomaly.to_string());
    }
    for problem in acl_problems {
        result.add(Class::AclDownPolicy, problem);
    }
    if let Some(found) = replicated {
        for problem in found.replication {
            result.add(Class::KvReplication, problem);
        }
        for problem in found.lost_in_dc1 {
            result.add(Class::LostWrite, problem);
        }
        result.replication = Some(found.figures);
    }
    for problem in cataloged.catalog {
        result.add(Class::Catalog, problem);
    }
    for problem in cataloged.lost {
        result.add(Class::LostWrite, problem);
    }
    result.catalog = Some(cataloged.figures);
    for a in &applied {
        for problem in &a.problems {
            result.add(Class::WanRouting, format!("{}: {problem}", a.fault));
        }
        result.failover.push((
            a.fault,
            first_accepted_write(&ops, a.start_ns),
            first_accepted_write(&ops, a.heal_ns),
        ));
    }
    result.applied = applied;
    // The histories and logs stay; the servers' data is only needed while they run.
    for slot in cluster::slots(&dir, net.is_some()) {
        let _ = std::fs::remove_dir_all(&slot.data_dir);
    }
    if wan_run {
        let _ = std::fs::remove_dir_all(cluster::dc2_slot(&dir).data_dir);
    }
    let found: usize = result.anomalies.values().sum();
    println!(
        "run {}: {} ops ({} on dc2), {} lock events, {}{}{}faults [{}], {} anomalies, {:.1}s ({})",
        plan.seed,
        result.operations,
        result.wan_operations,
        result.lock_events,
        result.catalog.as_ref().map_or(String::new(), |c| format!(
            "{} catalog writes ({} acked), catalogs converged after {}, ",
            c.operations,
            c.acked,
            c.converged_ms.map_or("NEVER".to_owned(), |ms| format!("{ms} ms"))
        )),
        result.replication.as_ref().map_or(String::new(), |r| format!(
            "{} repl/ writes, dc2 converged after {}, ",
            r.writes,
            r.converged_ms.map_or("NEVER".to_owned(), |ms| format!("{ms} ms"))
        )),
        result.acl.as_ref().map_or(String::new(), |figures| format!(
            "ACL ({}) answers {:?}, ",
            acl_policy.map_or(String::new(), |p| p.to_string()),
            figures.answers
        )),
        plan.faults
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        found,
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    for detail in &result.details {
        println!("  {detail}");
    }
    result
}

/// The last lines of each server's log, for a failure message.
fn log_tails(cluster: &Cluster) -> String {
    let mut out = String::new();
    for slot in &cluster.slots {
        let text = std::fs::read_to_string(&slot.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let _ = writeln!(out, "--- {} ({})", slot.name, slot.log.display());
        for line in &lines[lines.len().saturating_sub(8)..] {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// Federated ACL runs under one down policy: runs, answers per window, slowest per window (ms).
type AclTotals = (usize, BTreeMap<acl::Window, usize>, BTreeMap<acl::Window, u64>);

/// The campaign's totals.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) runs: usize,
    pub(crate) operations: usize,
    pub(crate) lock_events: usize,
    pub(crate) faults: BTreeMap<Fault, usize>,
    pub(crate) anomalies: BTreeMap<Class, usize>,
    pub(crate) failover_start: BTreeMap<Fault, Vec<u64>>,
    pub(crate) failover_heal: BTreeMap<Fault, Vec<u64>>,
    /// Faults after which no write was accepted before the run ended.
    pub(crate) no_write_after: BTreeMap<Fault, usize>,
    pub(crate) failed_runs: Vec<(u64, PathBuf)>,
    pub(crate) wan_operations: usize,
    pub(crate) wan_declared_failed: Vec<u64>,
    pub(crate) wan_routable: Vec<(Fault, u64)>,
    /// (fastest, median) `?dc=dc2` read under the WAN delay, per fault.
    pub(crate) wan_reads: Vec<(u64, u64)>,
    /// Federated ACL runs per dc2 down policy: runs, answers per window, slowest per window (ms).
    pub(crate) acl: BTreeMap<DownPolicy, AclTotals>,
    /// ACL runs: ms from a cut until dc2 failed a `?dc=dc1` call fast, and from a heal until dc2
    /// carried a call to dc1 again.
    pub(crate) dc2_fails_fast: Vec<u64>,
    pub(crate) dc2_reaches_primary: Vec<u64>,
    /// KV replication: runs, writer operations (acknowledged), reads of dc2, and ms from the
    /// writer's stop until dc2's `repl/` equalled dc1's.
    pub(crate) replication_runs: usize,
    pub(crate) replication_writes: (usize, usize),
    /// Reads of dc2, and changes of a key they showed.
    pub(crate) replication_reads: (usize, usize),
    pub(crate) replication_converged: Vec<u64>,
    /// Catalog: runs, registrar operations (acknowledged, unknown), observer reads and the
    /// changes they showed, and ms from the registrar's stop until every server's catalog
    /// equalled the leader's.
    pub(crate) catalog_runs: usize,
    pub(crate) catalog_writes: (usize, usize, usize),
    pub(crate) catalog_reads: (usize, usize),
    pub(crate) catalog_converged: Vec<u64>,
}

impl Totals {
    pub(crate) fn add(&mut self, result: &RunResult) {
        self.runs += 1;
        self.operations += result.operations;
        self.lock_events += result.lock_events;
        self.wan_operations += result.wan_operations;
        for a in &result.applied {
            *self.faults.entry(a.fault).or_default() += 1;
            self.wan_declared_failed.extend(a.wan_declared_failed_ms);
            self.wan_routable
                .extend(a.wan_routable_ms.map(|ms| (a.fault, ms)));
            self.wan_reads.extend(a.wan_read_ms);
            self.dc2_fails_fast.extend(a.dc2_fails_fast_ms);
            self.dc2_reaches_primary.extend(a.dc2_reaches_primary_ms);
        }
        if let Some(figures) = &result.acl
            && let Some(policy) = figures.down_policy
        {
            let (runs, answers, slowest) = self.acl.entry(policy).or_default();
            *runs += 1;
            for (window, n) in &figures.answers {
                *answers.entry(*window).or_default() += n;
            }
            for (window, ms) in &figures.slowest_ms {
                let entry = slowest.entry(*window).or_default();
                *entry = (*entry).max(*ms);
            }
        }
        if let Some(r) = &result.replication {
            self.replication_runs += 1;
            self.replication_writes.0 += r.writes;
            self.replication_writes.1 += r.acked;
            self.replication_reads.0 += r.observations;
            self.replication_reads.1 += r.changes_seen;
            self.replication_converged.extend(r.converged_ms);
        }
        if let Some(c) = &result.catalog {
            self.catalog_runs += 1;
            self.catalog_writes.0 += c.operations;
            self.catalog_writes.1 += c.acked;
            self.catalog_writes.2 += c.unknown;
            self.catalog_reads.0 += c.observations;
            self.catalog_reads.1 += c.changes_seen;
            self.catalog_converged.extend(c.converged_ms);
        }
        for (class, n) in &result.anomalies {
            *self.anomalies.entry(*class).or_default() += n;
        }
        for (fault, start, heal) in &result.failover {
            match (start, heal) {
                (Some(start), Some(heal)) => {
                    self.failover_start.entry(*fault).or_default().push(*start);
                    self.failover_heal.entry(*fault).or_default().push(*heal);
                }
                _ => *self.no_write_after.entry(*fault).or_default() += 1,
            }
        }
        if !result.anomalies.is_empty() {
            self.failed_runs.push((result.seed, result.dir.clone()));
        }
    }

    pub(crate) fn count(&self, class: Class) -> usize {
        self.anomalies.get(&class).copied().unwrap_or(0)
    }

    /// The campaign as Markdown tables.
    pub(crate) fn table(&self, command: &str, network: bool, commit: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Command: `{command}`  ");
        let _ = writeln!(
            out,
            "Commit: `{commit}`; network faults: {}\n",
            if network { "yes" } else { "SKIPPED" }
        );
        let _ = writeln!(out, "| runs | operations | lock events | faults |");
        let _ = writeln!(out, "|---:|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |\n",
            self.runs,
            self.operations,
            self.lock_events,
            self.faults.values().sum::<usize>()
        );
        let _ = writeln!(out, "| anomaly class | count |");
        let _ = writeln!(out, "|---|---:|");
        for class in Class::ALL {
            let _ = writeln!(out, "| {} | {} |", class.name(), self.count(class));
        }
        let _ = writeln!(
            out,
            "\n| fault | count | first accepted write after start p50 / p99 (ms) | after heal p50 / p99 (ms) | no write before run end |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for (fault, count) in &self.faults {
            let start = self.failover_start.get(fault).map(Vec::as_slice).unwrap_or(&[]);
            let heal = self.failover_heal.get(fault).map(Vec::as_slice).unwrap_or(&[]);
            let _ = writeln!(
                out,
                "| {fault} | {count} | {} / {} | {} / {} | {} |",
                percentile(start, 50),
                percentile(start, 99),
                percentile(heal, 50),
                percentile(heal, 99),
                self.no_write_after.get(fault).copied().unwrap_or(0)
            );
        }
        if self.wan_operations > 0 {
            let _ = writeln!(
                out,
                "\nWAN ({} operations on dc2's keys, `?dc=dc2` through dc1 and on dc2 itself):\n",
                self.wan_operations
            );
            let _ = writeln!(out, "| WAN figure | samples | p50 / max (ms) |");
            let _ = writeln!(out, "|---|---:|---:|");
            let row = |out: &mut String, name: &str, samples: &[u64]| {
                let max = samples.iter().max().map_or("-".to_owned(), u64::to_string);
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} / {max} |",
                    samples.len(),
                    percentile(samples, 50)
                );
            };
            row(
                &mut out,
                "cut: until every dc1 server lists dc2 as failed",
                &self.wan_declared_failed,
            );
            for fault in Fault::WAN {
                let samples: Vec<u64> = self
                    .wan_routable
                    .iter()
                    .filter(|(f, _)| *f == fault)
                    .map(|(_, ms)| *ms)
                    .collect();
                row(
                    &mut out,
                    &format!("{fault}: heal until `?dc=dc2` served via every dc1 server"),
                    &samples,
                );
            }
            let fastest: Vec<u64> = self.wan_reads.iter().map(|(f, _)| *f).collect();
            let median: Vec<u64> = self.wan_reads.iter().map(|(_, m)| *m).collect();
            row(
                &mut out,
                "forwarded stale read under 25 ms each way: fastest",
                &fastest,
            );
            row(
                &mut out,
                "forwarded stale read under 25 ms each way: median",
                &median,
            );
        }
        if !self.acl.is_empty() {
            let _ = writeln!(
                out,
                "\nFederated ACLs (dc2 resolves tokens at dc1, `acl.token_ttl` {:?}; answers of the checker on dc2 by window; slowest in ms):\n",
                acl::TOKEN_TTL
            );
            let _ = writeln!(
                out,
                "| dc2 down_policy | runs | judged under the cut (down policy) | judged normal | around faults (either) | slowest: cut / normal / around |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
            for (policy, (runs, answers, slowest)) in &self.acl {
                let count = |w| answers.get(&w).copied().unwrap_or(0);
                let ms = |w| slowest.get(&w).map_or("-".to_owned(), u64::to_string);
                let _ = writeln!(
                    out,
                    "| {policy} | {runs} | {} | {} | {} | {} / {} / {} |",
                    count(acl::Window::Cut),
                    count(acl::Window::Normal),
                    count(acl::Window::Between),
                    ms(acl::Window::Cut),
                    ms(acl::Window::Normal),
                    ms(acl::Window::Between)
                );
            }
            let _ = writeln!(out, "\n| ACL figure | samples | p50 / max (ms) |");
            let _ = writeln!(out, "|---|---:|---:|");
            for (name, samples) in [
                (
                    "cut: until dc2 fails `?dc=dc1` fast (500 within 3 s)",
                    &self.dc2_fails_fast,
                ),
                (
                    "heal: until dc2 carries a call to dc1 again",
                    &self.dc2_reaches_primary,
                ),
            ] {
                let max = samples.iter().max().map_or("-".to_owned(), u64::to_string);
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} / {max} |",
                    samples.len(),
                    percentile(samples, 50)
                );
            }
        }
        if self.replication_runs > 0 {
            let samples = &self.replication_converged;
            let _ = writeln!(
                out,
                "\nKV replication (`tribune replicate -prefix {}@dc1` beside dc2, two racing for a lock; {} runs, {} writes to dc1's `{}` ({} acknowledged), {} reads of dc2's showing {} changes):\n",
                replication::PREFIX,
                self.replication_runs,
                self.replication_writes.0,
                replication::PREFIX,
                self.replication_writes.1,
                self.replication_reads.0,
                self.replication_reads.1
            );
            let _ = writeln!(out, "| KV replication figure | samples | p50 / max (ms) |");
            let _ = writeln!(out, "|---|---:|---:|");
            let _ = writeln!(
                out,
                "| writer stopped (faults healed) → dc2's `{}` equals dc1's | {} | {} / {} |",
                replication::PREFIX,
                samples.len(),
                percentile(samples, 50),
                samples.iter().max().map_or("-".to_owned(), u64::to_string)
            );
        }
        if self.catalog_runs > 0 {
            let samples = &self.catalog_converged;
            let _ = writeln!(
                out,
                "\nCatalog ({} runs; {} registrations, flips and deregistrations of `cat-svc-*` instances through random servers, {} acknowledged, {} unknown; {} `?stale` reads of a server's own catalog showing {} changes):\n",
                self.catalog_runs,
                self.catalog_writes.0,
                self.catalog_writes.1,
                self.catalog_writes.2,
                self.catalog_reads.0,
                self.catalog_reads.1
            );
            let _ = writeln!(out, "| catalog figure | samples | p50 / max (ms) |");
            let _ = writeln!(out, "|---|---:|---:|");
            let _ = writeln!(
                out,
                "| registrar stopped (faults healed) → every server's `?stale` catalog equals the leader's `?consistent` | {} | {} / {} |",
                samples.len(),
                percentile(samples, 50),
                samples.iter().max().map_or("-".to_owned(), u64::to_string)
            );
        }
        out
    }
}

/// The checkout the campaign started from, marked when the work tree had uncommitted changes.
fn checkout() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes")
    }
}

/// Nearest-rank percentile of milliseconds, "-" for none.
fn percentile(samples: &[u64], p: usize) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1) - 1;
    sorted[rank.min(sorted.len() - 1)].to_string()
}

/// Where histories go: `TRIBUNE_FAULTS_OUT`, or a fresh temporary directory kept for inspection.
fn output_dir() -> PathBuf {
    match std::env::var_os("TRIBUNE_FAULTS_OUT") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("create TRIBUNE_FAULTS_OUT");
            dir
        }
        None => tempfile::Builder::new()
            .prefix("tribune-faults-")
            .tempdir()
            .expect("create a temporary directory")
            .keep(),
    }
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(value) => !matches!(value.trim(), "0" | "false" | "no" | "off" | ""),
        Err(_) => default,
    }
}

/// Which campaign a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Campaign {
    Short,
    Long,
}

/// The test's entry point: re-executes this test inside `unshare -n` when it can (root, iptables),
/// otherwise runs the process faults only and says so.
pub(crate) fn run_campaign(test_name: &str, campaign: Campaign) {
    if std::env::var_os(INSIDE_NAMESPACE).is_some() {
        return execute(campaign, true);
    }
    if let Some(reason) = net::unavailable() {
        println!(
            "t20_faults: NETWORK FAULTS SKIPPED ({reason}); running kill -9 and SIGSTOP faults only. \
             Run as root with iptables installed for partitions and packet loss."
        );
        return execute(campaign, false);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args([
            test_name,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(INSIDE_NAMESPACE, "1")
        .status()
        .expect("run the test again inside unshare -n");
    assert!(
        status.success(),
        "the campaign inside the network namespace failed: {status}"
    );
}

fn execute(campaign: Campaign, network: bool) {
    let out = output_dir();
    let commit = checkout();
    let acl = env_flag("TRIBUNE_FAULTS_ACL", false);
    let wan_first = acl || env_flag("TRIBUNE_FAULTS_WAN", false);
    println!("t20_faults: histories and server logs under {}", out.display());
    let plans: Vec<Plan> = match (campaign, std::env::var("TRIBUNE_FAULTS_SEEDS")) {
        (_, Ok(seeds)) => seeds
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .map(|seed| {
                short_plans(network)
                    .into_iter()
                    .find(|plan| plan.seed == seed)
                    .unwrap_or_else(|| random_plan(seed, network, wan_first, acl))
            })
            .collect(),
        (Campaign::Short, Err(_)) => short_plans(network),
        (Campaign::Long, Err(_)) => {
            let runs: u64 = std::env::var("TRIBUNE_FAULTS_RUNS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            (0..runs)
                .map(|i| random_plan(1000 + i, network, wan_first, acl))
                .collect()
        }
    };
    let slots = cluster::slots(&out, network);
    let net = network.then(|| Net::setup(&slots, &cluster::dc2_slot(&out), cluster::DC2_PROXY_IP));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut totals = Totals::default();
    for plan in &plans {
        let result = run(plan, &out, net.as_ref(), &runtime);
        totals.add(&result);
    }
    let command = match campaign {
        Campaign::Short => "cargo test -p tribune --test t20_faults short_campaign".to_owned(),
        Campaign::Long => format!(
            "TRIBUNE_FAULTS_RUNS={}{} cargo test -p tribune --test t20_faults -- --ignored long_campaign --nocapture",
            plans.len(),
            if acl {
                " TRIBUNE_FAULTS_ACL=1"
            } else if wan_first {
                " TRIBUNE_FAULTS_WAN=1"
            } else {
                ""
            }
        ),
    };
    let table = totals.table(&command, network, &commit);
    println!("\n{table}");
    std::fs::write(out.join("RELIABILITY-table.md"), &table).expect("save the table");

    let strict_default = env_flag("TRIBUNE_FAULTS_STRICT_DEFAULT", true);
    let mut broken: Vec<String> = [
        Class::Consistent,
        Class::UnknownConsistent,
        Class::LostWrite,
        Class::NoFinalRead,
        Class::StalePhantom,
        Class::StaleBackwards,
        Class::LockSafety,
        Class::WanRouting,
        Class::AclDownPolicy,
        Class::KvReplication,
        Class::Catalog,
    ]
    .into_iter()
    .chain(strict_default.then_some(Class::Default))
    .filter(|class| totals.count(*class) > 0)
    .map(|class| format!("{} {}", totals.count(class), class.name()))
    .collect();
    if !strict_default && totals.count(Class::Default) > 0 {
        println!(
            "t20_faults: {} default-mode anomalies NOT asserted (TRIBUNE_FAULTS_STRICT_DEFAULT=0)",
            totals.count(Class::Default)
        );
    }
    if !broken.is_empty() {
        broken.push(format!(
            "failed runs (seed, directory): {:?}; replay with TRIBUNE_FAULTS_SEEDS=<seed>",
            totals.failed_runs
        ));
    }
    assert!(broken.is_empty(), "anomalies under faults: {}", broken.join("; "));
}
