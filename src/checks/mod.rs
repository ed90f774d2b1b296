//! The health checks an agent runs itself: a check's definition as Consul's clients and config files
//! write it ([`CheckDefinition::from_json`]), and the runners that probe what it names and report each
//! result to a [`CheckSink`] ([`start`]).
//!
//! Kinds, as Consul has them: `ttl` (critical with "TTL expired" unless touched within the TTL), `http`
//! (2xx passing, 429 warning, anything else critical), `tcp` (a connect), `udp` (a datagram; a reply or
//! silence passes, an error fails), `script` (exit 0 passing, 1 warning, other critical; refused unless
//! the agent enables script checks), `grpc` (`grpc.health.v1.Health/Check` over HTTP/2, SERVING passes)
//! and `alias` (the aggregate of another node's or service's checks, read with blocking queries through
//! the agent's own API). Results pass through Consul's `success_before_passing` /
//! `failures_before_warning` / `failures_before_critical` counters ([`status::StatusCounter`]) before
//! they reach the sink; outputs are bounded as Consul bounds them (4 KiB by default).
//!
//! The protocol logic is pure and tested on its own (status mapping, counters, truncation, the gRPC
//! frames); the runners are thin tokio tasks that sleep with `tokio::time`, so a test may pause the clock.
//!
//! What it is not: the agent's local state (who owns which check, what the catalog is told) lives with
//! the caller, which keeps each [`RunnerHandle`] and drops it to stop the check. No Docker, H2PING or
//! OS-service checks, no TCP+TLS, and TLS checks trust the Mozilla roots only (not an agent CA file).
//! `HttpProbe` also sends the agent's watch webhooks (src/watches).

mod alias;
mod definition;
mod grpc;
mod http;
mod runner;
mod script;
mod socket;
pub(crate) mod status;
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use http::HttpProbe;
pub(crate) use runner::{RunnerHandle, start};
pub(crate) use tribune_kvstore::CheckStatus;

use crate::local_api::LocalApi;

/// Consul's `DefaultBufSize`: the most output a check keeps unless configured lower.
pub(crate) const DEFAULT_OUTPUT_MAX_SIZE: usize = 4 * 1024;
/// Consul's `MinInterval`: interval checks never run more often than this.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The timeout of an HTTP, TCP, UDP or gRPC check without one.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of a script check without one (Consul gives scripts longer).
pub(crate) const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A check as registered: what to probe, how often, and the bookkeeping the catalog shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckDefinition {
    /// The check's ID on its node.
    pub(crate) id: String,
    /// Human-readable name.
    pub(crate) name: String,
    /// The service instance the check belongs to; `None` for a node-level check.
    pub(crate) service_id: Option<String>,
    /// Free text set by whoever registered it.
    pub(crate) notes: String,
    /// The state to register with; `None` registers it critical, as Consul does.
    pub(crate) status: Option<CheckStatus>,
    /// What the check probes.
    pub(crate) kind: CheckKind,
    /// How often an interval check runs (as given; the runner never runs more often than
    /// [`MIN_INTERVAL`]).
    pub(crate) interval: Option<Duration>,
    /// How long one run may take (a default per kind when `None`).
    pub(crate) timeout: Option<Duration>,
    /// How long the check may stay critical before the agent deregisters its service.
    pub(crate) deregister_critical_service_after: Option<Duration>,
    /// Consecutive good results before a passing (or warning) result is reported; 0 and 1 report the
    /// first.
    pub(crate) success_before_passing: u32,
    /// Consecutive failures before a critical result is reported; 0 and 1 report the first.
    pub(crate) failures_before_critical: u32,
    /// Consecutive failures before a failure is reported as a warning (Consul's
    /// `failures_before_warning`; 0 means the same as `failures_before_critical`).
    pub(crate) failures_before_warning: u32,
    /// The check's own `OutputMaxSize`: it can only lower the agent's limit.
    pub(crate) output_max_size: Option<usize>,
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckKind {
    /// Someone must report within `ttl` (`/v1/agent/check/pass/...`), else the check goes critical.
    Ttl {
        /// The time to live.
        ttl: Duration,
    },
    /// An HTTP(S) request.
    Http {
        /// The URL.
        url: String,
        /// The method (`GET` when empty).
        method: String,
        /// Request headers (`Host` sets the request's host).
        header: BTreeMap<String, Vec<String>>,
        /// Request body.
        body: String,
        /// Accept any certificate.
        tls_skip_verify: bool,
        /// The server name to verify (and send as SNI) instead of the URL's host.
        tls_server_name: String,
        /// Report a redirect's own status instead of following it.
        disable_redirects: bool,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A UDP datagram to `host:port`.
    Udp {
        /// `host:port`.
        address: String,
    },
    /// A command run without a shell.
    Script {
        /// The program and its arguments.
        args: Vec<String>,
    },
    /// The gRPC health protocol against `host:port[/service]`.
    Grpc {
        /// `host:port`, optionally followed by `/service`.
        target: String,
        /// Speak TLS.
        use_tls: bool,
        /// Accept any certificate.
        tls_skip_verify: bool,
        /// The server name to verify instead of the target's host.
        tls_server_name: String,
    },
    /// The health of another node or service instance.
    Alias {
        /// The node; `None` for this agent's node.
        node: Option<String>,
        /// The service instance on that node; `None` aliases the node's own checks.
        service_id: Option<String>,
    },
}

impl CheckDefinition {
    /// The most output a result keeps under an agent limit of `agent_limit` bytes: the check's own
    /// `OutputMaxSize` when it is lower, as Consul has it.
    pub(crate) fn output_limit(&self, agent_limit: usize) -> usize {
        let agent_limit = if agent_limit == 0 {
            DEFAULT_OUTPUT_MAX_SIZE
        } else {
            agent_limit
        };
        match self.output_max_size {
            Some(own) if own > 0 && own < agent_limit => own,
            _ => agent_limit,
        }
    }
}

/// Where a runner reports each result (after the counters).
pub(crate) trait CheckSink: Send + Sync + 'static {
    /// The check `check_id` is now `status` with `output`. Called from the runner's task; it must not
    /// block for long.
    fn update(&self, check_id: &str, status: CheckStatus, output: String);
}

/// What runners need from the agent.
#[derive(Clone)]
pub(crate) struct RunnerEnv {
    /// Whether script checks may run (Consul's `enable_script_checks` for the check's source).
    pub(crate) enable_script_checks: bool,
    /// The agent's own HTTP API, for alias checks.
    pub(crate) local_api: Arc<dyn LocalApi>,
    /// This agent's node name (the node of an alias check without `AliasNode`).
    pub(crate) node_name: String,
}
