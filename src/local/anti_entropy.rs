//! Anti-entropy: keeps the catalog's view of this agent's node in step with the agent's local
//! state, as Consul's agent does.
//!
//! - [`plan`] is pure: the local [`Snapshot`] (with its in-sync flags and tombstones) and, on a full
//!   sync, what the catalog holds for the node, in; the registrations and deregistrations to send,
//!   and the entries found already in step, out. A partial sync (after a change) trusts the flags;
//!   a full sync also repairs drift — registers what is missing or different, deregisters services
//!   and checks on the node the agent does not have — but never touches the `serfHealth` check nor
//!   the `consul` service, which the leader's reconciliation owns.
//! - [`run`] is the loop: a partial sync on every change (changes coalesce), a full sync every
//!   interval plus an injected jitter, retries after a failure, deferred output released and
//!   services reaped on time. It talks to the catalog only through the agent's own API
//!   ([`LocalApi`]), so a server and a client agent sync the same way, under the service's token or
//!   the agent's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_kvstore::{CheckStatus, ServiceWeights};

use crate::http::catalog_json::ServiceAddressJson;

use super::model::{LocalCheck, LocalService};
use super::state::{EntryKey, LocalState, Snapshot, Synced};
use crate::local_api::{LocalApi, LocalApiError};
use crate::node::SERF_HEALTH_CHECK;

/// The service the leader registers every server as; the agent leaves it alone.
const CONSUL_SERVICE: &str = "consul";
/// How soon a failed sync is tried again, at most (Consul's 15 s), never later than the interval.
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// How often services are checked for reaping, at most (Consul's 30 s reap interval).
const REAP_EVERY: Duration = Duration::from_secs(30);

/// A check as the catalog holds it, with the fields the sync compares.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RemoteCheck {
    #[serde(rename = "CheckID")]
    pub(crate) check_id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(deserialize_with = "status_from_text")]
    pub(crate) status: CheckStatus,
    #[serde(default)]
    pub(crate) notes: String,
    #[serde(default)]
    pub(crate) output: String,
    #[serde(rename = "ServiceID", default)]
    pub(crate) service_id: String,
    #[serde(rename = "Type", default)]
    pub(crate) check_type: String,
}

/// A check status as the HTTP API writes it (`passing`, `warning`, `critical`).
fn status_from_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<CheckStatus, D::Error> {
    let text = String::deserialize(deserializer)?;
    CheckStatus::parse(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown check status {text:?}")))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoteWeights {
    passing: u32,
    warning: u32,
}

/// A service as `/v1/catalog/node-services` shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoteService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    tagged_addresses: Option<BTreeMap<String, ServiceAddressJson>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    weights: Option<RemoteWeights>,
    #[serde(default)]
    enable_tag_override: bool,
}

impl From<RemoteService> for LocalService {
    fn from(r: RemoteService) -> Self {
        LocalService {
            id: r.id,
            service: r.service,
            kind: r.kind,
            tags: r.tags.unwrap_or_default(),
            address: r.address,
            tagged_addresses: r
                .tagged_addresses
                .unwrap_or_default()
                .into_iter()
                .map(|(purpose, a)| (purpose, a.into()))
                .collect(),
            meta: r.meta.unwrap_or_default(),
            port: r.port,
            weights: r
                .weights
                .map_or_else(ServiceWeights::default, |w| ServiceWeights {
                    passing: w.passing,
                    warning: w.warning,
                }),
            enable_tag_override: r.enable_tag_override,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoteNodeServices {
    #[serde(default)]
    services: Option<Vec<RemoteService>>,
}

/// What the catalog holds for this agent's node.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Remote {
    pub(crate) services: BTreeMap<String, LocalService>,
    pub(crate) checks: BTreeMap<String, RemoteCheck>,
}

/// One call to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncOp {
    /// Register a service (at its generation) with the given checks of it.
    RegisterService {
        id: String,
        generation: u64,
        checks: Vec<(String, u64)>,
    },
    /// Register a check (a node check, or one of a service already in step).
    RegisterCheck { id: String, generation: u64 },
    /// Deregister a check; `generation` of the local tombstone, if there is one.
    DeregisterCheck { id: String, generation: Option<u64> },
    /// Deregister a service with its checks.
    DeregisterService { id: String, generation: Option<u64> },
}

/// What a sync does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The calls, deregistrations of checks first, then of services, then registrations.
    pub(crate) ops: Vec<SyncOp>,
    /// Entries the catalog already holds as they are here (at that generation).
    pub(crate) settled: Vec<(EntryKey, u64)>,
}

