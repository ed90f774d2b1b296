//! Consul's watches: blocking reads of one view (a key, a prefix, the services, the nodes, a
//! service's instances, checks, user events) that hand every change to a handler — a script with the
//! JSON on stdin, or an HTTP endpoint — the building block of health alerts.
//!
//! - `view.rs` — the watch types, their request paths, what a handler sees, and when a result is a
//!   change (shared with `tribune watch`);
//! - `handler.rs` — running a script or calling an HTTP endpoint;
//! - `plan.rs` — a `watches` entry of the agent's configuration;
//! - this file — the agent's loop for each configured watch, reading through the agent's own API
//!   (`LocalApi`), so ACLs, `?dc=` and blocking behave as for any client.
//!
//! It is not the `tribune watch` command (src/cli/watch.rs), which reads over HTTP and ends when
//! its handler fails; an agent's watch logs a failed handler and keeps watching.

mod handler;
mod plan;
mod view;

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use handler::{Handler, HttpHandler};
pub use plan::WatchPlan;
pub use view::{View, ViewParams, WatchError, is_change};

use crate::local_api::SharedLocalApi;
use crate::paths::add_query_param;

/// How long to wait before reading again after an error: doubling from 1 s up to 32 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5))
}

/// The configured watches an agent runs: started with the agent, replaced as a whole when a reload
/// brings another list, as Consul's reload stops its watch plans and starts the new ones.
#[derive(Default)]
pub(crate) struct ConfiguredWatches {
    running: Mutex<Option<Running>>,
}

/// What the agent started its watches with, and their tasks.
struct Running {
    plans: Vec<WatchPlan>,
    api: SharedLocalApi,
    stop: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ConfiguredWatches {
    /// Starts one task per watch of `plans`, each reading through `api` until `stop`.
    pub(crate) fn start(&self, plans: Vec<WatchPlan>, api: SharedLocalApi, stop: watch::Receiver<bool>) {
        let tasks = spawn(&plans, &api, &stop);
        let previous = self.running.lock().replace(Running {
            plans,
            api,
            stop,
            tasks,
        });
        if let Some(previous) = previous {
            previous.tasks.iter().for_each(JoinHandle::abort);
        }
    }

    /// Runs `plans` instead of the watches running now, unless they are the same list. Returns
    /// whether the watches were replaced (never before [`ConfiguredWatches::start`]).
    pub(crate) fn replace(&self, plans: &[WatchPlan]) -> bool {
        let mut running = self.running.lock();
        let Some(current) = running.as_mut() else {
            return false;
        };
        if current.plans == plans {
            return false;
        }
        // A watch stopped mid-read or mid-handler is simply dropped: the new list starts afresh.
        current.tasks.iter().for_each(JoinHandle::abort);
        current.plans = plans.to_vec();
        current.tasks = spawn(&current.plans, &current.api, &current.stop);
        true
    }

    /// How many watches run now.
    pub(crate) fn count(&self) -> usize {
        self.running.lock().as_ref().map_or(0, |r| r.tasks.len())
    }
}

fn spawn(plans: &[WatchPlan], api: &SharedLocalApi, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    plans
        .iter()
        .map(|plan| tokio::spawn(run(plan.clone(), api.clone(), stop.clone())))
        .collect()
}

/// The path of one read of `plan`'s view, blocking on `last_index` when there is one.
fn read_path(plan: &WatchPlan, last_index: u64) -> String {
    let mut path = plan.view.path();
    if let Some(datacenter) = &plan.datacenter {
        path = add_query_param(&path, "dc", datacenter);
    }
    if last_index > 0 {
        path = add_query_param(&path, "index", &last_index.to_string());
    }
    path
}

async fn run(plan: WatchPlan, api: SharedLocalApi, mut stop: watch::Receiver<bool>) {
    let mut last: Option<Value> = None;
    let mut last_index: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let path = read_path(&plan, last_index);
        let answer = tokio::select! {
            answer = api.call(Method::GET, &path, plan.token.as_deref(), Bytes::new()) => answer,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let read = answer.map_err(|e| e.to_string()).and_then(|answer| {
            let index = answer.index().unwrap_or(0);
            tracing::debug!(path = %path, status = %answer.status, index, "watch: read");
            plan.view
                .result(answer.status, &answer.body, last_index)
                .map(|result| (result, index))
                .map_err(|e| e.to_string())
        });
        let (result, index) = match read {
            Ok(read) => read,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(path = %path, %error, "watch: reading failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff(failures)) => continue,
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        };
        failures = 0;
        let changed = is_change(last.as_ref(), last_index, &result, index);
        // An index that went backwards (a restored or new server) starts over without blocking.
        last_index = if index < last_index { 0 } else { index };
        if !changed {
            continue;
        }
        if let Err(error) = plan.handler.run(&result, index).await {
            tracing::error!(path = %path, %error, "watch: the handler failed");
        }
        last = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_carry_the_datacenter_and_block_after_the_first() {
        let plan = WatchPlan::parse(
            &serde_json::json!({"type": "key", "key": "a/b", "datacenter": "dc2", "args": ["true"]}),
        )
        .unwrap();
        assert_eq!(read_path(&plan, 0), "/v1/kv/a/b?dc=dc2");
        assert_eq!(read_path(&plan, 7), "/v1/kv/a/b?dc=dc2&index=7");
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(32));
    }

    #[tokio::test]
    async fn a_reload_replaces_the_watches_only_when_the_list_changed() {
        let plan = |key: &str| {
            WatchPlan::parse(&serde_json::json!({"type": "key", "key": key, "args": ["true"]})).unwrap()
        };
        let (stop_all, stop) = watch::channel(false);
        let watches = ConfiguredWatches::default();
        assert!(
            !watches.replace(&[plan("a")]),
            "nothing runs before the agent starts them"
        );
        // An API with no router answers every read with an error: the watches retry until stopped.
        let api: SharedLocalApi = std::sync::Arc::new(crate::local_api::RouterCell::default());
        watches.start(vec![plan("a")], api, stop);
        assert_eq!(watches.count(), 1);
        assert!(!watches.replace(&[plan("a")]), "the same list keeps its watches");
        assert!(watches.replace(&[plan("b"), plan("c")]));
        assert_eq!(watches.count(), 2);
        assert!(watches.replace(&[]));
        assert_eq!(watches.count(), 0);
        stop_all.send_replace(true);
    }
}
