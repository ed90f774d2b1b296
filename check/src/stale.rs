//! Stale reads and lost writes.

use crate::{Anomaly, KvOperation};

/// `?stale` reads: no phantom values, and per (client, server) a key never goes back to an older write.
pub fn check_stale_reads(history: &[KvOperation]) -> Vec<Anomaly> {
    let _ = history;
    Vec::new()
}

/// Acknowledged writes that the final `?consistent` read of their key cannot explain.
pub fn lost_writes(history: &[KvOperation]) -> Vec<Anomaly> {
    let _ = history;
    Vec::new()
}
