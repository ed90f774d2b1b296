//! `tribune replicate` across a WAN link that is cut and healed: two datacenters in this process
//! under tribune-netem's in-process layer (25 ms each way), and a replicator process talking to
//! dc2's agent. While dc1 is unreachable the replicator retries and deletes nothing; once the link
//! heals the destination catches up with every write made during the cut.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::federation::{Replicator, Write, contents, write_all};
use common::wait_for;
use common::wan::two_datacenters;
use tribune_netem::link::Network;

const LIMIT: Duration = Duration::from_secs(60);
const ONE_WAY: Duration = Duration::from_millis(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_wan_link_deletes_nothing_and_heals() {
    let network = Network::new(36);
    let (dc1, d1) = two_datacenters(&network, ONE_WAY).await;
    let source = dc1[0].http_addr().unwrap();
    let dest = d1.http_addr().unwrap();
    let keys: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("wan/k{i:03}"), format!("before-{i}").into_bytes()))
        .collect();
    let writes: Vec<Write<'_>> = keys.iter().map(|(k, v)| Write::Set(k, v, 0)).collect();
    write_all(source, &writes).await;

    let root = tempfile::tempdir().unwrap();
    let replicator = Replicator::spawn(
        &root.path().join("replicate.log"),
        &[
            "-prefix".to_owned(),
            "wan/@dc1".to_owned(),
            "-consul".to_owned(),
            dest.to_string(),
            "-read-wait".to_owned(),
            "2s".to_owned(),
            "-log-level".to_owned(),
            "info".to_owned(),
        ],
    );
    let in_step = || async { contents(dest, "wan/", "").await == contents(source, "wan/", "").await };
    wait_for("the first pass", LIMIT, in_step).await;

    // Cut the link; keep writing in dc1 (updates and deletes); dc2 must keep every key it has.
    network.cut("dc1", "dc2");
    let cut_at = Instant::now();
    let updates: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("wan/k{:03}", i * 3), format!("during-{i}").into_bytes()))
        .collect();
    let deletes: Vec<String> = (0..100).map(|i| format!("wan/k{:03}", i * 3 + 1)).collect();
    let mut changes: Vec<Write<'_>> = updates.iter().map(|(k, v)| Write::Set(k, v, 1)).collect();
    changes.extend(deletes.iter().map(|k| Write::Delete(k)));
    write_all(source, &changes).await;
    while cut_at.elapsed() < Duration::from_secs(8) {
        let seen = contents(dest, "wan/", "").await;
        assert_eq!(
            seen.len(),
            500,
            "nothing is deleted while the source is unreachable"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(replicator.child.id() > 0);

    network.heal("dc1", "dc2");
    let healed = Instant::now();
    wait_for("dc2 in step with dc1 after the heal", LIMIT, in_step).await;
    println!("in step {:?} after the heal", healed.elapsed());
    assert_eq!(contents(dest, "wan/", "").await.len(), 400);
}
