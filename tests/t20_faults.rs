//! Jepsen-style runs against three real `tribune agent -server` processes: SIGKILL of the leader, a
//! follower or every server (restarted from disk), SIGSTOP of the leader, and — as root inside a
//! private network namespace, which the test enters by running itself again under `unshare -n` —
//! partitions, one-way cuts and packet loss made with iptables. Clients read in every consistency
//! mode, write, CAS, delete, run transactions and contend for a session lock through random servers;
//! tribune-check decides whether the histories are linearizable, whether any acknowledged write was
//! lost and whether the lock stayed safe. RELIABILITY.md explains the campaigns and their results.
//!
//! WAN faults (namespace only): a run that draws one also starts a second datacenter (one dc2
//! server, WAN-joined, behind a tribune-netem proxy it advertises as its WAN address), and clients
//! work on dc2's keys with `?dc=dc2` through dc1's servers and dc2's own. The faults: dc2 cut off
//! (iptables), 25 ms each way (the proxy), 20 % WAN loss (iptables). Beyond the checker: a cut-off
//! dc2 is declared failed, `?dc=dc2` then answers Consul's 500 within 3 s, and after every heal dc2
//! is routable again by itself.
//!
//! Federated ACLs (faults/acl.rs): the run with the WAN cut (and, with `TRIBUNE_FAULTS_ACL=1`,
//! every long-campaign run, its first fault a WAN cut) makes dc1 the ACL primary and dc2 a
//! secondary resolving tokens at dc1 under a `down_policy` (extend-cache in CI; by seed in the
//! long campaign); a checker holds dc2 to what that policy dictates while dc1 is cut off, and to
//! the normal answers away from faults.
//!
//! KV replication (faults/replication.rs): every WAN run also starts `tribune replicate -prefix
//! repl/@dc1` beside dc2 (two processes racing for one `-lock`), a writer of `repl/` in dc1 and an
//! observer of dc2's `repl/`; dc2 must never show a value not written, wrong flags or a key going
//! back to an older state, and must equal dc1's `repl/` within 30 s once the faults are healed.
//!
//! Catalog (faults/catalog.rs): every run registers, flips and deregisters service instances through
//! random servers while `?stale` observers read each server's catalog; no server may show a
//! registration that was never sent, every server must equal the leader within 30 s of the heal,
//! and the final catalog must be explained by the acknowledged (or unknown) operations.
//!
//! - `short_campaign` (CI): a fixed list of seeds covering every fault kind.
//! - `long_campaign` (ignored): `TRIBUNE_FAULTS_RUNS` (default 100) seeded runs with two random
//!   faults each, ending with the RELIABILITY.md table.
//!
//! Environment: `TRIBUNE_FAULTS_OUT` (where histories, logs and the table go; default a temporary
//! directory that is kept and printed), `TRIBUNE_FAULTS_SEEDS=3,1007` (replay those runs),
//! `TRIBUNE_FAULTS_WAN=1` (every long-campaign run's first fault is a WAN fault),
//! `TRIBUNE_FAULTS_ACL=1` (every long-campaign run federates ACLs and starts with a WAN cut),
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