fn check_matches(local: &LocalCheck, remote: &RemoteCheck, ignore_output: bool) -> bool {
    local.check_id == remote.check_id
        && local.name == remote.name
        && local.status == remote.status
        && local.notes == remote.notes
        && (ignore_output || local.output == remote.output)
        && local.service_id == remote.service_id
        && local.check_type == remote.check_type
}

/// The calls that bring the catalog in step with `local`: after a change (`remote = None`) those
/// the flags ask for; on a full sync, whatever differs from `remote`.
pub(crate) fn plan(local: &Snapshot, remote: Option<&Remote>) -> Plan {
    let mut out = Plan::default();
    let mut register_services: Vec<&Synced<LocalService>> = Vec::new();
    let mut deregister_services = Vec::new();
    let mut deregister_checks = Vec::new();
    let mut register_checks: Vec<&Synced<LocalCheck>> = Vec::new();

    for entry in &local.services {
        let key = || EntryKey::Service(entry.id.clone());
        match (&entry.value, remote) {
            (Some(service), Some(remote)) => {
                if remote.services.get(&entry.id) == Some(service) {
                    out.settled.push((key(), entry.generation));
                } else {
                    register_services.push(entry);
                }
            }
            (Some(_), None) if !entry.in_sync => register_services.push(entry),
            (Some(_), None) => {}
            (None, Some(remote)) if !remote.services.contains_key(&entry.id) => {
                out.settled.push((key(), entry.generation));
            }
            (None, _) => deregister_services.push(SyncOp::DeregisterService {
                id: entry.id.clone(),
                generation: Some(entry.generation),
            }),
        }
    }
    for entry in &local.checks {
        let key = || EntryKey::Check(entry.id.clone());
        match (&entry.value, remote) {
            (Some(check), Some(remote)) => {
                let same = remote
                    .checks
                    .get(&entry.id)
                    .is_some_and(|r| check_matches(check, r, entry.output_deferred));
                if same {
                    out.settled.push((key(), entry.generation));
                } else {
                    register_checks.push(entry);
                }
            }
            (Some(_), None) if !entry.in_sync => register_checks.push(entry),
            (Some(_), None) => {}
            (None, Some(remote)) if !remote.checks.contains_key(&entry.id) => {
                out.settled.push((key(), entry.generation));
            }
            (None, _) => deregister_checks.push(SyncOp::DeregisterCheck {
                id: entry.id.clone(),
                generation: Some(entry.generation),
            }),
        }
    }
    if let Some(remote) = remote {
        let known_services: BTreeSet<&str> = local.services.iter().map(|e| e.id.as_str()).collect();
        let extra_services: BTreeSet<&str> = remote
            .services
            .keys()
            .map(String::as_str)
            .filter(|id| *id != CONSUL_SERVICE && !known_services.contains(id))
            .collect();
        for id in &extra_services {
            deregister_services.push(SyncOp::DeregisterService {
                id: (*id).to_owned(),
                generation: None,
            });
        }
        let known_checks: BTreeSet<&str> = local.checks.iter().map(|e| e.id.as_str()).collect();
        for (id, check) in &remote.checks {
            let owned_by_extra = extra_services.contains(check.service_id.as_str());
            let of_consul = check.service_id == CONSUL_SERVICE;
            if id != SERF_HEALTH_CHECK && !of_consul && !owned_by_extra && !known_checks.contains(id.as_str())
            {
                deregister_checks.push(SyncOp::DeregisterCheck {
                    id: id.clone(),
                    generation: None,
                });
            }
        }
    }
    out.ops.extend(deregister_checks);
    out.ops.extend(deregister_services);
    let mut covered = BTreeSet::new();
    for entry in register_services {
        // A service goes with every check of it, so the catalog never shows it without them.
        let checks: Vec<(String, u64)> = local
            .checks
            .iter()
            .filter(|c| c.value.as_ref().is_some_and(|c| c.service_id == entry.id))
            .map(|c| (c.id.clone(), c.generation))
            .collect();
        covered.extend(checks.iter().map(|(id, _)| id.clone()));
        out.ops.push(SyncOp::RegisterService {
            id: entry.id.clone(),
            generation: entry.generation,
            checks,
        });
    }
    for entry in register_checks {
        if !covered.contains(&entry.id) {
            out.ops.push(SyncOp::RegisterCheck {
                id: entry.id.clone(),
                generation: entry.generation,
            });
        }
    }
    out
}

