//! Jepsen-style runs against three real `tribune agent -server` processes: SIGKILL of the leader, a
//! follower or every server (restarted from disk), SIGSTOP of the leader, and — as root inside a
//! private network namespace, which the test enters by running itself again under `unshare -n` —
//! partitions, one-way cuts and packet loss made with iptables. Clients read in every consistency
//! mode, write, CAS, delete, run transactions and contend for a session lock through random servers;
//! tribune-check decides whether the histories are linearizable, whether any acknowledged write was
//! lost and whether the lock stayed safe. RELIABILITY.md explains the campaigns and their results.
//!
//! - `short_campaign` (CI): a fixed list of seeds covering every fault kind.
//! - `long_campaign` (ignored): `TRIBUNE_FAULTS_RUNS` (default 100) seeded runs with two random
//!   faults each, ending with the RELIABILITY.md table.
//!
//! Environment: `TRIBUNE_FAULTS_OUT` (where histories, logs and the table go; default a temporary
//! directory that is kept and printed), `TRIBUNE_FAULTS_SEEDS=3,1007` (replay those runs),
//! `TRIBUNE_FAULTS_STRICT_DEFAULT=0` (report default-mode anomalies without failing).
#![cfg(all(feature = "cli", feature = "rocksdb"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;

use faults::campaign::{Campaign, run_campaign};

#[test]
fn short_campaign() {
    run_campaign("short_campaign", Campaign::Short);
}

#[test]
#[ignore = "the long campaign (≥ 100 runs, about 30 minutes); see RELIABILITY.md"]
fn long_campaign() {
    run_campaign("long_campaign", Campaign::Long);
}
