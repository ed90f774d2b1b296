//! The KV replication figures of BENCHMARKS.md, measured on two datacenters in this process (three
//! servers in dc1, one in dc2) under tribune-netem's layer, at RTT 0 and at an emulated 50 ms:
//!
//! - the first full pass of 100,000 keys;
//! - the lag from a write acknowledged in dc1 to the replicator's status in dc2 covering it, while
//!   dc1 takes 1,000 updates/s on a 10,000-key prefix (the status record is written in the same
//!   transaction as the pass's last batch, so it covers only data already in dc2);
//!
//! each for tribune-replicate (deltas, 64-operation transactions) and for a loop that replicates as
//! consul-replicate does (a blocking recursive read of the whole prefix, one PUT per key whose
//! ModifyIndex passed the last replicated index, a listing of the destination's keys for deletes).
//! Both talk to dc2's agent over HTTP and read dc1 through it with `?dc=dc1`.
//!
//! `cargo test -p tribune --test t37_replicate_figures -- --ignored --nocapture --test-threads=1`
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::federation::{Write, write_all};
use common::{Client, request, wait_for};
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};
use tribune_netem::link::Network;
use tribune_replicate::http::{ClientConfig, ConsulClient, HttpSink, HttpSource};
use tribune_replicate::{PrefixSpec, ReplicateConfig, Replicator};

const LIMIT: Duration = Duration::from_secs(900);
/// Where the consul-replicate-style loop records its last replicated index.
const BASELINE_STATUS: &str = "baseline-status";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tribune,
    PerKeyPuts,
}

/// A replicator of `prefix@dc1` running against dc2's agent until dropped.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn start(kind: Kind, dest: SocketAddr, prefix: &str) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let prefix = prefix.to_owned();
    let task = match kind {
        Kind::Tribune => tokio::spawn(async move {
            let client = ConsulClient::new(ClientConfig::new(dest.to_string())).unwrap();
            let config = ReplicateConfig {
                prefixes: vec![format!("{prefix}@dc1").parse::<PrefixSpec>().unwrap()],
                ..ReplicateConfig::default()
            };
            let replicator = Replicator::new(config, HttpSource::new(client.clone()), HttpSink::new(client));
            let _ = replicator
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        }),
        Kind::PerKeyPuts => tokio::spawn(async move {
            tokio::select! {
                _ = per_key_loop(dest, &prefix) => {}
                _ = stopped => {}
            }
        }),
    };
    Running {
        stop: Some(stop),
        task,
    }
}

/// Replicates as consul-replicate does: whole-prefix blocking reads, one PUT per changed key.
async fn per_key_loop(dest: SocketAddr, prefix: &str) {
    let mut last_index = 0u64;
    let mut replicated = 0u64;
    loop {
        let reply = request(
            dest,
            "GET",
            &format!("/v1/kv/{prefix}?recurse&dc=dc1&stale&index={last_index}&wait=60s"),
            &[],
            b"",
        )
        .await;
        let index = reply.index();
        if index == last_index {
            continue;
        }
        let entries = if reply.status == 404 {
            Value::Array(Vec::new())
        } else {
            reply.json()
        };
        let mut source_keys = std::collections::HashSet::new();
        for entry in entries.as_array().unwrap() {
            let key = entry["Key"].as_str().unwrap();
            source_keys.insert(key.to_owned());
            if entry["ModifyIndex"].as_u64().unwrap() <= replicated {
                continue;
            }
            let value = entry["Value"]
                .as_str()
                .map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap())
                .unwrap_or_default();
            let flags = entry["Flags"].as_u64().unwrap();
            let put = request(dest, "PUT", &format!("/v1/kv/{key}?flags={flags}"), &[], &value).await;
            assert_eq!(put.status, 200, "{}", put.text());
        }
        let keys = request(dest, "GET", &format!("/v1/kv/{prefix}?keys"), &[], b"").await;
        if keys.status == 200 {
            for key in keys.json().as_array().unwrap() {
                let key = key.as_str().unwrap();
                if !source_keys.contains(key) {
                    request(dest, "DELETE", &format!("/v1/kv/{key}"), &[], b"").await;
                }
            }
        }
        let status = json!({"LastReplicated": index}).to_string();
        request(
            dest,
            "PUT",
            &format!("/v1/kv/{BASELINE_STATUS}"),
            &[],
            status.as_bytes(),
        )
        .await;
        replicated = index;
        last_index = index;
    }
}

