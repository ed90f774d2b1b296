//! From a presented secret to an [`Authorizer`]: the [`TokenSource`] trait and the caching [`Resolver`]
//! with Consul's TTLs and `down_policy`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::access::{DefaultPolicy, DownPolicy};
use crate::authorizer::Authorizer;
use crate::identity::{IdentityOwner, NodeIdentity, RoleLink, ServiceIdentity, TemplatedPolicy};
use crate::role::Role;
use crate::rules::{PolicyRules, RuleError};
use crate::token::{GLOBAL_MANAGEMENT_POLICY_ID, Policy, PolicyLink, Token};

/// Why a [`TokenSource`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The authority could not be asked or did not answer (no leader, primary datacenter unreachable,
    /// timeout...). The resolver applies `down_policy`.
    #[error("ACL source unreachable: {reason}")]
    Unreachable {
        /// Human-readable cause, for logs.
        reason: String,
    },
}

/// Where tokens, policies and roles come from: the replicated state in the primary datacenter, or the primary
/// itself (over RPC) in a secondary one.
///
/// Implementations MUST:
/// - return `Ok(None)` only when the source *knows* the object does not exist (an authoritative or
///   replicated-state answer); any failure to find out MUST be `Err(SourceError::Unreachable)`, because the
///   resolver turns `Ok(None)` into "ACL not found" but `Err` into `down_policy`;
/// - return tokens even when expired (the resolver checks expiry against the `now` it is given);
/// - answer `policy_by_name` and `role_by_name` with the object currently bearing that name;
/// - not block without bound: a timeout is an `Unreachable` error;
/// - be callable from several threads at once if the resolver is shared (`&self` methods).
///
/// A source need not compare secrets in constant time: the resolver checks the returned token's secret
/// against the presented one itself, in constant time.
pub trait TokenSource {
    /// The token whose SecretID is `secret`.
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError>;
    /// The policy with ID `id`.
    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError>;
    /// The policy named `name`.
    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError>;
    /// The role with ID `id`.
    fn role_by_id(&self, id: &str) -> Result<Option<Role>, SourceError>;
    /// The role named `name`.
    fn role_by_name(&self, name: &str) -> Result<Option<Role>, SourceError>;
}

/// Why a secret did not resolve. Both variants map to HTTP 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No such token, or the token has expired (Consul does not distinguish them to callers).
    #[error("ACL not found")]
    AclNotFound,
    /// A linked policy's (or a synthesized policy's) stored rules do not parse (they are validated on write, so this means the
    /// stored state is damaged or was written by something else).
    #[error("policy {policy_id} has invalid rules: {error}")]
    InvalidPolicy {
        /// The policy's ID.
        policy_id: String,
        /// What is wrong with its rules.
        error: RuleError,
    },
}

/// How current the answer of [`Resolver::resolve`] is. Ordered from best to most degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Freshness {
    /// Every object came from the source or from the cache within its TTL.
    Fresh,
    /// `async-cache`: some object was past its TTL and was served without asking the source. The caller
    /// should call [`Resolver::refresh`] for this secret (typically on a background task).
    RefreshDue,
    /// The source failed and some object was served from the cache past its TTL (`extend-cache` or
    /// `async-cache`).
    Extended,
    /// The source failed and nothing usable was cached: the authorizer is the `down_policy` fallback.
    DownPolicy,
}

/// The outcome of resolving a secret.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// What the token may do.
    pub authorizer: Arc<Authorizer>,
    /// The token, when it is known (absent when `down_policy` decided before any token was seen).
    pub token: Option<Arc<Token>>,
    /// How current the answer is.
    pub freshness: Freshness,
}

/// Resolver settings, mirroring Consul's `acl` agent configuration block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The local datacenter; policies restricted to other datacenters do not apply here.
    pub datacenter: String,
    /// `acl.default_policy`.
    pub default_policy: DefaultPolicy,
    /// `acl.down_policy`.
    pub down_policy: DownPolicy,
    /// `acl.token_ttl`: how long a resolved token is trusted without asking again.
    pub token_ttl: Duration,
    /// `acl.policy_ttl`: how long a resolved policy is trusted without asking again.
    pub policy_ttl: Duration,
    /// `acl.role_ttl`: how long a resolved role is trusted without asking again.
    pub role_ttl: Duration,
}

