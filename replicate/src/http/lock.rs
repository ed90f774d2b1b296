//! [`SessionLock`]: one replicator per datacenter, as `consul lock PREFIX` gives it, built in.
//!
//! The lock is a KV key (`<prefix>/.lock`) acquired with a session of the local agent. The session has a
//! TTL, renewed in the background every TTL/2; when the holder dies its session expires, the agent
//! releases the key (behavior `release`), and after the lock-delay a waiting replicator takes it. The
//! holder learns it lost the lock from [`SessionLock::lost`]; its writes are fenced anyway
//! ([`Fence`], checked inside each transaction), so a holder that has not noticed yet cannot write.
//!
//! It is not a general lock library: one key, one holder, no semaphores. Its timers run on Tokio's
//! clock, so tests may pause it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::model::Fence;

use super::client::{Body, ConsulClient, Reply};
use super::wire::{self, DirEntry, LockHolder, RenewedSession, SessionCreate, SessionCreated};
use super::{HttpError, encode_query_value, kv_path};

/// The flags `consul lock` puts on its lock key; the same here, so that its users recognise the key.
pub const LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;

/// The session TTL used unless another is set (Consul's minimum is 10 s).
const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// The lock-delay used unless another is set: how long after the holder's session is invalidated the
/// key cannot be acquired.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(1);
/// The longest one blocking read of the lock key waits.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// The pause before trying again after a refused acquire or a failed read.
const DEFAULT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A lock held by at most one replicator of a datacenter, through a session of the local agent.
///
/// Dropping it stops the renewals without releasing anything: the session then expires and the lock
/// passes on after its TTL and lock-delay. [`SessionLock::release`] hands it on at once.
pub struct SessionLock {
    client: ConsulClient,
    key: String,
    name: String,
    ttl: Duration,
    lock_delay: Duration,
    wait: Duration,
    retry_pause: Duration,
    session: Option<LiveSession>,
    /// Watches the key while the lock is held.
    watcher: Option<JoinHandle<()>>,
}

/// A session this lock created, and its renewals.
struct LiveSession {
    id: String,
    /// Set once the session (or, while held, the lock) is known lost.
    lost: Arc<watch::Sender<bool>>,
    renewer: JoinHandle<()>,
}

