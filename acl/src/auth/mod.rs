//! Auth methods and binding rules: from an external credential to the identities and links of a new
//! token.
//!
//! What it is: the [`AuthMethod`] and [`BindingRule`] objects with Consul's JSON and write-time checks;
//! the `jwt` method ([`JwtConfig`], [`verify_jwt`]) checking a bearer JWT's signature against
//! configured public keys and its `iss`/`aud`/`exp`/`nbf`/`iat` at a given `now`, then mapping claims to
//! an [`Identity`]; the go-bexpr [`Selector`] subset binding rules use; and [`bind`], which turns the
//! matching rules into [`Bindings`].
//!
//! What it is NOT: it fetches nothing (no JWKS or OIDC discovery), reads no clock, stores nothing and
//! mints no token; it does not resolve role or policy names to IDs (the caller drops names that do not
//! exist, as Consul does). `kubernetes`, `oidc` and `aws-iam` methods are refused with a typed error.

mod binding;
mod duration;
mod jwt;
mod method;
mod selector;

pub use binding::{
    BindError, BindType, BindTypeError, BindingRule, BindingRuleError, Bindings, InterpolationError,
    PERMISSION_DENIED, bind, interpolate, is_valid_policy_name,
};
pub use duration::{DurationError, format_go_duration, parse_go_duration};
pub use jwt::{
    DEFAULT_CLAIM_LEEWAY, DEFAULT_CLOCK_SKEW_LEEWAY, Identity, JwtConfig, JwtConfigError, LoginError,
    SUPPORTED_ALGORITHMS, verify_jwt,
};
pub use method::{
    AuthMethod, AuthMethodError, JWT_METHOD_TYPE, MAX_TOKEN_TTL, MIN_TOKEN_TTL, TokenLocality,
    TokenLocalityError, UNSUPPORTED_METHOD_TYPES, is_valid_auth_method_name,
};
pub use selector::{SelectableFields, Selector, SelectorError, SelectorErrorKind, SelectorEvalError};
