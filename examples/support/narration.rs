//! What the narrated examples share: a line of narration, and one HTTP/1.1 request to an agent with
//! `Connection: close` (enough for a narration, and no client library).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Prints one line of the narration.
pub(crate) fn say(line: &str) {
    println!("{line}");
}

/// An agent's answer.
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The response headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, as text.
    pub(crate) body: String,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` with `body` to the agent at `addr` (`who` names it in errors).
pub(crate) async fn request(
    addr: SocketAddr,
    who: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<Reply, Box<dyn std::error::Error>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{method} {path} on {who}: no answer within 10 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path} on {who}: not an HTTP response"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}
