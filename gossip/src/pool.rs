//! The sans-IO membership state machine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use crate::broadcast::BroadcastQueue;
use crate::codec::{
    self, MAX_MESSAGES_PER_PACKET, MemberState, Message, PACKET_HEADER, PushPull, StreamMessage,
};
use crate::config::{Config, ConfigError};
use crate::coordinate::{Coordinate, CoordinateClient, CoordinateConfig, CoordinateError, CoordinateStats};
use crate::keyring::{ENCRYPTION_OVERHEAD, ENCRYPTION_VERSION, Keyring, KeyringOp, NonceSource, OpenError};
use crate::keyring_query::{KeyringReport, PendingKeyringOp};
use crate::member::{Event, Member, MemberStatus, Tags, UserEvent};
use crate::table::{Entry, MemberTable};
use crate::time::Instant;
use crate::user_events::EventDedup;

const AAD_PACKET: &[u8] = b"tribune-gossip/packet";
const AAD_STREAM: &[u8] = b"tribune-gossip/stream";
/// Mixed into the pool's seed to seed its coordinate client's direction generator.
const COORDINATE_SEED_SALT: u64 = 0x636f_6f72_6469_6e61;
/// Longest member name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most prunes sent back to one peer that missed them, per push-pull: the rest follow on later
/// exchanges, and one packet stays small.
const MAX_PRUNES_PER_CORRECTION: usize = 16;

/// The local member's identity, as given to [`Pool::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalNode {
    /// Unique name in the pool.
    pub name: String,
    /// Address advertised to other members (where the runtime receives packets and streams).
    pub addr: SocketAddr,
    /// Initial tags.
    pub tags: Tags,
}

/// A timer the pool asked for. The caller MUST deliver every timer to [`Pool::handle_timer`] at or
/// after its `at` instant, exactly once; delivering one late only delays the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Probe the next member.
    Probe,
    /// The direct probe `seq` got no ack in time: probe indirectly.
    ProbeTimeout {
        /// Sequence number of the probe.
        seq: u32,
    },
    /// Send queued broadcasts.
    Gossip,
    /// Exchange full state with a random member.
    PushPull,
    /// Try to reach a random failed member.
    Reconnect,
    /// The suspicion of `node` at `incarnation` may have expired.
    Suspicion {
        /// The suspected member.
        node: String,
        /// Its incarnation when suspected.
        incarnation: u32,
    },
    /// An indirect probe relayed for another member expired.
    RelayTimeout {
        /// Our sequence number of the relayed ping.
        seq: u32,
    },
    /// A keyring operation's members had until now to answer.
    KeyringDeadline {
        /// The operation's number.
        id: u64,
    },
}

/// Something the caller must do for the pool. Drain with [`Pool::poll_output`] after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send `data` as one UDP datagram to `to`.
    Packet {
        /// Destination.
        to: SocketAddr,
        /// Datagram payload (at most [`Config::packet_size`] bytes).
        data: Vec<u8>,
    },
    /// Open a stream to `to`, write `data`, read one reply and give it to [`Pool::handle_stream`].
    Stream {
        /// Destination.
        to: SocketAddr,
        /// Stream payload.
        data: Vec<u8>,
    },
    /// Call [`Pool::handle_timer`] with `timer` at `at`.
    Timer {
        /// Which timer.
        timer: Timer,
        /// When it fires.
        at: Instant,
    },
    /// Report an event to the application.
    Event(Event),
    /// A keyring operation started with [`Pool::start_keyring_op`] has every answer, or its
    /// deadline passed.
    KeyringDone(KeyringReport),
}

/// Counters kept by a pool, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams emitted.
    pub packets_sent: u64,
    /// Bytes of datagrams emitted.
    pub packet_bytes_sent: u64,
    /// Streams emitted (requests and replies).
    pub streams_sent: u64,
    /// Bytes of streams emitted.
    pub stream_bytes_sent: u64,
    /// Datagrams received.
    pub packets_received: u64,
    /// Streams received.
    pub streams_received: u64,
    /// Encrypted packets or streams no installed key opens (or received without a keyring).
    pub undecryptable_dropped: u64,
    /// Plaintext packets or streams received while encryption is on.
    pub plaintext_dropped: u64,
    /// Packets or streams that do not decode.
    pub malformed_dropped: u64,
    /// Probes started.
    pub probes: u64,
    /// Probes whose direct ack did not come in time, so indirect (and stream) probes were sent.
    pub indirect_probes: u64,
    /// Probes that ended without any ack.
    pub failed_probes: u64,
    /// Times this node refuted a claim that it was suspect or dead.
    pub refutations: u64,
    /// Packets or streams not sent because the nonce source failed.
    pub nonce_failures: u64,
    /// RTT samples from direct probes applied to the local coordinate.
    pub coordinate_updates: u64,
    /// Acks whose coordinate or RTT the coordinate client refused (see [`CoordinateError`]).
    pub coordinate_rejected: u64,
}

