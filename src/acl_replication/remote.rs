//! A token the primary knows but this secondary has not replicated yet is resolved at the primary
//! (`/v1/acl/token/self` with that secret) and cached briefly, so that a global token works in every
//! datacenter as soon as it is created (Consul fails it until replication catches up, consul#4837).
//!
//! The fetch is async and happens in the dispatch, before the handler; the handler's synchronous
//! resolution then finds the token through [`resolve`]'s source, which asks the local state first
//! and this cache second.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;
use tribune_acl::{
    ANONYMOUS_TOKEN_SECRET, DownPolicy, Freshness, Policy, Resolution, ResolveError, Resolver, Role,
    SourceError, Token, TokenSource,
};
use tribune_kvstore::{AclPolicy, AclRole, AclToken, Backend, Store};

use super::wire::{PolicyJson, RoleJson, TokenJson};
use super::{fetch, is_acl_secondary};
use crate::acl::{StoreTokens, policy_from_store, role_from_store, token_from_store};
use crate::config::DownPolicy as ConfigDownPolicy;
use crate::node::Agent;
use crate::tokens::TokenKind;

/// How long a secret the primary did not know is not asked about again.
const MISSING_TTL: Duration = Duration::from_secs(2);
/// How long a primary that could not be asked is not asked again about the same secret: requests
/// meanwhile resolve under `down_policy` at once instead of each waiting for the WAN to fail.
const UNREACHABLE_TTL: Duration = Duration::from_secs(1);
/// Most secrets remembered; past it the cache starts over (it only saves round trips).
const MAX_ENTRIES: usize = 4096;

type SecretKey = [u8; 32];

fn secret_key(secret: &str) -> SecretKey {
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref());
    key
}

/// A token the primary resolved, with the policies and roles it links that had not replicated yet.
#[derive(Debug, Clone)]
struct Learned {
    token: AclToken,
    policies: Vec<AclPolicy>,
    roles: Vec<AclRole>,
}

/// What asking the primary about a secret gave.
#[derive(Debug, Clone)]
enum Answer {
    Found(Box<Learned>),
    /// The primary does not know the secret (or knows it only as one of its local tokens).
    Unknown,
    /// The primary could not be asked or did not answer.
    Unreachable(String),
}

#[derive(Debug, Clone)]
struct Entry {
    at: Instant,
    /// How long the answer is trusted: a found token as long as `acl.token_ttl` says, like the
    /// resolver's own cache (a longer life here would keep a token the resolver considers stale
    /// from being asked about again, and so from `down_policy` and from revocation).
    ttl: Duration,
    answer: Answer,
}

impl Entry {
    fn now(answer: Answer, token_ttl: Duration) -> Entry {
        let ttl = match answer {
            Answer::Found(_) => token_ttl,
            Answer::Unknown => MISSING_TTL,
            Answer::Unreachable(_) => UNREACHABLE_TTL,
        };
        Entry {
            at: Instant::now(),
            ttl,
            answer,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        now.duration_since(self.at) < self.ttl
    }

    fn learned(&self) -> Option<&Learned> {
        match &self.answer {
            Answer::Found(learned) => Some(learned),
            _ => None,
        }
    }
}

/// Tokens resolved at the primary, keyed by the SHA-256 of their secret.
#[derive(Debug, Default)]
pub(crate) struct RemoteTokens {
    entries: Mutex<HashMap<SecretKey, Entry>>,
    /// Secrets a background refresh is asking the primary about (`async-cache`), so that a burst of
    /// requests with one stale token starts one refresh.
    refreshing: Mutex<HashSet<SecretKey>>,
}

impl RemoteTokens {
    /// Forgets everything (replication just changed the local state).
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    fn fresh(&self, key: &SecretKey, now: Instant) -> Option<Entry> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        entry.is_fresh(now).then(|| entry.clone())
    }

