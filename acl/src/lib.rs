//! Consul's ACL rule language and policy engine: parse rules, merge a token's policies, decide.
//!
//! What it is:
//! - [`PolicyRules`]: rules parsed from HCL (as Consul's HCL 1 parser reads them) or JSON
//!   (`key_prefix "" { policy = "read" }`, `acl = "write"`), with typed [`RuleError`]s naming the
//!   resource, what is wrong and, for HCL, the line and column.
//! - [`Authorizer`]: a token's policies merged (deny > write > list > read per segment) and indexed in
//!   radix trees, answering [`Decision::Allow`] or [`Decision::Deny`] in O(length of the name); exact rules
//!   beat prefix rules, the longest prefix wins, then the [`DefaultPolicy`].
//! - [`Token`], [`Policy`], [`PolicyLink`], [`Secret`] as Consul models them, the anonymous token, the
//!   `global-management` policy and the bootstrap-once rule ([`bootstrap_token`]).
//! - [`Resolver`]: secret → [`Authorizer`] through a caller-implemented [`TokenSource`], with token and
//!   policy TTLs and Consul's [`DownPolicy`] (allow, deny, extend-cache, async-cache).
//!
//! What it is NOT: it does no IO and reads no clock (`now` is always a parameter); it does not store
//! tokens or policies (the node's replicated state does, behind [`TokenSource`]); it does not evaluate
//! roles, service/node identities, intentions, mesh or peering rules (an `intentions` attribute on service
//! rules, `mesh` and `peering` are validated and kept, not evaluated).
#![doc = include_str!("../README.md")]

mod access;
pub mod auth;
mod authorizer;
mod hcl1;
mod identity;
mod radix;
mod resolver;
mod rules;
mod token;

pub use access::{Access, AccessLevel, Decision, DefaultPolicy, DownPolicy, Resource};
pub use authorizer::Authorizer;
pub use identity::{NodeIdentity, RoleLink, ServiceIdentity, TemplateVariables, TemplatedPolicy};
pub use resolver::{
    DEFAULT_TTL, Freshness, Resolution, ResolveError, Resolver, ResolverConfig, SourceError, TokenSource,
};
pub use rules::{MatchKind, PolicyRules, Rule, RuleError, RuleSyntax};
pub use token::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET, BOOTSTRAP_TOKEN_DESCRIPTION, BootstrapError,
    GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, Policy, PolicyLink, Secret, Token,
    bootstrap_allowed, bootstrap_token,
};
