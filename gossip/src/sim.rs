//! A deterministic discrete-event simulator: thousands of [`Pool`]s exchanging real encoded (and
//! optionally encrypted) packets and streams over a simulated network, in virtual time.
//!
//! Everything random — latency jitter, loss, start times, every pool's seed — derives from
//! [`SimConfig::seed`], so a run is reproducible bit for bit. Packets are subject to latency, jitter,
//! loss and partitions; streams (TCP) are reliable but still cut by partitions and crashes.
//!
//! ```
//! use std::time::Duration;
//! use tribune_gossip::sim::{SimConfig, Simulation};
//!
//! let mut sim = Simulation::new(SimConfig { nodes: 20, ..SimConfig::default() });
//! assert!(sim.run_until(Duration::from_secs(30), Duration::from_millis(500), |s| s.converged()));
//! ```

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::Config;
use crate::keyring::{Keyring, KeyringOp, SimulatedNonces};
use crate::keyring_query::KeyringReport;
use crate::member::{Event, Member, MemberStatus, Tags};
use crate::pool::{LocalNode, Output, Pool, Timer};
use crate::time::Instant;

/// Parameters of a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Configuration of every pool.
    pub pool: Config,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra one-way latency drawn uniformly from `0..jitter` per packet.
    pub jitter: Duration,
    /// Probability that a packet is lost, on every link.
    pub loss: f64,
    /// Encrypt every packet and stream with one shared key.
    pub encrypt: bool,
    /// Nodes start at random instants within this window; every node but node 0 joins through
    /// a node that started before it.
    pub start_window: Duration,
    /// Tags every node carries (they travel in alive messages and push-pull state).
    pub tags: Tags,
    /// Start every node already knowing every other node alive (incarnation 1), as if the join
    /// storm had happened and drained, instead of joining through running nodes. The storm's
    /// work grows as N² × log N (every node retransmits every member's arrival), which makes
    /// 10,000-node runs take hours; what follows convergence is unchanged.
    pub warm_start: bool,
    /// The member name of node `i` ([`node_name`] unless set); names must be distinct. WAN pools
    /// name members `node.datacenter`, which makes every message that carries a name longer.
    pub name_of: fn(usize) -> String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 10,
            seed: 1,
            pool: Config::lan(),
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            loss: 0.0,
            encrypt: false,
            start_window: Duration::from_secs(2),
            tags: Tags::new(),
            warm_start: false,
            name_of: node_name,
        }
    }
}

/// Overrides of one directed link's behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// One-way latency of packets (plus the run's jitter) and of streams.
    pub latency: Duration,
    /// Packet loss probability (streams stay reliable).
    pub loss: f64,
}

/// A member-status event observed in the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// When.
    pub at: Instant,
    /// Index of the node that reported it.
    pub observer: usize,
    /// Index of the member it is about.
    pub subject: usize,
    /// Whether the verdict was a graceful leave (otherwise a failure).
    pub left: bool,
    /// Whether the subject was actually running at that moment (a false positive when not `left`).
    pub subject_was_up: bool,
}

