//! Walking the state as a stream of [`StateRecord`]s (for snapshots, staged restores and tests).

use crate::backend::{ReadView, Table};
use crate::error::ReadError;
use crate::model::{AclBootstrapState, AclPolicy, AclToken, KvEntry, Session, StateRecord, Tombstone};
use crate::tables;

/// Calls `emit` with every record of the view's live state, table by table, in key order:
/// table indexes and ACL bootstrap state, sessions, policies, tokens, KV entries, tombstones.
/// Stops at the first error `emit` returns.
pub(crate) fn for_each_record<V, E>(
    view: &V,
    mut emit: impl FnMut(StateRecord) -> Result<(), E>,
) -> Result<(), E>
where
    V: ReadView + ?Sized,
    E: From<ReadError>,
{
    let mut state_rows = Vec::new();
    view.scan_prefix(Table::State, b"", &mut |key, value| {
        state_rows.push((key.to_vec(), value.to_vec()));
        true
    })
    .map_err(ReadError::from)?;
    for (key, value) in state_rows {
        if let Some(table) = tables::table_from_index_key(&key) {
            emit(StateRecord::TableIndex {
                table,
                index: tables::decode_u64(Table::State, &key, &value)?,
            })?;
        } else if key == tables::STATE_ACL_BOOTSTRAP {
            emit(StateRecord::AclBootstrap(tables::decode::<AclBootstrapState>(
                Table::State,
                &key,
                &value,
            )?))?;
        }
    }
    emit_table::<Session, _, _>(view, Table::Sessions, StateRecord::Session, &mut emit)?;
    emit_table::<AclPolicy, _, _>(view, Table::AclPolicies, StateRecord::AclPolicy, &mut emit)?;
    emit_table::<AclToken, _, _>(view, Table::AclTokens, StateRecord::AclToken, &mut emit)?;
    emit_table::<KvEntry, _, _>(view, Table::Kv, StateRecord::Kv, &mut emit)?;
    emit_table::<Tombstone, _, _>(view, Table::Tombstones, StateRecord::Tombstone, &mut emit)
}

fn emit_table<T, V, E>(
    view: &V,
    table: Table,
    wrap: fn(T) -> StateRecord,
    emit: &mut impl FnMut(StateRecord) -> Result<(), E>,
) -> Result<(), E>
where
    T: serde::de::DeserializeOwned,
    V: ReadView + ?Sized,
    E: From<ReadError>,
{
    let mut failure = None;
    tables::scan(view, table, b"", |value: T| match emit(wrap(value)) {
        Ok(()) => true,
        Err(err) => {
            failure = Some(err);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

pub(crate) fn collect_records<V: ReadView + ?Sized>(view: &V) -> Result<Vec<StateRecord>, ReadError> {
    let mut out = Vec::new();
    for_each_record(view, |record| {
        out.push(record);
        Ok::<(), ReadError>(())
    })?;
    Ok(out)
}
