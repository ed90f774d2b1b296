//! The LAN pool's encryption keys across restarts: Consul's `<data_dir>/serf/local.keyring`.
//!
//! The file is a JSON array of base64 keys, the primary first — Consul's format, so an operator
//! moving an agent over can carry the file along. When it exists it wins over `encrypt`: after a
//! rotation (`keyring -install/-use/-remove`) the configured key may be gone from the pool, and an
//! agent that restarted with it could no longer talk to anyone. When it does not exist, `encrypt`
//! seeds it. Every change to the keyring (made here or by another member's keyring operation) is
//! written back, replacing the file atomically.

use std::path::{Path, PathBuf};

use tribune_gossip::{Gossip, Keyring, decode_key};

use crate::config::Config;
use crate::error::NodeError;

/// Where `config`'s agent keeps its LAN keys; `None` without a data directory (`-dev`).
pub(crate) fn keyring_path(config: &Config) -> Option<PathBuf> {
    config
        .data_dir
        .as_ref()
        .map(|dir| dir.join("serf").join("local.keyring"))
}

fn error(path: &Path, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Gossip {
        reason: format!("keyring file {}: {reason}", path.display()),
    }
}

/// The keyring the LAN pool starts with: the file's when there is one, else `encrypt`'s (which
/// is then written to the file), else none.
pub(crate) fn initial_keyring(config: &Config) -> Result<Option<Keyring>, NodeError> {
    let path = keyring_path(config);
    if let Some(path) = &path
        && path.exists()
    {
        let ring = read(path)?;
        if let Some(key) = &config.encrypt {
            let configured = Keyring::new(key).map(|k| k.primary()).unwrap_or_default();
            if !ring.keys().contains(&configured) {
                tracing::warn!(
                    file = %path.display(),
                    "the configured encrypt key is not in the keyring file; the file's keys are used"
                );
            }
        }
        return Ok(Some(ring));
    }
    let Some(key) = &config.encrypt else {
        return Ok(None);
    };
    let ring = Keyring::new(key).map_err(|e| NodeError::Gossip {
        reason: format!("encrypt: {e}"),
    })?;
    if let Some(path) = &path {
        write(path, &ring.keys())?;
    }
    Ok(Some(ring))
}

fn read(path: &Path) -> Result<Keyring, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| error(path, e))?;
    let keys: Vec<String> =
        serde_json::from_str(&text).map_err(|e| error(path, format!("not a JSON array of keys: {e}")))?;
    let mut decoded = keys
        .iter()
        .enumerate()
        .map(|(i, key)| decode_key(key).map_err(|e| error(path, format!("key {}: {e}", i + 1))));
    let Some(primary) = decoded.next() else {
        return Err(error(path, "holds no key"));
    };
    let mut ring = Keyring::new(&primary?).map_err(|e| error(path, e))?;
    for key in decoded {
        ring.install(&key?).map_err(|e| error(path, e))?;
    }
    Ok(ring)
}

/// Replaces the file with `keys` (primary first): written beside it, synced, then renamed over
/// it, so a crash leaves the old keys or the new ones, never half a file. Readable by the owner
/// only: the keys are secrets.
fn write(path: &Path, keys: &[String]) -> Result<(), NodeError> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .ok_or_else(|| error(path, "has no parent directory"))?;
    std::fs::create_dir_all(dir).map_err(|e| error(path, e))?;
    let body = serde_json::to_vec(keys).map_err(|e| error(path, e))?;
    let staging = path.with_extension("keyring.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&staging).map_err(|e| error(&staging, e))?;
    file.write_all(&body).map_err(|e| error(&staging, e))?;
    file.sync_all().map_err(|e| error(&staging, e))?;
    std::fs::rename(&staging, path).map_err(|e| error(path, e))?;
    Ok(())
}

/// Writes the pool's current keys to the file (after [`tribune_gossip::Event::KeyringChanged`]).
/// A failure is logged: the pool keeps working, but a restart would come back with older keys.
pub(crate) async fn save(gossip: &Gossip, config: &Config) {
    let Some(path) = keyring_path(config) else {
        return;
    };
    let keys = match gossip.list_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(%e, "reading the keyring to save it");
            return;
        }
    };
    let written = tokio::task::spawn_blocking(move || write(&path, &keys)).await;
    match written {
        Ok(Ok(())) => tracing::info!("gossip keyring saved"),
        Ok(Err(e)) => tracing::error!(%e, "saving the gossip keyring"),
        Err(e) => tracing::error!(%e, "saving the gossip keyring"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config_in(dir: &Path, encrypt: Option<Vec<u8>>) -> Config {
        let mut config = Config::dev();
        config.data_dir = Some(dir.to_path_buf());
        config.encrypt = encrypt;
        config
    }

    #[test]
    fn encrypt_seeds_the_file_and_the_file_wins_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let first = vec![1u8; 32];
        let ring = initial_keyring(&config_in(dir.path(), Some(first.clone())))
            .unwrap()
            .unwrap();
        let path = keyring_path(&config_in(dir.path(), None)).unwrap();
        let on_disk: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk, ring.keys());

        // A rotation saved to the file survives a restart configured with the old key.
        let mut rotated = ring.clone();
        rotated.install(&[2u8; 16]).unwrap();
        rotated.use_key(&[2u8; 16]).unwrap();
        rotated.remove(&first).unwrap();
        write(&path, &rotated.keys()).unwrap();
        let restarted = initial_keyring(&config_in(dir.path(), Some(first)))
            .unwrap()
            .unwrap();
        assert_eq!(restarted.keys(), rotated.keys());
        // Without encrypt, the file alone turns encryption on.
        let again = initial_keyring(&config_in(dir.path(), None)).unwrap().unwrap();
        assert_eq!(again.keys(), rotated.keys());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn no_key_and_no_file_means_no_encryption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(initial_keyring(&config_in(dir.path(), None)).unwrap().is_none());
        assert!(initial_keyring(&Config::dev()).unwrap().is_none());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = keyring_path(&config_in(dir.path(), None)).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for (body, expected) in [
            ("not json", "not a JSON array"),
            ("[]", "holds no key"),
            ("[\"AAAA\"]", "key 1"),
            ("[\"AQEBAQEBAQEBAQEBAQEBAQ==\", \"!!\"]", "key 2"),
        ] {
            std::fs::write(&path, body).unwrap();
            let message = initial_keyring(&config_in(dir.path(), Some(vec![1; 16])))
                .unwrap_err()
                .to_string();
            assert!(message.contains("local.keyring"), "{message}");
            assert!(message.contains(expected), "{body}: {message}");
        }
    }
}
