//! Which servers serve each datacenter, learned from the WAN pool's events (no IO here).
//!
//! A server seen alive is routable; one the pool declares failed stays known but is skipped until
//! the pool sees it alive again (Consul keeps picking failed servers: consul#5595); one that left
//! is forgotten, and a datacenter whose last server left is forgotten with it. Calls that could not
//! be sent rotate the datacenter's list, so the next call starts with another server.

use std::collections::BTreeMap;

use tribune_gossip::{Event, Member};

/// A server of some datacenter as the WAN pool announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteServer {
    /// The node name, without the `.<dc>` suffix of its WAN name.
    pub(crate) node: String,
    /// The server's raft id in its own datacenter (unique only there).
    pub(crate) raft_id: u64,
    /// Where its RPC port listens: the WAN member's address with its `port` tag.
    pub(crate) rpc_addr: String,
    /// Declared failed by the WAN pool and not seen alive since.
    pub(crate) failed: bool,
}

/// Why a datacenter cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    /// No server of that datacenter is known (Consul's words, which clients match on).
    #[error("No path to datacenter")]
    NoPath,
    /// Its servers are known but every one is failed (Consul's words).
    #[error("Remote DC has no server currently reachable")]
    NoServerReachable,
}

/// The routing table: servers by datacenter.
#[derive(Debug, Default)]
pub(crate) struct Router {
    datacenters: BTreeMap<String, Vec<RemoteServer>>,
}

impl Router {
    /// Applies one WAN pool event. Members that are not servers (no `role=consul`, `dc`, `port`
    /// and `id` tags) are ignored.
    pub(crate) fn apply(&mut self, event: &Event) {
        match event {
            Event::Joined(m) | Event::Updated(m) | Event::Rejoined(m) | Event::Suspect(m) => self.upsert(m),
            Event::Failed(m) => self.set_failed(m),
            Event::Left(m) => self.remove(m),
            _ => {}
        }
    }

    /// Replaces the table with the pool's current members (at start, and to resynchronise).
    pub(crate) fn reset(&mut self, members: &[Member]) {
        self.datacenters.clear();
        for m in members {
            match m.status {
                tribune_gossip::MemberStatus::Alive | tribune_gossip::MemberStatus::Suspect => self.upsert(m),
                tribune_gossip::MemberStatus::Failed => {
                    self.upsert(m);
                    self.set_failed(m);
                }
                _ => {}
            }
        }
    }

    /// Every known datacenter, by name.
    pub(crate) fn datacenters(&self) -> Vec<String> {
        self.datacenters.keys().cloned().collect()
    }

    /// Every known server of `datacenter`, failed ones included.
    pub(crate) fn servers(&self, datacenter: &str) -> &[RemoteServer] {
        self.datacenters.get(datacenter).map_or(&[], Vec::as_slice)
    }

    /// The servers to try for a call to `datacenter`, in order: live ones only.
    pub(crate) fn route(&self, datacenter: &str) -> Result<Vec<RemoteServer>, RouteError> {
        let servers = self.datacenters.get(datacenter).ok_or(RouteError::NoPath)?;
        let live: Vec<RemoteServer> = servers.iter().filter(|s| !s.failed).cloned().collect();
        if live.is_empty() {
            return Err(RouteError::NoServerReachable);
        }
        Ok(live)
    }

    /// A call to `node` of `datacenter` could not be sent: the next call starts elsewhere.
    pub(crate) fn call_failed(&mut self, datacenter: &str, node: &str) {
        if let Some(servers) = self.datacenters.get_mut(datacenter)
            && servers.first().is_some_and(|s| s.node == node)
        {
            servers.rotate_left(1);
        }
    }

    fn upsert(&mut self, member: &Member) {
        let Some((datacenter, server)) = remote_server(member) else {
            return;
        };
        let servers = self.datacenters.entry(datacenter).or_default();
        match servers.iter_mut().find(|s| s.node == server.node) {
            Some(known) => *known = server,
            None => servers.push(server),
        }
    }

    fn set_failed(&mut self, member: &Member) {
        let Some((datacenter, node)) = split_wan_name(member) else {
            return;
        };
        if let Some(server) = self
            .datacenters
            .get_mut(&datacenter)
            .and_then(|servers| servers.iter_mut().find(|s| s.node == node))
        {
            server.failed = true;
        }
    }

    fn remove(&mut self, member: &Member) {
        let Some((datacenter, node)) = split_wan_name(member) else {
            return;
        };
        if let Some(servers) = self.datacenters.get_mut(&datacenter) {
            servers.retain(|s| s.node != node);
            if servers.is_empty() {
                self.datacenters.remove(&datacenter);
            }
        }
    }
}

