//! Feeds arbitrary bytes to every reading entry point. Any panic, abort or out-of-memory is a bug: malformed input
//! must end in a typed `SnapshotError`.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use tribune_snapshot::{SnapshotReader, verify_with_max_record_len};

/// A small limit keeps the fuzzer's memory low while still exercising the over-limit path.
const LIMIT: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let verified = verify_with_max_record_len(data, LIMIT);

    // Streaming reads: records may be yielded before the digest fails, and decoding them must be safe too.
    let mut streamed_cleanly = false;
    if let Ok(mut reader) = SnapshotReader::with_max_record_len(data, LIMIT) {
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    let _ = record.decode::<(String, Vec<u8>, u64)>();
                    let _ = record.decode::<Vec<String>>();
                }
                Ok(None) => {
                    streamed_cleanly = true;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    assert_eq!(
        verified.is_ok(),
        streamed_cleanly,
        "verify and the streaming reader disagree"
    );

    // open_verified yields a reader only for archives that verify.
    let opened = SnapshotReader::open_verified_with_max_record_len(Cursor::new(data), LIMIT);
    assert_eq!(
        opened.is_ok(),
        verified.is_ok(),
        "open_verified and verify disagree"
    );
});
