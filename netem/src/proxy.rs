//! A userspace UDP/TCP proxy that puts emulated WAN conditions between processes: it listens on
//! one address (UDP and TCP on the same port) and forwards to another, delaying each direction by
//! its own one-way delay, dropping datagrams with a seeded probability, and cutting or healing the
//! path at run time through a [`ProxyControl`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), tribune_netem::proxy::ProxyError> {
//! use std::time::Duration;
//! use tribune_netem::proxy::{Proxy, ProxyConfig};
//!
//! let mut config = ProxyConfig::new("127.0.1.2:8302".parse().unwrap(), "127.0.0.2:8302".parse().unwrap());
//! config.conditions.delay_to_target = Duration::from_millis(25);
//! config.conditions.delay_to_client = Duration::from_millis(25);
//! let proxy = Proxy::start(config).await?;
//! proxy.control().cut();
//! proxy.control().heal();
//! proxy.stop().await;
//! # Ok(()) }
//! ```
//!
//! UDP: every client address gets a session socket of its own toward the target, so the target's
//! replies go back to the client that caused them; a session ends after an idle while. A datagram
//! is dropped when the path is cut (on arrival or when its delay ends) or by the loss draw.
//!
//! TCP: each accepted connection opens one to the target (after the one-way delay, as a SYN would
//! travel) and copies bytes both ways, each chunk held for its direction's delay. TCP bytes are
//! never dropped — the kernels' TCP would retransmit them — and a cut holds them (and new
//! connections) until the heal, as a partition holds a retransmitting stream. Loss applies to
//! datagrams only.
//!
//! Outgoing sockets bind to the listening IP (when it is not unspecified), so the target and any
//! firewall see the proxy's address as the source. Every queue is bounded: a full UDP queue drops
//! the datagram, a full TCP queue stops reading from the sender. Dropping the [`Proxy`] (or
//! [`Proxy::stop`]) ends every task and closes every socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The largest datagram the proxy carries (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;
/// The most bytes one TCP read takes (one queued chunk).
const TCP_CHUNK: usize = 16 * 1024;
/// How often a port-0 listen retries finding a port free for both UDP and TCP.
const PORT_ATTEMPTS: usize = 16;
/// How long an accepted TCP connection waits for a cut to heal before it is closed (a kernel
/// gives up a SYN after a couple of minutes; the waiting client has usually given up long before).
const CUT_CONNECT_WAIT: Duration = Duration::from_secs(60);

/// What the proxy does to traffic; may change at run time through [`ProxyControl`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProxyConditions {
    /// One-way delay of what travels from clients toward the target.
    pub delay_to_target: Duration,
    /// One-way delay of what travels back from the target to clients.
    pub delay_to_client: Duration,
    /// Probability in `[0, 1]` that a datagram is lost (each direction, drawn independently).
    pub loss: f64,
    /// Nothing passes either way: datagrams are dropped, TCP bytes and connections are held.
    pub cut: bool,
}

impl ProxyConditions {
    /// The same delay both ways, nothing lost, not cut.
    pub fn delay(each_way: Duration) -> Self {
        ProxyConditions {
            delay_to_target: each_way,
            delay_to_client: each_way,
            ..ProxyConditions::default()
        }
    }

    /// Checks the loss probability.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ProxyError::Invalid {
                field: "loss",
                reason: format!("{} is not a probability in [0, 1]", self.loss),
            });
        }
        Ok(())
    }
}

/// One proxy's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Where clients connect (UDP and TCP on the same port; port 0 picks one free for both).
    pub listen: SocketAddr,
    /// Where traffic goes.
    pub target: SocketAddr,
    /// Whether to proxy UDP.
    pub udp: bool,
    /// Whether to proxy TCP.
    pub tcp: bool,
    /// The conditions at start.
    pub conditions: ProxyConditions,
    /// Seeds the loss draws.
    pub seed: u64,
    /// The most UDP client sessions at once; datagrams from further clients are dropped.
    pub max_udp_sessions: usize,
    /// A UDP session with no datagram either way for this long is closed.
    pub udp_session_idle: Duration,
    /// The most TCP connections at once; further ones are closed on accept.
    pub max_tcp_connections: usize,
    /// Items (datagrams, or TCP chunks of up to 16 KiB) queued per direction before back-pressure.
    pub queue_limit: usize,
}

