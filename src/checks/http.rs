//! HTTP checks: one request per run on a fresh connection (Consul turns keep-alives off), over TLS for
//! `https`, following redirects as Go's client does unless told not to.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::CheckStatus;
use super::runner::Outcome;
use super::status::{TailBuffer, go_io_error, http_status};
use super::tls::{self, Alpn};

/// Consul's `User-Agent` for HTTP checks.
const USER_AGENT: &str = "Consul Health Check";
/// Consul's `Accept` unless the check sets one.
const ACCEPT: &str = "text/plain, text/*, */*";
/// Go's client gives up after this many redirects.
const MAX_REDIRECTS: usize = 10;

/// A connection a check speaks over: TCP, or TLS over TCP.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `host:port` (resolving names, trying each address), with TLS when `tls` names the
/// server to verify. Errors are Go's dial and handshake texts.
pub(super) async fn connect(
    host: &str,
    port: u16,
    tls: Option<(&str, bool, Alpn)>,
) -> Result<Box<dyn Io>, String> {
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(found) => found.collect(),
        Err(_) => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(format!("dial tcp: lookup {host}: no such host"));
    }
    let mut last = String::new();
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return match tls {
                    None => Ok(Box::new(stream)),
                    Some((name, skip_verify, alpn)) => {
                        let stream = tls::connect(stream, name, skip_verify, alpn).await?;
                        Ok(Box::new(stream))
                    }
                };
            }
            Err(e) => last = format!("dial tcp {addr}: connect: {}", go_io_error(&e)),
        }
    }
    Err(last)
}

/// The host of a URI without IPv6 brackets.
pub(super) fn bare_host(uri: &Uri) -> Option<&str> {
    uri.host()
        .map(|h| h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h))
}

/// One HTTP check's request and bounds.
pub(crate) struct HttpProbe {
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) header: BTreeMap<String, Vec<String>>,
    pub(crate) body: String,
    pub(crate) tls_skip_verify: bool,
    pub(crate) tls_server_name: String,
    pub(crate) disable_redirects: bool,
    pub(crate) timeout: Duration,
    pub(crate) output_limit: usize,
}

/// An answer: the status line's code and text, and the body's last bytes.
struct Answer {
    status: StatusCode,
    status_text: String,
    location: Option<String>,
    body: TailBuffer,
}

