//! Lamport clock and deduplication of user events (Serf's event buffer).

/// Remembers recent events by Lamport time so each is delivered once even though gossip brings it
/// several times.
pub(crate) struct EventDedup {
    clock: u64,
    /// Events before this time are dropped (set once, on joining a pool).
    min_time: Option<u64>,
    slots: Vec<Slot>,
}

#[derive(Default, Clone)]
struct Slot {
    ltime: u64,
    seen: Vec<(String, Vec<u8>)>,
}

impl EventDedup {
    pub(crate) fn new(buffer: usize) -> Self {
        EventDedup {
            clock: 0,
            min_time: None,
            slots: vec![Slot::default(); buffer.max(1)],
        }
    }

    /// The current Lamport time.
    pub(crate) fn clock(&self) -> u64 {
        self.clock
    }

    /// Catches up with another member's clock (a push-pull carries its current value, which is the
    /// time its *next* event will take, so no +1).
    pub(crate) fn catch_up(&mut self, clock: u64) {
        self.clock = self.clock.max(clock);
    }

    /// Moves the clock past the time of an event seen elsewhere.
    pub(crate) fn witness(&mut self, ltime: u64) {
        self.clock = self.clock.max(ltime.saturating_add(1));
    }

    /// From now on, drop events older than `ltime`. Only the first call counts: later joins (or
    /// retries) must not hide events that arrived in between.
    pub(crate) fn ignore_before(&mut self, ltime: u64) {
        if self.min_time.is_none() {
            self.min_time = Some(ltime);
        }
    }

    /// Takes the time for a local event and records it as seen.
    pub(crate) fn next_local(&mut self, name: &str, payload: &[u8]) -> u64 {
        let ltime = self.clock;
        self.clock += 1;
        self.accept(ltime, name, payload);
        ltime
    }

    /// Records an event; true if it was not seen before and is recent enough to be delivered.
    pub(crate) fn accept(&mut self, ltime: u64, name: &str, payload: &[u8]) -> bool {
        self.witness(ltime);
        if self.min_time.is_some_and(|min| ltime < min) {
            return false;
        }
        let len = self.slots.len() as u64;
        // Older than the buffer covers: it may have been delivered already, so drop it.
        if self.clock > len && ltime < self.clock - len {
            return false;
        }
        let Some(slot) = self.slots.get_mut((ltime % len) as usize) else {
            return false;
        };
        if slot.ltime != ltime {
            slot.ltime = ltime;
            slot.seen.clear();
        } else if slot.seen.iter().any(|(n, p)| n == name && p == payload) {
            return false;
        }
        slot.seen.push((name.to_owned(), payload.to_vec()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_once_and_drops_too_old() {
        let mut d = EventDedup::new(4);
        assert!(d.accept(0, "a", b"x"));
        assert!(!d.accept(0, "a", b"x"));
        assert!(d.accept(0, "a", b"y"));
        assert!(d.accept(0, "b", b"x"));
        let t = d.next_local("c", b"");
        assert_eq!(t, 1);
        assert!(!d.accept(1, "c", b""));
        d.witness(100);
        assert!(!d.accept(2, "late", b""), "older than the buffer");
        assert!(d.accept(99, "recent", b""));
        d.ignore_before(99);
        d.ignore_before(5);
        assert!(!d.accept(98, "before the join", b""));
        assert!(d.accept(99, "at the join", b"x"));
    }
}
