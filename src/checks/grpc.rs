//! gRPC checks: the standard health protocol (`grpc.health.v1.Health/Check`) over HTTP/2 with hyper,
//! its two one-field protobuf messages encoded by hand.

use std::time::Duration;

use axum::http::{Request, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::CheckStatus;
use super::http::{bare_host, connect};
use super::runner::Outcome;
use super::tls::Alpn;

/// One gRPC check's target and bounds.
pub(super) struct GrpcProbe {
    /// `host:port[/service]`.
    pub(super) target: String,
    pub(super) use_tls: bool,
    pub(super) tls_skip_verify: bool,
    pub(super) tls_server_name: String,
    pub(super) timeout: Duration,
}

/// The serving states of `HealthCheckResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    Other(u64),
}

impl std::fmt::Display for ServingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServingStatus::Unknown => f.write_str("UNKNOWN"),
            ServingStatus::Serving => f.write_str("SERVING"),
            ServingStatus::NotServing => f.write_str("NOT_SERVING"),
            ServingStatus::ServiceUnknown => f.write_str("SERVICE_UNKNOWN"),
            ServingStatus::Other(n) => write!(f, "{n}"),
        }
    }
}

/// The gRPC-framed `HealthCheckRequest { service }`: no compression, a 4-byte length, then field 1
/// (`service`, a string) when not empty.
pub(super) fn encode_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(&message);
    framed.freeze()
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The status in a gRPC-framed `HealthCheckResponse` (field 1, an enum; absent means UNKNOWN). Other
/// fields are skipped as protobuf allows.
pub(super) fn decode_response(framed: &[u8]) -> Result<ServingStatus, String> {
    let header = framed.get(..5).ok_or("grpc: response message missing")?;
    if header.first() != Some(&0) {
        return Err("grpc: compressed response without a negotiated encoding".to_owned());
    }
    let len_bytes: [u8; 4] = header
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .ok_or("grpc: short frame")?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let message = framed.get(5..5 + len).ok_or("grpc: truncated response message")?;
    let mut at = 0;
    let mut status = 0;
    let malformed = || "grpc: failed to unmarshal the received message".to_owned();
    while at < message.len() {
        let key = get_varint(message, &mut at).ok_or_else(malformed)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = get_varint(message, &mut at).ok_or_else(malformed)?;
                if field == 1 {
                    status = value;
                }
            }
            1 => at += 8,
            2 => {
                let len = get_varint(message, &mut at).ok_or_else(malformed)?;
                at = at.saturating_add(usize::try_from(len).map_err(|_| malformed())?);
            }
            5 => at += 4,
            _ => return Err(malformed()),
        }
        if at > message.len() {
            return Err(malformed());
        }
    }
    Ok(match status {
        0 => ServingStatus::Unknown,
        1 => ServingStatus::Serving,
        2 => ServingStatus::NotServing,
        3 => ServingStatus::ServiceUnknown,
        n => ServingStatus::Other(n),
    })
}

/// gRPC's name of a status code, as grpc-go prints it.
fn code_name(code: u32) -> String {
    let name = match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        other => return format!("Code({other})"),
    };
    name.to_owned()
}

