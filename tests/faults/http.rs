//! A minimal HTTP/1.1 client for the fault harness. Unlike the shared test client it never panics:
//! under faults a refused connection, a reset or a timeout is data for the history, and whether the
//! request may have reached the server decides if a write is failed or indeterminate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why no response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoResponse {
    /// The connection was never established: the server cannot have seen the request.
    NotSent,
    /// The request may have been received (timeout, reset or a garbled answer after sending).
    Unknown,
}

/// Sends one request on a fresh connection; the whole exchange is bounded by `timeout`.
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, NoResponse> {
    call_as(addr, method, path, None, body, timeout).await
}

/// [`call`] presenting an ACL token in `X-Consul-Token` (`None`: no token, the anonymous one).
pub(crate) async fn call_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, NoResponse> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) | Err(_) => return Err(NoResponse::NotSent),
    };
    let token_header = token.map_or_else(String::new, |token| format!("X-Consul-Token: {token}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{token_header}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let exchange = async {
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(body).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        parse(&raw)
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Some(response)) => Ok(response),
        Ok(None) | Err(_) => Err(NoResponse::Unknown),
    }
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(raw.get(..split)?).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw.get(split + 4..)?.to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // A chunk is at least one byte of data or the terminator, so this bounds the loop.
    for _ in 0..=data.len() {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(data.get(..line_end)?).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = data.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
    None
}
