//! A fake Consul HTTP API on 127.0.0.1:0 for the `http` feature's tests: it records every request and
//! answers with what the test's handler says. Not a Consul: each test gives it only the behaviour it
//! checks.

// Test support: a failure here is a failed test. Each test crate uses a part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tribune_replicate::http::{ClientConfig, ConsulClient};

/// One request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    /// The path as sent (still percent-encoded).
    pub(crate) path: String,
    /// The query as sent, without the `?`.
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    /// The query's parameters in order, each with its value if it has one.
    pub(crate) fn params(&self) -> Vec<(String, Option<String>)> {
        self.query
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| match part.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (part.to_owned(), None),
            })
            .collect()
    }

    /// A parameter's value (`Some("")` for a flag without one); `None` when absent.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.unwrap_or_default())
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// The fake's answer to one request.
#[derive(Debug, Clone)]
pub(crate) struct Canned {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Canned {
    pub(crate) fn status(status: u16) -> Self {
        Canned {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn ok() -> Self {
        Canned::status(200)
    }

    pub(crate) fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    pub(crate) fn index(self, index: u64) -> Self {
        self.header("X-Consul-Index", index)
    }

    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub(crate) fn json(self, value: serde_json::Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(&value).expect("JSON"))
    }
}

type Handler = Arc<dyn Fn(Recorded) -> futures::future::BoxFuture<'static, Canned> + Send + Sync>;

/// A running fake.
pub(crate) struct FakeConsul {
    pub(crate) addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl FakeConsul {
    /// Starts a fake answering every request with `handler`.
    pub(crate) async fn start<F, Fut>(handler: F) -> FakeConsul
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Canned> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| Box::pin(handler(request)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let request = Recorded {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().unwrap_or_default().to_owned(),
                                headers: parts.headers,
                                body,
                            };
                            recorded.lock().unwrap().push(request.clone());
                            let canned = handler(request).await;
                            let mut response = Response::new(Full::new(Bytes::from(canned.body)));
                            *response.status_mut() = StatusCode::from_u16(canned.status).expect("status");
                            for (name, value) in canned.headers {
                                response.headers_mut().insert(
                                    hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                                    value.parse().expect("value"),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeConsul { addr, requests, task }
    }

    /// Every request so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests whose path starts with `prefix`.
    pub(crate) fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.path.starts_with(prefix))
            .collect()
    }

    /// The settings of a client of this fake.
    pub(crate) fn config(&self) -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new(format!("http://{}", self.addr))
        }
    }

    /// A client of this fake.
    pub(crate) fn client(&self) -> ConsulClient {
        ConsulClient::new(self.config()).expect("client")
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `condition` holds, failing the test after `deadline`.
pub(crate) async fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + deadline;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
