//! The runner against the in-memory source and sink, on tokio's paused clock: every wait is on a
//! condition with a (virtual) deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tribune_replicate::{
    Clock, Fence, MemorySink, MemorySource, Op, PrefixSpec, PrefixStatus, ReplicateConfig, ReplicateError,
    Replicator, RetryConfig, RunOutcome, SinkFault, SourceFault, WaitConfig, status_key,
};

const DEADLINE: Duration = Duration::from_secs(600);

/// Wall-clock time that moves with tokio's (paused) clock, from a fixed start.
struct TokioClock {
    base: SystemTime,
    start: Instant,
}

impl TokioClock {
    fn new() -> Arc<Self> {
        Arc::new(TokioClock {
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start: Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

fn config(prefixes: &[&str]) -> ReplicateConfig {
    ReplicateConfig {
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        read_wait: Duration::from_secs(30),
        retry: RetryConfig {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        },
        ..ReplicateConfig::default()
    }
}

struct Running {
    handle: JoinHandle<Result<RunOutcome, ReplicateError>>,
    stop: oneshot::Sender<()>,
    status: watch::Receiver<Vec<PrefixStatus>>,
}

fn start(config: ReplicateConfig, source: &MemorySource, sink: &MemorySink, fence: Option<Fence>) -> Running {
    let replicator = Replicator::new(config, source.clone(), sink.clone())
        .with_fence(fence)
        .with_clock(TokioClock::new());
    let status = replicator.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(replicator.run(async move {
        let _ = stopped.await;
    }));
    Running { handle, stop, status }
}

impl Running {
    /// Waits until the first prefix's status satisfies `condition`.
    async fn status_where(&mut self, condition: impl Fn(&PrefixStatus) -> bool) -> PrefixStatus {
        let all = timeout(
            DEADLINE,
            self.status.wait_for(|all| all.first().is_some_and(&condition)),
        )
        .await
        .expect("status condition within the deadline")
        .expect("runner alive")
        .clone();
        all[0].clone()
    }

    async fn stop(self) -> Result<RunOutcome, ReplicateError> {
        let _ = self.stop.send(());
        timeout(DEADLINE, self.handle)
            .await
            .expect("stops promptly")
            .unwrap()
    }

    async fn finished(self) -> Result<RunOutcome, ReplicateError> {
        timeout(DEADLINE, self.handle).await.expect("finishes").unwrap()
    }
}

async fn wait_values(sink: &MemorySink, prefix: &str, want: &[(&str, &str)]) {
    let want: BTreeMap<String, Vec<u8>> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect();
    let result = timeout(DEADLINE, sink.wait_for(prefix, |now| *now == want)).await;
    assert!(
        result.is_ok(),
        "destination {prefix}: want {want:?}, have {:?}",
        sink.values(prefix)
    );
}

fn values(sink: &MemorySink, prefix: &str) -> Vec<(String, String)> {
    sink.values(prefix)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

fn status_batches(sink: &MemorySink, kind: &str) -> Vec<tribune_replicate::Batch> {
    sink.applied()
        .into_iter()
        .filter(|b| {
            b.ops.iter().any(|op| match op {
                Op::Put { key, value, .. } if key.starts_with("service/consul-replicate/statuses/") => {
                    PrefixStatus::from_json(key, value).unwrap().held_kind.as_deref() == Some(kind)
                }
                _ => false,
            })
        })
        .collect()
}

fn any_delete(sink: &MemorySink) -> bool {
    sink.applied()
        .iter()
        .any(|b| b.ops.iter().any(|op| matches!(op, Op::Delete { .. })))
}

#[tokio::test(start_paused = true)]
async fn replicates_and_follows_updates_and_deletes_with_deltas() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    source.put("a/2", "two");
    source.put("a/3", "three");
    source.put("elsewhere", "not replicated");
    let mut run = start(config(&["a/@dc1:c/"]), &source, &sink, None);
    wait_values(&sink, "c/", &[("c/1", "one"), ("c/2", "two"), ("c/3", "three")]).await;
    let first = run.status_where(|s| s.last_replicated > 0).await;
    assert_eq!((first.puts, first.deletes, first.held.clone()), (3, 0, None));

    source.put("a/2", "TWO");
    source.delete("a/3");
    source.put("a/4", "four");
    wait_values(&sink, "c/", &[("c/1", "one"), ("c/2", "TWO"), ("c/4", "four")]).await;
    let index = source.index();
    let status = run.status_where(|s| s.last_replicated == index).await;
    assert_eq!((status.puts, status.deletes), (5, 1));
    assert_eq!(status.source_datacenter, "dc1");
    assert_eq!(status.seconds_behind, 0.0);

    // The destination was listed once; every later pass read a delta.
    assert_eq!(sink.list_count(), 1);
    let queries = source.queries();
    assert_eq!(queries[0].changes_since, None);
    assert!(
        queries[1..].iter().all(|q| q.changes_since.is_some()),
        "{queries:?}"
    );
    // Unchanged keys were not rewritten.
    let puts_of_c1 = sink
        .applied()
        .iter()
        .flat_map(|b| b.ops.clone())
        .filter(|op| op.key() == "c/1")
        .count();
    assert_eq!(puts_of_c1, 1);
    assert_eq!(run.stop().await.unwrap(), RunOutcome::Stopped);
}

#[tokio::test(start_paused = true)]
async fn an_empty_source_never_deletes() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    sink.put("a/1", "keep");
    sink.put("a/2", "keep");
    // Once: the pass is held, the run still finishes, and says so.
    let mut once = config(&["a/@dc1"]);
    once.once = true;
    once.force_deletes = true;
    let run = start(once, &source, &sink, None);
    assert_eq!(
        run.finished().await.unwrap(),
        RunOutcome::OnceComplete { held: true }
    );
    assert_eq!(values(&sink, "a/").len(), 2);
    assert!(!any_delete(&sink));
    let key = status_key("service/consul-replicate/statuses", &"a/@dc1".parse().unwrap());
    let stored = PrefixStatus::from_json(&key, &sink.value(&key).unwrap()).unwrap();
    assert_eq!(stored.held_kind.as_deref(), Some("SourceEmpty"));

    // Continuous: a server that answers empty once is held, then the real data flows on.
    source.put("a/1", "one");
    source.put("a/2", "two");
    source.put("a/3", "three");
    let mut run = start(config(&["a/@dc1"]), &source, &sink, None);
    wait_values(&sink, "a/", &[("a/1", "one"), ("a/2", "two"), ("a/3", "three")]).await;
    source.inject(SourceFault::Empty, 1);
    source.put("a/4", "four");
    run.status_where(|s| s.held_kind.as_deref() == Some("SourceEmpty"))
        .await;
    wait_values(
        &sink,
        "a/",
        &[("a/1", "one"), ("a/2", "two"), ("a/3", "three"), ("a/4", "four")],
    )
    .await;
    run.status_where(|s| s.held.is_none()).await;
    assert!(!any_delete(&sink));
    // The held pass wrote its status record and nothing else.
    let held = status_batches(&sink, "SourceEmpty");
    assert!(!held.is_empty() && held.iter().all(|b| b.ops.len() == 1));
    run.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_leader_stale_and_rewound_sources_write_no_data() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    let mut run = start(config(&["a/@dc1"]), &source, &sink, None);
    wait_values(&sink, "a/", &[("a/1", "one")]).await;

    source.inject(SourceFault::NoLeader, 1);
    source.put("a/2", "two");
    run.status_where(|s| s.held_kind.as_deref() == Some("NoKnownLeader"))
        .await;
    wait_values(&sink, "a/", &[("a/1", "one"), ("a/2", "two")]).await;

    // A stale follower alone is asked again of the leader: no hold.
    source.inject(SourceFault::StaleFollower(Duration::from_secs(30)), 1);
    source.put("a/3", "three");
    wait_values(&sink, "a/", &[("a/1", "one"), ("a/2", "two"), ("a/3", "three")]).await;
    assert!(source.queries().iter().any(|q| !q.stale));
    assert!(status_batches(&sink, "LastContactTooOld").is_empty());
    // When the leader's answer is too old as well, the pass is held.
    source.inject(SourceFault::LastContact(Duration::from_secs(30)), 2);
    source.put("a/4", "four");
    run.status_where(|s| s.held_kind.as_deref() == Some("LastContactTooOld"))
        .await;
    wait_values(
        &sink,
        "a/",
        &[("a/1", "one"), ("a/2", "two"), ("a/3", "three"), ("a/4", "four")],
    )
    .await;

    // A rewound source's old values are not written; the next read starts over and catches up.
    let old = MemorySource::new();
    old.put("a/1", "OLD");
    source.inject(
        SourceFault::Rewound {
            index: 2,
            entries: old.entries(),
        },
        1,
    );
    source.put("a/5", "five");
    let held = run
        .status_where(|s| s.held_kind.as_deref() == Some("IndexWentBackwards"))
        .await;
    assert!(held.held.unwrap().contains("went backwards"));
    wait_values(
        &sink,
        "a/",
        &[
            ("a/1", "one"),
            ("a/2", "two"),
            ("a/3", "three"),
            ("a/4", "four"),
            ("a/5", "five"),
        ],
    )
    .await;
    for kind in ["NoKnownLeader", "LastContactTooOld", "IndexWentBackwards"] {
        let batches = status_batches(&sink, kind);
        assert!(!batches.is_empty(), "{kind}");
        assert!(batches.iter().all(|b| b.ops.len() == 1), "{kind}: {batches:?}");
    }
    assert!(
        sink.applied()
            .iter()
            .flat_map(|b| &b.ops)
            .all(|op| !matches!(op, Op::Put { value, .. } if value == b"OLD"))
    );
    run.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn too_many_deletes_are_held_until_forced() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    for i in 0..10 {
        source.put(&format!("a/{i}"), "v");
    }
    let mut run = start(config(&["a/@dc1"]), &source, &sink, None);
    timeout(DEADLINE, sink.wait_for("a/", |v| v.len() == 10))
        .await
        .unwrap();
    for i in 0..6 {
        source.delete(&format!("a/{i}"));
    }
    source.put("a/new", "n");
    let held = run
        .status_where(|s| s.held_kind.as_deref() == Some("TooManyDeletes"))
        .await;
    assert_eq!(held.held_deletes, 6);
    // The puts went ahead; the deletes did not.
    timeout(DEADLINE, sink.wait_for("a/", |v| v.contains_key("a/new")))
        .await
        .unwrap();
    assert_eq!(sink.values("a/").len(), 11);
    assert!(!any_delete(&sink));
    assert_eq!(run.stop().await.unwrap(), RunOutcome::Stopped);

    let mut forced = config(&["a/@dc1"]);
    forced.force_deletes = true;
    let mut run = start(forced, &source, &sink, None);
    timeout(DEADLINE, sink.wait_for("a/", |v| v.len() == 5))
        .await
        .unwrap();
    let status = run.status_where(|s| s.deletes == 6).await;
    assert_eq!((status.held, status.held_deletes), (None, 0));
    run.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn deletes_false_never_deletes() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    sink.put("a/local", "mine");
    let mut keep = config(&["a/@dc1"]);
    keep.deletes = false;
    keep.once = true;
    let run = start(keep, &source, &sink, None);
    assert_eq!(
        run.finished().await.unwrap(),
        RunOutcome::OnceComplete { held: false }
    );
    assert_eq!(
        values(&sink, "a/"),
        vec![
            ("a/1".to_owned(), "one".to_owned()),
            ("a/local".to_owned(), "mine".to_owned())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_fence_stops_the_run_without_writing() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    sink.acquire("locks/replicate", "s1");
    let fence = Fence {
        key: "locks/replicate".into(),
        session: "s1".into(),
    };
    source.put("a/1", "one");
    let mut cfg = config(&["a/@dc1"]);
    cfg.protected = vec!["locks/replicate".into()];
    let run = start(cfg, &source, &sink, Some(fence.clone()));
    wait_values(&sink, "a/", &[("a/1", "one")]).await;
    assert!(sink.applied().iter().all(|b| b.fence.as_ref() == Some(&fence)));
    sink.release("locks/replicate");
    source.put("a/2", "two");
    match run.finished().await {
        Err(ReplicateError::LockLost { key, session }) => {
            assert_eq!((key.as_str(), session.as_str()), ("locks/replicate", "s1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sink.value("a/2"), None);
}

#[tokio::test(start_paused = true)]
async fn once_replicates_every_prefix_and_writes_the_status_record() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("global/x", "1");
    source.put("global/y", "2");
    source.put("apps/z", "3");
    let mut cfg = config(&["global/@dc1:backup/", "apps/@dc1"]);
    cfg.once = true;
    let run = start(cfg, &source, &sink, None);
    assert_eq!(
        run.finished().await.unwrap(),
        RunOutcome::OnceComplete { held: false }
    );
    assert_eq!(
        values(&sink, "backup/"),
        vec![
            ("backup/x".to_owned(), "1".to_owned()),
            ("backup/y".to_owned(), "2".to_owned())
        ]
    );
    assert_eq!(sink.value("apps/z"), Some(b"3".to_vec()));

    let spec: PrefixSpec = "global/@dc1:backup/".parse().unwrap();
    let key = status_key("service/consul-replicate/statuses", &spec);
    assert_eq!(
        key,
        "service/consul-replicate/statuses/dc1/676c6f62616c2f-6261636b75702f"
    );
    let json: serde_json::Value = serde_json::from_slice(&sink.value(&key).unwrap()).unwrap();
    assert_eq!(json["LastReplicated"], source.index() - 1);
    assert_eq!(json["Source"], "global/");
    assert_eq!(json["Destination"], "backup/");
    assert_eq!(json["SourceDatacenter"], "dc1");
    assert_eq!(json["Puts"], 2);
    assert_eq!(json["Deletes"], 0);
    assert_eq!(json["LastSuccess"], "2023-11-14T22:13:20Z");
    assert_eq!(json["Held"], serde_json::Value::Null);
    assert_eq!(json["LastError"], serde_json::Value::Null);
    // The status record landed in the same transaction as the data.
    let batches = sink.applied();
    assert!(
        batches
            .iter()
            .any(|b| b.ops.iter().any(|op| op.key() == key) && b.ops.iter().any(|op| op.key() == "backup/x"))
    );
}

#[tokio::test(start_paused = true)]
async fn resumes_the_stored_status_record() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    let spec: PrefixSpec = "a/@dc1".parse().unwrap();
    let key = status_key("service/consul-replicate/statuses", &spec);
    sink.put(
        &key,
        r#"{"LastReplicated": 1, "Source": "a/", "Destination": "a/", "Puts": 7}"#,
    );
    source.put("a/1", "one");
    let mut cfg = config(&["a/@dc1"]);
    cfg.once = true;
    let mut run = start(cfg, &source, &sink, None);
    let status = run.status_where(|s| s.last_replicated > 1).await;
    assert_eq!(status.puts, 8);
    run.finished().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_local_datacenter_is_refused_as_a_source() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    let run = start(config(&["a/@dc1", "b/@dc2:c/"]), &source, &sink, None);
    let error = run.finished().await.unwrap_err();
    assert!(matches!(error, ReplicateError::LocalSource { .. }));
    assert_eq!(
        error.to_string(),
        "local datacenter cannot be the source datacenter (prefix b/@dc2:c/)"
    );
    assert!(sink.applied().is_empty());
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_retry_then_give_up() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    sink.inject_apply(SinkFault::Unreachable("connection refused".into()), 2);
    sink.inject_list(
        SinkFault::Refused {
            status: 500,
            body: "boom".into(),
        },
        1,
    );
    let mut run = start(config(&["a/@dc1"]), &source, &sink, None);
    let failing = run.status_where(|s| s.last_error.is_some()).await;
    assert!(failing.last_error.unwrap().contains("500"));
    wait_values(&sink, "a/", &[("a/1", "one")]).await;
    run.status_where(|s| s.last_error.is_none() && s.last_replicated > 0)
        .await;
    // Each failure dropped the mirror, so the destination was listed again.
    assert!(sink.list_count() >= 3);

    source.inject(SourceFault::Error("no route to host".into()), usize::MAX);
    source.put("a/2", "two");
    match run.finished().await {
        Err(ReplicateError::GaveUp { failures, last, .. }) => {
            assert_eq!(failures, 6);
            assert!(last.to_string().contains("no route to host"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_blocking_read_promptly() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    let mut cfg = config(&["a/@dc1"]);
    cfg.read_wait = Duration::from_secs(3600);
    let mut run = start(cfg, &source, &sink, None);
    run.status_where(|s| s.last_replicated > 0).await;
    let before = Instant::now();
    assert_eq!(run.stop().await.unwrap(), RunOutcome::Stopped);
    assert!(before.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn reads_that_answer_at_once_keep_the_floor_between_them() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/1", "one");
    let mut cfg = config(&["a/@dc1"]);
    // Every read returns at once with the same index.
    cfg.read_wait = Duration::ZERO;
    let mut run = start(cfg, &source, &sink, None);
    run.status_where(|s| s.last_replicated > 0).await;
    let reads = source.queries().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = source.queries().len() - reads;
    let floor = ReplicateConfig::default().min_read_interval;
    let expected = (Duration::from_secs(1).as_millis() / floor.as_millis()) as usize;
    assert!(
        (expected - 1..=expected + 1).contains(&more),
        "{more} reads in one second, {expected} expected"
    );
    run.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn quiescence_batches_a_burst_and_the_lag_is_reported() {
    let source = MemorySource::new();
    let sink = MemorySink::new("dc2");
    source.put("a/0", "zero");
    let mut cfg = config(&["a/@dc1"]);
    cfg.wait = Some(WaitConfig {
        min: Duration::from_secs(2),
        max: Duration::from_secs(8),
    });
    let mut run = start(cfg, &source, &sink, None);
    run.status_where(|s| s.last_replicated > 0).await;
    let passes = sink.applied().len();

    // Three changes 1 s apart: the quiet timer restarts on each, so one pass 2 s after the last.
    let started = Instant::now();
    for i in 1..=3 {
        source.put(&format!("a/{i}"), "v");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let index = source.index();
    let status = run.status_where(|s| s.last_replicated == index).await;
    assert_eq!(sink.applied().len(), passes + 1);
    assert_eq!(sink.values("a/").len(), 4);
    // Behind from the first change (t=0) to the pass (t≈4 s).
    assert!(
        (3.9..4.5).contains(&status.replicate_lag),
        "lag {}",
        status.replicate_lag
    );
    assert!(started.elapsed() >= Duration::from_secs(4));

    // A steady trickle cannot delay a pass past the deadline (8 s after its first change).
    let started = Instant::now();
    let first = source.put("a/t0", "v");
    let trickle = {
        let source = source.clone();
        tokio::spawn(async move {
            for i in 1..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                source.put(&format!("a/t{i}"), "v");
            }
        })
    };
    run.status_where(|s| s.last_replicated >= first).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(8) && elapsed < Duration::from_secs(9),
        "{elapsed:?}"
    );
    trickle.abort();
    run.stop().await.unwrap();
}

/// The runner's future can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn run_future_is_send(source: MemorySource, sink: MemorySink) -> impl Future + Send {
    Replicator::new(ReplicateConfig::default(), source, sink).run(async {})
}