impl ProxyConfig {
    /// UDP and TCP from `listen` to `target`, no conditions, seed 0, modest limits.
    pub fn new(listen: SocketAddr, target: SocketAddr) -> Self {
        ProxyConfig {
            listen,
            target,
            udp: true,
            tcp: true,
            conditions: ProxyConditions::default(),
            seed: 0,
            max_udp_sessions: 1024,
            udp_session_idle: Duration::from_secs(60),
            max_tcp_connections: 256,
            queue_limit: 1024,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ProxyError> {
        self.conditions.validate()?;
        let invalid = |field, reason: &str| {
            Err(ProxyError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if !self.udp && !self.tcp {
            return invalid("udp/tcp", "at least one protocol must be proxied");
        }
        if self.max_udp_sessions == 0 {
            return invalid("max_udp_sessions", "must be at least 1");
        }
        if self.max_tcp_connections == 0 {
            return invalid("max_tcp_connections", "must be at least 1");
        }
        if self.queue_limit == 0 {
            return invalid("queue_limit", "must be at least 1");
        }
        if self.udp_session_idle.is_zero() {
            return invalid("udp_session_idle", "must be above zero");
        }
        if self.target.port() == 0 {
            return invalid("target", "port 0 is no destination");
        }
        Ok(())
    }
}

/// Why a proxy could not start or a setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A listening socket could not be bound.
    #[error("cannot bind {protocol} on {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid proxy setting {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Datagrams delivered (both directions).
    pub datagrams_forwarded: u64,
    /// Datagrams lost to the loss draw.
    pub datagrams_lost: u64,
    /// Datagrams dropped because the path was cut.
    pub datagrams_cut: u64,
    /// Datagrams dropped because a queue or the session table was full.
    pub datagrams_overflow: u64,
    /// TCP connections accepted and passed on.
    pub tcp_connections: u64,
    /// TCP bytes delivered (both directions).
    pub tcp_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_forwarded: AtomicU64,
    datagrams_lost: AtomicU64,
    datagrams_cut: AtomicU64,
    datagrams_overflow: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_bytes: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Which way traffic travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToTarget,
    ToClient,
}

#[derive(Debug)]
struct State {
    conditions: watch::Sender<ProxyConditions>,
    /// One generator per direction, so each direction's draws follow only its own traffic.
    rng: [Mutex<SmallRng>; 2],
    counters: Counters,
}

impl State {
    fn now(&self) -> ProxyConditions {
        *self.conditions.borrow()
    }

    fn delay(&self, direction: Direction) -> Duration {
        let c = self.now();
        match direction {
            Direction::ToTarget => c.delay_to_target,
            Direction::ToClient => c.delay_to_client,
        }
    }

    /// A datagram arrives: when to deliver it, or `None` if it is dropped (and counted).
    fn admit_datagram(&self, direction: Direction) -> Option<Instant> {
        let c = self.now();
        if c.cut {
            bump(&self.counters.datagrams_cut, 1);
            return None;
        }
        let rng = match direction {
            Direction::ToTarget => &self.rng[0],
            Direction::ToClient => &self.rng[1],
        };
        if c.loss > 0.0 && rng.lock().random::<f64>() < c.loss {
            bump(&self.counters.datagrams_lost, 1);
            return None;
        }
        let delay = match direction {
            Direction::ToTarget => c.delay_to_target,
            Direction::ToClient => c.delay_to_client,
        };
        Some(Instant::now() + delay)
    }

    /// Waits while the path is cut (returns at once when it is not).
    async fn wait_open(&self) {
        let mut rx = self.conditions.subscribe();
        // An error means the sender is gone, which happens only as the proxy shuts down.
        let _ = rx.wait_for(|c| !c.cut).await;
    }
}

/// Changes a running proxy's conditions; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct ProxyControl {
    state: Arc<State>,
}

impl ProxyControl {
    /// The conditions in force.
    pub fn conditions(&self) -> ProxyConditions {
        self.state.now()
    }

    /// Replaces the conditions; what is already queued keeps the delay it was given.
    pub fn set_conditions(&self, conditions: ProxyConditions) -> Result<(), ProxyError> {
        conditions.validate()?;
        self.state.conditions.send_replace(conditions);
        Ok(())
    }

    /// The same one-way delay both ways.
    pub fn set_delay(&self, each_way: Duration) {
        self.state.conditions.send_modify(|c| {
            c.delay_to_target = each_way;
            c.delay_to_client = each_way;
        });
    }

    /// The datagram loss probability.
    pub fn set_loss(&self, loss: f64) -> Result<(), ProxyError> {
        let mut next = self.conditions();
        next.loss = loss;
        self.set_conditions(next)
    }

    /// Nothing passes until [`ProxyControl::heal`].
    pub fn cut(&self) {
        self.state.conditions.send_modify(|c| c.cut = true);
    }

    /// Ends a cut; held TCP bytes and connections go on.
    pub fn heal(&self) {
        self.state.conditions.send_modify(|c| c.cut = false);
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.state.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            datagrams_forwarded: get(&c.datagrams_forwarded),
            datagrams_lost: get(&c.datagrams_lost),
            datagrams_cut: get(&c.datagrams_cut),
            datagrams_overflow: get(&c.datagrams_overflow),
            tcp_connections: get(&c.tcp_connections),
            tcp_bytes: get(&c.tcp_bytes),
        }
    }
}

/// A running proxy. Dropping it stops every task and closes every socket.
#[derive(Debug)]
pub struct Proxy {
    control: ProxyControl,
    local: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Binds the listening sockets and starts forwarding (must run inside a tokio runtime).
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        config.validate()?;
        let (listener, udp) = bind(&config).await?;
        let local = match (&listener, &udp) {
            (Some(l), _) => l.local_addr(),
            (None, Some(u)) => u.local_addr(),
            (None, None) => Ok(config.listen),
        }
        .map_err(|source| ProxyError::Bind {
            protocol: if config.tcp { "tcp" } else { "udp" },
            addr: config.listen,
            source,
        })?;
        let state = Arc::new(State {
            conditions: watch::Sender::new(config.conditions),
            rng: [
                Mutex::new(SmallRng::seed_from_u64(config.seed)),
                Mutex::new(SmallRng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15)),
            ],
            counters: Counters::default(),
        });
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let source_ip = (!config.listen.ip().is_unspecified()).then_some(config.listen.ip());
        if let Some(udp) = udp {
            tasks.spawn(udp_loop(
                Arc::new(udp),
                source_ip,
                config.clone(),
                Arc::clone(&state),
                shutdown.subscribe(),
            ));
        }
        if let Some(listener) = listener {
            tasks.spawn(tcp_loop(
                listener,
                source_ip,
                config.clone(),
                Arc::clone(&state),
                shutdown.subscribe(),
            ));
        }
        tracing::debug!(%local, target = %config.target, "proxy started");
        Ok(Proxy {
            control: ProxyControl { state },
            local,
            shutdown,
            tasks,
        })
    }

    /// Where it listens (the port picked, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle that changes its conditions.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }

    /// Stops every task and waits until they have ended (their sockets are closed then).
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.tasks.abort_all();
    }
}

