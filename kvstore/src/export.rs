//! Walking the state as a stream of [`StateRecord`]s (for snapshots, staged restores and tests),
//! and writing it as a tribune-snapshot archive, now or later from a frozen point in time.

use std::io::Write;
use std::marker::PhantomData;

use tribune_snapshot::{Inspection, SnapshotError, SnapshotMeta, SnapshotWriter};

use crate::backend::{Backend, FrozenView, ReadView, Table};
use crate::catalog::{HealthCheck, Node, ServiceInstance};
use crate::error::ReadError;
use crate::model::{
    AclAuthMethod, AclBindingRule, AclBootstrapState, AclPolicy, AclRole, AclToken, KvEntry, Session,
    StateRecord, Tombstone,
};
use crate::snapshot_io::{ExportError, ExportOptions};
use crate::store::Store;
use crate::tables;

/// Writes the view's live state as an archive: metadata (the view's last applied index, the
/// datacenter, the caller's options), then every record in [`for_each_record`]'s order. Memory is
/// O(one record) plus the writer's buffers.
pub(crate) fn write_archive<V, W>(
    view: &V,
    datacenter: &str,
    options: &ExportOptions,
    out: W,
) -> Result<(W, Inspection), ExportError>
where
    V: ReadView + ?Sized,
    W: Write,
{
    let meta = SnapshotMeta {
        index: tables::get_u64(view, Table::Meta, tables::META_APPLIED_INDEX)?.unwrap_or(0),
        term: options.term,
        datacenter: datacenter.to_owned(),
        created_at_unix_ms: options.created_at_unix_ms,
        producer: concat!("tribune-kvstore ", env!("CARGO_PKG_VERSION")).to_owned(),
        labels: options.labels.clone(),
    };
    let mut writer = SnapshotWriter::new(out, &meta)?;
    for_each_record(view, |record| {
        record.write_to(&mut writer).map_err(ExportError::from)
    })?;
    Ok(writer.finish()?)
}

