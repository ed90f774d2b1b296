//! Two datacenters in this process under tribune-netem's in-process layer: three servers of dc1 and
//! one of dc2, their WAN and RPC addresses in groups named after their datacenter, a given delay
//! each way between the groups, WAN-joined.

use std::time::Duration;

use tribune::NodeHandle;
use tribune::config::Config;
use tribune_netem::link::{Conditions, Network};

use super::{Client, three_server_dc_with, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// [`super::fast_wan`] with a probe timeout above a 50 ms round trip, so a slow link is not taken
/// for a dead one.
fn fast_wan(config: &mut Config) {
    super::fast_wan(config);
    config.gossip_wan.probe_interval = Some(Duration::from_millis(300));
    config.gossip_wan.probe_timeout = Some(Duration::from_millis(150));
}

/// Starts dc1 (three servers) and dc2 (one), `one_way` apart under `network`, and waits until dc2
/// routes `?dc=dc1` calls.
pub(crate) async fn two_datacenters(network: &Network, one_way: Duration) -> ([NodeHandle; 3], NodeHandle) {
    let dc1 = three_server_dc_with(LIMIT, |c| {
        c.datacenter = "dc1".into();
        c.network = Some(network.clone());
        fast_wan(c);
    })
    .await;
    let mut dc2 = Config::dev();
    dc2.datacenter = "dc2".into();
    dc2.node_name = "d1".into();
    dc2.network = Some(network.clone());
    fast_wan(&mut dc2);
    let d1 = super::start_leader(dc2).await;
    for (node, datacenter) in dc1.iter().map(|n| (n, "dc1")).chain([(&d1, "dc2")]) {
        network.assign(node.serf_wan_addr().expect("a WAN address"), datacenter);
        network.assign(node.rpc_addr(), datacenter);
    }
    if !one_way.is_zero() {
        network
            .set_between("dc1", "dc2", Conditions::delay(one_way))
            .expect("valid conditions");
    }
    let join = Client::of(&d1)
        .put(
            &format!(
                "/v1/agent/join/{}?wan=1",
                dc1[0].serf_wan_addr().expect("a WAN address")
            ),
            b"",
        )
        .await;
    assert_eq!(join.status, 200, "{}", join.text());
    wait_for("dc2 to route to dc1", LIMIT, || async {
        Client::of(&d1).get("/v1/kv/?keys&dc=dc1").await.status != 500
    })
    .await;
    (dc1, d1)
}
