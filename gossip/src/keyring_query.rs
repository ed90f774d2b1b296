//! Bookkeeping for keyring operations carried to every member of a pool (Consul's `keyring`
//! command, Serf's key manager): who was asked, who answered, and the tally of their keys.

use std::collections::{BTreeMap, HashSet};

/// What the members of a pool said to one keyring operation ([`crate::Pool::start_keyring_op`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyringReport {
    /// The operation's number, as returned by [`crate::Pool::start_keyring_op`].
    pub id: u64,
    /// Members asked, the local one included: the live and suspect members when it started.
    pub num_nodes: usize,
    /// Members whose answer arrived, refusals included.
    pub num_responses: usize,
    /// Every key (base64) held by a member that accepted, with how many hold it.
    pub keys: BTreeMap<String, usize>,
    /// Every primary key (base64) of a member that accepted, with how many use it.
    pub primary_keys: BTreeMap<String, usize>,
    /// Members that refused, with their reason, and members that did not answer in time.
    pub errors: BTreeMap<String, String>,
}

impl KeyringReport {
    /// Whether every member asked answered and accepted.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.num_responses == self.num_nodes
    }
}

/// An operation waiting for answers.
#[derive(Debug)]
pub(crate) struct PendingKeyringOp {
    /// Members that have not answered yet.
    waiting: HashSet<String>,
    report: KeyringReport,
}

impl PendingKeyringOp {
    /// `asked` are the members the request goes to, the local member included.
    pub(crate) fn new(id: u64, asked: impl IntoIterator<Item = String>) -> Self {
        let waiting: HashSet<String> = asked.into_iter().collect();
        PendingKeyringOp {
            report: KeyringReport {
                id,
                num_nodes: waiting.len(),
                ..KeyringReport::default()
            },
            waiting,
        }
    }

    /// Records `node`'s answer: its keys (primary first) or why it refused. An answer from a
    /// member that was not asked, or a second answer, is ignored.
    pub(crate) fn record(&mut self, node: &str, result: Result<Vec<String>, String>) {
        if !self.waiting.remove(node) {
            return;
        }
        self.report.num_responses += 1;
        match result {
            Ok(keys) => {
                if let Some(primary) = keys.first() {
                    *self.report.primary_keys.entry(primary.clone()).or_default() += 1;
                }
                for key in keys {
                    *self.report.keys.entry(key).or_default() += 1;
                }
            }
            Err(reason) => {
                self.report.errors.insert(node.to_owned(), reason);
            }
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The report, with every member still silent listed as not having answered.
    pub(crate) fn finish(mut self) -> KeyringReport {
        for node in self.waiting.drain() {
            self.report
                .errors
                .insert(node, "no answer before the deadline".to_owned());
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_keys_and_primaries_and_names_the_silent() {
        let mut op = PendingKeyringOp::new(3, ["a", "b", "c", "d"].map(String::from));
        op.record("a", Ok(vec!["K1".into(), "K2".into()]));
        op.record("b", Ok(vec!["K2".into(), "K1".into()]));
        op.record("b", Ok(vec!["K9".into()]));
        op.record("stranger", Ok(vec!["K9".into()]));
        op.record("c", Err("encryption is not enabled".into()));
        assert!(!op.is_complete());
        let report = op.finish();
        assert_eq!(report.id, 3);
        assert_eq!(report.num_nodes, 4);
        assert_eq!(report.num_responses, 3);
        assert_eq!(report.keys, BTreeMap::from([("K1".into(), 2), ("K2".into(), 2)]));
        assert_eq!(
            report.primary_keys,
            BTreeMap::from([("K1".into(), 1), ("K2".into(), 1)])
        );
        assert_eq!(report.errors.len(), 2);
        assert_eq!(report.errors["c"], "encryption is not enabled");
        assert!(report.errors["d"].contains("no answer"));
        assert!(!report.is_success());
    }

    #[test]
    fn complete_when_everyone_answered() {
        let mut op = PendingKeyringOp::new(1, ["a".to_owned()]);
        op.record("a", Ok(vec!["K".into()]));
        assert!(op.is_complete());
        assert!(op.finish().is_success());
    }
}