/// The datacenter (from the `dc` tag) and node name of a WAN member named `<node>.<dc>`.
fn split_wan_name(member: &Member) -> Option<(String, String)> {
    let datacenter = member.tags.get("dc")?;
    let node = member
        .name
        .strip_suffix(datacenter.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or(&member.name);
    Some((datacenter.clone(), node.to_owned()))
}

fn remote_server(member: &Member) -> Option<(String, RemoteServer)> {
    if member.tags.get("role").map(String::as_str) != Some("consul") {
        return None;
    }
    let (datacenter, node) = split_wan_name(member)?;
    let port: u16 = member.tags.get("port")?.parse().ok()?;
    let raft_id: u64 = member.tags.get("id")?.parse().ok()?;
    let rpc_addr = std::net::SocketAddr::new(member.addr.ip(), port).to_string();
    Some((
        datacenter,
        RemoteServer {
            node,
            raft_id,
            rpc_addr,
            failed: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tribune_gossip::{MemberStatus, Tags};

    use super::*;

    fn server(node: &str, dc: &str, last: u8) -> Member {
        let mut tags = Tags::new();
        tags.insert("role".into(), "consul".into());
        tags.insert("dc".into(), dc.into());
        tags.insert("port".into(), "8300".into());
        tags.insert("id".into(), "7".into());
        Member {
            name: format!("{node}.{dc}"),
            addr: format!("10.0.0.{last}:8302").parse().unwrap(),
            tags,
            incarnation: 1,
            status: MemberStatus::Alive,
        }
    }

    fn nodes(router: &Router, dc: &str) -> Vec<String> {
        router.route(dc).unwrap().into_iter().map(|s| s.node).collect()
    }

    #[test]
    fn servers_are_routed_by_datacenter_at_their_rpc_port() {
        let mut router = Router::default();
        router.apply(&Event::Joined(server("a", "dc1", 1)));
        router.apply(&Event::Joined(server("b", "dc2", 2)));
        router.apply(&Event::Joined(server("c", "dc2", 3)));
        assert_eq!(router.datacenters(), ["dc1", "dc2"]);
        let dc2 = router.route("dc2").unwrap();
        assert_eq!(dc2[0].rpc_addr, "10.0.0.2:8300");
        assert_eq!(nodes(&router, "dc2"), ["b", "c"]);
        assert_eq!(router.route("dc3"), Err(RouteError::NoPath));
    }

    #[test]
    fn a_failed_server_is_skipped_until_it_is_alive_again() {
        let mut router = Router::default();
        router.apply(&Event::Joined(server("b", "dc2", 2)));
        router.apply(&Event::Joined(server("c", "dc2", 3)));
        router.apply(&Event::Failed(server("b", "dc2", 2)));
        assert_eq!(nodes(&router, "dc2"), ["c"]);
        router.apply(&Event::Failed(server("c", "dc2", 3)));
        assert_eq!(router.route("dc2"), Err(RouteError::NoServerReachable));
        assert_eq!(
            router.datacenters(),
            ["dc2"],
            "a datacenter with failed servers stays known"
        );
        router.apply(&Event::Rejoined(server("c", "dc2", 3)));
        assert_eq!(nodes(&router, "dc2"), ["c"]);
    }

    #[test]
    fn a_datacenter_whose_last_server_left_is_forgotten() {
        let mut router = Router::default();
        router.apply(&Event::Joined(server("b", "dc2", 2)));
        router.apply(&Event::Joined(server("c", "dc2", 3)));
        router.apply(&Event::Left(server("b", "dc2", 2)));
        assert_eq!(nodes(&router, "dc2"), ["c"]);
        router.apply(&Event::Left(server("c", "dc2", 3)));
        assert_eq!(router.route("dc2"), Err(RouteError::NoPath));
        assert!(router.datacenters().is_empty());
    }

    #[test]
    fn a_call_that_failed_moves_the_next_call_to_another_server() {
        let mut router = Router::default();
        for (node, last) in [("a", 1), ("b", 2), ("c", 3)] {
            router.apply(&Event::Joined(server(node, "dc2", last)));
        }
        router.call_failed("dc2", "a");
        assert_eq!(nodes(&router, "dc2"), ["b", "c", "a"]);
        router.call_failed("dc2", "c"); // not the head: no change
        assert_eq!(nodes(&router, "dc2"), ["b", "c", "a"]);
    }

    #[test]
    fn members_that_are_not_servers_are_ignored_and_names_with_dots_survive() {
        let mut router = Router::default();
        let mut client = server("x", "dc1", 9);
        client.tags.insert("role".into(), "node".into());
        router.apply(&Event::Joined(client));
        assert!(router.datacenters().is_empty());
        router.apply(&Event::Joined(server("db.1", "dc1", 4)));
        assert_eq!(nodes(&router, "dc1"), ["db.1"]);
        let mut resync = Router::default();
        let mut failed = server("y", "dc3", 5);
        failed.status = MemberStatus::Failed;
        resync.reset(&[server("db.1", "dc1", 4), failed]);
        assert_eq!(resync.datacenters(), ["dc1", "dc3"]);
        assert_eq!(resync.route("dc3"), Err(RouteError::NoServerReachable));
    }
}
