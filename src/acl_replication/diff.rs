//! The sans-IO half of ACL replication: what to delete and what to upsert, given the primary's
//! records and this datacenter's; when a sync must start over; how long to wait after an error;
//! and when the replicator runs at all. No clock is read here: time comes in as arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use tribune_kvstore::{
    ANONYMOUS_TOKEN_ACCESSOR, AclPolicy, AclRole, AclToken, GLOBAL_MANAGEMENT_POLICY_ID, NodeIdentity,
    ServiceIdentity, TemplatedPolicy,
};

/// A SHA-256 over the fields an operator sets, each length-prefixed so that moving bytes from one
/// field to the next changes the digest. Indexes are left out: they are local to each datacenter.
pub(crate) type ContentHash = [u8; 32];

fn digest<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> ContentHash {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for field in fields {
        context.update(&(field.len() as u64).to_le_bytes());
        context.update(field);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The content hash of a policy.
pub(crate) fn policy_hash(policy: &AclPolicy) -> ContentHash {
    let fixed = [
        policy.id.as_bytes(),
        policy.name.as_bytes(),
        policy.description.as_bytes(),
        policy.rules.as_bytes(),
    ];
    digest(
        fixed
            .into_iter()
            .chain(policy.datacenters.iter().map(|d| d.as_bytes())),
    )
}

/// The identity fields tokens and roles share, flattened for hashing. Each list is preceded by its
/// length so that an item cannot move from one list to the next unnoticed.
fn identity_fields(
    services: &[ServiceIdentity],
    nodes: &[NodeIdentity],
    templates: &[TemplatedPolicy],
) -> Vec<Vec<u8>> {
    let mut fields = vec![(services.len() as u64).to_le_bytes().to_vec()];
    for s in services {
        fields.push(s.service_name.as_bytes().to_vec());
        fields.push((s.datacenters.len() as u64).to_le_bytes().to_vec());
        fields.extend(s.datacenters.iter().map(|d| d.as_bytes().to_vec()));
    }
    fields.push((nodes.len() as u64).to_le_bytes().to_vec());
    for n in nodes {
        fields.push(n.node_name.as_bytes().to_vec());
        fields.push(n.datacenter.as_bytes().to_vec());
    }
    fields.push((templates.len() as u64).to_le_bytes().to_vec());
    for t in templates {
        fields.push(t.template_name.as_bytes().to_vec());
        fields.push(t.name.as_bytes().to_vec());
        fields.push((t.datacenters.len() as u64).to_le_bytes().to_vec());
        fields.extend(t.datacenters.iter().map(|d| d.as_bytes().to_vec()));
    }
    fields
}

/// The content hash of a role. Link names are left out: they follow the linked policy.
pub(crate) fn role_hash(role: &AclRole) -> ContentHash {
    let mut fields: Vec<Vec<u8>> = vec![
        role.id.as_bytes().to_vec(),
        role.name.as_bytes().to_vec(),
        role.description.as_bytes().to_vec(),
        (role.policies.len() as u64).to_le_bytes().to_vec(),
    ];
    fields.extend(role.policies.iter().map(|l| l.id.as_bytes().to_vec()));
    fields.extend(identity_fields(
        &role.service_identities,
        &role.node_identities,
        &role.templated_policies,
    ));
    digest(fields.iter().map(Vec::as_slice))
}

/// The content hash of a token. Link names are left out: they follow the linked policy or role.
pub(crate) fn token_hash(token: &AclToken) -> ContentHash {
    let local: &[u8] = if token.local { b"local" } else { b"global" };
    let mut fields: Vec<Vec<u8>> = vec![
        token.accessor_id.as_bytes().to_vec(),
        token.secret_id.as_bytes().to_vec(),
        token.description.as_bytes().to_vec(),
        local.to_vec(),
        token.expiration_unix_ms.unwrap_or(0).to_le_bytes().to_vec(),
        token.create_time_unix_ms.unwrap_or(0).to_le_bytes().to_vec(),
        token.auth_method.as_bytes().to_vec(),
        (token.policies.len() as u64).to_le_bytes().to_vec(),
    ];
    fields.extend(token.policies.iter().map(|l| l.id.as_bytes().to_vec()));
    fields.push((token.roles.len() as u64).to_le_bytes().to_vec());
    fields.extend(token.roles.iter().map(|l| l.id.as_bytes().to_vec()));
    fields.extend(identity_fields(
        &token.service_identities,
        &token.node_identities,
        &token.templated_policies,
    ));
    digest(fields.iter().map(Vec::as_slice))
}

/// What one round changes locally, in the order it must be applied: every delete before any
/// upsert (a deleted policy may free a name an upserted one takes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// IDs present here but no longer in the primary.
    pub(crate) deletes: Vec<String>,
    /// IDs missing here or whose content differs.
    pub(crate) upserts: Vec<String>,
}

impl Plan {
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.upserts.is_empty()
    }
}

