//! Federation: this server's place among the servers of every datacenter.
//!
//! Every server is a member of the WAN gossip pool (servers only, named `<node>.<dc>`, on
//! `ports.serf_wan`, with memberlist's WAN timing and the LAN pool's keyring). From the pool's
//! events the [`Router`] learns which servers serve each datacenter; [`forward`] carries an HTTP
//! request to one of them and its answer back. One `join -wan` is enough: every server keeps
//! WAN-joining the servers of its own datacenter that the WAN pool lacks (Consul's flooding), so
//! the rest of a datacenter follows the server that joined, and other datacenters learn of them
//! through gossip.
//!
//! What it is not: it never serves a request itself (the remote server does, by its own rules)
//! and knows nothing of raft.

mod distance;
pub(crate) mod forward;
pub(crate) mod router;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tribune_gossip::{Coordinate, Event, Gossip, GossipOptions, Member, MemberStatus, Tags};

use crate::config::Config;
use crate::error::NodeError;
use crate::gossip_keys;
pub(crate) use router::{RemoteServer, RouteError, Router};

/// Consul's serf WAN port, used for `retry_join_wan` addresses given without a port.
pub(crate) const DEFAULT_SERF_WAN_PORT: u16 = 8302;

/// How often a server WAN-joins the servers of its datacenter missing from the WAN pool (Consul's
/// flood interval); a LAN server join triggers a round at once.
const FLOOD_INTERVAL: Duration = Duration::from_secs(60);

/// The LAN tag in which a server announces its WAN port, so its peers can flood-join it.
pub(crate) const WAN_JOIN_PORT_TAG: &str = "wan_join_port";

/// The WAN pool and the routing table built from it.
pub(crate) struct Federation {
    datacenter: String,
    /// This server's name in the WAN pool (`<node>.<dc>`).
    wan_name: String,
    wan: Gossip,
    router: Mutex<Router>,
    flood_now: Notify,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("datacenter", &self.datacenter)
            .field("wan", &self.wan.local_addr())
            .finish_non_exhaustive()
    }
}

/// A server's name in the WAN pool.
pub(crate) fn wan_name(node: &str, datacenter: &str) -> String {
    format!("{node}.{datacenter}")
}

impl Federation {
    /// Starts this server's WAN pool member on `bind_addr:ports.serf_wan` with the server's
    /// `tags`. `None` when the WAN port is disabled (`ports.serf_wan = -1`) or this is a client.
    pub(crate) async fn start(
        config: &Config,
        tags: Tags,
    ) -> Result<Option<(Arc<Self>, mpsc::UnboundedReceiver<Event>)>, NodeError> {
        let Some(port) = config.ports.serf_wan.filter(|_| config.server) else {
            return Ok(None);
        };
        let bind = SocketAddr::new(config.bind_addr, port);
        let own_name = wan_name(&config.node_name, &config.datacenter);
        let mut options = GossipOptions::new(own_name.clone(), bind);
        options.config = config.gossip_wan.apply_to(tribune_gossip::Config::wan());
        options.tags = tags;
        options.advertise = config
            .advertise_addr_wan
            .or(config.advertise_addr)
            .map(|ip| SocketAddr::new(ip, port));
        options.keyring = gossip_keys::initial_keyring(config)?;
        options.network = config.network.clone();
        let (wan, events) = Gossip::start(options).await.map_err(|e| NodeError::Gossip {
            reason: format!("WAN pool: {e}"),
        })?;
        let federation = Arc::new(Federation {
            datacenter: config.datacenter.clone(),
            wan_name: own_name,
            wan,
            router: Mutex::new(Router::default()),
            flood_now: Notify::new(),
        });
        Ok(Some((federation, events)))
    }

    /// The WAN pool.
    pub(crate) fn wan(&self) -> &Gossip {
        &self.wan
    }

    /// Every datacenter this server can route to, nearest first by the WAN pool's coordinates
    /// (Consul's `catalog/datacenters` order).
    pub(crate) async fn datacenters_by_distance(&self) -> Vec<String> {
        let coordinates = self.wan.coordinates().await.unwrap_or_default();
        let own = coordinates
            .iter()
            .find(|(name, _)| *name == self.wan_name)
            .map(|(_, c)| c);
        let by_datacenter = self.coordinates_by_datacenter(&coordinates);
        let by_datacenter = by_datacenter
            .into_iter()
            .map(|(dc, nodes)| (dc, nodes.into_iter().map(|(_, c)| c).collect()))
            .collect();
        distance::nearest_first(&self.datacenter, own, &by_datacenter)
    }

    /// The WAN coordinates of every known server, by datacenter and node name (without the
    /// `.<dc>` suffix); a server without a coordinate yet is left out, its datacenter is not.
    pub(crate) async fn datacenter_coordinates(&self) -> BTreeMap<String, Vec<(String, Coordinate)>> {
        let coordinates = self.wan.coordinates().await.unwrap_or_default();
        self.coordinates_by_datacenter(&coordinates)
    }

    fn coordinates_by_datacenter(
        &self,
        coordinates: &[(String, Coordinate)],
    ) -> BTreeMap<String, Vec<(String, Coordinate)>> {
        let by_name: HashMap<&str, &Coordinate> = coordinates.iter().map(|(n, c)| (n.as_str(), c)).collect();
        let router = self.router.lock();
        router
            .datacenters()
            .into_iter()
            .map(|dc| {
                let nodes = router
                    .servers(&dc)
                    .iter()
                    .filter_map(|s| {
                        let c = by_name.get(wan_name(&s.node, &dc).as_str())?;
                        Some((s.node.clone(), (*c).clone()))
                    })
                    .collect();
                (dc, nodes)
            })
            .collect()
    }

