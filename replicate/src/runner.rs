//! The runner: the thin async loop that drives one replication per prefix.
//!
//! Per prefix: a blocking read of the source (a delta when the mirror is current), quiescence if
//! configured, a [`Planner`] pass against the [`Mirror`], the plan's batches applied in order with
//! the status record in the last one, and retries with back-off on any failure. The decisions are
//! the planner's; the runner only reads, waits, writes and reports.
//!
//! It is not a lock: it fences its writes with the [`Fence`] it is given, and stops the whole run
//! with [`ReplicateError::LockLost`] as soon as the sink says the fence failed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{PrefixSpec, ReplicateConfig, RetryConfig};
use crate::model::{Fence, Op, ReadContent, ReadQuery, SourceRead};
use crate::planner::{Hold, Mirror, Planner};
use crate::quiesce::Quiescence;
use crate::status::{PrefixStatus, rfc3339, status_key};
use crate::traits::{Sink, SinkError, Source, SourceError};

/// Where the runner reads wall-clock time (for `LastSuccess` and the lag); injected so tests and
/// simulations control it.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// How a run ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The shutdown future resolved.
    Stopped,
    /// `once`: every prefix finished its pass.
    OnceComplete {
        /// Whether any prefix's pass was held (in whole or its deletes); the status says why.
        held: bool,
    },
}

/// Why one pass failed. Every one is retried with back-off, except a lost fence.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The source read failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A destination read or write failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The source answered a delta the read did not ask for, or one that starts after the index
    /// asked for (changes would be missing).
    #[error("the source answered the changes since index {since}, but the read asked for {asked}")]
    UnexpectedDelta {
        /// What the read asked for (`changes since N`, or `the full prefix`).
        asked: String,
        /// Where the answered changes start.
        since: u64,
    },
}

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// A prefix reads from the local datacenter.
    #[error("local datacenter cannot be the source datacenter (prefix {prefix})")]
    LocalSource {
        /// The prefix, as `source@datacenter:destination`.
        prefix: String,
    },
    /// The sink refused a batch because the replicator no longer holds its lock.
    #[error("replication lock {key} is no longer held by session {session}; stopped")]
    LockLost {
        /// The lock key.
        key: String,
        /// The session that held it.
        session: String,
    },
    /// Failures in a row spent the retry budget.
    #[error("{during}: gave up after {failures} failures in a row: {last}")]
    GaveUp {
        /// What was being done (the prefix, or the start).
        during: String,
        /// The failures in a row.
        failures: u32,
        /// The last failure.
        #[source]
        last: PassError,
    },
}

/// Replicates every configured prefix from its source datacenter into the sink.
pub struct Replicator<S: Source, K: Sink> {
    config: ReplicateConfig,
    source: S,
    sink: K,
    fence: Option<Fence>,
    clock: Arc<dyn Clock>,
    status: watch::Sender<Vec<PrefixStatus>>,
}

impl<S: Source, K: Sink> Replicator<S, K> {
    /// A replicator of `config.prefixes` from `source` into `sink`, unfenced, on the system clock.
    pub fn new(config: ReplicateConfig, source: S, sink: K) -> Self {
        let initial = config.prefixes.iter().map(PrefixStatus::new).collect();
        let (status, _) = watch::channel(initial);
        Replicator {
            config,
            source,
            sink,
            fence: None,
            clock: Arc::new(SystemClock),
            status,
        }
    }

    /// Checks `fence` in every batch (the replicator's lock).
    pub fn with_fence(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// Reads wall-clock time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The status of every prefix, in the configuration's order, updated after every pass, hold
    /// and failure.
    pub fn status(&self) -> watch::Receiver<Vec<PrefixStatus>> {
        self.status.subscribe()
    }

    /// Replicates until `shutdown` resolves (then [`RunOutcome::Stopped`], with any blocking read
    /// abandoned), until every prefix finished its pass under `once`, or until an error stops it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<RunOutcome, ReplicateError> {
        tokio::select! {
            biased;
            () = shutdown => Ok(RunOutcome::Stopped),
            outcome = self.work() => outcome,
        }
    }

