//! The adapter between tribune-gossip's LAN pool and the rest of the node.
//!
//! A server announces itself in the pool with Consul's tags (`role = consul`, `dc`, `port` — the
//! server RPC port — `id` — the raft id — `build`, `vsn`, `expect`). From the pool's member events
//! it learns the servers of its datacenter, which feeds consensus's `bootstrap_expect` discovery;
//! and while it leads, it reconciles the raft configuration with the pool (Consul's leader
//! reconciliation and autopilot's dead-server cleanup): live servers missing from raft are added,
//! servers that left are removed, failed ones are removed as far as a quorum allows.
//!
//! Gossip knows nothing of raft and consensus nothing of gossip; this file is the only place
//! where the two meet.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tribune_consensus::{NodeId, NodeInfo, ServerRole};
use tribune_gossip::{Event, Gossip, GossipOptions, Member, MemberStatus, Tags};
use tribune_kvstore::Backend;

use crate::config::Config;
use crate::error::NodeError;
use crate::gossip_keys;
use crate::node::{Agent, Peer};
use crate::telemetry::{MemberEvent, Telemetry};

/// Consul's serf LAN port, used for `retry_join` addresses given without a port.
pub(crate) const DEFAULT_SERF_LAN_PORT: u16 = 8301;

/// How long the leader waits for a server it adds to catch up before it looks at the pool again.
const ADD_SERVER_DEADLINE: Duration = Duration::from_secs(30);

/// How often the leader compares the raft configuration with the pool.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(500);

/// How long a server must stay failed before dead-server cleanup removes it from raft. Gossip
/// declares a server failed after a few seconds of silence, which a partition, a pause or a slow
/// restart easily causes; removing it then would make it rejoin as a learner after the heal and
/// leave the cluster one failure from unavailability meanwhile. Cleanup is for servers that stay
/// failed.
pub(crate) const DEAD_SERVER_GRACE: Duration = Duration::from_secs(30);

/// When each failed server was first seen failed by this leader's reconciliation.
#[derive(Debug, Default)]
pub(crate) struct DeadServers {
    since: std::collections::HashMap<NodeId, std::time::Instant>,
}

impl DeadServers {
    /// Records the servers failed now and returns those failed for at least `grace`. A server
    /// that is no longer reported failed starts over if it fails again.
    pub(crate) fn due(&mut self, failed: &[NodeId], now: std::time::Instant, grace: Duration) -> Vec<NodeId> {
        self.since.retain(|id, _| failed.contains(id));
        failed
            .iter()
            .copied()
            .filter(|id| {
                let since = *self.since.entry(*id).or_insert(now);
                now.saturating_duration_since(since) >= grace
            })
            .collect()
    }
}

/// The tags an agent announces (a client: role, dc, build, vsn). `id` is the raft id, so peers can add it to raft without asking.
pub(crate) fn server_tags(config: &Config, node_id: NodeId, rpc_port: u16) -> Tags {
    let mut tags = Tags::new();
    tags.insert(
        "role".into(),
        if config.server { "consul" } else { "node" }.into(),
    );
    tags.insert("dc".into(), config.datacenter.clone());
    tags.insert("port".into(), rpc_port.to_string());
    tags.insert("id".into(), node_id.to_string());
    tags.insert("build".into(), format!("{}:tribune", env!("CARGO_PKG_VERSION")));
    tags.insert("vsn".into(), "2".into());
    tags.insert("raft_vsn".into(), "3".into());
    tags
}

/// Starts this agent's LAN pool on `bind_addr:ports.serf_lan`.
pub(crate) async fn start_lan(
    config: &Config,
    tags: Tags,
) -> Result<Option<(Gossip, mpsc::UnboundedReceiver<Event>)>, NodeError> {
    let Some(port) = config.ports.serf_lan else {
        return Ok(None);
    };
    let bind = SocketAddr::new(config.bind_addr, port);
    let mut options = GossipOptions::new(config.node_name.clone(), bind);
    options.tags = tags;
    // With port 0 the gossip runtime advertises the port it binds.
    options.advertise = config.advertise_addr.map(|ip| SocketAddr::new(ip, port));
    options.keyring = gossip_keys::initial_keyring(config)?;
    options.network = config.network.clone();
    let started = Gossip::start(options).await.map_err(|e| NodeError::Gossip {
        reason: e.to_string(),
    })?;
    Ok(Some(started))
}

