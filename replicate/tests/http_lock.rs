//! `SessionLock` against a fake Consul that keeps sessions (with TTLs and lock-delay) and the lock key,
//! and answers blocking reads of it: one holder at a time, takeover when the holder dies, and `lost`.
#![cfg(feature = "http")]
// The fake agent below is test support: a failure in it is a failed test.
#![allow(clippy::unwrap_used)]

mod http_fake;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_fake::{Canned, FakeConsul, Recorded, wait_until};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_replicate::http::{LOCK_FLAGS, SessionLock};

const TTL: Duration = Duration::from_millis(400);
const LOCK_DELAY: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(10);

struct Session {
    ttl: Duration,
    lock_delay: Duration,
    expires: Instant,
}

#[derive(Clone)]
struct Key {
    value: Vec<u8>,
    flags: u64,
    session: Option<String>,
    lock_index: u64,
    modify_index: u64,
}

#[derive(Default)]
struct State {
    index: u64,
    next_session: u64,
    sessions: HashMap<String, Session>,
    keys: HashMap<String, Key>,
    delays: HashMap<String, Instant>,
    renewals: u64,
}

/// The sessions and KV of the fake, as much as a lock needs.
#[derive(Clone)]
struct Agent {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

fn millis(text: &str) -> Duration {
    if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap())
    } else {
        Duration::from_secs(text.strip_suffix('s').unwrap().parse().unwrap())
    }
}

impl Agent {
    fn new() -> Agent {
        Agent {
            state: Arc::new(Mutex::new(State::default())),
            changed: Arc::new(watch::Sender::new(0)),
        }
    }

    fn bump(&self, state: &mut State) -> u64 {
        state.index += 1;
        self.changed.send_replace(state.index);
        state.index
    }

    /// Invalidates a session as Consul does with behavior `release`: its keys are released and get
    /// the lock-delay.
    fn invalidate(&self, state: &mut State, id: &str) {
        let Some(session) = state.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = state
            .keys
            .iter()
            .filter(|(_, key)| key.session.as_deref() == Some(id))
            .map(|(name, _)| name.clone())
            .collect();
        for name in held {
            let index = self.bump(state);
            let key = state.keys.get_mut(&name).unwrap();
            key.session = None;
            key.modify_index = index;
            state.delays.insert(name, Instant::now() + session.lock_delay);
        }
    }

    fn expire(&self) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let expired: Vec<String> = state
            .sessions
            .iter()
            .filter(|(_, session)| session.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.invalidate(&mut state, &id);
        }
    }

    fn holder(&self, key: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .keys
            .get(key)
            .and_then(|k| k.session.clone())
    }

    fn key(&self, key: &str) -> Option<Key> {
        self.state.lock().unwrap().keys.get(key).cloned()
    }

    async fn handle(self, request: Recorded) -> Canned {
        self.expire();
        let path = request.path.clone();
        if let Some(key) = path.strip_prefix("/v1/kv/") {
            return match request.method.as_str() {
                "GET" => self.get(key, &request).await,
                _ => self.put(key, &request),
            };
        }
        let mut state = self.state.lock().unwrap();
        if path == "/v1/session/create" {
            let body = request.json();
            let ttl = millis(body["TTL"].as_str().unwrap());
            let lock_delay = millis(body["LockDelay"].as_str().unwrap());
            state.next_session += 1;
            let id = format!("sess-{}", state.next_session);
            state.sessions.insert(
                id.clone(),
                Session {
                    ttl,
                    lock_delay,
                    expires: Instant::now() + ttl,
                },
            );
            return Canned::ok().json(json!({"ID": id}));
        }
        if let Some(id) = path.strip_prefix("/v1/session/renew/") {
            return match state.sessions.get_mut(id) {
                Some(session) => {
                    session.expires = Instant::now() + session.ttl;
                    let ttl = format!("{}ms", session.ttl.as_millis());
                    state.renewals += 1;
                    Canned::ok().json(json!([{"ID": id, "TTL": ttl}]))
                }
                None => Canned::status(404).body(format!("Session id '{id}' not found")),
            };
        }
        if let Some(id) = path.strip_prefix("/v1/session/destroy/") {
            self.invalidate(&mut state, id);
            return Canned::ok().json(json!(true));
        }
        Canned::status(404)
    }

    async fn get(&self, key: &str, request: &Recorded) -> Canned {
        let index: u64 = request.param("index").map(|i| i.parse().unwrap()).unwrap_or(0);
        let wait = request
            .param("wait")
            .map(|w| millis(&w))
            .unwrap_or(Duration::ZERO);
        let mut changed = self.changed.subscribe();
        if index > 0 {
            let _ = tokio::time::timeout(wait, changed.wait_for(|current| *current > index)).await;
        }
        let state = self.state.lock().unwrap();
        let answer_index = state.index.max(1);
        match state.keys.get(key) {
            None => Canned::status(404).index(answer_index),
            Some(entry) => {
                use base64::Engine as _;
                let mut dir_entry = json!({
                    "Key": key,
                    "Value": base64::engine::general_purpose::STANDARD.encode(&entry.value),
                    "Flags": entry.flags,
                    "CreateIndex": 1,
                    "ModifyIndex": entry.modify_index,
                    "LockIndex": entry.lock_index,
                });
                if let Some(session) = &entry.session {
                    dir_entry["Session"] = json!(session);
                }
                Canned::ok().index(answer_index).json(json!([dir_entry]))
            }
        }
    }

    fn put(&self, key: &str, request: &Recorded) -> Canned {
        let mut state = self.state.lock().unwrap();
        let flags: u64 = request.param("flags").map(|f| f.parse().unwrap()).unwrap_or(0);
        if let Some(id) = request.param("acquire") {
            if !state.sessions.contains_key(&id) {
                return Canned::status(500).body("invalid session");
            }
            if state.delays.get(key).is_some_and(|until| *until > Instant::now()) {
                return Canned::ok().json(json!(false));
            }
            let current = state.keys.get(key).cloned();
            if current
                .as_ref()
                .and_then(|k| k.session.as_ref())
                .is_some_and(|s| *s != id)
            {
                return Canned::ok().json(json!(false));
            }
            let index = self.bump(&mut state);
            let lock_index = current.map(|k| k.lock_index).unwrap_or(0) + 1;
            state.keys.insert(
                key.to_owned(),
                Key {
                    value: request.body.to_vec(),
                    flags,
                    session: Some(id),
                    lock_index,
                    modify_index: index,
                },
            );
            return Canned::ok().json(json!(true));
        }
        if let Some(id) = request.param("release") {
            let held = state.keys.get(key).and_then(|k| k.session.clone());
            if held.as_deref() != Some(id.as_str()) {
                return Canned::ok().json(json!(false));
            }
            let index = self.bump(&mut state);
            let entry = state.keys.get_mut(key).unwrap();
            entry.session = None;
            entry.modify_index = index;
            entry.value = request.body.to_vec();
            entry.flags = flags;
            return Canned::ok().json(json!(true));
        }
        Canned::status(400)
    }
}

