//! The auth method object (`/v1/acl/auth-method`) and the checks Consul makes before storing one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::{self, format_go_duration};
use super::jwt::{JwtConfig, JwtConfigError};

/// The one auth method type this crate implements.
pub const JWT_METHOD_TYPE: &str = "jwt";

/// Auth method types Consul has that this crate recognises but does not implement.
pub const UNSUPPORTED_METHOD_TYPES: &[&str] = &["kubernetes", "oidc", "aws-iam"];

/// Consul's default floor for an auth method's `MaxTokenTTL` (`acl_token_min_expiration_ttl`).
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Consul's default ceiling for an auth method's `MaxTokenTTL` (`acl_token_max_expiration_ttl`).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where the tokens an auth method mints live: only in the datacenter that minted them, or replicated
/// from the primary to every datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TokenLocality {
    /// A local token (`"local"`, or `""` as Consul stores the default).
    #[default]
    Local,
    /// A global token (`"global"`); only the primary datacenter may mint them.
    Global,
}

impl TokenLocality {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenLocality::Local => "local",
            TokenLocality::Global => "global",
        }
    }

    fn is_local(&self) -> bool {
        *self == TokenLocality::Local
    }
}

impl fmt::Display for TokenLocality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `TokenLocality` that is neither `local`, `global` nor empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid Auth Method: TokenLocality should be one of 'local' or 'global'")]
pub struct TokenLocalityError(pub String);

impl FromStr for TokenLocality {
    type Err = TokenLocalityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "local" => Ok(TokenLocality::Local),
            "global" => Ok(TokenLocality::Global),
            other => Err(TokenLocalityError(other.to_owned())),
        }
    }
}

impl Serialize for TokenLocality {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenLocality {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An ACL auth method, with Consul's JSON names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthMethod {
    /// Unique name; `[A-Za-z0-9-_]{1,128}`.
    #[serde(rename = "Name")]
    pub name: String,
    /// The method type; only `jwt` is implemented.
    #[serde(rename = "Type", default)]
    pub method_type: String,
    /// A name for humans.
    #[serde(rename = "DisplayName", default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Free text.
    #[serde(rename = "Description", default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The lifetime of tokens minted by a login; zero means they do not expire. Go duration text.
    #[serde(
        rename = "MaxTokenTTL",
        default,
        skip_serializing_if = "Duration::is_zero",
        serialize_with = "duration::serialize",
        deserialize_with = "duration::deserialize"
    )]
    pub max_token_ttl: Duration,
    /// Whether minted tokens are local or global.
    #[serde(
        rename = "TokenLocality",
        default,
        skip_serializing_if = "TokenLocality::is_local"
    )]
    pub token_locality: TokenLocality,
    /// The type-specific configuration; for `jwt`, see [`JwtConfig`].
    #[serde(rename = "Config", default)]
    pub config: serde_json::Value,
    /// Raft index of creation.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Raft index of the last change.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

/// Why an auth method may not be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthMethodError {
    /// `Name` is empty.
    #[error("Invalid Auth Method: no Name is set")]
    MissingName,
    /// `Name` has characters other than `[A-Za-z0-9-_]` or is longer than 128.
    #[error("Invalid Auth Method: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")]
    InvalidName(String),
    /// `Type` is empty or not a Consul type.
    #[error("Invalid Auth Method: Type should be one of: [jwt]")]
    UnknownType(String),
    /// `Type` is a Consul type this server does not implement.
    #[error("Invalid Auth Method: Type {0:?} is not supported by this server; only \"jwt\" is")]
    UnsupportedType(String),
    /// `MaxTokenTTL` above the ceiling.
    #[error("MaxTokenTTL {} cannot be more than {}", format_go_duration(*.ttl), format_go_duration(*.max))]
    MaxTokenTtlTooLong {
        /// The configured TTL.
        ttl: Duration,
        /// The ceiling.
        max: Duration,
    },
    /// `MaxTokenTTL` below the floor.
    #[error("MaxTokenTTL {} cannot be less than {}", format_go_duration(*.ttl), format_go_duration(*.min))]
    MaxTokenTtlTooShort {
        /// The configured TTL.
        ttl: Duration,
        /// The floor.
        min: Duration,
    },
    /// `TokenLocality` is `global` outside the primary datacenter.
    #[error("Invalid Auth Method: TokenLocality 'global' can only be used in the primary datacenter")]
    GlobalOutsidePrimary,
    /// The `Config` is not a valid configuration for the type.
    #[error("Invalid Auth Method: {0}")]
    Config(#[from] JwtConfigError),
}

