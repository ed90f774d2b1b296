//! The federated ACL scenario of a WAN run. dc1 is the ACL primary: ACLs on, `default_policy =
//! "allow"` (the register clients present no token and must keep working) and a management token.
//! dc2 is a secondary that replicates policies but not tokens, so it resolves every token at dc1
//! and trusts the answer for `acl.token_ttl` (2 s); its `down_policy` is the run's, chosen by the
//! seed. Before the faults a policy (`acl/` write, `acl-secret/` deny) and a global token T linking
//! it are created in dc1, and the run waits until dc2 has replicated the policy and honours T.
//!
//! A checker then presents T and a secret nobody knows (a fresh one each round) to dc2 directly,
//! writing `acl/x` and `acl-secret/x`, for the whole run. Each answer is judged by the moment it
//! was given:
//! - while dc2 is cut off from dc1, once `token_ttl` has passed since the cut: what the
//!   `down_policy` dictates as Consul documents it — `extend-cache` and `async-cache` serve T's
//!   cached policy and give an unknown secret the `default_policy` (allow), `allow` allows
//!   everything, `deny` refuses every secret;
//! - away from every fault (and `token_ttl` after dc2 routes to dc1 again): T may write `acl/` and
//!   not `acl-secret/`, an unknown secret is 403 "ACL not found";
//! - in between (a fault starting, a primary electing a leader, the WAN pool reconnecting): either.
//!
//! And how long it took: within 3 s away from faults and under a cut once dc2 fails a call to dc1
//! fast (dc2 keeps answering); within the 7 s RPC hold timeout (and slack) while dc2 may still be
//! waiting on dc1; and under `async-cache`, T within 300 ms all through the cut (a cached token is
//! served at once). After the run dc2's copy of the policy must equal dc1's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::cluster::Slot;
use super::http::{self, NoResponse};
use super::nemesis::{Applied, Fault};
use super::workload::{NOT_SENT_ERRORS, Shared};

/// dc1's `acl.tokens.initial_management`, and dc2's replication token.
pub(crate) const MANAGEMENT: &str = "5e7a1c3d-0f15-4c2b-8a6e-ac10000f4175";
/// dc2's `acl.token_ttl`: how long a token resolved at dc1 is trusted without asking again.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(2);
/// Slack around every fault boundary (the history's clock and the servers' are not one clock).
pub(crate) const MARGIN: Duration = Duration::from_millis(500);
/// How long a cut is held once the down policy must apply, so the checker sees it for a while.
pub(crate) const CUT_HOLD: Duration = Duration::from_secs(6);
/// The least quiet time after a fault of an ACL run: the normal answers must show again after
/// `token_ttl`, and be seen for a moment.
pub(crate) const QUIET: Duration = Duration::from_millis(4500);
/// How long an answer may take away from faults, and under a cut once dc2 knows dc1 is gone.
pub(crate) const ANSWER_BOUND: Duration = Duration::from_secs(3);
/// How long an answer may take while dc2 may still be waiting on dc1: the RPC hold timeout of a
/// call to another datacenter (Consul's `rpc_hold_timeout`, 7 s) and some slack.
const HOLD_BOUND: Duration = Duration::from_millis(8500);
/// Under `async-cache`, a token in the cache is served at once, however stale: an answer that
/// waited on dc1 takes at least a connection attempt to each of its servers.
const CACHED_BOUND: Duration = Duration::from_millis(300);
/// How long the checker waits for any answer at all.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// The checker's pause between rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(200);
/// A bound on the checker's rounds (a run lasts minutes at most; this is hours of rounds).
const MAX_ROUNDS: usize = 50_000;
/// How long the policy, the token and their replication into dc2 may take before the faults.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// Answers a cut must have been judged on before it counts as checked.
const MIN_CUT_ANSWERS: usize = 8;

const POLICY_NAME: &str = "faults-acl";
const RULES: &str =
    "key_prefix \"acl/\" { policy = \"write\" }\nkey_prefix \"acl-secret/\" { policy = \"deny\" }\n";

/// A secondary's `acl.down_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DownPolicy {
    ExtendCache,
    AsyncCache,
    Allow,
    Deny,
}

