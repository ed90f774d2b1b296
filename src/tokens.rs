//! The agent's own ACL tokens (`default`, `agent`, `agent_recovery`, `replication`,
//! `config_file_service_registration`, `dns`): what
//! `acl.tokens` configured, replaced at run time through `PUT /v1/agent/token/<name>`, and — with
//! `acl.enable_token_persistence` and a data directory — kept in `<data_dir>/acl-tokens.json`, which
//! then wins over the configuration at the next start, as Consul's agent does.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The file persisted tokens live in, under the data directory.
const PERSISTED_TOKENS_FILE: &str = "acl-tokens.json";

/// Which of the agent's tokens a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Used for requests that carry no token.
    Default,
    /// The agent's own token for its internal operations.
    Agent,
    /// Grants agent access on this agent when the servers cannot resolve tokens.
    AgentRecovery,
    /// Used by a secondary datacenter to replicate ACLs.
    Replication,
    /// Registers the services of configuration files (stored; there is no service catalog yet).
    ConfigFileServiceRegistration,
    /// Serves DNS queries (stored; there is no DNS interface yet).
    Dns,
}

impl TokenKind {
    /// The kind named in `/v1/agent/token/<name>`, including Consul's legacy names.
    pub(crate) fn from_path(name: &str) -> Option<Self> {
        Some(match name {
            "default" | "acl_token" => TokenKind::Default,
            "agent" | "acl_agent_token" => TokenKind::Agent,
            "agent_recovery" | "agent_master" | "acl_agent_master_token" => TokenKind::AgentRecovery,
            "replication" | "acl_replication_token" => TokenKind::Replication,
            "config_file_service_registration" => TokenKind::ConfigFileServiceRegistration,
            "dns" => TokenKind::Dns,
            _ => return None,
        })
    }
}

/// The tokens, as Consul's `acl-tokens.json` stores them (empty ones are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TokenValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_recovery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replication: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_file_service_registration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns: Option<String>,
}

impl TokenValues {
    fn slot(&mut self, kind: TokenKind) -> &mut Option<String> {
        match kind {
            TokenKind::Default => &mut self.default,
            TokenKind::Agent => &mut self.agent,
            TokenKind::AgentRecovery => &mut self.agent_recovery,
            TokenKind::Replication => &mut self.replication,
            TokenKind::ConfigFileServiceRegistration => &mut self.config_file_service_registration,
            TokenKind::Dns => &mut self.dns,
        }
    }

    /// Each token `newer` holds replaces this one's.
    fn overlay(&mut self, newer: TokenValues) {
        let TokenValues {
            default,
            agent,
            agent_recovery,
            replication,
            config_file_service_registration,
            dns,
        } = newer;
        for (kind, value) in [
            (TokenKind::Default, default),
            (TokenKind::Agent, agent),
            (TokenKind::AgentRecovery, agent_recovery),
            (TokenKind::Replication, replication),
            (
                TokenKind::ConfigFileServiceRegistration,
                config_file_service_registration,
            ),
            (TokenKind::Dns, dns),
        ] {
            if value.is_some() {
                *self.slot(kind) = value;
            }
        }
    }
}

/// The persisted tokens file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not the JSON object of tokens the agent writes.
    #[error("{path}: not a tokens file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What the JSON parser said.
        reason: String,
    },
}

/// The agent's tokens, shared by every request.
#[derive(Debug)]
pub(crate) struct AgentTokens {
    values: RwLock<TokenValues>,
    /// Where updates are persisted, when `acl.enable_token_persistence` is on and there is a data dir.
    persist_to: Option<PathBuf>,
}

impl TokenFileError {
    /// The file concerned.
    pub(crate) fn path(&self) -> &Path {
        match self {
            TokenFileError::Io { path, .. } | TokenFileError::Malformed { path, .. } => path,
        }
    }
}