/// The replicator's last replicated source index as dc2 shows it, and the status key's own index.
async fn replicated_index(kind: Kind, dest: SocketAddr, wait_after: u64) -> (u64, u64) {
    let path = match kind {
        Kind::Tribune => "service/consul-replicate/statuses/?recurse".to_owned(),
        Kind::PerKeyPuts => format!("{BASELINE_STATUS}?recurse"),
    };
    let reply = request(
        dest,
        "GET",
        &format!("/v1/kv/{path}&index={wait_after}&wait=10s"),
        &[],
        b"",
    )
    .await;
    let index = reply.index();
    if reply.status == 404 {
        return (0, index);
    }
    let last = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["Value"].as_str()?)
                .ok()?;
            serde_json::from_slice::<Value>(&raw).ok()?["LastReplicated"].as_u64()
        })
        .max()
        .unwrap_or(0);
    (last, index)
}

/// Waits until the replicator's status covers `source_index`.
async fn wait_replicated(kind: Kind, dest: SocketAddr, source_index: u64) {
    let deadline = Instant::now() + LIMIT;
    let mut seen = 0;
    loop {
        let (last, index) = replicated_index(kind, dest, seen).await;
        if last >= source_index {
            return;
        }
        seen = index;
        assert!(Instant::now() < deadline, "{kind:?} did not reach {source_index}");
    }
}

async fn source_index(source: SocketAddr, prefix: &str) -> u64 {
    request(source, "GET", &format!("/v1/kv/{prefix}?keys"), &[], b"")
        .await
        .index()
}

/// Clears dc2's copy and status records between measurements.
async fn reset_destination(dest: SocketAddr, prefix: &str) {
    for path in [
        format!("/v1/kv/{prefix}?recurse"),
        "/v1/kv/service/consul-replicate/statuses/?recurse".to_owned(),
        format!("/v1/kv/{BASELINE_STATUS}"),
    ] {
        assert_eq!(Client(dest).delete(&path).await.status, 200);
    }
}

async fn first_full_pass(kind: Kind, source: SocketAddr, dest: SocketAddr) -> Duration {
    reset_destination(dest, "full/").await;
    let target = source_index(source, "full/").await;
    let started = Instant::now();
    let _running = start(kind, dest, "full/");
    wait_replicated(kind, dest, target).await;
    started.elapsed()
}