/// Built-in records no round may delete, whatever the primary lists.
fn protected(id: &str) -> bool {
    id == GLOBAL_MANAGEMENT_POLICY_ID || id == ANONYMOUS_TOKEN_ACCESSOR
}

/// The diff of two `(id, hash)` sets. It takes the primary's *successful* answer only: a failed
/// or partial fetch is an error before this point, never an empty list, so a primary that could
/// not be read can never make a round delete anything.
pub(crate) fn plan(remote: &BTreeMap<String, ContentHash>, local: &BTreeMap<String, ContentHash>) -> Plan {
    let deletes = local
        .keys()
        .filter(|id| !remote.contains_key(*id) && !protected(id))
        .cloned()
        .collect();
    let upserts = remote
        .iter()
        .filter(|(id, hash)| local.get(*id) != Some(*hash))
        .map(|(id, _)| id.clone())
        .collect();
    Plan { deletes, upserts }
}

/// What a round must do given the primary's index now and the last one replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// The primary moved on (or stayed): diff as usual and block on its index next.
    Incremental,
    /// The primary's index went backwards (restored from a snapshot): forget the cursor and diff
    /// everything, as after a start.
    Full,
}

/// The primary's index as last replicated, for the blocking queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    index: u64,
    policies: u64,
}

impl Cursor {
    /// The index to block on.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    /// The index of the last policy list replicated: a policy whose modify index is above it may
    /// have changed since. (The blocking index is the highest of the three lists', read one after
    /// the other, so a policy changed between the reads is below it yet was never seen.)
    pub(crate) fn policies_listed(&self) -> u64 {
        self.policies
    }

    /// The primary answered at `remote`.
    pub(crate) fn observe(&self, remote: u64) -> Sync {
        if remote < self.index {
            Sync::Full
        } else {
            Sync::Incremental
        }
    }

    /// A round succeeded up to `remote`, with the policy list read at `policies`.
    pub(crate) fn advance(&mut self, remote: u64, policies: u64) {
        self.index = remote;
        self.policies = policies;
    }

    /// A round failed, or the index went backwards: the next round starts from scratch.
    pub(crate) fn reset(&mut self) {
        *self = Cursor::default();
    }
}

/// Exponential back-off after errors, reset by a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    /// The wait after one more failure.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub(crate) fn succeeded(&mut self) {
        self.next = self.min;
    }
}

/// At most one round per `interval`, with a burst of `burst` rounds: a primary that answers its
/// blocking queries at once (a busy or flapping primary) cannot make the replicator spin.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit<T> {
    interval: Duration,
    burst: u32,
    /// The start times of the last rounds, at most `burst`.
    recent: std::collections::VecDeque<T>,
}

impl<T: Copy + Ord + std::ops::Add<Duration, Output = T>> RateLimit<T> {
    pub(crate) fn new(interval: Duration, burst: u32) -> Self {
        RateLimit {
            interval,
            burst: burst.max(1),
            recent: std::collections::VecDeque::new(),
        }
    }

    /// When the next round may start, if not at `now`; records the round when it may.
    pub(crate) fn admit(&mut self, now: T) -> Option<T> {
        let window = self.interval * self.burst;
        while self.recent.front().is_some_and(|&t| t + window <= now) {
            self.recent.pop_front();
        }
        if self.recent.len() < self.burst as usize {
            self.recent.push_back(now);
            return None;
        }
        self.recent.front().map(|&oldest| oldest + window)
    }
}

/// Whether the replicator should run, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Supervise {
    Start,
    Stop,
    Keep,
}

