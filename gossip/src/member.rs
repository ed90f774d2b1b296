//! Members of a pool and the events reported about them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A member's tags: small key/value facts gossiped with its liveness (role, dc, port, build, vsn…).
pub type Tags = BTreeMap<String, String>;

/// What the local node believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberStatus {
    /// Answering probes, or not yet suspected.
    Alive,
    /// Missed a probe; declared failed unless it refutes before its suspicion timeout.
    Suspect,
    /// Declared failed by the pool.
    Failed,
    /// Left gracefully: it announced its own departure.
    Left,
}

impl MemberStatus {
    /// Alive or suspect: still counted as part of the pool.
    pub fn is_live(self) -> bool {
        matches!(self, MemberStatus::Alive | MemberStatus::Suspect)
    }
}

/// One member of a pool, as seen by the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Unique name in the pool (`node` in a LAN pool, `node.dc` in a WAN pool, by convention).
    pub name: String,
    /// Where it receives packets and streams.
    pub addr: SocketAddr,
    /// Its tags.
    pub tags: Tags,
    /// Its incarnation: only the member itself increases it, to refute suspicion or announce changes.
    pub incarnation: u32,
    /// Its status.
    pub status: MemberStatus,
}

/// A user event delivered once to every member (deduplicated by Lamport time, name and payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// Lamport time at which it was sent.
    pub ltime: u64,
    /// The event's name.
    pub name: String,
    /// The event's payload.
    pub payload: Vec<u8>,
}

/// Something the application should know. Each member transition is reported once per node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A member was seen for the first time.
    Joined(Member),
    /// A live member changed its tags or address.
    Updated(Member),
    /// A member missed probes and is suspected; it is still live until declared failed.
    Suspect(Member),
    /// A member was declared failed. Never reported for a member that left gracefully.
    Failed(Member),
    /// A member left gracefully.
    Left(Member),
    /// A member that had failed or left is alive again.
    Rejoined(Member),
    /// A user event arrived (or was sent by this node), for the first time.
    User(UserEvent),
    /// This member's keyring changed through a keyring operation (its own or another member's):
    /// an application that persists the keys should save them now.
    KeyringChanged,
}
