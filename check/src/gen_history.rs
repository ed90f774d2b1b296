//! Seeded histories, linearizable by construction.

use crate::KvOperation;

/// What [`generate_history`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOptions {
    /// The seed.
    pub seed: u64,
    /// Operations in all.
    pub operations: usize,
    /// Keys.
    pub keys: usize,
    /// Clients.
    pub clients: usize,
    /// The share of operations whose outcome is indeterminate.
    pub indeterminate: f64,
}

/// A history of clients on registers, linearizable by construction.
pub fn generate_history(options: &GenOptions) -> Vec<KvOperation> {
    let _ = options;
    Vec::new()
}
