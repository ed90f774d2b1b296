//! The `tribune replicate` process: loads the settings, sets up logging, the pid file and the metrics
//! endpoint, takes the session lock when asked, runs the replicator, and answers signals.
//!
//! - The kill signal (SIGINT unless configured), and SIGTERM always, stop the replicator, release
//!   the lock and exit 0.
//! - The reload signal (SIGHUP unless configured) reads the files and flags again and restarts the
//!   replicator with the result, keeping the lock. A configuration that does not load is logged and
//!   the running one kept. The lock prefix, pid file and metrics address are read once, at start.
//! - A lost lock stops the replicator and waits for the lock again.
//! - `-once` exits 0 after one pass per prefix, or [`HELD_EXIT_CODE`] when a pass was held.
//!
//! The engine's decisions (what to write, when to hold, retries) are not made here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};
use tribune_replicate::Fence;
use tribune_replicate::backoff::Backoff;
use tribune_replicate::http::{BasicAuth, ClientConfig, ConsulClient, HttpSink, HttpSource, SessionLock};
use tribune_replicate::runner::{ReplicateError, Replicator, RunOutcome};
use tribune_replicate::status::PrefixStatus;

use super::super::{CliError, GlobalArgs};
use super::args::ReplicateArgs;
use super::metrics::Metrics;
use super::settings::{Resolved, Settings, Signal};
use super::{ReplicateCliError, file};

/// The exit code of `-once` when a pass was held (the reason is printed).
pub(super) const HELD_EXIT_CODE: u8 = 3;

/// Where the settings come from, read again on reload.
struct Sources {
    paths: Vec<PathBuf>,
    flags: Settings,
    once: bool,
}

impl Sources {
    /// The files in order, then the flags, resolved against the process environment; with the
    /// warnings found on the way, for the caller to log (logging may not be set up yet).
    fn load(&self) -> Result<(Resolved, Vec<String>), ReplicateCliError> {
        let mut settings = file::load(&self.paths)?;
        settings.merge(self.flags.clone());
        let warnings = std::mem::take(&mut settings.warnings);
        let resolved = settings.resolve(self.once, &|name| std::env::var(name).ok())?;
        Ok((resolved, warnings))
    }
}