/// Consul's default for `acl.token_ttl`, `acl.policy_ttl` and `acl.role_ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

impl ResolverConfig {
    /// Consul's defaults: `default_policy = allow`, `down_policy = extend-cache`, TTLs of 30 s.
    pub fn new(datacenter: impl Into<String>) -> Self {
        ResolverConfig {
            datacenter: datacenter.into(),
            default_policy: DefaultPolicy::Allow,
            down_policy: DownPolicy::ExtendCache,
            token_ttl: DEFAULT_TTL,
            policy_ttl: DEFAULT_TTL,
            role_ttl: DEFAULT_TTL,
        }
    }
}

type SecretKey = [u8; 32];

#[derive(Debug, Clone)]
struct TokenEntry {
    token: Arc<Token>,
    fetched_at: SystemTime,
}

#[derive(Debug, Clone)]
struct ParsedPolicy {
    policy: Policy,
    rules: Arc<PolicyRules>,
}

#[derive(Debug, Clone)]
struct PolicyEntry {
    /// `None` caches "the source says there is no such policy".
    found: Option<Arc<ParsedPolicy>>,
    /// Bumped whenever the entry's content is replaced, so authorizers built from it are not reused.
    generation: u64,
    fetched_at: SystemTime,
}

#[derive(Debug, Clone)]
struct RoleEntry {
    /// `None` caches "the source says there is no such role".
    found: Option<Arc<Role>>,
    fetched_at: SystemTime,
}

/// Rules synthesized from an identity or a template, parsed once.
#[derive(Debug, Clone)]
struct SyntheticEntry {
    generation: u64,
    rules: Arc<PolicyRules>,
}

/// Authorizers are keyed by the sorted generations of the policies they were built from: a generation is
/// unique to one stored policy's ID and content, or to one synthesized rules text. (Roles need none of
/// their own: what a role grants is the generations of its policies and synthesized rules.)
type AuthorizerKey = Vec<u64>;

/// Beyond this many distinct synthesized rules texts the cache of them is cleared. Generations are never
/// reused, so authorizers keyed by dropped ones simply stop being hit.
const MAX_CACHED_SYNTHETIC: usize = 4096;

/// Beyond this many cached authorizers the cache is cleared: it only holds derived data, and clearing
/// bounds the growth caused by superseded policy generations.
const MAX_CACHED_AUTHORIZERS: usize = 4096;

#[derive(Debug, Default)]
struct Cache {
    tokens: HashMap<SecretKey, TokenEntry>,
    policies: HashMap<String, PolicyEntry>,
    policy_ids_by_name: HashMap<String, String>,
    roles: HashMap<String, RoleEntry>,
    role_ids_by_name: HashMap<String, String>,
    synthetic: HashMap<String, SyntheticEntry>,
    authorizers: HashMap<AuthorizerKey, Arc<Authorizer>>,
    next_generation: u64,
}

/// Resolves secrets to authorizers through a [`TokenSource`], caching tokens, policies, roles,
/// synthesized rules and built authorizers, and applying `down_policy` when the source fails.
///
/// A token grants the union of its policies, its roles' policies, and the policies synthesized from its
/// own and its roles' service identities, node identities and templated policies, each kept only where
/// its datacenter scoping includes [`ResolverConfig::datacenter`]. Missing policies and roles are
/// skipped; identities and templated policies that do not validate (damaged state) grant nothing.
///
/// It reads no clock (every call takes `now`) and holds its lock only while touching the cache, never
/// while the source is being asked. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Resolver {
    config: ResolverConfig,
    cache: Mutex<Cache>,
    management: Arc<Authorizer>,
    /// Tokens served from the cache without asking the source.
    token_cache_hits: AtomicU64,
    /// Tokens the source was asked for.
    token_cache_misses: AtomicU64,
}

/// How often the token cache answered: Consul's `acl.token.cache_hit` and `cache_miss` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCacheCounts {
    /// Resolutions that used a cached token without asking the source.
    pub hits: u64,
    /// Resolutions that asked the source for the token.
    pub misses: u64,
}

enum PolicyOutcome {
    Found {
        generation: u64,
        parsed: Arc<ParsedPolicy>,
    },
    Missing,
    Down,
}

enum RoleOutcome {
    Found(Arc<Role>),
    Missing,
    Down,
}

