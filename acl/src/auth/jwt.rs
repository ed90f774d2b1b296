//! The `jwt` auth method: its configuration and the check of a bearer JWT against it, ending in the
//! [`Identity`] binding rules select on.
//!
//! Only statically configured public keys are supported: `JWKSURL` and `OIDCDiscoveryURL` need keys
//! fetched over the network, which this crate never does. The signature is checked by `jsonwebtoken`
//! (ring); every claim is checked here, with Consul's rules for missing time claims and leeways.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::duration::{DurationError, parse_go_duration_nanos};
use super::selector::SelectableFields;

/// Leeway for a missing `exp` or `nbf` when its setting is zero (Consul: 150 s).
pub const DEFAULT_CLAIM_LEEWAY: Duration = Duration::from_secs(150);

/// Leeway for clock skew when `ClockSkewLeeway` is zero (Consul: 60 s).
pub const DEFAULT_CLOCK_SKEW_LEEWAY: Duration = Duration::from_secs(60);

/// Algorithms `JWTSupportedAlgs` may name: Consul's list plus `EdDSA` (Ed25519 keys are accepted).
/// `ES512` is accepted for compatibility but no configurable key can verify it.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

fn family_of(algorithm: &str) -> Option<(Algorithm, KeyFamily)> {
    Some(match algorithm {
        "RS256" => (Algorithm::RS256, KeyFamily::Rsa),
        "RS384" => (Algorithm::RS384, KeyFamily::Rsa),
        "RS512" => (Algorithm::RS512, KeyFamily::Rsa),
        "PS256" => (Algorithm::PS256, KeyFamily::Rsa),
        "PS384" => (Algorithm::PS384, KeyFamily::Rsa),
        "PS512" => (Algorithm::PS512, KeyFamily::Rsa),
        "ES256" => (Algorithm::ES256, KeyFamily::Ec),
        "ES384" => (Algorithm::ES384, KeyFamily::Ec),
        "EdDSA" => (Algorithm::EdDSA, KeyFamily::Ed),
        _ => return None,
    })
}

#[derive(Clone)]
struct ValidationKey {
    family: KeyFamily,
    key: DecodingKey,
}

impl std::fmt::Debug for ValidationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ValidationKey({:?})", self.family)
    }
}

/// A `jwt` auth method's `Config`, parsed and checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `BoundIssuer`: the required `iss`; empty means any.
    pub bound_issuer: String,
    /// `BoundAudiences`: `aud` must contain one of these; when empty, a token with an `aud` is refused.
    pub bound_audiences: Vec<String>,
    /// `ClaimMappings`: claim (a name, or a JSON pointer starting with `/`) → field name under `value.`.
    pub claim_mappings: BTreeMap<String, String>,
    /// `ListClaimMappings`: claim → field name under `list.`.
    pub list_claim_mappings: BTreeMap<String, String>,
    /// `JWTSupportedAlgs`; empty allows any algorithm a configured key can verify.
    pub supported_algorithms: Vec<String>,
    /// Effective clock-skew leeway for `exp`, `nbf` and `iat` (`ClockSkewLeeway`: 0 → 60 s, < 0 → none).
    pub clock_skew_leeway: Duration,
    /// Effective `ExpirationLeeway`, used only when the token has no `exp` (0 → 150 s, < 0 → none).
    pub expiration_leeway: Duration,
    /// Effective `NotBeforeLeeway`, used only when the token has neither `nbf` nor `iat`.
    pub not_before_leeway: Duration,
    keys: Vec<ValidationKey>,
}

/// Why a `jwt` method's `Config` was refused. Messages follow Consul's where Consul has one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// `Config` is not a JSON object.
    #[error("Config must be an object")]
    NotAnObject,
    /// A key no `jwt` method has.
    #[error("Config has an invalid key: {0}")]
    UnknownField(String),
    /// A field of the wrong JSON type.
    #[error("'{field}' must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field only the `oidc` type takes.
    #[error("'{0}' must not be set for type \"jwt\"")]
    NotAllowedForJwt(&'static str),
    /// A key source that needs network fetches (`JWKSURL`, `OIDCDiscoveryURL` and their CA certs).
    #[error(
        "'{0}' is not supported here: it needs keys fetched over the network; use 'JWTValidationPubKeys'"
    )]
    NetworkKeySourceNotSupported(&'static str),
    /// No public keys configured.
    #[error(
        "exactly one of 'JWTValidationPubKeys', 'JWKSURL', or 'OIDCDiscoveryURL' must be set for type \"jwt\""
    )]
    NoKeySource,
    /// A `JWTValidationPubKeys` entry that is not a PEM RSA, ECDSA or Ed25519 public key.
    #[error(
        "error parsing public key JWTValidationPubKeys[{index}]: data does not contain any valid RSA, ECDSA, or ED25519 public keys"
    )]
    InvalidPublicKey {
        /// Position in the list.
        index: usize,
    },
    /// A `JWTSupportedAlgs` entry that is not an asymmetric JWS algorithm.
    #[error("Invalid supported algorithm: {0}")]
    InvalidAlgorithm(String),
    /// Two claims mapped to one field name.
    #[error("{field} contains multiple mappings for key {target:?}")]
    DuplicateMapping {
        /// `ClaimMappings` or `ListClaimMappings`.
        field: &'static str,
        /// The repeated field name.
        target: String,
    },
    /// A leeway that is not a Go duration.
    #[error("'{field}': {source}")]
    InvalidDuration {
        /// The field.
        field: &'static str,
        /// What was wrong.
        source: DurationError,
    },
}

