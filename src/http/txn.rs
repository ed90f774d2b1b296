//! `PUT /v1/txn`: KV transactions, applied all or nothing through the log; a transaction of reads and
//! checks only is answered from the local state without a log entry, as Consul's.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tribune_kvstore::{Backend, Command, KvEntry, MAX_TXN_OPS, TxnOp};

use super::kv::DirEntry;
use super::{ApiError, Params, Shared, accepted, json_response};
use crate::fsm::ApplyResponse;

/// One operation of the request body; only `KV` operations are supported.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestOp {
    #[serde(rename = "KV")]
    kv: Option<KvOp>,
    node: Option<serde_json::Value>,
    service: Option<serde_json::Value>,
    check: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvOp {
    verb: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    session: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnBody {
    results: Option<Vec<ResultEntry>>,
    errors: Option<Vec<ErrorEntry>>,
}

#[derive(Debug, Serialize)]
struct ResultEntry {
    #[serde(rename = "KV")]
    kv: DirEntry,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorEntry {
    op_index: usize,
    what: String,
}

fn to_op(position: usize, op: RequestOp) -> Result<TxnOp, ApiError> {
    let Some(kv) = op.kv else {
        let kind = if op.node.is_some() {
            "Node"
        } else if op.service.is_some() {
            "Service"
        } else if op.check.is_some() {
            "Check"
        } else {
            return Err(ApiError::bad_request(format!(
                "operation {position} names no KV operation"
            )));
        };
        return Err(ApiError::bad_request(format!(
            "operation {position}: {kind} operations are not supported"
        )));
    };
    let value = match kv.value.as_deref() {
        None | Some("") => Vec::new(),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::bad_request(format!("operation {position}: Value is not base64: {e}")))?,
    };
    let KvOp {
        verb,
        key,
        flags,
        index,
        session,
        ..
    } = kv;
    Ok(match verb.as_str() {
        "set" => TxnOp::Set { key, value, flags },
        "cas" => TxnOp::Cas {
            key,
            value,
            flags,
            index,
        },
        "lock" => TxnOp::Lock {
            key,
            value,
            flags,
            session,
        },
        "unlock" => TxnOp::Unlock {
            key,
            value,
            flags,
            session,
        },
        "get" => TxnOp::Get { key },
        "get-tree" => TxnOp::GetTree { prefix: key },
        "check-index" => TxnOp::CheckIndex { key, index },
        "check-session" => TxnOp::CheckSession { key, session },
        "check-not-exists" => TxnOp::CheckNotExists { key },
        "delete" => TxnOp::Delete { key },
        "delete-tree" => TxnOp::DeleteTree { prefix: key },
        "delete-cas" => TxnOp::DeleteCas { key, index },
        other => {
            return Err(ApiError::bad_request(format!(
                "operation {position}: unknown KV verb {other:?}"
            )));
        }
    })
}

pub(crate) async fn txn<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ops: Vec<RequestOp> =
        super::decode_json(&body).map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    if ops.len() > MAX_TXN_OPS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                ops.len()
            ),
        ));
    }
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(position, op)| to_op(position, op))
        .collect::<Result<Vec<_>, _>>()?;
    let access = agent.access(&request_headers, &uri)?;
    // As Consul's: an operation the token may not perform fails the whole transaction with
    // "Permission denied" in `Errors` (409), before anything is read or proposed.
    let denied: Vec<(usize, String)> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !access.allows(|a| required_access(a, op)))
        .map(|(position, _)| (position, PERMISSION_DENIED.to_owned()))
        .collect();
    if !denied.is_empty() {
        return Ok(respond(HeaderMap::new(), Vec::new(), denied));
    }
    if !ops.iter().any(TxnOp::is_write) {
        // Consul's fast path: reads and checks only are answered from this server's state after the
        // read barrier of the requested mode, without a log entry.
        let mode = Params::parse(uri.query()).read_mode()?;
        agent.read_barrier(mode).await.map_err(ApiError::consensus)?;
        let read = agent
            .store
            .read_txn(&ops)
            .map_err(|e| ApiError::from_apply_error(&e))?;
        let mut results: Vec<KvEntry> = read
            .value
            .results
            .iter()
            .filter_map(|r| r.kv().cloned())
            .collect();
        access.filter(&mut results, |a, entry| a.key_read(&entry.key));
        let errors = read
            .value
            .errors
            .into_iter()
            .map(|e| (e.op_index, e.what))
            .collect();
        let headers = agent
            .query_meta()
            .with_index(read.index)
            .with_consistency(mode)
            .headers();
        return Ok(respond(headers, results, errors));
    }
    // Lock-delay is wall-clock, so the leader refuses a `lock` inside it before proposing, as for
    // `?acquire` (Consul's txn pre-check).
    let mut lock_delay_check = None;
    if ops.iter().any(|op| matches!(op, TxnOp::Lock { .. })) {
        let delays = agent
            .sessions
            .lock_delays_now(&agent.consensus)
            .await
            .map_err(ApiError::consensus)?;
        let delayed: Vec<(usize, String)> = ops
            .iter()
            .enumerate()
            .filter_map(|(position, op)| match op {
                TxnOp::Lock { key, .. } if delays.active(key) => {
                    Some((position, format!("failed to lock key {key:?} due to lock delay")))
                }
                _ => None,
            })
            .collect();
        if !delayed.is_empty() {
            return Ok(respond(HeaderMap::new(), Vec::new(), delayed));
        }
        // Held until the transaction has applied (see `SessionKeeper::lock_delays_now`).
        lock_delay_check = Some(delays);
    }
    let command = Command::Txn { ops };
    command.validate().map_err(|e| ApiError::from_apply_error(&e))?;
    let proposed = agent.propose(&command).await;
    drop(lock_delay_check);
    let (response, _) = proposed.map_err(ApiError::propose)?;
    let ApplyResponse::Txn { mut results, errors } = accepted(response)? else {
        return Err(ApiError::internal("unexpected response to a transaction"));
    };
    access.filter(&mut results, |a, entry| a.key_read(&entry.key));
    Ok(respond(HeaderMap::new(), results, errors))
}