/// A member that is a server of `datacenter`, as a raft peer.
pub(crate) fn server_peer(member: &Member, datacenter: &str) -> Option<Peer> {
    let tags = &member.tags;
    if tags.get("role").map(String::as_str) != Some("consul")
        || tags.get("dc").map(String::as_str) != Some(datacenter)
    {
        return None;
    }
    let id: NodeId = tags.get("id")?.parse().ok()?;
    let port: u16 = tags.get("port")?.parse().ok()?;
    Some(Peer {
        id,
        name: member.name.clone(),
        rpc_addr: SocketAddr::new(member.addr.ip(), port).to_string(),
        datacenter: datacenter.to_owned(),
    })
}

/// Two servers of one datacenter announcing the same raft id: the second one seen (by name order
/// after this server) must not join raft, since raft would take both for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RaftIdConflict {
    /// The raft id both announce.
    pub(crate) id: NodeId,
    /// The server that holds the id (this server, or the first one seen with it).
    pub(crate) holder: String,
    /// The server refused for announcing it too.
    pub(crate) refused: String,
}

impl std::fmt::Display for RaftIdConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Member '{}' has conflicting node ID '{}' with member '{}'",
            self.refused, self.id, self.holder
        )
    }
}

/// The raft id conflicts among the live servers of `datacenter` in `members`, this server (`self_id`,
/// `self_name`) holding its own id first.
pub(crate) fn raft_id_conflicts(
    members: &[Member],
    datacenter: &str,
    self_id: NodeId,
    self_name: &str,
) -> Vec<RaftIdConflict> {
    let mut holders: BTreeMap<NodeId, String> = BTreeMap::from([(self_id, self_name.to_owned())]);
    let mut conflicts = Vec::new();
    let mut servers: Vec<Peer> = members
        .iter()
        .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
        .filter_map(|m| server_peer(m, datacenter))
        .filter(|p| p.name != self_name)
        .collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name));
    for peer in servers {
        match holders.get(&peer.id) {
            Some(holder) => conflicts.push(RaftIdConflict {
                id: peer.id,
                holder: holder.clone(),
                refused: peer.name,
            }),
            None => {
                holders.insert(peer.id, peer.name);
            }
        }
    }
    conflicts
}

/// Resolves join entries (`host`, `host:port`, `[v6]:port`) to socket addresses; a missing port is
/// `default_port` (Consul's serf LAN port 8301, or WAN port 8302). Entries that do not resolve are
/// skipped with a warning (they are retried on the next attempt: DNS may not be ready yet).
pub(crate) fn resolve_addresses(entries: &[String], default_port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in entries {
        if let Ok(addr) = entry.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
            out.push(SocketAddr::new(ip, default_port));
            continue;
        }
        let has_port = entry
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.contains(':') && port.parse::<u16>().is_ok());
        let with_port = if has_port {
            entry.clone()
        } else {
            format!("{entry}:{default_port}")
        };
        match with_port.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(e) => tracing::warn!(address = %entry, error = %e, "join: cannot resolve"),
        }
    }
    out
}

/// Joins the pool through `retry_join`, as Consul does: every `retry_interval`, at most
/// `retry_max` attempts (0: until it works or the agent stops).
pub(crate) async fn join_pool<B: Backend>(agent: Arc<Agent<B>>, shutdown: watch::Receiver<bool>) {
    if let Some(gossip) = agent.gossip.clone() {
        join_pool_with(gossip, agent.config.clone(), shutdown).await;
    }
}

/// [`join_pool`] for any agent, server or client.
pub(crate) async fn join_pool_with(gossip: Gossip, config: Config, shutdown: watch::Receiver<bool>) {
    let plan = JoinPlan {
        pool: "LAN",
        addresses: config.retry_join,
        default_port: DEFAULT_SERF_LAN_PORT,
        interval: config.retry_interval,
        max_attempts: config.retry_max,
    };
    retry_join(&gossip, plan, shutdown).await;
}

