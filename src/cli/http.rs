//! The command line's HTTP client: one keep-alive HTTP/1.1 connection to the agent, reopened when the
//! agent closes it, with the agent's address and token resolved the way Consul's CLI resolves them.

use std::time::Duration;

pub(crate) use tribune::paths::{add_query_param, encode_key, encode_query_value};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::CliError;

/// The agent address used when neither a flag nor the environment names one (Consul's default).
pub(crate) const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";

/// How long connecting to the agent may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body: whole bytes or a stream (snapshot restore).
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A request body holding `bytes`.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> RequestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Where the agent is and who we are to it: `-http-addr` and `-token`, else `TRIBUNE_HTTP_ADDR` /
/// `TRIBUNE_HTTP_TOKEN`, else `CONSUL_HTTP_ADDR` / `CONSUL_HTTP_TOKEN`, else Consul's defaults.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) authority: String,
    /// The ACL token sent as `X-Consul-Token`.
    pub(crate) token: Option<String>,
    /// The datacenter every request asks for (`-datacenter`), sent as `?dc=`.
    pub(crate) datacenter: Option<String>,
}

impl Target {
    /// Resolves the target from the flags and the environment.
    pub(crate) fn resolve(http_addr: Option<&str>, token: Option<&str>) -> Result<Self, CliError> {
        let from_env = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        };
        let address = http_addr
            .map(str::to_owned)
            .or_else(|| from_env(["TRIBUNE_HTTP_ADDR", "CONSUL_HTTP_ADDR"]))
            .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
        let token = token
            .map(str::to_owned)
            .or_else(|| from_env(["TRIBUNE_HTTP_TOKEN", "CONSUL_HTTP_TOKEN"]))
            .filter(|token| !token.is_empty());
        Ok(Target {
            authority: authority_of(&address)?,
            token,
            datacenter: None,
        })
    }

    /// The same target, asking `datacenter` (none, or an empty name, asks the agent's own).
    pub(crate) fn with_datacenter(mut self, datacenter: Option<&str>) -> Self {
        self.datacenter = datacenter.filter(|dc| !dc.is_empty()).map(str::to_owned);
        self
    }

    /// `path_and_query` with this target's `dc=` added to its query.
    pub(crate) fn uri_for(&self, path_and_query: &str) -> String {
        match &self.datacenter {
            Some(dc) => add_query_param(path_and_query, "dc", dc),
            None => path_and_query.to_owned(),
        }
    }
}

/// `host:port` from an address as Consul accepts it: `host:port` or `http://host:port`.
pub(crate) fn authority_of(address: &str) -> Result<String, CliError> {
    let rest = if let Some(rest) = address.strip_prefix("http://") {
        rest
    } else if address.starts_with("https://") || address.starts_with("unix://") {
        return Err(CliError::Usage(format!(
            "HTTP address {address:?}: only plain http:// addresses are supported"
        )));
    } else {
        address
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(CliError::Usage(format!(
            "HTTP address {address:?} is not host:port or http://host:port"
        )));
    }
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        Ok(authority.to_owned())
    } else {
        // Consul's client adds the default port when there is none.
        Ok(format!("{authority}:8500"))
    }
}

/// A response read in full.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    /// `X-Consul-Index`, when present.
    pub(crate) fn index(&self) -> Option<u64> {
        self.headers
            .get("x-consul-index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
    }

    /// The body as JSON of type `T`.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, CliError> {
        serde_json::from_slice(&self.body).map_err(|error| CliError::Decode {
            what: "the agent's answer",
            reason: error.to_string(),
        })
    }

    /// Fails unless the status is 200, with Consul's "Unexpected response code" wording.
    pub(crate) fn ok(self) -> Result<Self, CliError> {
        if self.status == StatusCode::OK {
            Ok(self)
        } else {
            Err(CliError::Status {
                status: self.status.as_u16(),
                body: String::from_utf8_lossy(&self.body).trim().to_owned(),
            })
        }
    }
}

/// One keep-alive connection to an agent's HTTP API.
pub(crate) struct ApiClient {
    target: Target,
    sender: Option<SendRequest<RequestBody>>,
}

