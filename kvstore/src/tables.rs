//! Typed access to the byte tables: record encoding, key layout and the read queries shared by the
//! store's reads and by commands that read while applying (a transaction's `get-tree`, for instance).

use serde::Serialize;

use crate::backend::{ReadView, Table};
use crate::codec::{StoredRecord, encode_record};
use crate::error::{CorruptRecord, ReadError};
use crate::model::{AclBootstrapState, IndexedTable, KvEntry, Tombstone};

pub(crate) const META_APPLIED_INDEX: &[u8] = b"applied_index";
pub(crate) const META_DATACENTER: &[u8] = b"datacenter";
pub(crate) const META_RESTORE_ID: &[u8] = b"restore_id";
pub(crate) const STATE_ACL_BOOTSTRAP: &[u8] = b"acl_bootstrap";

pub(crate) fn table_index_key(table: IndexedTable) -> &'static [u8] {
    match table {
        IndexedTable::Kv => b"index/kv",
        IndexedTable::Sessions => b"index/sessions",
        IndexedTable::AclTokens => b"index/acl_tokens",
        IndexedTable::AclPolicies => b"index/acl_policies",
        IndexedTable::AclRoles => b"index/acl_roles",
        IndexedTable::AclAuthMethods => b"index/acl_auth_methods",
        IndexedTable::AclBindingRules => b"index/acl_binding_rules",
        IndexedTable::Nodes => b"index/nodes",
        IndexedTable::Services => b"index/services",
        IndexedTable::Checks => b"index/checks",
        IndexedTable::ServiceExtinction => b"index/service_extinction",
        IndexedTable::NodeExtinction => b"index/node_extinction",
    }
}

/// Every indexed table.
pub(crate) const INDEXED_TABLES: [IndexedTable; 12] = [
    IndexedTable::Kv,
    IndexedTable::Sessions,
    IndexedTable::AclTokens,
    IndexedTable::AclPolicies,
    IndexedTable::AclRoles,
    IndexedTable::AclAuthMethods,
    IndexedTable::AclBindingRules,
    IndexedTable::Nodes,
    IndexedTable::Services,
    IndexedTable::Checks,
    IndexedTable::ServiceExtinction,
    IndexedTable::NodeExtinction,
];

/// The indexed tables a blocking query on the ACL scope follows.
pub(crate) const ACL_INDEXED_TABLES: [IndexedTable; 5] = [
    IndexedTable::AclTokens,
    IndexedTable::AclPolicies,
    IndexedTable::AclRoles,
    IndexedTable::AclAuthMethods,
    IndexedTable::AclBindingRules,
];

pub(crate) fn table_from_index_key(key: &[u8]) -> Option<IndexedTable> {
    INDEXED_TABLES.into_iter().find(|t| table_index_key(*t) == key)
}

/// `session NUL key`: the derived row that says a session holds a key.
pub(crate) fn session_lock_key(session: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(session.len() + 1 + key.len());
    out.extend_from_slice(session.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn session_lock_prefix(session: &str) -> Vec<u8> {
    session_lock_key(session, "")
}

pub(crate) fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

fn corrupt(table: Table, key: &[u8], reason: String) -> ReadError {
    ReadError::Corrupt(CorruptRecord {
        table,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    })
}

pub(crate) fn decode_u64(table: Table, key: &[u8], bytes: &[u8]) -> Result<u64, ReadError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(table, key, format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_record(value)
}

pub(crate) fn decode<T: StoredRecord>(table: Table, key: &[u8], bytes: &[u8]) -> Result<T, ReadError> {
    T::decode_stored(bytes).map_err(|reason| corrupt(table, key, reason))
}

pub(crate) fn get<T: StoredRecord, V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    key: &[u8],
) -> Result<Option<T>, ReadError> {
    match view.get(table, key)? {
        Some(bytes) => Ok(Some(decode(table, key, &bytes)?)),
        None => Ok(None),
    }
}

pub(crate) fn get_u64<V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    key: &[u8],
) -> Result<Option<u64>, ReadError> {
    match view.get(table, key)? {
        Some(bytes) => Ok(Some(decode_u64(table, key, &bytes)?)),
        None => Ok(None),
    }
}