const OIDC_ONLY_FIELDS: &[&str] = &[
    "OIDCClientID",
    "OIDCClientSecret",
    "OIDCScopes",
    "OIDCACRValues",
    "AllowedRedirectURIs",
    "VerboseOIDCLogging",
];

const NETWORK_FIELDS: &[&str] = &["JWKSURL", "JWKSCACert", "OIDCDiscoveryURL", "OIDCDiscoveryCACert"];

/// Is this JSON value "unset" the way Go's zero values are (so an OIDC-only field may be present)?
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

fn string_field(field: &'static str, value: &Value) -> Result<String, JwtConfigError> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(JwtConfigError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn string_list_field(field: &'static str, value: &Value) -> Result<Vec<String>, JwtConfigError> {
    let wrong = || JwtConfigError::WrongType {
        field,
        expected: "a list of strings",
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        _ => Err(wrong()),
    }
}

fn mapping_field(field: &'static str, value: &Value) -> Result<BTreeMap<String, String>, JwtConfigError> {
    let wrong = || JwtConfigError::WrongType {
        field,
        expected: "an object of strings",
    };
    let map = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Object(map) => map,
        _ => return Err(wrong()),
    };
    let mut out = BTreeMap::new();
    let mut targets = BTreeSet::new();
    for (claim, target) in map {
        let target = target.as_str().ok_or_else(wrong)?;
        if !targets.insert(target) {
            return Err(JwtConfigError::DuplicateMapping {
                field,
                target: target.to_owned(),
            });
        }
        out.insert(claim.clone(), target.to_owned());
    }
    Ok(out)
}

/// Consul's leeway rule: zero means the default, negative means none.
fn leeway_field(field: &'static str, value: &Value, default: Duration) -> Result<Duration, JwtConfigError> {
    let nanos: i128 = match value {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().map(i128::from).ok_or(JwtConfigError::WrongType {
            field,
            expected: "a duration (\"60s\") or integer nanoseconds",
        })?,
        Value::String(s) => {
            parse_go_duration_nanos(s).map_err(|source| JwtConfigError::InvalidDuration { field, source })?
        }
        _ => {
            return Err(JwtConfigError::WrongType {
                field,
                expected: "a duration (\"60s\") or integer nanoseconds",
            });
        }
    };
    Ok(match nanos {
        0 => default,
        n if n < 0 => Duration::ZERO,
        n => Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX)),
    })
}

