//! openraft's own storage conformance suite, run against every log store with the state
//! machine adapter over the test KV machine.

#![allow(clippy::unwrap_used)]

mod common;

use common::KvMachine;
use openraft::testing::{StoreBuilder, Suite};
use tribune_consensus::{MemLogStore, StateMachineStore, StorageError, TypeConfig, openraft};

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore<KvMachine>, tempfile::TempDir> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, MemLogStore, StateMachineStore<KvMachine>), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open(KvMachine::default(), dir.path().join("snap")).unwrap();
        Ok((dir, MemLogStore::new(), sm))
    }
}

/// The in-memory log store and the snapshot-file state machine adapter meet openraft's contract.
#[test]
fn mem_log_store_passes_openraft_suite() {
    Suite::test_all(MemBuilder).unwrap();
}

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;
    use tribune_consensus::RocksLogStore;

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, RocksLogStore, StateMachineStore<KvMachine>, tempfile::TempDir>
        for RocksBuilder
    {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, RocksLogStore, StateMachineStore<KvMachine>), StorageError> {
            let dir = tempfile::tempdir().unwrap();
            let log = RocksLogStore::open(dir.path().join("log")).unwrap();
            let sm = StateMachineStore::open(KvMachine::default(), dir.path().join("snap")).unwrap();
            Ok((dir, log, sm))
        }
    }

    /// The RocksDB log store (group commit, synced votes) meets openraft's contract.
    #[test]
    fn rocks_log_store_passes_openraft_suite() {
        Suite::test_all(RocksBuilder).unwrap();
    }
}