enum Action {
    Start {
        node: usize,
        warm: bool,
    },
    Timer {
        node: usize,
        epoch: u32,
        timer: Timer,
    },
    Packet {
        to: usize,
        from: usize,
        data: Vec<u8>,
    },
    StreamRequest {
        to: usize,
        from: usize,
        data: Vec<u8>,
    },
    StreamReply {
        to: usize,
        from: usize,
        epoch: u32,
        data: Vec<u8>,
    },
    Shutdown {
        node: usize,
        epoch: u32,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that `BinaryHeap` pops the earliest action first (ties in scheduling order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct SimNode {
    pool: Option<Pool>,
    /// Bumped on crash and restart so that timers and replies of a previous life are ignored.
    epoch: u32,
    group: u32,
    bytes_sent: u64,
    packets_sent: u64,
    /// Seconds of uptime accumulated before the current life, plus when the current life began.
    started: Option<Instant>,
    uptime: Duration,
}

/// A simulated cluster. See the [module docs](self).
pub struct Simulation {
    cfg: SimConfig,
    now: Instant,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    links: HashMap<(usize, usize), Link>,
    key: Option<Vec<u8>>,
    verdicts: Vec<Verdict>,
    suspicions: u64,
    deliveries: HashMap<String, Vec<(usize, Instant)>>,
    packets_delivered: u64,
    packets_lost: u64,
    oversized: u64,
    keyring_reports: Vec<(usize, KeyringReport)>,
    scratch: Vec<Output>,
    /// Pools created so far, which numbers their nonce streams.
    pools_started: u32,
    /// Every node's member name, and the reverse map that turns an event's name into a node.
    names: Vec<String>,
    index_of: HashMap<String, usize>,
}

/// The simulated address of node `i`: 10.x.y.z:7946.
pub fn node_addr(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(ip.into(), 7946)
}

/// The node index behind a simulated address.
fn node_index(addr: SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == 7946 => {
            let o = v4.ip().octets();
            (o[0] == 10).then(|| (usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3]))
        }
        _ => None,
    }
}

/// The name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Servers per datacenter in [`wan_node_name`] and [`Simulation::set_wan_layout`], as in a Consul
/// datacenter of five servers.
pub const WAN_SERVERS_PER_DC: usize = 5;

/// A WAN member name as Consul gives it, `node.datacenter`: node i is server `s{i % 5}` of
/// datacenter `dc{i / 5 + 1}`. Use it as [`SimConfig::name_of`] with [`Simulation::set_wan_layout`].
pub fn wan_node_name(i: usize) -> String {
    format!("s{}.dc{}", i % WAN_SERVERS_PER_DC, i / WAN_SERVERS_PER_DC + 1)
}

impl Simulation {
    /// Lays the nodes out as datacenters of [`WAN_SERVERS_PER_DC`] servers on a seeded map and
    /// overrides every directed link: servers of one datacenter are 1 ms apart, two datacenters
    /// (each at a random point of a unit square) 10 ms + 90 ms × distance / diagonal, so that
    /// round trips span 20–200 ms and obey the triangle inequality as geography does; `loss` on
    /// every link. Returns the smallest and largest round trip between two datacenters.
    pub fn set_wan_layout(&mut self, seed: u64, loss: f64) -> (Duration, Duration) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let nodes = self.nodes.len();
        let at: Vec<(f64, f64)> = (0..nodes.div_ceil(WAN_SERVERS_PER_DC))
            .map(|_| (rng.random::<f64>(), rng.random::<f64>()))
            .collect();
        let place = |i: usize| at.get(i / WAN_SERVERS_PER_DC).copied().unwrap_or((0.0, 0.0));
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        for a in 0..nodes {
            for b in (0..nodes).filter(|&b| b != a) {
                let latency = if a / WAN_SERVERS_PER_DC == b / WAN_SERVERS_PER_DC {
                    Duration::from_millis(1)
                } else {
                    let ((xa, ya), (xb, yb)) = (place(a), place(b));
                    let d = ((xa - xb).powi(2) + (ya - yb).powi(2)).sqrt() / 2f64.sqrt();
                    let latency = Duration::from_secs_f64(0.010 + 0.090 * d);
                    min = min.min(latency * 2);
                    max = max.max(latency * 2);
                    latency
                };
                self.set_link(a, b, Link { latency, loss });
            }
        }
        (min.min(max), max)
    }

    /// A cluster whose nodes start within [`SimConfig::start_window`] from time zero.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let key = cfg
            .encrypt
            .then(|| (0..32).map(|_| rng.random::<u8>()).collect::<Vec<u8>>());
        let nodes = (0..cfg.nodes)
            .map(|_| SimNode {
                pool: None,
                epoch: 0,
                group: 0,
                bytes_sent: 0,
                packets_sent: 0,
                started: None,
                uptime: Duration::ZERO,
            })
            .collect();
        let names: Vec<String> = (0..cfg.nodes).map(cfg.name_of).collect();
        let index_of = names.iter().cloned().enumerate().map(|(i, n)| (n, i)).collect();
        let mut sim = Simulation {
            names,
            index_of,
            now: Instant::ZERO,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            links: HashMap::new(),
            key,
            verdicts: Vec::new(),
            suspicions: 0,
            deliveries: HashMap::new(),
            packets_delivered: 0,
            packets_lost: 0,
            oversized: 0,
            keyring_reports: Vec::new(),
            scratch: Vec::new(),
            pools_started: 0,
            cfg,
        };
        let window = u64::try_from(sim.cfg.start_window.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        for node in 0..sim.cfg.nodes {
            // Node 0 starts first so that every later node has someone to join.
            // A warm start begins converged: every node must be up before anyone probes it.
            let at = if node == 0 {
                0
            } else if sim.cfg.warm_start {
                sim.rng.random_range(1..=1000)
            } else {
                sim.rng.random_range(1..=window)
            };
            let warm = sim.cfg.warm_start;
            sim.push(Instant::from_micros(at), Action::Start { node, warm });
        }
        sim
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s member name ([`SimConfig::name_of`]).
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("", String::as_str)
    }