/// Binds what the config asks for; with port 0 and both protocols, a port free for both.
async fn bind(config: &ProxyConfig) -> Result<(Option<TcpListener>, Option<UdpSocket>), ProxyError> {
    let tcp_error = |source| ProxyError::Bind {
        protocol: "tcp",
        addr: config.listen,
        source,
    };
    let udp_error = |source| ProxyError::Bind {
        protocol: "udp",
        addr: config.listen,
        source,
    };
    if !config.tcp {
        let udp = UdpSocket::bind(config.listen).await.map_err(udp_error)?;
        return Ok((None, Some(udp)));
    }
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let listener = TcpListener::bind(config.listen).await.map_err(tcp_error)?;
        if !config.udp {
            return Ok((Some(listener), None));
        }
        let port = listener.local_addr().map_err(tcp_error)?.port();
        match UdpSocket::bind(SocketAddr::new(config.listen.ip(), port)).await {
            Ok(udp) => return Ok((Some(listener), Some(udp))),
            // The TCP port picked for us may be taken for UDP: try another one.
            Err(error) if config.listen.port() == 0 => last_error = Some(error),
            Err(error) => return Err(udp_error(error)),
        }
    }
    Err(udp_error(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "no port free for both UDP and TCP")
    })))
}

/// A datagram waiting out its delay.
struct Delayed {
    at: Instant,
    bytes: Vec<u8>,
    dest: Dest,
}