/// What a `retry_join` (or `retry_join_wan`) loop does.
pub(crate) struct JoinPlan {
    /// "LAN" or "WAN", for the log.
    pub(crate) pool: &'static str,
    /// `host`, `host:port` or `[v6]:port` entries.
    pub(crate) addresses: Vec<String>,
    /// The port of an entry that names none.
    pub(crate) default_port: u16,
    /// The pause between attempts.
    pub(crate) interval: Duration,
    /// Attempts before giving up; 0: until it works or the agent stops.
    pub(crate) max_attempts: u32,
}

/// Joins `gossip`'s pool through `plan`'s addresses, as Consul's retry-join does: an attempt every
/// `interval` until one address answers, at most `max_attempts` attempts.
pub(crate) async fn retry_join(gossip: &Gossip, plan: JoinPlan, mut shutdown: watch::Receiver<bool>) {
    if plan.addresses.is_empty() {
        return;
    }
    let pool = plan.pool;
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let addrs = resolve_addresses(&plan.addresses, plan.default_port);
        if !addrs.is_empty() {
            match gossip.join(&addrs).await {
                Ok(n) => {
                    tracing::info!(joined = n, "joined the {pool} pool");
                    return;
                }
                Err(e) => tracing::debug!(attempt, error = %e, "{pool} join failed"),
            }
        }
        if plan.max_attempts != 0 && attempt >= plan.max_attempts {
            tracing::error!(attempts = attempt, "giving up on joining the {pool} pool");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(plan.interval) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// The pool's next event, or `None` once the pool stopped or the agent is shutting down.
pub(crate) async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Event> {
    tokio::select! {
        event = events.recv() => event,
        _ = shutdown.wait_for(|stopped| *stopped) => None,
    }
}

/// Counts a LAN pool event under Consul's `serf.member.*` and `serf.events`.
pub(crate) fn count_member_event(telemetry: &Telemetry, event: &Event) {
    match event {
        Event::Joined(_) | Event::Rejoined(_) => telemetry.member_event(MemberEvent::Joined),
        Event::Failed(_) => telemetry.member_event(MemberEvent::Failed),
        Event::Left(_) => telemetry.member_event(MemberEvent::Left),
        Event::User(_) => telemetry.member_event(MemberEvent::User),
        _ => {}
    }
}

/// Feeds the pool's member events to the agent: every server of this datacenter seen alive is
/// remembered for `bootstrap_expect`, a member that failed or left has its `serfHealth` go critical
/// (the leader invalidates its sessions), a changed keyring is saved, and user events go to the
/// agent's event ring.
pub(crate) async fn watch_members<B: Backend>(
    agent: Arc<Agent<B>>,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some(event) = next_event(&mut events, &mut shutdown).await {
        count_member_event(&agent.telemetry, &event);
        match &event {
            Event::Joined(m) | Event::Updated(m) | Event::Rejoined(m) => {
                if let Some(peer) = server_peer(m, &agent.config.datacenter) {
                    tracing::debug!(server = %m.name, "server seen in the LAN pool");
                    agent.discovered.learn(peer);
                    if let Some(federation) = &agent.federation {
                        federation.flood_soon();
                    }
                }
            }
            Event::Failed(m) => {
                tracing::info!(member = %m.name, "member failed");
                agent.sessions.note_node_down(&m.name, agent.store.last_applied());
            }
            Event::Left(m) => {
                tracing::info!(member = %m.name, "member left");
                agent.sessions.note_node_down(&m.name, agent.store.last_applied());
            }
            Event::KeyringChanged => {
                if let Some(gossip) = &agent.gossip {
                    gossip_keys::save(gossip, &agent.config).await;
                }
            }
            Event::User(user) => {
                agent.events.receive(&user.name, &user.payload, user.ltime);
            }
            _ => {}
        }
    }
}

/// What the leader should change in the raft configuration to match the pool.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Live servers of this datacenter that raft does not know: add them (learner, then voter).
    pub(crate) add: Vec<(NodeId, NodeInfo)>,
    /// Servers that left gracefully: remove them.
    pub(crate) remove_left: Vec<NodeId>,
    /// Servers the pool declared failed: remove as far as a quorum allows.
    pub(crate) remove_failed: Vec<NodeId>,
}

/// Compares the pool with the raft configuration. Pure, so the rules are tested on their own.
pub(crate) fn reconcile_plan(
    members: &[Member],
    raft_servers: &BTreeMap<NodeId, ServerRole>,
    datacenter: &str,
    self_id: NodeId,
) -> Reconciliation {
    let mut plan = Reconciliation::default();
    for member in members {
        let Some(peer) = server_peer(member, datacenter) else {
            continue;
        };
        if peer.id == self_id {
            continue;
        }
        let known = raft_servers.contains_key(&peer.id);
        match member.status {
            MemberStatus::Alive if !known => {
                plan.add.push((peer.id, NodeInfo::new(peer.rpc_addr, peer.name)))
            }
            MemberStatus::Left if known => plan.remove_left.push(peer.id),
            MemberStatus::Failed if known => plan.remove_failed.push(peer.id),
            _ => {}
        }
    }
    plan
}

/// The leader's reconciliation loop (see the module documentation). Only a cluster that exists is
/// reconciled: before bootstrap there is no leader.
pub(crate) async fn reconcile<B: Backend>(agent: Arc<Agent<B>>, mut shutdown: watch::Receiver<bool>) {
    let Some(gossip) = agent.gossip.clone() else {
        return;
    };
    let mut dead = DeadServers::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        if !agent.consensus.is_leader() {
            continue;
        }
        let Ok(members) = gossip.members().await else {
            return;
        };
        let raft_servers: BTreeMap<NodeId, ServerRole> = agent
            .consensus
            .servers()
            .into_iter()
            .map(|s| (s.id, s.role))
            .collect();
        let plan = reconcile_plan(&members, &raft_servers, &agent.config.datacenter, agent.node_id);
        for id in plan.remove_left {
            match agent.consensus.remove_server(id).await {
                Ok(()) => tracing::info!(server = id, "removed a server that left"),
                Err(e) => tracing::warn!(server = id, error = %e, "removing a server that left"),
            }
        }
        let remove_failed = dead.due(&plan.remove_failed, std::time::Instant::now(), DEAD_SERVER_GRACE);
        if !remove_failed.is_empty() {
            match agent.consensus.remove_failed_servers(&remove_failed).await {
                Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed failed servers"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "removing failed servers"),
            }
        }
        for (id, info) in plan.add {
            tracing::info!(server = id, addr = %info.rpc_addr, "adding a server seen in the LAN pool");
            // Catching up may take a while (a snapshot). A server that died before gossip noticed
            // never catches up: give up after a while; it stays a learner until it is declared
            // failed, and learners always go then.
            let adding = tokio::time::timeout(ADD_SERVER_DEADLINE, agent.consensus.add_server(id, info));
            tokio::select! {
                result = adding => match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(server = id, error = %e, "adding a server"),
                    Err(_) => tracing::warn!(server = id, "adding a server: it did not catch up in time"),
                },
                _ = shutdown.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

#[cfg(test)]
mod dead_server_tests {
    use super::*;

    fn server(name: &str, id: u64) -> Member {
        Member {
            name: name.into(),
            addr: "127.0.0.1:8301".parse().unwrap(),
            tags: [("role", "consul"), ("dc", "dc1"), ("port", "8300")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("id".to_string(), id.to_string())])
                .collect(),
            incarnation: 1,
            status: MemberStatus::Alive,
        }
    }

    #[test]
    fn servers_sharing_a_raft_id_are_named_and_the_first_keeps_it() {
        let members = [server("a", 1), server("b", 2), server("c", 2), server("d", 9)];
        let conflicts = raft_id_conflicts(&members, "dc1", 9, "me");
        assert_eq!(
            conflicts,
            vec![
                RaftIdConflict {
                    id: 2,
                    holder: "b".into(),
                    refused: "c".into()
                },
                RaftIdConflict {
                    id: 9,
                    holder: "me".into(),
                    refused: "d".into()
                },
            ]
        );
        assert_eq!(
            conflicts[1].to_string(),
            "Member 'd' has conflicting node ID '9' with member 'me'"
        );
        assert!(raft_id_conflicts(&members[..2], "dc1", 9, "me").is_empty());
        // This server's own entry in the pool is not a conflict.
        assert!(raft_id_conflicts(&[server("me", 9)], "dc1", 9, "me").is_empty());
    }

    #[test]
    fn a_failed_server_is_due_only_after_the_grace_and_starts_over_when_it_returns() {
        let mut dead = DeadServers::default();
        let t0 = std::time::Instant::now();
        let grace = Duration::from_secs(30);
        assert!(dead.due(&[7], t0, grace).is_empty());
        assert!(dead.due(&[7], t0 + Duration::from_secs(29), grace).is_empty());
        assert_eq!(dead.due(&[7, 8], t0 + Duration::from_secs(30), grace), vec![7]);
        // 7 came back (alive), then failed again: its grace starts over.
        assert!(dead.due(&[8], t0 + Duration::from_secs(31), grace).is_empty());
        assert!(dead.due(&[7, 8], t0 + Duration::from_secs(40), grace).is_empty());
        assert_eq!(dead.due(&[7, 8], t0 + Duration::from_secs(61), grace), vec![8]);
        assert_eq!(dead.due(&[7, 8], t0 + Duration::from_secs(70), grace), vec![7, 8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, status: MemberStatus, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            addr: "10.0.0.7:8301".parse().unwrap(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            incarnation: 1,
            status,
        }
    }

    fn server(name: &str, id: &str, status: MemberStatus) -> Member {
        member(
            name,
            status,
            &[("role", "consul"), ("dc", "dc1"), ("port", "8300"), ("id", id)],
        )
    }

    #[test]
    fn a_server_member_becomes_a_peer_at_its_rpc_port() {
        let peer = server_peer(&server("s1", "7", MemberStatus::Alive), "dc1").unwrap();
        assert_eq!((peer.id, peer.rpc_addr.as_str()), (7, "10.0.0.7:8300"));
        assert!(server_peer(&server("s1", "7", MemberStatus::Alive), "dc2").is_none());
        let client = member("c1", MemberStatus::Alive, &[("role", "node"), ("dc", "dc1")]);
        assert!(server_peer(&client, "dc1").is_none());
        let bad_id = server("s1", "seven", MemberStatus::Alive);
        assert!(server_peer(&bad_id, "dc1").is_none());
    }

    #[test]
    fn the_plan_adds_live_servers_and_removes_left_and_failed_ones() {
        let members = vec![
            server("self", "1", MemberStatus::Alive),
            server("new", "2", MemberStatus::Alive),
            server("known", "3", MemberStatus::Alive),
            server("gone", "4", MemberStatus::Left),
            server("dead", "5", MemberStatus::Failed),
            server("suspect", "6", MemberStatus::Suspect),
            server("dead-unknown", "8", MemberStatus::Failed),
            member("client", MemberStatus::Alive, &[("role", "node"), ("dc", "dc1")]),
        ];
        let raft: BTreeMap<NodeId, ServerRole> = [1, 3, 4, 5, 6]
            .into_iter()
            .map(|id| (id, ServerRole::Voter))
            .collect();
        let plan = reconcile_plan(&members, &raft, "dc1", 1);
        assert_eq!(plan.add.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(plan.remove_left, vec![4]);
        assert_eq!(plan.remove_failed, vec![5]);
    }

    #[test]
    fn join_addresses_default_to_the_serf_lan_port() {
        let addrs = resolve_addresses(
            &[
                "127.0.0.1".into(),
                "127.0.0.1:9301".into(),
                "::1".into(),
                "[::1]:9302".into(),
                "localhost:9303".into(),
            ],
            DEFAULT_SERF_LAN_PORT,
        );
        assert!(addrs.contains(&"127.0.0.1:8301".parse().unwrap()));
        assert!(addrs.contains(&"127.0.0.1:9301".parse().unwrap()));
        assert!(addrs.contains(&"[::1]:8301".parse().unwrap()));
        assert!(addrs.contains(&"[::1]:9302".parse().unwrap()));
        assert!(addrs.iter().any(|a| a.port() == 9303));
    }
}