fn parse_public_key(pem: &str) -> Option<ValidationKey> {
    let bytes = pem.trim().as_bytes();
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Some(ValidationKey {
            family: KeyFamily::Rsa,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        return Some(ValidationKey {
            family: KeyFamily::Ec,
            key,
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Some(ValidationKey {
            family: KeyFamily::Ed,
            key,
        });
    }
    None
}

impl JwtConfig {
    /// Parses a `jwt` method's `Config` (field names match case-insensitively, as Consul's decoder does).
    pub fn from_value(config: &Value) -> Result<JwtConfig, JwtConfigError> {
        let empty = serde_json::Map::new();
        let object = match config {
            Value::Null => &empty,
            Value::Object(object) => object,
            _ => return Err(JwtConfigError::NotAnObject),
        };
        let mut parsed = JwtConfig {
            bound_issuer: String::new(),
            bound_audiences: Vec::new(),
            claim_mappings: BTreeMap::new(),
            list_claim_mappings: BTreeMap::new(),
            supported_algorithms: Vec::new(),
            clock_skew_leeway: DEFAULT_CLOCK_SKEW_LEEWAY,
            expiration_leeway: DEFAULT_CLAIM_LEEWAY,
            not_before_leeway: DEFAULT_CLAIM_LEEWAY,
            keys: Vec::new(),
        };
        let mut pem_keys = Vec::new();
        for (key, value) in object {
            let known = |name: &str| key.eq_ignore_ascii_case(name);
            if let Some(field) = OIDC_ONLY_FIELDS.iter().copied().find(|f| known(f)) {
                if !is_zero(value) {
                    return Err(JwtConfigError::NotAllowedForJwt(field));
                }
            } else if let Some(field) = NETWORK_FIELDS.iter().copied().find(|f| known(f)) {
                if !is_zero(value) {
                    return Err(JwtConfigError::NetworkKeySourceNotSupported(field));
                }
            } else if known("JWTValidationPubKeys") {
                pem_keys = string_list_field("JWTValidationPubKeys", value)?;
            } else if known("BoundIssuer") {
                parsed.bound_issuer = string_field("BoundIssuer", value)?;
            } else if known("BoundAudiences") {
                parsed.bound_audiences = string_list_field("BoundAudiences", value)?;
            } else if known("ClaimMappings") {
                parsed.claim_mappings = mapping_field("ClaimMappings", value)?;
            } else if known("ListClaimMappings") {
                parsed.list_claim_mappings = mapping_field("ListClaimMappings", value)?;
            } else if known("JWTSupportedAlgs") {
                parsed.supported_algorithms = string_list_field("JWTSupportedAlgs", value)?;
            } else if known("ClockSkewLeeway") {
                parsed.clock_skew_leeway = leeway_field("ClockSkewLeeway", value, DEFAULT_CLOCK_SKEW_LEEWAY)?;
            } else if known("ExpirationLeeway") {
                parsed.expiration_leeway = leeway_field("ExpirationLeeway", value, DEFAULT_CLAIM_LEEWAY)?;
            } else if known("NotBeforeLeeway") {
                parsed.not_before_leeway = leeway_field("NotBeforeLeeway", value, DEFAULT_CLAIM_LEEWAY)?;
            } else {
                return Err(JwtConfigError::UnknownField(key.clone()));
            }
        }
        if pem_keys.is_empty() {
            return Err(JwtConfigError::NoKeySource);
        }
        for (index, pem) in pem_keys.iter().enumerate() {
            let key = parse_public_key(pem).ok_or(JwtConfigError::InvalidPublicKey { index })?;
            parsed.keys.push(key);
        }
        for algorithm in &parsed.supported_algorithms {
            if !SUPPORTED_ALGORITHMS.contains(&algorithm.as_str()) {
                return Err(JwtConfigError::InvalidAlgorithm(algorithm.clone()));
            }
        }
        Ok(parsed)
    }

    /// The interpolation variables a login through this method defines (`value.<name>` for each
    /// `ClaimMappings` target), which binding rules' `BindName` may use.
    pub fn projected_var_names(&self) -> Vec<String> {
        self.claim_mappings
            .values()
            .map(|name| format!("value.{name}"))
            .collect()
    }
}

/// What a verified login knows about its bearer: the fields selectors look at and the variables bind
/// names are filled with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `value.<name>` and `list.<name>`; every mapped name is present (empty when the claim was absent).
    pub fields: SelectableFields,
    /// `value.<name>` → the claim's string value, for `${value.<name>}` in bind names.
    pub projected_vars: BTreeMap<String, String>,
}

impl Identity {
    /// The identity of a login whose token had none of the mapped claims: every field present and
    /// empty. Rule validation uses it to know which fields and variables exist.
    pub fn blank(config: &JwtConfig) -> Identity {
        let mut identity = Identity::default();
        for name in config.claim_mappings.values() {
            identity.fields.values.insert(name.clone(), String::new());
            identity
                .projected_vars
                .insert(format!("value.{name}"), String::new());
        }
        for name in config.list_claim_mappings.values() {
            identity.fields.lists.insert(name.clone(), Vec::new());
        }
        identity
    }
}

/// Why a login JWT was refused. Messages follow Consul's (go-jose's for claim checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The bearer token is empty.
    #[error("missing jwt")]
    MissingJwt,
    /// Not a compact JWS (three base64url parts, a JSON header with `alg`).
    #[error("error parsing token: {0}")]
    Malformed(String),
    /// The header's `alg` is not allowed by `JWTSupportedAlgs` (or is symmetric or `none`).
    #[error("error validating signature: unsupported signing algorithm {algorithm:?}")]
    AlgorithmNotAllowed {
        /// The token's `alg`.
        algorithm: String,
    },
    /// No configured key verified the signature.
    #[error("no known key successfully validated the token signature")]
    InvalidSignature,
    /// The payload is not a JSON object, or a registered claim has the wrong JSON type.
    #[error("failed to unmarshal claims: {0}")]
    InvalidClaims(String),
    /// None of `iat`, `nbf`, `exp`.
    #[error("no issue time, notbefore, or expiration time encoded in token")]
    NoTimeClaims,
    /// `iss` differs from `BoundIssuer`.
    #[error("error validating claims: go-jose/go-jose/jwt: validation failed, invalid issuer claim (iss)")]
    InvalidIssuer,
    /// `nbf` is later than now plus the clock-skew leeway.
    #[error("error validating claims: go-jose/go-jose/jwt: validation failed, token not valid yet (nbf)")]
    NotValidYet,
    /// `exp` is earlier than now minus the clock-skew leeway.
    #[error("error validating claims: go-jose/go-jose/jwt: validation failed, token is expired (exp)")]
    Expired,
    /// `iat` is later than now plus the clock-skew leeway.
    #[error(
        "error validating claims: go-jose/go-jose/jwt: validation failed, token issued in the future (iat)"
    )]
    IssuedInTheFuture,
    /// The token has an `aud` but the method binds no audience.
    #[error("error validating claims: audience claim found in JWT but no audiences are bound")]
    UnboundAudience,
    /// No `aud` value is one of `BoundAudiences`.
    #[error("error validating claims: aud claim does not match any bound audience")]
    AudienceMismatch,
    /// A `ClaimMappings` claim is an object or a list.
    #[error("error converting claim '{claim}' to string from unknown type {found}")]
    ClaimNotString {
        /// The claim as configured.
        claim: String,
        /// Its JSON type.
        found: &'static str,
    },
    /// A `ListClaimMappings` claim is an object.
    #[error("{claim:?} list claim could not be converted to string list")]
    ListClaimNotList {
        /// The claim as configured.
        claim: String,
    },
    /// An element of a `ListClaimMappings` list is an object or a list.
    #[error("value {element} in {claim:?} list claim could not be parsed as string")]
    ListElementNotString {
        /// The claim as configured.
        claim: String,
        /// The element, as JSON.
        element: String,
    },
}

fn decode_part(part: &str, what: &str) -> Result<Value, LoginError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| LoginError::Malformed(format!("invalid base64 in {what}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| LoginError::Malformed(format!("invalid JSON in {what}: {e}")))
}

/// A registered time claim as whole seconds (go-jose truncates fractions); absent or null is 0.
fn numeric_date(claims: &serde_json::Map<String, Value>, name: &str) -> Result<i64, LoginError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| LoginError::InvalidClaims(format!("'{name}' is not a number"))),
        Some(_) => Err(LoginError::InvalidClaims(format!("'{name}' must be a number"))),
    }
}

fn audiences(claims: &serde_json::Map<String, Value>) -> Result<Vec<String>, LoginError> {
    let wrong = || LoginError::InvalidClaims("'aud' must be a string or a list of strings".to_owned());
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        Some(_) => Err(wrong()),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "map[string]interface {}",
        Value::Array(_) => "[]interface {}",
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
    }
}