impl std::fmt::Debug for SessionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLock")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("session", &self.session.as_ref().map(|s| s.id.as_str()))
            .field("held", &self.watcher.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionLock {
    /// The lock of the replicator of `prefix`: the key `prefix + "/.lock"` (a trailing `/` of the
    /// prefix trimmed first), taken by sessions named `session_name`.
    pub fn new(client: ConsulClient, prefix: &str, session_name: impl Into<String>) -> Self {
        let prefix = prefix.trim_end_matches('/');
        let prefix = prefix.strip_prefix('/').unwrap_or(prefix);
        SessionLock {
            client,
            key: format!("{prefix}/.lock"),
            name: session_name.into(),
            ttl: DEFAULT_TTL,
            lock_delay: DEFAULT_LOCK_DELAY,
            wait: DEFAULT_WAIT,
            retry_pause: DEFAULT_RETRY_PAUSE,
            session: None,
            watcher: None,
        }
    }

    /// The session TTL (default 15 s; Consul refuses less than 10 s). Renewed every TTL/2.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The lock-delay of the session (default 1 s).
    pub fn with_lock_delay(mut self, lock_delay: Duration) -> Self {
        self.lock_delay = lock_delay;
        self
    }

    /// The longest one blocking read of the key waits (default 60 s).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The pause after a refused acquire or a failed read of the key (default 1 s).
    pub fn with_retry_pause(mut self, pause: Duration) -> Self {
        self.retry_pause = pause;
        self
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current session's ID, if one was created and is not known lost.
    pub fn session(&self) -> Option<&str> {
        self.session
            .as_ref()
            .filter(|session| !*session.lost.borrow())
            .map(|session| session.id.as_str())
    }

    /// The fence for writes, while the lock is held and not known lost.
    pub fn fence(&self) -> Option<Fence> {
        self.watcher.as_ref()?;
        self.session().map(|session| Fence {
            key: self.key.clone(),
            session: session.to_owned(),
        })
    }

    /// Waits until this replicator holds the lock, and returns the fence its writes carry.
    ///
    /// Creates a session when there is none (or it was lost), then waits with blocking reads until the
    /// key is free and acquires it. An error leaves the session in place: call again after a pause,
    /// and the same session is used if it still lives.
    pub async fn acquire(&mut self) -> Result<Fence, HttpError> {
        if let Some(fence) = self.fence() {
            return Ok(fence);
        }
        self.stop_watcher();
        loop {
            let (id, lost) = self.live_session().await?;
            let mut lost_rx = lost.subscribe();
            let mut index = 0u64;
            loop {
                let path = format!(
                    "{}?index={index}&wait={}s",
                    kv_path(&self.key),
                    self.wait.as_secs().max(1)
                );
                let reply = tokio::select! {
                    reply = self.client.get_blocking(&path, self.wait) => reply?,
                    () = wait_lost(&mut lost_rx) => break,
                };
                let answered = reply.index()?;
                let free = if reply.is_not_found() {
                    true
                } else {
                    match holder(&reply.ok()?, &self.key)? {
                        None => true,
                        Some(holder) if holder == id => return Ok(self.held(id, answered)),
                        Some(_) => false,
                    }
                };
                index = next_index(index, answered);
                if !free {
                    continue;
                }
                match self.try_acquire(&id).await {
                    Ok(true) => return Ok(self.held(id, None)),
                    Ok(false) => {}
                    // The session expired before its renewer noticed: start over with a new one.
                    Err(HttpError::Status {
                        status: 500, body, ..
                    }) if body.contains("invalid session") => {
                        lost.send_replace(true);
                        break;
                    }
                    Err(error) => return Err(error),
                }
                if *lost_rx.borrow() {
                    break;
                }
                // Refused while free: inside the previous holder's lock-delay, or another replicator
                // was faster. Look again shortly, without blocking on an index that will not move.
                tokio::time::sleep(self.retry_pause).await;
                index = 0;
            }
        }
    }

    /// Resolves once the lock is lost: the session could not be renewed (or the agent no longer
    /// knows it), or the key is no longer held by it. Resolves at once when the lock is not held.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let receiver = match (&self.watcher, &self.session) {
            (Some(_), Some(session)) => Some(session.lost.subscribe()),
            _ => None,
        };
        async move {
            if let Some(mut receiver) = receiver {
                wait_lost(&mut receiver).await;
            }
        }
    }

    /// Releases the key (when held) and destroys the session, so another replicator may take over
    /// at once. For a clean stop.
    pub async fn release(mut self) -> Result<(), HttpError> {
        let held = self.watcher.is_some();
        self.stop_watcher();
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        session.renewer.abort();
        let released = if held {
            let path = format!(
                "{}?release={}&flags={LOCK_FLAGS}",
                kv_path(&self.key),
                encode_query_value(&session.id)
            );
            self.client
                .put(&path, Body::Raw(Bytes::new()))
                .await
                .and_then(Reply::ok)
                .map(drop)
        } else {
            Ok(())
        };
        let path = format!("/v1/session/destroy/{}", encode_query_value(&session.id));
        let destroyed = self
            .client
            .put(&path, Body::Raw(Bytes::new()))
            .await
            .and_then(Reply::ok);
        session.lost.send_replace(true);
        released.and(destroyed).map(drop)
    }

    /// The lock is held by session `id`: watch the key from `index` and return the fence.
    fn held(&mut self, id: String, index: Option<u64>) -> Fence {
        let lost = self
            .session
            .as_ref()
            .map(|session| Arc::clone(&session.lost))
            .unwrap_or_else(|| Arc::new(watch::Sender::new(true)));
        let watcher = KeyWatcher {
            client: self.client.clone(),
            key: self.key.clone(),
            session: id.clone(),
            wait: self.wait,
            retry_pause: self.retry_pause,
            lost,
        };
        self.watcher = Some(tokio::spawn(watcher.run(index.unwrap_or(0))));
        Fence {
            key: self.key.clone(),
            session: id,
        }
    }

    /// `PUT /v1/kv/<key>?acquire=<id>`: whether the agent gave the lock.
    async fn try_acquire(&self, id: &str) -> Result<bool, HttpError> {
        let path = format!(
            "{}?acquire={}&flags={LOCK_FLAGS}",
            kv_path(&self.key),
            encode_query_value(id)
        );
        let value = serde_json::to_vec(&LockHolder {
            holder: &self.name,
            session: id,
        })
        .map_err(|error| HttpError::BadRequest {
            method: "PUT".into(),
            path: path.clone(),
            reason: error.to_string(),
        })?;
        let reply = self
            .client
            .put(&path, Body::Raw(Bytes::from(value)))
            .await?
            .ok()?;
        let taken: bool = reply.json()?;
        Ok(taken)
    }

    /// The live session, created (with its renewals) when there is none or it was lost.
    async fn live_session(&mut self) -> Result<(String, Arc<watch::Sender<bool>>), HttpError> {
        if let Some(session) = &self.session
            && !*session.lost.borrow()
        {
            return Ok((session.id.clone(), Arc::clone(&session.lost)));
        }
        if let Some(old) = self.session.take() {
            old.renewer.abort();
            // Best effort: a session we stopped renewing expires by itself anyway.
            let path = format!("/v1/session/destroy/{}", encode_query_value(&old.id));
            if let Err(error) = self.client.put(&path, Body::Raw(Bytes::new())).await {
                tracing::debug!(session = %old.id, %error, "destroying a lost session");
            }
        }
        let body = serde_json::to_vec(&SessionCreate {
            name: self.name.clone(),
            ttl: go_duration(self.ttl),
            behavior: "release",
            lock_delay: go_duration(self.lock_delay),
        })
        .map_err(|error| HttpError::BadRequest {
            method: "PUT".into(),
            path: "/v1/session/create".into(),
            reason: error.to_string(),
        })?;
        let reply = self
            .client
            .put("/v1/session/create", Body::Json(Bytes::from(body)))
            .await?
            .ok()?;
        let created: SessionCreated = reply.json()?;
        if created.id.is_empty() {
            return Err(reply.decode_error("the new session has no ID".to_owned()));
        }
        let lost = Arc::new(watch::Sender::new(false));
        let renewer = Renewer {
            client: self.client.clone(),
            session: created.id.clone(),
            ttl: self.ttl,
            retry_pause: self.retry_pause,
            lost: Arc::clone(&lost),
        };
        let renewer = tokio::spawn(renewer.run(Instant::now()));
        tracing::info!(session = %created.id, key = %self.key, "created the replication lock's session");
        self.session = Some(LiveSession {
            id: created.id.clone(),
            lost: Arc::clone(&lost),
            renewer,
        });
        Ok((created.id, lost))
    }

    fn stop_watcher(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        self.stop_watcher();
        if let Some(session) = self.session.take() {
            session.renewer.abort();
            session.lost.send_replace(true);
        }
    }
}

