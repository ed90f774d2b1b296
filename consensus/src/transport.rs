//! The client side of the server RPC port: the [`Transport`] seam, the TCP implementation with
//! one multiplexed connection per peer (optionally under emulated link conditions), and a
//! fault-injecting wrapper for tests.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tribune_netem::link::{Network, Verdict as Link};

use crate::codec;
use crate::types::NodeId;
use crate::wire::{self, KIND_REQUEST, KIND_RESPONSE, RpcKind, RpcRequest, RpcResponse};

/// Why a request did not get an answer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer could not be reached (connect refused, or still in reconnect backoff).
    #[error("server {target} at {addr} unreachable: {reason}")]
    Unreachable {
        /// The peer's id.
        target: NodeId,
        /// The address we tried.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// No answer arrived before the deadline.
    #[error("no answer from server {target} within {after:?}")]
    Timeout {
        /// The peer's id.
        target: NodeId,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection broke or carried something that does not decode.
    #[error("connection to server {target} failed: {reason}")]
    Connection {
        /// The peer's id.
        target: NodeId,
        /// What happened.
        reason: String,
    },
}

/// Sends requests to other servers' RPC ports.
///
/// This is the seam between consensus and the network: [`TcpTransport`] is the real one and
/// [`FaultyTransport`] wraps any transport to drop, delay, duplicate or partition messages.
///
/// Implementations MUST: answer each request with the response the target produced for *that*
/// request (or an error), never block the caller beyond `timeout`, and be callable concurrently.
/// They MAY deliver a request more than once or not at all (Raft tolerates both).
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to server `target` listening at `addr` and waits for its response.
    fn send(
        &self,
        target: NodeId,
        addr: &str,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcResponse, TransportError>>;

    /// Told once, before the first request, the address this server's RPC port is bound to
    /// (known only after binding when the port was 0). Transports that do not care ignore it.
    fn bound_to(&self, local: SocketAddr) {
        let _ = local;
    }
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send(
        &self,
        target: NodeId,
        addr: &str,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcResponse, TransportError>> {
        (**self).send(target, addr, request, timeout)
    }

    fn bound_to(&self, local: SocketAddr) {
        (**self).bound_to(local);
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<RpcResponse, String>>>>>;

/// One live connection to a peer: a writer task fed by a queue and a reader task that routes
/// responses to waiting callers by request id.
struct Conn {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    /// When the connection was made, and when it last carried a response (nanoseconds after
    /// `opened`): a connection silent for long is presumed dead (see [`SILENT_CONNECTION`]).
    opened: Instant,
    last_response_ns: Arc<AtomicU64>,
    tasks: [tokio::task::AbortHandle; 2],
}

/// A connection that has carried no response for this long while a request on it timed out is
/// closed, and the next request dials afresh. Behind a partition that drops packets, TCP keeps a
/// connection open and backs its retransmissions off to seconds; without this, a healed peer
/// would stay unreachable over the old connection for as long.
const SILENT_CONNECTION: Duration = Duration::from_millis(500);

impl Conn {
    fn silent_since(&self, at: Instant) -> bool {
        let last = self.opened + Duration::from_nanos(self.last_response_ns.load(Ordering::Acquire));
        last < at && last.elapsed() >= SILENT_CONNECTION
    }

    /// Closes the connection: both tasks stop (dropping the socket) and every waiter fails.
    fn kill(&self, reason: &str) {
        for task in &self.tasks {
            task.abort();
        }
        Conn::fail_all(&self.pending, &self.closed, reason);
    }

    fn fail_all(pending: &Pending, closed: &AtomicBool, reason: &str) {
        closed.store(true, Ordering::Release);
        let waiters: Vec<_> = pending.lock().drain().collect();
        for (_, tx) in waiters {
            let _ = tx.send(Err(reason.to_string()));
        }
    }
}

#[derive(Default)]
struct PeerState {
    conn: Option<Arc<Conn>>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Reconnect backoff: 20 ms doubling up to 250 ms. Short enough that a restarted or healed
/// server is reached again within an election timeout, long enough not to spin on a dead one (a
/// refused connect costs microseconds; a dropped one waits out the connect timeout).
fn backoff(failures: u32) -> Duration {
    let ms = 20u64.saturating_mul(1u64 << failures.min(6));
    Duration::from_millis(ms.min(250))
}

struct TcpInner {
    /// Keyed by address, not raft id: ids are unique only within a datacenter, and a server calls
    /// servers of other datacenters on the same transport.
    peers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<PeerState>>>>,
    next_id: AtomicU64,
    connect_timeout: Duration,
    /// Emulated link conditions between this server's address and its peers' (tests only).
    network: Option<Network>,
    /// This server's own RPC address: the sending end of every link it decides for.
    local: OnceLock<SocketAddr>,
}

/// The TCP transport: one reused, multiplexed connection per peer, reconnecting with backoff.
///
/// Requests to a peer are pipelined on its connection; responses may come back in any order and
/// are matched by request id. When the connection breaks, every waiting request fails at once
/// and the next request reconnects (after a backoff if the last attempts failed).
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<TcpInner>,
}

impl Default for TcpTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl TcpTransport {
    /// A transport with no connections yet.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// This transport, before its first request, under the link conditions of `network` (`None`:
    /// the real network only, at no cost). Its own end of each link is the address it is
    /// [bound to](Transport::bound_to); until then no condition applies.
    ///
    /// A connection to a cut peer fails as a dropped SYN does: after the connect timeout, then
    /// in backoff. A request waits its one-way delay before it is written and its answer the
    /// reverse delay after it is read; a lost one leaves the caller to time out.
    #[must_use]
    pub fn with_network(self, network: Option<Network>) -> Self {
        let local = self.inner.local.get().copied();
        let this = Self::build(network);
        if let Some(addr) = local {
            this.bound_to(addr);
        }
        this
    }

    fn build(network: Option<Network>) -> Self {
        TcpTransport {
            inner: Arc::new(TcpInner {
                peers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                connect_timeout: Duration::from_millis(500),
                network,
                local: OnceLock::new(),
            }),
        }
    }

    /// The emulated fate of one message between this server and the peer at `peer`, sent by us
    /// (`outbound`) or answered by it; `None` when no network is set or an end is unknown.
    fn link(
        &self,
        peer: &str,
        outbound: bool,
        decide: fn(&Network, SocketAddr, SocketAddr) -> Link,
    ) -> Option<Link> {
        let network = self.inner.network.as_ref()?;
        let local = *self.inner.local.get()?;
        let peer: SocketAddr = peer.parse().ok()?;
        Some(if outbound {
            decide(network, local, peer)
        } else {
            decide(network, peer, local)
        })
    }

    async fn connection(&self, target: NodeId, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let peer = {
            let mut peers = self.inner.peers.lock();
            Arc::clone(peers.entry(addr.to_string()).or_default())
        };
        let mut state = peer.lock().await;
        if let Some(conn) = &state.conn {
            if !conn.closed.load(Ordering::Acquire) {
                return Ok(Arc::clone(conn));
            }
            state.conn = None;
        }
        if let Some(at) = state.retry_at
            && Instant::now() < at
        {
            return Err(TransportError::Unreachable {
                target,
                addr: addr.to_string(),
                reason: "in reconnect backoff".into(),
            });
        }
        let connect = if self.link(addr, true, Network::connect) == Some(Link::Drop) {
            // A SYN lost behind a cut link: nothing answers until the connect timeout.
            tokio::time::sleep(self.inner.connect_timeout).await;
            None
        } else {
            tokio::time::timeout(self.inner.connect_timeout, TcpStream::connect(addr))
                .await
                .ok()
        };
        let stream = match connect {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + backoff(state.failures));
                return Err(TransportError::Unreachable {
                    target,
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
            None => {
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + backoff(state.failures));
                return Err(TransportError::Unreachable {
                    target,
                    addr: addr.to_string(),
                    reason: "connect timed out".into(),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        state.failures = 0;
        state.retry_at = None;
        let conn = Arc::new(spawn_conn(stream));
        state.conn = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

fn spawn_conn(stream: TcpStream) -> Conn {
    let (read_half, write_half) = stream.into_split();
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let closed = Arc::new(AtomicBool::new(false));
    let opened = Instant::now();
    let last_response_ns = Arc::new(AtomicU64::new(0));
    let writer = {
        let pending = Arc::clone(&pending);
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let res = wire::write_frames(write_half, frames_rx).await;
            let reason = match res {
                Ok(()) => "connection closed".to_string(),
                Err(e) => format!("write failed: {e}"),
            };
            Conn::fail_all(&pending, &closed, &reason);
        })
    };
    let reader = {
        let pending = Arc::clone(&pending);
        let closed = Arc::clone(&closed);
        let last_response_ns = Arc::clone(&last_response_ns);
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, read_half);
            let reason = loop {
                match wire::read_frame(&mut reader).await {
                    Ok(Some(frame)) if frame.kind == KIND_RESPONSE => {
                        let since_open = opened.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
                        last_response_ns.store(since_open, Ordering::Release);
                        let waiter = pending.lock().remove(&frame.id);
                        if let Some(tx) = waiter {
                            let decoded = codec::decode::<RpcResponse>(&frame.body)
                                .map_err(|e| format!("bad response: {e}"));
                            let _ = tx.send(decoded);
                        }
                    }
                    Ok(Some(frame)) => break format!("unexpected frame kind {} from server", frame.kind),
                    Ok(None) => break "connection closed by peer".to_string(),
                    Err(e) => break format!("read failed: {e}"),
                }
            };
            Conn::fail_all(&pending, &closed, &reason);
        })
    };
    Conn {
        frames: frames_tx,
        pending,
        closed,
        opened,
        last_response_ns,
        tasks: [writer.abort_handle(), reader.abort_handle()],
    }
}

impl Transport for TcpTransport {
    fn send(
        &self,
        target: NodeId,
        addr: &str,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcResponse, TransportError>> {
        let this = self.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let conn = match tokio::time::timeout_at(deadline, this.connection(target, &addr)).await {
                Ok(conn) => conn?,
                // Still connecting (or waiting for another caller's connect): nothing was sent.
                Err(_) => {
                    return Err(TransportError::Unreachable {
                        target,
                        addr,
                        reason: format!("no connection within {timeout:?}"),
                    });
                }
            };
            let sent_at = Instant::now();
            let work = async {
                cross(this.link(&addr, true, Network::decide)).await;
                let id = this.inner.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = wire::encode_frame(id, KIND_REQUEST, &request).map_err(|e| {
                    TransportError::Connection {
                        target,
                        reason: e.to_string(),
                    }
                })?;
                let (tx, rx) = oneshot::channel();
                conn.pending.lock().insert(id, tx);
                // Re-check after registering: a connection that closed in between has already
                // failed its waiters and would never answer this one.
                if conn.closed.load(Ordering::Acquire) || conn.frames.send(frame).is_err() {
                    conn.pending.lock().remove(&id);
                    return Err(TransportError::Connection {
                        target,
                        reason: "connection closed".into(),
                    });
                }
                let _guard = PendingGuard {
                    pending: Arc::clone(&conn.pending),
                    id,
                };
                match rx.await {
                    Ok(Ok(resp)) => {
                        cross(this.link(&addr, false, Network::decide)).await;
                        Ok(resp)
                    }
                    Ok(Err(reason)) => Err(TransportError::Connection { target, reason }),
                    Err(_) => Err(TransportError::Connection {
                        target,
                        reason: "connection dropped".into(),
                    }),
                }
            };
            match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => r,
                Err(_) => {
                    if conn.silent_since(sent_at) {
                        conn.kill("no response for a while: the connection is presumed dead");
                    }
                    Err(TransportError::Timeout {
                        target,
                        after: timeout,
                    })
                }
            }
        })
    }

    fn bound_to(&self, local: SocketAddr) {
        // The first address wins: a transport serves one server.
        let _ = self.inner.local.set(local);
    }
}

/// Carries a message across an emulated link: waits its delay, or forever when it is lost (the
/// caller's deadline then ends the wait, as silence on a real network does).
async fn cross(verdict: Option<Link>) {
    match verdict {
        Some(Link::Drop) => std::future::pending().await,
        Some(Link::Deliver { after }) if !after.is_zero() => tokio::time::sleep(after).await,
        Some(Link::Deliver { .. }) | None => {}
    }
}

/// Removes a waiter when its caller gives up (timeout or cancellation), so the map cannot grow.
struct PendingGuard {
    pending: Pending,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// The faults a [`FaultyTransport`] applies, shared by every server of a test cluster.
///
/// Rules are directional: blocking `a → b` loses requests `a` sends to `b` (and so their
/// responses) but not requests from `b` to `a`. Faults are deterministic (every n-th message, a
/// fixed delay), so a failing test replays the same way.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultState>>,
}

#[derive(Default)]
struct FaultState {
    blocked: HashSet<(NodeId, NodeId)>,
    delay: Option<Duration>,
    drop_every: Option<u64>,
    duplicate: bool,
    counter: u64,
    only_kind: Option<RpcKind>,
}

enum Verdict {
    Deliver {
        delay: Option<Duration>,
        duplicate: bool,
    },
    Drop,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses every request `from` sends to `to`.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.inner.lock().blocked.insert((from, to));
    }

    /// Loses every request in both directions between each server of `a` and each of `b`.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        let mut st = self.inner.lock();
        for &x in a {
            for &y in b {
                st.blocked.insert((x, y));
                st.blocked.insert((y, x));
            }
        }
    }

    /// Loses every request `node` sends, while requests to it still arrive (one-way isolation).
    pub fn isolate_outbound(&self, node: NodeId, others: &[NodeId]) {
        let mut st = self.inner.lock();
        for &o in others {
            st.blocked.insert((node, o));
        }
    }

    /// Delays every delivered request by `delay` (or removes the delay).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner.lock().delay = delay;
    }

    /// Drops every `n`-th request (or stops dropping with `None`).
    pub fn drop_every(&self, n: Option<u64>) {
        self.inner.lock().drop_every = n.filter(|&n| n > 0);
    }

    /// Delivers every request twice (the second answer is discarded).
    pub fn set_duplicate(&self, duplicate: bool) {
        self.inner.lock().duplicate = duplicate;
    }

    /// Applies delay, drops and duplication only to requests of this kind (`None`: to all).
    pub fn only_kind(&self, kind: Option<RpcKind>) {
        self.inner.lock().only_kind = kind;
    }

    /// Removes every fault.
    pub fn heal(&self) {
        *self.inner.lock() = FaultState::default();
    }

    fn verdict(&self, from: NodeId, to: NodeId, kind: RpcKind) -> Verdict {
        let mut st = self.inner.lock();
        if st.blocked.contains(&(from, to)) {
            return Verdict::Drop;
        }
        if st.only_kind.is_some_and(|k| k != kind) {
            return Verdict::Deliver {
                delay: None,
                duplicate: false,
            };
        }
        st.counter = st.counter.wrapping_add(1);
        if let Some(n) = st.drop_every
            && st.counter.is_multiple_of(n)
        {
            return Verdict::Drop;
        }
        Verdict::Deliver {
            delay: st.delay,
            duplicate: st.duplicate,
        }
    }
}