/// A fake agent, with sessions expiring on their own as Consul's do.
async fn start() -> (FakeConsul, Agent) {
    let agent = Agent::new();
    let handler_agent = agent.clone();
    let fake = FakeConsul::start(move |request| handler_agent.clone().handle(request)).await;
    let sweeper = agent.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            sweeper.expire();
        }
    });
    (fake, agent)
}

fn lock(fake: &FakeConsul, name: &str) -> SessionLock {
    SessionLock::new(fake.client(), "global/", name)
        .with_ttl(TTL)
        .with_lock_delay(LOCK_DELAY)
        .with_wait(Duration::from_secs(1))
        .with_retry_pause(Duration::from_millis(20))
}

#[tokio::test]
async fn the_lock_is_acquired_renewed_and_released() {
    let (fake, agent) = start().await;
    let mut first = lock(&fake, "replicator on host-a");
    assert!(first.fence().is_none());
    let fence = tokio::time::timeout(DEADLINE, first.acquire())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fence.key, "global/.lock");
    assert_eq!(first.fence(), Some(fence.clone()));
    assert_eq!(first.session(), Some(fence.session.as_str()));

    let created = fake.requests_to("/v1/session/create");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].json(),
        json!({"Name": "replicator on host-a", "TTL": "400ms", "Behavior": "release", "LockDelay": "100ms"})
    );
    let key = agent.key("global/.lock").unwrap();
    assert_eq!(key.session.as_deref(), Some(fence.session.as_str()));
    assert_eq!(key.flags, LOCK_FLAGS);
    let holder: serde_json::Value = serde_json::from_slice(&key.value).unwrap();
    assert_eq!(holder["Holder"], "replicator on host-a");

    // Renewed every TTL/2: the session outlives several TTLs.
    wait_until("three renewals", DEADLINE, || {
        agent.state.lock().unwrap().renewals >= 3
    })
    .await;
    assert_eq!(
        agent.holder("global/.lock").as_deref(),
        Some(fence.session.as_str())
    );
    assert!(first.fence().is_some());

    first.release().await.unwrap();
    assert_eq!(agent.holder("global/.lock"), None);
    assert!(agent.state.lock().unwrap().sessions.is_empty());
    let released = fake
        .requests_to("/v1/kv/global/.lock")
        .into_iter()
        .find(|r| r.param("release").is_some())
        .unwrap();
    assert_eq!(released.param("release"), Some(fence.session.clone()));
}

