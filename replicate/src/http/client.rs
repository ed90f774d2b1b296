//! The HTTP client of one agent: plain HTTP/1.1 over a small pool of keep-alive connections, a new one
//! opened whenever the agent closed the last. It sends the token and basic auth with every request and
//! bounds every request in time; it knows nothing of KV or sessions.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::HttpError;

/// The agent address used when none is given (Consul's default).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// The port Consul's clients add to an address without one.
const DEFAULT_PORT: u16 = 8500;

/// Where the agent is and how to talk to it.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host[:port]` or `http://host[:port]` (as `CONSUL_HTTP_ADDR`); port 8500 when none is given.
    pub address: String,
    /// The ACL token, sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// HTTP basic auth, for an agent behind a proxy that asks for it (consul-replicate's `auth`).
    pub auth: Option<BasicAuth>,
    /// The longest a request that does not block may take. A blocking read may take its wait, plus
    /// the wait/16 of jitter the server may add, plus this.
    pub request_timeout: Duration,
    /// The longest opening a connection may take.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// The settings for `address`, with no token, no basic auth and the default time limits.
    pub fn new(address: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            ..ClientConfig::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: DEFAULT_ADDRESS.to_owned(),
            token: None,
            auth: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a secret: say only whether there is one.
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// HTTP basic auth credentials, parsed from `user[:password]`.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password (may be empty).
    pub password: String,
}

impl FromStr for BasicAuth {
    type Err = HttpError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (username, password) = value.split_once(':').unwrap_or((value, ""));
        if username.is_empty() {
            return Err(HttpError::BadAuth(
                "expected user[:password], the user name is empty".to_owned(),
            ));
        }
        Ok(BasicAuth {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A client of one agent's HTTP API. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct ConsulClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<HttpConnector, Full<Bytes>>,
    authority: String,
    token: Option<HeaderValue>,
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
}

impl fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClient")
            .field("authority", &self.inner.authority)
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.inner.request_timeout)
            .finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// A client for `config.address`. It connects on the first request. Needs a Tokio runtime when
    /// requests are made, not when built.
    pub fn new(config: ClientConfig) -> Result<Self, HttpError> {
        let authority = authority_of(&config.address)?;
        let token = config
            .token
            .filter(|token| !token.is_empty())
            .map(|token| {
                let mut value = HeaderValue::from_str(&token).map_err(|_| {
                    HttpError::BadAuth("the token has characters a header cannot carry".to_owned())
                })?;
                value.set_sensitive(true);
                Ok::<_, HttpError>(value)
            })
            .transpose()?;
        let authorization = config
            .auth
            .map(|auth| {
                let credentials = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", auth.username, auth.password));
                let mut value = HeaderValue::from_str(&format!("Basic {credentials}"))
                    .map_err(|_| HttpError::BadAuth("the credentials cannot be sent".to_owned()))?;
                value.set_sensitive(true);
                Ok::<_, HttpError>(value)
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        // Requests are small and a replicator waits on every answer: latency over packet count.
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(ConsulClient {
            inner: Arc::new(Inner {
                http,
                authority,
                token,
                authorization,
                request_timeout: config.request_timeout,
            }),
        })
    }

    /// The agent's `host:port`.
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// The time limit of a request that may block for `wait` on the server.
    pub(crate) fn blocking_limit(&self, wait: Duration) -> Duration {
        // The server may add up to wait/16 of jitter to a blocking query.
        wait.saturating_add(wait / 16)
            .saturating_add(self.inner.request_timeout)
    }

    /// The time limit of a request that does not block.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// A GET that does not block.
    pub(crate) async fn get(&self, path: &str) -> Result<Reply, HttpError> {
        self.call(Method::GET, path, None, self.inner.request_timeout)
            .await
    }

    /// A GET that may block on the server for up to `wait`.
    pub(crate) async fn get_blocking(&self, path: &str, wait: Duration) -> Result<Reply, HttpError> {
        self.call(Method::GET, path, None, self.blocking_limit(wait))
            .await
    }

    /// A PUT of `body`, answered within the request timeout.
    pub(crate) async fn put(&self, path: &str, body: Body) -> Result<Reply, HttpError> {
        self.call(Method::PUT, path, Some(body), self.inner.request_timeout)
            .await
    }

    /// Sends one request and reads the whole answer, all within `limit`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        limit: Duration,
    ) -> Result<Reply, HttpError> {
        let inner = &self.inner;
        let bad_request = |reason: String| HttpError::BadRequest {
            method: method.to_string(),
            path: path.to_owned(),
            reason,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", inner.authority));
        if let Some(token) = &inner.token {
            builder = builder.header("x-consul-token", token.clone());
        }
        if let Some(authorization) = &inner.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        let bytes = match body {
            None => Bytes::new(),
            Some(Body::Json(bytes)) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                bytes
            }
            Some(Body::Raw(bytes)) => bytes,
        };
        let request = builder
            .body(Full::new(bytes))
            .map_err(|error| bad_request(error.to_string()))?;
        let unreachable = |reason: String| HttpError::Unreachable {
            method: method.to_string(),
            authority: inner.authority.clone(),
            path: path.to_owned(),
            reason,
        };
        let exchange = async {
            let response = inner
                .http
                .request(request)
                .await
                .map_err(|error| unreachable(error_chain(&error)))?;
            let (parts, incoming) = response.into_parts();
            let body = incoming
                .collect()
                .await
                .map_err(|error| unreachable(error_chain(&error)))?
                .to_bytes();
            Ok(Reply {
                method: method.clone(),
                path: path.to_owned(),
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                method: method.to_string(),
                authority: inner.authority.clone(),
                path: path.to_owned(),
                after: limit,
            }),
        }
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// JSON, sent with `Content-Type: application/json`.
    Json(Bytes),
    /// Raw bytes (a KV value).
    Raw(Bytes),
}

/// An answer read in full.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// Whether the status is 200.
    pub(crate) fn is_ok(&self) -> bool {
        self.status == StatusCode::OK
    }

    /// Whether the status is 404.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    /// A header as text, if present and text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// A header as an unsigned number: `Ok(None)` when absent, an error when present but not a
    /// number.
    pub(crate) fn header_u64(&self, name: &str) -> Result<Option<u64>, HttpError> {
        match self.header(name) {
            None if !self.headers.contains_key(name) => Ok(None),
            None => Err(self.decode_error(format!("header {name} is not text"))),
            Some(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.decode_error(format!("header {name}: {text:?} is not a number"))),
        }
    }

    /// `X-Consul-Index`, if present.
    pub(crate) fn index(&self) -> Result<Option<u64>, HttpError> {
        self.header_u64("x-consul-index")
    }

    /// `X-Consul-KnownLeader`: false when absent.
    pub(crate) fn known_leader(&self) -> bool {
        self.header("x-consul-knownleader")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
    }

    /// `X-Consul-LastContact` (milliseconds): zero when absent.
    pub(crate) fn last_contact(&self) -> Result<Duration, HttpError> {
        Ok(Duration::from_millis(
            self.header_u64("x-consul-lastcontact")?.unwrap_or(0),
        ))
    }

    /// The body as JSON of type `T`.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|error| self.decode_error(error.to_string()))
    }

