//! One replication round: read the primary's policies (blocking on its index), roles and, with
//! `acl.enable_token_replication`, global tokens; diff each against this datacenter's copies; and
//! apply the differences through raft in bounded batches, every delete before any upsert.

use std::collections::BTreeMap;

use futures::{StreamExt as _, TryStreamExt as _};
use tribune_kvstore::{AclPolicy, AclReplicationBatch, AclRole, AclToken, Backend, Command};

use super::diff::{self, ContentHash, Cursor, Plan, Sync};
use super::wire::{PolicyJson, PolicyStub, RoleJson, TokenJson};
use super::{BLOCKING_WAIT, READS_IN_FLIGHT, fetch};
use crate::fsm::ApplyResponse;
use crate::node::Agent;
use crate::tokens::TokenKind;

/// Most records one replication command carries (the store takes up to 1024).
const BATCH_ITEMS: usize = 512;

/// The primary's indexes as read in one round.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RoundIndexes {
    pub(super) policies: u64,
    pub(super) roles: u64,
    /// Zero when tokens are not replicated.
    pub(super) tokens: u64,
}

/// How many changes a round applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) deletes: usize,
    pub(super) upserts: usize,
}

/// One change to apply, in the order the round applies them.
enum Change {
    DeleteToken(String),
    DeleteRole(String),
    DeletePolicy(String),
    Policy(AclPolicy),
    Role(AclRole),
    Token(AclToken),
}

fn hashes<T>(
    records: &BTreeMap<String, T>,
    hash: impl Fn(&T) -> ContentHash,
) -> BTreeMap<String, ContentHash> {
    records.iter().map(|(id, r)| (id.clone(), hash(r))).collect()
}

pub(super) async fn round<B: Backend>(
    agent: &Agent<B>,
    cursor: &mut Cursor,
) -> Result<(RoundIndexes, Applied), String> {
    let token = agent
        .tokens
        .get(TokenKind::Replication)
        .ok_or_else(|| "no ACL replication token is set (acl.tokens.replication)".to_owned())?;
    let primary = agent.config.primary_datacenter.clone();
    let uri = format!(
        "/v1/acl/policies?stale&index={}&wait={BLOCKING_WAIT}",
        cursor.index()
    );
    let (policy_index, stubs): (u64, Vec<PolicyStub>) = fetch(agent, &primary, &uri, &token)
        .await
        .map_err(|e| format!("failed to retrieve remote ACL policies: {e}"))?;
    // The primary always holds global-management: an empty list is a broken answer, not a
    // reason to delete every policy here.
    if stubs.is_empty() {
        return Err("failed to retrieve remote ACL policies: the primary listed none".into());
    }
    // The two lists are independent: read together, a round costs one round trip to the primary
    // less.
    let roles = async {
        fetch::<_, Vec<RoleJson>>(agent, &primary, "/v1/acl/roles?stale", &token)
            .await
            .map_err(|e| format!("failed to retrieve remote ACL roles: {e}"))
    };
    let tokens = async {
        if !agent.config.acl.enable_token_replication {
            return Ok(None);
        }
        fetch::<_, Vec<TokenJson>>(agent, &primary, "/v1/acl/tokens?stale", &token)
            .await
            .map(Some)
            .map_err(|e| format!("failed to retrieve remote ACL tokens: {e}"))
    };
    let ((role_index, remote_roles), remote_tokens) = futures::try_join!(roles, tokens)?;
    let indexes = RoundIndexes {
        policies: policy_index,
        roles: role_index,
        tokens: remote_tokens.as_ref().map_or(0, |(index, _)| *index),
    };
    let remote_index = indexes.policies.max(indexes.roles).max(indexes.tokens);
    if cursor.observe(remote_index) == Sync::Full {
        tracing::warn!(
            remote_index,
            last = cursor.index(),
            "ACL replication remote index moved backwards, forcing a full ACL sync"
        );
        cursor.reset();
    }

    let (policy_plan, fetched_policies) = plan_policies(agent, &primary, &token, &stubs, cursor).await?;
    let (role_plan, roles) = plan_roles(agent, remote_roles)?;
    let token_plan = match remote_tokens {
        Some((_, tokens)) => Some(plan_tokens(agent, tokens)?),
        None => None,
    };

    let (token_plan, mut tokens) = token_plan.unwrap_or_default();
    let (mut policies, mut roles) = (fetched_policies, roles);
    let changes: Vec<Change> = token_plan
        .deletes
        .into_iter()
        .map(Change::DeleteToken)
        .chain(role_plan.deletes.into_iter().map(Change::DeleteRole))
        .chain(policy_plan.deletes.into_iter().map(Change::DeletePolicy))
        .chain(
            policy_plan
                .upserts
                .iter()
                .filter_map(|id| policies.remove(id))
                .map(Change::Policy),
        )
        .chain(
            role_plan
                .upserts
                .iter()
                .filter_map(|id| roles.remove(id))
                .map(Change::Role),
        )
        .chain(
            token_plan
                .upserts
                .iter()
                .filter_map(|id| tokens.remove(id))
                .map(Change::Token),
        )
        .collect();
    let applied = apply(agent, changes).await?;
    cursor.advance(remote_index, indexes.policies);
    Ok((indexes, applied))
}

