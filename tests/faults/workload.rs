//! Clients that record a history while the nemesis works: registers (reads in each consistency
//! mode, unique-valued writes, `?cas=` writes, deletes), multi-key transactions, and two clients
//! contending for a session lock with a fencing-token-guarded resource. Each request goes to a
//! random server with a short timeout; what may have happened is recorded as indeterminate.
//! In a WAN run, register clients also work on dc2's keys (`wan/k*`) with `?dc=dc2`, through
//! random dc1 servers (forwarded) and through dc2's server itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tribune_check::{KvOp, KvOperation, KvOutcome, LockEvent, LockObservation, ReadMode};

use super::http::{self, NoResponse, Response};

/// How long a client waits for any one answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// The register keys.
pub(crate) const KEYS: usize = 6;
/// The key two clients fight over.
pub(crate) const LOCK_KEY: &str = "lock/a";
const LOCK_DELAY: Duration = Duration::from_secs(1);
const SESSION_TTL: &str = "15s";
/// A session is used for at most this long, well inside its TTL, so it never expires unseen.
const SESSION_USE: Duration = Duration::from_secs(4);

pub(crate) fn key(n: usize) -> String {
    format!("reg/k{n}")
}

/// dc2's register keys (distinct names, so the checker never mixes the two datacenters' keys).
pub(crate) fn wan_key(n: usize) -> String {
    format!("wan/k{n}")
}

/// The datacenter of the WAN keys.
pub(crate) const REMOTE_DC: &str = "dc2";

/// Consul's two answers for a call to another datacenter that was never sent.
pub(crate) const NOT_SENT_ERRORS: [&str; 2] = [
    "No path to datacenter",
    "Remote DC has no server currently reachable",
];

/// `path` with one more query parameter.
fn with_query(path: &str, param: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{param}")
}

/// What the clients share: the servers, the clock and the histories.
pub(crate) struct Shared {
    pub(crate) epoch: Instant,
    pub(crate) servers: Vec<SocketAddr>,
    /// dc2's server, in a WAN run.
    pub(crate) dc2: Option<SocketAddr>,
    pub(crate) ops: Mutex<Vec<KvOperation>>,
    pub(crate) locks: Mutex<Vec<LockEvent>>,
    pub(crate) stop: AtomicBool,
    next_client: AtomicU64,
    /// The fencing-token-guarded resource: per key, the highest `LockIndex` it accepted.
    fence: Mutex<HashMap<String, u64>>,
}

impl Shared {
    pub(crate) fn new(servers: Vec<SocketAddr>, dc2: Option<SocketAddr>) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            servers,
            dc2,
            ops: Mutex::new(Vec::new()),
            locks: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            next_client: AtomicU64::new(1),
            fence: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A client id never used before: a client whose operation is indeterminate may still have it
    /// in flight, so it carries on under a new id (a client sends one operation at a time).
    pub(crate) fn new_client(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn record(&self, op: KvOperation) {
        self.ops.lock().push(op);
    }

    fn server_name(&self, addr: SocketAddr) -> Option<String> {
        if self.dc2 == Some(addr) {
            return Some("dc2-s1".to_owned());
        }
        self.servers
            .iter()
            .position(|s| *s == addr)
            .map(|i| format!("s{}", i + 1))
    }
}

/// What a read answered: value and `ModifyIndex` (404: none), plus the lock fields.
struct Entry {
    value: Option<String>,
    modify_index: Option<u64>,
    lock_index: u64,
    session: Option<String>,
}

fn decode_entry(reply: &Response) -> Option<Entry> {
    match reply.status {
        404 => Some(Entry {
            value: None,
            modify_index: None,
            lock_index: 0,
            session: None,
        }),
        200 => {
            let json = reply.json()?;
            let first = json.as_array()?.first()?;
            let value = match first.get("Value") {
                Some(serde_json::Value::String(text)) => {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
                    String::from_utf8(bytes).ok()?
                }
                _ => String::new(),
            };
            Some(Entry {
                value: Some(value),
                modify_index: first.get("ModifyIndex")?.as_u64(),
                lock_index: first.get("LockIndex").and_then(|v| v.as_u64()).unwrap_or(0),
                session: first.get("Session").and_then(|v| v.as_str()).map(str::to_owned),
            })
        }
        _ => None,
    }
}

/// A write's outcome: `true`/`false` bodies are answers; a 5xx or no answer after sending may have
/// taken effect; a refused connection, a 4xx, or a call to another datacenter that was never sent
/// (Consul's two routing errors) did not.
pub(crate) fn write_outcome(result: &Result<Response, NoResponse>) -> KvOutcome {
    match result {
        Ok(reply) if reply.status == 500 && NOT_SENT_ERRORS.contains(&reply.text().trim()) => {
            KvOutcome::Failed
        }
        Ok(reply) if reply.status == 200 => match reply.text().trim() {
            "true" => KvOutcome::Written { ok: true },
            "false" => KvOutcome::Written { ok: false },
            _ => KvOutcome::Indeterminate,
        },
        Ok(reply) if reply.status >= 500 => KvOutcome::Indeterminate,
        Ok(_) | Err(NoResponse::NotSent) => KvOutcome::Failed,
        Err(NoResponse::Unknown) => KvOutcome::Indeterminate,
    }
}

async fn pause(rng: &mut SmallRng, low_ms: u64, high_ms: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(low_ms..=high_ms))).await;
}

