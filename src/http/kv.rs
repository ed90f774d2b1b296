//! `/v1/kv/*`: Consul's KV endpoint, and one Tribune extension: a recursive read with
//! `?changes-since=N` answers only what changed under the prefix after index N (see [`get_kv`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use tribune_kvstore::{Backend, Command, KvEntry, MAX_VALUE_BYTES, Tombstone, WatchScope};

use super::{ApiError, Params, Shared, accepted, json_response, percent_decode};
use crate::fsm::ApplyResponse;
use crate::replicate::CHANGES_SINCE_HEADER;

/// Consul's `DirEntry` as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DirEntry {
    lock_index: u64,
    key: String,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    create_index: u64,
    modify_index: u64,
}

impl From<KvEntry> for DirEntry {
    fn from(entry: KvEntry) -> Self {
        DirEntry {
            lock_index: entry.lock_index,
            key: entry.key,
            flags: entry.flags,
            // Go encodes an empty byte slice as null.
            value: (!entry.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
            session: entry.session,
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }
    }
}

/// The body of a delta answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ChangesBody {
    changed: Vec<DirEntry>,
    deleted: Vec<DeletedEntry>,
}

/// A key deleted after `changes-since`, with the index of its delete.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeletedEntry {
    key: String,
    modify_index: u64,
}

impl From<Tombstone> for DeletedEntry {
    fn from(stone: Tombstone) -> Self {
        DeletedEntry {
            key: stone.key,
            modify_index: stone.index,
        }
    }
}

/// The key of a KV request: everything after `/v1/kv/`, percent-decoded (`%2F` included).
fn key_of(uri: &Uri) -> String {
    let raw = uri.path().strip_prefix("/v1/kv").unwrap_or("");
    percent_decode(raw.strip_prefix('/').unwrap_or(raw))
}

fn missing_key() -> ApiError {
    ApiError::bad_request("Missing key name")
}

/// `GET /v1/kv/<key>`: one entry, `?recurse` for a prefix, `?keys` for key names.
///
/// `?recurse&changes-since=N` (a Tribune extension, for cross-datacenter replication) answers 200
/// with `X-Tribune-Changes-Since: N` and `{"Changed": [DirEntry…], "Deleted": [{"Key", "ModifyIndex"}…]}`
/// — the entries written and the keys deleted under the prefix after N, both filtered by key read
/// like a recursive read — when the store can prove the delta complete; otherwise (tombstones
/// reaped after N, or a restart or restore since) the ordinary recursive read, without the header.
/// Blocking, consistency modes and the index are those of `?recurse`. A value that is not an
/// unsigned integer is a 400, as a malformed `index` is: a client that asked for a delta must not
/// mistake a full read for one it did not mean to ask. Without `recurse` the parameter is ignored.
pub(crate) async fn get_kv<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let key = key_of(&uri);
    let list_keys = params.has("keys");
    let recurse = params.has("recurse");
    if key.is_empty() && !recurse && !list_keys {
        return Err(missing_key());
    }
    let access = agent.access(&request_headers, &uri)?;
    if recurse || list_keys {
        let gate = agent.config.acl.enable_key_list_policy;
        access.require(|a| a.key_list_gate(&key, gate))?;
    } else {
        access.require(|a| a.key_read(&key))?;
    }
    let scope = if recurse || list_keys {
        WatchScope::Prefix(key.clone())
    } else {
        WatchScope::Key(key.clone())
    };
    let changes_since = if recurse {
        params.u64("changes-since")?
    } else {
        None
    };
    let meta = agent.prepare_read(&params, scope).await?;
    if list_keys {
        let separator = params.get("separator").or_else(|| params.get("seperator"));
        let mut found = agent.store.keys(&key, separator).map_err(ApiError::read)?;
        access.filter(&mut found.value, |a, listed| a.key_read(listed));
        let headers = meta.with_index(found.index).headers();
        // An empty root listing is `[]`; an empty sub-prefix is a 404, as Consul.
        if found.value.is_empty() && !key.is_empty() {
            return Ok((StatusCode::NOT_FOUND, headers).into_response());
        }
        return Ok(json_response(headers, &found.value));
    }
    if let Some(since) = changes_since
        && let Some(changes) = agent.store.changes_since(&key, since).map_err(ApiError::read)?
    {
        let mut changed = changes.value.changed;
        let mut deleted = changes.value.deleted;
        access.filter(&mut changed, |a, entry| a.key_read(&entry.key));
        access.filter(&mut deleted, |a, stone| a.key_read(&stone.key));
        let mut headers = meta.with_index(changes.index).headers();
        headers.insert(CHANGES_SINCE_HEADER, HeaderValue::from(since));
        let body = ChangesBody {
            changed: changed.into_iter().map(DirEntry::from).collect(),
            deleted: deleted.into_iter().map(DeletedEntry::from).collect(),
        };
        return Ok(json_response(headers, &body));
    }
    if recurse {
        let mut found = agent.store.list(&key).map_err(ApiError::read)?;
        access.filter(&mut found.value, |a, entry| a.key_read(&entry.key));
        let headers = meta.with_index(found.index).headers();
        if found.value.is_empty() {
            return Ok((StatusCode::NOT_FOUND, headers).into_response());
        }
        let entries: Vec<DirEntry> = found.value.into_iter().map(DirEntry::from).collect();
        return Ok(json_response(headers, &entries));
    }
    let found = agent.store.get(&key).map_err(ApiError::read)?;
    let mut headers = meta.with_index(found.index).headers();
    let Some(entry) = found.value else {
        return Ok((StatusCode::NOT_FOUND, headers).into_response());
    };
    if params.has("raw") {
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        headers.insert("content-security-policy", HeaderValue::from_static("sandbox"));
        return Ok((headers, entry.value).into_response());
    }
    Ok(json_response(headers, &[DirEntry::from(entry)]))
}