/// How the sync reaches the catalog and who it is.
pub(crate) struct SyncTarget {
    pub(crate) api: Arc<dyn LocalApi>,
    pub(crate) node: String,
    pub(crate) address: String,
    /// The agent's own token (`acl.tokens.agent`), read at each sync since it can change.
    pub(crate) agent_token: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

impl SyncTarget {
    fn token<'a>(&self, own: Option<&'a str>, agent: &'a Option<String>) -> Option<&'a str> {
        own.or(agent.as_deref())
    }

    /// Reads the node's services and checks from the catalog.
    async fn read_remote(&self) -> Result<Remote, LocalApiError> {
        let token = (self.agent_token)();
        let node = encode_segment(&self.node);
        let services = self
            .api
            .call(
                Method::GET,
                &format!("/v1/catalog/node-services/{node}"),
                token.as_deref(),
                Bytes::new(),
            )
            .await?
            .ok()?;
        // `null` when the node is not in the catalog yet.
        let services: Option<RemoteNodeServices> = services.json()?;
        let checks = self
            .api
            .call(
                Method::GET,
                &format!("/v1/health/node/{node}"),
                token.as_deref(),
                Bytes::new(),
            )
            .await?
            .ok()?;
        let checks: Vec<RemoteCheck> = checks.json::<Option<Vec<RemoteCheck>>>()?.unwrap_or_default();
        Ok(Remote {
            services: services
                .and_then(|s| s.services)
                .unwrap_or_default()
                .into_iter()
                .map(|s| (s.id.clone(), LocalService::from(s)))
                .collect(),
            checks: checks.into_iter().map(|c| (c.check_id.clone(), c)).collect(),
        })
    }