/// Renews a session every TTL/2 until the agent no longer knows it, or no renewal has succeeded for
/// a whole TTL; then marks it lost.
struct Renewer {
    client: ConsulClient,
    session: String,
    ttl: Duration,
    retry_pause: Duration,
    lost: Arc<watch::Sender<bool>>,
}

impl Renewer {
    async fn run(self, created: Instant) {
        let path = format!("/v1/session/renew/{}", encode_query_value(&self.session));
        let mut ttl = self.ttl;
        // When the last renewal that succeeded was sent: the agent renewed the session after that.
        let mut renewed = created;
        let mut pause = ttl / 2;
        loop {
            tokio::time::sleep(pause).await;
            let sent = Instant::now();
            // A renewal answered after the next one is due is worth nothing.
            let limit = self
                .client
                .request_timeout()
                .min(ttl / 2)
                .max(Duration::from_millis(1));
            match self.client.call(Method::PUT, &path, None, limit).await {
                Ok(reply) if reply.is_ok() => {
                    renewed = sent;
                    // The agent may answer a longer TTL, asking for fewer renewals.
                    let answered = reply
                        .json::<Vec<RenewedSession>>()
                        .ok()
                        .and_then(|sessions| sessions.into_iter().next())
                        .and_then(|session| session.ttl)
                        .and_then(|text| parse_go_duration(&text));
                    if let Some(answered) = answered.filter(|answered| *answered > ttl) {
                        ttl = answered;
                    }
                    pause = ttl / 2;
                    continue;
                }
                Ok(reply) if reply.is_not_found() => {
                    tracing::warn!(session = %self.session, "the agent no longer knows the lock's session");
                    self.lost.send_replace(true);
                    return;
                }
                Ok(reply) => {
                    let error = reply.status_error();
                    tracing::warn!(session = %self.session, %error, "renewing the lock's session");
                }
                Err(error) => {
                    tracing::warn!(session = %self.session, %error, "renewing the lock's session");
                }
            }
            if Instant::now().saturating_duration_since(renewed) >= ttl {
                tracing::warn!(session = %self.session, ?ttl, "no renewal of the lock's session within its TTL");
                self.lost.send_replace(true);
                return;
            }
            pause = self.retry_pause.min(ttl / 2);
        }
    }
}

