//! The planner: given what the source answered and what the destination holds, decide the puts and
//! deletes of one pass, or hold it.
//!
//! Sans-IO, no async, no clock. It does not read or write anything; the runner feeds it a
//! [`SourceRead`] and a [`Mirror`] (its view of the destination) and applies the [`Plan`]'s batches.
//!
//! Unlike consul-replicate, which copies every source key whose `ModifyIndex` passed its last
//! checkpoint, the planner diffs: a key is written only when the destination's value or flags differ
//! from the source's, so a key changed or deleted at the destination by someone else is repaired by
//! the next full pass (consul-replicate#52), and an unchanged key is never rewritten. And unlike
//! consul-replicate's rsync `--delete`, a pass may be held: see [`Hold`].
//!
//! Cost: a full read costs O(source + mirror); a delta ([`ReadContent::Delta`]) costs
//! O(changed · log mirror) and never walks the prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::MAX_TXN_OPS;
use crate::config::{PrefixSpec, ReplicateConfig};
use crate::model::{Batch, Entry, Fence, Op, ReadContent, SourceRead};

/// The flags `consul lock` marks its lock key with (Consul's API `LockFlagValue`).
pub const CONSUL_LOCK_FLAGS: u64 = 0x2ddc_cbc0_58a5_0c18;
/// The flags `consul lock -n` marks its semaphore keys with (Consul's API `SemaphoreFlagValue`).
pub const CONSUL_SEMAPHORE_FLAGS: u64 = 0xe0f6_9a2b_aa41_4de0;

/// Which keys one replication owns, and how source keys map to destination keys.
///
/// A source key maps to `destination + key.strip_prefix(source)`, a raw string prefix (`global`
/// also takes `globalization`). A destination key maps back by replacing only its leading
/// `destination` (consul-replicate replaced every occurrence, so `a/x/a` under `a` → `b` mapped back
/// wrongly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    source: String,
    destination: String,
    excludes: Vec<String>,
    protected: BTreeSet<String>,
    status_dir: String,
}

impl Scope {
    /// The scope of `spec`: `excludes` are raw prefixes of source keys, neither written nor deleted;
    /// `protected` are exact destination keys (the replicator's lock) and `status_dir` a folder of
    /// them (the status records), never written or deleted.
    pub fn new(spec: &PrefixSpec, excludes: &[String], protected: &[String], status_dir: &str) -> Self {
        let dir = status_dir.trim_end_matches('/');
        Scope {
            source: spec.source.clone(),
            destination: spec.destination.clone(),
            excludes: excludes.to_vec(),
            protected: protected.iter().cloned().collect(),
            status_dir: if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            },
        }
    }

    /// The scope of `spec` under `config`'s excludes, protected keys and status folder.
    pub fn from_config(spec: &PrefixSpec, config: &ReplicateConfig) -> Self {
        Scope::new(spec, &config.excludes, &config.protected, &config.status_dir)
    }

    /// The source prefix.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The destination prefix.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The destination key of `source_key`, if it is under the source prefix.
    pub fn to_destination(&self, source_key: &str) -> Option<String> {
        let rest = source_key.strip_prefix(self.source.as_str())?;
        Some(format!("{}{rest}", self.destination))
    }

    /// The source key of `destination_key`, if it is under the destination prefix: only the leading
    /// destination prefix is replaced.
    pub fn to_source(&self, destination_key: &str) -> Option<String> {
        let rest = destination_key.strip_prefix(self.destination.as_str())?;
        Some(format!("{}{rest}", self.source))
    }

    /// Whether `source_key` is excluded.
    pub fn is_excluded(&self, source_key: &str) -> bool {
        self.excludes.iter().any(|e| source_key.starts_with(e.as_str()))
    }

    /// Whether `destination_key` belongs to the replicator itself (its lock, its status records).
    pub fn is_protected(&self, destination_key: &str) -> bool {
        self.protected.contains(destination_key)
            || (!self.status_dir.is_empty() && destination_key.starts_with(self.status_dir.as_str()))
    }

    /// The destination key of `source_key` if this replication writes it: under the source prefix,
    /// not excluded, and not mapped onto a protected key.
    pub fn managed_destination(&self, source_key: &str) -> Option<String> {
        if self.is_excluded(source_key) {
            return None;
        }
        self.to_destination(source_key)
            .filter(|dest| !self.is_protected(dest))
    }

    /// Whether this replication may write or delete `destination_key`: under the destination
    /// prefix, not protected, and its source key not excluded.
    pub fn manages(&self, destination_key: &str) -> bool {
        !self.is_protected(destination_key)
            && self
                .to_source(destination_key)
                .is_some_and(|source| !self.is_excluded(&source))
    }
}