/// Consul's answer: 200 with `Results` when the transaction committed, 409 with `Errors` otherwise.
fn respond(headers: HeaderMap, results: Vec<KvEntry>, errors: Vec<(usize, String)>) -> Response {
    if errors.is_empty() {
        let body = TxnBody {
            results: Some(
                results
                    .into_iter()
                    .map(|entry| ResultEntry {
                        kv: DirEntry::from(entry),
                    })
                    .collect(),
            ),
            errors: None,
        };
        json_response(headers, &body)
    } else {
        let body = TxnBody {
            results: None,
            errors: Some(
                errors
                    .into_iter()
                    .map(|(op_index, what)| ErrorEntry { op_index, what })
                    .collect(),
            ),
        };
        let mut response = json_response(headers, &body);
        *response.status_mut() = StatusCode::CONFLICT;
        response.into_response()
    }
}

/// Consul's text for an operation the token may not perform.
const PERMISSION_DENIED: &str = "Permission denied";

/// What one operation needs before it runs, as Consul's `kvsPreApply`: `get` and `get-tree` need
/// nothing here because their results are filtered by key read afterwards (a tree may mix readable
/// and unreadable keys); `check-index` and `check-session` need read, since their outcome reveals
/// the key; `delete-tree` needs write on the whole subtree; everything else, `check-not-exists`
/// included (Consul's default branch), needs write.
fn required_access(authorizer: &tribune_acl::Authorizer, op: &TxnOp) -> tribune_acl::Decision {
    match op {
        TxnOp::Get { .. } | TxnOp::GetTree { .. } => tribune_acl::Decision::Allow,
        TxnOp::CheckIndex { key, .. } | TxnOp::CheckSession { key, .. } => authorizer.key_read(key),
        TxnOp::DeleteTree { prefix } => authorizer.key_write_prefix(prefix),
        TxnOp::Set { key, .. }
        | TxnOp::Cas { key, .. }
        | TxnOp::Lock { key, .. }
        | TxnOp::Unlock { key, .. }
        | TxnOp::Delete { key }
        | TxnOp::DeleteCas { key, .. }
        | TxnOp::CheckNotExists { key } => authorizer.key_write(key),
        // An operation this build does not know is refused rather than let through.
        _ => tribune_acl::Decision::Deny,
    }
}