pub(super) async fn run(args: ReplicateArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let sources = Sources {
        paths: args.config_paths().to_vec(),
        flags: args.settings(global),
        once: args.once(),
    };
    let (resolved, warnings) = sources.load()?;
    let logging = Logging::init(&resolved);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    if resolved.syslog {
        tracing::warn!("syslog is not supported; logging to stderr");
    }
    let _pid_file = PidFile::create(resolved.pid_file.as_deref())?;
    let metrics = match resolved.metrics_addr {
        Some(addr) => {
            let metrics = Arc::new(Metrics::default());
            let bound = super::metrics::serve(addr, Arc::clone(&metrics))
                .await
                .map_err(|error| CliError::Failed(format!("serving metrics on {addr}: {error}")))?;
            tracing::info!("metrics at http://{bound}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let signals = Signals::new()?;
    let client = client_for(&resolved)?;
    let lock = resolved.lock.as_deref().map(|prefix| {
        SessionLock::new(
            client.clone(),
            prefix,
            format!("tribune replicate (pid {})", std::process::id()),
        )
    });
    let mut daemon = Daemon {
        sources,
        resolved,
        client,
        logging,
        metrics,
        signals,
    };
    let mut lock = lock;
    let result = daemon.supervise(&mut lock).await;
    if let Some(lock) = lock
        && let Err(error) = lock.release().await
    {
        tracing::warn!(%error, "releasing the replication lock failed; it passes on when the session expires");
    }
    result
}

/// What a signal asks for.
enum Action {
    Stop,
    Reload,
    Ignore,
}

/// What to do once the replicator stopped.
enum Then {
    Exit,
    Reload,
    Reacquire,
}

struct Daemon {
    sources: Sources,
    resolved: Resolved,
    client: ConsulClient,
    logging: Logging,
    metrics: Option<Arc<Metrics>>,
    signals: Signals,
}

impl Daemon {
    /// Holds the lock (if any) and runs the replicator until told to stop or it fails.
    async fn supervise(&mut self, lock: &mut Option<SessionLock>) -> Result<ExitCode, CliError> {
        loop {
            let fence = match lock.as_mut() {
                None => None,
                Some(lock) => match self.acquire(lock).await? {
                    Some(fence) => Some(fence),
                    None => return Ok(ExitCode::SUCCESS),
                },
            };
            let mut config = self.resolved.replicate.clone();
            if let Some(lock) = lock.as_ref() {
                // The lock key may sit under a destination prefix: never write or delete it.
                config.protected.push(lock.key().to_owned());
            }
            let replicator = Replicator::new(
                config,
                HttpSource::new(self.client.clone()),
                HttpSink::new(self.client.clone()),
            )
            .with_fence(fence);
            let status = replicator.status();
            if let Some(metrics) = &self.metrics {
                tokio::spawn(feed_metrics(status.clone(), Arc::clone(metrics)));
            }
            let (stop, stopped) = oneshot::channel::<()>();
            let run = replicator.run(async move {
                // Resolves when `stop` is sent or dropped.
                let _ = stopped.await;
            });
            let lost = lock.as_ref().map(SessionLock::lost);
            let lost = async move {
                match lost {
                    Some(lost) => lost.await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(run, lost);
            let mut stop = Some(stop);
            let mut then = Then::Exit;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut run => break outcome,
                    () = &mut lost, if stop.is_some() => {
                        tracing::error!("the replication lock was lost; stopping until it is held again");
                        then = Then::Reacquire;
                        stop = None;
                    }
                    signal = self.signals.recv(), if stop.is_some() => match self.action(signal) {
                        Action::Stop => {
                            tracing::info!(?signal, "stopping");
                            stop = None;
                        }
                        Action::Reload => {
                            then = Then::Reload;
                            stop = None;
                        }
                        Action::Ignore => {}
                    },
                }
            };
            match outcome {
                Ok(RunOutcome::OnceComplete { held: false }) => return Ok(ExitCode::SUCCESS),
                Ok(RunOutcome::OnceComplete { held: true }) => {
                    report_holds(&status.borrow());
                    return Ok(ExitCode::from(HELD_EXIT_CODE));
                }
                Ok(RunOutcome::Stopped) => match then {
                    Then::Exit => return Ok(ExitCode::SUCCESS),
                    Then::Reload => self.reload(),
                    Then::Reacquire => {}
                },
                Err(ReplicateError::LockLost { key, session }) if lock.is_some() => {
                    tracing::error!(%key, %session, "the replication lock was lost; waiting for it again");
                }
                Err(error) => return Err(CliError::Failed(error.to_string())),
            }
        }
    }

    /// Waits for the lock, retrying failures with the configured back-off. `None`: a stop signal
    /// came first.
    async fn acquire(&mut self, lock: &mut SessionLock) -> Result<Option<Fence>, CliError> {
        let mut backoff = Backoff::new(self.resolved.replicate.retry);
        let mut pause = None;
        // Still held after a reload: nothing to wait for or to announce.
        if let Some(fence) = lock.fence() {
            return Ok(Some(fence));
        }
        tracing::info!(key = lock.key(), "waiting for the replication lock");
        loop {
            let attempt = async {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                lock.acquire().await
            };
            enum Event {
                Acquired(Result<Fence, tribune_replicate::http::HttpError>),
                Signal(Signal),
            }
            let event = tokio::select! {
                result = attempt => Event::Acquired(result),
                signal = self.signals.recv() => Event::Signal(signal),
            };
            match event {
                Event::Acquired(Ok(fence)) => {
                    tracing::info!(key = %fence.key, "holding the replication lock");
                    return Ok(Some(fence));
                }
                Event::Acquired(Err(error)) => match backoff.failed() {
                    Some(next) => {
                        tracing::warn!(%error, pause = ?next, "taking the replication lock failed; retrying");
                        pause = Some(next);
                    }
                    None => {
                        return Err(CliError::Failed(format!(
                            "taking the replication lock {}: gave up after {} failures in a row: {error}",
                            lock.key(),
                            backoff.failures().saturating_add(1)
                        )));
                    }
                },
                Event::Signal(signal) => match self.action(signal) {
                    Action::Stop => return Ok(None),
                    Action::Reload => self.reload(),
                    Action::Ignore => {}
                },
            }
        }
    }

    fn action(&self, signal: Signal) -> Action {
        if Some(signal) == self.resolved.reload_signal {
            Action::Reload
        } else if Some(signal) == self.resolved.kill_signal || matches!(signal, Signal::Int | Signal::Term) {
            Action::Stop
        } else {
            tracing::debug!(?signal, "ignoring signal");
            Action::Ignore
        }
    }

    /// Reads the configuration again; on failure keeps the running one.
    fn reload(&mut self) {
        tracing::info!("reloading the configuration");
        let next = match self.sources.load() {
            Ok((next, warnings)) => {
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                next
            }
            Err(error) => {
                tracing::error!(%error, "the new configuration does not load; keeping the running one");
                return;
            }
        };
        for (what, changed) in [
            ("-lock", next.lock != self.resolved.lock),
            ("-pid-file", next.pid_file != self.resolved.pid_file),
            ("-metrics-addr", next.metrics_addr != self.resolved.metrics_addr),
        ] {
            if changed {
                tracing::warn!("a change of {what} takes effect only after a restart");
            }
        }
        let connection = (&next.authority, &next.token, &next.auth);
        if connection
            != (
                &self.resolved.authority,
                &self.resolved.token,
                &self.resolved.auth,
            )
        {
            match client_for(&next) {
                Ok(client) => self.client = client,
                Err(error) => {
                    tracing::error!(%error, "the new configuration does not load; keeping the running one");
                    return;
                }
            }
        }
        self.logging.set_level(&next);
        self.resolved = Resolved {
            lock: self.resolved.lock.clone(),
            pid_file: self.resolved.pid_file.clone(),
            metrics_addr: self.resolved.metrics_addr,
            ..next
        };
    }
}

fn client_for(resolved: &Resolved) -> Result<ConsulClient, CliError> {
    let mut config = ClientConfig::new(resolved.authority.clone());
    config.token = resolved.token.clone();
    config.auth = resolved
        .auth
        .clone()
        .map(|(username, password)| BasicAuth { username, password });
    ConsulClient::new(config).map_err(|error| CliError::Failed(error.to_string()))
}

/// Prints why each held prefix was held (for `-once`).
fn report_holds(statuses: &[PrefixStatus]) {
    for status in statuses {
        if let Some(reason) = &status.held {
            eprintln!(
                "{}@{}:{}: held: {reason}",
                status.source, status.source_datacenter, status.destination
            );
        }
    }
}

async fn feed_metrics(mut status: watch::Receiver<Vec<PrefixStatus>>, metrics: Arc<Metrics>) {
    loop {
        metrics.observe(&status.borrow_and_update());
        // Ends when the replicator is dropped.
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// The signals the process answers; every one is caught, so none of them kills it by default.
struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Result<Signals, CliError> {
        let kinds = [
            (Signal::Hup, SignalKind::hangup()),
            (Signal::Int, SignalKind::interrupt()),
            (Signal::Term, SignalKind::terminate()),
            (Signal::Quit, SignalKind::quit()),
            (Signal::Usr1, SignalKind::user_defined1()),
            (Signal::Usr2, SignalKind::user_defined2()),
        ];
        let streams = kinds
            .into_iter()
            .map(|(name, kind)| {
                signal(kind)
                    .map(|stream| (name, stream))
                    .map_err(|error| CliError::Failed(format!("listening for {name:?}: {error}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Signals { streams })
    }

    /// The next signal received.
    async fn recv(&mut self) -> Signal {
        let waits = self.streams.iter_mut().map(|(name, stream)| {
            let name = *name;
            Box::pin(async move {
                stream.recv().await;
                name
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// `-log-level`, changeable on reload (unless RUST_LOG set the filter).
struct Logging {
    reload: Option<
        tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    >,
}

impl Logging {
    fn init(resolved: &Resolved) -> Logging {
        use std::io::IsTerminal as _;

        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let from_env = std::env::var("RUST_LOG")
            .ok()
            .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok());
        let fixed = from_env.is_some();
        let filter =
            from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(resolved.log_level.as_filter()));
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init();
        Logging {
            reload: (!fixed).then_some(handle),
        }
    }

    fn set_level(&self, resolved: &Resolved) {
        if let Some(handle) = &self.reload {
            let filter = tracing_subscriber::EnvFilter::new(resolved.log_level.as_filter());
            if let Err(error) = handle.reload(filter) {
                tracing::warn!(%error, "changing the log level failed");
            }
        }
    }
}

/// The pid file, removed when dropped.
struct PidFile(Option<PathBuf>);

impl PidFile {
    fn create(path: Option<&Path>) -> Result<PidFile, CliError> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        std::fs::write(path, std::process::id().to_string())
            .map_err(|source| CliError::io(path.display(), source).context("writing the pid file"))?;
        Ok(PidFile(Some(path.to_owned())))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && let Err(error) = std::fs::remove_file(path)
        {
            tracing::warn!(path = %path.display(), %error, "removing the pid file failed");
        }
    }
}
