//! Lock safety of Consul sessions.

use crate::{Anomaly, LockEvent};

/// Checks a lock history.
pub fn check_locks(events: &[LockEvent]) -> Vec<Anomaly> {
    let _ = events;
    Vec::new()
}