/// The replicator's view of the destination prefix: each managed key's value and flags.
///
/// Built from [`Sink::list`](crate::Sink::list) (through [`Mirror::from_entries`]) and kept current
/// with [`Mirror::apply`] after each applied batch. It holds only the keys its [`Scope`] manages, so
/// its size is the destination size the mass-delete guard compares against.
#[derive(Debug, Clone)]
pub struct Mirror {
    scope: Arc<Scope>,
    entries: BTreeMap<String, (Vec<u8>, u64)>,
}

impl Mirror {
    /// An empty mirror (a destination with nothing under the prefix).
    pub fn new(scope: Arc<Scope>) -> Self {
        Mirror {
            scope,
            entries: BTreeMap::new(),
        }
    }

    /// The mirror of a listed destination: entries the scope does not manage are left out.
    pub fn from_entries(scope: Arc<Scope>, entries: impl IntoIterator<Item = Entry>) -> Self {
        let entries = entries
            .into_iter()
            .filter(|e| scope.manages(&e.key))
            .map(|e| (e.key, (e.value, e.flags)))
            .collect();
        Mirror { scope, entries }
    }

    /// Records a batch the sink applied. Operations on keys outside the scope (the status record)
    /// are not mirrored.
    pub fn apply(&mut self, batch: &Batch) {
        for op in &batch.ops {
            if !self.scope.manages(op.key()) {
                continue;
            }
            match op {
                Op::Put { key, value, flags } => {
                    self.entries.insert(key.clone(), (value.clone(), *flags));
                }
                Op::Delete { key } => {
                    self.entries.remove(key);
                }
            }
        }
    }

    /// The value and flags of `key`, if present.
    pub fn get(&self, key: &str) -> Option<(&[u8], u64)> {
        self.entries.get(key).map(|(v, f)| (v.as_slice(), *f))
    }

    /// The number of managed keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no managed key is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every managed key with its value and flags, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8], u64)> {
        self.entries
            .iter()
            .map(|(k, (v, f))| (k.as_str(), v.as_slice(), *f))
    }

    /// The scope the mirror was built for.
    pub fn scope(&self) -> &Arc<Scope> {
        &self.scope
    }

    fn differs(&self, key: &str, entry: &Entry) -> bool {
        self.get(key) != Some((entry.value.as_slice(), entry.flags))
    }
}

/// Why a key is deleted at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// A full read of the source does not have it.
    AbsentAtSource,
    /// The source's delta says it was deleted at this index.
    DeletedAtSource {
        /// The index of the delete at the source.
        index: u64,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::AbsentAtSource => f.write_str("absent from the source's full listing"),
            DeleteReason::DeletedAtSource { index } => {
                write!(f, "deleted at the source at index {index}")
            }
        }
    }
}

/// Why a pass is held, in whole or in part.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The answering source server knew no leader: its data may be stale or empty. Whole pass.
    NoKnownLeader,
    /// The answering source server last heard from its leader too long ago. Whole pass.
    LastContactTooOld {
        /// Its last contact.
        last_contact: Duration,
        /// The most allowed.
        max_stale: Duration,
    },
    /// The source's index is lower than one already seen: the source was rewound (a restore, a
    /// rebuilt cluster) or a lagging server answered. Whole pass; the next read starts over.
    IndexWentBackwards {
        /// The index seen before.
        previous: u64,
        /// The index answered.
        now: u64,
    },
    /// A full read found nothing under the source prefix while the destination has keys: the
    /// answer of a server that lost its data (consul-replicate#82) looks exactly like this. Nothing
    /// is deleted (and there is nothing to put). To empty the destination, delete it by hand.
    SourceEmpty {
        /// The managed destination keys that would have been deleted.
        destination_keys: usize,
    },
    /// The pass would delete more than the allowed share of the destination. Its puts are applied;
    /// its deletes are held until `force_deletes` or a source that no longer asks for them.
    TooManyDeletes {
        /// The deletes held.
        deletes: usize,
        /// The managed destination keys before the pass.
        destination_keys: usize,
        /// The share allowed (`max_delete_fraction`).
        fraction: f64,
    },
}

