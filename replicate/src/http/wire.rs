//! The JSON shapes of Consul's HTTP API that the source, sink and lock read and write, and their
//! conversion to and from the crate's model. Only the fields used are declared; others are ignored.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::model::{DeletedKey, Entry, Fence, Op};

/// A KV entry as Consul answers it (`DirEntry`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DirEntry {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: Option<String>,
    #[serde(default)]
    pub(crate) flags: u64,
    #[serde(default)]
    pub(crate) create_index: u64,
    #[serde(default)]
    pub(crate) modify_index: u64,
    #[serde(default)]
    pub(crate) lock_index: u64,
    #[serde(default)]
    pub(crate) session: Option<String>,
}

impl DirEntry {
    /// The entry with its value decoded; `null` is an empty value.
    pub(crate) fn into_entry(self) -> Result<Entry, String> {
        let value = match self.value {
            None => Vec::new(),
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|error| format!("key {:?}: value is not base64: {error}", self.key))?,
        };
        Ok(Entry {
            key: self.key,
            value,
            flags: self.flags,
            create_index: self.create_index,
            modify_index: self.modify_index,
            lock_index: self.lock_index,
            session: self.session.filter(|session| !session.is_empty()),
        })
    }
}

/// Decodes a recursive read's entries, sorted by key.
pub(crate) fn entries(dir_entries: Vec<DirEntry>) -> Result<Vec<Entry>, String> {
    let mut entries = dir_entries
        .into_iter()
        .map(DirEntry::into_entry)
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

/// A Tribune delta answer (`?changes-since=`, with `X-Tribune-Changes-Since` set).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeltaBody {
    #[serde(default)]
    pub(crate) changed: Option<Vec<DirEntry>>,
    #[serde(default)]
    pub(crate) deleted: Option<Vec<Tombstone>>,
}

/// A deleted key in a [`DeltaBody`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tombstone {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) modify_index: u64,
}

impl From<Tombstone> for DeletedKey {
    fn from(tombstone: Tombstone) -> Self {
        DeletedKey {
            key: tombstone.key,
            modify_index: tombstone.modify_index,
        }
    }
}

/// One operation of a `/v1/txn` request.
#[derive(Debug, Serialize)]
pub(crate) struct TxnOp {
    #[serde(rename = "KV")]
    pub(crate) kv: TxnKv,
}

/// The KV part of a [`TxnOp`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnKv {
    pub(crate) verb: &'static str,
    pub(crate) key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
}

impl TxnOp {
    /// The `check-session` that fences a batch.
    pub(crate) fn fence(fence: &Fence) -> Self {
        TxnOp {
            kv: TxnKv {
                verb: "check-session",
                key: fence.key.clone(),
                value: None,
                flags: None,
                session: Some(fence.session.clone()),
            },
        }
    }

    /// A `set` or a `delete`.
    pub(crate) fn from_op(op: &Op) -> Self {
        let kv = match op {
            Op::Put { key, value, flags } => TxnKv {
                verb: "set",
                key: key.clone(),
                value: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                flags: Some(*flags),
                session: None,
            },
            Op::Delete { key } => TxnKv {
                verb: "delete",
                key: key.clone(),
                value: None,
                flags: None,
                session: None,
            },
        };
        TxnOp { kv }
    }
}

/// A `/v1/txn` answer: only its errors matter (a committed batch needs nothing from its results).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub(crate) errors: Option<Vec<TxnError>>,
}

/// Why one operation of a rolled-back transaction failed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    #[serde(default)]
    pub(crate) op_index: usize,
    #[serde(default)]
    pub(crate) what: String,
}

/// `GET /v1/agent/self`, the part used.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AgentSelf {
    pub(crate) config: AgentConfig,
}

/// The agent's `Config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AgentConfig {
    pub(crate) datacenter: String,
}

/// `PUT /v1/session/create`'s body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionCreate {
    pub(crate) name: String,
    #[serde(rename = "TTL")]
    pub(crate) ttl: String,
    pub(crate) behavior: &'static str,
    pub(crate) lock_delay: String,
}

/// `PUT /v1/session/create`'s answer.
#[derive(Debug, Deserialize)]
pub(crate) struct SessionCreated {
    #[serde(rename = "ID")]
    pub(crate) id: String,
}

/// One session of `PUT /v1/session/renew/<id>`'s answer, the part used.
#[derive(Debug, Deserialize)]
pub(crate) struct RenewedSession {
    #[serde(rename = "TTL", default)]
    pub(crate) ttl: Option<String>,
}

/// The value the lock key holds: who holds it, for a person reading the key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct LockHolder<'a> {
    pub(crate) holder: &'a str,
    pub(crate) session: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_base64_and_null_values() {
        let json = r#"[
            {"Key":"b","Value":null,"Flags":0,"CreateIndex":3,"ModifyIndex":4,"LockIndex":0},
            {"Key":"a","Value":"aGk=","Flags":7,"CreateIndex":1,"ModifyIndex":2,"LockIndex":1,"Session":"s1"}
        ]"#;
        let parsed: Vec<DirEntry> = serde_json::from_str(json).unwrap();
        let entries = entries(parsed).unwrap();
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].value, b"hi");
        assert_eq!(entries[0].session.as_deref(), Some("s1"));
        assert_eq!(entries[1].value, b"");
        assert_eq!(entries[1].session, None);
        let bad: Vec<DirEntry> = serde_json::from_str(r#"[{"Key":"k","Value":"!!"}]"#).unwrap();
        assert!(super::entries(bad).unwrap_err().contains("\"k\""));
    }

    #[test]
    fn txn_ops_have_consuls_shape() {
        let put = serde_json::to_value(TxnOp::from_op(&Op::Put {
            key: "k".into(),
            value: b"v".to_vec(),
            flags: 3,
        }))
        .unwrap();
        assert_eq!(
            put,
            serde_json::json!({"KV":{"Verb":"set","Key":"k","Value":"dg==","Flags":3}})
        );
        let delete = serde_json::to_value(TxnOp::from_op(&Op::Delete { key: "k".into() })).unwrap();
        assert_eq!(delete, serde_json::json!({"KV":{"Verb":"delete","Key":"k"}}));
    }
}
