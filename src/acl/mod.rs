//! ACLs in the node: the [`TokenSource`] over the replicated state, the resolver, and how a request's
//! token is found. `convert` maps the stored records to the ACL engine's types.

pub(crate) mod convert;

use std::time::SystemTime;

use axum::http::HeaderMap;
use tribune_acl::{
    ANONYMOUS_TOKEN_SECRET, DefaultPolicy as AclDefault, DownPolicy as AclDown, Policy, Resolution,
    ResolveError, Resolver, ResolverConfig, Role, SourceError, Token, TokenSource,
};
use tribune_kvstore::{Backend, GLOBAL_MANAGEMENT_POLICY_ID, Store};

pub(crate) use convert::{policy_from_store, role_from_store, token_from_store};

use crate::config::{AclConfig, DefaultPolicy, DownPolicy};

/// Tokens and policies read from this server's replicated state.
///
/// "Not found" is authoritative here (the state is local); a read failure is reported as unreachable
/// so that `down_policy` applies.
pub(crate) struct StoreTokens<'a, B: Backend>(pub(crate) &'a Store<B>);

fn unreachable(error: impl std::fmt::Display) -> SourceError {
    SourceError::Unreachable {
        reason: error.to_string(),
    }
}

impl<B: Backend> TokenSource for StoreTokens<'_, B> {
    fn token_by_secret(&self, secret: &str) -> Result<Option<Token>, SourceError> {
        let found = self.0.acl_token_by_secret(secret).map_err(unreachable)?.value;
        match found {
            Some(token) => Ok(Some(token_from_store(token))),
            // The anonymous token exists even before anything is stored.
            None if secret == ANONYMOUS_TOKEN_SECRET => Ok(Some(Token::anonymous())),
            None => Ok(None),
        }
    }

    fn policy_by_id(&self, id: &str) -> Result<Option<Policy>, SourceError> {
        // The built-in management policy means what the ACL engine says it means, whatever rules text
        // the stored copy carries.
        if id == GLOBAL_MANAGEMENT_POLICY_ID {
            return Ok(Some(Policy::global_management()));
        }
        let found = self.0.acl_policy(id).map_err(unreachable)?.value;
        Ok(found.map(policy_from_store))
    }

    fn role_by_id(&self, id: &str) -> Result<Option<Role>, SourceError> {
        let found = self.0.acl_role(id).map_err(unreachable)?.value;
        Ok(found.map(role_from_store))
    }

    fn role_by_name(&self, name: &str) -> Result<Option<Role>, SourceError> {
        let found = self.0.acl_role_by_name(name).map_err(unreachable)?.value;
        Ok(found.map(role_from_store))
    }

    fn policy_by_name(&self, name: &str) -> Result<Option<Policy>, SourceError> {
        let found = self.0.acl_policy_by_name(name).map_err(unreachable)?.value;
        Ok(found.map(|policy| {
            if policy.id == GLOBAL_MANAGEMENT_POLICY_ID {
                Policy::global_management()
            } else {
                policy_from_store(policy)
            }
        }))
    }
}

/// The resolver configured from the agent's `acl` block.
pub(crate) fn resolver(datacenter: &str, acl: &AclConfig) -> Resolver {
    let mut config = ResolverConfig::new(datacenter);
    config.default_policy = match acl.default_policy {
        DefaultPolicy::Allow => AclDefault::Allow,
        DefaultPolicy::Deny => AclDefault::Deny,
    };
    config.down_policy = match acl.down_policy {
        DownPolicy::Allow => AclDown::Allow,
        DownPolicy::Deny => AclDown::Deny,
        DownPolicy::ExtendCache => AclDown::ExtendCache,
        DownPolicy::AsyncCache => AclDown::AsyncCache,
    };
    config.token_ttl = acl.token_ttl;
    config.policy_ttl = acl.policy_ttl;
    config.role_ttl = acl.role_ttl;
    Resolver::new(config)
}

/// The secret a request presents: `X-Consul-Token`, then `Authorization: Bearer`, then `?token=`, then the
/// agent's `default` token, then the anonymous token.
pub(crate) fn request_secret(
    headers: &HeaderMap,
    query_token: Option<&str>,
    default: Option<&str>,
) -> String {
    let header = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    header
        .or(bearer)
        .or(query_token.filter(|v| !v.is_empty()))
        .or(default.filter(|v| !v.is_empty()))
        .unwrap_or(ANONYMOUS_TOKEN_SECRET)
        .to_owned()
}

/// Resolves a secret against the local state.
pub(crate) fn resolve<B: Backend>(
    resolver: &Resolver,
    store: &Store<B>,
    secret: &str,
) -> Result<Resolution, ResolveError> {
    resolver.resolve(&StoreTokens(store), secret, SystemTime::now())
}

#[cfg(test)]
mod tests {
    /// The store seeds the built-in policy with its own copy of the rules (it does not depend on tribune-acl);
    /// the copy must be the one tribune-acl defines, or resolving the stored policy would fail to parse.
    #[test]
    fn the_stored_global_management_rules_are_the_acl_engine_s() {
        let builtin = tribune_acl::Policy::global_management();
        assert_eq!(tribune_kvstore::GLOBAL_MANAGEMENT_RULES, builtin.rules);
        assert!(tribune_acl::PolicyRules::parse(tribune_kvstore::GLOBAL_MANAGEMENT_RULES).is_ok());
    }
}
