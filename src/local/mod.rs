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

use parking_lot::Mutex;
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
    /// Whether script checks may be registered through the HTTP API (Consul's
    /// `enable_script_checks`; `enable_local_script_checks` allows only the configuration's).
    pub(crate) enable_script_checks: bool,
    /// The services and checks the configuration defined, which a reload replaces; those
    /// registered through the API stay.
    from_config: Mutex<ConfigDefined>,
    /// Where a reload reads the configuration; `None` reloads the one the agent started with.
    reload_source: Mutex<Option<ReloadSource>>,
    /// The configuration the agent started with.
    started_with: Config,
    /// The configuration's `watches`, which a reload replaces.
    pub(crate) watches: crate::watches::ConfiguredWatches,
}

/// Reads the configuration afresh for a reload, or says why it cannot.
pub type ReloadSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The IDs of what the configuration defined.
#[derive(Debug, Default)]
struct ConfigDefined {
    services: Vec<String>,
    checks: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration could not be read.
    #[error("{0}")]
    Source(String),
    /// A service definition of the configuration cannot be used.
    #[error("service {index} of the configuration: {reason}")]
    Service {
        /// Its position among the configuration's services.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A check definition of the configuration cannot be used.
    #[error("check {index} of the configuration: {reason}")]
    Check {
        /// Its position among the configuration's checks.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
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
            enable_script_checks: config.enable_script_checks,
            from_config: Mutex::default(),
            reload_source: Mutex::default(),
            started_with: config.clone(),
            watches: crate::watches::ConfiguredWatches::default(),
        };
        // Resolving the configuration checked every definition; one that fails here is skipped.
        let mut defined = ConfigDefined::default();
        for service in &config.local.services {
            match parse_service(service) {
                Ok(spec) => {
                    defined.services.push(spec.service.id.clone());
                    agent.state.add_service(spec, false);
                }
                Err(e) => tracing::warn!(error = %e, "service from the configuration not registered"),
            }
        }
        for check in &config.local.checks {
            let added = parse_check(check).map_err(|e| e.to_string()).and_then(|spec| {
                let id = spec.check.check_id.clone();
                agent.state.add_check(spec).map_err(|e| e.to_string())?;
                defined.checks.push(id);
                Ok(())
            });
            if let Err(e) = added {
                tracing::warn!(error = %e, "check from the configuration not registered");
            }
        }
        *agent.from_config.lock() = defined;
        agent
    }

    /// Sets where [`LocalAgent::reload_from_source`] reads the configuration.
    pub(crate) fn set_reload_source(&self, source: ReloadSource) {
        *self.reload_source.lock() = Some(source);
    }

    /// Reads the configuration from the reload source and applies it ([`LocalAgent::reload`]).
    pub(crate) fn reload_from_source(&self) -> Result<(), ReloadError> {
        let source = self.reload_source.lock().clone();
        let config = match source {
            Some(read) => read().map_err(ReloadError::Source)?,
            None => self.started_with.clone(),
        };
        self.reload(&config)
    }

    /// Replaces what the configuration defined with `config`'s services, checks and watches, as
    /// Consul's reload does: definitions gone from the files are deregistered, the others
    /// (re)registered; what was registered through the API is kept; a changed `watches` list
    /// replaces the running watches. Every definition is read first, so a bad one changes nothing.
    pub(crate) fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        let services = config
            .local
            .services
            .iter()
            .enumerate()
            .map(|(index, value)| {
                parse_service(value).map_err(|e| ReloadError::Service {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let checks = config
            .local
            .checks
            .iter()
            .enumerate()
            .map(|(index, value)| {
                parse_check(value).map_err(|e| ReloadError::Check {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut defined = self.from_config.lock();
        let kept_service = |id: &String| services.iter().any(|s| &s.service.id == id);
        let kept_check = |id: &String| checks.iter().any(|c| &c.check.check_id == id);
        for id in defined.checks.iter().filter(|id| !kept_check(id)) {
            // Already gone (deregistered through the API) is what a reload wants.
            let _ = self.state.remove_check(id);
        }
        for id in defined.services.iter().filter(|id| !kept_service(id)) {
            let _ = self.state.remove_service(id);
        }
        let mut now_defined = ConfigDefined::default();
        for spec in services {
            now_defined.services.push(spec.service.id.clone());
            self.state.add_service(spec, true);
        }
        for spec in checks {
            let id = spec.check.check_id.clone();
            match self.state.add_check(spec) {
                Ok(()) => now_defined.checks.push(id),
                Err(e) => {
                    tracing::warn!(check = %id, error = %e, "check from the configuration not registered")
                }
            }
        }
        *defined = now_defined;
        if self.watches.replace(&config.local.watches) {
            tracing::info!(
                watches = self.watches.count(),
                "reload replaced the configured watches"
            );
        }
        Ok(())
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