/// A scalar claim as a string: strings as they are, booleans as `true`/`false`, numbers truncated to
/// an integer (as Consul does with JSON's float64 numbers).
fn stringify(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => (n.as_f64().unwrap_or(0.0) as i64).to_string(),
        }),
        _ => None,
    }
}

/// A claim by name, or by JSON pointer when it starts with `/` (an unresolvable pointer is absent).
fn get_claim<'a>(claims: &'a Value, claim: &str) -> Option<&'a Value> {
    let found = if claim.starts_with('/') {
        claims.pointer(claim)
    } else {
        claims.get(claim)
    };
    found.filter(|v| !v.is_null())
}

fn nanos_of(seconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000
}

/// Verifies a login JWT against a `jwt` method's configuration at time `now`, and maps its claims to an
/// [`Identity`].
///
/// Checks, in Consul's order: a configured key verifies the signature with an allowed algorithm; at
/// least one of `iat`/`nbf`/`exp`; a missing `exp` becomes `max(iat, nbf) + ExpirationLeeway`; a missing
/// `nbf` becomes `iat`, or `exp - NotBeforeLeeway` without `iat`; `iss` equals `BoundIssuer` (when set);
/// `nbf`, `exp` and `iat` hold within `ClockSkewLeeway`; `aud` contains a bound audience (and a token
/// with an `aud` is refused when none is bound).
pub fn verify_jwt(config: &JwtConfig, jwt: &str, now: SystemTime) -> Result<Identity, LoginError> {
    if jwt.is_empty() {
        return Err(LoginError::MissingJwt);
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LoginError::Malformed(
            "compact JWS format must have three parts".to_owned(),
        ));
    };
    let header_json = decode_part(header, "header")?;
    let algorithm = header_json
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| LoginError::Malformed("header has no 'alg'".to_owned()))?
        .to_owned();
    let allowed = config.supported_algorithms.is_empty() || config.supported_algorithms.contains(&algorithm);
    let Some((jws_algorithm, family)) = family_of(&algorithm).filter(|_| allowed) else {
        return Err(LoginError::AlgorithmNotAllowed { algorithm });
    };
    let signing_input = &jwt[..header.len() + 1 + payload.len()];
    let verified = config.keys.iter().filter(|k| k.family == family).any(|k| {
        jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &k.key, jws_algorithm)
            .unwrap_or(false)
    });
    if !verified {
        return Err(LoginError::InvalidSignature);
    }

    let all_claims = decode_part(payload, "payload").map_err(|e| LoginError::InvalidClaims(e.to_string()))?;
    let Some(claims) = all_claims.as_object() else {
        return Err(LoginError::InvalidClaims(
            "payload is not a JSON object".to_owned(),
        ));
    };
    let issued_at = numeric_date(claims, "iat")?;
    let mut expiry = numeric_date(claims, "exp")?;
    let mut not_before = numeric_date(claims, "nbf")?;
    let issuer = match claims.get("iss") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(LoginError::InvalidClaims("'iss' must be a string".to_owned())),
    };
    let token_audiences = audiences(claims)?;

    if issued_at == 0 && expiry == 0 && not_before == 0 {
        return Err(LoginError::NoTimeClaims);
    }
    let leeway_seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if expiry == 0 {
        let latest_start = issued_at.max(not_before);
        expiry = latest_start.saturating_add(leeway_seconds(config.expiration_leeway));
    }
    if not_before == 0 {
        not_before = if issued_at != 0 {
            issued_at
        } else {
            expiry.saturating_sub(leeway_seconds(config.not_before_leeway))
        };
    }

    if !config.bound_issuer.is_empty() && config.bound_issuer != issuer {
        return Err(LoginError::InvalidIssuer);
    }
    let now_nanos: i128 = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::try_from(since.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let skew = i128::try_from(config.clock_skew_leeway.as_nanos()).unwrap_or(i128::MAX);
    if now_nanos.saturating_add(skew) < nanos_of(not_before) {
        return Err(LoginError::NotValidYet);
    }
    if now_nanos.saturating_sub(skew) > nanos_of(expiry) {
        return Err(LoginError::Expired);
    }
    if issued_at != 0 && now_nanos.saturating_add(skew) < nanos_of(issued_at) {
        return Err(LoginError::IssuedInTheFuture);
    }
    if config.bound_audiences.is_empty() {
        if !token_audiences.is_empty() {
            return Err(LoginError::UnboundAudience);
        }
    } else if !config
        .bound_audiences
        .iter()
        .any(|bound| token_audiences.contains(bound))
    {
        return Err(LoginError::AudienceMismatch);
    }

    identity_from_claims(config, &all_claims)
}

