//! The node's own [`Source`] and [`Sink`] for tribune-replicate, which an embedding program gets
//! from [`NodeHandle::replication_source`](crate::NodeHandle::replication_source) and
//! [`NodeHandle::replication_sink`](crate::NodeHandle::replication_sink).
//!
//! - [`NodeSource`] reads a prefix of another datacenter through the cross-datacenter call that
//!   `?dc=` uses: a `GET /v1/kv/<prefix>?recurse` (with `index`/`wait`, `stale` and
//!   `changes-since`) carried whole to one of its servers over the server RPC port and served
//!   there by its own HTTP API and ACL rules; the answer (status, body, query-meta headers) comes
//!   back and is decoded here. No local HTTP listener is involved.
//! - [`NodeSink`] reads and writes the local datacenter's state directly: consistent reads after
//!   the leader's read barrier, and each batch as one KV transaction through consensus, the path
//!   `/v1/txn` takes (`check-session` first when the batch has a fence, then `set`s and `delete`s).
//!
//! Both check ACLs with the token they were made with, on every call, as the HTTP API would for a
//! request carrying it. Neither holds the node alive: once it stops they answer "unreachable".
//!
//! It is not the replicator (tribune-replicate's runner drives these), nor a lock: keeping one
//! replicator per datacenter is the embedder's job (the fence makes a replicator that lost its lock
//! write nothing).

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::IntoResponse as _;
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use tribune_consensus::ReadMode;
use tribune_kvstore::{Backend, Command, KvEntry, TxnOp};
use tribune_replicate::{
    Batch, DeletedKey, Entry, Op, ReadContent, ReadQuery, Sink, SinkError, Source, SourceError, SourceRead,
};

use crate::fsm::ApplyResponse;
use crate::http::ApiError;
use crate::node::{Agent, ForwardedHttp, ForwardedResponse, ProposeError};

/// The header that marks a delta answer to `GET /v1/kv/<prefix>?recurse&changes-since=N`, with N as
/// its value. Its absence means the body is an ordinary recursive read: what Consul, which ignores
/// the parameter, answers, and what a server answers when it cannot prove the delta complete.
pub(crate) const CHANGES_SINCE_HEADER: &str = "x-tribune-changes-since";

/// Why a replication source or sink could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationSetupError {
    /// A client agent holds no state and has no route to other datacenters of its own.
    #[error("a client agent cannot replicate: only a server reads other datacenters and writes the state")]
    NotAServer,
    /// The agent has stopped.
    #[error("the agent has stopped")]
    Stopped,
    /// ACLs are enabled and the token does not resolve here.
    #[error("the replication token was refused: {0}")]
    Token(String),
}

