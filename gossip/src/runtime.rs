//! The tokio adapter: drives a [`Pool`] with a UDP socket for packets, a TCP listener for
//! push-pull streams and a timer queue.
//!
//! One task owns the pool; everything else talks to it through channels. Streams are framed as a
//! 4-byte big-endian length followed by the payload; each exchange is one request and one reply.
//! Dropping every [`Gossip`] handle stops the task; [`Gossip::shutdown`] also waits for it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tribune_netem::link::{Network, Verdict};

use crate::config::Config;
use crate::coordinate::Coordinate;
use crate::keyring::{ENCRYPTION_OVERHEAD, Keyring, KeyringError, KeyringOp, SystemNonces};
use crate::keyring_query::KeyringReport;
use crate::member::{Event, Member, Tags};
use crate::pool::{LocalNode, Output, Pool, PoolError, Stats, Timer};
use crate::time::Instant;

/// What [`Gossip::start`] needs.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// Pool configuration.
    pub config: Config,
    /// Unique member name.
    pub name: String,
    /// Address to bind UDP and TCP on (port 0 picks a free port, the same for both).
    pub bind: SocketAddr,
    /// Address other members use to reach us; defaults to the bound address, which must then
    /// not be unspecified (0.0.0.0 or ::). A port of 0 here means the bound port (known only
    /// after binding when `bind` has port 0 too).
    pub advertise: Option<SocketAddr>,
    /// Initial tags.
    pub tags: Tags,
    /// Encryption keys; `None` sends and accepts plaintext only.
    pub keyring: Option<Keyring>,
    /// Emulated link conditions applied to what this member sends, for tests (`None`: the real
    /// network only). Packets from the advertised address are delayed without holding up the
    /// pool, or dropped; a push-pull waits the one-way delay each way, and a cut link makes it
    /// time out as an unreachable peer does.
    pub network: Option<Network>,
}

impl GossipOptions {
    /// LAN defaults, no tags, no encryption.
    pub fn new(name: impl Into<String>, bind: SocketAddr) -> Self {
        GossipOptions {
            config: Config::lan(),
            name: name.into(),
            bind,
            advertise: None,
            tags: Tags::new(),
            keyring: None,
            network: None,
        }
    }
}

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// Binding the UDP socket or TCP listener failed.
    #[error("binding gossip sockets on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The advertised address would be unreachable.
    #[error("cannot advertise unspecified address {addr}; set `advertise`")]
    UnspecifiedAdvertise {
        /// The address.
        addr: SocketAddr,
    },
    /// The pool refused the operation.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The keyring refused the operation.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// A keyring operation on a pool without encryption.
    #[error("encryption is not enabled on this pool")]
    NoKeyring,
    /// No member could be reached.
    #[error("could not join any of the given members after {attempts} attempt(s)")]
    JoinFailed {
        /// Attempts made.
        attempts: u32,
    },
    /// The runtime has stopped.
    #[error("the gossip runtime has stopped")]
    Stopped,
}

/// Incoming stream exchanges served at once (memberlist's `maxPushPullRequests`); more are closed
/// at once, so a flood of connections cannot exhaust memory.
const MAX_INCOMING_STREAMS: usize = 128;

enum Command {
    Join(Vec<SocketAddr>, oneshot::Sender<usize>),
    Leave(oneshot::Sender<()>),
    ForceLeave(String, oneshot::Sender<Result<(), PoolError>>),
    ForceLeavePrune(String, oneshot::Sender<Result<(), PoolError>>),
    UpdateTags(Tags, oneshot::Sender<Result<(), PoolError>>),
    UserEvent(String, Vec<u8>, oneshot::Sender<Result<(), PoolError>>),
    Members(oneshot::Sender<Vec<Member>>),
    Stats(oneshot::Sender<Stats>),
    HealthScore(oneshot::Sender<u32>),
    Coordinates(oneshot::Sender<Vec<(String, Coordinate)>>),
    SetCoordinate(Coordinate, oneshot::Sender<Result<(), PoolError>>),
    SetMemberCoordinate(String, Coordinate, oneshot::Sender<Result<(), PoolError>>),
    Keyring(KeyringOp, oneshot::Sender<Result<Vec<String>, RuntimeError>>),
    PoolKeyring(KeyringOp, oneshot::Sender<KeyringReport>),
    Shutdown,
}