    /// The body as text, trimmed (an error's explanation).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }

    /// An answer this request did not expect, with its status and body.
    pub(crate) fn status_error(&self) -> HttpError {
        HttpError::Status {
            method: self.method.to_string(),
            path: self.path.clone(),
            status: self.status.as_u16(),
            body: self.text(),
        }
    }

    /// An answer that could not be decoded, and why.
    pub(crate) fn decode_error(&self, reason: String) -> HttpError {
        HttpError::Decode {
            method: self.method.to_string(),
            path: self.path.clone(),
            reason,
        }
    }

    /// Fails with [`HttpError::Status`] unless the status is 200.
    pub(crate) fn ok(self) -> Result<Self, HttpError> {
        if self.is_ok() {
            Ok(self)
        } else {
            Err(self.status_error())
        }
    }
}

/// `host:port` from an address as Consul's clients accept it: `host[:port]` or `http://host[:port]`.
pub(crate) fn authority_of(address: &str) -> Result<String, HttpError> {
    let bad = |reason: &str| HttpError::BadAddress {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = address.trim();
    let lower = trimmed.to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        return Err(HttpError::TlsUnsupported {
            address: address.to_owned(),
        });
    } else if lower.starts_with("http://") {
        trimmed.get("http://".len()..).unwrap_or_default()
    } else if lower.contains("://") {
        return Err(bad("only http:// addresses are supported"));
    } else {
        trimmed
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected host[:port] or http://host[:port]"));
    }
    let has_port = match authority.rsplit_once(':') {
        // `[::1]` has colons but no port; `[::1]:8500` has one.
        Some((host, port)) if !port.ends_with(']') && (!host.contains(':') || host.ends_with(']')) => {
            port.parse::<u16>()
                .map_err(|_| bad(&format!("port {port:?} is not a number from 0 to 65535")))?;
            true
        }
        _ => false,
    };
    if has_port {
        Ok(authority.to_owned())
    } else {
        Ok(format!("{authority}:{DEFAULT_PORT}"))
    }
}

/// An error with its sources, joined: hyper's outer errors alone say little ("client error").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_consul_reads_them() {
        assert_eq!(authority_of("127.0.0.1:8500").unwrap(), "127.0.0.1:8500");
        assert_eq!(authority_of("http://10.0.0.1:18500/").unwrap(), "10.0.0.1:18500");
        assert_eq!(authority_of("HTTP://consul").unwrap(), "consul:8500");
        assert_eq!(authority_of("localhost").unwrap(), "localhost:8500");
        assert_eq!(authority_of("[::1]").unwrap(), "[::1]:8500");
        assert_eq!(authority_of("http://[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(
            authority_of("https://consul:8501"),
            Err(HttpError::TlsUnsupported {
                address: "https://consul:8501".into()
            })
        );
        for bad in [
            "unix:///tmp/consul.sock",
            "http://host:1/path",
            "",
            "host:port",
            "host:70000",
        ] {
            assert!(
                matches!(authority_of(bad), Err(HttpError::BadAddress { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_is_refused_when_the_client_is_built() {
        let error = ConsulClient::new(ClientConfig::new("https://consul.example:8501")).unwrap_err();
        assert!(matches!(error, HttpError::TlsUnsupported { .. }));
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    #[test]
    fn basic_auth_is_user_and_optional_password() {
        let auth: BasicAuth = "ops:s3cr:et".parse().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("ops", "s3cr:et")
        );
        let auth: BasicAuth = "ops".parse().unwrap();
        assert_eq!(auth.password, "");
        assert!(":pw".parse::<BasicAuth>().is_err());
        assert!(!format!("{auth:?}").contains("s3cr"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = ClientConfig {
            token: Some("the-secret-token".into()),
            ..ClientConfig::default()
        };
        assert!(!format!("{config:?}").contains("the-secret-token"));
        let client = ConsulClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("the-secret-token"));
        assert_eq!(client.authority(), "127.0.0.1:8500");
    }

    #[test]
    fn blocking_requests_outlast_their_wait() {
        let client = ConsulClient::new(ClientConfig {
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(
            client.blocking_limit(Duration::from_secs(64)),
            Duration::from_secs(64 + 4 + 10)
        );
    }
}