    /// The live servers of `datacenter`, in the order to try them.
    pub(crate) fn route(&self, datacenter: &str) -> Result<Vec<RemoteServer>, RouteError> {
        self.router.lock().route(datacenter)
    }

    /// A call to `node` of `datacenter` could not be sent.
    pub(crate) fn call_failed(&self, datacenter: &str, node: &str) {
        self.router.lock().call_failed(datacenter, node);
    }

    /// Asks for a flood round now (a server of this datacenter joined the LAN pool).
    pub(crate) fn flood_soon(&self) {
        self.flood_now.notify_one();
    }

    /// Feeds the WAN pool's events to the router until shutdown.
    pub(crate) async fn watch(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if let Ok(members) = self.wan.members().await {
            self.router.lock().reset(&members);
        }
        while let Some(event) = crate::membership::next_event(&mut events, &mut shutdown).await {
            if let Event::Failed(m) | Event::Left(m) = &event {
                tracing::info!(member = %m.name, "WAN member {}", if matches!(event, Event::Failed(_)) { "failed" } else { "left" });
            }
            self.router.lock().apply(&event);
        }
    }

    /// `retry_join_wan`: joins the WAN pool through the configured addresses, retrying every
    /// `retry_interval_wan` until one answers (or `retry_max_wan` attempts failed).
    pub(crate) async fn join_configured(self: Arc<Self>, config: Config, shutdown: watch::Receiver<bool>) {
        let plan = crate::membership::JoinPlan {
            pool: "WAN",
            addresses: config.retry_join_wan,
            default_port: DEFAULT_SERF_WAN_PORT,
            interval: config.retry_interval_wan,
            max_attempts: config.retry_max_wan,
        };
        crate::membership::retry_join(&self.wan, plan, shutdown).await;
    }

    /// Consul's flooding: every [`FLOOD_INTERVAL`], and when asked, WAN-joins each live server of
    /// this datacenter (from the LAN pool) that the WAN pool does not list as alive.
    pub(crate) async fn flood(self: Arc<Self>, lan: Gossip, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FLOOD_INTERVAL) => {}
                _ = self.flood_now.notified() => {}
                _ = shutdown.wait_for(|stopped| *stopped) => return,
            }
            let (Ok(lan_members), Ok(wan_members)) = (lan.members().await, self.wan.members().await) else {
                continue;
            };
            let missing = flood_targets(&lan_members, &wan_members, &self.datacenter);
            for (name, addr) in missing {
                match self.wan.join(&[addr]).await {
                    Ok(_) => {
                        tracing::info!(server = %name, %addr, "flood-joined a server of this datacenter to the WAN pool")
                    }
                    Err(e) => tracing::debug!(server = %name, %addr, error = %e, "flood join failed"),
                }
            }
        }
    }

    /// Leaves the WAN pool gracefully.
    pub(crate) async fn leave(&self) {
        if let Err(e) = self.wan.leave().await {
            tracing::warn!(error = %e, "leaving the WAN pool");
        }
    }

    /// Stops the WAN pool member.
    pub(crate) async fn shutdown(&self) {
        self.wan.shutdown().await;
    }
}

/// The live servers of `datacenter` in the LAN pool that announce a WAN port but are not alive in
/// the WAN pool, with the address to WAN-join them at (their LAN address, their WAN port).
fn flood_targets(lan: &[Member], wan: &[Member], datacenter: &str) -> Vec<(String, SocketAddr)> {
    lan.iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .filter(|m| m.tags.get("role").map(String::as_str) == Some("consul"))
        .filter(|m| m.tags.get("dc").map(String::as_str) == Some(datacenter))
        .filter_map(|m| {
            let port: u16 = m.tags.get(WAN_JOIN_PORT_TAG)?.parse().ok()?;
            let name = wan_name(&m.name, datacenter);
            let present = wan
                .iter()
                .any(|w| w.name == name && w.status == MemberStatus::Alive);
            (!present).then(|| (name, SocketAddr::new(m.addr.ip(), port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn member(name: &str, dc: &str, wan_port: Option<u16>, status: MemberStatus) -> Member {
        let mut tags = Tags::new();
        tags.insert("role".into(), "consul".into());
        tags.insert("dc".into(), dc.into());
        if let Some(p) = wan_port {
            tags.insert(WAN_JOIN_PORT_TAG.into(), p.to_string());
        }
        Member {
            name: name.into(),
            addr: "127.0.0.5:8301".parse().unwrap(),
            tags,
            incarnation: 1,
            status,
        }
    }

    #[test]
    fn flooding_joins_the_live_local_servers_the_wan_pool_lacks() {
        let lan = [
            member("a", "dc1", Some(9302), MemberStatus::Alive),
            member("b", "dc1", Some(9303), MemberStatus::Alive),
            member("c", "dc1", Some(9304), MemberStatus::Failed),
            member("d", "dc1", None, MemberStatus::Alive),
        ];
        let wan = [
            member("a.dc1", "dc1", None, MemberStatus::Alive),
            member("b.dc1", "dc1", None, MemberStatus::Failed),
        ];
        let targets = flood_targets(&lan, &wan, "dc1");
        assert_eq!(
            targets,
            vec![("b.dc1".to_string(), "127.0.0.5:9303".parse().unwrap())]
        );
        assert!(flood_targets(&lan, &wan, "dc2").is_empty());
    }
}
