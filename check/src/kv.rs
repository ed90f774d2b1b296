//! The linearizability search over Consul's KV register.

use std::collections::BTreeMap;

use crate::{CheckOptions, CheckReport, KeyReport, KvOperation, Verdict};

/// Checks that every key's operations are linearizable on Consul's KV register.
pub fn check_kv(history: &[KvOperation], options: &CheckOptions) -> CheckReport {
    let _ = options;
    let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
    for op in history {
        *keys.entry(op.key.as_str()).or_default() += 1;
    }
    CheckReport::from_keys(
        keys.into_iter()
            .map(|(key, operations)| KeyReport {
                key: key.to_owned(),
                verdict: Verdict::Unknown,
                operations,
                steps: 0,
                explanation: Some("the search is not implemented yet".to_owned()),
            })
            .collect(),
    )
}