/// Updates `updates` keys of `prefix` at `rate` per second from 8 writers; returns each write's
/// index and when it was acknowledged. Values carry `tag`: a set to an unchanged value is not a
/// write (it keeps its ModifyIndex, as in Consul), so each measurement writes values of its own.
async fn paced_updates(
    source: SocketAddr,
    prefix: &str,
    tag: &str,
    keys: usize,
    rate: u32,
    updates: usize,
) -> Vec<(u64, Instant)> {
    let acknowledged = Arc::new(Mutex::new(Vec::with_capacity(updates)));
    let writers = 8;
    let period = Duration::from_secs(1) * writers / rate;
    let mut tasks = Vec::new();
    for w in 0..writers as usize {
        let acknowledged = Arc::clone(&acknowledged);
        let prefix = prefix.to_owned();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            for n in (w..updates).step_by(writers as usize) {
                tokio::time::sleep_until(next).await;
                next += period;
                let key = format!("{prefix}k{:05}", (n * 7919) % keys);
                let body = json!([{"KV": {"Verb": "set", "Key": key,
                    "Value": base64::engine::general_purpose::STANDARD.encode(format!("{tag}-u{n}"))}}]);
                let reply = request(source, "PUT", "/v1/txn", &[], body.to_string().as_bytes()).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                let index = reply.json()["Results"][0]["KV"]["ModifyIndex"].as_u64().unwrap();
                acknowledged.lock().await.push((index, Instant::now()));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = std::mem::take(&mut *acknowledged.lock().await);
    all.sort();
    all
}

/// p50 and p99 lag (ms) of updates at 1,000/s on a 10,000-key prefix.
async fn lag_at_load(kind: Kind, source: SocketAddr, dest: SocketAddr) -> (f64, f64, usize) {
    const KEYS: usize = 10_000;
    const UPDATES: usize = 10_000;
    reset_destination(dest, "lag/").await;
    let target = source_index(source, "lag/").await;
    let _running = start(kind, dest, "lag/");
    wait_replicated(kind, dest, target).await;

    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let observer = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut index = 0;
            loop {
                let (last, status_index) = replicated_index(kind, dest, index).await;
                seen.lock().await.entry(last).or_insert_with(Instant::now);
                index = status_index;
            }
        })
    };
    let writes = paced_updates(source, "lag/", &format!("{kind:?}"), KEYS, 1_000, UPDATES).await;
    let last_write = writes.last().unwrap().0;
    let _ = tokio::time::timeout(LIMIT, wait_replicated(kind, dest, last_write)).await;
    observer.abort();
    // The status that covered the last writes may have come after the observer's last look.
    let (last, _) = replicated_index(kind, dest, 0).await;
    seen.lock().await.entry(last).or_insert_with(Instant::now);
    let covered: Vec<(u64, Instant)> = {
        let mut v: Vec<(u64, Instant)> = seen.lock().await.iter().map(|(i, t)| (*i, *t)).collect();
        v.sort();
        v
    };
    let mut lags: Vec<f64> = writes
        .iter()
        .filter_map(|(index, acked)| {
            // The first status that covers the write (it may be seen before the writer has its
            // acknowledgement: that counts as no lag).
            covered
                .iter()
                .filter(|(last, _)| last >= index)
                .map(|(_, at)| *at)
                .min()
                .map(|at| at.saturating_duration_since(*acked).as_secs_f64() * 1e3)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let p = |q: usize| {
        lags.get((lags.len() * q / 100).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    (p(50), p(99), lags.len())
}

async fn figures(one_way: Duration) {
    let network = Network::new(37);
    let (dc1, d1) = common::wan::two_datacenters(&network, one_way).await;
    let source = dc1.iter().find(|n| n.is_leader()).unwrap().http_addr().unwrap();
    let dest = d1.http_addr().unwrap();
    println!("== RTT {:?}", one_way * 2);

    let full: Vec<(String, Vec<u8>)> = (0..100_000)
        .map(|i| {
            (
                format!("full/k{i:06}"),
                format!("value-{i:06}-0123456789abcdef").into_bytes(),
            )
        })
        .collect();
    write_all(
        source,
        &full.iter().map(|(k, v)| Write::Set(k, v, 0)).collect::<Vec<_>>(),
    )
    .await;
    let lag_keys: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("lag/k{i:05}"), b"initial".to_vec()))
        .collect();
    write_all(
        source,
        &lag_keys
            .iter()
            .map(|(k, v)| Write::Set(k, v, 0))
            .collect::<Vec<_>>(),
    )
    .await;
    wait_for("dc2 to route", Duration::from_secs(30), || async {
        Client(dest).get("/v1/kv/full/k000000?dc=dc1").await.status == 200
    })
    .await;

    for kind in [Kind::Tribune, Kind::PerKeyPuts] {
        let took = first_full_pass(kind, source, dest).await;
        println!(
            "{kind:?}: first full pass of 100,000 keys: {:.1} s",
            took.as_secs_f64()
        );
    }
    for kind in [Kind::Tribune, Kind::PerKeyPuts] {
        let (p50, p99, n) = lag_at_load(kind, source, dest).await;
        println!(
            "{kind:?}: lag at 1,000 updates/s on 10,000 keys: p50 {p50:.1} ms, p99 {p99:.1} ms ({n} writes)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures for BENCHMARKS.md; minutes of load"]
async fn replication_figures_rtt_0() {
    figures(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures for BENCHMARKS.md; minutes of load"]
async fn replication_figures_rtt_50ms() {
    figures(Duration::from_millis(25)).await;
}