/// One register client: random operations on random keys through random servers until stopped.
/// A `wan` client works on dc2's keys with `?dc=dc2`: three calls in four through a random dc1
/// server (forwarded), the fourth through dc2's own server.
pub(crate) async fn register_client(shared: Arc<Shared>, worker: u64, seed: u64, wan: bool) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut client = shared.new_client();
    let mut known_index: HashMap<String, u64> = HashMap::new();
    let mut sequence = 0u64;
    while !shared.stopped() {
        let n = rng.random_range(0..KEYS);
        let (key, server) = match (wan, shared.dc2) {
            (true, Some(dc2)) if rng.random_range(0..4) == 0 => (wan_key(n), dc2),
            (true, _) => (
                wan_key(n),
                shared.servers[rng.random_range(0..shared.servers.len())],
            ),
            (false, _) => (key(n), shared.servers[rng.random_range(0..shared.servers.len())]),
        };
        let roll = rng.random_range(0..100);
        let (op, method, path, body) = if roll < 50 {
            let (mode, flag) = match roll {
                0..20 => (ReadMode::Default, ""),
                20..35 => (ReadMode::Consistent, "?consistent"),
                _ => (ReadMode::Stale, "?stale"),
            };
            (
                KvOp::Read { mode },
                "GET",
                format!("/v1/kv/{key}{flag}"),
                String::new(),
            )
        } else {
            sequence += 1;
            let value = format!("w{worker}-{sequence}");
            match roll {
                50..80 => (
                    KvOp::Write { value: value.clone() },
                    "PUT",
                    format!("/v1/kv/{key}"),
                    value,
                ),
                80..95 => {
                    let index = known_index.get(&key).copied().unwrap_or(0);
                    (
                        KvOp::Cas {
                            index,
                            value: value.clone(),
                        },
                        "PUT",
                        format!("/v1/kv/{key}?cas={index}"),
                        value,
                    )
                }
                _ => (KvOp::Delete, "DELETE", format!("/v1/kv/{key}"), String::new()),
            }
        };
        let path = if wan {
            with_query(&path, &format!("dc={REMOTE_DC}"))
        } else {
            path
        };
        let invoked_ns = shared.now_ns();
        let result = http::call(server, method, &path, body.as_bytes(), REQUEST_TIMEOUT).await;
        let completed_ns = shared.now_ns();
        let outcome = match &op {
            KvOp::Read { .. } => match result.as_ref().ok().and_then(decode_entry) {
                Some(entry) => {
                    // A 404 makes `?cas=0` the right guess.
                    known_index.insert(key.clone(), entry.modify_index.unwrap_or(0));
                    KvOutcome::Read {
                        value: entry.value,
                        modify_index: entry.modify_index,
                    }
                }
                None => KvOutcome::Failed,
            },
            _ => write_outcome(&result),
        };
        let settled = matches!(outcome, KvOutcome::Read { .. } | KvOutcome::Written { .. });
        let indeterminate = outcome == KvOutcome::Indeterminate;
        shared.record(KvOperation {
            client,
            key,
            op,
            outcome,
            invoked_ns,
            completed_ns,
            server: shared.server_name(server),
        });
        if indeterminate {
            client = shared.new_client();
        }
        if settled {
            pause(&mut rng, 5, 25).await;
        } else {
            pause(&mut rng, 100, 250).await;
        }
    }
}

