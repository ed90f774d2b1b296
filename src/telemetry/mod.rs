//! The agent's own metrics under Consul's names, and the reading `/v1/agent/metrics` renders as
//! Consul's JSON or as Prometheus text.
//!
//! What it is: one [`Telemetry`] per server agent, a registry of counters and timing summaries
//! fed by hooks at the existing layers — the HTTP middleware (`http/metrics.rs`), the leader's
//! proposals (`Agent::propose`), the state machine's apply (`fsm.rs`), the RPC handler
//! (`node/app_rpc.rs`), the cross-datacenter call (`federation/forward.rs`) and a task that
//! watches raft's role ([`watch_raft`]) — plus gauges read from consensus when the endpoint is
//! asked. Each hook costs an atomic add or one short lock around a sketch insert; series are
//! looked up once, at start, except an HTTP route's (a sharded map read per request).
//! [`Snapshot`] is one reading of everything; the JSON and the Prometheus text both render it.
//!
//! What it is not: a go-metrics sink. There is no statsd, dogstatsd or Circonus push and no
//! 10-second interval: the JSON's `Count` and `Sum` are totals since the agent started (`Rate` is
//! `Sum` per second of uptime), Prometheus counters and summaries are cumulative, and summary
//! quantiles cover the last one to two minutes. Series are never expired after
//! `prometheus_retention_time`, which only turns the Prometheus rendering on: their set is fixed by
//! the code (command kinds, the route table's patterns, datacenters known to the WAN pool), never by
//! a client's input, so it stays small. Go's runtime series (`alloc_bytes`, `num_goroutines`) have
//! no counterpart. A client agent keeps its own, smaller set ([`Telemetry::new_client`]).
//!
//! The library: `metrics` (the facade's `Counter`/`Histogram` handles, `Key`, `Label`) over
//! `metrics-util` (its sharded `Registry` keyed by `Key`, and its DDSketch `Summary` for
//! quantiles), with the storage and both renderings here. `prometheus-client`, which the CLI uses,
//! was not chosen: it renders OpenMetrics only (counters gain a `_total` suffix Consul's names lack),
//! has no summary type, and cannot read a histogram's values back for the JSON. Nor was
//! `metrics-exporter-prometheus`: it renders text only, from one process-wide recorder, while tests
//! and embedders run several nodes in one process — each node keeps its own registry here.

mod names;
mod raft;
mod render;
mod series;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Histogram, Key, Label};
use metrics_util::registry::Registry;
use tribune_kvstore::Command;

use crate::config::TelemetryConfig;
pub(crate) use names::{
    ACL_TOKEN_CACHE_HIT, ACL_TOKEN_CACHE_MISS, MEMBERLIST_HEALTH_SCORE, MEMBERS_CLIENTS, MEMBERS_SERVERS,
    RAFT_APPLIED_INDEX, RAFT_LAST_INDEX, REPLICATION_ACL_POLICIES_INDEX, REPLICATION_ACL_POLICIES_STATUS,
    REPLICATION_ACL_ROLES_INDEX, REPLICATION_ACL_ROLES_STATUS, REPLICATION_ACL_TOKENS_INDEX,
    REPLICATION_ACL_TOKENS_STATUS, SERVER_IS_LEADER, SESSION_TTL_ACTIVE,
};
use names::{CommandKind, TIMED_METHODS};
pub(crate) use raft::watch_raft;
use render::SeriesId;
pub(crate) use render::{GaugeReading, Snapshot};
use series::{Distribution, SeriesStorage};

/// The handles of one command kind's two timings.
struct CommandHandles {
    write: Option<Histogram>,
    fsm: Histogram,
}