impl DownPolicy {
    pub(crate) const ALL: [DownPolicy; 4] = [
        DownPolicy::ExtendCache,
        DownPolicy::AsyncCache,
        DownPolicy::Allow,
        DownPolicy::Deny,
    ];

    /// The run's policy: consecutive seeds cycle through all four.
    pub(crate) fn for_seed(seed: u64) -> DownPolicy {
        DownPolicy::ALL[(seed % DownPolicy::ALL.len() as u64) as usize]
    }

    fn name(self) -> &'static str {
        match self {
            DownPolicy::ExtendCache => "extend-cache",
            DownPolicy::AsyncCache => "async-cache",
            DownPolicy::Allow => "allow",
            DownPolicy::Deny => "deny",
        }
    }
}

impl fmt::Display for DownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes the ACL configuration files and adds them to the servers: dc1 the primary, dc2 a
/// secondary with `down_policy`.
pub(crate) fn configure(root: &Path, dc1: &mut [Slot], dc2: &mut Slot, down_policy: DownPolicy) {
    let primary = json!({
        "primary_datacenter": "dc1",
        "acl": {
            "enabled": true,
            "default_policy": "allow",
            "tokens": {"initial_management": MANAGEMENT},
        },
    });
    let secondary = json!({
        "primary_datacenter": "dc1",
        "acl": {
            "enabled": true,
            "default_policy": "allow",
            "down_policy": down_policy.name(),
            "token_ttl": format!("{}ms", TOKEN_TTL.as_millis()),
            "enable_token_replication": false,
            "tokens": {"replication": MANAGEMENT},
        },
    });
    let dc1_file = root.join("acl-dc1.json");
    let dc2_file = root.join("acl-dc2.json");
    for (file, config) in [(&dc1_file, &primary), (&dc2_file, &secondary)] {
        std::fs::write(file, config.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    }
    for slot in dc1 {
        slot.config_files.push(dc1_file.clone());
    }
    dc2.config_files.push(dc2_file);
}

/// What the setup made in dc1.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    pub(crate) policy_id: String,
    /// T's secret.
    pub(crate) secret: String,
}

/// One of the four requests of a checker round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum Probe {
    /// T writes `acl/x` (its policy: write).
    TokenAllowedKey,
    /// T writes `acl-secret/x` (its policy: deny).
    TokenDeniedKey,
    /// An unknown secret writes `acl/x`.
    UnknownAllowedKey,
    /// An unknown secret writes `acl-secret/x`.
    UnknownDeniedKey,
}

impl Probe {
    const ALL: [Probe; 4] = [
        Probe::TokenAllowedKey,
        Probe::TokenDeniedKey,
        Probe::UnknownAllowedKey,
        Probe::UnknownDeniedKey,
    ];

    fn path(self) -> &'static str {
        match self {
            Probe::TokenAllowedKey | Probe::UnknownAllowedKey => "/v1/kv/acl/x",
            Probe::TokenDeniedKey | Probe::UnknownDeniedKey => "/v1/kv/acl-secret/x",
        }
    }

    fn uses_token(self) -> bool {
        matches!(self, Probe::TokenAllowedKey | Probe::TokenDeniedKey)
    }

    /// The answer when dc2 resolves at dc1: T's policy, and "ACL not found" for an unknown secret.
    fn normal(self) -> Verdict {
        match self {
            Probe::TokenAllowedKey => Verdict::Allowed,
            Probe::TokenDeniedKey => Verdict::Denied,
            Probe::UnknownAllowedKey | Probe::UnknownDeniedKey => Verdict::NotFound,
        }
    }

    /// The answer `down_policy` dictates once dc1 cannot be asked and T's cache entry is stale
    /// (`default_policy` is allow in both datacenters).
    fn down(self, policy: DownPolicy) -> Verdict {
        match policy {
            DownPolicy::ExtendCache | DownPolicy::AsyncCache => match self {
                Probe::TokenAllowedKey => Verdict::Allowed,
                Probe::TokenDeniedKey => Verdict::Denied,
                Probe::UnknownAllowedKey | Probe::UnknownDeniedKey => Verdict::Allowed,
            },
            DownPolicy::Allow => Verdict::Allowed,
            DownPolicy::Deny => Verdict::Denied,
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.uses_token() { "T" } else { "unknown secret" };
        write!(f, "{who} PUT {}", self.path())
    }
}

