//! The in-memory backend: sorted maps behind a read-write lock.
//!
//! Each table is an `Arc`'d map, copied on write: an export view or a frozen view shares the maps
//! (taking one costs a reference count per table), and the first commit that touches a shared table after
//! that copies that table once. Memory is then at most two copies of the tables written meanwhile.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};

use super::{Backend, Batch, BatchOp, FrozenView, ReadView, Slot, Table};
use crate::error::BackendError;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Shared = Arc<Map>;

/// Cloning is cheap: the maps are shared until written.
#[derive(Debug, Clone, Default)]
struct Tables {
    slotted: [Shared; Table::SLOTTED.len()],
    meta: Shared,
}

impl Tables {
    fn table(&self, table: Table) -> &Map {
        match table.slot_position() {
            Some(pos) => &self.slotted[pos],
            None => &self.meta,
        }
    }
}

#[derive(Debug, Default)]
struct MemState {
    live: Tables,
    staging: [Shared; Table::SLOTTED.len()],
}

impl MemState {
    /// The map a write goes to, copied first if a view still shares it.
    fn target(&mut self, slot: Slot, table: Table) -> &mut Map {
        let shared = match (table.slot_position(), slot) {
            (None, _) => &mut self.live.meta,
            (Some(pos), Slot::Live) => &mut self.live.slotted[pos],
            (Some(pos), Slot::Staging) => &mut self.staging[pos],
        };
        Arc::make_mut(shared)
    }

    /// Empties the staging tables without copying any a view still shares.
    fn clear_staging(&mut self) {
        self.staging.iter_mut().for_each(|map| *map = Shared::default());
    }
}

/// Keeps every table in memory. Nothing survives a restart; [`crate::Store::in_memory`] builds a store
/// on it. Reads share a lock with each other and wait only for the (short) commit of a batch.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: RwLock<MemState>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A read view of [`MemoryBackend`]: the read lock, held while the view lives.
pub struct MemoryView<'a> {
    guard: RwLockReadGuard<'a, MemState>,
}

/// An export view (and the frozen view) of [`MemoryBackend`]: the live tables as they were, shared
/// copy-on-write with the backend, so commits continue.
pub struct MemoryExportView {
    tables: Tables,
}

fn scan(map: &Map, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8]) -> bool) {
    for (key, value) in map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded)) {
        if !key.starts_with(prefix) || !visit(key, value) {
            break;
        }
    }
}

impl ReadView for MemoryView<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.guard.live.table(table).get(key).cloned())
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        scan(self.guard.live.table(table), prefix, visit);
        Ok(())
    }
}

impl ReadView for MemoryExportView {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tables.table(table).get(key).cloned())
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), BackendError> {
        scan(self.tables.table(table), prefix, visit);
        Ok(())
    }
}

impl FrozenView for MemoryExportView {
    /// Runs the job on the calling thread, straight into `out`: the maps are already owned.
    fn stream<T, F>(self, out: &mut dyn Write, job: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadView, &mut dyn Write) -> T + Send + 'static,
    {
        Ok(job(&self, out))
    }
}

impl Backend for MemoryBackend {
    type View<'a> = MemoryView<'a>;
    type ExportView<'a> = MemoryExportView;
    type Frozen = MemoryExportView;

    fn view(&self) -> Result<MemoryView<'_>, BackendError> {
        Ok(MemoryView {
            guard: self.state.read(),
        })
    }

    fn export_view(&self) -> Result<MemoryExportView, BackendError> {
        Ok(MemoryExportView {
            tables: self.state.read().live.clone(),
        })
    }

    fn freeze(&self) -> Result<MemoryExportView, BackendError> {
        self.export_view()
    }

    fn commit(&self, batch: Batch) -> Result<(), BackendError> {
        // Every operation below is infallible, so taking the lock once makes the batch atomic.
        let mut state = self.state.write();
        let promote = batch.promotes_staging();
        for op in batch.ops {
            match op {
                BatchOp::Put {
                    slot,
                    table,
                    key,
                    value,
                } => {
                    state.target(slot, table).insert(key, value);
                }
                BatchOp::Delete { slot, table, key } => {
                    state.target(slot, table).remove(&key);
                }
                BatchOp::ClearStaging => state.clear_staging(),
            }
        }
        if promote {
            let state = &mut *state;
            std::mem::swap(&mut state.live.slotted, &mut state.staging);
            state.clear_staging();
        }
        Ok(())
    }
}