/// A [`Transport`] wrapper that applies [`Faults`] to what server `from` sends.
pub struct FaultyTransport<T> {
    inner: Arc<T>,
    from: NodeId,
    faults: Faults,
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`, the transport of server `from`, with the shared `faults`.
    pub fn new(inner: T, from: NodeId, faults: Faults) -> Self {
        FaultyTransport {
            inner: Arc::new(inner),
            from,
            faults,
        }
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn send(
        &self,
        target: NodeId,
        addr: &str,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RpcResponse, TransportError>> {
        let verdict = self.faults.verdict(self.from, target, request.kind());
        let inner = Arc::clone(&self.inner);
        let addr = addr.to_string();
        Box::pin(async move {
            match verdict {
                Verdict::Drop => {
                    // A lost message looks like silence: the caller waits out its timeout.
                    tokio::time::sleep(timeout).await;
                    Err(TransportError::Timeout {
                        target,
                        after: timeout,
                    })
                }
                Verdict::Deliver { delay, duplicate } => {
                    if let Some(d) = delay {
                        tokio::time::sleep(d.min(timeout)).await;
                    }
                    if duplicate {
                        let _ = inner.send(target, &addr, request.clone(), timeout).await;
                    }
                    inner.send(target, &addr, request, timeout).await
                }
            }
        })
    }

    fn bound_to(&self, local: SocketAddr) {
        self.inner.bound_to(local);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::wire::{Request, Response};

    /// A peer whose first `mute` connections swallow every request, as a connection does behind
    /// a partition that drops packets; later connections answer.
    async fn peer(mute: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = tokio::io::BufReader::new(read);
                    while let Ok(Some(frame)) = wire::read_frame(&mut read).await {
                        if n < mute {
                            continue;
                        }
                        let answer = RpcResponse(Response::Probe { initialized: true });
                        let bytes = wire::encode_frame(frame.id, KIND_RESPONSE, &answer).unwrap();
                        if write.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_connection_that_went_silent_is_redialled() {
        let (addr, accepted) = peer(1).await;
        let transport = TcpTransport::new();
        let probe = || RpcRequest(Request::Probe);
        let started = Instant::now();
        let answered = loop {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "a silent connection was reused for 5 s"
            );
            match transport
                .send(1, &addr, probe(), Duration::from_millis(100))
                .await
            {
                Ok(resp) => break resp,
                Err(TransportError::Timeout { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        };
        assert!(matches!(answered.0, Response::Probe { initialized: true }));
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "dialled exactly once more");
        // The silence limit, plus one request timeout, plus a dial.
        assert!(started.elapsed() < SILENT_CONNECTION + Duration::from_millis(600));
    }

    #[tokio::test]
    async fn a_slow_answer_on_a_live_connection_keeps_it() {
        let (addr, accepted) = peer(0).await;
        let transport = TcpTransport::new();
        for _ in 0..20 {
            transport
                .send(1, &addr, RpcRequest(Request::Probe), Duration::from_secs(1))
                .await
                .unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A transport of a server at `local` under `network`, as `Consensus::start` makes it.
    fn conditioned(network: &Network, local: SocketAddr) -> TcpTransport {
        let transport = TcpTransport::new().with_network(Some(network.clone()));
        transport.bound_to(local);
        transport
    }

    #[tokio::test]
    async fn an_emulated_delay_holds_the_request_and_its_answer() {
        use tribune_netem::link::Conditions;
        let (addr, _) = peer(0).await;
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let network = Network::new(1);
        network.assign(local, "here");
        network.assign(addr.parse::<SocketAddr>().unwrap(), "there");
        network
            .set_one_way("here", "there", Conditions::delay(Duration::from_millis(60)))
            .unwrap();
        network
            .set_one_way("there", "here", Conditions::delay(Duration::from_millis(40)))
            .unwrap();
        let transport = conditioned(&network, local);
        let probe = || RpcRequest(Request::Probe);
        transport
            .send(1, &addr, probe(), Duration::from_secs(2))
            .await
            .unwrap();
        let started = Instant::now();
        transport
            .send(1, &addr, probe(), Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );

        // All answers lost: the caller times out, as it would behind a lossy link.
        network
            .set_one_way("there", "here", Conditions::default().with_loss(1.0))
            .unwrap();
        let lost = transport
            .send(1, &addr, probe(), Duration::from_millis(200))
            .await;
        assert!(matches!(lost, Err(TransportError::Timeout { .. })), "{lost:?}");
        network.clear();
        transport
            .send(1, &addr, probe(), Duration::from_secs(2))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_cut_peer_is_unreachable_as_behind_a_dropped_syn() {
        let (addr, accepted) = peer(0).await;
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let network = Network::new(1);
        network.assign(local, "here");
        network.assign(addr.parse::<SocketAddr>().unwrap(), "there");
        network.cut("here", "there");
        let transport = conditioned(&network, local);
        let probe = || RpcRequest(Request::Probe);
        let started = Instant::now();
        let first = transport.send(1, &addr, probe(), Duration::from_secs(2)).await;
        assert!(
            matches!(&first, Err(TransportError::Unreachable { reason, .. }) if reason == "connect timed out"),
            "{first:?}"
        );
        let waited = started.elapsed();
        assert!(waited >= transport.inner.connect_timeout, "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        let second = transport.send(1, &addr, probe(), Duration::from_secs(2)).await;
        assert!(
            matches!(&second, Err(TransportError::Unreachable { reason, .. }) if reason == "in reconnect backoff"),
            "{second:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection got through");
        network.heal("here", "there");
        let started = Instant::now();
        let healed = loop {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never reconnected after the heal"
            );
            match transport.send(1, &addr, probe(), Duration::from_secs(1)).await {
                Ok(resp) => break resp,
                Err(TransportError::Unreachable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(matches!(healed.0, Response::Probe { initialized: true }));
    }

    /// Servers of two datacenters may share a raft id: each address keeps its own connection, so
    /// alternating calls never tear one down for the other.
    #[tokio::test]
    async fn one_raft_id_at_two_addresses_keeps_two_connections() {
        let (first, first_accepted) = peer(0).await;
        let (second, second_accepted) = peer(0).await;
        let transport = TcpTransport::new();
        for _ in 0..5 {
            for addr in [&first, &second] {
                transport
                    .send(7, addr, RpcRequest(Request::Probe), Duration::from_secs(1))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(first_accepted.load(Ordering::SeqCst), 1);
        assert_eq!(second_accepted.load(Ordering::SeqCst), 1);
    }
}