/// The store at one point in time, fixed by [`Store::snapshot`] and written out later, as often
/// as the caller likes to wait, by [`StoreSnapshot::write_to`]. Holding it costs no copy of the
/// state: a RocksDB snapshot (kept by a thread that owns it), or shared copy-on-write maps.
pub struct StoreSnapshot<B: Backend> {
    frozen: B::Frozen,
    datacenter: String,
    options: ExportOptions,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend> std::fmt::Debug for StoreSnapshot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSnapshot")
            .field("datacenter", &self.datacenter)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Store<B> {
    /// Fixes the current state for an archive written later by [`StoreSnapshot::write_to`].
    ///
    /// Cheap — no record is read or copied — so a caller can take it between two applies and let
    /// applies continue while the archive is written. The archive will hold exactly the state as of
    /// this call, with `meta.index` its last applied index, whatever is applied meanwhile.
    pub fn snapshot(&self, options: ExportOptions) -> Result<StoreSnapshot<B>, ReadError> {
        Ok(StoreSnapshot {
            frozen: self.backend.freeze()?,
            datacenter: self.datacenter.clone(),
            options,
            backend: PhantomData,
        })
    }
}

impl<B: Backend> StoreSnapshot<B> {
    /// Streams the archive (the same bytes [`Store::export`] would have written at the point the
    /// snapshot was taken) into `out`, record by record, then flushes `out` and returns it with the
    /// archive's figures. Blocking; memory stays O(one record + a few 64 KiB buffers).
    pub fn write_to<W: Write>(self, mut out: W) -> Result<(W, Inspection), ExportError> {
        let StoreSnapshot {
            frozen,
            datacenter,
            options,
            ..
        } = self;
        let inspection = frozen
            .stream(&mut out, move |view, pipe| {
                write_archive(view, &datacenter, &options, pipe).map(|(_, inspection)| inspection)
            })
            .map_err(SnapshotError::from)??;
        out.flush().map_err(SnapshotError::from)?;
        Ok((out, inspection))
    }
}

/// Calls `emit` with every record of the view's live state, table by table, in key order:
/// table indexes and ACL bootstrap state, sessions, policies, roles, auth methods, binding rules,
/// tokens, KV entries, tombstones, catalog nodes, instances, checks, and the service-name and node
/// indexes (ACL records before the records that link to them, nodes before what is on them).
/// Stops at the first error `emit` returns.
pub(crate) fn for_each_record<V, E>(
    view: &V,
    mut emit: impl FnMut(StateRecord) -> Result<(), E>,
) -> Result<(), E>
where
    V: ReadView + ?Sized,
    E: From<ReadError>,
{
    let mut state_rows = Vec::new();
    view.scan_prefix(Table::State, b"", &mut |key, value| {
        state_rows.push((key.to_vec(), value.to_vec()));
        true
    })
    .map_err(ReadError::from)?;
    for (key, value) in state_rows {
        if let Some(table) = tables::table_from_index_key(&key) {
            emit(StateRecord::TableIndex {
                table,
                index: tables::decode_u64(Table::State, &key, &value)?,
            })?;
        } else if key == tables::STATE_ACL_BOOTSTRAP {
            emit(StateRecord::AclBootstrap(tables::decode::<AclBootstrapState>(
                Table::State,
                &key,
                &value,
            )?))?;
        }
    }
    emit_table::<Session, _, _>(view, Table::Sessions, StateRecord::Session, &mut emit)?;
    emit_table::<AclPolicy, _, _>(view, Table::AclPolicies, StateRecord::AclPolicy, &mut emit)?;
    emit_table::<AclRole, _, _>(view, Table::AclRoles, StateRecord::AclRole, &mut emit)?;
    emit_table::<AclAuthMethod, _, _>(view, Table::AclAuthMethods, StateRecord::AclAuthMethod, &mut emit)?;
    emit_table::<AclBindingRule, _, _>(
        view,
        Table::AclBindingRules,
        StateRecord::AclBindingRule,
        &mut emit,
    )?;
    emit_table::<AclToken, _, _>(view, Table::AclTokens, StateRecord::AclToken, &mut emit)?;
    emit_table::<KvEntry, _, _>(view, Table::Kv, StateRecord::Kv, &mut emit)?;
    emit_table::<Tombstone, _, _>(view, Table::Tombstones, StateRecord::Tombstone, &mut emit)?;
    emit_table::<Node, _, _>(view, Table::CatalogNodes, StateRecord::Node, &mut emit)?;
    emit_table::<ServiceInstance, _, _>(view, Table::CatalogServices, StateRecord::Service, &mut emit)?;
    emit_table::<HealthCheck, _, _>(
        view,
        Table::CatalogChecks,
        |check| StateRecord::Check(Box::new(check)),
        &mut emit,
    )?;
    crate::catalog::for_each_catalog_index(view, &mut emit)
}

fn emit_table<T, V, E>(
    view: &V,
    table: Table,
    wrap: fn(T) -> StateRecord,
    emit: &mut impl FnMut(StateRecord) -> Result<(), E>,
) -> Result<(), E>
where
    T: crate::codec::StoredRecord,
    V: ReadView + ?Sized,
    E: From<ReadError>,
{
    let mut failure = None;
    tables::scan(view, table, b"", |value: T| match emit(wrap(value)) {
        Ok(()) => true,
        Err(err) => {
            failure = Some(err);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

pub(crate) fn collect_records<V: ReadView + ?Sized>(view: &V) -> Result<Vec<StateRecord>, ReadError> {
    let mut out = Vec::new();
    for_each_record(view, |record| {
        out.push(record);
        Ok::<(), ReadError>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    use super::*;
    use crate::command::Command;
    use crate::store::StoreConfig;

    const WAIT: Duration = Duration::from_secs(60);

    fn set(key: &str, value: &[u8]) -> Command {
        Command::KvSet {
            key: key.into(),
            value: value.to_vec(),
            flags: 0,
        }
    }

    /// Collects what it is given; its first write reports that it started, then waits for a release,
    /// so the snapshot is stopped part-way through.
    struct GateWriter {
        bytes: Vec<u8>,
        largest_write: usize,
        started: Option<Sender<()>>,
        release: Receiver<()>,
    }

    impl Write for GateWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Some(started) = self.started.take() {
                started.send(()).unwrap();
                self.release.recv_timeout(WAIT).unwrap();
            }
            self.largest_write = self.largest_write.max(bytes.len());
            self.bytes.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A snapshot taken at index 2,000 is written while later commands overwrite, delete and add
    /// keys; the archive is exactly the state at 2,000, and it arrives in pieces, not in one buffer.
    fn streams_the_state_as_of_the_snapshot<B: Backend>(store: &Store<B>) {
        let value = [b'x'; 300];
        for i in 1..=2_000u64 {
            store.apply(i, &set(&format!("k/{i:05}"), &value)).unwrap();
        }
        let before = store.dump().unwrap();
        let options = ExportOptions {
            created_at_unix_ms: 7,
            ..ExportOptions::default()
        };
        let (expected, _) = store.export(Vec::new(), &options).unwrap();
        let snapshot = store.snapshot(options).unwrap();

        let (started_tx, started) = channel();
        let (release, release_rx) = channel();
        let writer = std::thread::spawn(move || {
            let out = GateWriter {
                bytes: Vec::new(),
                largest_write: 0,
                started: Some(started_tx),
                release: release_rx,
            };
            snapshot.write_to(out).unwrap()
        });
        started.recv_timeout(WAIT).unwrap();
        // The writer is stopped inside its first write: applies go on meanwhile.
        store.apply(2_001, &set("k/00001", b"changed")).unwrap();
        store
            .apply(
                2_002,
                &Command::KvDelete {
                    key: "k/00002".into(),
                },
            )
            .unwrap();
        store.apply(2_003, &set("after", b"new")).unwrap();
        release.send(()).unwrap();
        let (out, inspection) = writer.join().unwrap();

        assert_eq!(
            out.bytes, expected,
            "the archive is the one an export at 2,000 writes"
        );
        assert_eq!(inspection.meta.index, 2_000);
        assert!(
            out.largest_write < out.bytes.len() / 4,
            "written in one piece of {} bytes: the archive was built whole",
            out.largest_write
        );
        let copy = Store::in_memory(StoreConfig::new("dc1")).unwrap();
        let report = copy.import(out.bytes.as_slice()).unwrap();
        assert_eq!(report.meta.index, 2_000);
        assert_eq!(copy.dump().unwrap(), before);
        assert!(copy.get("after").unwrap().value.is_none());
        assert_eq!(copy.get("k/00001").unwrap().value.unwrap().value, value);
        assert_eq!(store.get("k/00001").unwrap().value.unwrap().value, b"changed");
    }

    /// A writer that fails after a few bytes.
    #[derive(Debug)]
    struct Broken(usize);

    impl Write for Broken {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.0 < bytes.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= bytes.len();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn a_failing_writer_is_an_error_and_the_store_goes_on<B: Backend>(store: &Store<B>) {
        for i in 1..=500u64 {
            store.apply(i, &set(&format!("k/{i:05}"), &[b'y'; 300])).unwrap();
        }
        let snapshot = store.snapshot(ExportOptions::default()).unwrap();
        let err = snapshot.write_to(Broken(100_000)).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        store.apply(501, &set("later", b"1")).unwrap();
        // An unused snapshot is simply dropped.
        drop(store.snapshot(ExportOptions::default()).unwrap());
        let (bytes, inspection) = store
            .snapshot(ExportOptions::default())
            .unwrap()
            .write_to(Vec::new())
            .unwrap();
        assert_eq!(inspection.meta.index, 501);
        assert_eq!(bytes.len() as u64, inspection.total_bytes);
    }

    #[test]
    fn memory_streams_the_state_as_of_the_snapshot() {
        streams_the_state_as_of_the_snapshot(&Store::in_memory(StoreConfig::new("dc1")).unwrap());
    }

    #[test]
    fn memory_a_failing_writer_is_an_error_and_the_store_goes_on() {
        a_failing_writer_is_an_error_and_the_store_goes_on(
            &Store::in_memory(StoreConfig::new("dc1")).unwrap(),
        );
    }

    #[cfg(feature = "rocksdb")]
    mod rocks {
        use super::*;

        #[test]
        fn rocksdb_streams_the_state_as_of_the_snapshot() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
            streams_the_state_as_of_the_snapshot(&store);
        }

        #[test]
        fn rocksdb_a_failing_writer_is_an_error_and_the_store_goes_on() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
            a_failing_writer_is_an_error_and_the_store_goes_on(&store);
        }

        /// A snapshot holds the database open only while it lives: once it is dropped (unused, or
        /// after a failed write), the store can be closed and the directory opened again.
        #[test]
        fn rocksdb_a_dropped_snapshot_releases_the_database() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
            store.apply(1, &set("a", b"1")).unwrap();
            let unused = store.snapshot(ExportOptions::default()).unwrap();
            let failed = store.snapshot(ExportOptions::default()).unwrap();
            assert!(failed.write_to(Broken(10)).is_err());
            drop(unused);
            drop(store);
            let reopened = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
            assert_eq!(reopened.last_applied(), 1);
        }

        /// A restore swaps the live slot while a snapshot taken before it is written: the archive
        /// still holds the state from before the restore.
        #[test]
        fn rocksdb_a_restore_after_the_snapshot_does_not_reach_it() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_rocksdb(dir.path(), StoreConfig::new("dc1")).unwrap();
            for i in 1..=50u64 {
                store.apply(i, &set(&format!("old/{i}"), b"o")).unwrap();
            }
            let before = store.dump().unwrap();
            let snapshot = store.snapshot(ExportOptions::default()).unwrap();
            let other = Store::in_memory(StoreConfig::new("dc1")).unwrap();
            other.apply(80, &set("new", b"n")).unwrap();
            let (archive, _) = other.export(Vec::new(), &ExportOptions::default()).unwrap();
            store.import(archive.as_slice()).unwrap();
            assert!(store.get("old/1").unwrap().value.is_none());

            let (bytes, inspection) = snapshot.write_to(Vec::new()).unwrap();
            assert_eq!(inspection.meta.index, 50);
            let copy = Store::in_memory(StoreConfig::new("dc1")).unwrap();
            copy.import(bytes.as_slice()).unwrap();
            assert_eq!(copy.dump().unwrap(), before);
        }
    }
}