    async fn work(&self) -> Result<RunOutcome, ReplicateError> {
        let local = self.local_datacenter().await?;
        if let Some(spec) = self
            .config
            .prefixes
            .iter()
            .find(|spec| spec.datacenter.eq_ignore_ascii_case(&local))
        {
            return Err(ReplicateError::LocalSource {
                prefix: spec.to_string(),
            });
        }
        if self.config.prefixes.is_empty() && !self.config.once {
            // Nothing to replicate; wait to be stopped like any other run.
            std::future::pending::<()>().await;
        }
        let runs = self
            .config
            .prefixes
            .iter()
            .enumerate()
            .map(|(slot, spec)| PrefixRun::new(self, slot, spec).run());
        let held = futures::future::try_join_all(runs).await?;
        Ok(RunOutcome::OnceComplete {
            held: held.into_iter().any(|h| h),
        })
    }

    async fn local_datacenter(&self) -> Result<String, ReplicateError> {
        let mut backoff = Backoff::new(self.config.retry);
        loop {
            match self.sink.local_datacenter().await {
                Ok(datacenter) => return Ok(datacenter),
                Err(error) => match backoff.failed() {
                    Some(pause) => {
                        tracing::warn!(%error, ?pause, "reading the local datacenter failed; retrying");
                        tokio::time::sleep(pause).await;
                    }
                    None => {
                        return Err(ReplicateError::GaveUp {
                            during: "reading the local datacenter".to_owned(),
                            failures: backoff.failures().saturating_add(1),
                            last: error.into(),
                        });
                    }
                },
            }
        }
    }
}

/// What one step of a prefix's loop did.
enum Step {
    /// The source had nothing new.
    Unchanged,
    /// A pass was applied; `held` when its deletes were held.
    Applied { held: bool },
    /// The whole pass was held.
    Held,
}

/// The state of one prefix's replication.
struct PrefixRun<'r, S: Source, K: Sink> {
    r: &'r Replicator<S, K>,
    slot: usize,
    spec: &'r PrefixSpec,
    key: String,
    planner: Planner,
    /// The destination as last listed and since written; `None` when it must be listed again.
    mirror: Option<Mirror>,
    /// The source index the next blocking read waits to pass.
    last_index: u64,
    /// The source index the mirror is known to reflect, for delta reads.
    applied: Option<u64>,
    /// The next read must not block and must end in a pass (start, after a failure or a hold).
    force_pass: bool,
    status: PrefixStatus,
    status_loaded: bool,
    /// When a source index newer than `LastReplicated` was first seen.
    behind_since: Option<SystemTime>,
    backoff: Backoff,
    hold_backoff: Backoff,
    quiescence: Option<Quiescence>,
    next_read_at: Option<Instant>,
}

impl<'r, S: Source, K: Sink> PrefixRun<'r, S, K> {
    fn new(r: &'r Replicator<S, K>, slot: usize, spec: &'r PrefixSpec) -> Self {
        let retry = r.config.retry;
        PrefixRun {
            r,
            slot,
            spec,
            key: status_key(&r.config.status_dir, spec),
            planner: Planner::from_config(spec, &r.config),
            mirror: None,
            last_index: 0,
            applied: None,
            force_pass: true,
            status: PrefixStatus::new(spec),
            status_loaded: false,
            behind_since: None,
            backoff: Backoff::new(retry),
            // Holds are retried for ever, at the failure pace: a held pass is the guard working.
            hold_backoff: Backoff::new(RetryConfig { attempts: 0, ..retry }),
            quiescence: r.config.wait.map(Quiescence::new),
            next_read_at: None,
        }
    }

    /// Runs until `once` is done (returns whether the pass was held) or an error stops the run.
    async fn run(mut self) -> Result<bool, ReplicateError> {
        loop {
            match self.step().await {
                Ok(Step::Unchanged) => {}
                Ok(Step::Applied { held }) => {
                    self.backoff.succeeded();
                    self.hold_backoff.succeeded();
                    if self.r.config.once {
                        return Ok(held);
                    }
                }
                Ok(Step::Held) => {
                    self.backoff.succeeded();
                    if self.r.config.once {
                        return Ok(true);
                    }
                    let pause = self
                        .hold_backoff
                        .failed()
                        .unwrap_or(self.r.config.retry.max_backoff);
                    tokio::time::sleep(pause).await;
                }
                Err(PassError::Sink(SinkError::FenceLost { key, session })) => {
                    tracing::error!(prefix = %self.spec, %key, %session, "replication lock lost; stopping");
                    return Err(ReplicateError::LockLost { key, session });
                }
                Err(error) => self.failed(error).await?,
            }
        }
    }