    async fn put(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> Result<(), LocalApiError> {
        self.api
            .call(Method::PUT, path, token, Bytes::from(body.to_string()))
            .await?
            .ok()
            .map(|_| ())
    }

    /// Sends one call of a plan; what it settled.
    async fn apply(&self, op: &SyncOp, local: &Snapshot) -> Result<Vec<(EntryKey, u64)>, LocalApiError> {
        let agent_token = (self.agent_token)();
        let find_service = |id: &str| local.services.iter().find(|e| e.id == id);
        let find_check = |id: &str| local.checks.iter().find(|e| e.id == id);
        match op {
            SyncOp::RegisterService {
                id,
                generation,
                checks,
            } => {
                let Some(entry) = find_service(id) else {
                    return Ok(Vec::new());
                };
                let Some(service) = &entry.value else {
                    return Ok(Vec::new());
                };
                let check_bodies: Vec<serde_json::Value> = checks
                    .iter()
                    .filter_map(|(cid, _)| find_check(cid).and_then(|c| c.value.as_ref()))
                    .map(|c| c.registration_json(&self.node))
                    .collect();
                let body = json!({
                    "Node": self.node,
                    "Address": self.address,
                    "SkipNodeUpdate": true,
                    "Service": service.registration_json(),
                    "Checks": check_bodies,
                });
                self.put(
                    "/v1/catalog/register",
                    self.token(entry.token.as_deref(), &agent_token),
                    body,
                )
                .await?;
                let mut settled = vec![(EntryKey::Service(id.clone()), *generation)];
                settled.extend(checks.iter().map(|(cid, g)| (EntryKey::Check(cid.clone()), *g)));
                Ok(settled)
            }
            SyncOp::RegisterCheck { id, generation } => {
                let Some(entry) = find_check(id) else {
                    return Ok(Vec::new());
                };
                let Some(check) = &entry.value else {
                    return Ok(Vec::new());
                };
                // A service's check goes under the service's token when it has none of its own.
                let service_token = find_service(&check.service_id).and_then(|s| s.token.as_deref());
                let body = json!({
                    "Node": self.node,
                    "Address": self.address,
                    "SkipNodeUpdate": true,
                    "Check": check.registration_json(&self.node),
                });
                self.put(
                    "/v1/catalog/register",
                    self.token(entry.token.as_deref().or(service_token), &agent_token),
                    body,
                )
                .await?;
                Ok(vec![(EntryKey::Check(id.clone()), *generation)])
            }
            SyncOp::DeregisterCheck { id, generation } => {
                let token = find_check(id).and_then(|e| e.token.as_deref());
                let body = json!({"Node": self.node, "CheckID": id});
                self.put("/v1/catalog/deregister", self.token(token, &agent_token), body)
                    .await?;
                Ok(generation
                    .map(|g| vec![(EntryKey::Check(id.clone()), g)])
                    .unwrap_or_default())
            }
            SyncOp::DeregisterService { id, generation } => {
                let token = find_service(id).and_then(|e| e.token.as_deref());
                let body = json!({"Node": self.node, "ServiceID": id});
                self.put("/v1/catalog/deregister", self.token(token, &agent_token), body)
                    .await?;
                Ok(generation
                    .map(|g| vec![(EntryKey::Service(id.clone()), g)])
                    .unwrap_or_default())
            }
        }
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One sync: a full one reads the catalog first. Every call is tried; the first failure is
/// returned after the rest ran, so one refused service does not hold back the others.
pub(crate) async fn sync_once(
    state: &LocalState,
    target: &SyncTarget,
    full: bool,
) -> Result<(), LocalApiError> {
    let local = state.snapshot();
    let remote = if full {
        match target.read_remote().await {
            Ok(remote) => Some(remote),
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy: reading this node from the catalog");
                return Err(e);
            }
        }
    } else {
        None
    };
    let plan = plan(&local, remote.as_ref());
    for (key, generation) in &plan.settled {
        state.mark_synced(key, *generation);
    }
    let mut first_error = None;
    for op in &plan.ops {
        match target.apply(op, &local).await {
            Ok(settled) => {
                for (key, generation) in &settled {
                    state.mark_synced(key, *generation);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, op = ?op, "anti-entropy: syncing to the catalog");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The loop's timing.
pub(crate) struct Timing {
    /// Between full syncs (Consul's is about a minute, scaled with the cluster's size).
    pub(crate) interval: Duration,
    /// Extra wait added to each interval, so agents do not sync in lockstep.
    pub(crate) jitter: Box<dyn Fn(Duration) -> Duration + Send + Sync>,
}

/// Syncs until `stop`: at once in full, then after each change, and in full every interval.
pub(crate) async fn run(
    state: Arc<LocalState>,
    target: SyncTarget,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
) {
    let retry = RETRY_AFTER.min(timing.interval);
    let reap_every = REAP_EVERY.min(timing.interval);
    let mut next_full = Instant::now();
    let mut next_reap = Instant::now() + reap_every;
    let mut retry_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let deferred = state.release_deferred(now);
        if now >= next_reap {
            state.reap(now);
            next_reap = now + reap_every;
        }
        let full = now >= next_full;
        let partial = retry_at.is_some_and(|at| now >= at);
        if full || partial {
            match sync_once(&state, &target, full).await {
                Ok(()) => retry_at = None,
                Err(_) => retry_at = Some(Instant::now() + retry),
            }
            if full {
                next_full = Instant::now() + timing.interval + (timing.jitter)(timing.interval);
            }
        }
        let mut wake = next_full.min(next_reap);
        if let Some(at) = deferred {
            wake = wake.min(at);
        }
        if let Some(at) = retry_at {
            wake = wake.min(at);
        }
        tokio::select! {
            () = state.changed() => {
                // A change: a partial sync now (changes that came meanwhile coalesce into it).
                retry_at = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn service(id: &str) -> LocalService {
        LocalService {
            id: id.into(),
            service: id.into(),
            weights: ServiceWeights::default(),
            ..LocalService::default()
        }
    }

    fn check(id: &str, service_id: &str, status: CheckStatus) -> LocalCheck {
        let mut c = LocalCheck::new(id, id, status);
        c.service_id = service_id.into();
        c.check_type = "ttl".into();
        c
    }

    fn entry<T>(id: &str, value: Option<T>, in_sync: bool, generation: u64) -> Synced<T> {
        Synced {
            id: id.into(),
            value,
            in_sync,
            generation,
            token: None,
            output_deferred: false,
        }
    }

    fn remote_of(c: &LocalCheck) -> RemoteCheck {
        RemoteCheck {
            check_id: c.check_id.clone(),
            name: c.name.clone(),
            status: c.status,
            notes: c.notes.clone(),
            output: c.output.clone(),
            service_id: c.service_id.clone(),
            check_type: c.check_type.clone(),
        }
    }

    #[test]
    fn remote_checks_read_the_statuses_the_api_writes() {
        let check: RemoteCheck = serde_json::from_str(
            r#"{"CheckID": "c", "Name": "n", "Status": "warning", "Notes": "", "Output": "o",
                "ServiceID": "s", "Type": "ttl", "Definition": {}}"#,
        )
        .unwrap();
        assert_eq!(check.status, CheckStatus::Warning);
        assert!(serde_json::from_str::<RemoteCheck>(r#"{"CheckID": "c", "Status": "Bogus"}"#).is_err());
    }

    #[test]
    fn a_partial_sync_follows_the_flags() {
        let local = Snapshot {
            services: vec![
                entry("web", Some(service("web")), false, 3),
                entry("db", Some(service("db")), true, 1),
                entry("old", None, false, 7),
            ],
            checks: vec![
                entry(
                    "service:web",
                    Some(check("service:web", "web", CheckStatus::Critical)),
                    false,
                    4,
                ),
                entry(
                    "service:db",
                    Some(check("service:db", "db", CheckStatus::Passing)),
                    false,
                    5,
                ),
                entry("mem", Some(check("mem", "", CheckStatus::Passing)), true, 2),
                entry("gone", None, false, 8),
            ],
        };
        let plan = plan(&local, None);
        assert_eq!(
            plan.ops,
            [
                SyncOp::DeregisterCheck {
                    id: "gone".into(),
                    generation: Some(8)
                },
                SyncOp::DeregisterService {
                    id: "old".into(),
                    generation: Some(7)
                },
                SyncOp::RegisterService {
                    id: "web".into(),
                    generation: 3,
                    checks: vec![("service:web".into(), 4)]
                },
                SyncOp::RegisterCheck {
                    id: "service:db".into(),
                    generation: 5
                },
            ]
        );
        assert!(plan.settled.is_empty());
    }

    #[test]
    fn a_full_sync_repairs_drift_but_leaves_serf_health_and_consul_alone() {
        let web_check = check("service:web", "web", CheckStatus::Passing);
        let mem = check("mem", "", CheckStatus::Warning);
        let local = Snapshot {
            services: vec![
                entry("web", Some(service("web")), true, 1),
                entry("db", Some(service("db")), true, 2),
            ],
            checks: vec![
                entry("service:web", Some(web_check.clone()), true, 3),
                entry("mem", Some(mem.clone()), true, 4),
            ],
        };
        let mut changed_web = service("web");
        changed_web.port = 99;
        let mut stale_mem = remote_of(&mem);
        stale_mem.status = CheckStatus::Passing;
        let serf = RemoteCheck {
            check_id: SERF_HEALTH_CHECK.into(),
            name: "Serf Health Status".into(),
            status: CheckStatus::Passing,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            check_type: "serf".into(),
        };
        let remote = Remote {
            services: [
                ("web".to_owned(), changed_web),
                ("stray".to_owned(), service("stray")),
                (CONSUL_SERVICE.to_owned(), service(CONSUL_SERVICE)),
            ]
            .into(),
            checks: [
                ("service:web".to_owned(), remote_of(&web_check)),
                ("mem".to_owned(), stale_mem),
                (SERF_HEALTH_CHECK.to_owned(), serf),
                (
                    "stray-check".to_owned(),
                    remote_of(&check("stray-check", "stray", CheckStatus::Passing)),
                ),
                (
                    "orphan".to_owned(),
                    remote_of(&check("orphan", "", CheckStatus::Passing)),
                ),
            ]
            .into(),
        };
        let plan = plan(&local, Some(&remote));
        assert_eq!(
            plan.ops,
            [
                SyncOp::DeregisterCheck {
                    id: "orphan".into(),
                    generation: None
                },
                SyncOp::DeregisterService {
                    id: "stray".into(),
                    generation: None
                },
                SyncOp::RegisterService {
                    id: "web".into(),
                    generation: 1,
                    checks: vec![("service:web".into(), 3)]
                },
                SyncOp::RegisterService {
                    id: "db".into(),
                    generation: 2,
                    checks: vec![]
                },
                SyncOp::RegisterCheck {
                    id: "mem".into(),
                    generation: 4
                },
            ]
        );
        assert_eq!(plan.settled, [(EntryKey::Check("service:web".into()), 3)]);
    }

    #[test]
    fn deferred_output_is_not_drift_and_tombstones_the_catalog_lacks_are_settled() {
        let mut local_check = check("mem", "", CheckStatus::Passing);
        local_check.output = "new".into();
        let mut deferred = entry("mem", Some(local_check.clone()), true, 1);
        deferred.output_deferred = true;
        let local = Snapshot {
            services: vec![entry("gone", None, false, 5)],
            checks: vec![deferred],
        };
        let mut remote_check = remote_of(&local_check);
        remote_check.output = "old".into();
        let remote = Remote {
            services: BTreeMap::new(),
            checks: [("mem".to_owned(), remote_check)].into(),
        };
        let plan = plan(&local, Some(&remote));
        assert!(plan.ops.is_empty(), "{:?}", plan.ops);
        assert_eq!(
            plan.settled,
            [
                (EntryKey::Service("gone".into()), 5),
                (EntryKey::Check("mem".into()), 1)
            ]
        );
    }
}
