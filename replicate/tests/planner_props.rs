//! Properties of the planner: applying a plan's batches makes the destination a mapped copy of the
//! source (minus excludes, protected keys untouched), batches fit a transaction, and a delta pass
//! reaches the same destination as a full pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tribune_replicate::{
    Batch, Fence, Guard, MAX_TXN_OPS, MemorySource, Op, Planner, ReadContent, ReadQuery, Scope, Source,
    SourceRead,
};

type Store = BTreeMap<String, (Vec<u8>, u64)>;

const STATUS_KEY: &str = "b/st/dc1/status";

fn scope(excludes: &[String]) -> Scope {
    // `a` → `b/`: a raw prefix, so `ab/x` maps to `b/b/x`; the lock and the status folder live
    // under the destination.
    let spec = "a@dc1:b/".parse().unwrap();
    Scope::new(&spec, excludes, &["b/lock".to_owned()], "b/st")
}

fn guard(force_deletes: bool) -> Guard {
    Guard {
        max_stale: Duration::from_secs(2),
        max_delete_fraction: 0.5,
        force_deletes,
        deletes: true,
    }
}

fn entries(store: &Store) -> Vec<tribune_replicate::Entry> {
    store
        .iter()
        .map(|(k, (v, f))| tribune_replicate::Entry {
            key: k.clone(),
            value: v.clone(),
            flags: *f,
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            session: None,
        })
        .collect()
}

fn full(index: u64, source: &Store) -> SourceRead {
    SourceRead {
        index,
        known_leader: true,
        last_contact: Duration::ZERO,
        content: ReadContent::Full(entries(source)),
    }
}

fn apply(dest: &mut Store, batches: &[Batch]) {
    for batch in batches {
        assert!(
            batch.ops.len() + usize::from(batch.fence.is_some()) <= MAX_TXN_OPS,
            "a batch of {} ops",
            batch.ops.len()
        );
        for op in &batch.ops {
            match op {
                Op::Put { key, value, flags } => {
                    dest.insert(key.clone(), (value.clone(), *flags));
                }
                Op::Delete { key } => {
                    dest.remove(key);
                }
            }
        }
    }
}

/// What the destination's managed keys must be: the source, mapped, minus excluded and protected.
fn expected(scope: &Scope, source: &Store) -> Store {
    source
        .iter()
        .filter_map(|(k, v)| scope.managed_destination(k).map(|d| (d, v.clone())))
        .collect()
}