    fn insert(&self, key: SecretKey, entry: Entry) {
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, entry);
    }

    /// The token with `secret` as the primary resolved it, while the cache still trusts it.
    pub(crate) fn token(&self, secret: &str, now: Instant) -> Option<AclToken> {
        match self.fresh(&secret_key(secret), now)?.answer {
            Answer::Found(learned) => Some(learned.token.clone()),
            _ => None,
        }
    }

    /// The entry for `key` if it is fresh, or, with `serve_stale`, a stale one that found a token.
    fn usable(&self, key: &SecretKey, now: Instant, serve_stale: bool) -> Option<Entry> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        let stale_but_found = serve_stale && entry.learned().is_some();
        (entry.is_fresh(now) || stale_but_found).then(|| entry.clone())
    }

    /// The token with `secret`, `None` when the primary does not know it or was not asked, and an
    /// error when it was asked just now and could not answer (so that `down_policy` applies). With
    /// `serve_stale` (`async-cache`), a token found earlier is served however old, while a
    /// background refresh asks again.
    fn lookup(&self, secret: &str, now: Instant, serve_stale: bool) -> Result<Option<AclToken>, SourceError> {
        match self
            .usable(&secret_key(secret), now, serve_stale)
            .map(|entry| entry.answer)
        {
            Some(Answer::Found(learned)) => Ok(Some(learned.token.clone())),
            Some(Answer::Unreachable(reason)) => Err(SourceError::Unreachable { reason }),
            Some(Answer::Unknown) | None => Ok(None),
        }
    }

    /// Whether the primary found a token with `secret` at some point (however long ago).
    fn found_before(&self, secret: &str) -> bool {
        self.entries
            .lock()
            .get(&secret_key(secret))
            .is_some_and(|entry| entry.learned().is_some())
    }

    fn policy(
        &self,
        now: Instant,
        serve_stale: bool,
        matches: impl Fn(&AclPolicy) -> bool,
    ) -> Option<AclPolicy> {
        let entries = self.entries.lock();
        entries
            .values()
            .filter(|e| serve_stale || e.is_fresh(now))
            .filter_map(Entry::learned)
            .flat_map(|learned| learned.policies.iter())
            .find(|p| matches(p))
            .cloned()
    }

    fn role(&self, now: Instant, serve_stale: bool, matches: impl Fn(&AclRole) -> bool) -> Option<AclRole> {
        let entries = self.entries.lock();
        entries
            .values()
            .filter(|e| serve_stale || e.is_fresh(now))
            .filter_map(Entry::learned)
            .flat_map(|learned| learned.roles.iter())
            .find(|r| matches(r))
            .cloned()
    }
}

/// The local state first, then the tokens the primary resolved.
struct WithRemote<'a, B: Backend> {
    local: StoreTokens<'a, B>,
    remote: &'a RemoteTokens,
    now: Instant,
    /// `async-cache`: what the primary answered earlier is served however old.
    serve_stale: bool,
}

impl<B: Backend> TokenSource for WithRemote<'_, B> {
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError> {
        match self.local.token_by_secret(secret)? {
            Some(token) => Ok(Some(token)),
            None => Ok(self
                .remote
                .lookup(secret, self.now, self.serve_stale)?
                .map(token_from_store)),
        }
    }

    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError> {
        match self.local.policy_by_id(id)? {
            Some(policy) => Ok(Some(policy)),
            None => Ok(self
                .remote
                .policy(self.now, self.serve_stale, |p| p.id == id)
                .map(policy_from_store)),
        }
    }

    fn role_by_id(&self, id: &str) -> Result<Option<Role>, SourceError> {
        match self.local.role_by_id(id)? {
            Some(role) => Ok(Some(role)),
            None => Ok(self
                .remote
                .role(self.now, self.serve_stale, |r| r.id == id)
                .map(role_from_store)),
        }
    }

    fn role_by_name(&self, name: &str) -> Result<Option<Role>, SourceError> {
        match self.local.role_by_name(name)? {
            Some(role) => Ok(Some(role)),
            None => Ok(self
                .remote
                .role(self.now, self.serve_stale, |r| r.name == name)
                .map(role_from_store)),
        }
    }

    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError> {
        match self.local.policy_by_name(name)? {
            Some(policy) => Ok(Some(policy)),
            None => Ok(self
                .remote
                .policy(self.now, self.serve_stale, |p| p.name == name)
                .map(policy_from_store)),
        }
    }
}

/// Resolves a secret against the local state and, in a secondary, the tokens the primary resolved.
pub(crate) fn resolve<B: Backend>(
    resolver: &Resolver,
    store: &Store<B>,
    remote: &RemoteTokens,
    secret: &str,
) -> Result<Resolution, ResolveError> {
    let source = WithRemote {
        local: StoreTokens(store),
        remote,
        now: Instant::now(),
        serve_stale: resolver.config().down_policy == DownPolicy::AsyncCache,
    };
    let now = SystemTime::now();
    let resolution = resolver.resolve(&source, secret, now)?;
    if resolution.freshness == Freshness::RefreshDue {
        // `async-cache` served a stale entry and wants it refreshed. The primary is asked in the
        // background ([`learn_before_serving`]), so the refresh reads only memory: the newest answer
        // the primary gave; a primary that could not answer leaves the cached entry in place.
        return resolver.refresh(&source, secret, now);
    }
    Ok(resolution)
}