/// The source failed with nothing usable cached: the whole resolution falls back to `down_policy`.
struct SourceDown;

/// What a token's links and identities add up to, before the authorizer is built.
#[derive(Default)]
struct Grants {
    management: bool,
    parts: Vec<(u64, Arc<PolicyRules>)>,
}

/// Per-resolution arguments shared by every lookup.
struct Lookup<'a, S: ?Sized> {
    source: &'a S,
    now: SystemTime,
    force: bool,
}

impl Resolver {
    /// A resolver with an empty cache.
    pub fn new(config: ResolverConfig) -> Self {
        Resolver {
            config,
            cache: Mutex::new(Cache::default()),
            management: Arc::new(Authorizer::management()),
            token_cache_hits: AtomicU64::new(0),
            token_cache_misses: AtomicU64::new(0),
        }
    }

    /// How often the token cache answered since the resolver was made.
    pub fn token_cache_counts(&self) -> TokenCacheCounts {
        TokenCacheCounts {
            hits: self.token_cache_hits.load(Ordering::Relaxed),
            misses: self.token_cache_misses.load(Ordering::Relaxed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Resolves the secret a request presented. A request with no token should present the agent's
    /// default token or [`ANONYMOUS_TOKEN_SECRET`](crate::ANONYMOUS_TOKEN_SECRET).
    ///
    /// Cached objects younger than their TTL are used as they are. Older ones are fetched again, except
    /// under `async-cache`, where they are served at once with [`Freshness::RefreshDue`]. When the source
    /// fails, `down_policy` decides (see [`DownPolicy`]).
    pub fn resolve<S: TokenSource + ?Sized>(
        &self,
        source: &S,
        secret: &str,
        now: SystemTime,
    ) -> Result<Resolution, ResolveError> {
        self.resolve_inner(source, secret, now, false)
    }

    /// Fetches the token, its policies and roles from the source regardless of TTLs and updates the cache: the
    /// follow-up to a [`Freshness::RefreshDue`] answer. If the source fails, cached entries are kept.
    pub fn refresh<S: TokenSource + ?Sized>(
        &self,
        source: &S,
        secret: &str,
        now: SystemTime,
    ) -> Result<Resolution, ResolveError> {
        self.resolve_inner(source, secret, now, true)
    }

    /// Drops the cached token for `secret` (e.g. after it was deleted locally).
    pub fn invalidate_token(&self, secret: &str) {
        self.lock().tokens.remove(&secret_key(secret));
    }

    /// Drops everything cached.
    pub fn purge(&self) {
        *self.lock() = Cache::default();
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant that a panicking holder could break half-way.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_fresh(fetched_at: SystemTime, ttl: Duration, now: SystemTime) -> bool {
        // A clock that went backwards makes the entry look young: trust it for at most one TTL more.
        now.duration_since(fetched_at).map_or(true, |age| age <= ttl)
    }

    fn down_resolution(&self, token: Option<Arc<Token>>) -> Resolution {
        let default_policy = match self.config.down_policy {
            DownPolicy::Allow => DefaultPolicy::Allow,
            DownPolicy::Deny => DefaultPolicy::Deny,
            DownPolicy::ExtendCache | DownPolicy::AsyncCache => self.config.default_policy,
        };
        Resolution {
            authorizer: Arc::new(Authorizer::from_default(default_policy)),
            token,
            freshness: Freshness::DownPolicy,
        }
    }

    fn serves_stale_on_failure(&self) -> bool {
        matches!(
            self.config.down_policy,
            DownPolicy::ExtendCache | DownPolicy::AsyncCache
        )
    }

    fn resolve_inner<S: TokenSource + ?Sized>(
        &self,
        source: &S,
        secret: &str,
        now: SystemTime,
        force: bool,
    ) -> Result<Resolution, ResolveError> {
        let key = secret_key(secret);
        let mut freshness = Freshness::Fresh;
        // The cache is keyed by the secret's SHA-256, so a hit compares digests, never secrets; secrets
        // themselves meet only in the constant-time check of what the source returns.
        let cached = self.lock().tokens.get(&key).cloned();
        let token = match cached {
            Some(entry) if !force && Self::is_fresh(entry.fetched_at, self.config.token_ttl, now) => {
                self.token_cache_hits.fetch_add(1, Ordering::Relaxed);
                entry.token
            }
            Some(entry) if !force && self.config.down_policy == DownPolicy::AsyncCache => {
                self.token_cache_hits.fetch_add(1, Ordering::Relaxed);
                freshness = freshness.max(Freshness::RefreshDue);
                entry.token
            }
            cached => {
                self.token_cache_misses.fetch_add(1, Ordering::Relaxed);
                match source.token_by_secret(secret) {
                    Ok(Some(token)) if token.secret_id.matches(secret) => {
                        let token = Arc::new(token);
                        self.lock().tokens.insert(
                            key,
                            TokenEntry {
                                token: token.clone(),
                                fetched_at: now,
                            },
                        );
                        token
                    }
                    Ok(_) => {
                        self.lock().tokens.remove(&key);
                        return Err(ResolveError::AclNotFound);
                    }
                    Err(SourceError::Unreachable { .. }) => match cached {
                        Some(entry) if self.serves_stale_on_failure() => {
                            freshness = freshness.max(Freshness::Extended);
                            entry.token
                        }
                        _ => return Ok(self.down_resolution(None)),
                    },
                }
            }
        };
        if token.is_expired(now) {
            self.lock().tokens.remove(&key);
            return Err(ResolveError::AclNotFound);
        }

        let lookup = Lookup { source, now, force };
        let mut grants = Grants::default();
        match self.collect_token(&lookup, &token, &mut freshness, &mut grants) {
            Ok(Ok(())) => {}
            Ok(Err(SourceDown)) => return Ok(self.down_resolution(Some(token))),
            Err(error) => return Err(error),
        }
        let authorizer = if grants.management {
            self.management.clone()
        } else {
            self.authorizer_for(grants.parts)
        };
        Ok(Resolution {
            authorizer,
            token: Some(token),
            freshness,
        })
    }

    /// Gathers everything `token` grants here. The outer `Result` is a damaged policy; the inner one a
    /// source that failed with nothing cached to fall back on.
    fn collect_token<S: TokenSource + ?Sized>(
        &self,
        lookup: &Lookup<'_, S>,
        token: &Token,
        freshness: &mut Freshness,
        grants: &mut Grants,
    ) -> Result<Result<(), SourceDown>, ResolveError> {
        if let Err(down) = self.collect_policies(lookup, &token.policies, freshness, grants)? {
            return Ok(Err(down));
        }
        for link in &token.roles {
            let role = match self.resolve_role(lookup, link, freshness) {
                RoleOutcome::Found(role) => role,
                RoleOutcome::Missing => continue,
                RoleOutcome::Down => return Ok(Err(SourceDown)),
            };
            if let Err(down) = self.collect_policies(lookup, &role.policies, freshness, grants)? {
                return Ok(Err(down));
            }
            self.collect_synthesized(
                IdentityOwner::Role,
                &role.service_identities,
                &role.node_identities,
                &role.templated_policies,
                grants,
            )?;
        }
        self.collect_synthesized(
            IdentityOwner::Token,
            &token.service_identities,
            &token.node_identities,
            &token.templated_policies,
            grants,
        )?;
        Ok(Ok(()))
    }

    fn collect_policies<S: TokenSource + ?Sized>(
        &self,
        lookup: &Lookup<'_, S>,
        links: &[PolicyLink],
        freshness: &mut Freshness,
        grants: &mut Grants,
    ) -> Result<Result<(), SourceDown>, ResolveError> {
        for link in links {
            match self.resolve_policy(lookup.source, link, lookup.now, lookup.force, freshness)? {
                PolicyOutcome::Found { generation, parsed } => {
                    if !parsed.policy.applies_in(&self.config.datacenter) {
                        continue;
                    }
                    if parsed.policy.is_global_management() {
                        grants.management = true;
                    }
                    grants.parts.push((generation, parsed.rules.clone()));
                }
                PolicyOutcome::Missing => {}
                PolicyOutcome::Down => return Ok(Err(SourceDown)),
            }
        }
        Ok(Ok(()))
    }

    /// Adds the rules synthesized from identities and templated policies in force here. Invalid ones are
    /// skipped rather than rendered: their names are pasted into rules text.
    fn collect_synthesized(
        &self,
        owner: IdentityOwner,
        service_identities: &[ServiceIdentity],
        node_identities: &[NodeIdentity],
        templated_policies: &[TemplatedPolicy],
        grants: &mut Grants,
    ) -> Result<(), ResolveError> {
        let datacenter = self.config.datacenter.as_str();
        for identity in service_identities {
            if identity.applies_in(datacenter) && identity.validate(owner).is_ok() {
                grants.parts.push(self.synthesized_rules(identity.rules())?);
            }
        }
        for identity in node_identities {
            if identity.applies_in(datacenter) && identity.validate(owner).is_ok() {
                grants.parts.push(self.synthesized_rules(identity.rules())?);
            }
        }
        for templated in templated_policies {
            if !templated.applies_in(datacenter) {
                continue;
            }
            if let Ok(rules) = templated.rules() {
                grants.parts.push(self.synthesized_rules(rules)?);
            }
        }
        Ok(())
    }

    /// The parsed form and generation of a synthesized rules text, parsed at most once while cached.
    fn synthesized_rules(&self, rules: String) -> Result<(u64, Arc<PolicyRules>), ResolveError> {
        if let Some(entry) = self.lock().synthetic.get(&rules) {
            return Ok((entry.generation, entry.rules.clone()));
        }
        let parsed = PolicyRules::parse(&rules).map_err(|error| ResolveError::InvalidPolicy {
            policy_id: crate::identity::synthetic_policy_id(&rules),
            error,
        })?;
        let mut cache = self.lock();
        if cache.synthetic.len() >= MAX_CACHED_SYNTHETIC {
            cache.synthetic.clear();
        }
        cache.next_generation += 1;
        let fresh = SyntheticEntry {
            generation: cache.next_generation,
            rules: Arc::new(parsed),
        };
        // Another resolution may have parsed the same text meanwhile: keep the first generation.
        let entry = cache.synthetic.entry(rules).or_insert(fresh);
        Ok((entry.generation, entry.rules.clone()))
    }

    /// A role link, through the role cache: the same TTL, `async-cache` and down handling as policies.
    fn resolve_role<S: TokenSource + ?Sized>(
        &self,
        lookup: &Lookup<'_, S>,
        link: &RoleLink,
        freshness: &mut Freshness,
    ) -> RoleOutcome {
        let by_name = link.id.is_empty();
        let cached = {
            let cache = self.lock();
            let id = if by_name {
                cache.role_ids_by_name.get(&link.name)
            } else {
                Some(&link.id)
            };
            id.and_then(|id| cache.roles.get(id)).cloned()
        };

        if let Some(entry) = &cached
            && !lookup.force
        {
            if Self::is_fresh(entry.fetched_at, self.config.role_ttl, lookup.now) {
                return role_outcome(entry);
            }
            if self.config.down_policy == DownPolicy::AsyncCache {
                *freshness = (*freshness).max(Freshness::RefreshDue);
                return role_outcome(entry);
            }
        }

        let fetched = if by_name {
            lookup.source.role_by_name(&link.name)
        } else {
            lookup.source.role_by_id(&link.id)
        };
        let found = match fetched {
            Ok(found) => found.map(Arc::new),
            Err(SourceError::Unreachable { .. }) => {
                return match cached {
                    Some(entry) if self.serves_stale_on_failure() => {
                        *freshness = (*freshness).max(Freshness::Extended);
                        role_outcome(&entry)
                    }
                    _ => RoleOutcome::Down,
                };
            }
        };
        let id = match (&found, by_name) {
            (Some(role), _) => role.id.clone(),
            (None, false) => link.id.clone(),
            (None, true) => return RoleOutcome::Missing,
        };
        let entry = RoleEntry {
            found,
            fetched_at: lookup.now,
        };
        let outcome = role_outcome(&entry);
        let mut cache = self.lock();
        if let Some(role) = &entry.found {
            cache.role_ids_by_name.insert(role.name.clone(), id.clone());
        }
        cache.roles.insert(id, entry);
        outcome
    }

    fn authorizer_for(&self, mut parts: Vec<(u64, Arc<PolicyRules>)>) -> Arc<Authorizer> {
        parts.sort_by_key(|(generation, _)| *generation);
        parts.dedup_by_key(|(generation, _)| *generation);
        let key: AuthorizerKey = parts.iter().map(|(generation, _)| *generation).collect();
        if let Some(found) = self.lock().authorizers.get(&key) {
            return found.clone();
        }
        // Built outside the lock: merging large policies takes a while.
        let built = Arc::new(Authorizer::new(
            parts.iter().map(|(_, rules)| rules.as_ref()),
            self.config.default_policy,
        ));
        let mut cache = self.lock();
        if cache.authorizers.len() >= MAX_CACHED_AUTHORIZERS {
            cache.authorizers.clear();
        }
        cache.authorizers.insert(key, built.clone());
        built
    }

    fn resolve_policy<S: TokenSource + ?Sized>(
        &self,
        source: &S,
        link: &PolicyLink,
        now: SystemTime,
        force: bool,
        freshness: &mut Freshness,
    ) -> Result<PolicyOutcome, ResolveError> {
        let by_name = link.id.is_empty();
        let cached_id = if by_name {
            self.lock().policy_ids_by_name.get(&link.name).cloned()
        } else {
            Some(link.id.clone())
        };
        let cached = cached_id
            .as_ref()
            .and_then(|id| self.lock().policies.get(id).cloned());

        if let Some(entry) = &cached
            && !force
        {
            if Self::is_fresh(entry.fetched_at, self.config.policy_ttl, now) {
                return Ok(outcome(entry));
            }
            if self.config.down_policy == DownPolicy::AsyncCache {
                *freshness = (*freshness).max(Freshness::RefreshDue);
                return Ok(outcome(entry));
            }
        }

        let fetched = if by_name {
            source.policy_by_name(&link.name)
        } else {
            source.policy_by_id(&link.id)
        };
        let fetched = match fetched {
            Ok(Some(policy)) => Some(policy),
            // The built-in management policy exists even in a source that does not store it.
            Ok(None) if link.id == GLOBAL_MANAGEMENT_POLICY_ID => Some(Policy::global_management()),
            Ok(None) => None,
            Err(SourceError::Unreachable { .. }) => {
                return Ok(match cached {
                    Some(entry) if self.serves_stale_on_failure() => {
                        *freshness = (*freshness).max(Freshness::Extended);
                        outcome(&entry)
                    }
                    _ => PolicyOutcome::Down,
                });
            }
        };

        let parsed = match fetched {
            Some(policy) => {
                let rules =
                    PolicyRules::parse(&policy.rules).map_err(|error| ResolveError::InvalidPolicy {
                        policy_id: policy.id.clone(),
                        error,
                    })?;
                Some(Arc::new(ParsedPolicy {
                    policy,
                    rules: Arc::new(rules),
                }))
            }
            None => None,
        };
        let id = match (&parsed, by_name) {
            (Some(p), _) => p.policy.id.clone(),
            (None, false) => link.id.clone(),
            // A name that resolves to nothing: nothing to cache under an ID.
            (None, true) => return Ok(PolicyOutcome::Missing),
        };

        let mut cache = self.lock();
        let unchanged = cache.policies.get(&id).and_then(|e| {
            let same = match (&e.found, &parsed) {
                (Some(a), Some(b)) => a.policy == b.policy,
                (None, None) => true,
                _ => false,
            };
            same.then_some(e.generation)
        });
        let generation = match unchanged {
            Some(generation) => generation,
            None => {
                cache.next_generation += 1;
                cache.next_generation
            }
        };
        if let Some(p) = &parsed {
            cache.policy_ids_by_name.insert(p.policy.name.clone(), id.clone());
        }
        let entry = PolicyEntry {
            found: parsed,
            generation,
            fetched_at: now,
        };
        let result = outcome(&entry);
        cache.policies.insert(id, entry);
        Ok(result)
    }
}

fn outcome(entry: &PolicyEntry) -> PolicyOutcome {
    match &entry.found {
        Some(parsed) => PolicyOutcome::Found {
            generation: entry.generation,
            parsed: parsed.clone(),
        },
        None => PolicyOutcome::Missing,
    }
}

fn role_outcome(entry: &RoleEntry) -> RoleOutcome {
    match &entry.found {
        Some(role) => RoleOutcome::Found(role.clone()),
        None => RoleOutcome::Missing,
    }
}

fn secret_key(secret: &str) -> SecretKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut key = [0u8; 32];
    for (slot, byte) in key.iter_mut().zip(digest.as_ref()) {
        *slot = *byte;
    }
    key
}