/// Why an operation on a pool was refused. The pool is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The member name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("member name must be 1..={max} bytes, got {len}")]
    InvalidName {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded tags exceed [`Config::max_tags_size`].
    #[error("tags take {size} bytes encoded, more than the limit of {limit}")]
    TagsTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The user event exceeds [`Config::user_event_size_limit`].
    #[error("user event takes {size} bytes, more than the limit of {limit}")]
    UserEventTooLarge {
        /// Name plus payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The pool has left; it can no longer send events or change tags.
    #[error("the local member has left the pool")]
    Left,
    /// No member of that name is known.
    #[error("no member named {name:?} is known")]
    UnknownMember {
        /// The name asked for.
        name: String,
    },
    /// Coordinates are off ([`Config::coordinates`]).
    #[error("network coordinates are disabled in this pool")]
    CoordinatesDisabled,
    /// A coordinate was refused.
    #[error(transparent)]
    Coordinate(#[from] CoordinateError),
}

struct ProbeState {
    seq: u32,
    target: String,
    /// Where the direct ping went and when, to time its ack for the coordinates.
    target_addr: SocketAddr,
    sent_at: Instant,
    acked: bool,
    indirect: bool,
    expected_nacks: u32,
    nacks: u32,
    finished: bool,
}

struct Relay {
    requester: SocketAddr,
    requester_seq: u32,
    want_nack: bool,
}

/// Lifeguard's dynamic suspicion: starts at `max` and shrinks toward `min` as independent
/// confirmations arrive.
struct Suspicion {
    incarnation: u32,
    start: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations wanted for the minimum timeout.
    wanted: u32,
    /// The original accuser and every confirmer, each counted once.
    accusers: HashSet<String>,
    deadline: Instant,
}

impl Suspicion {
    fn timeout_after(&self, confirmations: u32) -> Duration {
        if self.wanted == 0 {
            return self.min;
        }
        let frac = f64::from(confirmations + 1).ln() / f64::from(self.wanted + 1).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let timeout = self.max.as_secs_f64() - frac * span;
        Duration::from_secs_f64(timeout.max(self.min.as_secs_f64()))
    }
}

/// A gossip membership pool: SWIM failure detection with Lifeguard, piggybacked broadcasts,
/// push-pull anti-entropy and user events, as a deterministic state machine.
///
/// Inputs are the `handle_*` methods plus [`Pool::join`], [`Pool::leave`], [`Pool::update_tags`] and
/// [`Pool::send_user_event`], each taking the current [`Instant`]. Effects are queued as [`Output`]s,
/// which the caller drains with [`Pool::poll_output`] after every input. The pool does no IO, reads
/// no clock and draws randomness only from the RNG seeded in [`Pool::new`]; AES-GCM nonces come
/// from the [`NonceSource`] given there, never from that RNG.
pub struct Pool {
    config: Config,
    name: String,
    addr: SocketAddr,
    tags: Tags,
    incarnation: u32,
    leaving: bool,
    keyring: Option<Keyring>,
    rng: SmallRng,
    nonces: Box<dyn NonceSource>,

    members: MemberTable,
    live: usize,
    probe_index: usize,

    awareness: u32,
    seq: u32,
    probe: Option<ProbeState>,
    relays: HashMap<u32, Relay>,
    suspicions: HashMap<String, Suspicion>,
    /// Suspects to probe ourselves once their suspicion has stood for a while: (name, incarnation, due).
    suspect_probes: VecDeque<(String, u32, Instant)>,
    /// Members erased by a prune: the incarnation they were erased at and when, kept for
    /// [`Config::dead_member_retention`] so that a stale claim from a peer that has not heard of
    /// the prune does not bring them back.
    pruned: HashMap<String, (u32, Instant)>,
    broadcasts: BroadcastQueue,
    user_events: EventDedup,

    probe_due: Instant,
    gossip_due: Instant,
    push_pull_due: Instant,
    reconnect_due: Instant,

    keyring_ops: HashMap<u64, PendingKeyringOp>,
    next_keyring_op: u64,

    /// Vivaldi coordinates: ours (absent when [`Config::coordinates`] is off) and the latest one
    /// each member sent in an ack to our direct probes.
    coordinates: Option<CoordinateClient>,
    peer_coordinates: HashMap<String, Coordinate>,

    outputs: VecDeque<Output>,
    stats: Stats,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("incarnation", &self.incarnation)
            .field("members", &self.members.len())
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Creates a pool holding only the local member, and queues its first timers.
    ///
    /// `seed` drives every random choice of the protocol (probe order, gossip targets, jitter), so a
    /// simulated run is reproducible. When `keyring` is set, every packet and stream is sealed under
    /// a nonce from `nonces`: [`SystemNonces`](crate::SystemNonces) for anything that talks to real
    /// peers (the tokio runtime's choice), [`SimulatedNonces`](crate::SimulatedNonces) only in the
    /// simulator. The seed never reaches the nonces, so two pools that share a seed and a key do not
    /// repeat a nonce.
    pub fn new(
        config: Config,
        local: LocalNode,
        keyring: Option<Keyring>,
        nonces: Box<dyn NonceSource>,
        seed: u64,
        now: Instant,
    ) -> Result<Pool, PoolError> {
        config.validate()?;
        if local.name.is_empty() || local.name.len() > MAX_NAME_LEN {
            return Err(PoolError::InvalidName {
                len: local.name.len(),
                max: MAX_NAME_LEN,
            });
        }
        check_tags(&config, &local.tags)?;
        let rng = SmallRng::seed_from_u64(seed);
        let user_events = EventDedup::new(config.user_event_buffer);
        // Derived from the seed rather than drawn from the RNG, so that turning coordinates on
        // leaves every other random choice of a seeded pool as it was.
        let coordinates = if config.coordinates {
            Some(CoordinateClient::new(
                CoordinateConfig::default(),
                seed ^ COORDINATE_SEED_SALT,
            )?)
        } else {
            None
        };
        let mut pool = Pool {
            name: local.name.clone(),
            addr: local.addr,
            tags: local.tags.clone(),
            incarnation: 1,
            leaving: false,
            keyring,
            rng,
            nonces,
            members: MemberTable::new(),
            live: 0,
            probe_index: 0,
            awareness: 0,
            seq: 0,
            probe: None,
            relays: HashMap::new(),
            suspicions: HashMap::new(),
            suspect_probes: VecDeque::new(),
            pruned: HashMap::new(),
            broadcasts: BroadcastQueue::default(),
            user_events,
            probe_due: now,
            gossip_due: now,
            push_pull_due: now,
            reconnect_due: now,
            keyring_ops: HashMap::new(),
            next_keyring_op: 1,
            coordinates,
            peer_coordinates: HashMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        pool.insert_entry(
            Member {
                name: local.name,
                addr: local.addr,
                tags: local.tags,
                incarnation: 1,
                status: MemberStatus::Alive,
            },
            now,
        );
        pool.broadcast_self_alive();
        // Stagger the periodic work so that nodes started together do not act in lockstep.
        let probe_at = now + jitter(&mut pool.rng, pool.config.probe_interval);
        pool.probe_due = probe_at;
        pool.schedule(Timer::Probe, probe_at);
        let gossip_at = now + jitter(&mut pool.rng, pool.config.gossip_interval);
        pool.gossip_due = gossip_at;
        pool.schedule(Timer::Gossip, gossip_at);
        if !pool.config.push_pull_interval.is_zero() {
            let at = now + jitter(&mut pool.rng, pool.config.push_pull_interval);
            pool.push_pull_due = at;
            pool.schedule(Timer::PushPull, at);
        }
        if !pool.config.reconnect_interval.is_zero() {
            let at = now + pool.config.reconnect_interval;
            pool.reconnect_due = at;
            pool.schedule(Timer::Reconnect, at);
        }
        Ok(pool)
    }

    // -----------------------------------------------------------------------------------------
    // Queries

    /// The local member's name.
    pub fn local_name(&self) -> &str {
        &self.name
    }

    /// The local member's advertised address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The local member's incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Every member known, the local one included, failed and departed ones until they are
    /// forgotten (see [`Config::dead_member_retention`]).
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.members.iter().map(Entry::to_member)
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.members.by_name(name).map(Entry::to_member)
    }

    /// One member's status and incarnation, without copying its name and tags.
    pub fn member_status(&self, name: &str) -> Option<(MemberStatus, u32)> {
        self.members.by_name(name).map(|e| (e.status, e.incarnation))
    }

    /// Number of members known, the local one and those down included.
    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    /// Members alive or suspect, the local one included.
    pub fn num_live(&self) -> usize {
        self.live
    }

    /// Lifeguard's local health score: 0 is healthy; probe intervals are scaled by `score + 1`.
    pub fn health_score(&self) -> u32 {
        self.awareness
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Broadcasts waiting to be sent.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// The current user-event Lamport time.
    pub fn event_clock(&self) -> u64 {
        self.user_events.clock()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The keyring, when encryption is on.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// The keyring, to install, use or remove keys.
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    /// Whether [`Pool::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.leaving
    }

    /// The local Vivaldi coordinate, or `None` when [`Config::coordinates`] is off.
    pub fn coordinate(&self) -> Option<&Coordinate> {
        self.coordinates.as_ref().map(CoordinateClient::coordinate)
    }

    /// The coordinate of member `name`: ours for the local name, otherwise the latest one it sent
    /// in an ack to one of our direct probes (`None` until then, and for forgotten members).
    pub fn coordinate_of(&self, name: &str) -> Option<&Coordinate> {
        if name == self.name {
            self.coordinate()
        } else {
            self.peer_coordinates.get(name)
        }
    }

    /// Every coordinate known, ours first, then members' in no particular order: what Consul's
    /// `/v1/coordinate/nodes` lists for a pool.
    pub fn member_coordinates(&self) -> impl Iterator<Item = (&str, &Coordinate)> + '_ {
        self.coordinate()
            .map(|c| (self.name.as_str(), c))
            .into_iter()
            .chain(self.peer_coordinates.iter().map(|(n, c)| (n.as_str(), c)))
    }

    /// The estimated RTT between two members (either may be the local one), as `consul rtt`
    /// computes it; `None` when either coordinate is unknown or they are not comparable.
    pub fn estimated_rtt(&self, a: &str, b: &str) -> Option<Duration> {
        let (ca, cb) = (self.coordinate_of(a)?, self.coordinate_of(b)?);
        ca.is_compatible_with(cb).then(|| ca.distance_to(cb))
    }

    /// The coordinate client's counters (updates, refusals, resets), when coordinates are on.
    pub fn coordinate_stats(&self) -> Option<CoordinateStats> {
        self.coordinates.as_ref().map(CoordinateClient::stats)
    }

    /// Replaces the local coordinate, e.g. with one saved before a restart (Serf persists it),
    /// so that estimates are good from the start rather than after a few minutes of probes.
    pub fn set_coordinate(&mut self, coordinate: Coordinate) -> Result<(), PoolError> {
        let client = self.coordinates.as_mut().ok_or(PoolError::CoordinatesDisabled)?;
        client.set_coordinate(coordinate)?;
        Ok(())
    }

    /// Sets member `name`'s coordinate (ours for the local name) as an application reported it
    /// (Consul's `/v1/coordinate/update`); the member's next ack replaces it.
    pub fn set_member_coordinate(&mut self, name: &str, coordinate: Coordinate) -> Result<(), PoolError> {
        if name == self.name {
            return self.set_coordinate(coordinate);
        }
        let client = self.coordinates.as_ref().ok_or(PoolError::CoordinatesDisabled)?;
        coordinate.validate(client.config().dimensionality)?;
        if self.members.position(name).is_none() {
            return Err(PoolError::UnknownMember {
                name: name.to_owned(),
            });
        }
        self.peer_coordinates.insert(name.to_owned(), coordinate);
        Ok(())
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // -----------------------------------------------------------------------------------------
    // Application inputs

    /// Starts joining through the members at `addrs`: a full state exchange with each.
    pub fn join(&mut self, addrs: &[SocketAddr], _now: Instant) {
        for &addr in addrs {
            if addr != self.addr {
                self.send_push_pull(addr, None, true);
            }
        }
    }

    /// Installs members known from elsewhere — a simulator starting from a converged pool, or a
    /// node restoring what it knew — without announcing them: no events, no broadcasts. Members
    /// already known, the local one and invalid names are skipped; probing, suspicion and
    /// push-pull treat the rest like members learned on the wire.
    pub fn restore_members(&mut self, members: impl IntoIterator<Item = Member>, now: Instant) {
        let members = members.into_iter();
        self.members.reserve(members.size_hint().0);
        for m in members {
            if m.name == self.name
                || m.name.is_empty()
                || m.name.len() > MAX_NAME_LEN
                || self.members.position(&m.name).is_some()
            {
                continue;
            }
            self.insert_entry(m, now);
        }
    }

    /// Leaves gracefully: announces the departure, which every member reports as
    /// [`Event::Left`], never as a failure. Keep driving the pool for
    /// [`Config::leave_propagate_delay`] so the announcement spreads, then stop.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.probe = None;
        let inc = self.incarnation;
        if let Some(i) = self.members.position(&self.name) {
            self.set_status(i, MemberStatus::Left, now);
        }
        let msg = Message::Dead {
            incarnation: inc,
            node: self.name.clone(),
            from: self.name.clone(),
        };
        self.broadcasts
            .push(Some(self.name.clone()), codec::message_bytes(&msg));
        // Send the news now rather than at the next gossip round.
        self.gossip(now);
    }

    /// Consul's `force-leave`: announces that a failed (or suspect) member left, so every member
    /// reports it as [`Event::Left`] and stops expecting it back. A live member is not touched
    /// (it would refute the claim anyway); the local member cannot be forced out.
    pub fn force_leave(&mut self, name: &str, now: Instant) -> Result<(), PoolError> {
        let entry = self
            .members
            .position(name)
            .and_then(|i| self.members.get(i))
            .filter(|_| name != self.name)
            .ok_or_else(|| PoolError::UnknownMember {
                name: name.to_owned(),
            })?;
        if matches!(entry.status, MemberStatus::Failed | MemberStatus::Suspect) {
            let incarnation = entry.incarnation;
            // A departure is a death announced by the member itself: sent on its behalf.
            self.dead_node(incarnation, name, name, now);
        }
        Ok(())
    }

    /// Consul's `force-leave -prune`: a failed, suspect or departed member is reported as
    /// [`Event::Left`] (unless it had already left) and erased from the member list here and,
    /// through a [`Message::Prune`] broadcast, on every member, instead of being listed as left
    /// until [`Config::dead_member_retention`] passes. A live member is not touched, as with
    /// [`Pool::force_leave`]. A pruned member that is in fact alive (or restarts) is accused on
    /// its next claim at the pruned incarnation, outbids it and joins again as new.
    pub fn force_leave_prune(&mut self, name: &str, now: Instant) -> Result<(), PoolError> {
        let entry = self
            .members
            .position(name)
            .and_then(|i| self.members.get(i))
            .filter(|_| name != self.name)
            .ok_or_else(|| PoolError::UnknownMember {
                name: name.to_owned(),
            })?;
        if entry.status != MemberStatus::Alive {
            let incarnation = entry.incarnation;
            self.prune_node(incarnation, name, now);
        }
        Ok(())
    }

    /// Whether `name` was erased by a prune and is still remembered as such.
    pub fn is_pruned(&self, name: &str) -> bool {
        self.pruned.contains_key(name)
    }

    /// Replaces the local member's tags and announces them.
    pub fn update_tags(&mut self, tags: Tags, _now: Instant) -> Result<(), PoolError> {
        if self.leaving {
            return Err(PoolError::Left);
        }
        check_tags(&self.config, &tags)?;
        self.tags = tags;
        self.incarnation = self.incarnation.saturating_add(1);
        self.sync_self_entry();
        self.broadcast_self_alive();
        Ok(())
    }

    /// Broadcasts a user event to the pool. It is also delivered locally as [`Event::User`].
    pub fn send_user_event(&mut self, name: &str, payload: &[u8], _now: Instant) -> Result<(), PoolError> {
        if self.leaving {
            return Err(PoolError::Left);
        }
        let size = name.len() + payload.len();
        if size > self.config.user_event_size_limit {
            return Err(PoolError::UserEventTooLarge {
                size,
                limit: self.config.user_event_size_limit,
            });
        }
        let ltime = self.user_events.next_local(name, payload);
        let msg = Message::UserEvent {
            ltime,
            name: name.to_owned(),
            payload: payload.to_vec(),
        };
        self.broadcasts.push(None, codec::message_bytes(&msg));
        self.emit(Event::User(UserEvent {
            ltime,
            name: name.to_owned(),
            payload: payload.to_vec(),
        }));
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Network inputs

    /// Applies `op` to this member's keyring and asks every live (or suspect) member to do the
    /// same over a stream, as Consul's `keyring` command does. Returns the operation's number; its
    /// [`Output::KeyringDone`] report follows once every member answered or after
    /// [`Config::tcp_timeout`]. A refusal (no encryption, unknown key, the primary removed) is
    /// reported per member; nothing is rolled back on the members that accepted.
    pub fn start_keyring_op(&mut self, op: KeyringOp, now: Instant) -> u64 {
        let id = self.next_keyring_op;
        self.next_keyring_op += 1;
        let asked: Vec<(String, SocketAddr)> = self
            .members
            .iter()
            .filter(|e| {
                e.name() != self.name && matches!(e.status, MemberStatus::Alive | MemberStatus::Suspect)
            })
            .map(|e| (e.name().to_owned(), e.addr()))
            .collect();
        let mut pending = PendingKeyringOp::new(
            id,
            asked
                .iter()
                .map(|(name, _)| name.clone())
                .chain(std::iter::once(self.name.clone())),
        );
        let local = self.apply_keyring_op(&op);
        pending.record(&self.name.clone(), local);
        let request = codec::encode_stream(&StreamMessage::KeyringRequest { id, op });
        for (_, addr) in asked {
            self.emit_sealed_stream(addr, request.clone());
        }
        if pending.is_complete() {
            self.outputs.push_back(Output::KeyringDone(pending.finish()));
        } else {
            self.keyring_ops.insert(id, pending);
            self.schedule(Timer::KeyringDeadline { id }, now + self.config.tcp_timeout);
        }
        id
    }

    /// A datagram arrived from `from`. With encryption on, anything that is not an envelope opened
    /// by an installed key is counted and dropped before decoding: it is never applied.
    pub fn handle_packet(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.stats.packets_received += 1;
        let Some(plain) = self.unwrap_envelope(AAD_PACKET, data) else {
            return;
        };
        let messages = match codec::decode_packet(&plain) {
            Ok(m) => m,
            Err(err) => {
                self.stats.malformed_dropped += 1;
                tracing::debug!(%from, %err, "dropping malformed gossip packet");
                return;
            }
        };
        for msg in messages {
            self.handle_message(from, msg, now);
        }
    }

    /// A stream arrived from `from`: either a push-pull request, whose reply is returned for the
    /// caller to write back on the same stream, or the reply to one of ours (returns `None`).
    pub fn handle_stream(&mut self, from: SocketAddr, data: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.stats.streams_received += 1;
        if data.len() > self.config.max_stream_size + ENCRYPTION_OVERHEAD {
            self.stats.malformed_dropped += 1;
            return None;
        }
        let plain = self.unwrap_envelope(AAD_STREAM, data)?;
        let msg = match codec::decode_stream(&plain) {
            Ok(msg) => msg,
            Err(err) => {
                self.stats.malformed_dropped += 1;
                tracing::debug!(%from, %err, "dropping malformed gossip stream");
                return None;
            }
        };
        match msg {
            StreamMessage::PushPull(pp) => {
                let want = self.merge_remote_state(from, &pp, now);
                if pp.reply {
                    if pp.join {
                        // Like Consul's join (Serf's `ignoreOld`): events older than the pool's
                        // clock when we joined are history, not news, and are not delivered.
                        self.user_events.ignore_before(pp.event_ltime);
                    }
                    if !pp.want.is_empty() {
                        self.push_wanted(from, &pp.want);
                    }
                    None
                } else if pp.push {
                    self.encode_push_pull_reply(None, Vec::new())
                } else {
                    self.encode_push_pull_reply(Some(&pp), want)
                }
            }
            StreamMessage::Ping { seq, target } => {
                if target != self.name {
                    return None;
                }
                let reply = codec::encode_stream(&StreamMessage::Ack { seq });
                let data = self.seal(AAD_STREAM, reply)?;
                self.stats.streams_sent += 1;
                self.stats.stream_bytes_sent += data.len() as u64;
                Some(data)
            }
            StreamMessage::Ack { seq } => {
                if let Some(p) = self.probe.as_mut()
                    && p.seq == seq
                    && !p.finished
                {
                    p.acked = true;
                }
                None
            }
            StreamMessage::KeyringRequest { id, op } => {
                let result = self.apply_keyring_op(&op);
                let reply = codec::encode_stream(&StreamMessage::KeyringReply {
                    id,
                    node: self.name.clone(),
                    result,
                });
                // Sealed after the operation: a new primary key is already the one in use, and
                // the requester, which applied it first, holds it.
                let data = self.seal(AAD_STREAM, reply)?;
                self.stats.streams_sent += 1;
                self.stats.stream_bytes_sent += data.len() as u64;
                Some(data)
            }
            StreamMessage::KeyringReply { id, node, result } => {
                if let Some(pending) = self.keyring_ops.get_mut(&id) {
                    pending.record(&node, result);
                    if pending.is_complete() {
                        self.finish_keyring_op(id);
                    }
                }
                None
            }
        }
    }

    /// A timer asked for through [`Output::Timer`] is due.
    pub fn handle_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Probe => {
                if now < self.probe_due {
                    return;
                }
                self.finish_probe(now);
                let interval = self.scaled(self.config.probe_interval);
                self.probe_due = now + interval;
                self.schedule(Timer::Probe, self.probe_due);
                if !self.leaving {
                    self.start_probe(now);
                }
            }
            Timer::ProbeTimeout { seq } => self.probe_indirectly(seq),
            Timer::Gossip => {
                if now < self.gossip_due {
                    return;
                }
                self.gossip_due = now + self.config.gossip_interval;
                self.schedule(Timer::Gossip, self.gossip_due);
                self.gossip(now);
            }
            Timer::PushPull => {
                if now < self.push_pull_due {
                    return;
                }
                self.push_pull_due = now + self.config.scaled_push_pull_interval(self.live);
                self.schedule(Timer::PushPull, self.push_pull_due);
                if !self.leaving
                    && let Some(&i) = self
                        .random_members(1, None, |e| e.status == MemberStatus::Alive)
                        .first()
                    && let Some((addr, name)) = self.members.get(i).map(|e| (e.addr(), e.name().to_owned()))
                {
                    self.send_push_pull(addr, Some(&name), false);
                }
            }
            Timer::Reconnect => {
                if now < self.reconnect_due {
                    return;
                }
                self.reconnect_due = now + self.config.reconnect_interval;
                self.schedule(Timer::Reconnect, self.reconnect_due);
                self.reconnect();
            }
            Timer::Suspicion { node, incarnation } => self.suspicion_expired(&node, incarnation, now),
            Timer::KeyringDeadline { id } => self.finish_keyring_op(id),
            Timer::RelayTimeout { seq } => {
                if let Some(relay) = self.relays.remove(&seq)
                    && relay.want_nack
                {
                    self.send_messages(
                        relay.requester,
                        vec![Message::Nack {
                            seq: relay.requester_seq,
                        }],
                    );
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Messages

    fn handle_message(&mut self, from: SocketAddr, msg: Message, now: Instant) {
        match msg {
            Message::Ping { seq, target } => {
                if target == self.name {
                    let coordinate = self.coordinate().cloned();
                    self.send_messages(from, vec![Message::Ack { seq, coordinate }]);
                }
            }
            Message::IndirectPing {
                seq,
                target,
                target_addr,
                want_nack,
            } => {
                let our_seq = self.next_seq();
                self.relays.insert(
                    our_seq,
                    Relay {
                        requester: from,
                        requester_seq: seq,
                        want_nack,
                    },
                );
                self.send_messages(target_addr, vec![Message::Ping { seq: our_seq, target }]);
                // Lifeguard: nack at 80 % of the probe timeout, leaving the requester time to hear it.
                let at = now + self.config.probe_timeout.mul_f64(0.8);
                self.schedule(Timer::RelayTimeout { seq: our_seq }, at);
            }
            Message::Ack { seq, coordinate } => {
                if let Some(relay) = self.relays.remove(&seq) {
                    // The requester times its own probe, not ours: it gets no coordinate.
                    self.send_messages(
                        relay.requester,
                        vec![Message::Ack {
                            seq: relay.requester_seq,
                            coordinate: None,
                        }],
                    );
                } else if let Some(p) = self.probe.as_mut()
                    && p.seq == seq
                    && !p.finished
                    && !p.acked
                {
                    p.acked = true;
                    if !p.indirect {
                        // As Serf: only a direct ping answered within the probe timeout times the
                        // network; an ack after the indirect round began may have waited anywhere.
                        let sample = (from == p.target_addr)
                            .then(|| (p.target.clone(), now.saturating_duration_since(p.sent_at)));
                        self.apply_awareness(-1);
                        if let (Some((target, rtt)), Some(coordinate)) = (sample, coordinate) {
                            self.observe_rtt(target, coordinate, rtt);
                        }
                    }
                }
            }
            Message::Nack { seq } => {
                if let Some(p) = self.probe.as_mut()
                    && p.seq == seq
                    && !p.finished
                {
                    p.nacks += 1;
                }
            }
            Message::Alive {
                incarnation,
                node,
                addr,
                tags,
            } => {
                self.alive_node(incarnation, node, addr, tags, now);
            }
            Message::Suspect {
                incarnation,
                node,
                from: accuser,
            } => {
                self.correct_stale_claim(from, &node, incarnation);
                self.suspect_node(incarnation, &node, &accuser, now)
            }
            Message::Dead {
                incarnation,
                node,
                from: accuser,
            } => {
                self.correct_stale_claim(from, &node, incarnation);
                self.dead_node(incarnation, &node, &accuser, now)
            }
            Message::Prune { incarnation, node } => {
                self.correct_stale_claim(from, &node, incarnation);
                self.prune_node(incarnation, &node, now)
            }
            Message::UserEvent { ltime, name, payload } => {
                if self.user_events.accept(ltime, &name, &payload) {
                    let msg = Message::UserEvent {
                        ltime,
                        name: name.clone(),
                        payload: payload.clone(),
                    };
                    self.broadcasts.push(None, codec::message_bytes(&msg));
                    self.emit(Event::User(UserEvent { ltime, name, payload }));
                }
            }
        }
    }

    /// Applies an alive claim, and spreads it when it is news. Claims learned through push-pull
    /// are spread too (as memberlist does): leaving that to the few members that heard them by
    /// gossip was measured to strand members unseen until the next periodic exchange.
    /// A peer passed on a suspicion or death that we know was refuted (we hold the member alive
    /// at a higher incarnation): it holds stale state, so send it the newer claim directly rather
    /// than wait for gossip to reach it. Gossip's tail is what makes lossy networks produce false
    /// failures; this closes it at the cost of one packet per stale claim received.
    fn correct_stale_claim(&mut self, peer: SocketAddr, node: &str, incarnation: u32) {
        let alive = if node == self.name {
            if self.leaving || incarnation >= self.incarnation {
                return;
            }
            Message::Alive {
                incarnation: self.incarnation,
                node: self.name.clone(),
                addr: self.addr,
                tags: self.tags.clone(),
            }
        } else {
            match self.members.by_name(node) {
                Some(m) if m.status == MemberStatus::Alive && incarnation < m.incarnation => Message::Alive {
                    incarnation: m.incarnation,
                    node: m.name().to_owned(),
                    addr: m.addr(),
                    tags: m.tags().clone(),
                },
                _ => return,
            }
        };
        self.send_messages(peer, vec![alive]);
    }

    fn alive_node(&mut self, incarnation: u32, node: String, addr: SocketAddr, tags: Tags, now: Instant) {
        if node == self.name {
            if self.leaving {
                return;
            }
            // A claim about us that we did not make (or an older self after a restart): outbid it.
            if incarnation > self.incarnation
                || (incarnation == self.incarnation && (addr != self.addr || tags != self.tags))
            {
                self.refute(incarnation);
            }
            return;
        }
        if node.is_empty() || node.len() > MAX_NAME_LEN {
            return;
        }
        if let Some(&(pruned_at, _)) = self.pruned.get(&node) {
            if incarnation <= pruned_at {
                // A stale claim, or the member itself back at its old incarnation (a restart, or
                // it was never down): accuse it, so that if it is alive it outbids the prune and
                // joins again; a dead address just loses the packet.
                let accusation = Message::Suspect {
                    incarnation: pruned_at,
                    node,
                    from: self.name.clone(),
                };
                self.send_messages(addr, vec![accusation]);
                return;
            }
            self.pruned.remove(&node);
        }
        let Some(i) = self.members.position(&node) else {
            let member = Member {
                name: node.clone(),
                addr,
                tags: tags.clone(),
                incarnation,
                status: MemberStatus::Alive,
            };
            self.insert_entry(member.clone(), now);
            self.emit(Event::Joined(member));
            let msg = Message::Alive {
                incarnation,
                node: node.clone(),
                addr,
                tags,
            };
            self.broadcasts.push(Some(node), codec::message_bytes(&msg));
            return;
        };
        let Some(entry) = self.members.get(i) else { return };
        if incarnation <= entry.incarnation {
            return;
        }
        let prev = entry.status;
        let changed = entry.addr() != addr || *entry.tags() != tags;
        self.suspicions.remove(&node);
        self.set_status(i, MemberStatus::Alive, now);
        self.members.set_state(i, incarnation, MemberStatus::Alive);
        self.members.set_details(i, addr, &tags);
        let Some(member) = self.members.get(i).map(Entry::to_member) else {
            return;
        };
        match prev {
            MemberStatus::Failed | MemberStatus::Left => self.emit(Event::Rejoined(member)),
            _ if changed => self.emit(Event::Updated(member)),
            _ => {}
        }
        let msg = Message::Alive {
            incarnation,
            node: node.clone(),
            addr,
            tags,
        };
        self.broadcasts.push(Some(node), codec::message_bytes(&msg));
    }

    fn suspect_node(&mut self, incarnation: u32, node: &str, from: &str, now: Instant) {
        let Some(i) = self.accused(incarnation, node) else {
            return;
        };
        let Some(entry) = self.members.get(i) else { return };
        let renewed = match entry.status {
            // The same suspicion again: an independent confirmation.
            MemberStatus::Suspect if incarnation == entry.incarnation => {
                self.confirm_suspicion(node, from, now);
                return;
            }
            // A suspicion of a newer incarnation (it refuted the old one, but we missed that):
            // start over rather than let the stale timer declare it dead.
            MemberStatus::Suspect => true,
            MemberStatus::Alive => false,
            MemberStatus::Failed | MemberStatus::Left => return,
        };
        self.set_status(i, MemberStatus::Suspect, now);
        self.members.set_state(i, incarnation, MemberStatus::Suspect);
        let Some(member) = self.members.get(i).map(Entry::to_member) else {
            return;
        };
        if !renewed {
            self.emit(Event::Suspect(member));
        }
        {
            // Re-probe it ourselves if the suspicion is still standing in a while: a refutation we
            // missed is then learned directly (see `Message::Suspect` handling), and a real failure
            // gathers independent confirmations sooner.
            let due = now + self.config.probe_interval * 3;
            self.suspect_probes.push_back((node.to_owned(), incarnation, due));
        }
        let msg = Message::Suspect {
            incarnation,
            node: node.to_owned(),
            from: from.to_owned(),
        };
        self.broadcasts
            .push(Some(node.to_owned()), codec::message_bytes(&msg));

        let n = self.live;
        let mut wanted = if self.config.lifeguard {
            self.config.suspicion_mult.saturating_sub(2)
        } else {
            0
        };
        if (n as u64) < u64::from(wanted) + 2 {
            wanted = 0;
        }
        let min = self.config.min_suspicion_timeout(n);
        let max = if self.config.lifeguard {
            min * self.config.suspicion_max_timeout_mult
        } else {
            min
        };
        let timeout = if wanted == 0 { min } else { max };
        let mut accusers = HashSet::new();
        accusers.insert(from.to_owned());
        let deadline = now + timeout;
        self.suspicions.insert(
            node.to_owned(),
            Suspicion {
                incarnation,
                start: now,
                min,
                max,
                wanted,
                accusers,
                deadline,
            },
        );
        self.schedule(
            Timer::Suspicion {
                node: node.to_owned(),
                incarnation,
            },
            deadline,
        );
    }

    /// An independent accuser agrees: shrink the timeout (Lifeguard) and pass the news on.
    fn confirm_suspicion(&mut self, node: &str, from: &str, now: Instant) {
        let Some(s) = self.suspicions.get_mut(node) else {
            return;
        };
        let confirmations = s.accusers.len().saturating_sub(1) as u32;
        if confirmations >= s.wanted || s.accusers.contains(from) {
            return;
        }
        s.accusers.insert(from.to_owned());
        let timeout = s.timeout_after(confirmations + 1);
        let deadline = (s.start + timeout).max(now);
        let incarnation = s.incarnation;
        if deadline < s.deadline {
            s.deadline = deadline;
            self.schedule(
                Timer::Suspicion {
                    node: node.to_owned(),
                    incarnation,
                },
                deadline,
            );
        }
        let msg = Message::Suspect {
            incarnation,
            node: node.to_owned(),
            from: from.to_owned(),
        };
        self.broadcasts
            .push(Some(node.to_owned()), codec::message_bytes(&msg));
    }

    fn suspicion_expired(&mut self, node: &str, incarnation: u32, now: Instant) {
        let Some(s) = self.suspicions.get(node) else {
            return;
        };
        if s.incarnation != incarnation || now < s.deadline {
            return;
        }
        let still_suspect = self
            .members
            .by_name(node)
            .is_some_and(|m| m.status == MemberStatus::Suspect && m.incarnation == incarnation);
        if still_suspect {
            let me = self.name.clone();
            self.dead_node(incarnation, node, &me, now);
        } else {
            self.suspicions.remove(node);
        }
    }

    fn dead_node(&mut self, incarnation: u32, node: &str, from: &str, now: Instant) {
        let Some(i) = self.accused(incarnation, node) else {
            return;
        };
        let Some(entry) = self.members.get(i) else { return };
        let is_leave = from == node;
        match entry.status {
            MemberStatus::Left => return,
            // A departure announced after we already declared a failure (the announcement was
            // slower than our suspicion): the member's own word wins, so report the leave.
            MemberStatus::Failed if !is_leave => return,
            _ => {}
        }
        let status = if is_leave {
            MemberStatus::Left
        } else {
            MemberStatus::Failed
        };
        self.suspicions.remove(node);
        self.set_status(i, status, now);
        self.members.set_state(i, incarnation, status);
        let Some(member) = self.members.get(i).map(Entry::to_member) else {
            return;
        };
        self.emit(if is_leave {
            Event::Left(member)
        } else {
            Event::Failed(member)
        });
        let msg = Message::Dead {
            incarnation,
            node: node.to_owned(),
            from: from.to_owned(),
        };
        self.broadcasts
            .push(Some(node.to_owned()), codec::message_bytes(&msg));
    }

    /// Erases `node`, down at `incarnation`, from the member list (reporting it as left first, as
    /// Serf reports a leave before the reap), remembers the prune and spreads it.
    fn prune_node(&mut self, incarnation: u32, node: &str, now: Instant) {
        let Some(i) = self.accused(incarnation, node) else {
            return;
        };
        let Some(entry) = self.members.get(i) else { return };
        if entry.status != MemberStatus::Left {
            self.suspicions.remove(node);
            self.set_status(i, MemberStatus::Left, now);
            self.members.set_state(i, incarnation, MemberStatus::Left);
            if let Some(member) = self.members.get(i).map(Entry::to_member) {
                self.emit(Event::Left(member));
            }
        }
        self.forget_members(|e, _| e.name() != node);
        self.pruned.insert(node.to_owned(), (incarnation, now));
        let msg = Message::Prune {
            incarnation,
            node: node.to_owned(),
        };
        self.broadcasts
            .push(Some(node.to_owned()), codec::message_bytes(&msg));
    }

    /// The first step of every claim that `node` is down at `incarnation` (suspect, dead, prune):
    /// a claim about ourselves is refuted (unless we are leaving); one about a member we do not
    /// know, or about an incarnation older than the one we hold, is ignored. Otherwise the
    /// member's position, for the claim to act on.
    fn accused(&mut self, incarnation: u32, node: &str) -> Option<usize> {
        if node == self.name {
            if !self.leaving && incarnation >= self.incarnation {
                self.refute(incarnation);
            }
            return None;
        }
        let i = self.members.position(node)?;
        let entry = self.members.get(i)?;
        (incarnation >= entry.incarnation).then_some(i)
    }

    /// Outbids a claim about ourselves with a higher incarnation.
    fn refute(&mut self, accused: u32) {
        self.incarnation = self.incarnation.max(accused).saturating_add(1);
        self.stats.refutations += 1;
        self.apply_awareness(1);
        self.sync_self_entry();
        self.broadcast_self_alive();
    }

    /// Applies a peer's state. Returns the members it reported briefly at an incarnation newer
    /// than ours (or that we do not know): their tags and address must be asked for.
    fn merge_remote_state(&mut self, from: SocketAddr, pp: &PushPull, now: Instant) -> Vec<String> {
        self.user_events.catch_up(pp.event_ltime);
        let sender = pp_sender(pp);
        // A joiner learns the whole pool at once: size the table for it in one step.
        self.members
            .reserve(pp.members.len().saturating_sub(self.members.len()));
        let mut want = Vec::new();
        let mut missed_prunes = Vec::new();
        for m in &pp.members {
            if m.name != sender
                && let Some(&(pruned_at, _)) = self.pruned.get(&m.name)
                && m.incarnation <= pruned_at
            {
                // The peer missed the prune: tell it directly rather than wait for gossip that
                // may have stopped retransmitting it.
                if missed_prunes.len() < MAX_PRUNES_PER_CORRECTION {
                    missed_prunes.push(Message::Prune {
                        incarnation: pruned_at,
                        node: m.name.clone(),
                    });
                }
                continue;
            }
            match m.status {
                MemberStatus::Alive if m.brief => {
                    if m.name == self.name {
                        // A newer incarnation of us needs no tags to be outbid; an equal one cannot
                        // be compared without them, and the requester sends us our own entry in
                        // full whenever it knows whom it is talking to.
                        if !self.leaving && m.incarnation > self.incarnation {
                            self.refute(m.incarnation);
                        }
                    } else if !m.name.is_empty()
                        && m.name.len() <= MAX_NAME_LEN
                        && self
                            .members
                            .by_name(&m.name)
                            .is_none_or(|k| k.incarnation < m.incarnation)
                    {
                        want.push(m.name.clone());
                    }
                }
                MemberStatus::Alive => {
                    self.alive_node(m.incarnation, m.name.clone(), m.addr, m.tags.clone(), now)
                }
                MemberStatus::Left => self.dead_node(m.incarnation, &m.name, &m.name, now),
                // A remote verdict of failure is only a suspicion here: let our own probes and the
                // member's refutation decide (memberlist does the same).
                MemberStatus::Suspect | MemberStatus::Failed => {
                    self.suspect_node(m.incarnation, &m.name, &sender, now)
                }
            }
        }
        if !missed_prunes.is_empty() {
            self.send_messages(from, missed_prunes);
        }
        want
    }

    /// Serf's reconnect: with probability `failed / live`, push-pull with one random failed
    /// member. If it is in fact alive (a healed partition), the exchange makes it refute and both
    /// sides merge.
    fn reconnect(&mut self) {
        if self.leaving {
            return;
        }
        let failed = self
            .members
            .iter()
            .filter(|e| e.status == MemberStatus::Failed)
            .count();
        if failed == 0 {
            return;
        }
        let chance = (failed as f64 / self.live.max(1) as f64).min(1.0);
        if !self.rng.random_bool(chance) {
            return;
        }
        let picked = self.random_members(1, None, |e| e.status == MemberStatus::Failed);
        if let Some((addr, name)) = picked
            .first()
            .and_then(|&i| self.members.get(i))
            .map(|e| (e.addr(), e.name().to_owned()))
        {
            self.send_push_pull(addr, Some(&name), false);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Probing

    fn start_probe(&mut self, now: Instant) {
        let Some(i) = self.due_suspect(now).or_else(|| self.next_probe_target(now)) else {
            return;
        };
        let Some(entry) = self.members.get(i) else { return };
        let target = entry.name().to_owned();
        let addr = entry.addr();
        let (status, incarnation) = (entry.status, entry.incarnation);
        let mut msgs = Vec::with_capacity(2);
        let seq = self.next_seq();
        msgs.push(Message::Ping {
            seq,
            target: target.clone(),
        });
        if status == MemberStatus::Suspect {
            // Buddy system: tell the suspect directly so it can refute at once.
            msgs.push(Message::Suspect {
                incarnation,
                node: target.clone(),
                from: self.name.clone(),
            });
        }
        self.stats.probes += 1;
        self.probe = Some(ProbeState {
            seq,
            target,
            target_addr: addr,
            sent_at: now,
            acked: false,
            indirect: false,
            expected_nacks: 0,
            nacks: 0,
            finished: false,
        });
        self.send_messages(addr, msgs);
        self.schedule(Timer::ProbeTimeout { seq }, now + self.config.probe_timeout);
    }

    /// A member whose suspicion has stood since before `now - 3 probe intervals`, if any.
    fn due_suspect(&mut self, now: Instant) -> Option<usize> {
        while let Some((_, _, due)) = self.suspect_probes.front() {
            if *due > now {
                return None;
            }
            let (name, inc, _) = self.suspect_probes.pop_front()?;
            if let Some(i) = self.members.position(&name)
                && self
                    .members
                    .get(i)
                    .is_some_and(|e| e.status == MemberStatus::Suspect && e.incarnation == inc)
            {
                return Some(i);
            }
        }
        None
    }

    fn next_probe_target(&mut self, now: Instant) -> Option<usize> {
        for _ in 0..self.members.len().saturating_add(1) {
            if self.probe_index >= self.members.len() {
                self.reset_probe_round(now);
            }
            let i = self.probe_index;
            self.probe_index += 1;
            let Some(e) = self.members.get(i) else { continue };
            if e.name() != self.name && e.status.is_live() {
                return Some(i);
            }
        }
        None
    }

    /// Ends a probe round: forgets long-dead members and reshuffles the probe order.
    fn reset_probe_round(&mut self, now: Instant) {
        let retention = self.config.dead_member_retention;
        self.pruned
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < retention);
        self.forget_members(|_, down_since| {
            down_since.is_none_or(|t| now.saturating_duration_since(t) < retention)
        });
    }

    /// Drops the members `keep` refuses, with what is kept about them, and starts a new probe
    /// order.
    fn forget_members(&mut self, keep: impl Fn(&Entry, Option<Instant>) -> bool) {
        let before = self.members.len();
        self.members.retain_and_shuffle(&mut self.rng, keep);
        if self.members.len() != before {
            let members = &self.members;
            self.suspicions.retain(|n, _| members.position(n).is_some());
            self.peer_coordinates.retain(|n, _| members.position(n).is_some());
            if let Some(client) = self.coordinates.as_mut() {
                client.retain_nodes(|n| members.position(n).is_some());
            }
        }
        self.probe_index = 0;
    }

    fn probe_indirectly(&mut self, seq: u32) {
        let Some(p) = self.probe.as_ref() else { return };
        if p.seq != seq || p.acked || p.finished {
            return;
        }
        let target = p.target.clone();
        let Some(target_addr) = self.members.by_name(&target).map(Entry::addr) else {
            return;
        };
        let helpers = self.random_members(self.config.indirect_checks, Some(&target), |e| {
            e.status == MemberStatus::Alive
        });
        let want_nack = self.config.lifeguard;
        self.stats.indirect_probes += 1;
        let mut sent = 0u32;
        for i in helpers {
            let Some(addr) = self.members.get(i).map(Entry::addr) else {
                continue;
            };
            let msg = Message::IndirectPing {
                seq,
                target: target.clone(),
                target_addr,
                want_nack,
            };
            self.send_messages(addr, vec![msg]);
            sent += 1;
        }
        if self.config.tcp_fallback_probe {
            let ping = codec::encode_stream(&StreamMessage::Ping {
                seq,
                target: target.clone(),
            });
            if let Some(data) = self.seal(AAD_STREAM, ping) {
                self.stats.streams_sent += 1;
                self.stats.stream_bytes_sent += data.len() as u64;
                self.outputs.push_back(Output::Stream {
                    to: target_addr,
                    data,
                });
            }
        }
        if let Some(p) = self.probe.as_mut() {
            p.indirect = true;
            p.expected_nacks = if want_nack { sent } else { 0 };
        }
    }

    fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.as_mut() else { return };
        if p.finished {
            return;
        }
        p.finished = true;
        if p.acked {
            return;
        }
        let (target, expected, nacks) = (p.target.clone(), p.expected_nacks, p.nacks);
        self.stats.failed_probes += 1;
        // Lifeguard: missing nacks mean *we* may be the slow one; with no nack-capable helper,
        // any failed probe counts against us.
        let delta = if expected > 0 {
            expected.saturating_sub(nacks)
        } else {
            1
        };
        self.apply_awareness(delta as i64);
        let Some(m) = self.members.by_name(&target) else {
            return;
        };
        if m.status.is_live() {
            let inc = m.incarnation;
            let me = self.name.clone();
            self.suspect_node(inc, &target, &me, now);
        }
    }

    /// A direct probe of `target` was acked after `rtt` with the target's coordinate: refine ours
    /// and remember theirs. A refused sample (bad coordinate, absurd RTT) changes neither.
    fn observe_rtt(&mut self, target: String, coordinate: Coordinate, rtt: Duration) {
        let Some(client) = self.coordinates.as_mut() else {
            return;
        };
        match client.update(&target, &coordinate, rtt) {
            Ok(_) => {
                self.stats.coordinate_updates += 1;
                self.peer_coordinates.insert(target, coordinate);
            }
            Err(err) => {
                self.stats.coordinate_rejected += 1;
                tracing::debug!(%target, %err, ?rtt, "coordinate sample refused");
            }
        }
    }

    fn apply_awareness(&mut self, delta: i64) {
        if !self.config.lifeguard {
            return;
        }
        let max = i64::from(self.config.awareness_max_multiplier) - 1;
        self.awareness = (i64::from(self.awareness) + delta).clamp(0, max.max(0)) as u32;
    }

    fn scaled(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    // -----------------------------------------------------------------------------------------
    // Gossip and sending

    fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            return;
        }
        let dead_window = self.config.gossip_to_the_dead_time;
        let members = &self.members;
        let eligible = |e: &Entry| {
            members
                .down_since(e)
                .is_none_or(|t| now.saturating_duration_since(t) < dead_window)
        };
        let targets = random_members(
            &self.members,
            &mut self.rng,
            &self.name,
            self.config.gossip_nodes,
            None,
            eligible,
        );
        for i in targets {
            let Some(addr) = self.members.get(i).map(Entry::addr) else {
                continue;
            };
            let mut packet = codec::start_packet();
            let limit = self.config.retransmit_limit(self.live);
            let count =
                self.broadcasts
                    .take_into(&mut packet, self.packet_budget(), MAX_MESSAGES_PER_PACKET, limit);
            if count == 0 {
                break;
            }
            codec::finish_packet(&mut packet, count);
            self.emit_packet(addr, packet);
        }
    }

    fn packet_budget(&self) -> usize {
        let overhead = if self.keyring.is_some() {
            ENCRYPTION_OVERHEAD
        } else {
            0
        };
        self.config.packet_size.saturating_sub(overhead + PACKET_HEADER)
    }

    /// Sends `msgs` to `to`, filling the rest of the packet with queued broadcasts.
    fn send_messages(&mut self, to: SocketAddr, msgs: Vec<Message>) {
        let mut packet = codec::start_packet();
        for m in &msgs {
            codec::push_framed(&mut packet, &codec::message_bytes(m));
        }
        let budget = self.packet_budget().saturating_sub(packet.len() - PACKET_HEADER);
        let limit = self.config.retransmit_limit(self.live);
        let room = MAX_MESSAGES_PER_PACKET.saturating_sub(msgs.len());
        let extra = self.broadcasts.take_into(&mut packet, budget, room, limit);
        codec::finish_packet(&mut packet, msgs.len() + extra);
        self.emit_packet(to, packet);
    }

    fn emit_packet(&mut self, to: SocketAddr, plain: Vec<u8>) {
        let Some(data) = self.seal(AAD_PACKET, plain) else {
            return;
        };
        self.stats.packets_sent += 1;
        self.stats.packet_bytes_sent += data.len() as u64;
        self.outputs.push_back(Output::Packet { to, data });
    }

    /// Starts a push-pull with `to` (known as `target`, when it is a member we know). The request
    /// lists every member we know, but only ourselves and the target in full: the rest are brief
    /// digest entries, and the peer answers with what we lack and asks for what it lacks.
    fn send_push_pull(&mut self, to: SocketAddr, target: Option<&str>, join: bool) {
        let mut members: Vec<MemberState> = Vec::with_capacity(self.members.len());
        members.push(self.self_state());
        for e in self.members.iter() {
            if e.name() == self.name {
                continue;
            }
            let full = target == Some(e.name());
            members.push(member_state(e, !full));
        }
        let pp = PushPull {
            join,
            reply: false,
            push: false,
            event_ltime: self.user_events.clock(),
            members,
            want: Vec::new(),
        };
        self.emit_stream(to, &pp);
    }

    /// Answers a push-pull request (or, with `None`, a push of wanted members: an empty reply).
    /// A member goes in full when the requester does not know it or knows an older incarnation
    /// of it, brief when only its status is news, and not at all when the requester's digest
    /// already matches (or is newer, in which case it is in `want`).
    fn encode_push_pull_reply(&mut self, request: Option<&PushPull>, want: Vec<String>) -> Option<Vec<u8>> {
        let mut members = Vec::new();
        let mut join = false;
        if let Some(req) = request {
            join = req.join;
            let theirs: HashMap<&str, &MemberState> =
                req.members.iter().map(|m| (m.name.as_str(), m)).collect();
            let requester = req.members.first().map(|m| m.name.as_str());
            members.reserve(1 + self.members.len().saturating_sub(theirs.len()));
            members.push(self.self_state());
            for m in self.members.iter() {
                if m.name() == self.name {
                    continue;
                }
                let send = match theirs.get(m.name()) {
                    None => Some(false),
                    // The requester described itself in full: any difference (a restart that
                    // reused an incarnation) goes back in full, so that it can refute.
                    Some(t) if requester == Some(m.name()) => {
                        let same = t.incarnation == m.incarnation
                            && t.status == m.status
                            && t.addr == m.addr()
                            && t.tags == *m.tags();
                        (!same).then_some(false)
                    }
                    Some(t) if (t.incarnation, t.status) == (m.incarnation, m.status) => None,
                    Some(t) if t.incarnation > m.incarnation => None,
                    Some(t) => Some(!(t.incarnation < m.incarnation && m.status == MemberStatus::Alive)),
                };
                if let Some(brief) = send {
                    members.push(member_state(m, brief));
                }
            }
        }
        let pp = PushPull {
            join,
            reply: true,
            push: false,
            event_ltime: self.user_events.clock(),
            members,
            want,
        };
        let plain = codec::encode_push_pull(&pp);
        let data = self.seal(AAD_STREAM, plain)?;
        self.stats.streams_sent += 1;
        self.stats.stream_bytes_sent += data.len() as u64;
        Some(data)
    }

    /// Sends `to`, in full, the members it asked for in its reply.
    fn push_wanted(&mut self, to: SocketAddr, names: &[String]) {
        let mut members = vec![self.self_state()];
        for name in names {
            if *name == self.name {
                continue;
            }
            if let Some(m) = self.members.by_name(name) {
                members.push(member_state(m, false));
            }
        }
        if members.len() == 1 {
            return;
        }
        let pp = PushPull {
            join: false,
            reply: false,
            push: true,
            event_ltime: self.user_events.clock(),
            members,
            want: Vec::new(),
        };
        self.emit_stream(to, &pp);
    }

    /// Applies a keyring operation locally; the keys afterwards (base64, primary first) or why
    /// it was refused. A change is announced with [`Event::KeyringChanged`].
    fn apply_keyring_op(&mut self, op: &KeyringOp) -> Result<Vec<String>, String> {
        let Some(ring) = self.keyring.as_mut() else {
            return Err("encryption is not enabled on this member".to_owned());
        };
        let before = ring.keys();
        ring.apply(op).map_err(|e| e.to_string())?;
        let after = ring.keys();
        if after != before {
            self.emit(Event::KeyringChanged);
        }
        Ok(after)
    }

    fn finish_keyring_op(&mut self, id: u64) {
        if let Some(pending) = self.keyring_ops.remove(&id) {
            self.outputs.push_back(Output::KeyringDone(pending.finish()));
        }
    }

    fn emit_sealed_stream(&mut self, to: SocketAddr, plain: Vec<u8>) {
        let Some(data) = self.seal(AAD_STREAM, plain) else {
            return;
        };
        self.stats.streams_sent += 1;
        self.stats.stream_bytes_sent += data.len() as u64;
        self.outputs.push_back(Output::Stream { to, data });
    }

    fn emit_stream(&mut self, to: SocketAddr, pp: &PushPull) {
        self.emit_sealed_stream(to, codec::encode_push_pull(pp));
    }

    fn self_state(&self) -> MemberState {
        MemberState {
            name: self.name.clone(),
            addr: self.addr,
            incarnation: self.incarnation,
            status: if self.leaving {
                MemberStatus::Left
            } else {
                MemberStatus::Alive
            },
            tags: self.tags.clone(),
            brief: false,
        }
    }

    /// Seals `plain` when encryption is on; `None` (counted) when the nonce source failed, in which
    /// case nothing is sent.
    fn seal(&mut self, aad: &[u8], plain: Vec<u8>) -> Option<Vec<u8>> {
        let Some(keyring) = &self.keyring else {
            return Some(plain);
        };
        match self.nonces.next_nonce() {
            Some(nonce) => Some(keyring.seal(nonce, aad, &plain)),
            None => {
                self.stats.nonce_failures += 1;
                None
            }
        }
    }

    /// Whether this pool's nonces come from a CSPRNG (see [`NonceSource::is_cryptographic`]).
    pub fn nonces_are_cryptographic(&self) -> bool {
        self.nonces.is_cryptographic()
    }

    /// Opens an envelope, or counts and drops what must not be applied.
    fn unwrap_envelope(&mut self, aad: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        match &self.keyring {
            None => {
                if data.first() == Some(&ENCRYPTION_VERSION) {
                    self.stats.undecryptable_dropped += 1;
                    return None;
                }
                Some(data.to_vec())
            }
            Some(keyring) => match keyring.open(aad, data) {
                Ok(plain) => Some(plain),
                Err(OpenError::NotEncrypted) => {
                    self.stats.plaintext_dropped += 1;
                    None
                }
                Err(OpenError::NoKeyMatches) => {
                    self.stats.undecryptable_dropped += 1;
                    None
                }
            },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Helpers

    /// Up to `k` distinct random members other than us (and `exclude`) that satisfy `eligible`.
    fn random_members(
        &mut self,
        k: usize,
        exclude: Option<&str>,
        eligible: impl Fn(&Entry) -> bool,
    ) -> Vec<usize> {
        random_members(&self.members, &mut self.rng, &self.name, k, exclude, eligible)
    }

    fn insert_entry(&mut self, member: Member, now: Instant) {
        if member.status.is_live() {
            self.live += 1;
        }
        // Insert at a random position so new members are probed in random order, as memberlist does.
        let n = self.members.push(&member);
        self.members.note_status_change(n, now);
        if n > 0 {
            let j = self.rng.random_range(0..=n);
            self.members.swap(j, n);
        }
    }

    fn set_status(&mut self, i: usize, status: MemberStatus, now: Instant) {
        let Some(e) = self.members.get(i) else { return };
        let (was, inc) = (e.status, e.incarnation);
        if was == status {
            return;
        }
        self.members.set_state(i, inc, status);
        self.members.note_status_change(i, now);
        match (was.is_live(), status.is_live()) {
            (true, false) => self.live = self.live.saturating_sub(1),
            (false, true) => self.live += 1,
            _ => {}
        }
    }

    fn sync_self_entry(&mut self) {
        if let Some(i) = self.members.position(&self.name) {
            let status = self.members.get(i).map_or(MemberStatus::Alive, |e| e.status);
            self.members.set_state(i, self.incarnation, status);
            let tags = self.tags.clone();
            self.members.set_details(i, self.addr, &tags);
        }
    }

    fn broadcast_self_alive(&mut self) {
        let msg = Message::Alive {
            incarnation: self.incarnation,
            node: self.name.clone(),
            addr: self.addr,
            tags: self.tags.clone(),
        };
        self.broadcasts
            .push(Some(self.name.clone()), codec::message_bytes(&msg));
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn schedule(&mut self, timer: Timer, at: Instant) {
        self.outputs.push_back(Output::Timer { timer, at });
    }

    fn emit(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

fn member_state(m: &Entry, brief: bool) -> MemberState {
    if brief {
        MemberState::brief(m.name().to_owned(), m.incarnation, m.status)
    } else {
        MemberState {
            name: m.name().to_owned(),
            addr: m.addr(),
            incarnation: m.incarnation,
            status: m.status,
            tags: m.tags().clone(),
            brief: false,
        }
    }
}

/// Up to `k` distinct random members other than `me` (and `exclude`) that satisfy `eligible`,
/// found by bounded random sampling as memberlist's `kRandomNodes` does, then, when sampling
/// came up short, by one pass over the table from a random place. Sampling alone misses members
/// in a small pool (in a pool of three its nine tries miss a given peer about once in forty), and
/// a missed peer can mean that a broadcast's few transmissions all go elsewhere: a graceful leave
/// spent on a dead member is then reported as a failure.
fn random_members(
    members: &MemberTable,
    rng: &mut SmallRng,
    me: &str,
    k: usize,
    exclude: Option<&str>,
    eligible: impl Fn(&Entry) -> bool,
) -> Vec<usize> {
    let n = members.len();
    let mut out: Vec<usize> = Vec::with_capacity(k);
    if n == 0 || k == 0 {
        return out;
    }
    for _ in 0..(3 * n).max(8) {
        if out.len() >= k {
            break;
        }
        let i = rng.random_range(0..n);
        let Some(e) = members.get(i) else { continue };
        if e.name() == me || exclude == Some(e.name()) || out.contains(&i) {
            continue;
        }
        if eligible(e) {
            out.push(i);
        }
    }
    if out.len() < k {
        let start = rng.random_range(0..n);
        for i in (start..n).chain(0..start) {
            if out.len() >= k {
                break;
            }
            let Some(e) = members.get(i) else { continue };
            if e.name() != me && exclude != Some(e.name()) && !out.contains(&i) && eligible(e) {
                out.push(i);
            }
        }
    }
    out
}

/// The sender of a push-pull is its first member state (see `send_push_pull`).
fn pp_sender(pp: &PushPull) -> String {
    pp.members.first().map(|m| m.name.clone()).unwrap_or_default()
}

fn check_tags(config: &Config, tags: &Tags) -> Result<(), PoolError> {
    let size = codec::encoded_tags_len(tags);
    if size > config.max_tags_size {
        return Err(PoolError::TagsTooLarge {
            size,
            limit: config.max_tags_size,
        });
    }
    Ok(())
}

fn jitter(rng: &mut SmallRng, upto: Duration) -> Duration {
    let micros = u64::try_from(upto.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(rng.random_range(0..micros))
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