impl HttpProbe {
    /// Consul's `CheckHTTP.check`: 2xx passing, 429 warning, anything else critical, with output
    /// `HTTP <method> <url>: <status line> Output: <body>`; a request that gets no answer is critical with
    /// Go's client error (`Get "<url>": dial tcp ...: connect: connection refused`).
    pub(crate) async fn run(&self) -> Outcome {
        let method = if self.method.is_empty() {
            "GET".to_owned()
        } else {
            self.method.clone()
        };
        let deadline = Instant::now() + self.timeout;
        let mut url = self.url.clone();
        let mut current_method = method.clone();
        let mut body = Bytes::from(self.body.clone());
        let mut redirects = 0;
        loop {
            let answer = match self.exchange(&current_method, &url, body.clone(), deadline).await {
                Ok(answer) => answer,
                Err(cause) => {
                    return Outcome::counted(
                        CheckStatus::Critical,
                        format!("{} {url:?}: {cause}", go_method_op(&current_method)),
                    );
                }
            };
            let redirect = matches!(answer.status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if redirect
                && !self.disable_redirects
                && let Some(location) = &answer.location
            {
                if redirects >= MAX_REDIRECTS {
                    return Outcome::counted(
                        CheckStatus::Critical,
                        format!(
                            "{} {location:?}: stopped after {MAX_REDIRECTS} redirects",
                            go_method_op(&current_method)
                        ),
                    );
                }
                redirects += 1;
                url = resolve_location(&url, location);
                // Go turns 301/302/303 into a GET without a body (HEAD stays HEAD); 307/308 repeat the
                // request as it was.
                if matches!(answer.status.as_u16(), 301..=303) {
                    if current_method != "HEAD" {
                        current_method = "GET".to_owned();
                    }
                    body = Bytes::new();
                }
                continue;
            }
            let output = format!(
                "HTTP {method} {}: {} {} Output: {}",
                self.url,
                answer.status.as_u16(),
                answer.status_text,
                answer.body.text()
            );
            return Outcome::counted(http_status(answer.status.as_u16()), output);
        }
    }

    /// One request and its answer; errors are the cause part of Go's `url.Error`.
    async fn exchange(
        &self,
        method: &str,
        url: &str,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Answer, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let (port, tls) = match scheme.as_str() {
            "http" => (80, false),
            "https" => (443, true),
            "" => return Err("unsupported protocol scheme \"\"".to_owned()),
            other => return Err(format!("unsupported protocol scheme {other:?}")),
        };
        let host = bare_host(&uri).ok_or_else(|| "no Host in request URL".to_owned())?;
        let port = uri.port_u16().unwrap_or(port);
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("net/http: invalid method {method:?}"))?;

        let mut request = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()));
        let mut host_header = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let mut has_agent = false;
        let mut has_accept = false;
        for (name, values) in &self.header {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("net/http: invalid header field name {name:?}"))?;
            if header == axum::http::header::HOST {
                if let Some(first) = values.first().filter(|v| !v.is_empty()) {
                    host_header = first.clone();
                }
                continue;
            }
            has_agent |= header == axum::http::header::USER_AGENT;
            has_accept |= header == axum::http::header::ACCEPT;
            for value in values {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("net/http: invalid header field value for {name:?}"))?;
                request = request.header(header.clone(), value);
            }
        }
        request = request.header(axum::http::header::HOST, host_header);
        if !has_agent {
            request = request.header(axum::http::header::USER_AGENT, USER_AGENT);
        }
        if !has_accept {
            request = request.header(axum::http::header::ACCEPT, ACCEPT);
        }
        // Keep-alives are off in Consul's checks: each run opens its own connection.
        request = request.header(axum::http::header::CONNECTION, "close");
        // Go sends a length with any body, and `Content-Length: 0` for an empty one on the methods that
        // normally carry one.
        let carries_body = matches!(request.method_ref(), Some(m) if *m == Method::POST || *m == Method::PUT || *m == Method::PATCH);
        if !body.is_empty() || carries_body {
            request = request.header(axum::http::header::CONTENT_LENGTH, body.len());
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;

        let awaiting_headers = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)";
        let exchange = async {
            let server_name = if self.tls_server_name.is_empty() {
                host
            } else {
                self.tls_server_name.as_str()
            };
            let io = connect(
                host,
                port,
                tls.then_some((server_name, self.tls_skip_verify, Alpn::Http1)),
            )
            .await?;
            // Header names go out in Go's canonical case (`X-Token`), as Consul's client writes them.
            let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
                .title_case_headers(true)
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            let response = sender.send_request(request).await.map_err(|e| hyper_error(&e));
            Ok::<_, String>((response, driver))
        };
        let (response, driver) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| awaiting_headers.to_owned())??;
        let _abort_driver = AbortOnDrop(driver);
        let response = response?;
        let status = response.status();
        let status_text = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        let location = response
            .headers()
            .get(axum::http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = response.into_body();
        let mut tail = TailBuffer::new(self.output_limit);
        // The body counts against the same timeout (Go's Client.Timeout); what arrived by then is kept.
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            tail.write(data);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "check: error while reading an HTTP body");
                        break;
                    }
                }
            }
        })
        .await;
        Ok(Answer {
            status,
            status_text,
            location,
            body: tail,
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Go's `url.Error` operation: the method with only its first letter upper case (`Get`, `Post`).
fn go_method_op(method: &str) -> String {
    let mut chars = method.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// A hyper client error in Go's words where they differ (a connection closed before an answer is Go's
/// `EOF`).
fn hyper_error(err: &hyper::Error) -> String {
    if err.is_incomplete_message() || err.is_closed() {
        "EOF".to_owned()
    } else {
        err.to_string()
    }
}

/// `location` (absolute, scheme-relative, absolute-path or relative) against `base`.
fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let Ok(base_uri) = base.parse::<Uri>() else {
        return location.to_owned();
    };
    let scheme = base_uri.scheme_str().unwrap_or("http");
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let authority = base_uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = base_uri.path();
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    format!("{scheme}://{authority}{dir}/{location}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// What a test server saw of one request.
    #[derive(Debug, Clone, Default)]
    struct Seen {
        head: String,
        body: String,
    }

    /// A one-connection-per-request HTTP/1.1 server on 127.0.0.1 that answers every request with
    /// `answer(path)` and records what it got.
    async fn server(
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (String, Arc<parking_lot::Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the head, then as much body as Content-Length says.
                    let (head, body) = loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&data).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let head = text[..end].to_owned();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if data.len() >= end + 4 + length {
                                break (
                                    head,
                                    String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned(),
                                );
                            }
                        }
                    };
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    log.lock().push(Seen { head, body });
                    let _ = stream.write_all(answer(&path).as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn reply(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn probe(url: &str) -> HttpProbe {
        HttpProbe {
            url: url.to_owned(),
            method: String::new(),
            header: BTreeMap::new(),
            body: String::new(),
            tls_skip_verify: false,
            tls_server_name: String::new(),
            disable_redirects: false,
            timeout: Duration::from_secs(10),
            output_limit: 4096,
        }
    }

    #[tokio::test]
    async fn statuses_map_as_consul() {
        let (base, _) = server(|path| match path {
            "/ok" => reply("200 OK", "all good"),
            "/busy" => reply("429 Too Many Requests", "slow down"),
            _ => reply("500 Internal Server Error", "boom"),
        })
        .await;
        let ok = probe(&format!("{base}/ok")).run().await;
        assert_eq!(ok.status, CheckStatus::Passing);
        assert_eq!(ok.output, format!("HTTP GET {base}/ok: 200 OK Output: all good"));
        let busy = probe(&format!("{base}/busy")).run().await;
        assert_eq!(busy.status, CheckStatus::Warning);
        assert_eq!(
            busy.output,
            format!("HTTP GET {base}/busy: 429 Too Many Requests Output: slow down")
        );
        let bad = probe(&format!("{base}/x")).run().await;
        assert_eq!(bad.status, CheckStatus::Critical);
        assert_eq!(
            bad.output,
            format!("HTTP GET {base}/x: 500 Internal Server Error Output: boom")
        );
    }

    #[tokio::test]
    async fn method_headers_and_body_are_sent() {
        let (base, seen) = server(|_| reply("201 Created", "")).await;
        let mut p = probe(&format!("{base}/submit?x=1"));
        p.method = "POST".into();
        p.body = "{\"ping\":true}".into();
        p.header.insert("X-Token".into(), vec!["a".into(), "b".into()]);
        p.header.insert("Host".into(), vec!["svc.example".into()]);
        let out = p.run().await;
        assert_eq!(out.status, CheckStatus::Passing);
        assert_eq!(
            out.output,
            format!("HTTP POST {base}/submit?x=1: 201 Created Output: ")
        );
        let seen = seen.lock().clone();
        assert_eq!(seen.len(), 1);
        let head = seen[0].head.to_ascii_lowercase();
        assert!(head.starts_with("post /submit?x=1 http/1.1"), "{head}");
        assert!(head.contains("\r\nhost: svc.example"), "{head}");
        assert!(head.contains("\r\nx-token: a\r\nx-token: b"), "{head}");
        assert!(head.contains("\r\nuser-agent: consul health check"), "{head}");
        assert!(head.contains("\r\naccept: text/plain, text/*, */*"), "{head}");
        assert_eq!(seen[0].body, "{\"ping\":true}");
    }

    #[tokio::test]
    async fn refused_and_timeout_are_critical_with_gos_words() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let refused = probe(&format!("http://{addr}/")).run().await;
        assert_eq!(refused.status, CheckStatus::Critical);
        assert_eq!(
            refused.output,
            format!("Get \"http://{addr}/\": dial tcp {addr}: connect: connection refused")
        );

        // A server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let mut p = probe(&format!("http://{addr}/slow"));
        p.timeout = Duration::from_millis(300);
        let began = std::time::Instant::now();
        let slow = p.run().await;
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(slow.status, CheckStatus::Critical);
        assert_eq!(
            slow.output,
            format!(
                "Get \"http://{addr}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )
        );
        hold.abort();
    }

    #[tokio::test]
    async fn body_is_capped_to_its_last_bytes() {
        let (base, _) = server(|_| reply("200 OK", "0123456789")).await;
        let mut p = probe(&format!("{base}/"));
        p.output_limit = 4;
        let out = p.run().await;
        assert_eq!(out.output, format!("HTTP GET {base}/: 200 OK Output: 6789"));
    }

    #[tokio::test]
    async fn redirects_are_followed_unless_disabled() {
        let (base, _) = server(|path| match path {
            "/old" => "HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_owned(),
            _ => reply("200 OK", "moved here"),
        })
        .await;
        let followed = probe(&format!("{base}/old")).run().await;
        assert_eq!(followed.status, CheckStatus::Passing);
        assert_eq!(
            followed.output,
            format!("HTTP GET {base}/old: 200 OK Output: moved here")
        );
        let mut p = probe(&format!("{base}/old"));
        p.disable_redirects = true;
        let kept = p.run().await;
        assert_eq!(kept.status, CheckStatus::Critical);
        assert_eq!(kept.output, format!("HTTP GET {base}/old: 302 Found Output: "));
    }

    #[tokio::test]
    async fn https_to_a_plain_server_fails_the_handshake() {
        // A server that answers every connection in plain text at once, whatever it is sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let plain = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                let _ = stream.shutdown().await;
            }
        });
        let url = format!("https://{addr}/");
        for skip_verify in [false, true] {
            let mut p = probe(&url);
            p.tls_skip_verify = skip_verify;
            let out = p.run().await;
            assert_eq!(out.status, CheckStatus::Critical);
            assert!(
                out.output.starts_with(&format!("Get {url:?}: tls: ")),
                "{}",
                out.output
            );
        }
        plain.abort();
    }

    #[test]
    fn locations_resolve_against_the_request() {
        assert_eq!(resolve_location("http://a:1/x/y?q", "/z"), "http://a:1/z");
        assert_eq!(resolve_location("http://a:1/x/y", "z"), "http://a:1/x/z");
        assert_eq!(resolve_location("https://a/x", "//b/c"), "https://b/c");
        assert_eq!(resolve_location("http://a/x", "http://b/c"), "http://b/c");
        assert_eq!(go_method_op("GET"), "Get");
        assert_eq!(go_method_op("post"), "Post");
    }
}
