//! Crash safety of the RocksDB backend: a store killed (SIGKILL) while applying, or dropped between
//! batches, reopens with exactly the commands up to its recorded last applied index — never part of one.
#![cfg(feature = "rocksdb")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use tribune_kvstore::{Command, NewSession, SessionBehavior, Store, StoreConfig, TxnOp};

const CHILD_DIR_ENV: &str = "TRIBUNE_KVSTORE_CRASH_DIR";

/// The deterministic workload: index `i` always maps to the same multi-key command.
fn command_for(i: u64) -> Command {
    let key = |j: u64| format!("k/{:02}", (i * 7 + j) % 40);
    match i % 10 {
        0 => Command::KvDeleteTree {
            prefix: format!("k/{}", i % 4),
        },
        3 => Command::SessionCreate(NewSession {
            id: format!("s{i}"),
            name: String::new(),
            node: "n".into(),
            lock_delay: Duration::ZERO,
            behavior: if i % 20 == 3 {
                SessionBehavior::Delete
            } else {
                SessionBehavior::Release
            },
            ttl: None,
            node_checks: Vec::new(),
        }),
        4 => Command::Txn {
            ops: (0..4)
                .map(|j| TxnOp::Lock {
                    key: key(j),
                    value: i.to_le_bytes().to_vec(),
                    flags: j,
                    session: format!("s{}", i - 1),
                })
                .collect(),
        },
        8 => Command::SessionDestroy {
            id: format!("s{}", i - 5),
        },
        _ => Command::Txn {
            ops: (0..6)
                .map(|j| TxnOp::Set {
                    key: key(j),
                    value: vec![i as u8; 64 + j as usize],
                    flags: i,
                })
                .collect(),
        },
    }
}

fn expected_state(last_applied: u64) -> Vec<tribune_kvstore::StateRecord> {
    let model = common::memory();
    for i in 1..=last_applied {
        let _ = model.apply(i, &command_for(i));
    }
    model.dump().unwrap()
}

/// The child role: applies the workload forever, printing each applied index. Run only by
/// `killed_mid_apply_reopens_consistent`.
#[test]
#[ignore = "child process of killed_mid_apply_reopens_consistent"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = Store::open_rocksdb(dir.as_ref(), StoreConfig::new(common::DC)).unwrap();
    let start = store.last_applied() + 1;
    for i in start..start + 1_000_000 {
        let _ = store.apply(i, &command_for(i));
        println!("applied {i}");
    }
}

#[test]
fn killed_mid_apply_reopens_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_seen = 0;
    for round in 0..8u64 {
        let mut child = Process::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let target = last_seen + 150 + round * 37;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut reached = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("applied ") {
                reached = n.trim().parse().unwrap();
                if reached >= target {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "child made no progress");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(reached >= target, "child stopped early at {reached}");

        let store = Store::open_rocksdb(dir.path(), StoreConfig::new(common::DC)).unwrap();
        let last = store.last_applied();
        assert!(last >= reached, "recorded {last} < printed {reached}");
        assert_eq!(
            store.dump().unwrap(),
            expected_state(last),
            "round {round}: state differs at index {last}"
        );
        last_seen = last;
    }
}

#[test]
fn dropped_between_batches_reopens_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig::new(common::DC);
    {
        let store = Store::open_rocksdb(dir.path(), config()).unwrap();
        for i in 1..=57 {
            let _ = store.apply(i, &command_for(i));
        }
    }
    let store = Store::open_rocksdb(dir.path(), config()).unwrap();
    assert_eq!(store.last_applied(), 57);
    assert_eq!(store.dump().unwrap(), expected_state(57));
    // The log replays from an older point after a crash: those indexes are skipped, the rest applies.
    for i in 50..=80 {
        let _ = store.apply(i, &command_for(i));
    }
    assert_eq!(store.dump().unwrap(), expected_state(80));
    drop(store);
    // Another datacenter's name is refused.
    assert!(matches!(
        Store::open_rocksdb(dir.path(), StoreConfig::new("dc2")),
        Err(tribune_kvstore::OpenError::DatacenterMismatch { .. })
    ));
}