pub(crate) fn get_string<V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    key: &[u8],
) -> Result<Option<String>, ReadError> {
    match view.get(table, key)? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| corrupt(table, key, format!("not UTF-8: {e}"))),
        None => Ok(None),
    }
}

/// Decodes every record under a prefix, stopping early when `visit` returns false.
pub(crate) fn scan<T: StoredRecord, V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    prefix: &[u8],
    mut visit: impl FnMut(T) -> bool,
) -> Result<(), ReadError> {
    let mut failure = None;
    view.scan_prefix(table, prefix, &mut |key, bytes| match decode(table, key, bytes) {
        Ok(value) => visit(value),
        Err(err) => {
            failure = Some(err);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

pub(crate) fn collect<T: StoredRecord, V: ReadView + ?Sized>(
    view: &V,
    table: Table,
    prefix: &[u8],
) -> Result<Vec<T>, ReadError> {
    let mut out = Vec::new();
    scan(view, table, prefix, |value| {
        out.push(value);
        true
    })?;
    Ok(out)
}

/// The raw per-table index (0 when the table never changed).
pub(crate) fn table_index<V: ReadView + ?Sized>(view: &V, table: IndexedTable) -> Result<u64, ReadError> {
    Ok(get_u64(view, Table::State, table_index_key(table))?.unwrap_or(0))
}

pub(crate) fn acl_bootstrap<V: ReadView + ?Sized>(view: &V) -> Result<AclBootstrapState, ReadError> {
    Ok(get(view, Table::State, STATE_ACL_BOOTSTRAP)?.unwrap_or_default())
}

pub(crate) fn kv_get<V: ReadView + ?Sized>(view: &V, key: &str) -> Result<Option<KvEntry>, ReadError> {
    get(view, Table::Kv, key.as_bytes())
}

/// Entries under a prefix and the highest ModifyIndex among them.
pub(crate) fn kv_list<V: ReadView + ?Sized>(
    view: &V,
    prefix: &str,
) -> Result<(u64, Vec<KvEntry>), ReadError> {
    let mut max = 0;
    let mut entries = Vec::new();
    scan(view, Table::Kv, prefix.as_bytes(), |entry: KvEntry| {
        max = max.max(entry.modify_index);
        entries.push(entry);
        true
    })?;
    Ok((max, entries))
}

/// The highest delete index among tombstones under a prefix.
pub(crate) fn tombstone_max<V: ReadView + ?Sized>(view: &V, prefix: &str) -> Result<u64, ReadError> {
    let mut max = 0;
    scan(view, Table::Tombstones, prefix.as_bytes(), |stone: Tombstone| {
        max = max.max(stone.index);
        true
    })?;
    Ok(max)
}

/// Consul's index for a recursive read: the highest index of entries and tombstones under the
/// prefix; the whole KV table's index when the prefix is empty or holds nothing. `entries_max` is the
/// entries' part, already computed by the caller.
pub(crate) fn prefix_read_index<V: ReadView + ?Sized>(
    view: &V,
    prefix: &str,
    entries_max: u64,
) -> Result<u64, ReadError> {
    let stones_max = if prefix.is_empty() {
        0
    } else {
        tombstone_max(view, prefix)?
    };
    prefix_index_of(view, prefix, entries_max, stones_max)
}

/// [`prefix_read_index`] when the caller already has both maxima (entries and tombstones under
/// the prefix).
pub(crate) fn prefix_index_of<V: ReadView + ?Sized>(
    view: &V,
    prefix: &str,
    entries_max: u64,
    stones_max: u64,
) -> Result<u64, ReadError> {
    let mut index = if prefix.is_empty() {
        0
    } else {
        entries_max.max(stones_max)
    };
    if index == 0 {
        index = table_index(view, IndexedTable::Kv)?;
    }
    Ok(index.max(1))
}