/// Consul's rule for auth method names.
pub fn is_valid_auth_method_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AuthMethod {
    /// Checks the method as Consul does on write, with Consul's default TTL bounds: name, type (only
    /// `jwt`), `MaxTokenTTL` (zero, or between [`MIN_TOKEN_TTL`] and [`MAX_TOKEN_TTL`]) and that the
    /// `Config` parses as a [`JwtConfig`].
    pub fn validate(&self) -> Result<(), AuthMethodError> {
        self.validate_with_ttl_bounds(MIN_TOKEN_TTL, MAX_TOKEN_TTL)
    }

    /// [`AuthMethod::validate`] with the node's configured TTL bounds.
    pub fn validate_with_ttl_bounds(&self, min: Duration, max: Duration) -> Result<(), AuthMethodError> {
        if self.name.is_empty() {
            return Err(AuthMethodError::MissingName);
        }
        if !is_valid_auth_method_name(&self.name) {
            return Err(AuthMethodError::InvalidName(self.name.clone()));
        }
        self.check_type()?;
        let ttl = self.max_token_ttl;
        if !ttl.is_zero() {
            if ttl > max {
                return Err(AuthMethodError::MaxTokenTtlTooLong { ttl, max });
            }
            if ttl < min {
                return Err(AuthMethodError::MaxTokenTtlTooShort { ttl, min });
            }
        }
        self.jwt_config().map(|_| ())
    }

    /// Consul refuses a `global` method outside the primary datacenter.
    pub fn validate_locality(&self, in_primary_datacenter: bool) -> Result<(), AuthMethodError> {
        if self.token_locality == TokenLocality::Global && !in_primary_datacenter {
            return Err(AuthMethodError::GlobalOutsidePrimary);
        }
        Ok(())
    }

    /// The method's `Config` parsed as a JWT configuration (the type must be `jwt`).
    pub fn jwt_config(&self) -> Result<JwtConfig, AuthMethodError> {
        self.check_type()?;
        Ok(JwtConfig::from_value(&self.config)?)
    }

    fn check_type(&self) -> Result<(), AuthMethodError> {
        if self.method_type == JWT_METHOD_TYPE {
            Ok(())
        } else if UNSUPPORTED_METHOD_TYPES.contains(&self.method_type.as_str()) {
            Err(AuthMethodError::UnsupportedType(self.method_type.clone()))
        } else {
            Err(AuthMethodError::UnknownType(self.method_type.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::ed25519_key;

    fn method(config: serde_json::Value) -> AuthMethod {
        AuthMethod {
            name: "jwt-login".into(),
            method_type: "jwt".into(),
            display_name: String::new(),
            description: String::new(),
            max_token_ttl: Duration::ZERO,
            token_locality: TokenLocality::Local,
            config,
            create_index: 0,
            modify_index: 0,
        }
    }

    fn good_config() -> serde_json::Value {
        serde_json::json!({ "JWTValidationPubKeys": [ed25519_key().1] })
    }

    #[test]
    fn json_uses_consul_names_and_go_durations() {
        let input = serde_json::json!({
            "Name": "jwt-login", "Type": "jwt", "DisplayName": "JWT", "Description": "d",
            "MaxTokenTTL": "5m", "TokenLocality": "global", "Config": {"BoundIssuer": "i"},
            "CreateIndex": 3, "ModifyIndex": 4
        });
        let m: AuthMethod = serde_json::from_value(input).unwrap();
        assert_eq!(m.max_token_ttl, Duration::from_secs(300));
        assert_eq!(m.token_locality, TokenLocality::Global);
        assert_eq!((m.create_index, m.modify_index), (3, 4));
        let out = serde_json::to_value(&m).unwrap();
        assert_eq!(out["MaxTokenTTL"], "5m0s");
        assert_eq!(out["TokenLocality"], "global");
        assert_eq!(out["DisplayName"], "JWT");
        assert_eq!(out["Config"]["BoundIssuer"], "i");

        let m: AuthMethod = serde_json::from_value(
            serde_json::json!({"Name": "a", "Type": "jwt", "MaxTokenTTL": "300s", "TokenLocality": ""}),
        )
        .unwrap();
        assert_eq!(m.max_token_ttl, Duration::from_secs(300));
        assert_eq!(m.token_locality, TokenLocality::Local);
        let out = serde_json::to_value(&m).unwrap();
        assert!(out.get("TokenLocality").is_none() && out.get("DisplayName").is_none());

        let err =
            serde_json::from_value::<AuthMethod>(serde_json::json!({"Name": "a", "TokenLocality": "planet"}))
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("TokenLocality should be one of 'local' or 'global'"),
            "{err}"
        );
        let err = serde_json::from_value::<AuthMethod>(
            serde_json::json!({"Name": "a", "MaxTokenTTL": "5 minutes"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn validate_checks_name_type_ttl_and_config() {
        assert_eq!(method(good_config()).validate(), Ok(()));

        let mut m = method(good_config());
        m.name = String::new();
        assert_eq!(m.validate(), Err(AuthMethodError::MissingName));
        m.name = "bad name!".into();
        let err = m.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Auth Method: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
        );
        m.name = "x".repeat(129);
        assert!(matches!(m.validate(), Err(AuthMethodError::InvalidName(_))));

        let mut m = method(good_config());
        m.method_type = "kubernetes".into();
        let err = m.validate().unwrap_err();
        assert_eq!(err, AuthMethodError::UnsupportedType("kubernetes".into()));
        assert!(err.to_string().contains("\"kubernetes\""), "{err}");
        m.method_type = "oidc".into();
        assert_eq!(m.validate(), Err(AuthMethodError::UnsupportedType("oidc".into())));
        m.method_type = String::new();
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "Invalid Auth Method: Type should be one of: [jwt]"
        );

        let mut m = method(good_config());
        m.max_token_ttl = Duration::from_secs(48 * 3600);
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "MaxTokenTTL 48h0m0s cannot be more than 24h0m0s"
        );
        m.max_token_ttl = Duration::from_secs(30);
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "MaxTokenTTL 30s cannot be less than 1m0s"
        );
        m.max_token_ttl = Duration::from_secs(600);
        assert_eq!(m.validate(), Ok(()));

        let m = method(serde_json::json!({}));
        let err = m.validate().unwrap_err();
        assert!(
            matches!(err, AuthMethodError::Config(JwtConfigError::NoKeySource)),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("Invalid Auth Method: exactly one of"),
            "{err}"
        );
    }

    #[test]
    fn global_methods_only_in_the_primary() {
        let mut m = method(good_config());
        assert_eq!(m.validate_locality(false), Ok(()));
        m.token_locality = TokenLocality::Global;
        assert_eq!(m.validate_locality(true), Ok(()));
        assert_eq!(
            m.validate_locality(false),
            Err(AuthMethodError::GlobalOutsidePrimary)
        );
    }
}