/// What the source and sink need from a running server, whatever its storage backend.
pub(crate) trait ReplicationPort: Send + Sync {
    /// Checks that `token` resolves (when ACLs are enabled).
    fn check_token(&self, token: Option<&str>) -> Result<(), ReplicationSetupError>;
    // The arguments are owned so that the futures borrow only the port.
    fn read_remote(
        &self,
        query: ReadQuery,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<SourceRead, SourceError>>;
    fn local_datacenter(&self) -> Result<String, SinkError>;
    fn list(&self, prefix: String, token: Option<String>) -> BoxFuture<'_, Result<Vec<Entry>, SinkError>>;
    fn get(&self, key: String, token: Option<String>) -> BoxFuture<'_, Result<Option<Entry>, SinkError>>;
    fn apply(&self, batch: Batch, token: Option<String>) -> BoxFuture<'_, Result<(), SinkError>>;
}

/// The port of a server agent. Weak: a source or sink kept by the embedder must not keep a stopped
/// server's state (and its RocksDB lock) alive.
pub(crate) fn port<B: Backend>(agent: &Arc<Agent<B>>) -> Arc<dyn ReplicationPort> {
    Arc::new(AgentPort {
        agent: Arc::downgrade(agent),
    })
}

/// Reads a prefix of another datacenter through this server's cross-datacenter path (see the
/// module documentation).
///
/// The token travels with each read and is checked by the datacenter that answers, as for a
/// `?dc=` request; without one, that server's default token applies. A read of this server's own
/// datacenter is refused (replication into the datacenter it reads from makes no sense).
pub struct NodeSource {
    port: Arc<dyn ReplicationPort>,
    token: Option<String>,
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSource")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}

impl NodeSource {
    pub(crate) fn new(port: Arc<dyn ReplicationPort>, token: Option<String>) -> Self {
        NodeSource { port, token }
    }
}

impl Source for NodeSource {
    fn read(&self, query: &ReadQuery) -> impl Future<Output = Result<SourceRead, SourceError>> + Send {
        self.port.read_remote(query.clone(), self.token.clone())
    }
}

/// The local datacenter's state as a replication destination (see the module documentation).
///
/// Every call resolves the token (without one, the agent's default token) and checks it as the HTTP
/// API would: `list` needs the key-list gate on the prefix (with `acl.enable_key_list_policy`) and
/// returns only readable keys, as a recursive read; `get` needs key read; `apply` needs key write on
/// every key it writes and key read on the fence's key. A refusal is [`SinkError::Refused`] with
/// status 403, and nothing is written.
pub struct NodeSink {
    port: Arc<dyn ReplicationPort>,
    token: Option<String>,
}

impl std::fmt::Debug for NodeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSink")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}

impl NodeSink {
    pub(crate) fn new(port: Arc<dyn ReplicationPort>, token: Option<String>) -> Self {
        NodeSink { port, token }
    }
}

impl Sink for NodeSink {
    fn local_datacenter(&self) -> impl Future<Output = Result<String, SinkError>> + Send {
        std::future::ready(self.port.local_datacenter())
    }

    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<Entry>, SinkError>> + Send {
        self.port.list(prefix.to_owned(), self.token.clone())
    }

    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, SinkError>> + Send {
        self.port.get(key.to_owned(), self.token.clone())
    }

    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.port.apply(batch.clone(), self.token.clone())
    }
}

struct AgentPort<B: Backend> {
    agent: Weak<Agent<B>>,
}

const STOPPED: &str = "the agent has stopped";

impl<B: Backend> AgentPort<B> {
    fn sink_agent(&self) -> Result<Arc<Agent<B>>, SinkError> {
        self.agent
            .upgrade()
            .ok_or_else(|| SinkError::Unreachable(STOPPED.to_owned()))
    }
}

/// A request's headers carrying `token`, for the HTTP API's own token resolution.
fn token_headers(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-consul-token", value);
    }
    headers
}

/// The HTTP API's refusal as a sink error, with the status it would have answered.
fn refused(error: ApiError) -> SinkError {
    let body = error.message().to_owned();
    SinkError::Refused {
        status: error.into_response().status().as_u16(),
        body,
    }
}

fn denied(what: &str, key: &str) -> SinkError {
    SinkError::Refused {
        status: 403,
        body: format!("Permission denied: {what} {key:?}"),
    }
}

fn entry_of(entry: KvEntry) -> Entry {
    Entry {
        key: entry.key,
        value: entry.value,
        flags: entry.flags,
        create_index: entry.create_index,
        modify_index: entry.modify_index,
        lock_index: entry.lock_index,
        session: entry.session,
    }
}

impl<B: Backend> AgentPort<B> {
    fn access(&self, agent: &Agent<B>, token: Option<&str>) -> Result<crate::http::Access, ApiError> {
        agent.access(&token_headers(token), &Uri::from_static("/"))
    }

    async fn consistent(&self, agent: &Agent<B>) -> Result<(), SinkError> {
        agent
            .read_barrier(ReadMode::Consistent)
            .await
            .map_err(|e| SinkError::Unreachable(format!("consistent read: {e}")))
    }

    async fn list_now(&self, prefix: &str, token: Option<&str>) -> Result<Vec<Entry>, SinkError> {
        let agent = self.sink_agent()?;
        let access = self.access(&agent, token).map_err(refused)?;
        let gate = agent.config.acl.enable_key_list_policy;
        if !access.allows(|a| a.key_list_gate(prefix, gate)) {
            return Err(denied("list", prefix));
        }
        self.consistent(&agent).await?;
        let mut found = agent
            .store
            .list(prefix)
            .map_err(|e| refused(ApiError::read(e)))?
            .value;
        access.filter(&mut found, |a, entry| a.key_read(&entry.key));
        Ok(found.into_iter().map(entry_of).collect())
    }

