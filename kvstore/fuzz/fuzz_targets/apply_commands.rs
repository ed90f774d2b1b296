//! Decodes arbitrary bytes as a sequence of log entries and applies every command that decodes. Any
//! panic is a bug: malformed entries are typed codec errors, bad commands typed apply errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tribune_kvstore::{Store, StoreConfig, decode_command};

fuzz_target!(|data: &[u8]| {
    let Ok(store) = Store::in_memory(StoreConfig::new("dc1")) else { return };
    // Entries are framed by a one-byte length, so one input holds several commands.
    let mut rest = data;
    let mut index = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (entry, tail) = tail.split_at(len);
        rest = tail;
        index += 1;
        if let Ok(command) = decode_command(entry) {
            let before = store.last_applied();
            match store.apply(index, &command) {
                Ok(_) => assert_eq!(store.last_applied(), index.max(before)),
                // The memory backend cannot fail: every error must be the command's fault.
                Err(err) => assert!(err.is_deterministic(), "{err}"),
            }
        }
    }
    let _ = store.dump();
});