/// Transactions of two or three `set`s on distinct register keys, recorded as the single-key writes
/// they are (the checker checks registers, not multi-key isolation).
pub(crate) async fn txn_client(shared: Arc<Shared>, worker: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut sequence = 0u64;
    while !shared.stopped() {
        let count = rng.random_range(2..=3);
        let mut keys: Vec<usize> = (0..KEYS).collect();
        let mut chosen = Vec::new();
        for _ in 0..count {
            chosen.push(keys.swap_remove(rng.random_range(0..keys.len())));
        }
        let mut writes = Vec::new();
        let mut body = Vec::new();
        for n in chosen {
            sequence += 1;
            let value = format!("t{worker}-{sequence}");
            body.push(serde_json::json!({"KV": {
                "Verb": "set",
                "Key": key(n),
                "Value": base64::engine::general_purpose::STANDARD.encode(&value),
            }}));
            writes.push((key(n), value));
        }
        let body = serde_json::Value::Array(body).to_string();
        let server = shared.servers[rng.random_range(0..shared.servers.len())];
        let invoked_ns = shared.now_ns();
        let result = http::call(server, "PUT", "/v1/txn", body.as_bytes(), REQUEST_TIMEOUT).await;
        let completed_ns = shared.now_ns();
        let outcome = match &result {
            Ok(reply) if reply.status == 200 => KvOutcome::Written { ok: true },
            // 409: rolled back; other 4xx: refused.
            Ok(reply) if reply.status < 500 => KvOutcome::Failed,
            Ok(_) | Err(NoResponse::Unknown) => KvOutcome::Indeterminate,
            Err(NoResponse::NotSent) => KvOutcome::Failed,
        };
        // Each key's write gets a client of its own: the writes are concurrent parts of one request.
        for (key, value) in writes {
            shared.record(KvOperation {
                client: shared.new_client(),
                key,
                op: KvOp::Write { value },
                outcome: outcome.clone(),
                invoked_ns,
                completed_ns,
                server: shared.server_name(server),
            });
        }
        pause(&mut rng, 150, 400).await;
    }
}

/// A `?consistent` read of the lock key, recorded as an observation.
async fn observe_lock(shared: &Shared, server: SocketAddr) -> Option<Entry> {
    let path = format!("/v1/kv/{LOCK_KEY}?consistent");
    let reply = http::call(server, "GET", &path, b"", REQUEST_TIMEOUT)
        .await
        .ok()?;
    let observed_ns = shared.now_ns();
    let entry = decode_entry(&reply)?;
    shared.locks.lock().push(LockEvent::Observed(LockObservation {
        key: LOCK_KEY.to_owned(),
        modify_index: entry.modify_index.unwrap_or(0),
        lock_index: entry.lock_index,
        session: entry.session.clone(),
        observed_ns,
    }));
    Some(entry)
}

/// Presents the token (key, lock index, session) to the guarded resource.
fn fence(shared: &Shared, client: u64, lock_index: u64, session: &str) {
    let accepted = {
        let mut fence = shared.fence.lock();
        let highest = fence.entry(LOCK_KEY.to_owned()).or_insert(0);
        let accepted = lock_index >= *highest;
        if accepted {
            *highest = lock_index;
        }
        accepted
    };
    shared.locks.lock().push(LockEvent::Fenced {
        client,
        key: LOCK_KEY.to_owned(),
        lock_index,
        session: session.to_owned(),
        accepted,
        at_ns: shared.now_ns(),
    });
}