/// Replication runs while this server leads a secondary datacenter with ACLs on, and only then:
/// started on gaining leadership, stopped on losing it, started again on regaining it (a stopped
/// replicator is never left behind by a leadership change, consul#12295).
pub(crate) fn supervise(running: bool, acl_enabled: bool, secondary: bool, leader: bool) -> Supervise {
    match (running, acl_enabled && secondary && leader) {
        (false, true) => Supervise::Start,
        (true, false) => Supervise::Stop,
        _ => Supervise::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, rules: &str) -> AclPolicy {
        AclPolicy {
            id: id.into(),
            name: format!("p-{id}"),
            description: String::new(),
            rules: rules.into(),
            datacenters: Vec::new(),
            create_index: 1,
            modify_index: 1,
        }
    }

    fn hashes(policies: &[AclPolicy]) -> BTreeMap<String, ContentHash> {
        policies.iter().map(|p| (p.id.clone(), policy_hash(p))).collect()
    }

    #[test]
    fn the_diff_deletes_what_the_primary_dropped_and_upserts_what_changed() {
        let remote = hashes(&[policy("a", "x"), policy("b", "y2"), policy("d", "new")]);
        let local = hashes(&[policy("a", "x"), policy("b", "y"), policy("c", "gone")]);
        let plan = plan(&remote, &local);
        assert_eq!(plan.deletes, vec!["c".to_owned()]);
        assert_eq!(plan.upserts, vec!["b".to_owned(), "d".to_owned()]);
        assert!(super::plan(&remote, &remote).is_empty());
    }

    #[test]
    fn indexes_do_not_change_the_hash_but_content_does() {
        let mut a = policy("a", "x");
        let before = policy_hash(&a);
        a.modify_index = 99;
        assert_eq!(policy_hash(&a), before);
        a.rules = "xy".into();
        assert_ne!(policy_hash(&a), before);
        // Moving bytes between fields changes the digest.
        let mut b = policy("a", "x");
        b.description = "ab".into();
        b.rules = String::new();
        let mut c = policy("a", "x");
        c.description = "a".into();
        c.rules = "b".into();
        assert_ne!(policy_hash(&b), policy_hash(&c));
    }

    /// The safety property: the only way to a plan is a successful fetch. A failed fetch leaves
    /// the round before the diff, so it deletes nothing; built-ins are never deleted even when an
    /// answer omits them.
    #[test]
    fn a_failed_fetch_never_deletes() {
        let local = hashes(&[policy("a", "x"), policy(GLOBAL_MANAGEMENT_POLICY_ID, "m")]);
        let fetched: Result<BTreeMap<String, ContentHash>, String> = Err("Permission denied".into());
        let planned = fetched.map(|remote| plan(&remote, &local));
        assert!(planned.is_err(), "an error stays an error, not an empty list");
        // Even an (accepted) empty answer never deletes the built-in management policy.
        let emptied = plan(&BTreeMap::new(), &local);
        assert_eq!(emptied.deletes, vec!["a".to_owned()]);
    }

    #[test]
    fn a_token_s_roles_and_identities_are_part_of_its_hash() {
        let token = AclToken {
            accessor_id: "t".into(),
            secret_id: "s".into(),
            ..AclToken::default()
        };
        let before = token_hash(&token);
        let with_role = AclToken {
            roles: vec![tribune_kvstore::RoleLink {
                id: "r".into(),
                name: "ops".into(),
            }],
            ..token.clone()
        };
        assert_ne!(token_hash(&with_role), before);
        let with_service = AclToken {
            service_identities: vec![ServiceIdentity {
                service_name: "web".into(),
                datacenters: Vec::new(),
            }],
            ..token.clone()
        };
        assert_ne!(token_hash(&with_service), before);
        assert_ne!(token_hash(&with_service), token_hash(&with_role));
        // A link's name is not content: it follows the linked role.
        let renamed = AclToken {
            roles: vec![tribune_kvstore::RoleLink {
                id: "r".into(),
                name: "renamed".into(),
            }],
            ..token
        };
        assert_eq!(token_hash(&renamed), token_hash(&with_role));
    }

    #[test]
    fn an_index_that_went_backwards_forces_a_full_sync() {
        let mut cursor = Cursor::default();
        assert_eq!(cursor.observe(10), Sync::Incremental);
        cursor.advance(10, 7);
        assert_eq!((cursor.index(), cursor.policies_listed()), (10, 7));
        assert_eq!(cursor.observe(12), Sync::Incremental);
        assert_eq!(cursor.observe(3), Sync::Full);
        cursor.reset();
        assert_eq!((cursor.index(), cursor.policies_listed()), (0, 0));
    }

    #[test]
    fn back_off_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let waits: Vec<_> = (0..4).map(|_| backoff.failed()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000].map(Duration::from_millis).to_vec());
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(250));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_round_per_interval() {
        let start = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        let mut limit = RateLimit::new(second, 2);
        assert_eq!(limit.admit(start), None);
        assert_eq!(limit.admit(start), None);
        assert_eq!(limit.admit(start), Some(start + 2 * second));
        assert_eq!(limit.admit(start + 2 * second), None);
    }

    #[test]
    fn replication_follows_leadership_of_a_secondary_only() {
        // Gained, kept, lost, regained (consul#12295).
        assert_eq!(supervise(false, true, true, true), Supervise::Start);
        assert_eq!(supervise(true, true, true, true), Supervise::Keep);
        assert_eq!(supervise(true, true, true, false), Supervise::Stop);
        assert_eq!(supervise(false, true, true, false), Supervise::Keep);
        assert_eq!(supervise(false, true, true, true), Supervise::Start);
        // Never in the primary, never with ACLs off.
        assert_eq!(supervise(false, true, false, true), Supervise::Keep);
        assert_eq!(supervise(false, false, true, true), Supervise::Keep);
    }
}
