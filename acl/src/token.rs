//! Tokens and policies as Consul models them, the built-in ones, and the bootstrap-once rule.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::identity::{
    IdentityError, IdentityOwner, NodeIdentity, RoleLink, ServiceIdentity, TemplatedPolicy,
};

/// AccessorID of the built-in anonymous token, used for requests that carry no token.
pub const ANONYMOUS_TOKEN_ACCESSOR_ID: &str = "00000000-0000-0000-0000-000000000002";
/// SecretID of the built-in anonymous token.
pub const ANONYMOUS_TOKEN_SECRET: &str = "anonymous";
/// ID of the built-in `global-management` policy; a token linking it is a management token.
pub const GLOBAL_MANAGEMENT_POLICY_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Name of the built-in management policy.
pub const GLOBAL_MANAGEMENT_POLICY_NAME: &str = "global-management";
/// Description Consul gives the token created by `PUT /v1/acl/bootstrap`.
pub const BOOTSTRAP_TOKEN_DESCRIPTION: &str = "Bootstrap Token (Global Management)";

/// The rules of the built-in `global-management` policy. Evaluation never reads them (management
/// short-circuits to allow); they are what `GET /v1/acl/policy` shows.
const GLOBAL_MANAGEMENT_RULES: &str = r#"acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"#;

/// A token secret. Comparison is constant-time and `Debug` never shows it.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret value, for the few places that must show it (token creation replies).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        secrets_equal(&self.0, presented)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Constant-time equality of two secrets. Both are hashed first so that neither the position of the first
/// difference nor the lengths show in the timing; the fixed-size digests are then compared with no early
/// exit.
pub(crate) fn secrets_equal(a: &str, b: &str) -> bool {
    let da = ring::digest::digest(&ring::digest::SHA256, a.as_bytes());
    let db = ring::digest::digest(&ring::digest::SHA256, b.as_bytes());
    let diff = da
        .as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A token's link to a policy, by ID or by name (Consul resolves names to IDs on write; either may be
/// empty).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyLink {
    /// The policy ID; empty when the link is by name only.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// The policy name; empty when the link is by ID only.
    #[serde(rename = "Name", default)]
    pub name: String,
}

impl PolicyLink {
    /// A link by policy ID.
    pub fn by_id(id: impl Into<String>) -> Self {
        PolicyLink {
            id: id.into(),
            name: String::new(),
        }
    }

    /// A link by policy name.
    pub fn by_name(name: impl Into<String>) -> Self {
        PolicyLink {
            id: String::new(),
            name: name.into(),
        }
    }
}

/// An ACL token (Consul ≥ 1.4 model). Field names serialise as Consul's JSON (`AccessorID`,
/// `SecretID`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Token {
    /// Public identifier (a UUID), used to manage the token.
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    /// The bearer secret presented by clients (`X-Consul-Token`).
    #[serde(rename = "SecretID")]
    pub secret_id: Secret,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Linked policies.
    #[serde(default)]
    pub policies: Vec<PolicyLink>,
    /// Linked roles.
    #[serde(default)]
    pub roles: Vec<RoleLink>,
    /// Service identities the token carries.
    #[serde(default)]
    pub service_identities: Vec<ServiceIdentity>,
    /// Node identities the token carries.
    #[serde(default)]
    pub node_identities: Vec<NodeIdentity>,
    /// Templated policies the token carries.
    #[serde(default)]
    pub templated_policies: Vec<TemplatedPolicy>,
    /// The auth method that created the token by login; empty for tokens created directly.
    #[serde(default)]
    pub auth_method: String,
    /// A local token lives only in its datacenter and is never replicated.
    #[serde(default)]
    pub local: bool,
    /// After this instant the token no longer resolves. Serialised in serde's `SystemTime` form; the HTTP
    /// layer renders Consul's RFC 3339 `ExpirationTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<SystemTime>,
    /// When the token was created. Serialised in serde's `SystemTime` form like `expiration_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<SystemTime>,
    /// Raft index of creation (0 when not stored yet).
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change (0 when not stored yet).
    #[serde(default)]
    pub modify_index: u64,
}

