//! SWIM + Lifeguard gossip membership for Tribune, as a sans-IO state machine.
//!
//! A [`Pool`] is one membership pool — a datacenter's LAN pool of agents or the WAN pool of all
//! servers; a node runs one instance per pool, each with its own [`Config`] ([`Config::lan`],
//! [`Config::wan`]) and optional [`Keyring`]. The pool tells the application who is alive
//! ([`Event::Joined`], [`Event::Failed`], [`Event::Left`], …), carries each member's [`Tags`], and
//! broadcasts small user events exactly once per member.
//!
//! The protocol is memberlist's: direct probes with acks, indirect probes through `k` members with
//! nacks, suspicion refuted by incarnation, Lifeguard's local health multiplier and dynamic
//! suspicion timeouts, piggybacked broadcasts retransmitted `mult × ceil(log10(N+1))` times in
//! packets of at most 1400 bytes, push-pull state exchanges over a stream on join and
//! periodically. Unlike memberlist's, a push-pull sends a digest and only what the peer lacks (a
//! joiner lacks everything, tags included). It is not wire-compatible with Go memberlist.
//!
//! Main types:
//! - [`Pool`]: the state machine. Inputs are `handle_packet`, `handle_stream`, `handle_timer`,
//!   `join`, `leave`, `update_tags` and `send_user_event`, each given the current [`Instant`];
//!   outputs ([`Output`]: packets, streams, timers, events) are drained with [`Pool::poll_output`].
//! - [`Keyring`]: AES-GCM keys (ring) for encrypting every packet and stream; [`keygen`];
//!   [`Pool::start_keyring_op`] installs, uses, removes or lists keys on every member at once
//!   (Consul's `keyring` command) and tallies the answers in a [`KeyringReport`].
//! - `Gossip` (feature `tokio-runtime`, on by default): the pool on tokio, with UDP for packets,
//!   TCP for push-pull, retry-join and clean shutdown.
//! - [`sim::Simulation`]: a deterministic discrete-event simulator running thousands of pools
//!   through the real codec, with latency, loss, partitions, crashes and restarts.
//! - [`Coordinate`] and [`CoordinateClient`]: Serf's Vivaldi network coordinates (8 dimensions plus
//!   height, adjustment window, gravity, a median filter per peer), in Consul's JSON shape. Each
//!   pool with [`Config::coordinates`] on (both presets) answers a direct ping with its
//!   coordinate, times the acks to its own direct pings on the caller's clock and refines its
//!   coordinate from them; [`Pool::coordinate`], [`Pool::coordinate_of`],
//!   [`Pool::member_coordinates`] and [`Pool::estimated_rtt`] serve `consul rtt`,
//!   `/v1/coordinate/*` and sorting datacenters by distance. LAN and WAN coordinates are separate
//!   spaces: compare a pool's coordinates only with each other.
//!
//! What it is NOT: the core does no IO, reads no clock and uses no unseeded randomness (AES-GCM
//! nonces come from an injected [`NonceSource`]: the system CSPRNG outside the simulator); it has no
//! general Serf queries (the keyring fan-out is the only one) or compression, and it does not
//! persist anything (an application keeps the keys across restarts on [`Event::KeyringChanged`],
//! and may save [`Pool::coordinate`] and restore it with [`Pool::set_coordinate`]).

mod broadcast;
mod codec;
mod config;
mod coordinate;
mod keyring;
mod keyring_query;
mod member;
mod pool;
pub mod sim;
mod table;
mod time;
mod user_events;

#[cfg(feature = "tokio-runtime")]
mod runtime;

pub use codec::{
    DecodeError, MemberState, Message, PushPull, StreamMessage, decode_packet, decode_push_pull,
    decode_stream, encode_packet, encode_push_pull, encode_stream,
};
pub use config::{Config, ConfigError};
pub use coordinate::{
    Coordinate, CoordinateClient, CoordinateConfig, CoordinateError, CoordinateStats, DIMENSIONALITY, MAX_RTT,
};
pub use keyring::{
    Keyring, KeyringError, KeyringOp, NonceSource, SimulatedNonces, SystemNonces, decode_key, keygen,
};
pub use keyring_query::KeyringReport;
pub use member::{Event, Member, MemberStatus, Tags, UserEvent};
pub use pool::{LocalNode, MAX_NAME_LEN, Output, Pool, PoolError, Stats, Timer};
pub use time::Instant;

#[cfg(feature = "tokio-runtime")]
pub use runtime::{Gossip, GossipOptions, RuntimeError};
