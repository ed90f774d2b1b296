//! [`LocalApi`]: the agent calling its own HTTP API in-process, as a client on loopback would.
//!
//! The agent's own duties that read or write the catalog — anti-entropy, alias checks, DNS
//! answers — go through the same routes, ACL checks, consistency modes and `?dc=` forwarding as
//! any client. A server's router serves them from its own state (forwarding writes to the leader);
//! a client agent's router hands them to a server. Nothing here knows which.
//!
//! It is not a network client: no socket is opened, and a stopped agent answers
//! [`LocalApiError::Stopped`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tower::ServiceExt as _;

/// The largest answer an in-process call reads (the same bound as a forwarded request).
const MAX_ANSWER: usize = crate::http::MAX_FORWARDED_BODY;

/// An answer of the agent's own API.
#[derive(Debug, Clone)]
pub(crate) struct LocalResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl LocalResponse {
    /// The `X-Consul-Index` of a read, when present.
    pub(crate) fn index(&self) -> Option<u64> {
        self.headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The body as JSON of type `T`, or why it is not.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, LocalApiError> {
        serde_json::from_slice(&self.body).map_err(|e| LocalApiError::BadAnswer(e.to_string()))
    }

    /// `Ok(self)` on a 2xx answer, else the status and body as an error.
    pub(crate) fn ok(self) -> Result<Self, LocalApiError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(LocalApiError::Status {
                status: self.status.as_u16(),
                body: String::from_utf8_lossy(&self.body).into_owned(),
            })
        }
    }
}

/// Why an in-process call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalApiError {
    /// The agent stopped (or its API is not built yet).
    #[error("the agent's HTTP API is not running")]
    Stopped,
    /// The request could not be built (a bad path or token).
    #[error("bad request to the agent's own API: {0}")]
    BadRequest(String),
    /// The API answered with an error status.
    #[error("the agent's API answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The answer could not be read.
    #[error("unreadable answer from the agent's API: {0}")]
    BadAnswer(String),
}

/// Calls into the agent's own HTTP API.
pub(crate) trait LocalApi: Send + Sync + 'static {
    /// Serves `method path_and_query` with `body`, under `token` (the agent's default token when
    /// `None`, as for a client that sends none).
    fn call(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> BoxFuture<'_, Result<LocalResponse, LocalApiError>>;
}

/// The agent's own router, set once it is built. Stopping the agent takes it out: the router
/// holds the agent, so keeping it would keep the agent (and RocksDB's lock) alive after a stop.
#[derive(Default)]
pub(crate) struct RouterCell(Mutex<Option<Router>>);

impl RouterCell {
    pub(crate) fn set(&self, router: Router) {
        *self.0.lock() = Some(router);
    }

    /// The router, unless the agent stopped.
    pub(crate) fn get(&self) -> Option<Router> {
        self.0.lock().clone()
    }

    pub(crate) fn take(&self) {
        self.0.lock().take();
    }
}

impl LocalApi for RouterCell {
    fn call(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
        body: Bytes,
    ) -> BoxFuture<'_, Result<LocalResponse, LocalApiError>> {
        let router = self.get();
        let mut builder = Request::builder().method(method).uri(path_and_query);
        if let Some(token) = token {
            builder = builder.header("x-consul-token", token);
        }
        let request = builder.body(Body::from(body));
        Box::pin(async move {
            let router = router.ok_or(LocalApiError::Stopped)?;
            let request = request.map_err(|e| LocalApiError::BadRequest(e.to_string()))?;
            let response = router
                .oneshot(request)
                .await
                .map_err(|e| LocalApiError::BadAnswer(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, MAX_ANSWER)
                .await
                .map_err(|e| LocalApiError::BadAnswer(e.to_string()))?;
            Ok(LocalResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
    }
}

/// A shared handle on an agent's own API.
pub(crate) type SharedLocalApi = Arc<dyn LocalApi>;
