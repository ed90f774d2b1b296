//! In-memory [`Source`] and [`Sink`]: a KV map with a monotonically increasing index, for tests and
//! for embedders that replicate between their own stores.
//!
//! Both are cheap handles (`Clone` shares the state), so a test keeps one handle to change the data
//! and inject faults while the runner owns another. They imitate Consul where the replicator can
//! tell: blocking reads that wake on a change or time out, a per-prefix index, tombstones that
//! answer deltas until reaped, `check-session` fences, and the 64-operation transaction limit. They
//! are not a KV store: no ACLs, no sessions beyond a lock key's holder, no CAS.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::MAX_TXN_OPS;
use crate::model::{Batch, DeletedKey, Entry, Op, ReadContent, ReadQuery, SourceRead};
use crate::traits::{Sink, SinkError, Source, SourceError};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A way for [`MemorySource`] to answer wrongly, as a real source datacenter sometimes does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFault {
    /// Answer an empty prefix at the real index: a restarted server that lost its data
    /// (consul-replicate#82).
    Empty,
    /// Answer with `known_leader = false`.
    NoLeader,
    /// Answer stale reads (only) with this last contact: a lagging follower. A read that is not
    /// stale is answered normally and does not use up the fault.
    StaleFollower(Duration),
    /// Answer every read, stale or not, with this last contact.
    LastContact(Duration),
    /// Answer at this index with these entries (a full read), as a rewound source would.
    Rewound {
        /// The index answered.
        index: u64,
        /// The entries answered.
        entries: Vec<Entry>,
    },
    /// Fail the read at once with [`SourceError::Unreachable`] and this reason.
    Error(String),
}

#[derive(Debug, Default)]
struct SourceState {
    index: u64,
    entries: BTreeMap<String, Entry>,
    /// Deleted key → index of the delete.
    tombstones: BTreeMap<String, u64>,
    /// Tombstones up to this index were reaped: a delta from before it cannot be answered.
    reaped_through: u64,
    no_deltas: bool,
    faults: VecDeque<(SourceFault, usize)>,
    queries: Vec<ReadQuery>,
}

impl SourceState {
    fn under<'a, V>(
        map: &'a BTreeMap<String, V>,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a V)> {
        map.range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Consul's index for a recursive read: the latest change under the prefix, or the store's
    /// index when the prefix never had anything.
    fn prefix_index(&self, prefix: &str) -> u64 {
        let entries = Self::under(&self.entries, prefix).map(|(_, e)| e.modify_index);
        let tombstones = Self::under(&self.tombstones, prefix).map(|(_, i)| *i);
        match entries.chain(tombstones).max() {
            Some(index) if index > 0 => index,
            _ => self.index,
        }
    }

    /// Takes the fault for the next answer to `query`, if any.
    fn take_fault(&mut self, query: &ReadQuery) -> Option<SourceFault> {
        let (fault, left) = self.faults.front_mut()?;
        if matches!(fault, SourceFault::StaleFollower(_)) && !query.stale {
            return None;
        }
        let fault = fault.clone();
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.faults.pop_front();
        }
        Some(fault)
    }

    fn answer(&self, query: &ReadQuery) -> SourceRead {
        let index = self.prefix_index(&query.prefix);
        let prefix = query.prefix.as_str();
        let content = match query.changes_since {
            Some(since) if !self.no_deltas && since >= self.reaped_through => ReadContent::Delta {
                since,
                changed: Self::under(&self.entries, prefix)
                    .filter(|(_, e)| e.modify_index > since)
                    .map(|(_, e)| e.clone())
                    .collect(),
                deleted: Self::under(&self.tombstones, prefix)
                    .filter(|(_, i)| **i > since)
                    .map(|(k, i)| DeletedKey {
                        key: k.clone(),
                        modify_index: *i,
                    })
                    .collect(),
            },
            _ => ReadContent::Full(
                Self::under(&self.entries, prefix)
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
        };
        SourceRead {
            index,
            known_leader: true,
            last_contact: Duration::ZERO,
            content,
        }
    }
}

#[derive(Debug, Default)]
struct SourceShared {
    state: Mutex<SourceState>,
    changed: Notify,
}

/// A source datacenter in memory.
///
/// Every write advances the store's index by one. Reads block until the prefix's index passes the
/// query's, or the query's wait passes. A read with `changes_since` is answered with a delta while
/// the tombstones it needs are kept (see [`MemorySource::reap_tombstones`]), else in full.
#[derive(Debug, Clone)]
pub struct MemorySource {
    shared: Arc<SourceShared>,
}

impl Default for MemorySource {
    fn default() -> Self {
        Self::new()
    }
}

impl MemorySource {
    /// An empty source at index 1.
    pub fn new() -> Self {
        let shared = SourceShared::default();
        lock(&shared.state).index = 1;
        MemorySource {
            shared: Arc::new(shared),
        }
    }

