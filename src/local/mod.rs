//! The agent's local state and its anti-entropy, as Consul's agent has them: the services and
//! checks registered on this agent (through `/v1/agent/service/register`, `/v1/agent/check/register`
//! or configuration files), kept by the agent itself — on a server and on a client agent alike —
//! and synced to the catalog in the background.
//!
//! - `model.rs` — the records and their `/v1/agent/*` JSON;
//! - `definition.rs` — reading service and check definitions, with Consul's defaults;
//! - `state.rs` — [`LocalState`]: entries with in-sync flags, tombstones, maintenance, deferred
//!   output, reaping;
//! - `anti_entropy.rs` — the pure sync plan and the loop that applies it through the agent's own API;
//! - `runners.rs` — the seam to the check runners of `src/checks`.
//!
//! It is not the HTTP layer (`http/agent_local.rs`), nor the catalog (the servers' replicated
//! state), nor the leader's reconciliation of LAN members (`node/reconcile.rs`), which owns the
//! `serfHealth` checks and the `consul` service that anti-entropy leaves alone.

mod anti_entropy;
mod definition;
mod model;
mod runners;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use definition::{CheckSpec, parse_check, parse_service};
pub(crate) use model::{AgentServiceJson, LocalCheck, LocalService};
pub(crate) use state::{LocalState, StateError};

use crate::config::Config;
use crate::local_api::LocalApi;

/// What a running agent (server or client) keeps of its own services and checks.
pub(crate) struct LocalAgent {
    pub(crate) state: Arc<LocalState>,
    pub(crate) node_name: String,
    pub(crate) datacenter: String,
    /// Whether script checks may be registered (Consul's `enable_script_checks`).
    pub(crate) enable_script_checks: bool,
}

impl LocalAgent {
    /// The agent's state, with check runners that call back into `api`, loaded with the
    /// configuration's services and checks (their runners started).
    pub(crate) fn new(config: &Config, api: Arc<dyn LocalApi>) -> Self {
        let env = crate::checks::RunnerEnv {
            enable_script_checks: config.enable_script_checks || config.enable_local_script_checks,
            local_api: api,
            node_name: config.node_name.clone(),
        };
        let state = LocalState::new(
            Arc::new(tokio::time::Instant::now),
            config.local.check_update_interval,
            Some(Arc::new(runners::Runners { env })),
        );
        let agent = LocalAgent {
            state,
            node_name: config.node_name.clone(),
            datacenter: config.datacenter.clone(),
            enable_script_checks: config.enable_script_checks || config.enable_local_script_checks,
        };
        // Resolving the configuration checked every definition; one that fails here is skipped.
        for service in &config.local.services {
            match parse_service(service) {
                Ok(spec) => agent.state.add_service(spec, false),
                Err(e) => tracing::warn!(error = %e, "service from the configuration not registered"),
            }
        }
        for check in &config.local.checks {
            let added = parse_check(check)
                .map_err(|e| e.to_string())
                .and_then(|spec| agent.state.add_check(spec).map_err(|e| e.to_string()));
            if let Err(e) = added {
                tracing::warn!(error = %e, "check from the configuration not registered");
            }
        }
        agent
    }

    /// Starts anti-entropy: syncs through `api` as node `config.node_name` at `address`, under
    /// the service's token or `agent_token`, until `stop`.
    pub(crate) fn spawn_sync(
        &self,
        config: &Config,
        api: Arc<dyn LocalApi>,
        address: String,
        agent_token: Box<dyn Fn() -> Option<String> + Send + Sync>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let target = anti_entropy::SyncTarget {
            api,
            node: config.node_name.clone(),
            address,
            agent_token,
        };
        let timing = anti_entropy::Timing {
            interval: config.local.sync_interval,
            jitter: Box::new(stagger),
        };
        tokio::spawn(anti_entropy::run(Arc::clone(&self.state), target, timing, stop))
    }
}

/// A random wait of up to an eighth of `interval`, so agents started together spread their syncs.
fn stagger(interval: Duration) -> Duration {
    use rand::Rng as _;
    let most = u64::try_from((interval / 8).as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=most))
}