    async fn failed(&mut self, error: PassError) -> Result<(), ReplicateError> {
        self.mirror = None;
        self.applied = None;
        self.force_pass = true;
        self.status.last_error = Some(error.to_string());
        self.publish();
        match self.backoff.failed() {
            Some(pause) => {
                tracing::warn!(prefix = %self.spec, %error, ?pause, "replication pass failed; retrying");
                tokio::time::sleep(pause).await;
                Ok(())
            }
            None => Err(ReplicateError::GaveUp {
                during: format!("replicating {}", self.spec),
                failures: self.backoff.failures().saturating_add(1),
                last: error,
            }),
        }
    }

    async fn step(&mut self) -> Result<Step, PassError> {
        if !self.status_loaded {
            self.load_status().await?;
        }
        let previous = self.last_index;
        let mut read = self.fetch(self.query(previous)).await?;
        if !self.force_pass && read.index == previous {
            return Ok(Step::Unchanged);
        }
        self.note_index(read.index);
        let mut previous = previous;
        if !self.force_pass && !self.r.config.once && read.index > previous && self.quiescence.is_some() {
            (read, previous) = self.quiesce(read, previous).await?;
        }
        self.pass(read, previous).await
    }

    fn query(&self, index: u64) -> ReadQuery {
        ReadQuery {
            prefix: self.spec.source.clone(),
            datacenter: self.spec.datacenter.clone(),
            index: if self.force_pass { 0 } else { index },
            wait: self.r.config.read_wait,
            stale: self.r.config.max_stale > Duration::ZERO,
            changes_since: self.mirror.as_ref().and(self.applied),
        }
    }

    /// One source read: no sooner than the read floor after the last, and asked again of the
    /// leader when a stale answer is too old.
    async fn fetch(&mut self, mut query: ReadQuery) -> Result<SourceRead, PassError> {
        if let Some(at) = self.next_read_at {
            tokio::time::sleep_until(at).await;
        }
        self.next_read_at = Some(Instant::now() + self.r.config.min_read_interval);
        let mut read = self.r.source.read(&query).await?;
        if query.stale && read.last_contact > self.r.config.max_stale {
            tracing::debug!(
                prefix = %self.spec,
                last_contact = ?read.last_contact,
                "stale answer too old; asking the leader"
            );
            query.stale = false;
            read = self.r.source.read(&query).await?;
        }
        if let ReadContent::Delta { since, .. } = &read.content {
            let fits = query.changes_since.is_some_and(|asked| *since <= asked);
            if !fits {
                return Err(PassError::UnexpectedDelta {
                    asked: match query.changes_since {
                        Some(asked) => format!("changes since {asked}"),
                        None => "the full prefix".to_owned(),
                    },
                    since: *since,
                });
            }
        }
        Ok(read)
    }

    /// Keeps reading while the source is busy, until the quiet timer or the deadline fires.
    /// Returns the latest read and the index seen before it.
    async fn quiesce(&mut self, first: SourceRead, previous: u64) -> Result<(SourceRead, u64), PassError> {
        let mut latest = first;
        let mut previous = previous;
        if let Some(q) = self.quiescence.as_mut() {
            q.changed(Instant::now());
        }
        while let Some(due) = self.quiescence.as_ref().and_then(Quiescence::due_at) {
            let query = self.query(latest.index);
            let next = tokio::select! {
                () = tokio::time::sleep_until(due) => None,
                read = self.fetch(query) => Some(read?),
            };
            let Some(read) = next else { break };
            if read.index < latest.index {
                // Let the planner hold it.
                previous = latest.index;
                latest = read;
                break;
            }
            if read.index > latest.index {
                self.note_index(read.index);
                if let Some(q) = self.quiescence.as_mut() {
                    q.changed(Instant::now());
                }
                latest = read;
            }
        }
        if let Some(q) = self.quiescence.as_mut() {
            q.fire();
        }
        Ok((latest, previous))
    }