    fn write<T>(&self, change: impl FnOnce(&mut SourceState) -> T) -> T {
        let out = change(&mut lock(&self.shared.state));
        self.shared.changed.notify_waiters();
        out
    }

    /// Sets `key` to `value` (flags 0, no session). Returns the write's index.
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> u64 {
        self.put_with(key, value, 0, None)
    }

    /// Sets `key` with flags and, if given, the session holding it. Returns the write's index.
    pub fn put_with(&self, key: &str, value: impl Into<Vec<u8>>, flags: u64, session: Option<&str>) -> u64 {
        let value = value.into();
        self.write(|s| {
            s.index += 1;
            let index = s.index;
            s.tombstones.remove(key);
            let created = s.entries.get(key).map_or(index, |e| e.create_index);
            let lock_index = s.entries.get(key).map_or(0, |e| e.lock_index) + u64::from(session.is_some());
            s.entries.insert(
                key.to_owned(),
                Entry {
                    key: key.to_owned(),
                    value,
                    flags,
                    create_index: created,
                    modify_index: index,
                    lock_index,
                    session: session.map(str::to_owned),
                },
            );
            index
        })
    }

    /// Deletes `key`, leaving a tombstone. Returns the delete's index, `None` if it was absent.
    pub fn delete(&self, key: &str) -> Option<u64> {
        self.write(|s| {
            s.entries.remove(key)?;
            s.index += 1;
            let index = s.index;
            s.tombstones.insert(key.to_owned(), index);
            Some(index)
        })
    }

    /// Forgets every tombstone, as Consul's reaper does: deltas from before now are answered in full.
    pub fn reap_tombstones(&self) {
        let mut s = lock(&self.shared.state);
        s.tombstones.clear();
        s.reaped_through = s.index;
    }

    /// Whether reads asking for a delta get one (the default) or always the full prefix (as from
    /// Consul itself).
    pub fn set_deltas(&self, enabled: bool) {
        lock(&self.shared.state).no_deltas = !enabled;
    }

    /// Answers the next `reads` reads with `fault` (after any faults injected before it).
    pub fn inject(&self, fault: SourceFault, reads: usize) {
        if reads > 0 {
            lock(&self.shared.state).faults.push_back((fault, reads));
        }
        // A read blocking now answers with the fault once it wakes; wake it so faults that fail
        // reads apply at once.
        self.shared.changed.notify_waiters();
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.state).faults.clear();
    }

    /// The store's index (the last write's).
    pub fn index(&self) -> u64 {
        lock(&self.shared.state).index
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.shared.state).entries.values().cloned().collect()
    }

    /// Every read asked so far, in order.
    pub fn queries(&self) -> Vec<ReadQuery> {
        lock(&self.shared.state).queries.clone()
    }
}