/// An agent's metrics.
pub(crate) struct Telemetry {
    prefix: String,
    gauge_host: Option<String>,
    prometheus: bool,
    started: Instant,
    registry: Registry<Key, SeriesStorage>,
    raft_apply: Counter,
    rpc_request: Counter,
    raft_leader: Counter,
    raft_candidate: Counter,
    raft_follower: Counter,
    last_contact: Histogram,
    member_join: Counter,
    member_failed: Counter,
    member_left: Counter,
    user_events: Counter,
    acl_resolve: Histogram,
    session_invalidate: Histogram,
    client_rpc: Counter,
    client_rpc_failed: Counter,
    /// Indexed by `CommandKind as usize` (the order of [`CommandKind::ALL`]).
    commands: Vec<CommandHandles>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("prefix", &self.prefix)
            .field("prometheus", &self.prometheus)
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    /// Metrics nobody reads, with Consul's default settings (for a state machine built alone).
    fn default() -> Self {
        Telemetry::new(&TelemetryConfig::default(), "")
    }
}

/// A running timing: records the milliseconds since it started into its series when dropped.
#[must_use = "a timing records when it is dropped"]
pub(crate) struct Timing {
    started: Instant,
    series: [Option<Histogram>; 2],
}

impl Drop for Timing {
    fn drop(&mut self) {
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        for histogram in self.series.iter().flatten() {
            histogram.record(millis);
        }
    }
}

impl Telemetry {
    /// The metrics of the server agent `node_name` (its host name on gauges unless
    /// `disable_hostname`).
    pub(crate) fn new(config: &TelemetryConfig, node_name: &str) -> Self {
        Telemetry::build(config, node_name, true)
    }

    /// The metrics of the client agent `node_name`: its HTTP requests, its calls to servers and its
    /// LAN pool's events. The servers' series (raft, state machine, RPC, ACL, sessions) are not
    /// kept, so they are not shown either, as a Consul client shows none.
    pub(crate) fn new_client(config: &TelemetryConfig, node_name: &str) -> Self {
        Telemetry::build(config, node_name, false)
    }