/// An answer as the checker judges it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    /// 200 `true`.
    Allowed,
    /// 403 "Permission denied".
    Denied,
    /// 403 "ACL not found".
    NotFound,
    /// Anything else: status and body.
    Other(u16, String),
    /// No answer within the checker's limit.
    NoAnswer,
}

impl Verdict {
    fn of(reply: &Result<http::Response, NoResponse>) -> Verdict {
        match reply {
            Ok(reply) => match (reply.status, reply.text().trim()) {
                (200, "true") => Verdict::Allowed,
                (403, "Permission denied") => Verdict::Denied,
                (403, "ACL not found") => Verdict::NotFound,
                (status, body) => Verdict::Other(status, body.chars().take(120).collect()),
            },
            Err(_) => Verdict::NoAnswer,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed => f.write_str("200 true"),
            Verdict::Denied => f.write_str("403 \"Permission denied\""),
            Verdict::NotFound => f.write_str("403 \"ACL not found\""),
            Verdict::Other(status, body) => write!(f, "{status} {body:?}"),
            Verdict::NoAnswer => write!(f, "no answer in {CALL_LIMIT:?}"),
        }
    }
}

/// One checker request, in the history's clock.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    probe: Probe,
    invoked_ns: u64,
    completed_ns: u64,
    verdict: Verdict,
}

