//! The seam between the local state and the check runners of `src/checks`: starts a runner for
//! each registered check, reports its results into the state, and restarts a TTL check's timer
//! when the API updates it.
//!
//! It decides nothing about checks itself; a check the runners refuse to start is registered
//! without one (and keeps the status it was registered with).

use std::sync::{Arc, Weak};

use tribune_kvstore::CheckStatus;

use super::definition::CheckSpec;
use super::state::{CheckStarter, LocalState, RunningCheck};
use crate::checks::{CheckDefinition, CheckSink, RunnerEnv, RunnerHandle};

/// Starts runners with the agent's environment.
pub(crate) struct Runners {
    pub(crate) env: RunnerEnv,
}

struct StateSink(Weak<LocalState>);

impl CheckSink for StateSink {
    fn update(&self, check_id: &str, status: CheckStatus, output: String) {
        if let Some(state) = self.0.upgrade() {
            // The check may have been deregistered since the runner produced this result.
            let _ = state.update_check(check_id, status, output);
        }
    }
}

struct Running(RunnerHandle);

impl RunningCheck for Running {
    fn ttl_set_status(&self, status: CheckStatus, output: &str) -> bool {
        self.0.ttl_set_status(status, output).is_some()
    }
}

impl CheckStarter for Runners {
    fn start(&self, spec: &CheckSpec, state: Weak<LocalState>) -> Option<Arc<dyn RunningCheck>> {
        if spec.raw.is_null() || spec.check.is_maintenance() {
            return None;
        }
        let service = (!spec.check.service_id.is_empty())
            .then_some((spec.check.service_id.as_str(), spec.check.service_name.as_str()));
        let mut definition = match CheckDefinition::from_json(&spec.raw, service, spec.index) {
            Ok(definition) => definition,
            Err(e) => {
                tracing::warn!(check = %spec.check.check_id, error = %e, "check not started");
                return None;
            }
        };
        // The state's ID is the one the catalog knows; the runner reports under it.
        definition.id = spec.check.check_id.clone();
        let sink: Arc<dyn CheckSink> = Arc::new(StateSink(state));
        match crate::checks::start(&definition, &self.env, sink) {
            Ok(handle) => Some(Arc::new(Running(handle))),
            Err(e) => {
                tracing::warn!(check = %spec.check.check_id, error = %e, "check not started");
                None
            }
        }
    }
}