/// Watches the lock key while it is held; marks the lock lost when the key is gone or held by
/// another session.
struct KeyWatcher {
    client: ConsulClient,
    key: String,
    session: String,
    wait: Duration,
    retry_pause: Duration,
    lost: Arc<watch::Sender<bool>>,
}

impl KeyWatcher {
    async fn run(self, mut index: u64) {
        let mut lost_rx = self.lost.subscribe();
        loop {
            let path = format!(
                "{}?index={index}&wait={}s",
                kv_path(&self.key),
                self.wait.as_secs().max(1)
            );
            let reply = tokio::select! {
                reply = self.client.get_blocking(&path, self.wait) => reply,
                () = wait_lost(&mut lost_rx) => return,
            };
            let outcome = reply.and_then(|reply| {
                if reply.is_not_found() {
                    return Ok((None, reply.index()?));
                }
                let reply = reply.ok()?;
                Ok((holder(&reply, &self.key)?, reply.index()?))
            });
            match outcome {
                Ok((holder, answered)) => {
                    if holder.as_deref() != Some(self.session.as_str()) {
                        tracing::warn!(key = %self.key, holder = ?holder, "the replication lock was lost");
                        self.lost.send_replace(true);
                        return;
                    }
                    index = next_index(index, answered);
                }
                Err(error) => {
                    // The renewer decides whether the session lives; a failed read only waits.
                    tracing::debug!(key = %self.key, %error, "watching the replication lock");
                    tokio::time::sleep(self.retry_pause).await;
                }
            }
        }
    }
}

/// The session holding `key`, from a read of it.
fn holder(reply: &Reply, key: &str) -> Result<Option<String>, HttpError> {
    let entries: Vec<DirEntry> = reply.json()?;
    let entries = wire::entries(entries).map_err(|reason| reply.decode_error(reason))?;
    Ok(entries
        .into_iter()
        .find(|entry| entry.key == key)
        .and_then(|entry| entry.session))
}

/// The index of the next blocking read: the answer's, back to the start when it went backwards, and
/// never 0 once an answer came (0 would not block).
fn next_index(previous: u64, answered: Option<u64>) -> u64 {
    match answered {
        None => previous,
        Some(answered) if answered < previous => 0,
        Some(answered) => answered.max(1),
    }
}

async fn wait_lost(receiver: &mut watch::Receiver<bool>) {
    // A dropped sender means the lock's owner is gone: lost as well.
    let _ = receiver.wait_for(|lost| *lost).await;
}

/// A duration as Go writes it for Consul: whole seconds as `15s`, anything finer in milliseconds.
fn go_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// A Go duration such as `15s`, `1m30s`, `1.5s` or `250ms`; `None` when it is not one.
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|end| *end > 0)?;
        let (number, tail) = rest.split_at(number_end);
        let number: f64 = number.parse().ok()?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ClientConfig;

    #[test]
    fn the_lock_key_sits_under_the_prefix() {
        let client = ConsulClient::new(ClientConfig::default()).unwrap();
        assert_eq!(
            SessionLock::new(client.clone(), "global/", "r").key(),
            "global/.lock"
        );
        assert_eq!(
            SessionLock::new(client.clone(), "global", "r").key(),
            "global/.lock"
        );
        assert_eq!(SessionLock::new(client, "/a//", "r").key(), "a/.lock");
    }

    #[test]
    fn durations_are_written_and_read_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(parse_go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("15"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("3d"), None);
    }

    #[test]
    fn blocking_indexes_reset_when_they_go_backwards() {
        assert_eq!(next_index(0, Some(0)), 1);
        assert_eq!(next_index(10, Some(12)), 12);
        assert_eq!(next_index(10, Some(3)), 0);
        assert_eq!(next_index(10, None), 10);
    }
}