pub(crate) async fn put_kv<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let key = key_of(&uri);
    if key.is_empty() {
        return Err(missing_key());
    }
    agent.authorize(&request_headers, &uri, |a| a.key_write(&key))?;
    let declared_len = request_headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if body.len() > MAX_VALUE_BYTES || declared_len.is_some_and(|len| len > MAX_VALUE_BYTES) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body(value) too large, max size: {MAX_VALUE_BYTES} bytes"),
        ));
    }
    let flags = params.u64("flags")?.unwrap_or(0);
    let cas = params.u64("cas")?;
    let acquire = params.get("acquire").map(str::to_owned);
    let release = params.get("release").map(str::to_owned);
    let given = usize::from(cas.is_some()) + usize::from(acquire.is_some()) + usize::from(release.is_some());
    if given > 1 {
        return Err(ApiError::bad_request(
            "Conflicting flags: cas, acquire and release are mutually exclusive",
        ));
    }
    let value = body.to_vec();
    // Held from the lock-delay check of an acquire until its command has applied.
    let mut lock_delay_check = None;
    let command = match (cas, acquire, release) {
        (Some(index), _, _) => Command::KvCas {
            key,
            value,
            flags,
            index,
        },
        (_, Some(session), _) => {
            // Lock-delay is wall-clock, so the leader enforces it before proposing (as Consul).
            let delays = agent
                .sessions
                .lock_delays_now(&agent.consensus)
                .await
                .map_err(ApiError::consensus)?;
            if delays.active(&key) {
                return Ok(bool_response(false));
            }
            lock_delay_check = Some(delays);
            Command::KvLock {
                key,
                value,
                flags,
                session,
            }
        }
        (_, _, Some(session)) => Command::KvUnlock {
            key,
            value,
            flags,
            session,
        },
        _ => Command::KvSet { key, value, flags },
    };
    let written = write_bool(&agent, command).await;
    drop(lock_delay_check);
    written
}

pub(crate) async fn delete_kv<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let key = key_of(&uri);
    let recurse = params.has("recurse");
    let cas = params.u64("cas")?;
    if recurse && cas.is_some() {
        return Err(ApiError::bad_request(
            "Conflicting flags: cas and recurse are mutually exclusive",
        ));
    }
    // Deleting a tree needs write on every key under it (Consul's KeyWritePrefix).
    if recurse {
        agent.authorize(&request_headers, &uri, |a| a.key_write_prefix(&key))?;
    } else if !key.is_empty() {
        agent.authorize(&request_headers, &uri, |a| a.key_write(&key))?;
    }
    let command = match cas {
        _ if recurse => Command::KvDeleteTree { prefix: key },
        _ if key.is_empty() => return Err(missing_key()),
        Some(index) => Command::KvDeleteCas { key, index },
        None => Command::KvDelete { key },
    };
    write_bool(&agent, command).await
}

async fn write_bool<B: Backend>(agent: &Shared<B>, command: Command) -> Result<Response, ApiError> {
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    match accepted(response)? {
        ApplyResponse::Kv(ok) => Ok(bool_response(ok)),
        _ => Ok(bool_response(true)),
    }
}

pub(crate) fn bool_response(ok: bool) -> Response {
    json_response(HeaderMap::new(), &ok)
}
