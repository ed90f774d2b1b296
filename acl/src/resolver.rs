//! From a presented secret to an [`Authorizer`]: the [`TokenSource`] trait and the caching [`Resolver`]
//! with Consul's TTLs and `down_policy`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use crate::access::{DefaultPolicy, DownPolicy};
use crate::authorizer::Authorizer;
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

/// Where tokens and policies come from: the replicated state in the primary datacenter, or the primary
/// itself (over RPC) in a secondary one.
///
/// Implementations MUST:
/// - return `Ok(None)` only when the source *knows* the object does not exist (an authoritative or
///   replicated-state answer); any failure to find out MUST be `Err(SourceError::Unreachable)`, because the
///   resolver turns `Ok(None)` into "ACL not found" but `Err` into `down_policy`;
/// - return tokens even when expired (the resolver checks expiry against the `now` it is given);
/// - answer `policy_by_name` with the policy currently bearing that name;
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
}

/// Why a secret did not resolve. Both variants map to HTTP 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No such token, or the token has expired (Consul does not distinguish them to callers).
    #[error("ACL not found")]
    AclNotFound,
    /// A linked policy's stored rules do not parse (they are validated on write, so this means the
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
}

/// Consul's default for `acl.token_ttl` and `acl.policy_ttl`.
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

/// Authorizers are keyed by the sorted generations of the policies they were built from: a generation is
/// unique to one policy ID and content.
type AuthorizerKey = Vec<u64>;

/// Beyond this many cached authorizers the cache is cleared: it only holds derived data, and clearing
/// bounds the growth caused by superseded policy generations.
const MAX_CACHED_AUTHORIZERS: usize = 4096;

#[derive(Debug, Default)]
struct Cache {
    tokens: HashMap<SecretKey, TokenEntry>,
    policies: HashMap<String, PolicyEntry>,
    policy_ids_by_name: HashMap<String, String>,
    authorizers: HashMap<AuthorizerKey, Arc<Authorizer>>,
    next_generation: u64,
}

/// Resolves secrets to authorizers through a [`TokenSource`], caching tokens, policies and built
/// authorizers, and applying `down_policy` when the source fails.
///
/// It reads no clock (every call takes `now`) and holds its lock only while touching the cache, never
/// while the source is being asked. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Resolver {
    config: ResolverConfig,
    cache: Mutex<Cache>,
    management: Arc<Authorizer>,
}

enum PolicyOutcome {
    Found {
        generation: u64,
        parsed: Arc<ParsedPolicy>,
    },
    Missing,
    Down,
}

impl Resolver {
    /// A resolver with an empty cache.
    pub fn new(config: ResolverConfig) -> Self {
        Resolver {
            config,
            cache: Mutex::new(Cache::default()),
            management: Arc::new(Authorizer::management()),
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

    /// Fetches the token and its policies from the source regardless of TTLs and updates the cache: the
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
                entry.token
            }
            Some(entry) if !force && self.config.down_policy == DownPolicy::AsyncCache => {
                freshness = freshness.max(Freshness::RefreshDue);
                entry.token
            }
            cached => match source.token_by_secret(secret) {
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
            },
        };
        if token.is_expired(now) {
            self.lock().tokens.remove(&key);
            return Err(ResolveError::AclNotFound);
        }

        let mut management = false;
        let mut parts: Vec<(u64, Arc<PolicyRules>)> = Vec::with_capacity(token.policies.len());
        for link in &token.policies {
            match self.resolve_policy(source, link, now, force, &mut freshness)? {
                PolicyOutcome::Found { generation, parsed } => {
                    if !parsed.policy.applies_in(&self.config.datacenter) {
                        continue;
                    }
                    if parsed.policy.is_global_management() {
                        management = true;
                    }
                    parts.push((generation, parsed.rules.clone()));
                }
                PolicyOutcome::Missing => {}
                PolicyOutcome::Down => return Ok(self.down_resolution(Some(token))),
            }
        }
        let authorizer = if management {
            self.management.clone()
        } else {
            self.authorizer_for(parts)
        };
        Ok(Resolution {
            authorizer,
            token: Some(token),
            freshness,
        })
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

fn secret_key(secret: &str) -> SecretKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut key = [0u8; 32];
    for (slot, byte) in key.iter_mut().zip(digest.as_ref()) {
        *slot = *byte;
    }
    key
}
