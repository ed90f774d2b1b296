//! The member table: every member a pool knows, stored compactly.
//!
//! A pool of N members holds N entries, and a simulator of N pools holds N² of them (10⁸ at
//! 10,000 nodes), so an entry is kept to 48 bytes: short names inline, IPv4 addresses inline, tag
//! sets shared between members that carry equal tags, and the time of the last status change
//! only for members that are down (the only ones for which it matters). The name index stores
//! positions, not names.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use hashbrown::HashTable;
use rand::Rng;
use rand::seq::SliceRandom as _;

use crate::member::{Member, MemberStatus, Tags};
use crate::time::Instant;

/// Longest name kept inline; longer ones go to the heap.
const INLINE_NAME: usize = 14;

/// A member name: inline when short (node names usually are), boxed otherwise.
enum Name {
    Inline {
        len: u8,
        bytes: [u8; INLINE_NAME],
    },
    // A thin pointer keeps the enum at 16 bytes; `Box<str>` or `String` would make it 24 or 32.
    #[allow(clippy::box_collection)]
    Heap(Box<String>),
}

impl Name {
    fn new(s: &str) -> Name {
        let mut bytes = [0u8; INLINE_NAME];
        match bytes.get_mut(..s.len()) {
            Some(slot) => {
                slot.copy_from_slice(s.as_bytes());
                Name::Inline {
                    len: s.len() as u8,
                    bytes,
                }
            }
            None => Name::Heap(Box::new(s.to_owned())),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` in `new`, so the bytes are UTF-8 and the length in range.
            Name::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Name::Heap(s) => s,
        }
    }
}

/// An address in 16 bytes rather than `SocketAddr`'s 32: IPv6 goes to the heap.
enum PackedAddr {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl PackedAddr {
    fn new(addr: SocketAddr) -> PackedAddr {
        match addr {
            SocketAddr::V4(a) => PackedAddr::V4(a),
            SocketAddr::V6(a) => PackedAddr::V6(Box::new(a)),
        }
    }

    fn get(&self) -> SocketAddr {
        match self {
            PackedAddr::V4(a) => SocketAddr::V4(*a),
            PackedAddr::V6(a) => SocketAddr::V6(**a),
        }
    }
}

/// One member as the pool stores it.
pub(crate) struct Entry {
    name: Name,
    addr: PackedAddr,
    tags: Arc<Tags>,
    pub(crate) incarnation: u32,
    pub(crate) status: MemberStatus,
}

impl Entry {
    pub(crate) fn name(&self) -> &str {
        self.name.as_str()
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr.get()
    }

    pub(crate) fn tags(&self) -> &Tags {
        &self.tags
    }

    pub(crate) fn to_member(&self) -> Member {
        Member {
            name: self.name().to_owned(),
            addr: self.addr(),
            tags: Tags::clone(&self.tags),
            incarnation: self.incarnation,
            status: self.status,
        }
    }
}

/// Members by position (the pool's probe order) with an index by name.
pub(crate) struct MemberTable {
    entries: Vec<Entry>,
    /// Positions in `entries`, hashed by the name at that position.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Every distinct tag set in use, so that equal tags are stored once.
    tag_sets: HashSet<Arc<Tags>>,
    /// When each member that is down (failed or left) went down.
    down_since: HashMap<String, Instant>,
}

impl MemberTable {
    pub(crate) fn new() -> MemberTable {
        MemberTable {
            entries: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            tag_sets: HashSet::new(),
            down_since: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        let entries = &self.entries;
        self.index
            .find(hash, |&i| {
                entries.get(i as usize).is_some_and(|e| e.name() == name)
            })
            .map(|&i| i as usize)
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Entry> {
        self.position(name).and_then(|i| self.entries.get(i))
    }

    /// Room for `additional` more members without growing twice (a join learns many at once).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.entries.reserve_exact(additional);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(additional, |&i| rehash(hasher, entries, i));
    }

    /// Appends a member (whose name must not be in the table yet) and returns its position.
    pub(crate) fn push(&mut self, member: &Member) -> usize {
        let i = self.entries.len();
        let tags = self.intern(&member.tags);
        self.entries.push(Entry {
            name: Name::new(&member.name),
            addr: PackedAddr::new(member.addr),
            tags,
            incarnation: member.incarnation,
            status: member.status,
        });
        let hash = self.hasher.hash_one(member.name.as_str());
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .insert_unique(hash, i as u32, |&j| rehash(hasher, entries, j));
        i
    }

    /// Exchanges the members at positions `i` and `j`.
    pub(crate) fn swap(&mut self, i: usize, j: usize) {
        if i == j || i >= self.entries.len() || j >= self.entries.len() {
            return;
        }
        self.entries.swap(i, j);
        for (pos, other) in [(i, j), (j, i)] {
            let Some(name) = self.entries.get(pos).map(|e| e.name()) else {
                continue;
            };
            let hash = self.hasher.hash_one(name);
            if let Some(slot) = self.index.find_mut(hash, |&k| k as usize == other) {
                *slot = pos as u32;
            }
        }
    }

    pub(crate) fn set_state(&mut self, i: usize, incarnation: u32, status: MemberStatus) {
        if let Some(e) = self.entries.get_mut(i) {
            e.incarnation = incarnation;
            e.status = status;
        }
    }

    pub(crate) fn set_details(&mut self, i: usize, addr: SocketAddr, tags: &Tags) {
        if self.entries.get(i).is_some_and(|e| *e.tags != *tags) {
            let tags = self.intern(tags);
            if let Some(e) = self.entries.get_mut(i) {
                e.tags = tags;
            }
        }
        if let Some(e) = self.entries.get_mut(i)
            && e.addr() != addr
        {
            e.addr = PackedAddr::new(addr);
        }
    }

    /// Records that the member at `i` went down (or came back up) at `now`.
    pub(crate) fn note_status_change(&mut self, i: usize, now: Instant) {
        let Some(e) = self.entries.get(i) else { return };
        if e.status.is_live() {
            self.down_since.remove(e.name());
        } else {
            self.down_since.insert(e.name().to_owned(), now);
        }
    }

    /// When the member at `e` went down, if it is down.
    pub(crate) fn down_since(&self, e: &Entry) -> Option<Instant> {
        if e.status.is_live() {
            return None;
        }
        self.down_since.get(e.name()).copied()
    }

    /// Drops the members `keep` refuses, reorders the rest at random and rebuilds the index.
    pub(crate) fn retain_and_shuffle(
        &mut self,
        rng: &mut impl Rng,
        keep: impl Fn(&Entry, Option<Instant>) -> bool,
    ) {
        let down = &self.down_since;
        let before = self.entries.len();
        self.entries.retain(|e| {
            let since = if e.status.is_live() {
                None
            } else {
                down.get(e.name()).copied()
            };
            keep(e, since)
        });
        if self.entries.len() != before {
            let names: HashSet<&str> = self.entries.iter().map(Entry::name).collect();
            self.down_since.retain(|n, _| names.contains(n.as_str()));
            self.tag_sets.retain(|t| Arc::strong_count(t) > 1);
            self.entries.shrink_to_fit();
        }
        self.entries.shuffle(rng);
        self.index.clear();
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.reserve(entries.len(), |&i| rehash(hasher, entries, i));
        for (i, e) in entries.iter().enumerate() {
            let hash = hasher.hash_one(e.name());
            self.index
                .insert_unique(hash, i as u32, |&j| rehash(hasher, entries, j));
        }
    }

    fn intern(&mut self, tags: &Tags) -> Arc<Tags> {
        if let Some(shared) = self.tag_sets.get(tags) {
            return Arc::clone(shared);
        }
        // Tag sets no member uses any more are dropped once in a while, not on every change.
        if self.tag_sets.len() > 64 && self.tag_sets.len() > self.entries.len() {
            self.tag_sets.retain(|t| Arc::strong_count(t) > 1);
        }
        let shared = Arc::new(tags.clone());
        self.tag_sets.insert(Arc::clone(&shared));
        shared
    }
}

fn rehash(hasher: &RandomState, entries: &[Entry], i: u32) -> u64 {
    hasher.hash_one(entries.get(i as usize).map_or("", Entry::name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn member(name: &str, addr: &str, role: &str) -> Member {
        let mut tags = Tags::new();
        tags.insert("role".into(), role.into());
        Member {
            name: name.into(),
            addr: addr.parse().unwrap(),
            tags,
            incarnation: 1,
            status: MemberStatus::Alive,
        }
    }

    #[test]
    fn entries_stay_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 48,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn finds_members_by_name_through_swaps_and_shuffles() {
        let mut t = MemberTable::new();
        let long = "a-rather-long-node-name-that-does-not-fit-inline";
        let ms = [
            member("n1", "10.0.0.1:7946", "x"),
            member(long, "[::1]:7946", "x"),
            member("né", "10.0.0.3:1", "y"),
        ];
        for m in &ms {
            t.push(m);
        }
        assert_eq!(t.tag_sets.len(), 2, "equal tag sets are stored once");
        t.swap(0, 2);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for round in 0..2 {
            for m in &ms {
                let e = t.by_name(&m.name).unwrap();
                assert_eq!(e.to_member(), *m, "round {round}");
            }
            assert!(t.by_name("n2").is_none());
            t.retain_and_shuffle(&mut rng, |_, _| true);
        }
        t.set_state(0, 5, MemberStatus::Failed);
        t.note_status_change(0, Instant::from_micros(9));
        assert_eq!(t.down_since(t.get(0).unwrap()), Some(Instant::from_micros(9)));
        t.retain_and_shuffle(&mut rng, |e, since| e.status.is_live() && since.is_none());
        assert_eq!(t.len(), 2);
        assert!(t.down_since.is_empty());
    }
}