/// Before a request is served in a secondary: the primary is asked about a secret this datacenter
/// does not hold ([`learn`]) and the request waits for the answer, except under `async-cache` for a
/// token the primary found before, which is served from the cache at once while one background task
/// asks again, as Consul's async-cache does.
pub(crate) async fn learn_before_serving<B: Backend>(agent: &Arc<Agent<B>>, secret: &str) {
    let remote = &agent.acl_replication.remote;
    if agent.config.acl.down_policy != ConfigDownPolicy::AsyncCache || !remote.found_before(secret) {
        learn(agent, secret).await;
        return;
    }
    let key = secret_key(secret);
    if !remote.refreshing.lock().insert(key) {
        return;
    }
    let agent = Arc::clone(agent);
    let secret = secret.to_owned();
    tokio::spawn(async move {
        learn(&agent, &secret).await;
        agent.acl_replication.remote.refreshing.lock().remove(&key);
    });
}

/// In a secondary, asks the primary about a secret this datacenter does not know, unless it was
/// asked recently; what it learns goes into the cache [`resolve`] reads. A local token of the
/// primary is not usable here and is treated as unknown; a primary that cannot be reached is
/// remembered as such for a moment, and resolution then applies `down_policy`, as a Consul
/// secondary does when it cannot reach the primary.
async fn learn<B: Backend>(agent: &Agent<B>, secret: &str) {
    if !is_acl_secondary(agent) || secret.is_empty() || secret == ANONYMOUS_TOKEN_SECRET {
        return;
    }
    match agent.store.acl_token_by_secret(secret) {
        Ok(found) if found.value.is_none() => {}
        _ => return,
    }
    let remote = &agent.acl_replication.remote;
    let key = secret_key(secret);
    if remote.fresh(&key, Instant::now()).is_some() {
        return;
    }
    let primary = agent.config.primary_datacenter.clone();
    let token_ttl = agent.config.acl.token_ttl;
    let token = match fetch::<_, TokenJson>(agent, &primary, "/v1/acl/token/self", secret).await {
        Ok((_, json)) if !json.local => match json.into_token() {
            Ok(token) => token,
            Err(e) => {
                tracing::debug!(error = %e, "a token from the primary could not be read");
                remote.insert(key, Entry::now(Answer::Unknown, token_ttl));
                return;
            }
        },
        Ok(_) => {
            remote.insert(key, Entry::now(Answer::Unknown, token_ttl));
            return;
        }
        Err(message) if message.contains("ACL not found") => {
            remote.insert(key, Entry::now(Answer::Unknown, token_ttl));
            return;
        }
        Err(message) => {
            tracing::debug!(error = %message, "the primary could not resolve a token");
            // Under async-cache a token found earlier goes on being served; other down policies
            // need to see the failure to apply themselves.
            let keep_found =
                agent.config.acl.down_policy == ConfigDownPolicy::AsyncCache && remote.found_before(secret);
            if !keep_found {
                remote.insert(key, Entry::now(Answer::Unreachable(message), token_ttl));
            }
            return;
        }
    };
    // Its policies, where they have not replicated yet: read with the replication token, since
    // the token itself may not grant acl:read.
    let reader = agent
        .tokens
        .get(TokenKind::Replication)
        .unwrap_or_else(|| secret.to_owned());
    let mut roles = Vec::new();
    for link in &token.roles {
        let known = matches!(agent.store.acl_role(&link.id), Ok(found) if found.value.is_some());
        if known {
            continue;
        }
        let uri = format!("/v1/acl/role/{}?stale", link.id);
        match fetch::<_, RoleJson>(agent, &primary, &uri, &reader).await {
            Ok((_, role)) => roles.push(role.into_role()),
            Err(message) => {
                tracing::debug!(role = %link.id, error = %message, "reading a role at the primary")
            }
        }
    }
    let policy_ids: Vec<String> = token
        .policies
        .iter()
        .map(|link| link.id.clone())
        .chain(
            roles
                .iter()
                .flat_map(|role| role.policies.iter().map(|link| link.id.clone())),
        )
        .collect();
    let mut policies = Vec::new();
    for id in policy_ids {
        let known = matches!(agent.store.acl_policy(&id), Ok(found) if found.value.is_some());
        if known || policies.iter().any(|p: &AclPolicy| p.id == id) {
            continue;
        }
        let uri = format!("/v1/acl/policy/{id}?stale");
        match fetch::<_, PolicyJson>(agent, &primary, &uri, &reader).await {
            Ok((_, policy)) => policies.push(policy.into_policy()),
            Err(message) => {
                tracing::debug!(policy = %id, error = %message, "reading a policy at the primary")
            }
        }
    }
    remote.insert(
        key,
        Entry::now(
            Answer::Found(Box::new(Learned {
                token,
                policies,
                roles,
            })),
            token_ttl,
        ),
    );
}