/// Policies: the list carries no rules, so those new here or changed since the last round are read
/// in full.
async fn plan_policies<B: Backend>(
    agent: &Agent<B>,
    primary: &str,
    token: &str,
    stubs: &[PolicyStub],
    cursor: &Cursor,
) -> Result<(Plan, BTreeMap<String, AclPolicy>), String> {
    let local: BTreeMap<String, AclPolicy> = agent
        .store
        .acl_policies()
        .map_err(|e| format!("failed to read local ACL policies: {e}"))?
        .value
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let changed: Vec<String> = stubs
        .iter()
        .filter(|stub| !local.contains_key(&stub.id) || stub.modify_index > cursor.policies_listed())
        .map(|stub| stub.id.clone())
        .collect();
    let fetched: Vec<AclPolicy> = futures::stream::iter(changed)
        .map(|id| async move {
            let uri = format!("/v1/acl/policy/{id}?stale");
            fetch::<_, PolicyJson>(agent, primary, &uri, token)
                .await
                .map(|(_, policy)| policy.into_policy())
                .map_err(|e| format!("failed to retrieve remote ACL policy {id}: {e}"))
        })
        .buffer_unordered(READS_IN_FLIGHT)
        .try_collect()
        .await?;
    let fetched: BTreeMap<String, AclPolicy> = fetched.into_iter().map(|p| (p.id.clone(), p)).collect();
    let local_hashes = hashes(&local, diff::policy_hash);
    let remote_hashes: BTreeMap<String, ContentHash> = stubs
        .iter()
        .filter_map(|stub| match fetched.get(&stub.id) {
            Some(policy) => Some((stub.id.clone(), diff::policy_hash(policy))),
            // Unchanged since the last round and present here: as it is here.
            None => local_hashes.get(&stub.id).map(|h| (stub.id.clone(), *h)),
        })
        .collect();
    Ok((diff::plan(&remote_hashes, &local_hashes), fetched))
}

/// Roles: the list carries them whole.
fn plan_roles<B: Backend>(
    agent: &Agent<B>,
    remote: Vec<RoleJson>,
) -> Result<(Plan, BTreeMap<String, AclRole>), String> {
    let remote: BTreeMap<String, AclRole> = remote
        .into_iter()
        .map(|json| {
            let role = json.into_role();
            (role.id.clone(), role)
        })
        .collect();
    let local: BTreeMap<String, AclRole> = agent
        .store
        .acl_roles()
        .map_err(|e| format!("failed to read local ACL roles: {e}"))?
        .value
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let plan = diff::plan(
        &hashes(&remote, diff::role_hash),
        &hashes(&local, diff::role_hash),
    );
    Ok((plan, remote))
}

/// Global tokens: the list carries everything, secrets included when the replication token may
/// write ACLs. Local tokens on either side are never touched.
fn plan_tokens<B: Backend>(
    agent: &Agent<B>,
    remote: Vec<TokenJson>,
) -> Result<(Plan, BTreeMap<String, AclToken>), String> {
    let mut records = BTreeMap::new();
    for json in remote.into_iter().filter(|t| !t.local) {
        if json.secret_id.is_empty() || json.secret_id == "<hidden>" {
            return Err(
                "failed to retrieve unredacted tokens - replication token in use does not grant acl:write"
                    .into(),
            );
        }
        let token = json.into_token()?;
        records.insert(token.accessor_id.clone(), token);
    }
    let local: BTreeMap<String, AclToken> = agent
        .store
        .acl_tokens()
        .map_err(|e| format!("failed to read local ACL tokens: {e}"))?
        .value
        .into_iter()
        .filter(|t| !t.local)
        .map(|t| (t.accessor_id.clone(), t))
        .collect();
    let plan = diff::plan(
        &hashes(&records, diff::token_hash),
        &hashes(&local, diff::token_hash),
    );
    Ok((plan, records))
}

/// Proposes the changes in order, [`BATCH_ITEMS`] per command; each command applies all or nothing,
/// and the first failure ends the round (the next one diffs again, so nothing is lost).
async fn apply<B: Backend>(agent: &Agent<B>, changes: Vec<Change>) -> Result<Applied, String> {
    let mut applied = Applied::default();
    let mut changes = changes.into_iter().peekable();
    while changes.peek().is_some() {
        let mut batch = AclReplicationBatch::default();
        for change in changes.by_ref().take(BATCH_ITEMS) {
            match change {
                Change::DeleteToken(id) => batch.token_deletes.push(id),
                Change::DeleteRole(id) => batch.role_deletes.push(id),
                Change::DeletePolicy(id) => batch.policy_deletes.push(id),
                Change::Policy(policy) => batch.policy_upserts.push(policy),
                Change::Role(role) => batch.role_upserts.push(role),
                Change::Token(token) => batch.token_upserts.push(token),
            }
        }
        let deletes = batch.token_deletes.len() + batch.role_deletes.len() + batch.policy_deletes.len();
        let upserts = batch.policy_upserts.len() + batch.role_upserts.len() + batch.token_upserts.len();
        match agent.propose(&Command::AclReplicationBatch(batch)).await {
            Ok((ApplyResponse::Rejected { message, .. }, _)) => {
                return Err(format!("failed to apply ACL changes: {message}"));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("failed to apply ACL changes: {e:?}")),
        }
        applied.deletes += deletes;
        applied.upserts += upserts;
    }
    Ok(applied)
}