fn managed(scope: &Scope, dest: &Store) -> Store {
    dest.iter()
        .filter(|(k, _)| scope.manages(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn unmanaged(scope: &Scope, dest: &Store) -> Store {
    dest.iter()
        .filter(|(k, _)| !scope.manages(k) && k.as_str() != STATUS_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn value() -> impl Strategy<Value = (Vec<u8>, u64)> {
    (prop::collection::vec(0u8..3, 0..3), 0u64..2)
}

fn source_store() -> impl Strategy<Value = Store> {
    prop::collection::btree_map("(a|ab|b|c)[/xy]{0,3}", value(), 0..120)
}

fn dest_store() -> impl Strategy<Value = Store> {
    prop::collection::btree_map("(b/|b/b/|b/st/|b/lock|c)[/xy]{0,3}", value(), 0..120)
}

fn excludes() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("a[/xy]{0,2}", 0..3)
}

fn status_put() -> Op {
    Op::Put {
        key: STATUS_KEY.into(),
        value: b"{}".to_vec(),
        flags: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applied_batches_make_the_destination_a_mapped_copy(
        source in source_store(),
        dest in dest_store(),
        excludes in excludes(),
        force in any::<bool>(),
        fenced in any::<bool>(),
    ) {
        let scope = scope(&excludes);
        let mut planner = Planner::new(scope.clone(), guard(force));
        let mirror = planner.mirror(entries(&dest));
        let plan = planner.plan(&full(10, &source), &mirror, 0);
        let fence = Fence { key: "b/lock".into(), session: "s".into() };
        let batches = plan.batches(fenced.then_some(&fence), Some(status_put()));
        prop_assert!(!batches.is_empty());
        prop_assert_eq!(batches.last().and_then(|b| b.ops.last()), Some(&status_put()));
        let mut after = dest.clone();
        apply(&mut after, &batches);
        let mut mirror = mirror;
        for batch in &batches {
            mirror.apply(batch);
        }

        // Keys the replication does not own never change.
        prop_assert_eq!(unmanaged(&scope, &after), unmanaged(&scope, &dest));
        let want = expected(&scope, &source);
        match plan.hold.as_ref().map(|h| h.kind()) {
            None => {
                prop_assert_eq!(managed(&scope, &after), want.clone());
                // The mirror followed the batches.
                let mirrored: Store = mirror.iter().map(|(k, v, f)| (k.to_owned(), (v.to_vec(), f))).collect();
                prop_assert_eq!(mirrored, want);
            }
            Some("TooManyDeletes") => {
                prop_assert!(!force);
                // Puts went ahead, nothing was deleted.
                for (k, v) in &want {
                    prop_assert_eq!(after.get(k), Some(v));
                }
                prop_assert!(dest.keys().all(|k| after.contains_key(k)));
            }
            Some("SourceEmpty") => {
                prop_assert!(source.keys().all(|k| !k.starts_with('a')));
                prop_assert!(plan.is_empty());
            }
            Some(other) => prop_assert!(false, "unexpected hold {}", other),
        }
    }

    #[test]
    fn a_delta_pass_reaches_what_a_full_pass_does(
        before in source_store(),
        writes in prop::collection::vec(("(a|ab|b)[/xy]{0,3}", prop::option::of(value())), 0..60),
        dest_extra in dest_store(),
        excludes in excludes(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let scope = scope(&excludes);
        let mut planner = Planner::new(scope.clone(), guard(true));

        // The source at `since`, and a destination that matches it (plus keys it does not own).
        let source = MemorySource::new();
        for (k, (v, f)) in &before {
            source.put_with(k, v.clone(), *f, None);
        }
        let since = source.index();
        let mut dest: Store = dest_extra.into_iter().filter(|(k, _)| !scope.manages(k)).collect();
        dest.extend(expected(&scope, &before));

        for (key, change) in &writes {
            match change {
                Some((v, f)) => { source.put_with(key, v.clone(), *f, None); }
                None => { source.delete(key); }
            }
        }
        let query = |changes_since| ReadQuery {
            prefix: "a".into(),
            datacenter: "dc1".into(),
            index: 0,
            wait: Duration::ZERO,
            stale: false,
            changes_since,
        };
        let delta = runtime.block_on(source.read(&query(Some(since)))).unwrap();
        prop_assert!(
            matches!(delta.content, ReadContent::Delta { .. }),
            "the memory source answers deltas"
        );
        let full = runtime.block_on(source.read(&query(None))).unwrap();

        let full_plan = planner.plan(&full, &planner.mirror(entries(&dest)), since);
        // An emptied source is held on a full read, by design; a delta has no such view.
        prop_assume!(full_plan.hold.is_none());
        let delta_plan = planner.plan(&delta, &planner.mirror(entries(&dest)), since);
        prop_assert_eq!(&delta_plan.hold, &None);

        let mut by_full = dest.clone();
        apply(&mut by_full, &full_plan.batches(None, None));
        let mut by_delta = dest.clone();
        apply(&mut by_delta, &delta_plan.batches(None, None));
        prop_assert_eq!(&by_delta, &by_full);
        let now: Store = source
            .entries()
            .into_iter()
            .map(|e| (e.key, (e.value, e.flags)))
            .collect();
        prop_assert_eq!(managed(&scope, &by_full), expected(&scope, &now));
        // The delta wrote nothing the full pass did not: it diffs too.
        prop_assert!(delta_plan.puts.len() <= full_plan.puts.len());
    }
}