impl ApiClient {
    /// A client for `target`; it connects on the first request.
    pub(crate) fn new(target: Target) -> Self {
        ApiClient { target, sender: None }
    }

    /// Sends a request and returns the response with its body still streaming.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
    ) -> Result<Response<hyper::body::Incoming>, CliError> {
        let uri = self.target.uri_for(path_and_query);
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, &self.target.authority);
        if let Some(token) = &self.target.token {
            builder = builder.header("x-consul-token", token);
        }
        let request = builder.body(body).map_err(|error| {
            CliError::Usage(format!("cannot build a request for {path_and_query:?}: {error}"))
        })?;
        let sender = self.ready_sender().await?;
        sender
            .send_request(request)
            .await
            .map_err(|source| CliError::Http {
                authority: self.target.authority.clone(),
                source,
            })
    }

    /// Sends a request and reads the whole response.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, CliError> {
        let response = self.send(method, path_and_query, full_body(body)).await?;
        let (parts, incoming) = response.into_parts();
        let body = incoming
            .collect()
            .await
            .map_err(|source| CliError::Http {
                authority: self.target.authority.clone(),
                source,
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The open connection, or a new one when there is none or the agent closed it.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<RequestBody>, CliError> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_ok()
        {
            // Re-borrow: the check above must not hold the borrow across the reconnect below.
        } else {
            self.sender = Some(connect(&self.target.authority).await?);
        }
        self.sender.as_mut().ok_or_else(|| CliError::Connect {
            authority: self.target.authority.clone(),
            reason: "no connection".into(),
        })
    }
}

/// Opens one HTTP/1.1 connection and drives it on a background task.
pub(crate) async fn connect(authority: &str) -> Result<SendRequest<RequestBody>, CliError> {
    let connect_error = |reason: String| CliError::Connect {
        authority: authority.to_owned(),
        reason,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|error| connect_error(error.to_string()))?;
    // Requests are small and latency matters more than packet count (the load generator measures it).
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| connect_error(error.to_string()))?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the agent closes it; either is normal here.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_like_consul() {
        assert_eq!(authority_of("127.0.0.1:8500").unwrap(), "127.0.0.1:8500");
        assert_eq!(authority_of("http://10.0.0.1:18500/").unwrap(), "10.0.0.1:18500");
        assert_eq!(authority_of("localhost").unwrap(), "localhost:8500");
        assert!(authority_of("https://example.com:8501").is_err());
        assert!(authority_of("http://host:1/path").is_err());
    }

    #[test]
    fn the_datacenter_is_added_to_every_query() {
        let target = Target {
            authority: "127.0.0.1:8500".into(),
            token: None,
            datacenter: None,
        };
        assert_eq!(target.uri_for("/v1/kv/a?recurse"), "/v1/kv/a?recurse");
        let target = target.with_datacenter(Some("dc2"));
        assert_eq!(target.uri_for("/v1/kv/a"), "/v1/kv/a?dc=dc2");
        assert_eq!(target.uri_for("/v1/kv/a?recurse"), "/v1/kv/a?recurse&dc=dc2");
        assert_eq!(
            target.uri_for("/v1/agent/force-leave/n?prune=1&wan=1"),
            "/v1/agent/force-leave/n?prune=1&wan=1&dc=dc2"
        );
        assert_eq!(target.uri_for("/v1/kv/a?"), "/v1/kv/a?dc=dc2");
        assert_eq!(target.uri_for("/v1/kv/a?keys&"), "/v1/kv/a?keys&dc=dc2");
        let odd = target.with_datacenter(Some("east/1 &x=y"));
        assert_eq!(odd.uri_for("/v1/kv/a"), "/v1/kv/a?dc=east%2F1%20%26x%3Dy");
        assert_eq!(odd.with_datacenter(Some("")).datacenter, None);
    }

    #[test]
    fn keys_keep_their_slashes() {
        assert_eq!(encode_key("a b/c%d"), "a%20b/c%25d");
        assert_eq!(encode_query_value("a/b"), "a%2Fb");
    }
}
