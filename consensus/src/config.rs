//! Server configuration: identity, cluster formation and the Raft timing that follows from them.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::ConsensusError;
use crate::types::NodeId;

/// How one consensus server runs.
///
/// Start from [`ConsensusConfig::lan`] and override what differs; [`ConsensusConfig::validate`]
/// checks the combination before anything starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsensusConfig {
    /// This server's Raft id. Unique in the datacenter and stable across restarts.
    pub id: NodeId,
    /// This server's node name (reported in the membership; informational).
    pub name: String,
    /// The datacenter this server belongs to, carried in forwarded requests.
    pub datacenter: String,
    /// Form a new cluster once this many servers are discovered (Consul's `bootstrap_expect`);
    /// 0 disables automatic bootstrap.
    pub bootstrap_expect: usize,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomised election timeout; the upper bound is 1.5 times this.
    /// openraft also uses the upper bound as the leader lease: a follower refuses to vote for a
    /// new leader until that long after it last heard from the current one.
    pub election_timeout: Duration,
    /// Most log entries in one replication request. With `max_batch_bytes` it bounds a request's
    /// size: their product must stay within 64 MiB.
    pub max_payload_entries: u64,
    /// Most commands the leader packs into one log entry.
    pub max_batch_commands: usize,
    /// Most command bytes in one log entry; a single larger command travels alone.
    pub max_batch_bytes: usize,
    /// Proposals (log entries of batched commands) the leader keeps in flight at once. Commands
    /// that arrive while all are in flight wait and join the next proposal, which is what makes
    /// batches grow with load.
    pub max_proposals_in_flight: usize,
    /// Writes that may wait for a proposal slot on the leader; beyond them writes are refused
    /// with [`ConsensusError::Overloaded`] (HTTP 429), so a burst cannot grow memory without bound.
    pub max_queued_writes: usize,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_after_logs: u64,
    /// Log entries kept behind the last snapshot, so a briefly lagging follower catches up from
    /// the log rather than with a snapshot.
    pub logs_kept_after_snapshot: u64,
    /// Largest snapshot chunk sent in one request.
    pub snapshot_chunk_bytes: u64,
    /// Deadline for a forwarded write or application request.
    pub request_timeout: Duration,
    /// The address other servers reach this one's RPC port at, when it differs from the bound
    /// one (a server bound to `0.0.0.0`); the port is always the bound port.
    pub advertise_ip: Option<IpAddr>,
}

/// The largest replication request the batching settings may produce: half of the transport's
/// frame limit, leaving room for a command larger than `max_batch_bytes` travelling alone.
const MAX_REPLICATION_REQUEST_BYTES: u128 = (crate::wire::MAX_FRAME_BYTES / 2) as u128;

impl ConsensusConfig {
    /// Settings for servers on one LAN: 50 ms heartbeats, 250–375 ms election timeout.
    ///
    /// Why these numbers: loopback or LAN round trips are well under a millisecond, so a 50 ms
    /// heartbeat gives followers six chances to hear from the leader before the shortest
    /// election timeout. Because the upper bound doubles as the leader lease, a failover takes
    /// the lease (375 ms) plus at most one more election round (250–375 ms), so well under a
    /// second, where Consul's defaults (1 s heartbeat timeout) take several seconds. A narrow
    /// 1.5x spread still separates candidates enough that split votes are rare with 3–5 servers.
    pub fn lan(id: NodeId, name: impl Into<String>) -> Self {
        ConsensusConfig {
            id,
            name: name.into(),
            datacenter: "dc1".into(),
            bootstrap_expect: 0,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(250),
            max_payload_entries: 64,
            max_batch_commands: 1024,
            max_batch_bytes: 1024 * 1024,
            max_proposals_in_flight: 2,
            max_queued_writes: 16 * 1024,
            snapshot_after_logs: 100_000,
            logs_kept_after_snapshot: 10_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            advertise_ip: None,
        }
    }

    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConsensusError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConsensusError::Config {
                field: "heartbeat_interval",
                reason: "must be > 0".into(),
            });
        }
        if self.election_timeout <= self.heartbeat_interval * 2 {
            return Err(ConsensusError::Config {
                field: "election_timeout",
                reason: format!(
                    "{:?} must exceed twice the heartbeat interval {:?}",
                    self.election_timeout, self.heartbeat_interval
                ),
            });
        }
        if self.max_payload_entries == 0 {
            return Err(ConsensusError::Config {
                field: "max_payload_entries",
                reason: "must be > 0".into(),
            });
        }
        for (field, value) in [
            ("max_batch_commands", self.max_batch_commands),
            ("max_batch_bytes", self.max_batch_bytes),
            ("max_proposals_in_flight", self.max_proposals_in_flight),
            ("max_queued_writes", self.max_queued_writes),
        ] {
            if value == 0 {
                return Err(ConsensusError::Config {
                    field,
                    reason: "must be > 0".into(),
                });
            }
        }
        let request_bytes = u128::from(self.max_payload_entries) * self.max_batch_bytes as u128;
        if request_bytes > MAX_REPLICATION_REQUEST_BYTES {
            return Err(ConsensusError::Config {
                field: "max_batch_bytes",
                reason: format!(
                    "max_payload_entries ({}) x max_batch_bytes ({}) exceeds {MAX_REPLICATION_REQUEST_BYTES} bytes",
                    self.max_payload_entries, self.max_batch_bytes
                ),
            });
        }
        if self.snapshot_after_logs == 0 {
            return Err(ConsensusError::Config {
                field: "snapshot_after_logs",
                reason: "must be > 0".into(),
            });
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > 64 * 1024 * 1024 {
            return Err(ConsensusError::Config {
                field: "snapshot_chunk_bytes",
                reason: "must be between 1 byte and 64 MiB".into(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ConsensusError::Config {
                field: "request_timeout",
                reason: "must be > 0".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConsensusError> {
        let millis = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        let election = millis(self.election_timeout);
        let config = openraft::Config {
            cluster_name: self.datacenter.clone(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: election,
            election_timeout_max: election + election / 2,
            install_snapshot_timeout: millis(self.request_timeout).max(election),
            max_payload_entries: self.max_payload_entries,
            // A learner within this many entries of the leader counts as caught up for promotion.
            replication_lag_threshold: 1000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_logs),
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            // Purge in batches no larger than the snapshot interval, so a small interval still purges.
            purge_batch_size: self.snapshot_after_logs.clamp(1, 1024),
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| ConsensusError::Config {
            field: "raft",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_preset_is_valid_and_bad_fields_are_named() {
        let c = ConsensusConfig::lan(1, "a");
        c.validate().unwrap();
        c.raft_config().unwrap();
        let mut bad = c.clone();
        bad.election_timeout = bad.heartbeat_interval;
        assert!(matches!(
            bad.validate(),
            Err(ConsensusError::Config {
                field: "election_timeout",
                ..
            })
        ));
        let mut bad = c.clone();
        bad.max_proposals_in_flight = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConsensusError::Config {
                field: "max_proposals_in_flight",
                ..
            })
        ));
        let mut bad = c;
        bad.snapshot_chunk_bytes = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConsensusError::Config {
                field: "snapshot_chunk_bytes",
                ..
            })
        ));
    }
}