enum Dest {
    /// Through a session socket, connected to the target.
    Target(Arc<UdpSocket>),
    /// Through the listening socket, to a client.
    Client(SocketAddr),
}

/// One UDP client's session: its socket toward the target and when it was last used.
struct Session {
    socket: Arc<UdpSocket>,
    last_used: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

async fn udp_loop(
    listen: Arc<UdpSocket>,
    source_ip: Option<IpAddr>,
    config: ProxyConfig,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let epoch = Instant::now();
    let (to_target, to_target_rx) = mpsc::channel(config.queue_limit);
    let (to_client, to_client_rx) = mpsc::channel(config.queue_limit);
    // Dropped with this task, the JoinSet aborts the delivery and session tasks.
    let mut tasks = JoinSet::new();
    tasks.spawn(deliver_datagrams(
        to_target_rx,
        Arc::clone(&listen),
        Arc::clone(&state),
    ));
    tasks.spawn(deliver_datagrams(
        to_client_rx,
        Arc::clone(&listen),
        Arc::clone(&state),
    ));
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            _ = shutdown.changed() => return,
            received = listen.recv_from(&mut buf) => match received {
                Ok(received) => received,
                // ICMP errors from earlier sends surface here; they concern no one datagram.
                Err(_) => continue,
            },
        };
        while tasks.try_join_next().is_some() {}
        sessions.retain(|_, s| !s.task.is_finished());
        let session = match sessions.get(&client) {
            Some(session) => session,
            None => {
                if sessions.len() >= config.max_udp_sessions {
                    bump(&state.counters.datagrams_overflow, 1);
                    continue;
                }
                let Some(socket) = session_socket(source_ip, config.target).await else {
                    bump(&state.counters.datagrams_overflow, 1);
                    continue;
                };
                let socket = Arc::new(socket);
                let last_used = Arc::new(AtomicU64::new(0));
                let task = tasks.spawn(udp_session(
                    Arc::clone(&socket),
                    client,
                    to_client.clone(),
                    Arc::clone(&state),
                    config.udp_session_idle,
                    Arc::clone(&last_used),
                    epoch,
                ));
                sessions.entry(client).or_insert(Session {
                    socket,
                    last_used,
                    task,
                })
            }
        };
        session.last_used.store(millis_since(epoch), Ordering::Relaxed);
        let Some(at) = state.admit_datagram(Direction::ToTarget) else {
            continue;
        };
        let Some(bytes) = buf.get(..n) else { continue };
        let item = Delayed {
            at,
            bytes: bytes.to_vec(),
            dest: Dest::Target(Arc::clone(&session.socket)),
        };
        if to_target.try_send(item).is_err() {
            bump(&state.counters.datagrams_overflow, 1);
        }
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A socket toward the target from the proxy's own address.
async fn session_socket(source_ip: Option<IpAddr>, target: SocketAddr) -> Option<UdpSocket> {
    let local = match source_ip {
        Some(ip) => SocketAddr::new(ip, 0),
        None if target.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket)
}

/// Carries the target's answers on one session back toward its client until the session idles.
async fn udp_session(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    to_client: mpsc::Sender<Delayed>,
    state: Arc<State>,
    idle: Duration,
    last_used: Arc<AtomicU64>,
    epoch: Instant,
) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(idle, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last_used.store(millis_since(epoch), Ordering::Relaxed);
                let Some(at) = state.admit_datagram(Direction::ToClient) else {
                    continue;
                };
                let Some(bytes) = buf.get(..n) else { continue };
                let item = Delayed {
                    at,
                    bytes: bytes.to_vec(),
                    dest: Dest::Client(client),
                };
                if to_client.try_send(item).is_err() {
                    bump(&state.counters.datagrams_overflow, 1);
                }
            }
            // A connected UDP socket reports an ICMP "port unreachable" as an error on the next
            // receive: the target is down for now, the session goes on.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(_) => {
                let quiet = millis_since(epoch).saturating_sub(last_used.load(Ordering::Relaxed));
                if quiet >= idle_ms {
                    return;
                }
            }
        }
    }
}

