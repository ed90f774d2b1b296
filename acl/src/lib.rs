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
//! - [`Role`]s, [`ServiceIdentity`], [`NodeIdentity`] and [`TemplatedPolicy`] with Consul's validation
//!   ([`RoleError`], [`IdentityError`], [`TemplateError`]) and the policies Consul synthesizes for them
//!   (same rules text, name, ID, description and datacenter scoping); the built-in template catalog
//!   ([`builtin_templates`]: `builtin/service`, `builtin/node`, `builtin/dns`, `builtin/nomad-server`,
//!   `builtin/nomad-client`, `builtin/api-gateway`) and [`preview`].
//! - [`Resolver`]: secret → [`Authorizer`] through a caller-implemented [`TokenSource`]: the token's
//!   policies, its roles' policies, and the rules synthesized from its and its roles' identities and
//!   templated policies, each scoped to its datacenters; token, policy and role TTLs and Consul's
//!   [`DownPolicy`] (allow, deny, extend-cache, async-cache).
//!
//! What it is NOT: it does no IO and reads no clock (`now` is always a parameter); it does not store
//! tokens, policies or roles (the node's replicated state does, behind [`TokenSource`]) nor resolve link
//! names to IDs on write; it does not evaluate intentions, mesh or peering rules (an `intentions`
//! attribute on service rules, `mesh` and `peering` are validated and kept, not evaluated); namespaces and
//! partitions (Enterprise) do not exist here.
#![doc = include_str!("../README.md")]

mod access;
pub mod auth;
mod authorizer;
mod hcl1;
mod identity;
mod radix;
mod resolver;
mod role;
mod rules;
mod templated;
mod token;

pub use access::{Access, AccessLevel, Decision, DefaultPolicy, DownPolicy, Resource};
pub use authorizer::Authorizer;
pub use identity::{
    IDENTITY_NAME_MAX_LENGTH, IdentityError, IdentityOwner, NodeIdentity, RoleLink, ServiceIdentity,
    TemplateVariables, TemplatedPolicy, is_valid_identity_name,
};
pub use resolver::{
    DEFAULT_TTL, Freshness, Resolution, ResolveError, Resolver, ResolverConfig, SourceError,
    TokenCacheCounts, TokenSource,
};
pub use role::{ROLE_NAME_MAX_LENGTH, Role, RoleError, is_valid_role_name};
pub use rules::{MatchKind, PolicyRules, Rule, RuleError, RuleSyntax};
pub use templated::{
    TEMPLATE_API_GATEWAY, TEMPLATE_DNS, TEMPLATE_NODE, TEMPLATE_NOMAD_CLIENT, TEMPLATE_NOMAD_SERVER,
    TEMPLATE_SERVICE, TemplateDefinition, TemplateError, builtin_template, builtin_templates, preview,
};
pub use token::{
    ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET, BOOTSTRAP_TOKEN_DESCRIPTION, BootstrapError,
    GLOBAL_MANAGEMENT_POLICY_ID, GLOBAL_MANAGEMENT_POLICY_NAME, Policy, PolicyLink, Secret, Token,
    bootstrap_allowed, bootstrap_token,
};
