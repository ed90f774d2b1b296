//! The `http` feature: a [`Source`](crate::Source) and a [`Sink`](crate::Sink) over any
//! Consul-compatible HTTP API (Consul itself or a Tribune agent), and the session lock that keeps one
//! replicator per datacenter.
//!
//! - [`ConsulClient`]: plain HTTP/1.1 to one agent, with its token and basic auth. It is not a TLS
//!   client: an `https://` address is refused with [`HttpError::TlsUnsupported`].
//! - [`HttpSource`]: blocking recursive reads of a prefix in another datacenter (`?dc=`), asking for a
//!   delta (`?changes-since=`, a Tribune extension) when the caller asks for one.
//! - [`HttpSink`]: consistent reads of the local prefix and atomic writes through `/v1/txn`, fenced by
//!   `check-session`.
//! - [`SessionLock`]: `consul lock PREFIX`, built in: a session, its renewals, and the lock key.
//!
//! Nothing here plans or retries: the runner decides what to write and when to try again.

mod client;
mod lock;
mod sink;
mod source;
mod wire;

pub use client::{BasicAuth, ClientConfig, ConsulClient, DEFAULT_ADDRESS};
pub use lock::{LOCK_FLAGS, SessionLock};
pub use sink::HttpSink;
pub use source::{CHANGES_SINCE_HEADER, HttpSource};

use crate::traits::{SinkError, SourceError};

/// Why a request to a Consul-compatible HTTP API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The address asks for TLS (`https://`), which this client does not speak.
    #[error("HTTP address {address:?}: TLS (https) is not supported; use a plain http:// address")]
    TlsUnsupported {
        /// The address as given.
        address: String,
    },
    /// The address is not `host[:port]` or `http://host[:port]`.
    #[error("HTTP address {address:?}: {reason}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The basic-auth setting is not `user[:password]`.
    #[error("HTTP basic auth: {0}")]
    BadAuth(String),
    /// The request could not be built (a header value or path the HTTP library refused).
    #[error("{method} {path}: cannot build the request: {reason}")]
    BadRequest {
        /// The method.
        method: String,
        /// The path and query.
        path: String,
        /// Why.
        reason: String,
    },
    /// The agent could not be reached, or the connection failed mid-request.
    #[error("{method} http://{authority}{path}: {reason}")]
    Unreachable {
        /// The method.
        method: String,
        /// The agent's `host:port`.
        authority: String,
        /// The path and query.
        path: String,
        /// Why.
        reason: String,
    },
    /// No complete answer within the request's time limit.
    #[error("{method} http://{authority}{path}: no answer within {after:?}")]
    Timeout {
        /// The method.
        method: String,
        /// The agent's `host:port`.
        authority: String,
        /// The path and query.
        path: String,
        /// The limit that passed.
        after: std::time::Duration,
    },
    /// The agent answered with a status the request does not expect.
    #[error("{method} {path}: status {status}: {body}")]
    Status {
        /// The method.
        method: String,
        /// The path and query.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The agent's explanation (the body, trimmed).
        body: String,
    },
    /// The answer could not be decoded.
    #[error("{method} {path}: undecodable answer: {reason}")]
    Decode {
        /// The method.
        method: String,
        /// The path and query.
        path: String,
        /// Why.
        reason: String,
    },
}

impl HttpError {
    /// The same failure as a [`SourceError`] for a read of `prefix` in `datacenter`.
    pub fn into_source_error(self, prefix: &str, datacenter: &str) -> SourceError {
        let prefix = prefix.to_owned();
        let datacenter = datacenter.to_owned();
        match self {
            HttpError::Status { status, body, .. } => SourceError::Status {
                prefix,
                datacenter,
                status,
                body,
            },
            HttpError::Decode { reason, .. } => SourceError::Decode {
                prefix,
                datacenter,
                reason,
            },
            other => SourceError::Unreachable {
                prefix,
                datacenter,
                reason: other.to_string(),
            },
        }
    }
}

impl From<HttpError> for SinkError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::Status { status, body, .. } => SinkError::Refused { status, body },
            decode @ HttpError::Decode { .. } => SinkError::Decode(decode.to_string()),
            other => SinkError::Unreachable(other.to_string()),
        }
    }
}

pub(crate) use crate::api_path::{encode_key, encode_query_value};

/// `/v1/kv/<key>` with the key percent-encoded. A leading `/` is dropped: Consul's keys have none.
pub(crate) fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", encode_key(key.strip_prefix('/').unwrap_or(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_slashes_and_everything_else_is_encoded() {
        assert_eq!(encode_key("a b/c%d/é?&="), "a%20b/c%25d/%C3%A9%3F%26%3D");
        assert_eq!(encode_query_value("east/1 &x=y"), "east%2F1%20%26x%3Dy");
        assert_eq!(kv_path("/global/app"), "/v1/kv/global/app");
        assert_eq!(kv_path(""), "/v1/kv/");
    }

    #[test]
    fn errors_map_onto_the_traits_errors() {
        let status = HttpError::Status {
            method: "GET".into(),
            path: "/v1/kv/a".into(),
            status: 500,
            body: "No cluster leader".into(),
        };
        match status.clone().into_source_error("a", "dc1") {
            SourceError::Status { status, body, .. } => {
                assert_eq!((status, body.as_str()), (500, "No cluster leader"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            SinkError::from(status),
            SinkError::Refused { status: 500, .. }
        ));
        let timeout = HttpError::Timeout {
            method: "GET".into(),
            authority: "127.0.0.1:1".into(),
            path: "/v1/kv/a".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert!(matches!(
            timeout.clone().into_source_error("a", "dc1"),
            SourceError::Unreachable { .. }
        ));
        assert!(matches!(SinkError::from(timeout), SinkError::Unreachable(_)));
    }
}