    fn build(config: &TelemetryConfig, node_name: &str, server: bool) -> Self {
        let registry = Registry::new(SeriesStorage);
        let counter = |name: &'static str| {
            registry.get_or_create_counter(&Key::from_static_name(name), |c| Counter::from_arc(Arc::clone(c)))
        };
        let histogram =
            |key: Key| registry.get_or_create_histogram(&key, |h| Histogram::from_arc(Arc::clone(h)));
        let server_counter = |name| if server { counter(name) } else { Counter::noop() };
        let server_histogram = |key| if server { histogram(key) } else { Histogram::noop() };
        let (client_rpc, client_rpc_failed) = if server {
            (Counter::noop(), Counter::noop())
        } else {
            (counter(names::CLIENT_RPC), counter(names::CLIENT_RPC_FAILED))
        };
        let kinds: &[CommandKind] = if server { &CommandKind::ALL } else { &[] };
        let commands = kinds
            .iter()
            .map(|kind| {
                let series = kind.series();
                let labels: Vec<Label> = series.op.map(|op| Label::new("op", op)).into_iter().collect();
                CommandHandles {
                    write: series.write.map(|name| histogram(Key::from_static_name(name))),
                    fsm: histogram(Key::from_parts(series.fsm, labels)),
                }
            })
            .collect();
        Telemetry {
            prefix: config.metrics_prefix.clone(),
            gauge_host: (!config.disable_hostname && !node_name.is_empty()).then(|| node_name.to_owned()),
            prometheus: !config.prometheus_retention_time.is_zero(),
            started: Instant::now(),
            raft_apply: server_counter(names::RAFT_APPLY),
            rpc_request: server_counter(names::RPC_REQUEST),
            raft_leader: server_counter(names::RAFT_STATE_LEADER),
            raft_candidate: server_counter(names::RAFT_STATE_CANDIDATE),
            raft_follower: server_counter(names::RAFT_STATE_FOLLOWER),
            last_contact: server_histogram(Key::from_static_name(names::RAFT_LAST_CONTACT)),
            member_join: counter(names::SERF_MEMBER_JOIN),
            member_failed: counter(names::SERF_MEMBER_FAILED),
            member_left: counter(names::SERF_MEMBER_LEFT),
            user_events: counter(names::SERF_EVENTS),
            acl_resolve: server_histogram(Key::from_static_name(names::ACL_RESOLVE_TOKEN)),
            session_invalidate: server_histogram(Key::from_static_name(names::SESSION_TTL_INVALIDATE)),
            client_rpc,
            client_rpc_failed,
            commands,
            registry,
        }
    }

    /// Whether `?format=prometheus` is served (`prometheus_retention_time` above zero).
    pub(crate) fn prometheus_enabled(&self) -> bool {
        self.prometheus
    }

    fn command(&self, command: &Command) -> Option<&CommandHandles> {
        self.commands.get(CommandKind::of(command)? as usize)
    }

    /// `raft.apply`: `entries` more log entries applied to the state.
    pub(crate) fn entries_applied(&self, entries: u64) {
        self.raft_apply.increment(entries);
    }

    /// Times the state machine's apply of `command` (`fsm.*`), until the timing is dropped.
    pub(crate) fn time_apply(&self, command: &Command) -> Timing {
        Timing {
            started: Instant::now(),
            series: [self.command(command).map(|h| h.fsm.clone()), None],
        }
    }

    /// Times a whole write of `command` on the leader, proposal to applied (`kvs.apply`,
    /// `txn.apply`, `session.apply`, `acl.*`), until the timing is dropped.
    pub(crate) fn time_write(&self, command: &Command) -> Timing {
        Timing {
            started: Instant::now(),
            series: [self.command(command).and_then(|h| h.write.clone()), None],
        }
    }

    /// Times an HTTP request to the route `pattern` (axum's) with `method`, under Consul's two
    /// names (`http.<METHOD>.<route>` and `api.http{method,path}`); `None` for a method outside
    /// the few that are timed.
    pub(crate) fn time_http(&self, method: &str, pattern: &str) -> Option<Timing> {
        let method = TIMED_METHODS.iter().copied().find(|m| *m == method)?;
        let (dotted, path) = names::http_route_names(pattern);
        let compat = Key::from_name(format!("http.{method}.{dotted}"));
        let current = Key::from_parts(
            names::API_HTTP,
            vec![Label::new("method", method), Label::new("path", path)],
        );
        let handle = |key: &Key| {
            self.registry
                .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
        };
        Some(Timing {
            started: Instant::now(),
            series: [Some(handle(&compat)), Some(handle(&current))],
        })
    }

    /// `rpc.request`: a call arrived from another server.
    pub(crate) fn rpc_request(&self) {
        self.rpc_request.increment(1);
    }

    /// `client.rpc`: a client agent handed a request to a server; `client.rpc.failed` too when no
    /// server answered it.
    pub(crate) fn client_rpc(&self, answered: bool) {
        self.client_rpc.increment(1);
        if !answered {
            self.client_rpc_failed.increment(1);
        }
    }

    /// `rpc.cross-dc`: a request is carried to `datacenter`, one the WAN pool knows (so the
    /// label's values stay few).
    pub(crate) fn cross_dc(&self, datacenter: &str) {
        let key = Key::from_parts(
            names::RPC_CROSS_DC,
            vec![Label::new("datacenter", datacenter.to_owned())],
        );
        self.registry
            .get_or_create_counter(&key, |c| c.fetch_add(1, Ordering::Relaxed));
    }

    /// `raft.state.*`: this server took a new raft role.
    pub(crate) fn raft_role(&self, role: RaftRole) {
        match role {
            RaftRole::Leader => self.raft_leader.increment(1),
            RaftRole::Candidate => self.raft_candidate.increment(1),
            RaftRole::Follower => self.raft_follower.increment(1),
        }
    }

    /// `raft.leader.lastContact`: a follower's time since it heard from the leader.
    pub(crate) fn leader_last_contact(&self, since: Duration) {
        self.last_contact.record(since.as_secs_f64() * 1000.0);
    }

    /// `serf.member.*` and `serf.events`: the LAN pool reported a member event or a user event.
    pub(crate) fn member_event(&self, event: MemberEvent) {
        match event {
            MemberEvent::Joined => self.member_join.increment(1),
            MemberEvent::Failed => self.member_failed.increment(1),
            MemberEvent::Left => self.member_left.increment(1),
            MemberEvent::User => self.user_events.increment(1),
        }
    }

    /// Times resolving a request's token (`acl.ResolveToken`), until the timing is dropped.
    pub(crate) fn time_acl_resolve(&self) -> Timing {
        Timing {
            started: Instant::now(),
            series: [Some(self.acl_resolve.clone()), None],
        }
    }

    /// Times the leader's invalidation of an expired session (`session_ttl.invalidate`).
    pub(crate) fn time_session_invalidate(&self) -> Timing {
        Timing {
            started: Instant::now(),
            series: [Some(self.session_invalidate.clone()), None],
        }
    }

    /// Reads every series now, with the `gauges` the caller read from consensus and the pools, and
    /// `totals`, counters kept elsewhere (the ACL cache's) read at the same moment.
    pub(crate) fn snapshot(&self, gauges: Vec<GaugeReading>, totals: Vec<(&'static str, u64)>) -> Snapshot {
        let now = Instant::now();
        let id = |key: &Key| {
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            SeriesId {
                name: key.name().to_owned(),
                labels,
            }
        };
        let mut counters = Vec::new();
        self.registry.visit_counters(|key, value: &Arc<AtomicU64>| {
            counters.push((id(key), value.load(Ordering::Relaxed)));
        });
        let mut samples = Vec::new();
        self.registry
            .visit_histograms(|key, distribution: &Arc<Distribution>| {
                samples.push((id(key), distribution.stats_at(now)));
            });
        counters.extend(totals.into_iter().map(|(name, total)| {
            (
                SeriesId {
                    name: name.to_owned(),
                    labels: Vec::new(),
                },
                total,
            )
        }));
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            taken_at: SystemTime::now(),
            uptime: now.saturating_duration_since(self.started),
            prefix: self.prefix.clone(),
            gauge_host: self.gauge_host.clone(),
            gauges,
            counters,
            samples,
        }
    }
}

