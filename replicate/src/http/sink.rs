//! [`HttpSink`]: the local datacenter written through an agent's HTTP API. Reads are consistent;
//! writes are one `/v1/txn` per batch, fenced by `check-session` as the batch's first operation. It
//! writes what it is given; the planner decides what that is.

use bytes::Bytes;

use crate::model::{Batch, Entry, Op};
use crate::traits::{Sink, SinkError};

use super::client::{Body, ConsulClient, Reply};
use super::wire::{self, AgentSelf, DirEntry, TxnOp, TxnResponse};
use super::{HttpError, kv_path};

/// A [`Sink`] over a Consul-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: ConsulClient,
}

impl HttpSink {
    /// A sink writing through `client`'s agent (an agent of the local datacenter).
    pub fn new(client: ConsulClient) -> Self {
        HttpSink { client }
    }

    /// The client it writes through.
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    async fn list_http(&self, prefix: &str) -> Result<Vec<Entry>, HttpError> {
        let reply = self
            .client
            .get(&format!("{}?recurse&consistent", kv_path(prefix)))
            .await?;
        if reply.is_not_found() {
            return Ok(Vec::new());
        }
        let reply = reply.ok()?;
        let entries: Vec<DirEntry> = reply.json()?;
        wire::entries(entries).map_err(|reason| reply.decode_error(reason))
    }

    async fn get_http(&self, key: &str) -> Result<Option<Entry>, HttpError> {
        let reply = self.client.get(&format!("{}?consistent", kv_path(key))).await?;
        if reply.is_not_found() {
            return Ok(None);
        }
        let reply = reply.ok()?;
        let entries: Vec<DirEntry> = reply.json()?;
        let entries = wire::entries(entries).map_err(|reason| reply.decode_error(reason))?;
        let wanted = key.strip_prefix('/').unwrap_or(key);
        Ok(entries.into_iter().find(|entry| entry.key == wanted))
    }

    async fn apply_http(&self, batch: &Batch) -> Result<(), SinkError> {
        let body = txn_body(batch).map_err(|error| SinkError::Decode(error.to_string()))?;
        let reply = self.client.put("/v1/txn", Body::Json(body)).await?;
        txn_outcome(batch, &reply)
    }
}

impl Sink for HttpSink {
    async fn local_datacenter(&self) -> Result<String, SinkError> {
        let reply = self.client.get("/v1/agent/self").await?.ok()?;
        let agent: AgentSelf = reply.json()?;
        Ok(agent.config.datacenter)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, SinkError> {
        Ok(self.list_http(prefix).await?)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, SinkError> {
        Ok(self.get_http(key).await?)
    }

    async fn apply(&self, batch: &Batch) -> Result<(), SinkError> {
        self.apply_http(batch).await
    }
}

/// The `/v1/txn` body: the fence's `check-session` first, then the batch's writes in order.
pub(crate) fn txn_body(batch: &Batch) -> Result<Bytes, serde_json::Error> {
    let ops: Vec<TxnOp> = batch
        .fence
        .iter()
        .map(TxnOp::fence)
        .chain(batch.ops.iter().map(TxnOp::from_op))
        .collect();
    serde_json::to_vec(&ops).map(Bytes::from)
}

/// What a `/v1/txn` answer says: the index when it carries one (`Ok(None)` when committed without
/// one), or why nothing was written.
pub(crate) fn txn_outcome(batch: &Batch, reply: &Reply) -> Result<(), SinkError> {
    if reply.status.as_u16() == 409 {
        return Err(rolled_back(batch, reply));
    }
    if !reply.is_ok() {
        return Err(reply.status_error().into());
    }
    let answer: TxnResponse = reply.json()?;
    if let Some(errors) = answer.errors.filter(|errors| !errors.is_empty()) {
        // A 200 with errors is not Consul's; treat it as the rollback it describes.
        return Err(describe_errors(batch, &errors));
    }
    Ok(())
}

/// A 409: the fence failed (nothing written), or another operation did.
fn rolled_back(batch: &Batch, reply: &Reply) -> SinkError {
    match reply.json::<TxnResponse>() {
        Ok(TxnResponse { errors: Some(errors) }) if !errors.is_empty() => describe_errors(batch, &errors),
        _ => SinkError::Refused {
            status: reply.status.as_u16(),
            body: reply.text(),
        },
    }
}

fn describe_errors(batch: &Batch, errors: &[wire::TxnError]) -> SinkError {
    if let Some(fence) = &batch.fence {
        // A token that may not read the lock key fails the check too, but that is a refusal to
        // report as such, not a lost lock.
        let fence_failed = errors
            .iter()
            .any(|error| error.op_index == 0 && !error.what.contains("Permission denied"));
        if fence_failed {
            return SinkError::FenceLost {
                key: fence.key.clone(),
                session: fence.session.clone(),
            };
        }
    }
    let offset = usize::from(batch.fence.is_some());
    let described: Vec<String> = errors
        .iter()
        .map(|error| {
            let key = error
                .op_index
                .checked_sub(offset)
                .and_then(|position| batch.ops.get(position))
                .map(Op::key);
            match key {
                Some(key) => format!("op {} ({key:?}): {}", error.op_index, error.what),
                None => format!("op {}: {}", error.op_index, error.what),
            }
        })
        .collect();
    SinkError::Refused {
        status: 409,
        body: described.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fence;

    #[test]
    fn the_fence_is_the_first_operation() {
        let batch = Batch {
            ops: vec![
                Op::Put {
                    key: "a".into(),
                    value: b"1".to_vec(),
                    flags: 0,
                },
                Op::Delete { key: "b".into() },
            ],
            fence: Some(Fence {
                key: "global/.lock".into(),
                session: "s1".into(),
            }),
        };
        let body: serde_json::Value = serde_json::from_slice(&txn_body(&batch).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!([
                {"KV":{"Verb":"check-session","Key":"global/.lock","Session":"s1"}},
                {"KV":{"Verb":"set","Key":"a","Value":"MQ==","Flags":0}},
                {"KV":{"Verb":"delete","Key":"b"}},
            ])
        );
    }
}