/// grpc-go's `rpc error: code = <Name> desc = <message>`.
fn rpc_error(code: u32, desc: &str) -> String {
    format!("rpc error: code = {} desc = {desc}", code_name(code))
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl GrpcProbe {
    /// Consul's `CheckGRPC.check`: passing with `gRPC check <target>: success` when the server answers
    /// SERVING; critical with `gRPC <target> serving status: <status>` for any other state, or grpc-go's
    /// `rpc error: ...` when the call fails.
    pub(super) async fn run(&self) -> Outcome {
        match tokio::time::timeout(self.timeout, self.call()).await {
            Ok(Ok(ServingStatus::Serving)) => Outcome::counted(
                CheckStatus::Passing,
                format!("gRPC check {}: success", self.target),
            ),
            Ok(Ok(other)) => Outcome::counted(
                CheckStatus::Critical,
                format!("gRPC {} serving status: {other}", self.target),
            ),
            Ok(Err(text)) => Outcome::counted(CheckStatus::Critical, text),
            Err(_) => Outcome::counted(CheckStatus::Critical, rpc_error(4, "context deadline exceeded")),
        }
    }

    async fn call(&self) -> Result<ServingStatus, String> {
        let (server, service) = self.target.split_once('/').unwrap_or((self.target.as_str(), ""));
        let authority: Uri = format!("http://{server}/")
            .parse()
            .map_err(|e| rpc_error(14, &format!("invalid target {server:?}: {e}")))?;
        let host = bare_host(&authority)
            .ok_or_else(|| rpc_error(14, &format!("invalid target {server:?}")))?
            .to_owned();
        let port = authority
            .port_u16()
            .ok_or_else(|| rpc_error(14, &format!("missing port in target {server:?}")))?;
        let server_name = if self.tls_server_name.is_empty() {
            host.as_str()
        } else {
            self.tls_server_name.as_str()
        };
        let tls = self
            .use_tls
            .then_some((server_name, self.tls_skip_verify, Alpn::H2));
        let io = connect(&host, port, tls).await.map_err(|cause| {
            rpc_error(
                14,
                &format!("connection error: desc = \"transport: Error while dialing: {cause}\""),
            )
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| rpc_error(14, &format!("connection error: desc = \"transport: {e}\"")))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let _abort = AbortOnDrop(driver);
        let scheme = if self.use_tls { "https" } else { "http" };
        let request = Request::builder()
            .method("POST")
            .uri(format!("{scheme}://{server}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "grpc-go/1.0 (tribune consul health check)")
            .body(Full::new(encode_request(service)))
            .map_err(|e| rpc_error(13, &e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| rpc_error(14, &format!("connection error: desc = \"transport: {e}\"")))?;
        let (parts, body) = response.into_parts();
        if parts.status != axum::http::StatusCode::OK {
            return Err(rpc_error(
                if parts.status.as_u16() == 404 { 12 } else { 2 },
                &format!(
                    "unexpected HTTP status code received from server: {} ({})",
                    parts.status.as_u16(),
                    parts.status.canonical_reason().unwrap_or_default()
                ),
            ));
        }
        let collected = body
            .collect()
            .await
            .map_err(|e| rpc_error(14, &format!("connection error: desc = \"transport: {e}\"")))?;
        // A trailers-only answer carries grpc-status in the headers.
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status_of = |map: &axum::http::HeaderMap| {
            map.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
        };
        let message_of = |map: &axum::http::HeaderMap| {
            map.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(percent_decode)
                .unwrap_or_default()
        };
        let (code, message) = match status_of(&trailers) {
            Some(code) => (code, message_of(&trailers)),
            None => match status_of(&parts.headers) {
                Some(code) => (code, message_of(&parts.headers)),
                None => (13, "server closed the stream without sending trailers".to_owned()),
            },
        };
        if code != 0 {
            return Err(rpc_error(code, &message));
        }
        decode_response(&collected.to_bytes()).map_err(|e| rpc_error(13, &e))
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    #[test]
    fn request_and_response_frames() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&encode_request("db")[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 1]),
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 2, 0x08, 2]),
            Ok(ServingStatus::NotServing)
        );
        assert_eq!(decode_response(&[0, 0, 0, 0, 0]), Ok(ServingStatus::Unknown));
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            decode_response(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 3]),
            Ok(ServingStatus::ServiceUnknown)
        );
        assert!(decode_response(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert!(decode_response(&[0, 0, 0]).is_err());
        assert!(decode_response(&[0, 0, 0, 0, 2, 0x08, 0x80]).is_err());
        assert_eq!(percent_decode("unknown%20service"), "unknown service");
    }

    /// What the test server answers for a requested service name.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u8),
        Unimplemented,
    }

    /// An h2c gRPC health server on 127.0.0.1: `answer(service)` decides each reply.
    async fn health_server(answer: fn(&str) -> Answer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| async move {
                            assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                            assert_eq!(req.headers()["content-type"], "application/grpc");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            // The request's field 1 is the service name.
                            let service = if body.len() > 7 {
                                String::from_utf8_lossy(&body[7..]).into_owned()
                            } else {
                                String::new()
                            };
                            let mut trailers = axum::http::HeaderMap::new();
                            let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = Vec::new();
                            match answer(&service) {
                                Answer::Status(s) => {
                                    frames.push(Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]))));
                                    trailers.insert("grpc-status", "0".parse().unwrap());
                                }
                                Answer::Unimplemented => {
                                    trailers.insert("grpc-status", "12".parse().unwrap());
                                    trailers.insert("grpc-message", "unknown%20service".parse().unwrap());
                                }
                            }
                            frames.push(Ok(Frame::trailers(trailers)));
                            let body = StreamBody::new(futures::stream::iter(frames));
                            Ok::<_, std::convert::Infallible>(
                                axum::http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .body(body)
                                    .unwrap(),
                            )
                        });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr.to_string()
    }

    fn probe(target: String) -> GrpcProbe {
        GrpcProbe {
            target,
            use_tls: false,
            tls_skip_verify: false,
            tls_server_name: String::new(),
            timeout: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn serving_and_not_serving() {
        let addr = health_server(|service| match service {
            "" | "db" => Answer::Status(1),
            "cache" => Answer::Status(2),
            _ => Answer::Unimplemented,
        })
        .await;
        let whole = probe(addr.clone()).run().await;
        assert_eq!(whole.status, CheckStatus::Passing);
        assert_eq!(whole.output, format!("gRPC check {addr}: success"));
        let db = probe(format!("{addr}/db")).run().await;
        assert_eq!(db.status, CheckStatus::Passing);
        let cache = probe(format!("{addr}/cache")).run().await;
        assert_eq!(cache.status, CheckStatus::Critical);
        assert_eq!(
            cache.output,
            format!("gRPC {addr}/cache serving status: NOT_SERVING")
        );
        let other = probe(format!("{addr}/other")).run().await;
        assert_eq!(other.status, CheckStatus::Critical);
        assert_eq!(
            other.output,
            "rpc error: code = Unimplemented desc = unknown service"
        );
    }

    #[tokio::test]
    async fn refused_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let out = probe(addr.to_string()).run().await;
        assert_eq!(out.status, CheckStatus::Critical);
        assert_eq!(
            out.output,
            format!(
                "rpc error: code = Unavailable desc = connection error: desc = \"transport: Error while dialing: dial tcp {addr}: connect: connection refused\""
            )
        );
    }
}