fn identity_from_claims(config: &JwtConfig, all_claims: &Value) -> Result<Identity, LoginError> {
    let mut identity = Identity::blank(config);
    for (claim, name) in &config.claim_mappings {
        let Some(raw) = get_claim(all_claims, claim) else {
            continue;
        };
        let value = stringify(raw).ok_or_else(|| LoginError::ClaimNotString {
            claim: claim.clone(),
            found: json_type_name(raw),
        })?;
        identity
            .projected_vars
            .insert(format!("value.{name}"), value.clone());
        identity.fields.values.insert(name.clone(), value);
    }
    for (claim, name) in &config.list_claim_mappings {
        let Some(raw) = get_claim(all_claims, claim) else {
            continue;
        };
        let items: Vec<&Value> = match raw {
            Value::Array(items) => items.iter().collect(),
            Value::Object(_) => return Err(LoginError::ListClaimNotList { claim: claim.clone() }),
            scalar => vec![scalar],
        };
        let mut list = Vec::with_capacity(items.len());
        for item in items {
            let value = stringify(item).ok_or_else(|| LoginError::ListElementNotString {
                claim: claim.clone(),
                element: item.to_string(),
            })?;
            if !value.is_empty() {
                list.push(value);
            }
        }
        identity.fields.lists.insert(name.clone(), list);
    }
    Ok(identity)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn pem(der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// A fresh Ed25519 key: (signing key, public key PEM).
    pub(crate) fn ed25519_key() -> (EncodingKey, String) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING key }
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        (EncodingKey::from_ed_der(pkcs8.as_ref()), pem(&spki))
    }

    /// A fresh ECDSA P-256 key: (signing key, public key PEM).
    pub(crate) fn p256_key() -> (EncodingKey, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // SEQUENCE { SEQUENCE { OID ecPublicKey, OID prime256v1 }, BIT STRING uncompressed point }
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
            0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        (EncodingKey::from_ec_der(pkcs8.as_ref()), pem(&spki))
    }

    pub(crate) const NOW: u64 = 1_700_000_000;

    pub(crate) fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    pub(crate) fn sign(key: &EncodingKey, algorithm: Algorithm, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
    }

    pub(crate) fn config(extra: Value, pems: &[&str]) -> JwtConfig {
        let mut object = json!({ "JWTValidationPubKeys": pems });
        if let (Some(o), Value::Object(extra)) = (object.as_object_mut(), extra) {
            o.extend(extra);
        }
        JwtConfig::from_value(&object).unwrap()
    }

    fn fresh_claims() -> Value {
        json!({ "iss": "https://issuer", "aud": "consul", "iat": NOW, "exp": NOW + 600, "sub": "web" })
    }

    fn bound() -> Value {
        json!({ "BoundIssuer": "https://issuer", "BoundAudiences": ["other", "consul"] })
    }

    #[test]
    fn good_signature_with_either_key_type_and_any_configured_key() {
        let (ed, ed_pem) = ed25519_key();
        let (ec, ec_pem) = p256_key();
        let cfg = config(bound(), &[&ec_pem, &ed_pem]);
        assert!(verify_jwt(&cfg, &sign(&ed, Algorithm::EdDSA, &fresh_claims()), at(NOW)).is_ok());
        assert!(verify_jwt(&cfg, &sign(&ec, Algorithm::ES256, &fresh_claims()), at(NOW)).is_ok());
    }

    #[test]
    fn bad_signatures_are_refused() {
        let (_, ed_pem) = ed25519_key();
        let (other, _) = ed25519_key();
        let cfg = config(bound(), &[&ed_pem]);
        let token = sign(&other, Algorithm::EdDSA, &fresh_claims());
        assert_eq!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::InvalidSignature)
        );
        assert_eq!(
            LoginError::InvalidSignature.to_string(),
            "no known key successfully validated the token signature"
        );

        // A valid token whose payload was swapped keeps its signature but not its validity.
        let (ed, ed_pem) = ed25519_key();
        let cfg = config(bound(), &[&ed_pem]);
        let token = sign(&ed, Algorithm::EdDSA, &fresh_claims());
        let mut forged_claims = fresh_claims();
        forged_claims["sub"] = json!("admin");
        let forged_payload = URL_SAFE_NO_PAD.encode(forged_claims.to_string());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verify_jwt(&cfg, &forged, at(NOW)),
            Err(LoginError::InvalidSignature)
        );
    }

    #[test]
    fn algorithms_are_restricted() {
        let (ec, ec_pem) = p256_key();
        let cfg = config(
            json!({ "BoundAudiences": ["consul"], "JWTSupportedAlgs": ["RS256"] }),
            &[&ec_pem],
        );
        let token = sign(&ec, Algorithm::ES256, &fresh_claims());
        assert_eq!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::AlgorithmNotAllowed {
                algorithm: "ES256".into()
            })
        );
        // HMAC with the public key as secret (the classic confusion attack) is never accepted.
        let cfg = config(json!({ "BoundAudiences": ["consul"] }), &[&ec_pem]);
        let hmac = EncodingKey::from_secret(ec_pem.as_bytes());
        let token = sign(&hmac, Algorithm::HS256, &fresh_claims());
        assert!(matches!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::AlgorithmNotAllowed { .. })
        ));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(fresh_claims().to_string())
        );
        assert!(matches!(
            verify_jwt(&cfg, &none, at(NOW)),
            Err(LoginError::AlgorithmNotAllowed { .. })
        ));
    }

    #[test]
    fn malformed_tokens() {
        let (_, ed_pem) = ed25519_key();
        let cfg = config(bound(), &[&ed_pem]);
        assert_eq!(verify_jwt(&cfg, "", at(NOW)), Err(LoginError::MissingJwt));
        assert!(matches!(
            verify_jwt(&cfg, "a.b", at(NOW)),
            Err(LoginError::Malformed(_))
        ));
        assert!(matches!(
            verify_jwt(&cfg, "a.b.c.d", at(NOW)),
            Err(LoginError::Malformed(_))
        ));
        assert!(matches!(
            verify_jwt(&cfg, "!!.b.c", at(NOW)),
            Err(LoginError::Malformed(_))
        ));
    }

    #[test]
    fn issuer_and_audience() {
        let (ed, ed_pem) = ed25519_key();
        let cfg = config(bound(), &[&ed_pem]);
        let mut claims = fresh_claims();
        claims["iss"] = json!("https://elsewhere");
        assert_eq!(
            verify_jwt(&cfg, &sign(&ed, Algorithm::EdDSA, &claims), at(NOW)),
            Err(LoginError::InvalidIssuer)
        );

        let mut claims = fresh_claims();
        claims["aud"] = json!(["x", "y"]);
        assert_eq!(
            verify_jwt(&cfg, &sign(&ed, Algorithm::EdDSA, &claims), at(NOW)),
            Err(LoginError::AudienceMismatch)
        );
        claims["aud"] = json!(["x", "consul"]);
        assert!(verify_jwt(&cfg, &sign(&ed, Algorithm::EdDSA, &claims), at(NOW)).is_ok());

        let unbound = config(json!({}), &[&ed_pem]);
        assert_eq!(
            verify_jwt(&unbound, &sign(&ed, Algorithm::EdDSA, &claims), at(NOW)),
            Err(LoginError::UnboundAudience)
        );
        let mut no_aud = fresh_claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(verify_jwt(&unbound, &sign(&ed, Algorithm::EdDSA, &no_aud), at(NOW)).is_ok());
    }

    #[test]
    fn expiry_with_and_without_clock_skew_leeway() {
        let (ed, ed_pem) = ed25519_key();
        let claims = json!({ "aud": "consul", "iat": NOW - 1000, "exp": NOW - 30 });
        let token = sign(&ed, Algorithm::EdDSA, &claims);
        // Default skew (60 s) covers 30 s past exp, not 61 s.
        let cfg = config(json!({ "BoundAudiences": ["consul"] }), &[&ed_pem]);
        assert!(verify_jwt(&cfg, &token, at(NOW)).is_ok());
        assert_eq!(verify_jwt(&cfg, &token, at(NOW + 31)), Err(LoginError::Expired));
        // Disabled skew: expired right after exp.
        let strict = config(
            json!({ "BoundAudiences": ["consul"], "ClockSkewLeeway": "-1s" }),
            &[&ed_pem],
        );
        assert_eq!(verify_jwt(&strict, &token, at(NOW)), Err(LoginError::Expired));
        assert!(verify_jwt(&strict, &token, at(NOW - 30)).is_ok());
        // Custom skew.
        let lax = config(
            json!({ "BoundAudiences": ["consul"], "ClockSkewLeeway": "5m" }),
            &[&ed_pem],
        );
        assert!(verify_jwt(&lax, &token, at(NOW + 200)).is_ok());
        assert_eq!(
            LoginError::Expired.to_string(),
            "error validating claims: go-jose/go-jose/jwt: validation failed, token is expired (exp)"
        );
    }

    #[test]
    fn missing_exp_gets_expiration_leeway() {
        let (ed, ed_pem) = ed25519_key();
        let token = sign(&ed, Algorithm::EdDSA, &json!({ "iat": NOW }));
        let skew_off = json!({ "ClockSkewLeeway": -1 });
        let cfg = config(skew_off.clone(), &[&ed_pem]);
        // exp = iat + 150 s by default
        assert!(verify_jwt(&cfg, &token, at(NOW + 150)).is_ok());
        assert_eq!(verify_jwt(&cfg, &token, at(NOW + 151)), Err(LoginError::Expired));
        let mut longer = skew_off.clone();
        longer["ExpirationLeeway"] = json!("1h");
        assert!(verify_jwt(&config(longer, &[&ed_pem]), &token, at(NOW + 3000)).is_ok());
        let mut none = skew_off;
        none["ExpirationLeeway"] = json!("-1s");
        assert_eq!(
            verify_jwt(&config(none, &[&ed_pem]), &token, at(NOW + 1)),
            Err(LoginError::Expired)
        );
    }

    #[test]
    fn not_before_and_issued_at() {
        let (ed, ed_pem) = ed25519_key();
        let cfg = config(json!({ "ClockSkewLeeway": -1 }), &[&ed_pem]);
        let token = sign(
            &ed,
            Algorithm::EdDSA,
            &json!({ "nbf": NOW + 10, "exp": NOW + 100 }),
        );
        assert_eq!(verify_jwt(&cfg, &token, at(NOW)), Err(LoginError::NotValidYet));
        assert!(verify_jwt(&cfg, &token, at(NOW + 10)).is_ok());
        // Only exp: nbf = exp - NotBeforeLeeway (150 s).
        let token = sign(&ed, Algorithm::EdDSA, &json!({ "exp": NOW + 200 }));
        assert_eq!(verify_jwt(&cfg, &token, at(NOW)), Err(LoginError::NotValidYet));
        assert!(verify_jwt(&cfg, &token, at(NOW + 50)).is_ok());
        let token = sign(
            &ed,
            Algorithm::EdDSA,
            &json!({ "iat": NOW + 10, "nbf": NOW - 10, "exp": NOW + 100 }),
        );
        assert_eq!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::IssuedInTheFuture)
        );
        // Default skew (60 s) forgives 10 s.
        let cfg = config(json!({}), &[&ed_pem]);
        assert!(verify_jwt(&cfg, &token, at(NOW)).is_ok());
        let token = sign(&ed, Algorithm::EdDSA, &json!({ "sub": "x" }));
        assert_eq!(verify_jwt(&cfg, &token, at(NOW)), Err(LoginError::NoTimeClaims));
    }

    #[test]
    fn time_claims_of_the_wrong_type_are_refused_not_ignored() {
        let (ed, ed_pem) = ed25519_key();
        let cfg = config(json!({}), &[&ed_pem]);
        let token = sign(
            &ed,
            Algorithm::EdDSA,
            &json!({ "iat": NOW, "nbf": "99999999999" }),
        );
        assert!(matches!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::InvalidClaims(_))
        ));
        let token = sign(&ed, Algorithm::EdDSA, &json!({ "iat": NOW, "exp": "never" }));
        assert!(matches!(
            verify_jwt(&cfg, &token, at(NOW)),
            Err(LoginError::InvalidClaims(_))
        ));
    }

    #[test]
    fn claim_mappings_flat_nested_and_lists() {
        let (ed, ed_pem) = ed25519_key();
        let cfg = config(
            json!({
                "ClaimMappings": {
                    "sub": "name", "/meta/team/id": "team", "admin": "admin", "age": "age", "absent": "missing"
                },
                "ListClaimMappings": { "groups": "groups", "/meta/roles": "roles", "single": "single" }
            }),
            &[&ed_pem],
        );
        let claims = json!({
            "iat": NOW, "sub": "web", "admin": true, "age": 41.9,
            "meta": { "team": { "id": 7 }, "roles": ["a", "", 3, false] },
            "groups": ["ops", "dev"], "single": "solo"
        });
        let identity = verify_jwt(&cfg, &sign(&ed, Algorithm::EdDSA, &claims), at(NOW)).unwrap();
        let values = &identity.fields.values;
        assert_eq!(values["name"], "web");
        assert_eq!(values["team"], "7");
        assert_eq!(values["admin"], "true");
        assert_eq!(values["age"], "41", "floats are truncated as in Consul");
        assert_eq!(values["missing"], "", "an absent claim still defines its field");
        let lists = &identity.fields.lists;
        assert_eq!(lists["groups"], vec!["ops", "dev"]);
        assert_eq!(
            lists["roles"],
            vec!["a", "3", "false"],
            "empty elements are dropped"
        );
        assert_eq!(lists["single"], vec!["solo"], "a scalar is a one-element list");
        assert_eq!(identity.projected_vars["value.name"], "web");
        assert_eq!(identity.projected_vars["value.missing"], "");
        assert_eq!(identity.projected_vars.len(), 5);

        let bad = sign(&ed, Algorithm::EdDSA, &json!({ "iat": NOW, "sub": {"a": 1} }));
        let err = verify_jwt(&cfg, &bad, at(NOW)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "error converting claim 'sub' to string from unknown type map[string]interface {}"
        );
        let bad = sign(&ed, Algorithm::EdDSA, &json!({ "iat": NOW, "groups": {"a": 1} }));
        assert_eq!(
            verify_jwt(&cfg, &bad, at(NOW)),
            Err(LoginError::ListClaimNotList {
                claim: "groups".into()
            })
        );
        let bad = sign(&ed, Algorithm::EdDSA, &json!({ "iat": NOW, "groups": [["x"]] }));
        assert!(matches!(
            verify_jwt(&cfg, &bad, at(NOW)),
            Err(LoginError::ListElementNotString { .. })
        ));
    }

    #[test]
    fn config_errors_name_the_field() {
        let (_, ed_pem) = ed25519_key();
        let err = |v: Value| JwtConfig::from_value(&v).unwrap_err();
        assert_eq!(err(json!({})), JwtConfigError::NoKeySource);
        assert_eq!(err(json!("x")), JwtConfigError::NotAnObject);
        assert_eq!(
            err(json!({ "JWKSURL": "https://keys" })),
            JwtConfigError::NetworkKeySourceNotSupported("JWKSURL")
        );
        assert_eq!(
            err(json!({ "OIDCDiscoveryURL": "https://idp" })),
            JwtConfigError::NetworkKeySourceNotSupported("OIDCDiscoveryURL")
        );
        assert_eq!(
            err(json!({ "JWTValidationPubKeys": [ed_pem], "OIDCClientID": "c" })),
            JwtConfigError::NotAllowedForJwt("OIDCClientID")
        );
        let e = err(json!({ "JWTValidationPubKeys": [ed_pem, "not a key"] }));
        assert_eq!(e, JwtConfigError::InvalidPublicKey { index: 1 });
        assert!(
            e.to_string()
                .starts_with("error parsing public key JWTValidationPubKeys[1]"),
            "{e}"
        );
        assert_eq!(
            err(json!({ "JWTValidationPubKeys": [ed_pem], "JWTSupportedAlgs": ["HS256"] })).to_string(),
            "Invalid supported algorithm: HS256"
        );
        assert_eq!(
            err(json!({ "JWTValidationPubKeys": [ed_pem], "ClaimMappings": {"a": "x", "b": "x"} }))
                .to_string(),
            "ClaimMappings contains multiple mappings for key \"x\""
        );
        assert_eq!(
            err(json!({ "JWTValidationPubKeys": [ed_pem], "Bogus": 1 })),
            JwtConfigError::UnknownField("Bogus".into())
        );
        assert!(matches!(
            err(json!({ "JWTValidationPubKeys": [ed_pem], "ClockSkewLeeway": "soon" })),
            JwtConfigError::InvalidDuration {
                field: "ClockSkewLeeway",
                ..
            }
        ));
        assert!(matches!(
            err(json!({ "JWTValidationPubKeys": "one" })),
            JwtConfigError::WrongType {
                field: "JWTValidationPubKeys",
                ..
            }
        ));
        // Case-insensitive keys and zero-valued OIDC fields are accepted, as Consul's decoder does.
        let ok =
            JwtConfig::from_value(&json!({ "jwtvalidationpubkeys": [ed_pem], "OIDCScopes": [] })).unwrap();
        assert_eq!(ok.clock_skew_leeway, DEFAULT_CLOCK_SKEW_LEEWAY);
    }

    /// A throwaway 2048-bit RSA key made for this test with openssl (ring cannot generate RSA keys).
    const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC06ryXgEjlhkaJ
