//! The queue of messages waiting to be piggybacked on outgoing packets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::codec::{self, MESSAGE_OVERHEAD};

/// Order of the queue: fewest transmissions first, then newest first (memberlist's
/// `TransmitLimitedQueue`), so fresh news spreads before old news is repeated.
type Rank = (u32, Reverse<u64>);

struct Queued {
    key: Option<String>,
    bytes: Vec<u8>,
}

/// Broadcasts with a transmission count. A broadcast about a member (keyed by its name) replaces
/// any older one about the same member, so the queue holds at most one claim per member.
#[derive(Default)]
pub(crate) struct BroadcastQueue {
    queue: BTreeMap<Rank, Queued>,
    by_key: HashMap<String, Rank>,
    next_id: u64,
}

/// Bound on entries inspected per packet, so a huge backlog cannot make one send expensive.
const MAX_SCAN: usize = 4096;
/// No message is smaller than this (kind + seq), so a smaller remaining budget ends the scan.
const MIN_MESSAGE: usize = 5;

impl BroadcastQueue {
    pub(crate) fn push(&mut self, key: Option<String>, bytes: Vec<u8>) {
        if let Some(k) = &key
            && let Some(old) = self.by_key.remove(k)
        {
            self.queue.remove(&old);
        }
        let rank = (0, Reverse(self.next_id));
        self.next_id += 1;
        if let Some(k) = &key {
            self.by_key.insert(k.clone(), rank);
        }
        self.queue.insert(rank, Queued { key, bytes });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Appends to `out`, framed as packet messages, the queued messages that fit in `budget`
    /// bytes (each costs its length plus the framing prefix), at most `max_count`; counts one
    /// transmission for each and drops those sent `limit` times. Returns how many were appended.
    pub(crate) fn take_into(
        &mut self,
        out: &mut Vec<u8>,
        mut budget: usize,
        max_count: usize,
        limit: u32,
    ) -> usize {
        let mut chosen: Vec<Rank> = Vec::new();
        for (rank, q) in self.queue.iter().take(MAX_SCAN) {
            if chosen.len() >= max_count || budget < MIN_MESSAGE + MESSAGE_OVERHEAD {
                break;
            }
            let cost = q.bytes.len() + MESSAGE_OVERHEAD;
            if cost <= budget {
                budget -= cost;
                chosen.push(*rank);
            }
        }
        let count = chosen.len();
        for rank in chosen {
            let Some(q) = self.queue.remove(&rank) else {
                continue;
            };
            let transmits = rank.0 + 1;
            codec::push_framed(out, &q.bytes);
            if transmits < limit {
                let new_rank = (transmits, rank.1);
                if let Some(k) = &q.key {
                    self.by_key.insert(k.clone(), new_rank);
                }
                self.queue.insert(new_rank, q);
            } else if let Some(k) = &q.key {
                self.by_key.remove(k);
            }
        }
        count
    }

    #[cfg(test)]
    fn take(&mut self, budget: usize, max_count: usize, limit: u32) -> Vec<Vec<u8>> {
        let mut buf = codec::start_packet();
        let n = self.take_into(&mut buf, budget, max_count, limit);
        codec::finish_packet(&mut buf, n);
        codec::split_framed(&buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_claims_replace_older_and_limits_apply() {
        let mut q = BroadcastQueue::default();
        q.push(Some("a".into()), vec![1; 10]);
        q.push(Some("a".into()), vec![2; 10]);
        q.push(None, vec![3; 10]);
        assert_eq!(q.len(), 2);
        let first = q.take(1000, 10, 2);
        // newest first
        assert_eq!(first, vec![vec![3; 10], vec![2; 10]]);
        assert_eq!(q.take(1000, 10, 2).len(), 2);
        assert!(q.is_empty(), "each message is sent at most `limit` times");
    }

    #[test]
    fn budget_and_count_are_respected() {
        let mut q = BroadcastQueue::default();
        for i in 0..10u8 {
            q.push(None, vec![i; 100]);
        }
        assert_eq!(q.take(250, 10, 5).len(), 2);
        assert_eq!(q.take(10_000, 3, 5).len(), 3);
        // The least-sent go first: the 5 never sent.
        let next = q.take(10_000, 5, 5);
        assert!(next.iter().all(|m| m[0] < 5));
    }
}