impl Hold {
    /// The hold's name, stable for programs (the status record's `HeldKind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Hold::NoKnownLeader => "NoKnownLeader",
            Hold::LastContactTooOld { .. } => "LastContactTooOld",
            Hold::IndexWentBackwards { .. } => "IndexWentBackwards",
            Hold::SourceEmpty { .. } => "SourceEmpty",
            Hold::TooManyDeletes { .. } => "TooManyDeletes",
        }
    }

    /// Whether the whole pass is skipped (no puts either), rather than only its deletes.
    pub fn skips_pass(&self) -> bool {
        !matches!(self, Hold::TooManyDeletes { .. })
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::NoKnownLeader => {
                f.write_str("the source server that answered knows no leader; nothing written")
            }
            Hold::LastContactTooOld {
                last_contact,
                max_stale,
            } => write!(
                f,
                "the source server that answered last heard from its leader {last_contact:?} ago, \
                 more than max_stale {max_stale:?}; nothing written"
            ),
            Hold::IndexWentBackwards { previous, now } => write!(
                f,
                "the source index went backwards from {previous} to {now}; nothing written, the next \
                 read starts over"
            ),
            Hold::SourceEmpty { destination_keys } => write!(
                f,
                "the source prefix is empty but the destination has {destination_keys} keys; \
                 nothing deleted"
            ),
            Hold::TooManyDeletes {
                deletes,
                destination_keys,
                fraction,
            } => write!(
                f,
                "{deletes} deletes of {destination_keys} destination keys exceed max_delete_fraction \
                 {fraction}; deletes held (force_deletes applies them)"
            ),
        }
    }
}

/// The settings that decide holds and deletes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guard {
    /// The longest last contact an answer may show.
    pub max_stale: Duration,
    /// The share of the destination one pass may delete.
    pub max_delete_fraction: f64,
    /// Apply deletes [`Hold::TooManyDeletes`] would hold.
    pub force_deletes: bool,
    /// Delete at all; when false no pass deletes and none is held for it.
    pub deletes: bool,
}

impl Guard {
    /// The guard `config` asks for.
    pub fn from_config(config: &ReplicateConfig) -> Self {
        Guard {
            max_stale: config.max_stale,
            max_delete_fraction: config.max_delete_fraction,
            force_deletes: config.force_deletes,
            deletes: config.deletes,
        }
    }
}

/// What one pass writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Puts, in key order.
    pub puts: Vec<Op>,
    /// Deletes with their reasons, in key order.
    pub deletes: Vec<(Op, DeleteReason)>,
    /// Why the pass, or its deletes, are held.
    pub hold: Option<Hold>,
}

impl Plan {
    /// A plan that writes nothing.
    fn held(hold: Hold) -> Self {
        Plan {
            hold: Some(hold),
            ..Plan::default()
        }
    }

    /// Whether the plan writes no data.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    /// The plan cut into transactions: deletes first, then puts, each in key order; at most
    /// [`MAX_TXN_OPS`] operations per batch counting one for the fence's check. `status_put` goes
    /// in the last batch, so the data and the status that describes it land together; with no data
    /// to write the result is one batch holding only the status put (none without one).
    pub fn batches(&self, fence: Option<&Fence>, status_put: Option<Op>) -> Vec<Batch> {
        let room = MAX_TXN_OPS - usize::from(fence.is_some());
        let new_batch = || Batch {
            ops: Vec::with_capacity(room),
            fence: fence.cloned(),
        };
        let mut batches: Vec<Batch> = Vec::new();
        let ops = self
            .deletes
            .iter()
            .map(|(op, _)| op)
            .chain(self.puts.iter())
            .cloned()
            .chain(status_put);
        for op in ops {
            match batches.last_mut() {
                Some(batch) if batch.ops.len() < room => batch.ops.push(op),
                _ => {
                    let mut batch = new_batch();
                    batch.ops.push(op);
                    batches.push(batch);
                }
            }
        }
        batches
    }
}

/// The planner of one replicated prefix.
#[derive(Debug, Clone)]
pub struct Planner {
    scope: Arc<Scope>,
    guard: Guard,
    /// Keys already warned about for carrying a session or lock flags; each is warned about once.
    warned: BTreeSet<String>,
}

impl Planner {
    /// A planner for `scope` under `guard`.
    pub fn new(scope: Scope, guard: Guard) -> Self {
        Planner {
            scope: Arc::new(scope),
            guard,
            warned: BTreeSet::new(),
        }
    }