    async fn pass(&mut self, read: SourceRead, previous: u64) -> Result<Step, PassError> {
        let mirror = match self.mirror.take() {
            Some(mirror) => mirror,
            None => self
                .planner
                .mirror(self.r.sink.list(&self.spec.destination).await?),
        };
        let mut mirror = mirror;
        let plan = self.planner.plan(&read, &mirror, previous);
        if let Some(hold) = plan.hold.as_ref().filter(|h| h.skips_pass()) {
            return self.held(&read, hold).await;
        }

        let now = self.r.clock.now();
        let mut next = self.status.clone();
        next.last_replicated = read.index;
        next.source_index = read.index;
        next.last_success = Some(rfc3339(now));
        next.puts += plan.puts.len() as u64;
        next.deletes += plan.deletes.len() as u64;
        next.set_hold(plan.hold.as_ref());
        next.last_error = None;
        next.seconds_behind = 0.0;
        next.replicate_lag = self.behind_since.map_or(0.0, |since| seconds_between(since, now));
        let status_put = Op::Put {
            key: self.key.clone(),
            value: next.to_json(),
            flags: 0,
        };
        for (op, reason) in &plan.deletes {
            tracing::debug!(prefix = %self.spec, key = op.key(), %reason, "deleting");
        }
        for batch in plan.batches(self.r.fence.as_ref(), Some(status_put)) {
            // On failure the mirror is dropped: what the failed batch did is unknown.
            self.r.sink.apply(&batch).await?;
            mirror.apply(&batch);
        }
        tracing::info!(
            prefix = %self.spec,
            index = read.index,
            "replicated {} puts, {} deletes",
            plan.puts.len(),
            plan.deletes.len()
        );
        self.status = next;
        self.behind_since = None;
        self.last_index = read.index;
        self.force_pass = false;
        match &plan.hold {
            Some(hold) => {
                tracing::warn!(prefix = %self.spec, %hold, "deletes held");
                // The next read is full so the held deletes are judged again against a fresh
                // listing.
                self.mirror = None;
                self.applied = None;
            }
            None => {
                self.mirror = Some(mirror);
                self.applied = Some(read.index);
            }
        }
        self.publish();
        Ok(Step::Applied {
            held: plan.hold.is_some(),
        })
    }

    /// The whole pass is held: only the status record is written, saying why.
    async fn held(&mut self, read: &SourceRead, hold: &Hold) -> Result<Step, PassError> {
        tracing::warn!(prefix = %self.spec, %hold, "replication pass held");
        if let Hold::IndexWentBackwards { .. } = hold {
            self.last_index = 0;
        }
        self.mirror = None;
        self.applied = None;
        self.force_pass = true;
        let mut next = self.status.clone();
        next.source_index = read.index;
        next.set_hold(Some(hold));
        next.last_error = None;
        next.seconds_behind = self.seconds_behind();
        let status_put = Op::Put {
            key: self.key.clone(),
            value: next.to_json(),
            flags: 0,
        };
        let nothing = crate::planner::Plan::default();
        for batch in nothing.batches(self.r.fence.as_ref(), Some(status_put)) {
            self.r.sink.apply(&batch).await?;
        }
        self.status = next;
        self.publish();
        Ok(Step::Held)
    }

    async fn load_status(&mut self) -> Result<(), PassError> {
        if let Some(entry) = self.r.sink.get(&self.key).await? {
            match PrefixStatus::from_json(&self.key, &entry.value) {
                Ok(stored) => {
                    self.status.last_replicated = stored.last_replicated;
                    self.status.source_index = stored.source_index;
                    self.status.last_success = stored.last_success;
                    self.status.replicate_lag = stored.replicate_lag;
                    self.status.puts = stored.puts;
                    self.status.deletes = stored.deletes;
                }
                Err(error) => {
                    tracing::warn!(prefix = %self.spec, %error, "ignoring the stored status record");
                }
            }
        }
        self.status_loaded = true;
        self.publish();
        Ok(())
    }

    fn note_index(&mut self, index: u64) {
        if index > self.status.last_replicated && self.behind_since.is_none() {
            self.behind_since = Some(self.r.clock.now());
        }
    }

    fn seconds_behind(&self) -> f64 {
        self.behind_since
            .map_or(0.0, |since| seconds_between(since, self.r.clock.now()))
    }

    fn publish(&mut self) {
        self.status.seconds_behind = self.seconds_behind();
        let status = self.status.clone();
        let slot = self.slot;
        self.r.status.send_modify(|all| {
            if let Some(current) = all.get_mut(slot) {
                *current = status;
            }
        });
    }
}

fn seconds_between(earlier: SystemTime, later: SystemTime) -> f64 {
    later.duration_since(earlier).map_or(0.0, |d| d.as_secs_f64())
}
