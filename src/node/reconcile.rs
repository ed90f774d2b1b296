//! The leader's catalog reconciliation with the LAN pool (Consul's `reconcileMember` and
//! `reconcileReaped`): every member of the pool is a catalog node with a `serfHealth` check that
//! follows its gossip status, every server is also an instance of the `consul` service, and the
//! nodes of members that left, or that the pool no longer knows, are taken out of the catalog.
//!
//! [`plan`] is pure — members and the catalog's view in, changes out — so it is tested without a
//! cluster; [`Reconciler`] reads both sides, only when the pool or the catalog's nodes changed or
//! a minute passed, and proposes the changes. Nodes registered without a
//! `serfHealth` check (external services registered through `/v1/catalog/register`) are never
//! touched.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use tribune_gossip::{Member, MemberStatus};
use tribune_kvstore::{
    Backend, CheckRegistration, CheckStatus, Command, HealthCheck, Node, Registration, ServiceInstance,
    ServiceRegistration, WatchScope,
};

use super::Agent;
use super::SERF_HEALTH_CHECK;

/// The name of the `serfHealth` check.
pub(crate) const SERF_HEALTH_NAME: &str = "Serf Health Status";
/// Its output while the member is alive.
const ALIVE_OUTPUT: &str = "Agent alive and reachable";
/// Its output once the pool declared the member failed.
const FAILED_OUTPUT: &str = "Agent not live or unreachable";
/// The service every server registers as.
pub(crate) const CONSUL_SERVICE: &str = "consul";

/// What the catalog holds for the nodes the reconciliation manages.
#[derive(Debug, Default)]
pub(crate) struct CatalogView {
    /// Every node, by lowercased name.
    pub(crate) nodes: HashMap<String, Node>,
    /// Every `serfHealth` check, by lowercased node name.
    pub(crate) serf_checks: HashMap<String, HealthCheck>,
    /// Every instance of the `consul` service, by lowercased node name.
    pub(crate) consul_instances: HashMap<String, ServiceInstance>,
}

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CatalogChange {
    /// Register (or refresh) a member's node, check and service.
    Register(Box<Registration>),
    /// Take a node out of the catalog.
    Deregister(String),
}

/// Whether `member` is a server of `datacenter` (Serf's `role` and `dc` tags).
pub(crate) fn is_server(member: &Member, datacenter: &str) -> bool {
    member.tags.get("role").map(String::as_str) == Some("consul")
        && member.tags.get("dc").map(String::as_str) == Some(datacenter)
}

/// The `consul` service a server is registered as: its RPC port, and the versions Consul reports.
fn consul_service(member: &Member) -> Option<ServiceRegistration> {
    let port: u16 = member.tags.get("port")?.parse().ok()?;
    let mut meta = BTreeMap::new();
    if let Some(raft) = member.tags.get("raft_vsn") {
        meta.insert("raft_version".to_owned(), raft.clone());
    }
    if let Some(build) = member.tags.get("build") {
        let version = build.split(':').next().unwrap_or(build);
        meta.insert("version".to_owned(), version.to_owned());
    }
    Some(ServiceRegistration {
        id: CONSUL_SERVICE.to_owned(),
        service: CONSUL_SERVICE.to_owned(),
        port,
        meta,
        ..ServiceRegistration::default()
    })
}

/// Whether the catalog already shows `member` as the reconciliation would register it.
fn up_to_date(
    member: &Member,
    status: CheckStatus,
    service: Option<&ServiceRegistration>,
    view: &CatalogView,
) -> bool {
    let key = member.name.to_ascii_lowercase();
    let address = member.addr.ip().to_string();
    let node_ok = view.nodes.get(&key).is_some_and(|n| n.address == address);
    let check_ok = view.serf_checks.get(&key).is_some_and(|c| c.status == status);
    let service_ok = match (service, view.consul_instances.get(&key)) {
        (None, None) => true,
        (Some(wanted), Some(have)) => have.port == wanted.port && have.meta == wanted.meta,
        _ => false,
    };
    node_ok && check_ok && service_ok
}