struct Incoming {
    from: SocketAddr,
    data: Vec<u8>,
    reply: oneshot::Sender<Option<Vec<u8>>>,
}

/// A handle to a running pool. Cheap to clone; the pool stops when every handle is dropped.
#[derive(Debug, Clone)]
pub struct Gossip {
    commands: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    leave_delay: Duration,
    task: std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl Gossip {
    /// Binds the sockets and starts the pool. Events arrive on the returned receiver, which the
    /// caller should keep draining (it is unbounded).
    pub async fn start(
        opts: GossipOptions,
    ) -> Result<(Gossip, mpsc::UnboundedReceiver<Event>), RuntimeError> {
        opts.config.validate().map_err(PoolError::from)?;
        let (listener, udp) = bind_pair(opts.bind).await?;
        let bound = listener.local_addr().map_err(|source| RuntimeError::Bind {
            addr: opts.bind,
            source,
        })?;
        let advertise = match opts.advertise {
            Some(addr) if addr.port() == 0 => SocketAddr::new(addr.ip(), bound.port()),
            Some(addr) => addr,
            None => bound,
        };
        if advertise.ip().is_unspecified() {
            return Err(RuntimeError::UnspecifiedAdvertise { addr: advertise });
        }
        let epoch = tokio::time::Instant::now();
        let local = LocalNode {
            name: opts.name.clone(),
            addr: advertise,
            tags: opts.tags.clone(),
        };
        let network = opts.network.clone();
        let pool = runtime_pool(opts.config.clone(), local, opts.keyring, random_seed())?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            pool,
            epoch,
            udp: Arc::new(udp),
            listener,
            events: event_tx,
            timers: BTreeMap::new(),
            timer_seq: 0,
            streams: JoinSet::new(),
            incoming: JoinSet::new(),
            joins: Vec::new(),
            keyring_waiters: std::collections::HashMap::new(),
            advertise,
            network,
            delayed: JoinSet::new(),
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        let handle = Gossip {
            commands: cmd_tx,
            local_addr: advertise,
            leave_delay: opts.config.leave_propagate_delay,
            task: std::sync::Arc::new(std::sync::Mutex::new(Some(task))),
        };
        Ok((handle, event_rx))
    }

    /// The advertised address (the bound one unless `advertise` was set).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn call<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Command) -> Result<R, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| RuntimeError::Stopped)?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Exchanges state with each address; returns how many answered. Errors when none did.
    pub async fn join(&self, addrs: &[SocketAddr]) -> Result<usize, RuntimeError> {
        let n = self.call(|tx| Command::Join(addrs.to_vec(), tx)).await?;
        if n == 0 {
            Err(RuntimeError::JoinFailed { attempts: 1 })
        } else {
            Ok(n)
        }
    }

    /// Like Consul's `retry_join` / `retry_max`: tries [`Gossip::join`] every `interval` until at
    /// least one member answers, at most `max_attempts` times — or, as Consul's `retry_max = 0`,
    /// until it succeeds or the runtime stops when `max_attempts` is 0 (drop the future to give up).
    pub async fn retry_join(
        &self,
        addrs: &[SocketAddr],
        interval: Duration,
        max_attempts: u32,
    ) -> Result<usize, RuntimeError> {
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            match self.join(addrs).await {
                Ok(n) => return Ok(n),
                Err(RuntimeError::JoinFailed { .. }) if max_attempts == 0 || attempt < max_attempts => {
                    tracing::debug!(attempt, "gossip join failed, retrying");
                    tokio::time::sleep(interval).await;
                }
                Err(RuntimeError::JoinFailed { .. }) => {
                    return Err(RuntimeError::JoinFailed { attempts: attempt });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every known member, this node included.
    pub async fn members(&self) -> Result<Vec<Member>, RuntimeError> {
        self.call(Command::Members).await
    }

    /// The pool's counters.
    pub async fn stats(&self) -> Result<Stats, RuntimeError> {
        self.call(Command::Stats).await
    }

    /// Lifeguard's local health score ([`Pool::health_score`]): 0 is healthy; it rises as this
    /// node misses acks it should have had.
    pub async fn health_score(&self) -> Result<u32, RuntimeError> {
        self.call(Command::HealthScore).await
    }

    /// Every network coordinate known ([`Pool::member_coordinates`]): this node's first, then
    /// each member's latest from its acks. Empty when coordinates are off.
    pub async fn coordinates(&self) -> Result<Vec<(String, Coordinate)>, RuntimeError> {
        self.call(Command::Coordinates).await
    }

    /// Replaces this node's coordinate, e.g. with one saved before a restart
    /// ([`Pool::set_coordinate`]).
    pub async fn set_coordinate(&self, coordinate: Coordinate) -> Result<(), RuntimeError> {
        Ok(self.call(|tx| Command::SetCoordinate(coordinate, tx)).await??)
    }

    /// Sets a member's coordinate, this node's included ([`Pool::set_member_coordinate`]).
    pub async fn set_member_coordinate(
        &self,
        name: &str,
        coordinate: Coordinate,
    ) -> Result<(), RuntimeError> {
        Ok(self
            .call(|tx| Command::SetMemberCoordinate(name.to_owned(), coordinate, tx))
            .await??)
    }

    /// Replaces this node's tags.
    pub async fn update_tags(&self, tags: Tags) -> Result<(), RuntimeError> {
        Ok(self.call(|tx| Command::UpdateTags(tags, tx)).await??)
    }

    /// Broadcasts a user event.
    pub async fn send_user_event(&self, name: &str, payload: &[u8]) -> Result<(), RuntimeError> {
        Ok(self
            .call(|tx| Command::UserEvent(name.to_owned(), payload.to_vec(), tx))
            .await??)
    }

    /// Installs a raw key on this member only (decode a base64 one with [`crate::decode_key`]);
    /// returns the keys. [`Gossip::keyring`] does it on every member.
    pub async fn install_key(&self, key: &[u8]) -> Result<Vec<String>, RuntimeError> {
        self.call(|tx| Command::Keyring(KeyringOp::Install(key.to_vec()), tx))
            .await?
    }

    /// Makes an installed key primary.
    pub async fn use_key(&self, key: &[u8]) -> Result<Vec<String>, RuntimeError> {
        self.call(|tx| Command::Keyring(KeyringOp::Use(key.to_vec()), tx))
            .await?
    }

    /// Removes a secondary key.
    pub async fn remove_key(&self, key: &[u8]) -> Result<Vec<String>, RuntimeError> {
        self.call(|tx| Command::Keyring(KeyringOp::Remove(key.to_vec()), tx))
            .await?
    }

    /// Installed keys in base64, primary first.
    pub async fn list_keys(&self) -> Result<Vec<String>, RuntimeError> {
        self.call(|tx| Command::Keyring(KeyringOp::List, tx)).await?
    }

    /// Carries `op` to every live member, this one included, and waits for their answers (at
    /// most [`Config::tcp_timeout`]): Consul's `keyring` command. See [`Pool::start_keyring_op`].
    pub async fn keyring(&self, op: KeyringOp) -> Result<KeyringReport, RuntimeError> {
        self.call(|tx| Command::PoolKeyring(op, tx)).await
    }

    /// Leaves gracefully: announces the departure, keeps gossiping for
    /// [`Config::leave_propagate_delay`], then returns. Call [`Gossip::shutdown`] afterwards.
    pub async fn leave(&self) -> Result<(), RuntimeError> {
        self.call(Command::Leave).await?;
        tokio::time::sleep(self.leave_delay).await;
        Ok(())
    }

    /// Consul's `force-leave`: see [`Pool::force_leave`].
    pub async fn force_leave(&self, name: &str) -> Result<(), RuntimeError> {
        Ok(self.call(|tx| Command::ForceLeave(name.to_owned(), tx)).await??)
    }

    /// Consul's `force-leave -prune`: see [`Pool::force_leave_prune`].
    pub async fn force_leave_prune(&self, name: &str) -> Result<(), RuntimeError> {
        Ok(self
            .call(|tx| Command::ForceLeavePrune(name.to_owned(), tx))
            .await??)
    }

    /// Stops the pool (without announcing a leave) and waits for its task to end.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

struct JoinWaiter {
    pending: Vec<SocketAddr>,
    answered: usize,
    reply: oneshot::Sender<usize>,
}

struct Driver {
    pool: Pool,
    epoch: tokio::time::Instant,
    udp: Arc<UdpSocket>,
    listener: TcpListener,
    events: mpsc::UnboundedSender<Event>,
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    streams: JoinSet<(SocketAddr, io::Result<Vec<u8>>)>,
    incoming: JoinSet<()>,
    joins: Vec<JoinWaiter>,
    keyring_waiters: std::collections::HashMap<u64, oneshot::Sender<KeyringReport>>,
    advertise: SocketAddr,
    network: Option<Network>,
    /// Packets held back by an emulated delay, each sent by its own task.
    delayed: JoinSet<()>,
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let (in_tx, mut in_rx) = mpsc::channel::<Incoming>(128);
        let mut buf = vec![0u8; 65_536];
        loop {
            self.flush().await;
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let sleep_until = next_timer.map_or(self.epoch + Duration::from_secs(3600), |at| {
                self.epoch + at.since_epoch()
            });
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.command(cmd),
                },
                recv = self.udp.recv_from(&mut buf) => match recv {
                    Ok((n, from)) => {
                        let now = self.now();
                        if let Some(data) = buf.get(..n) {
                            self.pool.handle_packet(from, data, now);
                        }
                    }
                    Err(err) => tracing::debug!(%err, "gossip UDP receive failed"),
                },
                accepted = self.listener.accept() => match accepted {
                    Ok((_, from)) if self.incoming.len() >= MAX_INCOMING_STREAMS => {
                        tracing::debug!(%from, "too many gossip streams in flight; dropping one");
                    }
                    Ok((stream, from)) => {
                        let limit = self.pool.config().max_stream_size + ENCRYPTION_OVERHEAD;
                        let timeout = self.pool.config().tcp_timeout;
                        let in_tx = in_tx.clone();
                        self.incoming.spawn(serve_stream(stream, from, limit, timeout, in_tx));
                    }
                    Err(err) => tracing::debug!(%err, "gossip TCP accept failed"),
                },
                Some(req) = in_rx.recv() => {
                    let now = self.now();
                    let reply = self.pool.handle_stream(req.from, &req.data, now);
                    let _ = req.reply.send(reply);
                },
                Some(done) = self.streams.join_next(), if !self.streams.is_empty() => {
                    if let Ok((to, result)) = done {
                        let ok = match result {
                            Ok(reply) => {
                                let now = self.now();
                                let _ = self.pool.handle_stream(to, &reply, now);
                                true
                            }
                            Err(err) => {
                                tracing::debug!(%to, %err, "gossip stream exchange failed");
                                false
                            }
                        };
                        self.stream_done(to, ok);
                    }
                },
                Some(_) = self.incoming.join_next(), if !self.incoming.is_empty() => {},
                Some(_) = self.delayed.join_next(), if !self.delayed.is_empty() => {},
                () = tokio::time::sleep_until(sleep_until) => {
                    let now = self.now();
                    while let Some(entry) = self.timers.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let timer = entry.remove();
                        self.pool.handle_timer(timer, now);
                    }
                },
            }
        }
        self.streams.abort_all();
        self.incoming.abort_all();
        self.delayed.abort_all();
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Join(addrs, reply) => {
                let pending: Vec<SocketAddr> = addrs.into_iter().filter(|a| *a != self.advertise).collect();
                if pending.is_empty() {
                    let _ = reply.send(0);
                    return;
                }
                self.pool.join(&pending, now);
                self.joins.push(JoinWaiter {
                    pending,
                    answered: 0,
                    reply,
                });
            }
            Command::Leave(reply) => {
                self.pool.leave(now);
                let _ = reply.send(());
            }
            Command::ForceLeave(name, reply) => {
                let _ = reply.send(self.pool.force_leave(&name, now));
            }
            Command::ForceLeavePrune(name, reply) => {
                let _ = reply.send(self.pool.force_leave_prune(&name, now));
            }
            Command::UpdateTags(tags, reply) => {
                let _ = reply.send(self.pool.update_tags(tags, now));
            }
            Command::UserEvent(name, payload, reply) => {
                let _ = reply.send(self.pool.send_user_event(&name, &payload, now));
            }
            Command::Members(reply) => {
                let _ = reply.send(self.pool.members().collect());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.pool.stats().clone());
            }
            Command::HealthScore(reply) => {
                let _ = reply.send(self.pool.health_score());
            }
            Command::Coordinates(reply) => {
                let all = self.pool.member_coordinates();
                let _ = reply.send(all.map(|(n, c)| (n.to_owned(), c.clone())).collect());
            }
            Command::SetCoordinate(coordinate, reply) => {
                let _ = reply.send(self.pool.set_coordinate(coordinate));
            }
            Command::SetMemberCoordinate(name, coordinate, reply) => {
                let _ = reply.send(self.pool.set_member_coordinate(&name, coordinate));
            }
            Command::Keyring(op, reply) => {
                let result = match self.pool.keyring_mut() {
                    None => Err(RuntimeError::NoKeyring),
                    Some(ring) => ring.apply(&op).map(|()| ring.keys()).map_err(RuntimeError::from),
                };
                if result.is_ok() && op.changes_keys() {
                    let _ = self.events.send(Event::KeyringChanged);
                }
                let _ = reply.send(result);
            }
            Command::PoolKeyring(op, reply) => {
                let id = self.pool.start_keyring_op(op, now);
                self.keyring_waiters.insert(id, reply);
            }
            Command::Shutdown => {}
        }
    }

    fn stream_done(&mut self, to: SocketAddr, ok: bool) {
        let mut finished = Vec::new();
        for (i, w) in self.joins.iter_mut().enumerate() {
            if let Some(pos) = w.pending.iter().position(|a| *a == to) {
                w.pending.swap_remove(pos);
                w.answered += usize::from(ok);
                if w.pending.is_empty() {
                    finished.push(i);
                }
            }
        }
        for i in finished.into_iter().rev() {
            let w = self.joins.swap_remove(i);
            let _ = w.reply.send(w.answered);
        }
    }

    /// Carries out everything the pool asked for.
    async fn flush(&mut self) {
        while let Some(out) = self.pool.poll_output() {
            match out {
                Output::Packet { to, data } => {
                    let verdict = self.network.as_ref().map(|n| n.decide(self.advertise, to));
                    match verdict {
                        Some(Verdict::Drop) => {}
                        Some(Verdict::Deliver { after }) if !after.is_zero() => {
                            let udp = Arc::clone(&self.udp);
                            self.delayed.spawn(async move {
                                tokio::time::sleep(after).await;
                                if let Err(err) = udp.send_to(&data, to).await {
                                    tracing::debug!(%to, %err, "gossip UDP send failed");
                                }
                            });
                        }
                        _ => {
                            if let Err(err) = self.udp.send_to(&data, to).await {
                                tracing::debug!(%to, %err, "gossip UDP send failed");
                            }
                        }
                    }
                }
                Output::Stream { to, data } => {
                    let limit = self.pool.config().max_stream_size + ENCRYPTION_OVERHEAD;
                    let timeout = self.pool.config().tcp_timeout;
                    let link = self.network.as_ref().map_or([Verdict::NOW; 2], |n| {
                        [n.connect(self.advertise, to), n.connect(to, self.advertise)]
                    });
                    self.streams
                        .spawn(async move { (to, exchange(to, data, limit, timeout, link).await) });
                }
                Output::Timer { timer, at } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq), timer);
                }
                Output::Event(event) => {
                    let _ = self.events.send(event);
                }
                Output::KeyringDone(report) => {
                    if let Some(waiter) = self.keyring_waiters.remove(&report.id) {
                        let _ = waiter.send(report);
                    }
                }
            }
        }
    }
}