impl Token {
    /// A token with the given identifiers, no policies, global, never expiring.
    pub fn new(accessor_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        Token {
            accessor_id: accessor_id.into(),
            secret_id: Secret::new(secret_id),
            description: String::new(),
            policies: Vec::new(),
            roles: Vec::new(),
            service_identities: Vec::new(),
            node_identities: Vec::new(),
            templated_policies: Vec::new(),
            auth_method: String::new(),
            local: false,
            expiration_time: None,
            create_time: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The built-in anonymous token, with no policies (operators attach policies to it to open up
    /// unauthenticated access).
    pub fn anonymous() -> Self {
        Token {
            description: "Anonymous Token".to_owned(),
            ..Token::new(ANONYMOUS_TOKEN_ACCESSOR_ID, ANONYMOUS_TOKEN_SECRET)
        }
    }

    /// Whether this is the anonymous token.
    pub fn is_anonymous(&self) -> bool {
        self.accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID
    }

    /// Whether the token has expired at `now`. As Consul: expired strictly after the expiration time.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expiration_time.is_some_and(|expires| expires < now)
    }

    /// Checks the token's service identities, node identities and templated policies as Consul does when
    /// a token is written (a local token's service identities may not list datacenters).
    pub fn validate_identities(&self) -> Result<(), IdentityError> {
        for identity in &self.service_identities {
            if identity.service_name.is_empty() {
                return Err(IdentityError::MissingServiceName {
                    owner: IdentityOwner::Token,
                });
            }
            if self.local && !identity.datacenters.is_empty() {
                return Err(IdentityError::DatacentersOnLocalToken {
                    name: identity.service_name.clone(),
                });
            }
            identity.validate(IdentityOwner::Token)?;
        }
        for identity in &self.node_identities {
            identity.validate(IdentityOwner::Token)?;
        }
        for templated in &self.templated_policies {
            templated.validate()?;
        }
        Ok(())
    }

    /// Whether the token links the `global-management` policy.
    pub fn is_management(&self) -> bool {
        self.policies.iter().any(|l| l.id == GLOBAL_MANAGEMENT_POLICY_ID)
    }
}

/// An ACL policy: a named rules text, optionally restricted to some datacenters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    /// Unique identifier (a UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Unique name (letters, digits, `-`, `_`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The rules, HCL or JSON; see [`PolicyRules::parse`](crate::PolicyRules::parse).
    #[serde(default)]
    pub rules: String,
    /// Datacenters where the policy applies; empty means everywhere.
    #[serde(default)]
    pub datacenters: Vec<String>,
    /// Raft index of creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(default)]
    pub modify_index: u64,
}

impl Policy {
    /// The built-in `global-management` policy.
    pub fn global_management() -> Self {
        Policy {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
            description: "Builtin Policy that grants unlimited access".to_owned(),
            rules: GLOBAL_MANAGEMENT_RULES.to_owned(),
            datacenters: Vec::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Whether the policy is in force in `datacenter`.
    pub fn applies_in(&self, datacenter: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|dc| dc == datacenter)
    }

    /// Whether this is the built-in management policy.
    pub fn is_global_management(&self) -> bool {
        self.id == GLOBAL_MANAGEMENT_POLICY_ID
    }
}

/// Why `PUT /v1/acl/bootstrap` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Bootstrap already happened; writing `reset_index` to the reset file allows it once more.
    #[error("ACL bootstrap no longer allowed (reset index: {reset_index})")]
    NoLongerAllowed {
        /// The index an operator must supply to reset.
        reset_index: u64,
    },
    /// The caller supplied the anonymous token's identifiers for the bootstrap token.
    #[error("the bootstrap token cannot reuse the anonymous token's {field}")]
    ReservedIdentifier {
        /// `AccessorID` or `SecretID`.
        field: &'static str,
    },
}

/// Bootstrap is allowed once: when it never happened (`bootstrapped_at` is `None`), or when the operator
/// supplied exactly the index at which it last happened (`reset_index`, read from the reset file).
///
/// `bootstrapped_at` is the raft index stored when bootstrap last succeeded.
pub fn bootstrap_allowed(
    bootstrapped_at: Option<u64>,
    reset_index: Option<u64>,
) -> Result<(), BootstrapError> {
    match bootstrapped_at {
        None => Ok(()),
        Some(at) if reset_index == Some(at) => Ok(()),
        Some(at) => Err(BootstrapError::NoLongerAllowed { reset_index: at }),
    }
}

/// Builds the bootstrap token from caller-generated identifiers, after checking
/// [`bootstrap_allowed`]. The caller stores it and records the index it was stored at.
pub fn bootstrap_token(
    bootstrapped_at: Option<u64>,
    reset_index: Option<u64>,
    accessor_id: impl Into<String>,
    secret_id: impl Into<String>,
) -> Result<Token, BootstrapError> {
    bootstrap_allowed(bootstrapped_at, reset_index)?;
    let accessor_id = accessor_id.into();
    let secret_id = secret_id.into();
    if accessor_id == ANONYMOUS_TOKEN_ACCESSOR_ID {
        return Err(BootstrapError::ReservedIdentifier { field: "AccessorID" });
    }
    if secrets_equal(&secret_id, ANONYMOUS_TOKEN_SECRET) {
        return Err(BootstrapError::ReservedIdentifier { field: "SecretID" });
    }
    Ok(Token {
        description: BOOTSTRAP_TOKEN_DESCRIPTION.to_owned(),
        policies: vec![PolicyLink {
            id: GLOBAL_MANAGEMENT_POLICY_ID.to_owned(),
            name: GLOBAL_MANAGEMENT_POLICY_NAME.to_owned(),
        }],
        ..Token::new(accessor_id, secret_id)
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::PolicyRules;

    #[test]
    fn secret_comparison() {
        let s = Secret::new("b5f6c1d2");
        assert!(s.matches("b5f6c1d2"));
        assert!(!s.matches("b5f6c1d3"));
        assert!(!s.matches(""));
        assert!(!format!("{s:?}").contains("b5f6"));
    }

    #[test]
    fn expiry_is_strictly_after() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let token = Token {
            expiration_time: Some(t0),
            ..Token::new("a", "s")
        };
        assert!(!token.is_expired(t0));
        assert!(token.is_expired(t0 + Duration::from_millis(1)));
        assert!(!Token::new("a", "s").is_expired(t0));
    }

    #[test]
    fn bootstrap_once_then_reset() {
        let token = bootstrap_token(None, None, "acc-1", "sec-1").unwrap();
        assert!(token.is_management());
        assert_eq!(token.description, BOOTSTRAP_TOKEN_DESCRIPTION);
        assert!(!token.local);
        let err = bootstrap_allowed(Some(42), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ACL bootstrap no longer allowed (reset index: 42)"
        );
        assert!(bootstrap_allowed(Some(42), Some(41)).is_err());
        assert!(bootstrap_allowed(Some(42), Some(42)).is_ok());
        assert!(bootstrap_token(None, None, ANONYMOUS_TOKEN_ACCESSOR_ID, "x").is_err());
        assert!(bootstrap_token(None, None, "a", ANONYMOUS_TOKEN_SECRET).is_err());
    }

    #[test]
    fn builtins() {
        let anon = Token::anonymous();
        assert!(anon.is_anonymous() && anon.secret_id.matches("anonymous") && anon.policies.is_empty());
        let gm = Policy::global_management();
        assert!(gm.is_global_management() && gm.applies_in("any-dc"));
        assert!(PolicyRules::parse(&gm.rules).unwrap().len() >= 10);
    }

    #[test]
    fn datacenter_scope() {
        let p = Policy {
            datacenters: vec!["dc2".into()],
            ..Policy::global_management()
        };
        assert!(p.applies_in("dc2") && !p.applies_in("dc1"));
    }

    #[test]
    fn token_json_uses_consul_field_names() {
        let mut t = Token::new("acc", "sec");
        t.policies.push(PolicyLink::by_id("p1"));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["AccessorID"], "acc");
        assert_eq!(json["SecretID"], "sec");
        assert_eq!(json["Policies"][0]["ID"], "p1");
        let back: Token = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }
}