impl Source for MemorySource {
    async fn read(&self, query: &ReadQuery) -> Result<SourceRead, SourceError> {
        let deadline = Instant::now() + query.wait;
        lock(&self.shared.state).queries.push(query.clone());
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = lock(&self.shared.state);
                if let Some(SourceFault::Error(reason)) = s.faults.front().map(|(f, _)| f.clone()) {
                    s.take_fault(query);
                    return Err(SourceError::Unreachable {
                        prefix: query.prefix.clone(),
                        datacenter: query.datacenter.clone(),
                        reason,
                    });
                }
                let ready = query.index == 0
                    || s.prefix_index(&query.prefix) > query.index
                    || Instant::now() >= deadline;
                if ready {
                    let mut read = s.answer(query);
                    match s.take_fault(query) {
                        None | Some(SourceFault::Error(_)) => {}
                        Some(SourceFault::Empty) => read.content = ReadContent::Full(Vec::new()),
                        Some(SourceFault::NoLeader) => read.known_leader = false,
                        Some(SourceFault::StaleFollower(contact) | SourceFault::LastContact(contact)) => {
                            read.last_contact = contact;
                        }
                        Some(SourceFault::Rewound { index, entries }) => {
                            read.index = index;
                            read.content = ReadContent::Full(entries);
                        }
                    }
                    return Ok(read);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A way for [`MemorySink`] to fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkFault {
    /// Fail with [`SinkError::Unreachable`].
    Unreachable(String),
    /// Fail with [`SinkError::Refused`].
    Refused {
        /// The status.
        status: u16,
        /// The explanation.
        body: String,
    },
}

impl From<SinkFault> for SinkError {
    fn from(fault: SinkFault) -> Self {
        match fault {
            SinkFault::Unreachable(reason) => SinkError::Unreachable(reason),
            SinkFault::Refused { status, body } => SinkError::Refused { status, body },
        }
    }
}

#[derive(Debug, Default)]
struct SinkState {
    datacenter: String,
    index: u64,
    entries: BTreeMap<String, Entry>,
    apply_faults: VecDeque<(SinkFault, usize)>,
    list_faults: VecDeque<(SinkFault, usize)>,
    applied: Vec<Batch>,
    lists: usize,
}

fn take(faults: &mut VecDeque<(SinkFault, usize)>) -> Option<SinkFault> {
    let (fault, left) = faults.front_mut()?;
    let fault = fault.clone();
    *left = left.saturating_sub(1);
    if *left == 0 {
        faults.pop_front();
    }
    Some(fault)
}

#[derive(Debug, Default)]
struct SinkShared {
    state: Mutex<SinkState>,
    changed: Notify,
}

/// The local datacenter in memory.
///
/// A batch applies atomically at one new index, after its fence (the lock key must be held by the
/// fence's session, see [`MemorySink::acquire`]) and the transaction limit are checked; a put keeps
/// the key's session, as Consul's does. Applied batches are logged for tests.
#[derive(Debug, Clone)]
pub struct MemorySink {
    shared: Arc<SinkShared>,
}

impl MemorySink {
    /// An empty destination in datacenter `datacenter`.
    pub fn new(datacenter: &str) -> Self {
        let shared = SinkShared::default();
        {
            let mut s = lock(&shared.state);
            s.datacenter = datacenter.to_owned();
            s.index = 1;
        }
        MemorySink {
            shared: Arc::new(shared),
        }
    }

    fn write<T>(&self, change: impl FnOnce(&mut SinkState) -> T) -> T {
        let out = change(&mut lock(&self.shared.state));
        self.shared.changed.notify_waiters();
        out
    }

    /// Sets `key` to `value` directly, as another writer in the local datacenter would.
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        self.write(|s| {
            s.index += 1;
            let index = s.index;
            let entry = s.entries.entry(key.to_owned()).or_insert_with(|| Entry {
                key: key.to_owned(),
                value: Vec::new(),
                flags: 0,
                create_index: index,
                modify_index: index,
                lock_index: 0,
                session: None,
            });
            entry.value = value;
            entry.modify_index = index;
        });
    }

    /// Deletes `key` directly, as another writer would.
    pub fn delete(&self, key: &str) {
        self.write(|s| {
            if s.entries.remove(key).is_some() {
                s.index += 1;
            }
        });
    }

    /// Makes `session` the holder of lock key `key` (creating it), as a session lock would.
    pub fn acquire(&self, key: &str, session: &str) {
        self.put(key, Vec::new());
        self.write(|s| {
            if let Some(entry) = s.entries.get_mut(key) {
                entry.session = Some(session.to_owned());
                entry.lock_index += 1;
            }
        });
    }

    /// Releases lock key `key`: batches fenced on it fail from now on with
    /// [`SinkError::FenceLost`].
    pub fn release(&self, key: &str) {
        self.write(|s| {
            if let Some(entry) = s.entries.get_mut(key) {
                entry.session = None;
            }
        });
    }

    /// The value of `key`, if present.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.shared.state).entries.get(key).map(|e| e.value.clone())
    }

    /// The entry of `key`, if present.
    pub fn entry(&self, key: &str) -> Option<Entry> {
        lock(&self.shared.state).entries.get(key).cloned()
    }

    /// Every key under `prefix` with its value, in key order.
    pub fn values(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        lock(&self.shared.state)
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    /// Every batch applied so far, in order.
    pub fn applied(&self) -> Vec<Batch> {
        lock(&self.shared.state).applied.clone()
    }

    /// How many times [`Sink::list`] was called.
    pub fn list_count(&self) -> usize {
        lock(&self.shared.state).lists
    }

    /// Fails the next `applies` applies with `fault`.
    pub fn inject_apply(&self, fault: SinkFault, applies: usize) {
        if applies > 0 {
            lock(&self.shared.state).apply_faults.push_back((fault, applies));
        }
    }

    /// Fails the next `lists` lists with `fault`.
    pub fn inject_list(&self, fault: SinkFault, lists: usize) {
        if lists > 0 {
            lock(&self.shared.state).list_faults.push_back((fault, lists));
        }
    }

    /// Waits until `condition` holds for the values under `prefix` (checked now and after every
    /// change). Callers bound the wait with a timeout.
    pub async fn wait_for(
        &self,
        prefix: &str,
        mut condition: impl FnMut(&BTreeMap<String, Vec<u8>>) -> bool,
    ) {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if condition(&self.values(prefix)) {
                return;
            }
            notified.await;
        }
    }
}

impl Sink for MemorySink {
    async fn local_datacenter(&self) -> Result<String, SinkError> {
        Ok(lock(&self.shared.state).datacenter.clone())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, SinkError> {
        let mut s = lock(&self.shared.state);
        s.lists += 1;
        if let Some(fault) = take(&mut s.list_faults) {
            return Err(fault.into());
        }
        Ok(s.entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, SinkError> {
        Ok(self.entry(key))
    }

    async fn apply(&self, batch: &Batch) -> Result<(), SinkError> {
        self.write(|s| {
            if let Some(fault) = take(&mut s.apply_faults) {
                return Err(fault.into());
            }
            let size = batch.ops.len() + usize::from(batch.fence.is_some());
            if size > MAX_TXN_OPS {
                return Err(SinkError::Refused {
                    status: 413,
                    body: format!("transaction has {size} operations, more than {MAX_TXN_OPS}"),
                });
            }
            if let Some(fence) = &batch.fence {
                let held = s
                    .entries
                    .get(&fence.key)
                    .is_some_and(|e| e.session.as_deref() == Some(fence.session.as_str()));
                if !held {
                    return Err(SinkError::FenceLost {
                        key: fence.key.clone(),
                        session: fence.session.clone(),
                    });
                }
            }
            s.index += 1;
            let index = s.index;
            for op in &batch.ops {
                match op {
                    Op::Put { key, value, flags } => {
                        let entry = s.entries.entry(key.clone()).or_insert_with(|| Entry {
                            key: key.clone(),
                            value: Vec::new(),
                            flags: 0,
                            create_index: index,
                            modify_index: index,
                            lock_index: 0,
                            session: None,
                        });
                        entry.value = value.clone();
                        entry.flags = *flags;
                        entry.modify_index = index;
                    }
                    Op::Delete { key } => {
                        s.entries.remove(key);
                    }
                }
            }
            s.applied.push(batch.clone());
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(prefix: &str, index: u64, changes_since: Option<u64>) -> ReadQuery {
        ReadQuery {
            prefix: prefix.into(),
            datacenter: "dc1".into(),
            index,
            wait: Duration::from_secs(10),
            stale: true,
            changes_since,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn source_blocks_until_a_change_and_answers_deltas_until_reaped() {
        let source = MemorySource::new();
        let first = source.put("a/1", "x");
        source.put("b/1", "y");
        let read = source.read(&query("a/", 0, None)).await.unwrap();
        assert_eq!(read.index, first);

        let waiting = {
            let source = source.clone();
            tokio::spawn(async move { source.read(&query("a/", first, Some(first))).await })
        };
        tokio::task::yield_now().await;
        source.put("b/2", "other prefix");
        let second = source.put("a/2", "z");
        source.delete("a/1");
        let read = waiting.await.unwrap().unwrap();
        assert!(read.index >= second);
        match read.content {
            ReadContent::Delta { since, changed, .. } => {
                assert_eq!(since, first);
                assert_eq!(
                    changed.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
                    vec!["a/2"]
                );
            }
            other => panic!("{other:?}"),
        }
        let read = source.read(&query("a/", 0, Some(first))).await.unwrap();
        assert!(matches!(read.content, ReadContent::Delta { ref deleted, .. } if deleted.len() == 1));

        source.reap_tombstones();
        let read = source.read(&query("a/", 0, Some(first))).await.unwrap();
        assert!(matches!(read.content, ReadContent::Full(ref e) if e.len() == 1));

        // A blocking read with nothing to wake it answers at its wait with the same index.
        let index = source.read(&query("a/", 0, None)).await.unwrap().index;
        let started = Instant::now();
        let read = source.read(&query("a/", index, None)).await.unwrap();
        assert_eq!(read.index, index);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn sink_checks_fences_and_the_transaction_limit() {
        let sink = MemorySink::new("dc2");
        sink.acquire("lock", "s1");
        let fence = crate::model::Fence {
            key: "lock".into(),
            session: "s1".into(),
        };
        let put = |k: &str| Op::Put {
            key: k.into(),
            value: b"v".to_vec(),
            flags: 0,
        };
        let batch = Batch {
            ops: vec![put("a")],
            fence: Some(fence.clone()),
        };
        sink.apply(&batch).await.unwrap();
        assert_eq!(sink.value("a"), Some(b"v".to_vec()));
        let full = Batch {
            ops: (0..64).map(|i| put(&format!("k{i}"))).collect(),
            fence: Some(fence.clone()),
        };
        assert!(matches!(
            sink.apply(&full).await,
            Err(SinkError::Refused { status: 413, .. })
        ));
        sink.release("lock");
        assert!(matches!(
            sink.apply(&batch).await,
            Err(SinkError::FenceLost { .. })
        ));
        sink.inject_apply(SinkFault::Unreachable("down".into()), 1);
        let unfenced = Batch {
            ops: vec![put("b")],
            fence: None,
        };
        assert!(matches!(
            sink.apply(&unfenced).await,
            Err(SinkError::Unreachable(_))
        ));
        sink.apply(&unfenced).await.unwrap();
        assert_eq!(sink.applied().len(), 2);
    }
}