/// Sends each datagram when its delay ends, unless the path was cut meanwhile.
async fn deliver_datagrams(mut queue: mpsc::Receiver<Delayed>, listen: Arc<UdpSocket>, state: Arc<State>) {
    while let Some(item) = queue.recv().await {
        tokio::time::sleep_until(item.at).await;
        if state.now().cut {
            bump(&state.counters.datagrams_cut, 1);
            continue;
        }
        let sent = match &item.dest {
            Dest::Target(socket) => socket.send(&item.bytes).await,
            Dest::Client(client) => listen.send_to(&item.bytes, client).await,
        };
        if sent.is_ok() {
            bump(&state.counters.datagrams_forwarded, 1);
        }
    }
}

async fn tcp_loop(
    listener: TcpListener,
    source_ip: Option<IpAddr>,
    config: ProxyConfig,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Dropped with this task, the JoinSet aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((client, _)) => {
                if connections.len() >= config.max_tcp_connections {
                    tracing::debug!("proxy: connection limit reached; closing a new connection");
                    continue;
                }
                connections.spawn(tcp_connection(
                    client,
                    source_ip,
                    config.target,
                    config.queue_limit,
                    Arc::clone(&state),
                ));
            }
            // Out of descriptors and the like: back off a little rather than spin.
            Err(error) => {
                tracing::debug!(%error, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn connect_from(source_ip: Option<IpAddr>, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(target).await
}

async fn tcp_connection(
    client: TcpStream,
    source_ip: Option<IpAddr>,
    target: SocketAddr,
    queue_limit: usize,
    state: Arc<State>,
) {
    // The connection request travels to the target as a SYN would: after the one-way delay, and
    // not while the path is cut.
    tokio::time::sleep(state.delay(Direction::ToTarget)).await;
    if tokio::time::timeout(CUT_CONNECT_WAIT, state.wait_open())
        .await
        .is_err()
    {
        return;
    }
    let Ok(upstream) = connect_from(source_ip, target).await else {
        return;
    };
    bump(&state.counters.tcp_connections, 1);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        pipe(
            client_read,
            upstream_write,
            Direction::ToTarget,
            queue_limit,
            &state
        ),
        pipe(
            upstream_read,
            client_write,
            Direction::ToClient,
            queue_limit,
            &state
        ),
    );
}

/// A chunk of a stream waiting out its delay; `None` bytes: the sender closed its side.
struct Chunk {
    at: Instant,
    bytes: Option<Vec<u8>>,
}

/// Copies one direction of a connection, each chunk held for the direction's delay (and while
/// the path is cut); the sender's close is passed on the same way.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    queue_limit: usize,
    state: &State,
) {
    let (queue, mut pending) = mpsc::channel::<Chunk>(queue_limit);
    let reader = async move {
        let mut buf = vec![0u8; TCP_CHUNK];
        loop {
            let bytes = match from.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => buf.get(..n).map(<[u8]>::to_vec),
            };
            let done = bytes.is_none();
            let chunk = Chunk {
                at: Instant::now() + state.delay(direction),
                bytes,
            };
            if queue.send(chunk).await.is_err() || done {
                return;
            }
        }
    };
    let writer = async move {
        while let Some(chunk) = pending.recv().await {
            tokio::time::sleep_until(chunk.at).await;
            state.wait_open().await;
            let Some(bytes) = chunk.bytes else {
                let _ = to.shutdown().await;
                return;
            };
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            bump(&state.counters.tcp_bytes, bytes.len() as u64);
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const STEP: Duration = Duration::from_secs(5);

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A UDP echo server on loopback that prefixes each reply with what it heard from.
    async fn udp_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind(loopback()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut reply = from.to_string().into_bytes();
                reply.push(b'|');
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        (addr, task)
    }

    /// A TCP echo server on loopback.
    async fn tcp_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    async fn udp_round_trip(client: &UdpSocket, proxy: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        client.send_to(payload, proxy).await.unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (n, from) = tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        assert_eq!(from, proxy, "replies come from the proxy's listening address");
        Some(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn udp_replies_reach_the_client_that_sent_and_each_client_has_its_own_session() {
        let (echo, _server) = udp_echo().await;
        let proxy = Proxy::start(ProxyConfig::new(loopback(), echo)).await.unwrap();
        let a = UdpSocket::bind(loopback()).await.unwrap();
        let b = UdpSocket::bind(loopback()).await.unwrap();
        let from_a = udp_round_trip(&a, proxy.local_addr(), b"from a").await.unwrap();
        let from_b = udp_round_trip(&b, proxy.local_addr(), b"from b").await.unwrap();
        let split = |reply: &[u8]| {
            let text = String::from_utf8(reply.to_vec()).unwrap();
            let (seen, payload) = text.split_once('|').unwrap();
            (seen.parse::<SocketAddr>().unwrap(), payload.to_owned())
        };
        let (seen_a, payload_a) = split(&from_a);
        let (seen_b, payload_b) = split(&from_b);
        assert_eq!((payload_a.as_str(), payload_b.as_str()), ("from a", "from b"));
        assert_ne!(seen_a, seen_b, "two clients, two session sockets");
        assert_ne!(
            seen_a,
            a.local_addr().unwrap(),
            "the target sees the proxy, not the client"
        );
        // The same client keeps its session.
        let again = udp_round_trip(&a, proxy.local_addr(), b"again").await.unwrap();
        assert_eq!(split(&again).0, seen_a);
        assert_eq!(proxy.control().stats().datagrams_forwarded, 6);
    }

    #[tokio::test]
    async fn udp_round_trips_take_both_one_way_delays() {
        let (echo, _server) = udp_echo().await;
        let mut config = ProxyConfig::new(loopback(), echo);
        config.conditions.delay_to_target = Duration::from_millis(40);
        config.conditions.delay_to_client = Duration::from_millis(60);
        let proxy = Proxy::start(config).await.unwrap();
        let client = UdpSocket::bind(loopback()).await.unwrap();
        let started = std::time::Instant::now();
        udp_round_trip(&client, proxy.local_addr(), b"ping")
            .await
            .unwrap();
        let rtt = started.elapsed();
        assert!(
            rtt >= Duration::from_millis(100),
            "round trip {rtt:?} shorter than 40 + 60 ms"
        );
        assert!(rtt < Duration::from_millis(450), "round trip {rtt:?}");
        // Changed at run time: no delay.
        proxy.control().set_delay(Duration::ZERO);
        let started = std::time::Instant::now();
        udp_round_trip(&client, proxy.local_addr(), b"ping")
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn udp_loss_is_seeded_and_near_its_probability() {
        let count = |seed: u64| async move {
            let (echo, _server) = udp_echo().await;
            let mut config = ProxyConfig::new(loopback(), echo);
            config.seed = seed;
            config.conditions.loss = 0.3;
            let proxy = Proxy::start(config).await.unwrap();
            let client = UdpSocket::bind(loopback()).await.unwrap();
            for i in 0..400u32 {
                client
                    .send_to(&i.to_be_bytes(), proxy.local_addr())
                    .await
                    .unwrap();
                // Paced so no socket buffer overflows: losses are the proxy's draws only.
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            // Done when the counters stop moving (every datagram and reply has been decided).
            let deadline = std::time::Instant::now() + STEP;
            let mut last = proxy.control().stats();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = proxy.control().stats();
                if (now == last && now.datagrams_forwarded > 0) || std::time::Instant::now() > deadline {
                    break now;
                }
                last = now;
            }
        };
        let first = count(7).await;
        let second = count(7).await;
        let lost = first.datagrams_lost;
        assert_eq!(first.datagrams_overflow, 0);
        // 400 draws toward the target, then one draw per reply: about 400 × 0.3 + 280 × 0.3.
        assert!(
            (150..=260).contains(&lost),
            "lost {lost} of about 680 draws at 30 %"
        );
        assert_eq!(
            first.datagrams_lost, second.datagrams_lost,
            "the same seed, the same losses"
        );
    }

    #[tokio::test]
    async fn a_cut_drops_datagrams_until_healed() {
        let (echo, _server) = udp_echo().await;
        let proxy = Proxy::start(ProxyConfig::new(loopback(), echo)).await.unwrap();
        let client = UdpSocket::bind(loopback()).await.unwrap();
        assert!(
            udp_round_trip(&client, proxy.local_addr(), b"before")
                .await
                .is_some()
        );
        proxy.control().cut();
        assert!(
            udp_round_trip(&client, proxy.local_addr(), b"during")
                .await
                .is_none()
        );
        assert!(proxy.control().stats().datagrams_cut >= 1);
        proxy.control().heal();
        assert!(
            udp_round_trip(&client, proxy.local_addr(), b"after")
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn tcp_bytes_pass_both_ways_with_the_delay_and_the_close_is_passed_on() {
        let (echo, _server) = tcp_echo().await;
        let mut config = ProxyConfig::new(loopback(), echo);
        config.conditions = ProxyConditions::delay(Duration::from_millis(30));
        let proxy = Proxy::start(config).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let started = std::time::Instant::now();
        stream.write_all(&payload).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, payload, "every byte, in order, and the end of the stream");
        // The connection (one way), then data out and back: at least three one-way delays.
        assert!(
            started.elapsed() >= Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
        let stats = proxy.control().stats();
        assert_eq!(stats.tcp_connections, 1);
        assert_eq!(stats.tcp_bytes, 200_000);
    }

    #[tokio::test]
    async fn a_cut_holds_tcp_bytes_until_the_heal() {
        let (echo, _server) = tcp_echo().await;
        let proxy = Proxy::start(ProxyConfig::new(loopback(), echo)).await.unwrap();
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        stream.write_all(b"one").await.unwrap();
        let mut buf = [0u8; 3];
        tokio::time::timeout(STEP, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        proxy.control().cut();
        stream.write_all(b"two").await.unwrap();
        let held = tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await;
        assert!(held.is_err(), "nothing crosses a cut");
        proxy.control().heal();
        tokio::time::timeout(STEP, stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"two", "held, not lost");
    }

    #[tokio::test]
    async fn stopping_closes_the_listening_sockets() {
        let (echo, _server) = tcp_echo().await;
        let proxy = Proxy::start(ProxyConfig::new(loopback(), echo)).await.unwrap();
        let addr = proxy.local_addr();
        proxy.stop().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nothing listens after stop"
        );
        // And the port is free again for both protocols.
        let again = Proxy::start(ProxyConfig::new(addr, echo)).await.unwrap();
        assert_eq!(again.local_addr(), addr);
        drop(again);
    }

    #[tokio::test]
    async fn bad_settings_are_refused_by_name() {
        let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut config = ProxyConfig::new(loopback(), target);
        config.conditions.loss = 1.5;
        let error = Proxy::start(config).await.unwrap_err();
        assert!(error.to_string().contains("loss"), "{error}");
        let mut config = ProxyConfig::new(loopback(), target);
        config.udp = false;
        config.tcp = false;
        assert!(matches!(
            Proxy::start(config).await,
            Err(ProxyError::Invalid { field: "udp/tcp", .. })
        ));
        let proxy = Proxy::start(ProxyConfig::new(loopback(), target)).await.unwrap();
        assert!(proxy.control().set_loss(-0.1).is_err());
        assert!(proxy.control().set_loss(0.5).is_ok());
        assert_eq!(proxy.control().conditions().loss, 0.5);
    }

    #[tokio::test]
    async fn garbage_and_oversized_input_do_not_stop_the_proxy() {
        let (echo, _server) = udp_echo().await;
        let mut config = ProxyConfig::new(loopback(), echo);
        config.max_udp_sessions = 2;
        let proxy = Proxy::start(config).await.unwrap();
        // More clients than sessions: the extra one is dropped, the proxy goes on.
        let clients: Vec<UdpSocket> = udp_clients(3).await;
        for c in &clients[..2] {
            assert!(udp_round_trip(c, proxy.local_addr(), b"x").await.is_some());
        }
        assert!(
            udp_round_trip(&clients[2], proxy.local_addr(), b"x")
                .await
                .is_none()
        );
        assert!(proxy.control().stats().datagrams_overflow >= 1);
        // A large datagram and an empty one.
        let big = vec![7u8; 60_000];
        let reply = udp_round_trip(&clients[0], proxy.local_addr(), &big)
            .await
            .unwrap();
        assert!(reply.ends_with(&big));
        let reply = udp_round_trip(&clients[0], proxy.local_addr(), b"")
            .await
            .unwrap();
        assert!(reply.ends_with(b"|"));
        // A TCP client that connects to a dead target and leaves.
        let dead = TcpListener::bind(loopback()).await.unwrap().local_addr().unwrap();
        let to_dead = Proxy::start(ProxyConfig::new(loopback(), dead)).await.unwrap();
        let mut s = TcpStream::connect(to_dead.local_addr()).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(STEP, s.read_to_end(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "closed when the target refuses");
    }

    async fn udp_clients(n: usize) -> Vec<UdpSocket> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(UdpSocket::bind(loopback()).await.unwrap());
        }
        out
    }
}