/// What `serf.member.*` and `serf.events` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberEvent {
    /// A member joined.
    Joined,
    /// A member failed.
    Failed,
    /// A member left.
    Left,
    /// A user event arrived.
    User,
}

/// The raft roles `raft.state.*` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RaftRole {
    /// Became leader.
    Leader,
    /// Started an election.
    Candidate,
    /// Became a follower (a learner counts as one).
    Follower,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(prometheus_retention_time: Duration) -> Telemetry {
        let config = TelemetryConfig {
            prometheus_retention_time,
            disable_hostname: true,
            metrics_prefix: "consul".into(),
        };
        Telemetry::new(&config, "node-1")
    }

    fn set(key: &str) -> Command {
        Command::KvSet {
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn recorded_series_render_as_consul_s_json() {
        let telemetry = telemetry(Duration::from_secs(60));
        assert!(telemetry.prometheus_enabled());
        for key in ["a", "b", "c"] {
            drop(telemetry.time_write(&set(key)));
            drop(telemetry.time_apply(&set(key)));
        }
        telemetry.entries_applied(3);
        drop(telemetry.time_http("GET", "/v1/kv/{*key}"));
        assert!(telemetry.time_http("BREW", "/v1/kv/{*key}").is_none());
        telemetry.cross_dc("dc2");
        telemetry.member_event(MemberEvent::Failed);
        let snapshot = telemetry.snapshot(
            vec![GaugeReading {
                name: SERVER_IS_LEADER,
                value: 1.0,
            }],
            vec![(ACL_TOKEN_CACHE_HIT, 4)],
        );
        let json = serde_json::to_value(snapshot.json()).unwrap();
        for field in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
            assert!(json.get(field).is_some(), "no {field} in {json}");
        }
        let find = |list: &str, name: &str| {
            json[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {list}: {json}"))
        };
        let applied = find("Counters", "consul.raft.apply");
        assert_eq!(
            (applied["Count"].as_u64(), applied["Sum"].as_f64()),
            (Some(3), Some(3.0))
        );
        let kvs = find("Samples", "consul.kvs.apply");
        assert_eq!(kvs["Count"], 3);
        for field in ["Rate", "Sum", "Min", "Max", "Mean", "Stddev"] {
            assert!(kvs[field].is_number(), "{field} in {kvs}");
        }
        assert!(kvs["Labels"].as_object().unwrap().is_empty());
        let fsm_kvs = |op: &str| {
            json["Samples"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Name"] == "consul.fsm.kvs" && m["Labels"]["op"] == op)
                .map(|m| m["Count"].as_u64().unwrap())
        };
        assert_eq!((fsm_kvs("set"), fsm_kvs("cas")), (Some(3), Some(0)));
        assert_eq!(find("Samples", "consul.http.GET.v1.kv._")["Count"], 1);
        let api = find("Samples", "consul.api.http");
        assert_eq!(
            api["Labels"],
            serde_json::json!({"method": "GET", "path": "v1_kv_"})
        );
        assert_eq!(
            find("Counters", "consul.rpc.cross-dc")["Labels"]["datacenter"],
            "dc2"
        );
        assert_eq!(find("Gauges", "consul.server.isLeader")["Value"], 1.0);
        assert_eq!(find("Counters", "consul.serf.member.failed")["Count"], 1);
        assert_eq!(find("Counters", "consul.serf.member.join")["Count"], 0);
        assert_eq!(find("Counters", "consul.acl.token.cache_hit")["Count"], 4);
        // Series nothing fed are listed at zero, as Prometheus expects of a known series.
        assert_eq!(find("Samples", "consul.txn.apply")["Count"], 0);
    }

    #[test]
    fn the_same_reading_renders_as_prometheus_text() {
        let telemetry = telemetry(Duration::from_secs(60));
        for key in ["a", "b"] {
            drop(telemetry.time_write(&set(key)));
        }
        telemetry.entries_applied(2);
        drop(telemetry.time_http("PUT", "/v1/kv/{*key}"));
        let text = telemetry
            .snapshot(
                vec![GaugeReading {
                    name: RAFT_APPLIED_INDEX,
                    value: 7.0,
                }],
                vec![(ACL_TOKEN_CACHE_MISS, 2)],
            )
            .prometheus();
        for line in [
            "# TYPE consul_raft_apply counter",
            "consul_raft_apply 2",
            "# TYPE consul_kvs_apply summary",
            "consul_kvs_apply_count 2",
            "# TYPE consul_raft_applied_index gauge",
            "consul_raft_applied_index 7",
            "# TYPE consul_http_PUT_v1_kv__ summary",
            "consul_api_http_count{method=\"PUT\",path=\"v1_kv_\"} 1",
            "# TYPE consul_acl_token_cache_miss counter",
            "consul_acl_token_cache_miss 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("# HELP consul_kvs_apply "));
        assert!(text.contains("consul_kvs_apply{quantile=\"0.99\"} "));
        // Every family's HELP and TYPE come once, before its samples.
        let types = text
            .lines()
            .filter(|l| *l == "# TYPE consul_kvs_apply summary")
            .count();
        assert_eq!(types, 1);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(!series.is_empty() && !series.contains(' '), "{line}");
        }
    }

    #[test]
    fn the_host_name_goes_on_gauges_unless_disabled_and_the_prefix_is_configurable() {
        let config = TelemetryConfig {
            prometheus_retention_time: Duration::ZERO,
            disable_hostname: false,
            metrics_prefix: "tribune".into(),
        };
        let telemetry = Telemetry::new(&config, "node-1");
        assert!(!telemetry.prometheus_enabled());
        telemetry.entries_applied(1);
        let json = serde_json::to_value(
            telemetry
                .snapshot(
                    vec![GaugeReading {
                        name: SERVER_IS_LEADER,
                        value: 0.0,
                    }],
                    Vec::new(),
                )
                .json(),
        )
        .unwrap();
        assert_eq!(json["Gauges"][0]["Name"], "tribune.node-1.server.isLeader");
        assert!(
            json["Counters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["Name"] == "tribune.raft.apply")
        );
    }
}