    /// The planner of `spec` as `config` asks.
    pub fn from_config(spec: &PrefixSpec, config: &ReplicateConfig) -> Self {
        Planner::new(Scope::from_config(spec, config), Guard::from_config(config))
    }

    /// The scope.
    pub fn scope(&self) -> &Arc<Scope> {
        &self.scope
    }

    /// The guard.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The mirror of a destination listing.
    pub fn mirror(&self, entries: impl IntoIterator<Item = Entry>) -> Mirror {
        Mirror::from_entries(self.scope.clone(), entries)
    }

    /// Plans one pass from `read` against `mirror`. `previous_index` is the source index seen
    /// before this read (0: none).
    pub fn plan(&mut self, read: &SourceRead, mirror: &Mirror, previous_index: u64) -> Plan {
        if !read.known_leader {
            return Plan::held(Hold::NoKnownLeader);
        }
        if read.last_contact > self.guard.max_stale {
            return Plan::held(Hold::LastContactTooOld {
                last_contact: read.last_contact,
                max_stale: self.guard.max_stale,
            });
        }
        if read.index < previous_index {
            return Plan::held(Hold::IndexWentBackwards {
                previous: previous_index,
                now: read.index,
            });
        }
        let (puts, mut deletes, source_empty) = match &read.content {
            ReadContent::Full(entries) => self.diff_full(entries, mirror),
            ReadContent::Delta { changed, deleted, .. } => {
                let (puts, deletes) = self.diff_delta(changed, deleted, mirror);
                (puts, deletes, false)
            }
        };
        if !self.guard.deletes {
            deletes.clear();
        }
        if source_empty && !deletes.is_empty() {
            return Plan::held(Hold::SourceEmpty {
                destination_keys: mirror.len(),
            });
        }
        let mut hold = None;
        // Written so that a NaN fraction holds rather than lets everything through.
        let within = deletes.len() as f64 <= self.guard.max_delete_fraction * mirror.len() as f64;
        if !deletes.is_empty() && !within && !self.guard.force_deletes {
            hold = Some(Hold::TooManyDeletes {
                deletes: deletes.len(),
                destination_keys: mirror.len(),
                fraction: self.guard.max_delete_fraction,
            });
            deletes.clear();
        }
        Plan { puts, deletes, hold }
    }

    /// Full read: every source key is diffed, every mirror key missing at the source is deleted.
    /// Returns the puts, the deletes, and whether the source prefix was empty.
    #[allow(clippy::type_complexity)]
    fn diff_full(&mut self, entries: &[Entry], mirror: &Mirror) -> (Vec<Op>, Vec<(Op, DeleteReason)>, bool) {
        let mut source_empty = true;
        let mut wanted: BTreeMap<String, &Entry> = BTreeMap::new();
        for entry in entries {
            if !entry.key.starts_with(self.scope.source.as_str()) {
                continue;
            }
            source_empty = false;
            if let Some(dest) = self.scope.managed_destination(&entry.key) {
                wanted.insert(dest, entry);
            }
        }
        let mut puts = Vec::new();
        for (dest, entry) in &wanted {
            if mirror.differs(dest, entry) {
                self.warn_lock(entry);
                puts.push(put(dest.clone(), entry));
            }
        }
        let deletes = mirror
            .entries
            .keys()
            .filter(|key| !wanted.contains_key(key.as_str()))
            .map(|key| (Op::Delete { key: key.clone() }, DeleteReason::AbsentAtSource))
            .collect();
        (puts, deletes, source_empty)
    }