    /// Node `i`'s pool, if it is running.
    pub fn pool(&self, i: usize) -> Option<&Pool> {
        self.nodes.get(i).and_then(|n| n.pool.as_ref())
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.pool(i).is_some()
    }

    /// Indices of running nodes.
    pub fn up_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.is_up(i))
    }

    /// Whether every running node sees exactly the running nodes (that have not left) as live.
    /// False while some node has not started yet.
    pub fn converged(&self) -> bool {
        if self.nodes.iter().any(|n| n.epoch == 0) {
            return false;
        }
        let up: Vec<usize> = self
            .up_nodes()
            .filter(|&i| self.pool(i).is_some_and(|p| !p.has_left()))
            .collect();
        // Cheap test first: most calls before convergence fail on a count.
        if !up
            .iter()
            .all(|&i| self.pool(i).is_some_and(|p| p.num_live() == up.len()))
        {
            return false;
        }
        up.iter().all(|&i| {
            self.pool(i).is_some_and(|p| {
                up.iter().all(|&j| {
                    p.member_status(self.name(j))
                        .is_some_and(|(s, _)| s == MemberStatus::Alive)
                })
            })
        })
    }

    /// Every failure and leave verdict reported so far, in time order.
    pub fn verdicts(&self) -> &[Verdict] {
        &self.verdicts
    }

    /// Failure verdicts about members that were running at the time: false positives.
    pub fn false_failures(&self) -> usize {
        self.verdicts
            .iter()
            .filter(|v| !v.left && v.subject_was_up)
            .count()
    }

    /// Suspicions raised so far (true and false).
    pub fn suspicions(&self) -> u64 {
        self.suspicions
    }

    /// When each node first received the user event `name`.
    pub fn deliveries(&self, name: &str) -> &[(usize, Instant)] {
        self.deliveries.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Bytes (packets and streams) sent by node `i` over all its lives.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes.get(i).map_or(0, |n| n.bytes_sent)
    }

    /// Bytes and packets sent by all nodes.
    pub fn totals(&self) -> (u64, u64) {
        self.nodes
            .iter()
            .fold((0, 0), |(b, p), n| (b + n.bytes_sent, p + n.packets_sent))
    }

    /// Total time nodes were up, summed over nodes.
    pub fn total_uptime(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| {
                n.uptime
                    + n.started
                        .map_or(Duration::ZERO, |s| self.now.saturating_duration_since(s))
            })
            .sum()
    }

    /// Packets delivered and lost so far.
    pub fn packet_counts(&self) -> (u64, u64) {
        (self.packets_delivered, self.packets_lost)
    }

    /// Packets larger than [`Config::packet_size`] sent so far (there should be none).
    pub fn oversized_packets(&self) -> u64 {
        self.oversized
    }

    /// Overrides the link from `a` to `b`.
    pub fn set_link(&mut self, a: usize, b: usize, link: Link) {
        self.links.insert((a, b), link);
    }

    /// Changes the loss probability of every link without an override.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = loss;
    }

    /// Cuts the network: nodes only reach nodes in the same group. `group_of(i)` names node i's group.
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u32) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            n.group = group_of(i);
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// Stops node `i` abruptly: no leave, its in-flight timers and replies are discarded.
    pub fn crash(&mut self, i: usize) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(i) {
            n.pool = None;
            n.epoch += 1;
            if let Some(s) = n.started.take() {
                n.uptime += now.saturating_duration_since(s);
            }
        }
    }

    /// Restarts node `i` with a fresh pool (incarnation reset, new seed) that joins through
    /// running nodes.
    pub fn restart(&mut self, i: usize) {
        self.crash(i);
        self.start(i, false);
    }

    /// Node `i` leaves gracefully and shuts down after [`Config::leave_propagate_delay`].
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        let delay = self.cfg.pool.leave_propagate_delay;
        let Some(n) = self.nodes.get_mut(i) else { return };
        let epoch = n.epoch;
        let Some(p) = n.pool.as_mut() else { return };
        p.leave(now);
        self.drain(i);
        self.push(now + delay, Action::Shutdown { node: i, epoch });
    }

    /// Node `i` runs `force-leave -prune` on member `name` ([`Pool::force_leave_prune`]); false
    /// when the node is down or the pool refused.
    pub fn force_leave_prune(&mut self, i: usize, name: &str) -> bool {
        let now = self.now;
        let done = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.pool.as_mut())
            .is_some_and(|p| p.force_leave_prune(name, now).is_ok());
        self.drain(i);
        done
    }

    /// Node `i` broadcasts a user event.
    pub fn send_user_event(&mut self, i: usize, name: &str, payload: &[u8]) -> bool {
        let now = self.now;
        let sent = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.pool.as_mut())
            .is_some_and(|p| p.send_user_event(name, payload, now).is_ok());
        self.drain(i);
        sent
    }

    /// Node `i` carries a keyring operation to every member ([`Pool::start_keyring_op`]); its
    /// report shows up in [`Simulation::keyring_reports`]. `None` when the node is down.
    pub fn start_keyring_op(&mut self, i: usize, op: KeyringOp) -> Option<u64> {
        let now = self.now;
        let id = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.pool.as_mut())
            .map(|p| p.start_keyring_op(op, now));
        self.drain(i);
        id
    }

    /// Finished keyring operations: the node that started each, and its report.
    pub fn keyring_reports(&self) -> &[(usize, KeyringReport)] {
        &self.keyring_reports
    }

    /// Node `i` replaces its tags.
    pub fn update_tags(&mut self, i: usize, tags: Tags) -> bool {
        let now = self.now;
        let ok = self
            .nodes
            .get_mut(i)
            .and_then(|n| n.pool.as_mut())
            .is_some_and(|p| p.update_tags(tags, now).is_ok());
        self.drain(i);
        ok
    }

    /// Runs every action due up to `until` (virtual time), then sets the clock to `until`.
    pub fn run_to(&mut self, until: Instant) {
        while let Some(top) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(item) = self.queue.pop() else { break };
            self.now = item.at;
            self.execute(item.action);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_to(self.now + d);
    }

    /// Runs in steps of `step` until `done` holds (true) or `limit` of virtual time passed (false).
    pub fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Simulation) -> bool,
    ) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= end {
                return false;
            }
            self.run_to((self.now + step).min(end));
        }
    }

    // -----------------------------------------------------------------------------------------

    fn push(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            action,
        });
    }

    fn start(&mut self, i: usize, warm: bool) {
        let now = self.now;
        let keyring = self.key.as_deref().and_then(|k| Keyring::new(k).ok());
        let seed = self.rng.random::<u64>();
        let local = LocalNode {
            name: self.name(i).to_string(),
            addr: node_addr(i),
            tags: self.cfg.tags.clone(),
        };
        // Simulation only: counter nonces keep the run reproducible; each pool started gets its own
        // stream so no two pools of the run repeat a nonce under the shared key.
        let stream = self.pools_started;
        self.pools_started = self.pools_started.wrapping_add(1);
        let nonces = Box::new(SimulatedNonces::new(stream));
        let Ok(mut pool) = Pool::new(self.cfg.pool.clone(), local, keyring, nonces, seed, now) else {
            return;
        };
        if warm {
            let tags = &self.cfg.tags;
            let everyone = (0..self.nodes.len()).filter(|&j| j != i).map(|j| Member {
                name: self.name(j).to_string(),
                addr: node_addr(j),
                tags: tags.clone(),
                incarnation: 1,
                status: MemberStatus::Alive,
            });
            pool.restore_members(everyone, now);
        }
        // Join through a few running nodes, as an agent's retry_join list would.
        let running: Vec<usize> = if warm {
            Vec::new()
        } else {
            (0..self.nodes.len())
                .filter(|&j| j != i && self.is_up(j))
                .collect()
        };
        if !running.is_empty() {
            let seeds: Vec<SocketAddr> = (0..3)
                .map(|_| node_addr(running[self.rng.random_range(0..running.len())]))
                .collect();
            pool.join(&seeds, now);
        }
        if let Some(n) = self.nodes.get_mut(i) {
            n.epoch += 1;
            n.pool = Some(pool);
            n.started = Some(now);
        }
        self.drain(i);
    }

    fn execute(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Start { node, warm } => self.start(node, warm),
            Action::Timer { node, epoch, timer } => {
                let Some(n) = self.nodes.get_mut(node) else { return };
                if n.epoch != epoch {
                    return;
                }
                if let Some(p) = n.pool.as_mut() {
                    p.handle_timer(timer, now);
                    self.drain(node);
                }
            }
            Action::Packet { to, from, data } => {
                if let Some(p) = self.nodes.get_mut(to).and_then(|n| n.pool.as_mut()) {
                    p.handle_packet(node_addr(from), &data, now);
                    self.drain(to);
                }
            }
            Action::StreamRequest { to, from, data } => {
                let reply = match self.nodes.get_mut(to).and_then(|n| n.pool.as_mut()) {
                    Some(p) => p.handle_stream(node_addr(from), &data, now),
                    None => None,
                };
                self.drain(to);
                if let Some(reply) = reply
                    && self.reachable(to, from)
                {
                    let epoch = self.nodes.get(from).map_or(0, |n| n.epoch);
                    self.account(to, reply.len(), false);
                    let at = now + self.latency(to, from);
                    self.push(
                        at,
                        Action::StreamReply {
                            to: from,
                            from: to,
                            epoch,
                            data: reply,
                        },
                    );
                }
            }
            Action::StreamReply {
                to,
                from,
                epoch,
                data,
            } => {
                let Some(n) = self.nodes.get_mut(to) else { return };
                if n.epoch != epoch {
                    return;
                }
                if let Some(p) = n.pool.as_mut() {
                    let _ = p.handle_stream(node_addr(from), &data, now);
                    self.drain(to);
                }
            }
            Action::Shutdown { node, epoch } => {
                if self.nodes.get(node).is_some_and(|n| n.epoch == epoch) {
                    self.crash(node);
                }
            }
        }
    }

    /// One-way latency from `a` to `b` before jitter: the link's override, else the default.
    fn latency(&self, a: usize, b: usize) -> Duration {
        self.links.get(&(a, b)).map_or(self.cfg.latency, |l| l.latency)
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        match (self.nodes.get(a), self.nodes.get(b)) {
            (Some(x), Some(y)) => x.group == y.group,
            _ => false,
        }
    }

    fn account(&mut self, i: usize, bytes: usize, packet: bool) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.bytes_sent += bytes as u64;
            n.packets_sent += u64::from(packet);
        }
    }

    /// Moves node `i`'s outputs into the network, the timer queue and the observation records.
    fn drain(&mut self, i: usize) {
        let mut outs = std::mem::take(&mut self.scratch);
        if let Some(p) = self.nodes.get_mut(i).and_then(|n| n.pool.as_mut()) {
            while let Some(o) = p.poll_output() {
                outs.push(o);
            }
        }
        let epoch = self.nodes.get(i).map_or(0, |n| n.epoch);
        for out in outs.drain(..) {
            match out {
                Output::Packet { to, data } => {
                    self.account(i, data.len(), true);
                    if data.len() > self.cfg.pool.packet_size {
                        self.oversized += 1;
                    }
                    let Some(j) = node_index(to) else { continue };
                    if j >= self.nodes.len() || !self.reachable(i, j) {
                        self.packets_lost += 1;
                        continue;
                    }
                    let link = self.links.get(&(i, j)).copied();
                    let loss = link.map_or(self.cfg.loss, |l| l.loss);
                    if loss > 0.0 && self.rng.random_bool(loss.clamp(0.0, 1.0)) {
                        self.packets_lost += 1;
                        continue;
                    }
                    let mut latency = self.latency(i, j);
                    let jitter = u64::try_from(self.cfg.jitter.as_micros()).unwrap_or(0);
                    if jitter > 0 {
                        latency += Duration::from_micros(self.rng.random_range(0..jitter));
                    }
                    self.packets_delivered += 1;
                    self.push(self.now + latency, Action::Packet { to: j, from: i, data });
                }
                Output::Stream { to, data } => {
                    self.account(i, data.len(), false);
                    let Some(j) = node_index(to) else { continue };
                    if j < self.nodes.len() && self.reachable(i, j) {
                        let at = self.now + self.latency(i, j);
                        self.push(at, Action::StreamRequest { to: j, from: i, data });
                    }
                }
                Output::Timer { timer, at } => self.push(
                    at.max(self.now),
                    Action::Timer {
                        node: i,
                        epoch,
                        timer,
                    },
                ),
                Output::Event(event) => self.observe(i, event),
                Output::KeyringDone(report) => self.keyring_reports.push((i, report)),
            }
        }
        self.scratch = outs;
    }

    fn observe(&mut self, observer: usize, event: Event) {
        let (member, left) = match event {
            Event::Failed(m) => (m, false),
            Event::Left(m) => (m, true),
            Event::Suspect(_) => {
                self.suspicions += 1;
                return;
            }
            Event::User(u) => {
                self.deliveries
                    .entry(u.name)
                    .or_default()
                    .push((observer, self.now));
                return;
            }
            _ => return,
        };
        let Some(&subject) = self.index_of.get(&member.name) else {
            return;
        };
        let subject_was_up = self.pool(subject).is_some_and(|p| !p.has_left());
        self.verdicts.push(Verdict {
            at: self.now,
            observer,
            subject,
            left,
            subject_was_up,
        });
    }
}