/// The changes that make the catalog follow the pool. `members` is the LAN pool as this server
/// sees it.
pub(crate) fn plan(members: &[Member], datacenter: &str, view: &CatalogView) -> Vec<CatalogChange> {
    let mut changes = Vec::new();
    let mut known = std::collections::HashSet::new();
    for member in members {
        let key = member.name.to_ascii_lowercase();
        known.insert(key.clone());
        let status = match member.status {
            MemberStatus::Alive | MemberStatus::Suspect => CheckStatus::Passing,
            MemberStatus::Left => {
                if view.nodes.contains_key(&key) && view.serf_checks.contains_key(&key) {
                    changes.push(CatalogChange::Deregister(member.name.clone()));
                }
                continue;
            }
            // Failed, and any state a later pool adds: not known to be alive.
            _ => CheckStatus::Critical,
        };
        let service = is_server(member, datacenter)
            .then(|| consul_service(member))
            .flatten();
        if up_to_date(member, status, service.as_ref(), view) {
            continue;
        }
        let existing = view.nodes.get(&key);
        let address = member.addr.ip().to_string();
        let mut tagged_addresses = existing.map(|n| n.tagged_addresses.clone()).unwrap_or_default();
        tagged_addresses
            .entry("lan".to_owned())
            .or_insert_with(|| address.clone());
        changes.push(CatalogChange::Register(Box::new(Registration {
            node: member.name.clone(),
            id: existing.map(|n| n.id.clone()).unwrap_or_default(),
            address,
            tagged_addresses,
            node_meta: existing.map(|n| n.meta.clone()).unwrap_or_default(),
            service,
            checks: vec![CheckRegistration {
                check_id: SERF_HEALTH_CHECK.to_owned(),
                name: SERF_HEALTH_NAME.to_owned(),
                status: Some(status),
                output: if status == CheckStatus::Passing {
                    ALIVE_OUTPUT
                } else {
                    FAILED_OUTPUT
                }
                .to_owned(),
                check_type: "serf".to_owned(),
                ..CheckRegistration::default()
            }],
            skip_node_update: false,
        })));
    }
    // Reaped: managed by the pool once, unknown to it now.
    for (key, check) in &view.serf_checks {
        if !known.contains(key) {
            changes.push(CatalogChange::Deregister(check.node.clone()));
        }
    }
    changes
}

/// How long the leader goes without reading the catalog when neither the pool nor the catalog's
/// nodes changed; the full pass then repairs drift no index shows (a `serfHealth` check deregistered
/// through the API), as Consul's 60 s reconciliation does.
const FULL_PASS_INTERVAL: Duration = Duration::from_secs(60);

/// The leader's reconciliation across ticks: what the last successful pass saw, so a tick where
/// nothing changed costs one read of the pool and one index read, not a read of the whole catalog.
#[derive(Debug, Default)]
pub(super) struct Reconciler {
    /// The members (by name) and the nodes table's index the last successful pass started from.
    in_step_with: Option<(Vec<Member>, u64)>,
    /// When the next pass runs whatever changed; `None`: at once.
    next_full_pass: Option<Instant>,
}

impl Reconciler {
    /// Leadership lost or gained: the next pass runs in full.
    pub(super) fn forget(&mut self) {
        *self = Reconciler::default();
    }

    /// Reads the pool, and, when it or the catalog's nodes changed since the last pass (or a full
    /// pass is due at `now`), the catalog, and proposes what [`plan`] finds. Leader only.
    pub(super) async fn run<B: Backend>(&mut self, agent: &Agent<B>, now: Instant) {
        let Some(gossip) = &agent.gossip else {
            return;
        };
        let mut members = match gossip.members().await {
            Ok(members) => members,
            Err(e) => {
                tracing::warn!(error = %e, "reading the LAN pool to reconcile the catalog");
                return;
            }
        };
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let nodes_index = match agent.store.scope_index(&WatchScope::Nodes) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(error = %e, "reading the catalog's index to reconcile it");
                return;
            }
        };
        let full_pass_due = self.next_full_pass.is_none_or(|due| now >= due);
        let unchanged = self
            .in_step_with
            .as_ref()
            .is_some_and(|(seen, index)| *seen == members && *index == nodes_index);
        if unchanged && !full_pass_due {
            return;
        }
        if reconcile(agent, &members).await {
            self.in_step_with = Some((members, nodes_index));
            if full_pass_due {
                self.next_full_pass = Some(now + FULL_PASS_INTERVAL);
            }
        }
    }
}

/// Reads the catalog and proposes what [`plan`] finds for `members`; whether every change was
/// applied.
async fn reconcile<B: Backend>(agent: &Agent<B>, members: &[Member]) -> bool {
    let view = match catalog_view(agent) {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(error = %e, "reading the catalog to reconcile it");
            return false;
        }
    };
    for change in plan(members, &agent.config.datacenter, &view) {
        let command = match change {
            CatalogChange::Register(registration) => {
                tracing::debug!(node = %registration.node, "reconciling a member into the catalog");
                Command::CatalogRegister(*registration)
            }
            CatalogChange::Deregister(node) => {
                tracing::info!(node = %node, "member left the pool: deregistering it");
                Command::CatalogDeregister {
                    node,
                    service_id: None,
                    check_id: None,
                }
            }
        };
        if let Err(e) = agent.propose(&command).await {
            tracing::warn!(error = ?e, "reconciling the catalog");
            return false;
        }
    }
    true
}