impl AgentTokens {
    /// The configured tokens, overlaid with the persisted ones when persistence is on.
    pub(crate) fn load(config: &Config) -> Result<Self, TokenFileError> {
        let tokens = &config.acl.tokens;
        let mut values = TokenValues {
            default: tokens.default.clone(),
            agent: tokens.agent.clone(),
            replication: tokens.replication.clone(),
            ..TokenValues::default()
        };
        let persist_to = match (&config.data_dir, config.acl.enable_token_persistence) {
            (Some(dir), true) => Some(dir.join(PERSISTED_TOKENS_FILE)),
            _ => None,
        };
        if let Some(path) = &persist_to
            && let Some(persisted) = read_persisted(path)?
        {
            values.overlay(persisted);
        }
        Ok(AgentTokens {
            values: RwLock::new(values),
            persist_to,
        })
    }

    /// The token for requests that carry none.
    pub(crate) fn default_token(&self) -> Option<String> {
        self.get(TokenKind::Default)
    }

    /// One of the tokens; an empty one counts as none.
    pub(crate) fn get(&self, kind: TokenKind) -> Option<String> {
        self.values
            .read()
            .clone()
            .slot(kind)
            .clone()
            .filter(|s| !s.is_empty())
    }

    /// Replaces a token and persists the set when configured to. An empty secret clears it; it is
    /// persisted as `""`, so that a cleared token stays cleared over the configured one. The file is
    /// written before the change is visible, so a failed write changes nothing.
    pub(crate) fn set(&self, kind: TokenKind, secret: &str) -> Result<(), TokenFileError> {
        let mut values = self.values.write();
        let mut updated = values.clone();
        *updated.slot(kind) = Some(secret.to_owned());
        if let Some(path) = &self.persist_to {
            write_persisted(path, &updated)?;
        }
        *values = updated;
        Ok(())
    }
}

fn read_persisted(path: &Path) -> Result<Option<TokenValues>, TokenFileError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| TokenFileError::Malformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes the tokens next to their final name, syncs, then renames: a crash leaves the old file or
/// the new one, never half of one. The file holds secrets: owner-only permissions on Unix.
fn write_persisted(path: &Path, values: &TokenValues) -> Result<(), TokenFileError> {
    let io = |source| TokenFileError::Io {
        path: path.to_owned(),
        source,
    };
    let body = serde_json::to_vec(values).map_err(|e| io(std::io::Error::other(e)))?;
    let temporary = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(io)?;
    file.write_all(&body).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_include_consul_s_legacy_ones() {
        assert_eq!(TokenKind::from_path("default"), Some(TokenKind::Default));
        assert_eq!(TokenKind::from_path("acl_token"), Some(TokenKind::Default));
        assert_eq!(
            TokenKind::from_path("agent_master"),
            Some(TokenKind::AgentRecovery)
        );
        assert_eq!(TokenKind::from_path("dns"), Some(TokenKind::Dns));
        assert_eq!(TokenKind::from_path("nonsense"), None);
    }

    #[test]
    fn persisted_tokens_win_over_the_configuration_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::dev();
        config.data_dir = Some(dir.path().to_owned());
        config.acl.tokens.default = Some("from-config".into());
        config.acl.tokens.agent = Some("agent-from-config".into());

        // Without persistence nothing is written.
        let tokens = AgentTokens::load(&config).unwrap();
        tokens.set(TokenKind::Default, "runtime").unwrap();
        assert_eq!(tokens.default_token().as_deref(), Some("runtime"));
        assert!(!dir.path().join(PERSISTED_TOKENS_FILE).exists());

        config.acl.enable_token_persistence = true;
        let tokens = AgentTokens::load(&config).unwrap();
        assert_eq!(tokens.default_token().as_deref(), Some("from-config"));
        tokens.set(TokenKind::Default, "persisted").unwrap();
        tokens.set(TokenKind::Replication, "repl").unwrap();
        let again = AgentTokens::load(&config).unwrap();
        assert_eq!(again.default_token().as_deref(), Some("persisted"));
        assert_eq!(again.get(TokenKind::Replication).as_deref(), Some("repl"));
        assert_eq!(again.get(TokenKind::Agent).as_deref(), Some("agent-from-config"));
        // An empty secret clears the token.
        again.set(TokenKind::Default, "").unwrap();
        assert_eq!(AgentTokens::load(&config).unwrap().default_token(), None);

        std::fs::write(dir.path().join(PERSISTED_TOKENS_FILE), b"[1, 2]").unwrap();
        assert!(matches!(
            AgentTokens::load(&config),
            Err(TokenFileError::Malformed { .. })
        ));
    }
}