    async fn get_now(&self, key: &str, token: Option<&str>) -> Result<Option<Entry>, SinkError> {
        let agent = self.sink_agent()?;
        let access = self.access(&agent, token).map_err(refused)?;
        if !access.allows(|a| a.key_read(key)) {
            return Err(denied("read", key));
        }
        self.consistent(&agent).await?;
        let found = agent.store.get(key).map_err(|e| refused(ApiError::read(e)))?;
        Ok(found.value.map(entry_of))
    }

    async fn apply_now(&self, batch: &Batch, token: Option<&str>) -> Result<(), SinkError> {
        let agent = self.sink_agent()?;
        let access = self.access(&agent, token).map_err(refused)?;
        // As `/v1/txn`: every operation is allowed before anything is proposed.
        if let Some(fence) = &batch.fence
            && !access.allows(|a| a.key_read(&fence.key))
        {
            return Err(denied("check the lock", &fence.key));
        }
        if let Some(op) = batch
            .ops
            .iter()
            .find(|op| !access.allows(|a| a.key_write(op.key())))
        {
            return Err(denied("write", op.key()));
        }
        if batch.ops.is_empty() && batch.fence.is_none() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(batch.ops.len() + 1);
        if let Some(fence) = &batch.fence {
            ops.push(TxnOp::CheckSession {
                key: fence.key.clone(),
                session: fence.session.clone(),
            });
        }
        ops.extend(batch.ops.iter().map(|op| match op {
            Op::Put { key, value, flags } => TxnOp::Set {
                key: key.clone(),
                value: value.clone(),
                flags: *flags,
            },
            Op::Delete { key } => TxnOp::Delete { key: key.clone() },
        }));
        let command = Command::Txn { ops };
        command
            .validate()
            .map_err(|e| refused(ApiError::from_apply_error(&e)))?;
        let (response, _index) = agent.propose(&command).await.map_err(|e| match e {
            // May or may not have applied; the runner reads the destination again before retrying.
            ProposeError::Consensus(e) => SinkError::Unreachable(e.to_string()),
            ProposeError::Codec(message) => SinkError::Decode(message),
        })?;
        match response {
            ApplyResponse::Txn { errors, .. } if errors.is_empty() => Ok(()),
            ApplyResponse::Txn { errors, .. } => match &batch.fence {
                // The check comes first: when it fails, the transaction rolled back whole.
                Some(fence) if errors.iter().any(|(position, _)| *position == 0) => {
                    Err(SinkError::FenceLost {
                        key: fence.key.clone(),
                        session: fence.session.clone(),
                    })
                }
                _ => Err(SinkError::Refused {
                    status: 409,
                    body: errors
                        .iter()
                        .map(|(position, what)| format!("operation {position}: {what}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                }),
            },
            ApplyResponse::Rejected { kind, message } => Err(refused(ApiError::rejected(kind, message))),
            _ => Err(SinkError::Decode(
                "unexpected response to a transaction".to_owned(),
            )),
        }
    }

    async fn read_remote_now(
        &self,
        query: &ReadQuery,
        token: Option<&str>,
    ) -> Result<SourceRead, SourceError> {
        let unreachable = |reason: String| SourceError::Unreachable {
            prefix: query.prefix.clone(),
            datacenter: query.datacenter.clone(),
            reason,
        };
        let agent = self
            .agent
            .upgrade()
            .ok_or_else(|| unreachable(STOPPED.to_owned()))?;
        let datacenter = query.datacenter.to_lowercase();
        if datacenter == agent.config.datacenter {
            return Err(SourceError::Status {
                prefix: query.prefix.clone(),
                datacenter: query.datacenter.clone(),
                status: 400,
                body: "the node's source reads other datacenters; this is the local one".to_owned(),
            });
        }
        let mut headers = Vec::new();
        if let Some(token) = token {
            headers.push(("x-consul-token".to_owned(), token.as_bytes().to_vec()));
        }
        let request = ForwardedHttp {
            method: "GET".to_owned(),
            uri: read_uri(query),
            headers,
            body: Vec::new(),
        };
        let response = agent
            .forward_to_datacenter(&datacenter, request)
            .await
            .map_err(|e| unreachable(e.message().to_owned()))?;
        decode_read(query, &response)
    }
}

impl<B: Backend> ReplicationPort for AgentPort<B> {
    fn check_token(&self, token: Option<&str>) -> Result<(), ReplicationSetupError> {
        let agent = self.agent.upgrade().ok_or(ReplicationSetupError::Stopped)?;
        self.access(&agent, token)
            .map(|_| ())
            .map_err(|e| ReplicationSetupError::Token(e.message().to_owned()))
    }

    fn read_remote(
        &self,
        query: ReadQuery,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<SourceRead, SourceError>> {
        Box::pin(async move { self.read_remote_now(&query, token.as_deref()).await })
    }

    fn local_datacenter(&self) -> Result<String, SinkError> {
        Ok(self.sink_agent()?.config.datacenter.clone())
    }

    fn list(&self, prefix: String, token: Option<String>) -> BoxFuture<'_, Result<Vec<Entry>, SinkError>> {
        Box::pin(async move { self.list_now(&prefix, token.as_deref()).await })
    }

    fn get(&self, key: String, token: Option<String>) -> BoxFuture<'_, Result<Option<Entry>, SinkError>> {
        Box::pin(async move { self.get_now(&key, token.as_deref()).await })
    }

    fn apply(&self, batch: Batch, token: Option<String>) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { self.apply_now(&batch, token.as_deref()).await })
    }
}

/// The path and query of a recursive read: the prefix percent-encoded (every byte but unreserved
/// characters and `/`, which the KV endpoint decodes back), then Consul's parameters.
fn read_uri(query: &ReadQuery) -> String {
    let mut uri = String::from("/v1/kv/");
    for byte in query.prefix.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?recurse");
    if query.index > 0 {
        uri.push_str(&format!(
            "&index={}&wait={}ms",
            query.index,
            query.wait.as_millis()
        ));
    }
    if query.stale {
        uri.push_str("&stale");
    }
    if let Some(since) = query.changes_since {
        uri.push_str(&format!("&changes-since={since}"));
    }
    uri
}

/// Consul's `DirEntry` as the KV endpoint writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireEntry {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    session: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireDeleted {
    key: String,
    modify_index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireChanges {
    #[serde(default)]
    changed: Vec<WireEntry>,
    #[serde(default)]
    deleted: Vec<WireDeleted>,
}

fn header<'a>(response: &'a ForwardedResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// The answer of a recursive read: a delta when the server marked it one with the requested
/// `changes-since`, else the whole prefix (a 404 is an empty prefix).
fn decode_read(query: &ReadQuery, response: &ForwardedResponse) -> Result<SourceRead, SourceError> {
    let decode_error = |reason: String| SourceError::Decode {
        prefix: query.prefix.clone(),
        datacenter: query.datacenter.clone(),
        reason,
    };
    if response.status != 200 && response.status != 404 {
        return Err(SourceError::Status {
            prefix: query.prefix.clone(),
            datacenter: query.datacenter.clone(),
            status: response.status,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        });
    }
    let index = header(response, "x-consul-index")
        .ok_or_else(|| decode_error("no X-Consul-Index".to_owned()))?
        .trim()
        .parse::<u64>()
        .map_err(|e| decode_error(format!("X-Consul-Index: {e}")))?;
    let known_leader = header(response, "x-consul-knownleader").is_some_and(|v| v.trim() == "true");
    let last_contact = header(response, "x-consul-lastcontact")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let delta_since = match header(response, CHANGES_SINCE_HEADER) {
        None => None,
        Some(text) => Some(
            text.trim()
                .parse::<u64>()
                .map_err(|e| decode_error(format!("X-Tribune-Changes-Since: {e}")))?,
        ),
    };
    let content = match delta_since {
        _ if response.status == 404 => ReadContent::Full(Vec::new()),
        None => {
            let entries: Vec<WireEntry> =
                serde_json::from_slice(&response.body).map_err(|e| decode_error(e.to_string()))?;
            ReadContent::Full(
                entries
                    .into_iter()
                    .map(|e| wire_entry(e).map_err(&decode_error))
                    .collect::<Result<_, _>>()?,
            )
        }
        Some(since) if Some(since) != query.changes_since => {
            return Err(decode_error(format!(
                "a delta after {since}, asked for {:?}",
                query.changes_since
            )));
        }
        Some(since) => {
            let changes: WireChanges =
                serde_json::from_slice(&response.body).map_err(|e| decode_error(e.to_string()))?;
            ReadContent::Delta {
                since,
                changed: changes
                    .changed
                    .into_iter()
                    .map(|e| wire_entry(e).map_err(&decode_error))
                    .collect::<Result<_, _>>()?,
                deleted: changes
                    .deleted
                    .into_iter()
                    .map(|d| DeletedKey {
                        key: d.key,
                        modify_index: d.modify_index,
                    })
                    .collect(),
            }
        }
    };
    Ok(SourceRead {
        index,
        known_leader,
        last_contact,
        content,
    })
}

fn wire_entry(entry: WireEntry) -> Result<Entry, String> {
    let value = match entry.value.as_deref() {
        None | Some("") => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("the value of {:?} is not base64: {e}", entry.key))?,
    };
    Ok(Entry {
        key: entry.key,
        value,
        flags: entry.flags,
        create_index: entry.create_index,
        modify_index: entry.modify_index,
        lock_index: entry.lock_index,
        session: entry.session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(changes_since: Option<u64>) -> ReadQuery {
        ReadQuery {
            prefix: "app/a b%".into(),
            datacenter: "dc1".into(),
            index: 0,
            wait: Duration::from_secs(1),
            stale: false,
            changes_since,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> ForwardedResponse {
        ForwardedResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_read_uri_escapes_the_prefix_and_carries_the_parameters() {
        assert_eq!(read_uri(&query(None)), "/v1/kv/app/a%20b%25?recurse");
        let blocking = ReadQuery {
            index: 42,
            wait: Duration::from_millis(1500),
            stale: true,
            ..query(Some(7))
        };
        assert_eq!(
            read_uri(&blocking),
            "/v1/kv/app/a%20b%25?recurse&index=42&wait=1500ms&stale&changes-since=7"
        );
    }

    #[test]
    fn a_marked_answer_is_a_delta_and_an_unmarked_one_the_whole_prefix() {
        let meta = [
            ("X-Consul-Index", "12"),
            ("x-consul-knownleader", "true"),
            ("x-consul-lastcontact", "250"),
        ];
        let full = decode_read(
            &query(Some(3)),
            &response(
                200,
                &meta,
                r#"[{"Key":"app/x","Value":"dg==","Flags":4,"CreateIndex":2,"ModifyIndex":9,"LockIndex":0}]"#,
            ),
        )
        .unwrap();
        assert_eq!((full.index, full.known_leader), (12, true));
        assert_eq!(full.last_contact, Duration::from_millis(250));
        let ReadContent::Full(entries) = full.content else {
            panic!("no header: a full read");
        };
        assert_eq!(
            (entries[0].value.as_slice(), entries[0].flags),
            (b"v".as_slice(), 4)
        );

        let mut marked = meta.to_vec();
        marked.push(("x-tribune-changes-since", "3"));
        let delta = decode_read(
            &query(Some(3)),
            &response(
                200,
                &marked,
                r#"{"Changed":[{"Key":"app/y","Value":null,"ModifyIndex":11}],"Deleted":[{"Key":"app/z","ModifyIndex":12}]}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            delta.content,
            ReadContent::Delta {
                since: 3,
                changed: vec![Entry {
                    key: "app/y".into(),
                    value: Vec::new(),
                    flags: 0,
                    create_index: 0,
                    modify_index: 11,
                    lock_index: 0,
                    session: None,
                }],
                deleted: vec![DeletedKey {
                    key: "app/z".into(),
                    modify_index: 12,
                }],
            }
        );
        // A delta from another index than asked is not trusted.
        assert!(matches!(
            decode_read(&query(Some(4)), &response(200, &marked, "{}")),
            Err(SourceError::Decode { .. })
        ));
    }

    #[test]
    fn a_404_is_an_empty_prefix_and_other_statuses_are_errors() {
        let empty = decode_read(&query(None), &response(404, &[("x-consul-index", "5")], "")).unwrap();
        assert_eq!((empty.index, empty.content), (5, ReadContent::Full(Vec::new())));
        assert!(matches!(
            decode_read(&query(None), &response(403, &[], "Permission denied")),
            Err(SourceError::Status { status: 403, ref body, .. }) if body == "Permission denied"
        ));
        assert!(matches!(
            decode_read(&query(None), &response(200, &[], "[]")),
            Err(SourceError::Decode { .. })
        ));
        assert!(matches!(
            decode_read(
                &query(None),
                &response(200, &[("x-consul-index", "1")], r#"[{"Key":"k","Value":"!"}]"#)
            ),
            Err(SourceError::Decode { .. })
        ));
    }
}