impl Observation {
    fn took(&self) -> Duration {
        Duration::from_nanos(self.completed_ns.saturating_sub(self.invoked_ns))
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn secs(at_ns: u64) -> f64 {
    at_ns as f64 / 1e9
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn call(
    server: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> Result<http::Response, NoResponse> {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http::call_as(server, method, path, Some(token), &body, Duration::from_secs(3)).await
}

/// Creates the policy and T in dc1 (through whichever dc1 server answers) and waits until dc2
/// has replicated the policy and answers T and an unknown secret normally.
pub(crate) async fn set_up(dc1: &[SocketAddr], dc2: SocketAddr, seed: u64) -> Result<Fixture, String> {
    let started = Instant::now();
    // The token's identifiers are chosen here, so a create retried after a lost answer is the
    // same token.
    let accessor = format!("0000aaaa-0000-4000-8000-{seed:012}");
    let secret = format!("0000bbbb-0000-4000-8000-{seed:012}");
    let mut policy_id = None;
    let mut token_made = false;
    let mut last = String::new();
    let mut attempt = 0usize;
    while started.elapsed() < SETUP_LIMIT && !token_made {
        let server = dc1[attempt % dc1.len()];
        attempt += 1;
        if policy_id.is_none() {
            let body = json!({"Name": POLICY_NAME, "Description": "the fault campaign's ACL checker", "Rules": RULES});
            let created = call(server, "PUT", "/v1/acl/policy", MANAGEMENT, &body).await;
            let found = match created {
                Ok(reply) if reply.status == 200 => Ok(reply),
                _ => {
                    call(
                        server,
                        "GET",
                        &format!("/v1/acl/policy/name/{POLICY_NAME}"),
                        MANAGEMENT,
                        &Value::Null,
                    )
                    .await
                }
            };
            match found {
                Ok(reply) if reply.status == 200 => {
                    policy_id = reply
                        .json()
                        .and_then(|j| j.get("ID")?.as_str().map(str::to_owned));
                }
                Ok(reply) => last = format!("policy: {} {}", reply.status, reply.text()),
                Err(e) => last = format!("policy: {e:?}"),
            }
        }
        if let Some(id) = &policy_id {
            let body = json!({
                "AccessorID": accessor,
                "SecretID": secret,
                "Description": "T, the fault campaign's ACL checker token",
                "Policies": [{"ID": id}],
            });
            let created = call(server, "PUT", "/v1/acl/token", MANAGEMENT, &body).await;
            token_made = match created {
                Ok(reply) if reply.status == 200 => true,
                _ => call(
                    server,
                    "GET",
                    &format!("/v1/acl/token/{accessor}"),
                    MANAGEMENT,
                    &Value::Null,
                )
                .await
                .is_ok_and(|reply| reply.status == 200),
            };
        }
        if !token_made {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let Some(policy_id) = policy_id.filter(|_| token_made) else {
        return Err(format!(
            "the policy and T were not created in dc1 within {SETUP_LIMIT:?} (last: {last})"
        ));
    };
    let fixture = Fixture { policy_id, secret };
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xac1);
    while started.elapsed() < SETUP_LIMIT {
        let replicated = call(
            dc2,
            "GET",
            &format!("/v1/acl/policy/{}", fixture.policy_id),
            MANAGEMENT,
            &Value::Null,
        )
        .await
        .is_ok_and(|reply| reply.status == 200);
        let mut normal = replicated;
        if replicated {
            let unknown = unknown_secret(&mut rng);
            for probe in Probe::ALL {
                let seen = ask(dc2, probe, &fixture.secret, &unknown).await;
                if seen != probe.normal() {
                    last = format!("dc2: {probe} answered {seen}");
                    normal = false;
                    break;
                }
            }
        } else {
            last = "dc2 has not replicated the policy".to_owned();
        }
        if normal {
            return Ok(fixture);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "dc2 did not replicate the policy and honour T within {SETUP_LIMIT:?} (last: {last})"
    ))
}

fn unknown_secret(rng: &mut SmallRng) -> String {
    format!(
        "{:08x}-dead-4bee-8fee-{:012x}",
        rng.random::<u32>(),
        rng.random::<u64>() & 0xffff_ffff_ffff
    )
}

async fn ask(dc2: SocketAddr, probe: Probe, token: &str, unknown: &str) -> Verdict {
    let secret = if probe.uses_token() { token } else { unknown };
    let reply = http::call_as(dc2, "PUT", probe.path(), Some(secret), b"v", CALL_LIMIT).await;
    Verdict::of(&reply)
}

/// The checker: rounds of the four probes against dc2, a fresh unknown secret each round, until
/// the clients stop (bounded by [`MAX_ROUNDS`]).
pub(crate) async fn checker(
    shared: Arc<Shared>,
    dc2: SocketAddr,
    fixture: Fixture,
    seed: u64,
) -> Vec<Observation> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut seen = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let unknown = unknown_secret(&mut rng);
        for probe in Probe::ALL {
            let invoked_ns = shared.now_ns();
            let verdict = ask(dc2, probe, &fixture.secret, &unknown).await;
            seen.push(Observation {
                probe,
                invoked_ns,
                completed_ns: shared.now_ns(),
                verdict,
            });
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    seen
}

/// Which expectation an answer is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Window {
    /// dc2 cut off and `token_ttl` past the cut: the down policy.
    Cut,
    /// Away from every fault: resolution at dc1.
    Normal,
    /// Around a fault: either.
    Between,
}

/// Where a WAN cut puts the down policy in force: from `token_ttl` (and a margin) after the cut
/// to the heal; answers must be prompt from the moment dc2 fails a call to dc1 fast (before it,
/// a call to dc1 may wait out the RPC hold timeout).
#[derive(Debug, Clone, Copy)]
struct DownSpan {
    from_ns: u64,
    prompt_from_ns: u64,
    to_ns: u64,
}

fn down_span(a: &Applied) -> Option<DownSpan> {
    if a.fault != Fault::WanCut {
        return None;
    }
    let from_ns = a.start_ns + ns(TOKEN_TTL + MARGIN);
    let prompt_from_ns = a
        .dc2_fails_fast_ms
        .map_or(a.heal_ns, |ms| a.start_ns + ns(Duration::from_millis(ms)))
        .max(from_ns);
    (from_ns < a.heal_ns).then_some(DownSpan {
        from_ns,
        prompt_from_ns,
        to_ns: a.heal_ns,
    })
}

/// The span a fault may disturb resolution in: from just before it starts to `token_ttl` after
/// everything (dc2 routing to dc1 included) came back.
fn disturbed_span(a: &Applied) -> (u64, u64) {
    (
        a.start_ns.saturating_sub(ns(MARGIN)),
        a.settled_ns + ns(TOKEN_TTL + MARGIN),
    )
}

/// The window of an answer, and the most it may take.
fn window(o: &Observation, applied: &[Applied]) -> (Window, Duration) {
    let cut = applied
        .iter()
        .filter_map(down_span)
        .find(|span| o.invoked_ns >= span.from_ns && o.completed_ns <= span.to_ns);
    if let Some(span) = cut {
        let bound = if o.invoked_ns >= span.prompt_from_ns {
            ANSWER_BOUND
        } else {
            HOLD_BOUND
        };
        return (Window::Cut, bound);
    }
    let overlaps = |(from, to): (u64, u64)| o.completed_ns >= from && o.invoked_ns <= to;
    if applied.iter().map(disturbed_span).any(overlaps) {
        (Window::Between, HOLD_BOUND)
    } else {
        (Window::Normal, ANSWER_BOUND)
    }
}

/// The checker's answers, one a line, with the window each was judged in (for `acl.txt`).
pub(crate) fn log(seen: &[Observation], applied: &[Applied]) -> String {
    let mut out = String::from("invoked_s\ttook_ms\twindow\tbound_ms\tprobe\tanswer\n");
    for o in seen {
        let (w, bound) = window(o, applied);
        out.push_str(&format!(
            "{:.3}\t{}\t{w:?}\t{}\t{}\t{}\n",
            secs(o.invoked_ns),
            millis(o.took()),
            millis(bound),
            o.probe,
            o.verdict
        ));
    }
    out
}

/// A run's ACL figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub(crate) down_policy: Option<DownPolicy>,
    /// Answers judged per window.
    pub(crate) answers: BTreeMap<Window, usize>,
    /// The slowest answer per window, in ms.
    pub(crate) slowest_ms: BTreeMap<Window, u64>,
}

/// Judges the checker's answers against the faults that happened: what went wrong (one line per
/// kind of wrong answer, with its count) and the figures.
pub(crate) fn judge(seen: &[Observation], applied: &[Applied], policy: DownPolicy) -> (Vec<String>, Figures) {
    let mut figures = Figures {
        down_policy: Some(policy),
        ..Figures::default()
    };
    // (window, probe, what came, what was expected) → (count, first at)
    let mut wrong: BTreeMap<(Window, Probe, Verdict, String), (usize, u64)> = BTreeMap::new();
    // (window, probe, bound) → (count, slowest, first at)
    let mut slow: BTreeMap<(Window, Probe, Duration), (usize, Duration, u64)> = BTreeMap::new();
    for o in seen {
        let (w, mut bound) = window(o, applied);
        *figures.answers.entry(w).or_default() += 1;
        let slowest = figures.slowest_ms.entry(w).or_default();
        *slowest = (*slowest).max(millis(o.took()));
        let (normal, down) = (o.probe.normal(), o.probe.down(policy));
        let (ok, expected) = match w {
            Window::Cut => (o.verdict == down, format!("{down} ({policy})")),
            Window::Normal => (o.verdict == normal, format!("{normal}")),
            Window::Between => (
                o.verdict == normal || o.verdict == down,
                format!("{normal} or {down} ({policy})"),
            ),
        };
        if !ok {
            let entry = wrong
                .entry((w, o.probe, o.verdict.clone(), expected))
                .or_insert((0, o.invoked_ns));
            entry.0 += 1;
        }
        // async-cache serves a cached token at once and refreshes it in the background, whether
        // or not the primary answers.
        if policy == DownPolicy::AsyncCache && w == Window::Cut && o.probe.uses_token() {
            bound = bound.min(CACHED_BOUND);
        }
        if o.took() > bound {
            let entry = slow
                .entry((w, o.probe, bound))
                .or_insert((0, Duration::ZERO, o.invoked_ns));
            entry.0 += 1;
            entry.1 = entry.1.max(o.took());
        }
    }
    let mut problems = Vec::new();
    for ((w, probe, verdict, expected), (count, first)) in wrong {
        problems.push(format!(
            "dc2 ({policy}), {w:?} window: {probe} answered {verdict} {count} times (first at {:.1} s), expected {expected}",
            secs(first)
        ));
    }
    for ((w, probe, bound), (count, slowest, first)) in slow {
        problems.push(format!(
            "dc2 ({policy}), {w:?} window: {probe} took more than {bound:?} {count} times (slowest {slowest:?}, first at {:.1} s)",
            secs(first)
        ));
    }
    // A check that saw nothing is not a pass.
    for a in applied.iter().filter(|a| a.fault == Fault::WanCut) {
        let judged = down_span(a).map_or(0, |span| {
            seen.iter()
                .filter(|o| o.invoked_ns >= span.prompt_from_ns && o.completed_ns <= span.to_ns)
                .count()
        });
        if judged < MIN_CUT_ANSWERS {
            problems.push(format!(
                "the cut at {:.1} s had only {judged} answers judged promptly under the down policy (dc2 failed ?dc=dc1 fast after {:?} ms)",
                secs(a.start_ns),
                a.dc2_fails_fast_ms
            ));
        }
        let after = a.settled_ns + ns(TOKEN_TTL + MARGIN);
        let normal_after = seen
            .iter()
            .filter(|o| o.invoked_ns >= after && window(o, applied).0 == Window::Normal)
            .count();
        if normal_after < Probe::ALL.len() {
            problems.push(format!(
                "after the cut at {:.1} s healed, only {normal_after} answers were judged normal",
                secs(a.start_ns)
            ));
        }
    }
    (problems, figures)
}

/// After the run: dc2's copy of the policy (and its list of policies) equals dc1's, indexes aside.
pub(crate) async fn compare_policies(dc1: &[SocketAddr], dc2: SocketAddr, fixture: &Fixture) -> Vec<String> {
    let strip = |mut value: Value| {
        let drop_indexes = |v: &mut Value| {
            if let Some(object) = v.as_object_mut() {
                object.remove("CreateIndex");
                object.remove("ModifyIndex");
            }
        };
        match &mut value {
            Value::Array(items) => {
                items.iter_mut().for_each(drop_indexes);
                items.sort_by_key(|item| item.get("ID").and_then(Value::as_str).map(str::to_owned));
            }
            other => drop_indexes(other),
        }
        value
    };
    let mut problems = Vec::new();
    for path in [
        format!("/v1/acl/policy/{}", fixture.policy_id),
        "/v1/acl/policies".to_owned(),
    ] {
        let mut primary = None;
        for server in dc1 {
            match call(*server, "GET", &path, MANAGEMENT, &Value::Null).await {
                Ok(reply) if reply.status == 200 => {
                    primary = reply.json().map(strip);
                    break;
                }
                _ => {}
            }
        }
        let secondary = match call(dc2, "GET", &path, MANAGEMENT, &Value::Null).await {
            Ok(reply) if reply.status == 200 => reply.json().map(strip),
            Ok(reply) => {
                problems.push(format!(
                    "dc2: GET {path} answered {} {}",
                    reply.status,
                    reply.text()
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("dc2: GET {path} got no answer ({e:?})"));
                continue;
            }
        };
        match (primary, secondary) {
            (Some(primary), Some(secondary)) if primary == secondary => {}
            (Some(primary), Some(secondary)) => problems.push(format!(
                "GET {path}: dc2's replicated copy {secondary} differs from dc1's {primary}"
            )),
            (None, _) => problems.push(format!("dc1: GET {path} did not answer 200 with JSON")),
            (_, None) => problems.push(format!("dc2: GET {path} did not answer JSON")),
        }
    }
    problems
}

/// Waits until a `?dc=dc1` read through dc2 answers Consul's "never sent" 500 within
/// [`ANSWER_BOUND`] (dc2 knows no dc1 server can be reached): the ms it took.
pub(crate) async fn wait_dc2_fails_fast(dc2: SocketAddr, limit: Duration) -> Option<u64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let asked = Instant::now();
        let reply = http::call(dc2, "GET", "/v1/kv/acl-absent?dc=dc1", b"", ANSWER_BOUND).await;
        let fast = asked.elapsed() <= ANSWER_BOUND
            && reply.is_ok_and(|reply| reply.status == 500 && NOT_SENT_ERRORS.contains(&reply.text().trim()));
        if fast {
            return Some(millis(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until dc2 carries a call to dc1 again (a read of a missing key there is a 404): the ms
/// it took.
pub(crate) async fn wait_dc2_reaches_primary(dc2: SocketAddr, limit: Duration) -> Option<u64> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let reached = http::call(
            dc2,
            "GET",
            "/v1/kv/acl-absent?dc=dc1",
            b"",
            Duration::from_secs(2),
        )
        .await
        .is_ok_and(|reply| reply.status == 404);
        if reached {
            return Some(millis(started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