#[tokio::test]
async fn a_second_replicator_waits_and_takes_over_when_the_first_dies() {
    let (fake, agent) = start().await;
    let mut first = lock(&fake, "a");
    let first_fence = first.acquire().await.unwrap();

    let mut second = lock(&fake, "b");
    let waiting = tokio::spawn(async move {
        let fence = second.acquire().await;
        (second, fence)
    });
    // It waits with blocking reads while the first holds the lock and renews it.
    wait_until("the second replicator's blocking reads", DEADLINE, || {
        fake.requests_to("/v1/kv/global/.lock")
            .iter()
            .filter(|r| r.method == "GET" && r.param("index").is_some_and(|i| i != "0"))
            .count()
            >= 1
    })
    .await;
    let renewals = agent.state.lock().unwrap().renewals;
    wait_until("renewals past a TTL", DEADLINE, || {
        agent.state.lock().unwrap().renewals >= renewals + 3
    })
    .await;
    assert!(!waiting.is_finished());
    assert_eq!(
        agent.holder("global/.lock").as_deref(),
        Some(first_fence.session.as_str())
    );

    // The first dies without releasing: its session expires, and after the lock-delay the second
    // takes the lock.
    let died = Instant::now();
    drop(first);
    let (second, fence) = tokio::time::timeout(DEADLINE, waiting).await.unwrap().unwrap();
    let fence = fence.unwrap();
    let took = died.elapsed();
    assert_ne!(fence.session, first_fence.session);
    assert_eq!(
        agent.holder("global/.lock").as_deref(),
        Some(fence.session.as_str())
    );
    assert!(took >= LOCK_DELAY, "{took:?}");
    assert!(took < TTL * 3 + LOCK_DELAY, "took over after {took:?}");
    second.release().await.unwrap();
}

#[tokio::test]
async fn losing_the_session_or_the_key_resolves_lost() {
    let (fake, agent) = start().await;

    // The session is destroyed behind the holder's back (`consul session destroy`).
    let mut holder = lock(&fake, "a");
    let fence = holder.acquire().await.unwrap();
    let lost = holder.lost();
    {
        let mut state = agent.state.lock().unwrap();
        agent.invalidate(&mut state, &fence.session);
    }
    tokio::time::timeout(DEADLINE, lost).await.unwrap();
    assert!(holder.fence().is_none());
    // Acquiring again takes a new session once the lock-delay has passed.
    let again = tokio::time::timeout(DEADLINE, holder.acquire())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(again.session, fence.session);

    // The key is taken over by another session (an operator forced it).
    let lost = holder.lost();
    {
        let mut state = agent.state.lock().unwrap();
        let index = agent.bump(&mut state);
        let key = state.keys.get_mut("global/.lock").unwrap();
        key.session = Some("intruder".into());
        key.modify_index = index;
    }
    tokio::time::timeout(DEADLINE, lost).await.unwrap();
    assert!(holder.fence().is_none());
    holder.release().await.unwrap();
}

#[tokio::test]
async fn lost_resolves_at_once_when_the_lock_is_not_held() {
    let (fake, _agent) = start().await;
    let idle = lock(&fake, "a");
    tokio::time::timeout(Duration::from_secs(1), idle.lost())
        .await
        .unwrap();
    idle.release().await.unwrap();
}

#[tokio::test]
async fn a_session_that_expired_unnoticed_is_replaced() {
    // The agent lost the first session before its first renewal: acquiring with it answers
    // "invalid session", and the lock starts over with a new one.
    let created = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&created);
    let fake = FakeConsul::start(move |request| {
        let counter = Arc::clone(&counter);
        async move {
            match (request.method.as_str(), request.path.as_str()) {
                ("PUT", "/v1/session/create") => {
                    let mut count = counter.lock().unwrap();
                    *count += 1;
                    Canned::ok().json(json!({"ID": format!("s{count}")}))
                }
                ("GET", "/v1/kv/global/.lock") => Canned::status(404).index(3),
                ("PUT", "/v1/kv/global/.lock") if request.param("acquire").as_deref() == Some("s1") => {
                    Canned::status(500).body("invalid session")
                }
                ("PUT", "/v1/kv/global/.lock") => Canned::ok().json(json!(true)),
                _ => Canned::ok().json(json!(true)),
            }
        }
    })
    .await;
    let mut replacing = lock(&fake, "a").with_ttl(Duration::from_secs(60));
    let fence = tokio::time::timeout(DEADLINE, replacing.acquire())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fence.session, "s2");
    assert_eq!(*created.lock().unwrap(), 2);
    assert!(
        fake.requests_to("/v1/session/destroy/s1").len() == 1,
        "the replaced session is destroyed"
    );
}
