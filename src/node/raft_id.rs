//! A server's raft id: derived from its node ID (a UUID), kept in `<data_dir>/raft-id` once
//! chosen so that it survives restarts and changes of derivation.
//!
//! It is not the node name (gossip's identity) nor the address other servers reach it at; raft ids
//! are unique only within a datacenter, which is why connections between servers are keyed by
//! address.

#[cfg(feature = "rocksdb")]
use std::path::Path;

use tribune_consensus::NodeId;

use crate::config::Config;

/// A raft id for a server without a data directory: from its configured `node_id`, else random.
pub(super) fn random_node_id(config: &Config) -> NodeId {
    config
        .node_id
        .as_deref()
        .and_then(id_from_uuid)
        .unwrap_or_else(|| rand::random::<u64>() | 1)
}

/// A raft id that survives restarts. It is kept in `<data_dir>/raft-id` once chosen, so a change
/// of derivation never renames a server that already has raft state. A new server derives it from
/// its node ID: the configured `node_id`, else `<data_dir>/node-id`, written on first start. A data
/// directory whose raft state predates `raft-id` keeps the id it was given then (the UUID's first
/// eight bytes).
#[cfg(feature = "rocksdb")]
pub(super) fn persistent_raft_id(config: &Config, dir: &Path) -> std::io::Result<NodeId> {
    let invalid = |path: &Path, what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not {what}", path.display()),
        )
    };
    let raft_id_path = dir.join("raft-id");
    match std::fs::read_to_string(&raft_id_path) {
        Ok(text) => {
            return text
                .trim()
                .parse::<NodeId>()
                .ok()
                .filter(|id| *id != 0 && *id != NodeId::MAX)
                .ok_or_else(|| invalid(&raft_id_path, "a raft id"));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let node_id = match config.node_id.clone() {
        Some(id) => id,
        None => {
            let path = dir.join("node-id");
            match std::fs::read_to_string(&path) {
                Ok(text) => text.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let uuid = uuid::Uuid::new_v4().to_string();
                    std::fs::write(&path, &uuid)?;
                    uuid
                }
                Err(e) => return Err(e),
            }
        }
    };
    let uuid = uuid::Uuid::parse_str(&node_id).map_err(|_| invalid(&dir.join("node-id"), "a UUID"))?;
    let id = if dir.join("raft").exists() {
        legacy_raft_id(&uuid)
    } else {
        raft_id_from_node_id(&uuid)
    };
    std::fs::write(&raft_id_path, id.to_string())?;
    Ok(id)
}

/// The raft id of a node ID: a digest of all sixteen bytes, so two node IDs that share a prefix
/// (hand-written ones, or ones minted by a tool that fills the tail) still get different ids. It
/// is odd, hence never 0, and never `NodeId::MAX`, which the consensus crate reserves for a
/// stepping-down leader's pledge.
fn raft_id_from_node_id(uuid: &uuid::Uuid) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, uuid.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(digest.as_ref().get(..8).unwrap_or(&[0; 8]));
    usable_raft_id(u64::from_be_bytes(head))
}

/// Makes `raw` odd (never 0) and keeps it off `NodeId::MAX`, which consensus reserves.
fn usable_raft_id(raw: u64) -> NodeId {
    let id = raw | 1;
    if id == NodeId::MAX { NodeId::MAX - 2 } else { id }
}

/// How raft ids were derived before `raft-id` files existed: the UUID's first eight bytes.
#[cfg(feature = "rocksdb")]
fn legacy_raft_id(uuid: &uuid::Uuid) -> NodeId {
    let (high, _) = uuid.as_u64_pair();
    usable_raft_id(high)
}

fn id_from_uuid(text: &str) -> Option<NodeId> {
    uuid::Uuid::parse_str(text)
        .ok()
        .map(|uuid| raft_id_from_node_id(&uuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_uuids_are_stable_and_non_zero() {
        let uuid = "6f1d8a43-7c0e-4d8b-9a43-0b1f3c2d5e6f";
        assert_eq!(id_from_uuid(uuid), id_from_uuid(uuid));
        assert_eq!(id_from_uuid(uuid).map(|id| id & 1), Some(1));
        assert_eq!(id_from_uuid("not a uuid"), None);
    }

    #[test]
    fn node_ids_sharing_their_first_eight_bytes_get_different_raft_ids() {
        let a = id_from_uuid("6f1d8a43-7c0e-4d8b-0000-000000000001").unwrap();
        let b = id_from_uuid("6f1d8a43-7c0e-4d8b-0000-000000000002").unwrap();
        assert_ne!(a, b);
        assert_ne!(a, NodeId::MAX);
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_raft_id_once_chosen_is_kept_and_old_data_dirs_keep_theirs() {
        let config = Config::dev();
        let fresh = tempfile::tempdir().unwrap();
        let id = persistent_raft_id(&config, fresh.path()).unwrap();
        assert_eq!(persistent_raft_id(&config, fresh.path()).unwrap(), id);
        let node_id = std::fs::read_to_string(fresh.path().join("node-id")).unwrap();
        let uuid = uuid::Uuid::parse_str(node_id.trim()).unwrap();
        assert_eq!(id, raft_id_from_node_id(&uuid));

        // A data directory from before raft-id files: raft state exists, the id stays as it was.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("node-id"), node_id.trim()).unwrap();
        std::fs::create_dir(old.path().join("raft")).unwrap();
        assert_eq!(
            persistent_raft_id(&config, old.path()).unwrap(),
            legacy_raft_id(&uuid)
        );
        std::fs::write(fresh.path().join("raft-id"), "0").unwrap();
        assert!(persistent_raft_id(&config, fresh.path()).is_err());
    }
}