async fn bind_pair(addr: SocketAddr) -> Result<(TcpListener, UdpSocket), RuntimeError> {
    let err = |source| RuntimeError::Bind { addr, source };
    // With port 0 the TCP port the OS picks may be taken for UDP: retry a few times.
    let attempts = if addr.port() == 0 { 10 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let listener = TcpListener::bind(addr).await.map_err(err)?;
        let port = listener.local_addr().map_err(err)?.port();
        match UdpSocket::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| io::Error::other("no attempt made"))))
}

async fn read_frame(stream: &mut TcpStream, limit: usize) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream frame of {len} bytes exceeds {limit}"),
        ));
    }
    // Grow with the bytes that actually arrive rather than trusting the announced length.
    let mut data = Vec::with_capacity(len.min(64 * 1024));
    (&mut *stream).take(len as u64).read_to_end(&mut data).await?;
    if data.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream frame truncated",
        ));
    }
    Ok(data)
}

async fn write_frame(stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    stream.write_u32(len).await?;
    stream.write_all(data).await?;
    stream.flush().await
}

/// One outgoing push-pull: connect, send, read the reply. `link` holds the emulated fate of the
/// request and of the reply: each waits its one-way delay, and a dropped one leaves the exchange
/// hanging until `timeout`, as a peer behind a dropping firewall does.
async fn exchange(
    to: SocketAddr,
    data: Vec<u8>,
    limit: usize,
    timeout: Duration,
    link: [Verdict; 2],
) -> io::Result<Vec<u8>> {
    async fn cross(verdict: Verdict) {
        match verdict {
            Verdict::Drop => std::future::pending().await,
            Verdict::Deliver { after } if !after.is_zero() => tokio::time::sleep(after).await,
            Verdict::Deliver { .. } => {}
        }
    }
    let [there, back] = link;
    let work = async {
        cross(there).await;
        let mut stream = TcpStream::connect(to).await?;
        write_frame(&mut stream, &data).await?;
        let reply = read_frame(&mut stream, limit).await?;
        cross(back).await;
        Ok(reply)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream timed out"))?
}

/// One incoming push-pull: read, hand to the pool, write its reply (or close when it has none).
async fn serve_stream(
    mut stream: TcpStream,
    from: SocketAddr,
    limit: usize,
    timeout: Duration,
    to_pool: mpsc::Sender<Incoming>,
) {
    let work = async {
        let data = read_frame(&mut stream, limit).await?;
        let (tx, rx) = oneshot::channel();
        to_pool
            .send(Incoming {
                from,
                data,
                reply: tx,
            })
            .await
            .map_err(|_| io::Error::other("gossip runtime stopped"))?;
        if let Ok(Some(reply)) = rx.await {
            write_frame(&mut stream, &reply).await?;
        }
        Ok::<(), io::Error>(())
    };
    if let Ok(Err(err)) = tokio::time::timeout(timeout, work).await {
        tracing::debug!(%from, %err, "gossip stream from peer failed");
    }
}

/// The pool as the runtime runs it: the protocol's RNG from `seed`, and AES-GCM nonces from the
/// system's CSPRNG, never from that seed.
fn runtime_pool(
    config: Config,
    local: LocalNode,
    keyring: Option<Keyring>,
    seed: u64,
) -> Result<Pool, PoolError> {
    Pool::new(
        config,
        local,
        keyring,
        Box::new(SystemNonces::new()),
        seed,
        Instant::ZERO,
    )
}

/// A seed for the pool's RNG (probe order, gossip targets, jitter) from the system's secure source,
/// so that processes do not pick their targets in lockstep. Nonces do not depend on it.
fn random_seed() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The OS random source failing is not recoverable in any sensible way; fall back to the
        // clock and the process id so that at least distinct processes differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sealed_join_stream(seed: u64) -> (Vec<u8>, bool) {
        let local = LocalNode {
            name: "a".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            tags: Tags::new(),
        };
        let keyring = Keyring::new(&[3; 32]).unwrap();
        let mut pool = runtime_pool(Config::local(), local, Some(keyring), seed).unwrap();
        while pool.poll_output().is_some() {}
        pool.join(&[SocketAddr::from(([127, 0, 0, 1], 2))], Instant::ZERO);
        let stream = std::iter::from_fn(|| pool.poll_output())
            .find_map(|o| match o {
                Output::Stream { data, .. } => Some(data),
                _ => None,
            })
            .unwrap();
        (stream, pool.nonces_are_cryptographic())
    }

    #[test]
    fn the_runtime_seals_under_system_nonces_whatever_the_seed() {
        let (first, cryptographic) = sealed_join_stream(9);
        let (second, _) = sealed_join_stream(9);
        assert!(cryptographic, "the runtime must use the system CSPRNG for nonces");
        let nonce = 1..1 + ring::aead::NONCE_LEN;
        assert_eq!(first.len(), second.len());
        assert_ne!(first[nonce.clone()], second[nonce]);
    }
}