/// One of two clients contending for [`LOCK_KEY`]: a session (not tied to node health, so only
/// its destroy ends it), acquisitions, a fenced resource used while holding, releases.
pub(crate) async fn lock_client(shared: Arc<Shared>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let client = shared.new_client();
    let pick = |rng: &mut SmallRng| shared.servers[rng.random_range(0..shared.servers.len())];
    while !shared.stopped() {
        let body = serde_json::json!({
            "Name": format!("lock-client-{client}"),
            "TTL": SESSION_TTL,
            "LockDelay": format!("{}s", LOCK_DELAY.as_secs()),
            "Behavior": "release",
            "NodeChecks": [],
            "Checks": [],
        })
        .to_string();
        let created = http::call(
            pick(&mut rng),
            "PUT",
            "/v1/session/create",
            body.as_bytes(),
            REQUEST_TIMEOUT,
        )
        .await
        .ok()
        .filter(|reply| reply.status == 200)
        .and_then(|reply| reply.json())
        .and_then(|json| json.get("ID")?.as_str().map(str::to_owned));
        let Some(session) = created else {
            pause(&mut rng, 100, 250).await;
            continue;
        };
        let started = Instant::now();
        while !shared.stopped() && started.elapsed() < SESSION_USE {
            let server = pick(&mut rng);
            let path = format!("/v1/kv/{LOCK_KEY}?acquire={session}");
            let invoked_ns = shared.now_ns();
            let result = http::call(
                server,
                "PUT",
                &path,
                format!("{client}").as_bytes(),
                REQUEST_TIMEOUT,
            )
            .await;
            let outcome = write_outcome(&result);
            shared.locks.lock().push(LockEvent::Acquire {
                client,
                key: LOCK_KEY.to_owned(),
                session: session.clone(),
                invoked_ns,
                completed_ns: shared.now_ns(),
                outcome: outcome.clone(),
            });
            if outcome != (KvOutcome::Written { ok: true }) {
                let _ = observe_lock(&shared, pick(&mut rng)).await;
                pause(&mut rng, 100, 300).await;
                continue;
            }
            // Holding: learn the token, use the resource a few times, then release.
            let uses = rng.random_range(1..=3);
            for _ in 0..uses {
                if let Some(entry) = observe_lock(&shared, pick(&mut rng)).await
                    && entry.session.as_deref() == Some(session.as_str())
                {
                    fence(&shared, client, entry.lock_index, &session);
                }
                pause(&mut rng, 50, 200).await;
            }
            let path = format!("/v1/kv/{LOCK_KEY}?release={session}");
            let invoked_ns = shared.now_ns();
            let result = http::call(pick(&mut rng), "PUT", &path, b"", REQUEST_TIMEOUT).await;
            shared.locks.lock().push(LockEvent::Release {
                client,
                key: LOCK_KEY.to_owned(),
                session: session.clone(),
                invoked_ns,
                completed_ns: shared.now_ns(),
                outcome: write_outcome(&result),
            });
            pause(&mut rng, 50, 200).await;
        }
        // End the session; until the destroy is confirmed it may end at any time up to its TTL.
        let invoked_ns = shared.now_ns();
        let path = format!("/v1/session/destroy/{session}");
        let mut confirmed = None;
        for _ in 0..10 {
            let result = http::call(pick(&mut rng), "PUT", &path, b"", REQUEST_TIMEOUT).await;
            if matches!(&result, Ok(reply) if reply.status == 200) {
                confirmed = Some(shared.now_ns());
                break;
            }
            pause(&mut rng, 100, 250).await;
        }
        let completed_ns = confirmed.unwrap_or(invoked_ns + 2 * 15_000_000_000);
        shared.locks.lock().push(LockEvent::SessionInvalidated {
            session,
            invoked_ns,
            completed_ns,
            lock_delay_ns: u64::try_from(LOCK_DELAY.as_nanos()).unwrap_or(u64::MAX),
        });
    }
}

/// After the run: a `?consistent` read of every register key through any server that answers,
/// recorded in the history, so lost writes show. Returns the keys it could not read.
pub(crate) async fn final_reads(shared: &Shared, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let client = shared.new_client();
    let mut missing = Vec::new();
    // dc2's keys are read from dc2's own server: the question is what dc2 kept, not the route.
    let keys = (0..KEYS).map(|n| (key(n), None)).chain(
        shared
            .dc2
            .iter()
            .flat_map(|dc2| (0..KEYS).map(|n| (wan_key(n), Some(*dc2)))),
    );
    for (key, remote) in keys {
        let mut done = false;
        let mut attempt = 0usize;
        while !done && Instant::now() < deadline {
            let server = remote.unwrap_or(shared.servers[attempt % shared.servers.len()]);
            attempt += 1;
            let invoked_ns = shared.now_ns();
            let path = format!("/v1/kv/{key}?consistent");
            let result = http::call(server, "GET", &path, b"", REQUEST_TIMEOUT).await;
            if let Some(entry) = result.as_ref().ok().and_then(decode_entry) {
                shared.record(KvOperation {
                    client,
                    key: key.clone(),
                    op: KvOp::Read {
                        mode: ReadMode::Consistent,
                    },
                    outcome: KvOutcome::Read {
                        value: entry.value,
                        modify_index: entry.modify_index,
                    },
                    invoked_ns,
                    completed_ns: shared.now_ns(),
                    server: shared.server_name(server),
                });
                done = true;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !done {
            missing.push(key);
        }
    }
    missing
}