    /// Delta read: only the keys it names are looked at, each against the mirror.
    fn diff_delta(
        &mut self,
        changed: &[Entry],
        deleted: &[crate::model::DeletedKey],
        mirror: &Mirror,
    ) -> (Vec<Op>, Vec<(Op, DeleteReason)>) {
        // A key both written and deleted in the window keeps its later state.
        fn note<'e>(
            latest: &mut BTreeMap<String, (u64, Option<&'e Entry>)>,
            dest: String,
            index: u64,
            entry: Option<&'e Entry>,
        ) {
            if latest.get(&dest).is_none_or(|(seen, _)| *seen <= index) {
                latest.insert(dest, (index, entry));
            }
        }
        let mut latest: BTreeMap<String, (u64, Option<&Entry>)> = BTreeMap::new();
        for entry in changed {
            if let Some(dest) = self.scope.managed_destination(&entry.key) {
                note(&mut latest, dest, entry.modify_index, Some(entry));
            }
        }
        for gone in deleted {
            if let Some(dest) = self.scope.managed_destination(&gone.key) {
                note(&mut latest, dest, gone.modify_index, None);
            }
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (dest, (index, entry)) in latest {
            match entry {
                Some(entry) => {
                    if mirror.differs(&dest, entry) {
                        self.warn_lock(entry);
                        puts.push(put(dest, entry));
                    }
                }
                None => {
                    if mirror.get(&dest).is_some() {
                        deletes.push((Op::Delete { key: dest }, DeleteReason::DeletedAtSource { index }));
                    }
                }
            }
        }
        (puts, deletes)
    }

    /// Sessions are local to their datacenter and locks do not travel: the value is copied, the
    /// session is not, and the operator is told once per key.
    fn warn_lock(&mut self, entry: &Entry) {
        let flagged = matches!(entry.flags, CONSUL_LOCK_FLAGS | CONSUL_SEMAPHORE_FLAGS);
        if (entry.session.is_some() || flagged) && !self.warned.contains(&entry.key) {
            tracing::warn!(
                key = %entry.key,
                session = entry.session.as_deref().unwrap_or(""),
                flags = entry.flags,
                "source key is a lock (held by a session or marked with lock flags); its value and \
                 flags are copied, its session and lock index are not"
            );
            self.warned.insert(entry.key.clone());
        }
    }
}

fn put(key: String, entry: &Entry) -> Op {
    Op::Put {
        key,
        value: entry.value.clone(),
        flags: entry.flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeletedKey;

    fn spec(s: &str) -> PrefixSpec {
        s.parse().unwrap()
    }

    fn entry(key: &str, value: &str) -> Entry {
        entry_at(key, value, 1)
    }

    fn entry_at(key: &str, value: &str, index: u64) -> Entry {
        Entry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            create_index: index,
            modify_index: index,
            lock_index: 0,
            session: None,
        }
    }

    fn full(index: u64, entries: Vec<Entry>) -> SourceRead {
        SourceRead {
            index,
            known_leader: true,
            last_contact: Duration::ZERO,
            content: ReadContent::Full(entries),
        }
    }

    fn delta(index: u64, since: u64, changed: Vec<Entry>, deleted: &[(&str, u64)]) -> SourceRead {
        SourceRead {
            index,
            known_leader: true,
            last_contact: Duration::ZERO,
            content: ReadContent::Delta {
                since,
                changed,
                deleted: deleted
                    .iter()
                    .map(|(k, i)| DeletedKey {
                        key: (*k).into(),
                        modify_index: *i,
                    })
                    .collect(),
            },
        }
    }

    fn guard() -> Guard {
        Guard {
            max_stale: Duration::from_secs(2),
            max_delete_fraction: 0.5,
            force_deletes: false,
            deletes: true,
        }
    }

    fn planner(s: &str) -> Planner {
        Planner::new(Scope::new(&spec(s), &[], &[], "status"), guard())
    }

    fn keys(ops: &[Op]) -> Vec<&str> {
        ops.iter().map(Op::key).collect()
    }

    fn delete_keys(plan: &Plan) -> Vec<&str> {
        plan.deletes.iter().map(|(op, _)| op.key()).collect()
    }

    #[test]
    fn keys_map_by_raw_prefix_and_back_by_the_leading_prefix_only() {
        let scope = Scope::new(&spec("global@dc1:backup"), &[], &[], "s");
        assert_eq!(
            scope.to_destination("globalization").as_deref(),
            Some("backupization")
        );
        assert_eq!(scope.to_destination("other"), None);
        let scope = Scope::new(&spec("a/@dc1:a/b/"), &[], &[], "s");
        // consul-replicate's Replace(all) would turn this into `a/a/`-something.
        assert_eq!(scope.to_source("a/b/x/a/b/").as_deref(), Some("a/x/a/b/"));
        assert_eq!(scope.to_destination("a/x/a/b/").as_deref(), Some("a/b/x/a/b/"));
        assert_eq!(scope.to_source("b/x"), None);
    }

    #[test]
    fn full_pass_puts_only_differences_and_repairs_the_destination() {
        let mut p = planner("src/@dc1:dst/");
        let mirror = p.mirror(vec![
            entry("dst/same", "1"),
            entry("dst/changed", "old"),
            Entry {
                flags: 9,
                ..entry("dst/flags", "v")
            },
            entry("dst/extra", "x"),
        ]);
        let read = full(
            10,
            vec![
                entry("src/same", "1"),
                entry("src/changed", "new"),
                entry("src/flags", "v"),
                entry("src/missing", "m"),
            ],
        );
        let plan = p.plan(&read, &mirror, 0);
        assert_eq!(plan.hold, None);
        assert_eq!(keys(&plan.puts), vec!["dst/changed", "dst/flags", "dst/missing"]);
        assert_eq!(
            plan.deletes,
            vec![(
                Op::Delete {
                    key: "dst/extra".into()
                },
                DeleteReason::AbsentAtSource
            )]
        );
    }

    #[test]
    fn excluded_and_protected_keys_are_neither_put_nor_deleted() {
        let scope = Scope::new(
            &spec("app@dc1"),
            &["app/secret".to_owned()],
            &["app/lock".to_owned()],
            "app/status",
        );
        let mut p = Planner::new(scope, guard());
        let mirror = p.mirror(vec![
            entry("app/a", "1"),
            entry("app/b", "1"),
            entry("app/c", "1"),
            entry("app/secret/x", "local"),
            entry("app/lock", "me"),
            entry("app/status/dc1/00-00", "{}"),
        ]);
        assert_eq!(mirror.len(), 3, "only managed keys are mirrored");
        let read = full(
            5,
            vec![
                entry("app/a", "1"),
                entry("app/b", "1"),
                entry("app/lock", "theirs"),
                entry("app/secret/x", "remote"),
                entry("app/secret2", "s"),
                entry("app/status/dc1/00-00", "{}x"),
            ],
        );
        let plan = p.plan(&read, &mirror, 0);
        assert_eq!(keys(&plan.puts), Vec::<&str>::new());
        assert_eq!(delete_keys(&plan), vec!["app/c"]);
        assert_eq!(plan.hold, None);
    }

    #[test]
    fn sessions_and_lock_indexes_are_not_copied() {
        let mut p = planner("a@dc1");
        let mut locked = entry("a/lock", "v");
        locked.session = Some("s1".into());
        locked.lock_index = 3;
        locked.flags = CONSUL_LOCK_FLAGS;
        let plan = p.plan(&full(3, vec![locked]), &p.mirror(vec![]), 0);
        assert_eq!(
            plan.puts,
            vec![Op::Put {
                key: "a/lock".into(),
                value: b"v".to_vec(),
                flags: CONSUL_LOCK_FLAGS
            }]
        );
        assert!(p.warned.contains("a/lock"));
    }

    #[test]
    fn delta_puts_changes_and_deletes_only_what_the_mirror_has() {
        let mut p = planner("a@dc1:b");
        let mirror = p.mirror(vec![
            entry("b/1", "1"),
            entry("b/2", "2"),
            entry("b/3", "3"),
            entry("b/4", "4"),
        ]);
        let read = delta(
            20,
            10,
            vec![entry_at("a/1", "1", 11), entry_at("a/2", "two", 12)],
            &[("a/3", 13), ("a/never", 14)],
        );
        let plan = p.plan(&read, &mirror, 10);
        assert_eq!(keys(&plan.puts), vec!["b/2"]);
        assert_eq!(
            plan.deletes,
            vec![(
                Op::Delete { key: "b/3".into() },
                DeleteReason::DeletedAtSource { index: 13 }
            )]
        );
    }

    #[test]
    fn delta_keeps_the_later_of_a_write_and_a_delete() {
        let mut p = planner("a@dc1");
        let mirror = p.mirror(vec![
            entry("a/x", "old"),
            entry("a/y", "y"),
            entry("a/z", "z"),
            entry("a/w", "w"),
        ]);
        let read = delta(
            30,
            10,
            vec![entry_at("a/x", "new", 12), entry_at("a/y", "again", 15)],
            &[("a/x", 13), ("a/y", 14)],
        );
        let plan = p.plan(&read, &mirror, 10);
        assert_eq!(keys(&plan.puts), vec!["a/y"]);
        assert_eq!(delete_keys(&plan), vec!["a/x"]);
    }

    #[test]
    fn a_delta_pass_touches_only_the_delta_keys() {
        // Behaviour standing in for cost: the mirror disagrees with the source on every key, yet a
        // delta naming two keys plans exactly those two, so it never walked the prefix. The full read
        // of the same source repairs everything.
        let mut p = planner("k@dc1");
        let mirror = p.mirror((0..10_000).map(|i| entry(&format!("k/{i:05}"), "tampered")));
        let read = delta(2, 1, vec![entry_at("k/00042", "v", 2)], &[("k/09999", 2)]);
        let plan = p.plan(&read, &mirror, 1);
        assert_eq!(keys(&plan.puts), vec!["k/00042"]);
        assert_eq!(delete_keys(&plan), vec!["k/09999"]);

        let source: Vec<_> = (0..10_000).map(|i| entry(&format!("k/{i:05}"), "v")).collect();
        let plan = p.plan(&full(3, source), &mirror, 2);
        assert_eq!(plan.puts.len(), 10_000);
    }

    #[test]
    fn no_leader_stale_and_rewound_sources_hold_the_whole_pass() {
        let mut p = planner("a@dc1");
        let mirror = p.mirror(vec![entry("a/gone", "1")]);
        let mut read = full(10, vec![entry("a/new", "1")]);
        read.known_leader = false;
        assert_eq!(p.plan(&read, &mirror, 0), Plan::held(Hold::NoKnownLeader));

        let mut read = full(10, vec![entry("a/new", "1")]);
        read.last_contact = Duration::from_secs(3);
        let plan = p.plan(&read, &mirror, 0);
        assert!(plan.is_empty());
        assert_eq!(plan.hold.as_ref().map(Hold::kind), Some("LastContactTooOld"));

        let read = full(10, vec![entry("a/new", "1")]);
        let plan = p.plan(&read, &mirror, 11);
        assert!(plan.is_empty());
        assert_eq!(
            plan.hold,
            Some(Hold::IndexWentBackwards {
                previous: 11,
                now: 10
            })
        );
        assert!(plan.hold.as_ref().is_some_and(Hold::skips_pass));

        let read = full(11, vec![entry("a/gone", "1"), entry("a/new", "1")]);
        let plan = p.plan(&read, &mirror, 11);
        assert_eq!((keys(&plan.puts), plan.hold), (vec!["a/new"], None));
    }

    #[test]
    fn an_empty_source_deletes_nothing_even_when_forced() {
        let mut p = Planner::new(
            Scope::new(&spec("a@dc1"), &[], &[], "s"),
            Guard {
                force_deletes: true,
                ..guard()
            },
        );
        let mirror = p.mirror(vec![entry("a/1", "1"), entry("a/2", "2")]);
        let plan = p.plan(&full(9, vec![]), &mirror, 0);
        assert!(plan.is_empty());
        assert_eq!(plan.hold, Some(Hold::SourceEmpty { destination_keys: 2 }));
        // An empty source over an empty destination is just data.
        assert_eq!(p.plan(&full(9, vec![]), &p.mirror(vec![]), 0), Plan::default());
        // A source holding only excluded keys is not empty: the fraction guard decides instead.
        let mut p = Planner::new(Scope::new(&spec("a@dc1"), &["a/x".into()], &[], "s"), guard());
        let plan = p.plan(&full(9, vec![entry("a/x", "1")]), &mirror, 0);
        assert_eq!(plan.hold.as_ref().map(Hold::kind), Some("TooManyDeletes"));
    }

    #[test]
    fn too_many_deletes_hold_the_deletes_but_not_the_puts() {
        let mut p = planner("a@dc1");
        let mirror = p.mirror((0..10).map(|i| entry(&format!("a/{i}"), "v")));
        // 5 of 10 is within 0.5.
        let five: Vec<_> = (0..5).map(|i| entry(&format!("a/{i}"), "v")).collect();
        let plan = p.plan(&full(2, five), &mirror, 0);
        assert_eq!((plan.deletes.len(), plan.hold.clone()), (5, None));
        // 6 of 10 is not.
        let mut four: Vec<_> = (0..4).map(|i| entry(&format!("a/{i}"), "v")).collect();
        four.push(entry("a/new", "n"));
        let plan = p.plan(&full(2, four.clone()), &mirror, 0);
        assert_eq!(keys(&plan.puts), vec!["a/new"]);
        assert!(plan.deletes.is_empty());
        assert_eq!(
            plan.hold,
            Some(Hold::TooManyDeletes {
                deletes: 6,
                destination_keys: 10,
                fraction: 0.5
            })
        );
        assert!(!plan.hold.as_ref().is_some_and(Hold::skips_pass));

        let mut forced = Planner::new(
            Scope::new(&spec("a@dc1"), &[], &[], "s"),
            Guard {
                force_deletes: true,
                ..guard()
            },
        );
        let plan = forced.plan(&full(2, four.clone()), &mirror, 0);
        assert_eq!((plan.deletes.len(), plan.hold), (6, None));

        let mut keep = Planner::new(
            Scope::new(&spec("a@dc1"), &[], &[], "s"),
            Guard {
                deletes: false,
                ..guard()
            },
        );
        let plan = keep.plan(&full(2, four), &mirror, 0);
        assert_eq!((plan.puts.len(), plan.deletes.len(), plan.hold), (1, 0, None));

        // One key deleted from a one-key destination is the whole destination: held, no exemption.
        let single = p.mirror(vec![entry("a/only", "v")]);
        let plan = p.plan(&delta(3, 2, vec![], &[("a/only", 3)]), &single, 2);
        assert_eq!(plan.hold.as_ref().map(Hold::kind), Some("TooManyDeletes"));

        // A NaN fraction holds rather than allows.
        let mut nan = Planner::new(
            Scope::new(&spec("a@dc1"), &[], &[], "s"),
            Guard {
                max_delete_fraction: f64::NAN,
                ..guard()
            },
        );
        let plan = nan.plan(&delta(3, 2, vec![], &[("a/1", 3)]), &mirror, 2);
        assert_eq!(plan.hold.as_ref().map(Hold::kind), Some("TooManyDeletes"));
    }

    #[test]
    fn batches_put_deletes_first_fit_the_fence_and_end_with_the_status() {
        let mut p = planner("a@dc1");
        let mirror = p.mirror((0..40).map(|i| entry(&format!("a/old{i:02}"), "v")));
        let mut source: Vec<_> = (0..30).map(|i| entry(&format!("a/old{i:02}"), "v")).collect();
        source.extend((0..100).map(|i| entry(&format!("a/new{i:03}"), "v")));
        let plan = p.plan(&full(3, source), &mirror, 0);
        assert_eq!((plan.puts.len(), plan.deletes.len()), (100, 10));
        let fence = Fence {
            key: "lock".into(),
            session: "s".into(),
        };
        let status = Op::Put {
            key: "status".into(),
            value: vec![],
            flags: 0,
        };
        let batches = plan.batches(Some(&fence), Some(status.clone()));
        assert_eq!(batches.len(), 2);
        assert!(
            batches
                .iter()
                .all(|b| b.ops.len() < MAX_TXN_OPS && b.fence.as_ref() == Some(&fence))
        );
        let all: Vec<&Op> = batches.iter().flat_map(|b| &b.ops).collect();
        assert!(all[..10].iter().all(|op| matches!(op, Op::Delete { .. })));
        assert!(all[10..110].iter().all(|op| matches!(op, Op::Put { .. })));
        assert_eq!(all.last().copied(), Some(&status));
        let put_keys: Vec<&str> = all[10..110].iter().map(|op| op.key()).collect();
        assert!(put_keys.windows(2).all(|w| w[0] < w[1]));

        // Without a fence a batch holds 64; a status that does not fit gets its own batch.
        let exact = Plan {
            puts: (0..64)
                .map(|i| Op::Put {
                    key: format!("k{i:02}"),
                    value: vec![],
                    flags: 0,
                })
                .collect(),
            ..Plan::default()
        };
        let batches = exact.batches(None, Some(status.clone()));
        assert_eq!(
            batches.iter().map(|b| b.ops.len()).collect::<Vec<_>>(),
            vec![64, 1]
        );

        let nothing = Plan::default();
        assert_eq!(
            nothing.batches(None, Some(status.clone())),
            vec![Batch {
                ops: vec![status],
                fence: None
            }]
        );
        assert!(nothing.batches(None, None).is_empty());
    }

    #[test]
    fn mirror_follows_applied_batches_within_its_scope() {
        let p = Planner::new(Scope::new(&spec("a@dc1"), &[], &[], "a/status"), guard());
        let mut mirror = p.mirror(vec![entry("a/1", "1")]);
        mirror.apply(&Batch {
            ops: vec![
                Op::Delete { key: "a/1".into() },
                Op::Put {
                    key: "a/2".into(),
                    value: b"2".to_vec(),
                    flags: 4,
                },
                Op::Put {
                    key: "a/status/dc1/x".into(),
                    value: b"{}".to_vec(),
                    flags: 0,
                },
                Op::Put {
                    key: "elsewhere".into(),
                    value: vec![],
                    flags: 0,
                },
            ],
            fence: None,
        });
        assert_eq!(
            mirror.iter().collect::<Vec<_>>(),
            vec![("a/2", b"2".as_slice(), 4)]
        );
    }
}