fn catalog_view<B: Backend>(agent: &Agent<B>) -> Result<CatalogView, tribune_kvstore::ReadError> {
    let store = &agent.store;
    let nodes = store
        .nodes()?
        .value
        .into_iter()
        .map(|n| (n.node.to_ascii_lowercase(), n))
        .collect();
    let serf_checks = store
        .checks_in_state(None)?
        .value
        .into_iter()
        .filter(|c| c.check_id == SERF_HEALTH_CHECK)
        .map(|c| (c.node.to_ascii_lowercase(), c))
        .collect();
    let consul_instances = store
        .service_nodes(CONSUL_SERVICE)?
        .value
        .into_iter()
        .filter(|i| i.service.id == CONSUL_SERVICE)
        .map(|i| (i.node.node.to_ascii_lowercase(), i.service))
        .collect();
    Ok(CatalogView {
        nodes,
        serf_checks,
        consul_instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, status: MemberStatus, server: bool) -> Member {
        let mut tags = tribune_gossip::Tags::new();
        tags.insert("role".into(), if server { "consul" } else { "node" }.into());
        tags.insert("dc".into(), "dc1".into());
        tags.insert("port".into(), "8300".into());
        tags.insert("build".into(), "0.1.0:tribune".into());
        Member {
            name: name.into(),
            addr: "10.0.0.1:8301".parse().unwrap(),
            tags,
            incarnation: 1,
            status,
        }
    }

    fn apply(view: &mut CatalogView, changes: &[CatalogChange]) {
        for change in changes {
            match change {
                CatalogChange::Register(r) => {
                    let r = r.as_ref();
                    let key = r.node.to_ascii_lowercase();
                    view.nodes.insert(
                        key.clone(),
                        Node {
                            node: r.node.clone(),
                            address: r.address.clone(),
                            ..Node::default()
                        },
                    );
                    let check = &r.checks[0];
                    view.serf_checks.insert(
                        key.clone(),
                        HealthCheck {
                            node: r.node.clone(),
                            check_id: check.check_id.clone(),
                            name: check.name.clone(),
                            status: check.status.unwrap(),
                            notes: String::new(),
                            output: check.output.clone(),
                            service_id: String::new(),
                            service_name: String::new(),
                            service_tags: Vec::new(),
                            check_type: check.check_type.clone(),
                            definition: Default::default(),
                            create_index: 1,
                            modify_index: 1,
                        },
                    );
                    if let Some(s) = &r.service {
                        view.consul_instances.insert(
                            key,
                            ServiceInstance {
                                node: r.node.clone(),
                                id: s.id.clone(),
                                service: s.service.clone(),
                                port: s.port,
                                meta: s.meta.clone(),
                                ..ServiceInstance::default()
                            },
                        );
                    }
                }
                CatalogChange::Deregister(node) => {
                    let key = node.to_ascii_lowercase();
                    view.nodes.remove(&key);
                    view.serf_checks.remove(&key);
                    view.consul_instances.remove(&key);
                }
            }
        }
    }

    #[test]
    fn members_are_registered_once_and_follow_their_status() {
        let mut view = CatalogView::default();
        let mut members = vec![
            member("s1", MemberStatus::Alive, true),
            member("c1", MemberStatus::Alive, false),
        ];
        let changes = plan(&members, "dc1", &view);
        assert_eq!(changes.len(), 2);
        let CatalogChange::Register(server) = &changes[0] else {
            panic!("{changes:?}");
        };
        assert_eq!(server.address, "10.0.0.1");
        assert_eq!(server.service.as_ref().unwrap().port, 8300);
        assert_eq!(server.checks[0].status, Some(CheckStatus::Passing));
        let CatalogChange::Register(client) = &changes[1] else {
            panic!("{changes:?}");
        };
        assert!(client.service.is_none());
        apply(&mut view, &changes);
        assert!(
            plan(&members, "dc1", &view).is_empty(),
            "nothing to do once in step"
        );

        members[1].status = MemberStatus::Failed;
        let changes = plan(&members, "dc1", &view);
        assert_eq!(changes.len(), 1);
        let CatalogChange::Register(failed) = &changes[0] else {
            panic!("{changes:?}");
        };
        assert_eq!(failed.checks[0].status, Some(CheckStatus::Critical));
        assert_eq!(failed.checks[0].output, FAILED_OUTPUT);
        apply(&mut view, &changes);

        members[1].status = MemberStatus::Left;
        let changes = plan(&members, "dc1", &view);
        assert_eq!(changes, vec![CatalogChange::Deregister("c1".into())]);
        apply(&mut view, &changes);
        assert!(plan(&members, "dc1", &view).is_empty());
    }

    #[test]
    fn reaped_members_go_and_external_nodes_stay() {
        let mut view = CatalogView::default();
        let members = vec![
            member("s1", MemberStatus::Alive, true),
            member("gone", MemberStatus::Alive, false),
        ];
        let changes = plan(&members, "dc1", &view);
        apply(&mut view, &changes);
        view.nodes.insert(
            "external".into(),
            Node {
                node: "external".into(),
                address: "192.0.2.1".into(),
                ..Node::default()
            },
        );
        let changes = plan(&members[..1], "dc1", &view);
        assert_eq!(changes, vec![CatalogChange::Deregister("gone".into())]);
    }

    #[test]
    fn an_address_change_is_registered_again() {
        let mut view = CatalogView::default();
        let mut members = vec![member("s1", MemberStatus::Alive, true)];
        let changes = plan(&members, "dc1", &view);
        apply(&mut view, &changes);
        members[0].addr = "10.0.0.9:8301".parse().unwrap();
        let changes = plan(&members, "dc1", &view);
        let [CatalogChange::Register(r)] = changes.as_slice() else {
            panic!("{changes:?}");
        };
        assert_eq!(r.address, "10.0.0.9");
    }
}
