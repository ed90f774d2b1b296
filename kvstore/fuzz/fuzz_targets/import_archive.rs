//! Imports arbitrary bytes as a snapshot archive into a store holding some state. Any panic is a bug,
//! and so is a failed import that changed the state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tribune_kvstore::{Command, Store, StoreConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(store) = Store::in_memory(StoreConfig::new("dc1")) else { return };
    let set = |key: &str| Command::KvSet { key: key.into(), value: b"v".to_vec(), flags: 0 };
    let _ = store.apply(1, &set("a"));
    let _ = store.apply(2, &set("b/c"));
    let _ = store.apply(3, &Command::KvDelete { key: "a".into() });
    let before = store.dump().ok();
    if store.import(data).is_err() {
        assert_eq!(store.dump().ok(), before, "a failed import changed the state");
        assert_eq!(store.last_applied(), 3);
    }
});
