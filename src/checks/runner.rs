//! The tasks that run checks: an interval loop around one probe, the TTL timer, and the handle that
//! stops either when dropped.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng as _;
use tokio::sync::Notify;

use super::status::{StatusCounter, truncate_head};
use super::{
    CheckDefinition, CheckKind, CheckSink, CheckStatus, DEFAULT_OUTPUT_MAX_SIZE, DEFAULT_SCRIPT_TIMEOUT,
    DEFAULT_TIMEOUT, MIN_INTERVAL, RunnerEnv, alias, grpc, http, script, socket,
};

/// Why a check could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StartError {
    /// A script check on an agent that does not run them (Consul's text for a check registered
    /// through the API).
    #[error(
        "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
    )]
    ScriptsDisabled,
    /// Not called from within a tokio runtime.
    #[error("check runners need a tokio runtime")]
    NoRuntime,
}

/// One run's result before the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: CheckStatus,
    pub(crate) output: String,
    /// Whether the result goes through the counters. Consul reports a script's timeout directly.
    pub(crate) counted: bool,
}

impl Outcome {
    pub(crate) fn counted(status: CheckStatus, output: String) -> Self {
        Outcome {
            status,
            output,
            counted: true,
        }
    }
}

/// A running check; dropping it stops the check (its task is aborted, a running script killed).
pub(crate) struct RunnerHandle {
    task: tokio::task::AbortHandle,
    ttl: Option<Arc<TtlState>>,
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("ttl", &self.ttl.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunnerHandle {
    /// Restarts a TTL check's timer (someone reported in); nothing for other kinds.
    #[cfg(test)]
    fn ttl_touch(&self) {
        if let Some(ttl) = &self.ttl {
            ttl.touched.notify_one();
        }
    }

    /// Consul's `CheckTTL.SetStatus`: bounds `output` (the first bytes and ` ... (captured N of M
    /// bytes)`), reports it to the sink, remembers it for the "TTL expired" output and restarts the
    /// timer. The output as reported; `None` when the check is not a TTL check (Consul's
    /// `CheckID "x" does not have associated TTL`).
    pub(crate) fn ttl_set_status(&self, status: CheckStatus, output: &str) -> Option<String> {
        let ttl = self.ttl.as_ref()?;
        let output = truncate_head(output, ttl.output_limit);
        ttl.sink.update(&ttl.check_id, status, output.clone());
        *ttl.last_output.lock() = output.clone();
        ttl.touched.notify_one();
        Some(output)
    }

    /// Whether the check's task has ended (it only ends when aborted).
    #[cfg(test)]
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

struct TtlState {
    check_id: String,
    sink: Arc<dyn CheckSink>,
    output_limit: usize,
    last_output: Mutex<String>,
    touched: Notify,
}

/// Starts running `def`, reporting to `sink`. Script checks are refused unless
/// `env.enable_script_checks`. An interval check's first run comes after a random part of its interval
/// (Consul's stagger, so that checks registered together do not run together); a TTL check's timer
/// starts now; an alias check reads its target at once. The caller registers the check with
/// [`CheckDefinition::initial_status`] first.
pub(crate) fn start(
    def: &CheckDefinition,
    env: &RunnerEnv,
    sink: Arc<dyn CheckSink>,
) -> Result<RunnerHandle, StartError> {
    let interval = def.interval.unwrap_or(MIN_INTERVAL).max(MIN_INTERVAL);
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    let stagger = Duration::from_nanos(rand::rng().random_range(0..nanos.max(1)));
    start_with_stagger(def, env, sink, stagger)
}

/// [`start`] with the first run of an interval check after `first_run` (tests pass zero).
pub(crate) fn start_with_stagger(
    def: &CheckDefinition,
    env: &RunnerEnv,
    sink: Arc<dyn CheckSink>,
    first_run: Duration,
) -> Result<RunnerHandle, StartError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
    let output_limit = def.output_limit(DEFAULT_OUTPUT_MAX_SIZE);
    let check_id = def.id.clone();
    let interval = def.interval.unwrap_or(MIN_INTERVAL).max(MIN_INTERVAL);
    let timeout = |default: Duration| def.timeout.filter(|t| !t.is_zero()).unwrap_or(default);
    let probe = match &def.kind {
        CheckKind::Ttl { ttl } => {
            let state = Arc::new(TtlState {
                check_id,
                sink,
                output_limit,
                last_output: Mutex::new(String::new()),
                touched: Notify::new(),
            });
            let task = runtime.spawn(run_ttl(*ttl, state.clone()));
            return Ok(RunnerHandle {
                task: task.abort_handle(),
                ttl: Some(state),
            });
        }
        CheckKind::Alias { node, service_id } => {
            let target = alias::AliasTarget {
                node: node.clone(),
                service_id: service_id.clone().unwrap_or_default(),
                local_node: env.node_name.clone(),
                own_check_id: check_id.clone(),
            };
            let task = runtime.spawn(alias::run(target, env.local_api.clone(), check_id, sink));
            return Ok(RunnerHandle {
                task: task.abort_handle(),
                ttl: None,
            });
        }
        CheckKind::Script { args } => {
            if !env.enable_script_checks {
                return Err(StartError::ScriptsDisabled);
            }
            Probe::Script(script::ScriptProbe {
                args: args.clone(),
                timeout: timeout(DEFAULT_SCRIPT_TIMEOUT),
                output_limit,
            })
        }
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            tls_server_name,
            disable_redirects,
        } => Probe::Http(Box::new(http::HttpProbe {
            url: url.clone(),
            method: method.clone(),
            header: header.clone(),
            body: body.clone(),
            tls_skip_verify: *tls_skip_verify,
            tls_server_name: tls_server_name.clone(),
            disable_redirects: *disable_redirects,
            timeout: timeout(DEFAULT_TIMEOUT),
            output_limit,
        })),
        CheckKind::Tcp { address } => Probe::Tcp {
            address: address.clone(),
            timeout: timeout(DEFAULT_TIMEOUT),
        },
        CheckKind::Udp { address } => Probe::Udp {
            address: address.clone(),
            timeout: timeout(DEFAULT_TIMEOUT),
        },
        CheckKind::Grpc {
            target,
            use_tls,
            tls_skip_verify,
            tls_server_name,
        } => Probe::Grpc(grpc::GrpcProbe {
            target: target.clone(),
            use_tls: *use_tls,
            tls_skip_verify: *tls_skip_verify,
            tls_server_name: tls_server_name.clone(),
            timeout: timeout(DEFAULT_TIMEOUT),
        }),
    };
    let counter = StatusCounter::new(
        def.success_before_passing,
        def.failures_before_warning,
        def.failures_before_critical,
    );
    let task = runtime.spawn(run_interval(probe, first_run, interval, counter, check_id, sink));
    Ok(RunnerHandle {
        task: task.abort_handle(),
        ttl: None,
    })
}

/// What an interval check does on each run.
enum Probe {
    Http(Box<http::HttpProbe>),
    Tcp { address: String, timeout: Duration },
    Udp { address: String, timeout: Duration },
    Script(script::ScriptProbe),
    Grpc(grpc::GrpcProbe),
}

impl Probe {
    async fn run(&self) -> Outcome {
        match self {
            Probe::Http(p) => p.run().await,
            Probe::Tcp { address, timeout } => socket::tcp(address, *timeout).await,
            Probe::Udp { address, timeout } => socket::udp(address, *timeout).await,
            Probe::Script(p) => p.run().await,
            Probe::Grpc(p) => p.run().await,
        }
    }
}

async fn run_interval(
    probe: Probe,
    first_run: Duration,
    interval: Duration,
    mut counter: StatusCounter,
    check_id: String,
    sink: Arc<dyn CheckSink>,
) {
    tokio::time::sleep(first_run).await;
    loop {
        let outcome = probe.run().await;
        if !outcome.counted {
            sink.update(&check_id, outcome.status, outcome.output);
        } else if let Some(status) = counter.observe(outcome.status) {
            sink.update(&check_id, status, outcome.output);
        } else {
            tracing::debug!(check = %check_id, status = %outcome.status, "check result below its threshold");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Consul's `CheckTTL`: critical once the TTL passes without a touch; the timer then waits for the next
/// touch before it runs again.
async fn run_ttl(ttl: Duration, state: Arc<TtlState>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(ttl) => {
                let last = state.last_output.lock().clone();
                let output = if last.is_empty() {
                    "TTL expired".to_owned()
                } else {
                    format!("TTL expired (last output before timeout follows): {last}")
                };
                tracing::warn!(check = %state.check_id, "check missed its TTL, now critical");
                state.sink.update(&state.check_id, CheckStatus::Critical, output);
                state.touched.notified().await;
            }
            () = state.touched.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_api::RouterCell;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, CheckStatus, String)>>);

    impl CheckSink for Recorder {
        fn update(&self, check_id: &str, status: CheckStatus, output: String) {
            self.0.lock().push((check_id.to_owned(), status, output));
        }
    }

    impl Recorder {
        fn seen(&self) -> Vec<(CheckStatus, String)> {
            self.0.lock().iter().map(|(_, s, o)| (*s, o.clone())).collect()
        }
    }

    fn env(scripts: bool) -> RunnerEnv {
        RunnerEnv {
            enable_script_checks: scripts,
            local_api: Arc::new(RouterCell::default()),
            node_name: "node-a".into(),
        }
    }

    fn def(kind: CheckKind) -> CheckDefinition {
        CheckDefinition {
            id: "c1".into(),
            name: "c1".into(),
            service_id: None,
            notes: String::new(),
            status: None,
            kind,
            interval: Some(Duration::from_secs(1)),
            timeout: None,
            deregister_critical_service_after: None,
            success_before_passing: 0,
            failures_before_critical: 0,
            failures_before_warning: 0,
            output_max_size: None,
        }
    }

    /// Waits (real time) until `recorder` holds `count` results.
    async fn wait_for(recorder: &Recorder, count: usize) -> Vec<(CheckStatus, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = recorder.seen();
            if seen.len() >= count {
                return seen;
            }
            assert!(std::time::Instant::now() < deadline, "only {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_unless_touched() {
        let mut d = def(CheckKind::Ttl {
            ttl: Duration::from_secs(10),
        });
        d.interval = None;
        d.output_max_size = Some(8);
        let sink = Arc::new(Recorder::default());
        let handle = start(&d, &env(false), sink.clone()).unwrap();

        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(sink.seen().is_empty());
        // An update restarts the timer and is bounded as Consul bounds API updates.
        let reported = handle.ttl_set_status(CheckStatus::Passing, "all fine here, 20 b");
        assert_eq!(reported.as_deref(), Some("all fine ... (captured 8 of 19 bytes)"));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(sink.seen().len(), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            sink.seen(),
            vec![
                (
                    CheckStatus::Passing,
                    "all fine ... (captured 8 of 19 bytes)".to_owned()
                ),
                (
                    CheckStatus::Critical,
                    "TTL expired (last output before timeout follows): all fine ... (captured 8 of 19 bytes)"
                        .to_owned()
                ),
            ]
        );
        // Expired once; nothing more until someone reports in.
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(sink.seen().len(), 2);
        handle.ttl_touch();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(sink.seen().len(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(sink.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_without_output_says_ttl_expired() {
        let mut d = def(CheckKind::Ttl {
            ttl: Duration::from_secs(5),
        });
        d.interval = None;
        let sink = Arc::new(Recorder::default());
        let handle = start(&d, &env(false), sink.clone()).unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            sink.seen(),
            vec![(CheckStatus::Critical, "TTL expired".to_owned())]
        );
        assert!(sink.0.lock().iter().all(|(id, _, _)| id == "c1"));
        drop(handle);
    }

    #[tokio::test]
    async fn scripts_are_refused_unless_enabled() {
        let d = def(CheckKind::Script {
            args: vec!["/bin/true".into()],
        });
        let sink = Arc::new(Recorder::default());
        let err = start(&d, &env(false), sink.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true"
        );
        let handle = start_with_stagger(&d, &env(true), sink.clone(), Duration::ZERO).unwrap();
        let seen = wait_for(&sink, 1).await;
        assert_eq!(seen[0].0, CheckStatus::Passing);
        drop(handle);
    }

    #[tokio::test]
    async fn non_ttl_handles_ignore_ttl_calls() {
        let d = def(CheckKind::Tcp {
            address: "127.0.0.1:1".into(),
        });
        let sink = Arc::new(Recorder::default());
        let handle = start_with_stagger(&d, &env(false), sink, Duration::from_secs(3600)).unwrap();
        handle.ttl_touch();
        assert_eq!(handle.ttl_set_status(CheckStatus::Passing, "x"), None);
        assert!(!handle.is_finished());
    }

    #[tokio::test]
    async fn counters_hold_back_results_and_dropping_stops_the_runner() {
        // A script whose runs go pass, fail, fail, pass, pass, ... and say which run they are.
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("runs");
        let script = format!(
            "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; echo \"run $n\"; \
             case $n in 1|2) exit 2;; *) exit 0;; esac",
            c = count.display()
        );
        let mut d = def(CheckKind::Script {
            args: vec!["/bin/sh".into(), "-c".into(), script],
        });
        d.success_before_passing = 2;
        d.failures_before_critical = 2;
        let sink = Arc::new(Recorder::default());
        let handle = start_with_stagger(&d, &env(true), sink.clone(), Duration::ZERO).unwrap();
        let seen = wait_for(&sink, 3).await;
        // Run 0 is reported at once (the counters start at their thresholds); run 1's failure is held
        // back, run 2's reported; run 3's success is held back, run 4's reported.
        assert_eq!(
            seen[..3],
            [
                (CheckStatus::Passing, "run 0\n".to_owned()),
                (CheckStatus::Critical, "run 2\n".to_owned()),
                (CheckStatus::Passing, "run 4\n".to_owned()),
            ]
        );

        drop(handle);
        // The aborted task lets go of its sink.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&sink) > 1 {
            assert!(std::time::Instant::now() < deadline, "the runner kept running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