06JemlM0qSRO3jRQboQp/jRpVAR/CyWDKHOiS40mDq1noI06uPBfmydBL9clED1w
eRl7D0tGvgOPgJWHasD/Mrd/SFno3ME0JC5XtfA4JjB7t9vymV+NLJmXSDAJGMPZ
iLp7/jSMiWodiTypB+/hPwXHJtuHYRrPAa2AmOLmrBRgksDGn1zeK1PObmUDv2cZ
sdADqkAl8fLb6/pecskEsyem4ZA6kulg66l109lWvhnajICjmVkr//fV5M33Z/V0
I1Wh78Nat8W9mZAY6GnfuvBG2V9DXo228a5YUkgnkz/BSTIjucArA6zDvmbMrqLa
j4gGS8wHAgMBAAECggEAN/01ZEWFSdMmXV0rsM9d1LxLykSmOAYbzMso+TfRNGgE
sfSA5Mcw5YhBTgK38mZtrYjcuyXNFWFTQk2X/yeaikgf3fdTT1dQZyoQ88k2WgSH
nlVcKjTaJOZcts0NuqSQl6Yn2lOy2f3aDqZr4Bept5yHRKDGLyGPsUvJw/pYkiqL
av4G+YI+V2TeOiOAz4wUdbH0dxFtDEdhwHopmVHgEWgKfFtfXhd2F826A3eo1lY4
EmndnNhR+n3yqrLcq/lI7tXCaG3zupy+NMseytwPEnMXUa+IA7Z8YQ7lP2qBPn+y
RKnX+qZZKLqslryPpJ3o6l0jN0V7EtPQU/HMjO/HsQKBgQDqWzUtMXP7VdXiOAzW
6mFcR3817a51eEOSRUvzk+Qvo+tn7XlUR8ASvi32OQiMEKt88pStXHopYu3Jrhcf
PBFgw+1eciJK62uKMk3wk4hgJsmXW4SrwWYbEHW9zPUrHMEmoPbGL3fczMdt22gh
0GCkZfjhpjAK6cDSPb1VBjg1fQKBgQDFoBV7cWKNbH7H0U7rg18yueHvXY7IuSUR
MKQJRs8o+n0kAaKXOgeBJWCKgBP7h7+B7lP0hE9thmgqtAzgxn/03vAtA7oUERrG
+YSRiVtfSJpsoAuHux2iJWMOmbO6DtK1XPcJUvTGzOBNLBGAmKYO6sGQ0l7YYuFB
BwVwO6xu0wKBgQCV9ecBFDPzD+nc56DPpQrH0bhE+eI4qMwUPONs6aWKFon75qlM
lN0DIU6nz7b4aXJScadRh2tkMDmYZB3HjthP4w9w7/ehmSMnOylEWCNb43X7tEQg
45BCoTW2TgBTpgKyhS1jg9xfHWo/kbYAbSZqDBZFzeHQGeOYpIkSbvhowQKBgGB7
s4E87hyVp5/udFVPIh8l2UR/rMIaghpOYQeWZnVfNdFqavLiBd/rW6LCvP7EW58X
uC1cm1qhkCGpHdBvmPD4FtIjS6mYYDZcg3h6Uv3F+H6n9HkjxWfwUNhD+hcQPZcF
+CW5NoAIbkm/Bhx+ajRGMJJ/4oZKYCbbQrB0sc65AoGAaB2Wv3K5CF4CgQ1IJTu5
NscJ2kQFC2+p8RXn3s4qaCGvFLX6ClfLW0OiDK+uR1OMwb+7D1TkF9FRdGrldJTb
1MmXxSLtugBXd/E3jjyrDHIUx7e3fLT7fSHRKr+jzEL2QwibPCtT8FM4ZU21PrBB
4OZ4YKcHlhTazNC3xnS6rt0=
-----END PRIVATE KEY-----";
    const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtOq8l4BI5YZGidOiXppT
NKkkTt40UG6EKf40aVQEfwslgyhzokuNJg6tZ6CNOrjwX5snQS/XJRA9cHkZew9L
Rr4Dj4CVh2rA/zK3f0hZ6NzBNCQuV7XwOCYwe7fb8plfjSyZl0gwCRjD2Yi6e/40
jIlqHYk8qQfv4T8Fxybbh2EazwGtgJji5qwUYJLAxp9c3itTzm5lA79nGbHQA6pA
JfHy2+v6XnLJBLMnpuGQOpLpYOupddPZVr4Z2oyAo5lZK//31eTN92f1dCNVoe/D
WrfFvZmQGOhp37rwRtlfQ16NtvGuWFJIJ5M/wUkyI7nAKwOsw75mzK6i2o+IBkvM
BwIDAQAB
-----END PUBLIC KEY-----";

    #[test]
    fn rsa_keys_verify_rs256_and_ps256() {
        let cfg = config(
            json!({ "JWTSupportedAlgs": ["RS256", "PS256"] }),
            &[RSA_PUBLIC_PEM],
        );
        assert_eq!(cfg.keys[0].family, KeyFamily::Rsa);
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
        let claims = json!({ "iat": NOW });
        assert!(verify_jwt(&cfg, &sign(&key, Algorithm::RS256, &claims), at(NOW)).is_ok());
        assert!(verify_jwt(&cfg, &sign(&key, Algorithm::PS256, &claims), at(NOW)).is_ok());
        assert_eq!(
            verify_jwt(&cfg, &sign(&key, Algorithm::RS384, &claims), at(NOW)),
            Err(LoginError::AlgorithmNotAllowed {
                algorithm: "RS384".into()
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(token in "[A-Za-z0-9_.=-]{0,80}") {
            let (_, pem) = ed25519_key();
            let cfg = config(json!({}), &[&pem]);
            proptest::prop_assert!(verify_jwt(&cfg, &token, at(NOW)).is_err());
        }
    }
}
