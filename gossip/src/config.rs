//! Pool configuration: memberlist's LAN and WAN presets and validation.

use std::time::Duration;

/// Tuning of one gossip pool. Start from [`Config::lan`] or [`Config::wan`], adjust, then
/// [`Config::validate`] (the pool constructors validate too).
///
/// Field names and defaults follow HashiCorp memberlist (`DefaultLANConfig` / `DefaultWANConfig`) so
/// that operators' tuning intuition carries over.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Time between failure probes of one member, before Lifeguard scaling (LAN 1 s, WAN 5 s).
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking other members to probe indirectly
    /// (LAN 500 ms, WAN 3 s). Must be shorter than `probe_interval`.
    pub probe_timeout: Duration,
    /// Number of members asked to probe a silent member indirectly (3).
    pub indirect_checks: usize,
    /// A broadcast is sent `retransmit_mult × ceil(log10(N+1))` times (4).
    pub retransmit_mult: u32,
    /// Suspicion timeout multiplier: the minimum timeout is
    /// `suspicion_mult × max(1, log10(N)) × probe_interval` (LAN 4, WAN 6).
    pub suspicion_mult: u32,
    /// The maximum suspicion timeout is this multiple of the minimum (6).
    pub suspicion_max_timeout_mult: u32,
    /// Period of the full state exchange with one random member, scaled up for pools above 32
    /// members (LAN 30 s, WAN 60 s). Zero disables periodic exchanges (joins still exchange state).
    pub push_pull_interval: Duration,
    /// Period of the gossip round that sends queued broadcasts (LAN 200 ms, WAN 500 ms).
    pub gossip_interval: Duration,
    /// Members gossiped to per round (LAN 3, WAN 4).
    pub gossip_nodes: usize,
    /// How long failed or departed members still receive gossip, so they learn they were declared
    /// dead and can refute (LAN 30 s, WAN 60 s).
    pub gossip_to_the_dead_time: Duration,
    /// Period of attempts to reach one random failed member with a push-pull, so that pools split
    /// by a partition longer than `gossip_to_the_dead_time` merge again once it heals (Serf's
    /// `ReconnectInterval`, 30 s). Zero disables it.
    pub reconnect_interval: Duration,
    /// How long failed or departed members are remembered (so that a return is reported as a rejoin)
    /// before they are forgotten (24 h, like Serf's reconnect and tombstone timeouts).
    pub dead_member_retention: Duration,
    /// Cap of the Lifeguard local health multiplier (8): probe intervals stretch up to this factor.
    pub awareness_max_multiplier: u32,
    /// Alongside indirect probes, also probe the silent member over a stream (TCP in the runtime),
    /// as memberlist does unless `DisableTcpPings`: a member reachable over a reliable stream is not
    /// suspected merely because UDP packets were lost. On by default.
    pub tcp_fallback_probe: bool,
    /// Lifeguard on (the default): local health awareness, nacks from indirect probers and suspicion
    /// timeouts that shrink with independent confirmations. Off gives plain SWIM with suspicion, which
    /// exists to measure what Lifeguard buys.
    pub lifeguard: bool,
    /// Largest UDP payload sent, encryption overhead included (1400).
    pub packet_size: usize,
    /// Largest push-pull state accepted over a stream (20 MiB, memberlist's `maxPushStateBytes`).
    pub max_stream_size: usize,
    /// Timeout of one stream exchange in the runtime (LAN 10 s, WAN 30 s).
    pub tcp_timeout: Duration,
    /// Largest encoded tag set of a member (512 bytes, Serf's meta limit).
    pub max_tags_size: usize,
    /// Largest user event, name plus payload (512 bytes, Serf's `UserEventSizeLimit`).
    pub user_event_size_limit: usize,
    /// User events remembered for deduplication, by Lamport time slot (512, Serf's `EventBuffer`).
    pub user_event_buffer: usize,
    /// How long a graceful leave keeps gossiping before the runtime shuts down (1 s, Serf's
    /// `LeavePropagateDelay`).
    pub leave_propagate_delay: Duration,
    /// Vivaldi network coordinates (Serf's, on by default in both presets): acks carry the
    /// acker's coordinate and direct probes' RTTs refine ours. Off, acks carry none (what a
    /// member built before coordinates can decode) and none are computed.
    pub coordinates: bool,
}

impl Config {
    /// memberlist's `DefaultLANConfig`: a datacenter's pool of agents.
    pub fn lan() -> Self {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead_time: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(30),
            dead_member_retention: Duration::from_secs(24 * 3600),
            awareness_max_multiplier: 8,
            lifeguard: true,
            tcp_fallback_probe: true,
            packet_size: 1400,
            max_stream_size: 20 * 1024 * 1024,
            tcp_timeout: Duration::from_secs(10),
            max_tags_size: 512,
            user_event_size_limit: 512,
            user_event_buffer: 512,
            leave_propagate_delay: Duration::from_secs(1),
            coordinates: true,
        }
    }

    /// memberlist's `DefaultWANConfig`: the pool of servers of all datacenters.
    pub fn wan() -> Self {
        Config {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            gossip_to_the_dead_time: Duration::from_secs(60),
            tcp_timeout: Duration::from_secs(30),
            ..Config::lan()
        }
    }

    /// memberlist's `DefaultLocalConfig`, made faster still for tests on one host: 100 ms probes,
    /// 50 ms probe timeout, 20 ms gossip, suspicion multiplier 3.
    pub fn local() -> Self {
        Config {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(2),
            gossip_interval: Duration::from_millis(20),
            gossip_to_the_dead_time: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(1),
            tcp_timeout: Duration::from_secs(1),
            leave_propagate_delay: Duration::from_millis(200),
            ..Config::lan()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let durations = [
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("gossip_interval", self.gossip_interval),
            ("tcp_timeout", self.tcp_timeout),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(ConfigError::ProbeTimeoutTooLong {
                probe_timeout: self.probe_timeout,
                probe_interval: self.probe_interval,
            });
        }
        let counts = [
            ("gossip_nodes", self.gossip_nodes),
            ("retransmit_mult", self.retransmit_mult as usize),
            ("suspicion_mult", self.suspicion_mult as usize),
            (
                "suspicion_max_timeout_mult",
                self.suspicion_max_timeout_mult as usize,
            ),
            ("awareness_max_multiplier", self.awareness_max_multiplier as usize),
            ("user_event_buffer", self.user_event_buffer),
        ];
        for (field, value) in counts {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&self.packet_size) {
            return Err(ConfigError::OutOfRange {
                field: "packet_size",
                value: self.packet_size as u64,
                min: MIN_PACKET_SIZE as u64,
                max: MAX_PACKET_SIZE as u64,
            });
        }
        // Tags and user events travel in single packets, so they must fit in one with room to spare.
        let payload_cap = self.packet_size / 2;
        if self.max_tags_size > payload_cap {
            return Err(ConfigError::OutOfRange {
                field: "max_tags_size",
                value: self.max_tags_size as u64,
                min: 0,
                max: payload_cap as u64,
            });
        }
        if self.user_event_size_limit > payload_cap {
            return Err(ConfigError::OutOfRange {
                field: "user_event_size_limit",
                value: self.user_event_size_limit as u64,
                min: 0,
                max: payload_cap as u64,
            });
        }
        if self.max_stream_size < 64 * 1024 {
            return Err(ConfigError::OutOfRange {
                field: "max_stream_size",
                value: self.max_stream_size as u64,
                min: 64 * 1024,
                max: u32::MAX as u64,
            });
        }
        Ok(())
    }

    /// The push-pull interval scaled like memberlist's `pushPullScale`: unchanged up to 32 members,
    /// then multiplied by `ceil(log2(n) - log2(32)) + 1`.
    pub fn scaled_push_pull_interval(&self, members: usize) -> Duration {
        const THRESHOLD: usize = 32;
        if members <= THRESHOLD {
            return self.push_pull_interval;
        }
        let multiplier = ((members as f64).log2() - (THRESHOLD as f64).log2()).ceil() + 1.0;
        self.push_pull_interval.mul_f64(multiplier)
    }

    /// memberlist's `retransmitLimit`: `mult × ceil(log10(n + 1))`.
    pub fn retransmit_limit(&self, members: usize) -> u32 {
        let scale = ((members as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.retransmit_mult.saturating_mul(scale)
    }

    /// memberlist's `suspicionTimeout`: `mult × max(1, log10(max(1, n))) × interval` — the minimum
    /// suspicion timeout; the maximum is `suspicion_max_timeout_mult` times this.
    pub fn min_suspicion_timeout(&self, members: usize) -> Duration {
        let scale = (members.max(1) as f64).log10().max(1.0);
        self.probe_interval.mul_f64(self.suspicion_mult as f64 * scale)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::lan()
    }
}

const MIN_PACKET_SIZE: usize = 576;
const MAX_PACKET_SIZE: usize = 65_000;

/// A [`Config`] field with an unusable value. Nothing is changed when it is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration or count that must be positive is zero.
    #[error("gossip config: `{field}` must be greater than zero")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// The ack deadline does not leave time for indirect probes within one probe interval.
    #[error(
        "gossip config: `probe_timeout` ({probe_timeout:?}) must be shorter than `probe_interval` ({probe_interval:?})"
    )]
    ProbeTimeoutTooLong {
        /// The configured probe timeout.
        probe_timeout: Duration,
        /// The configured probe interval.
        probe_interval: Duration,
    },
    /// A size outside its accepted range.
    #[error("gossip config: `{field}` is {value}, expected {min}..={max}")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The configured value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_memberlist_and_validate() {
        let lan = Config::lan();
        assert_eq!(lan.probe_interval, Duration::from_secs(1));
        assert_eq!(lan.probe_timeout, Duration::from_millis(500));
        assert_eq!(
            (lan.gossip_interval, lan.gossip_nodes),
            (Duration::from_millis(200), 3)
        );
        assert_eq!(lan.suspicion_mult, 4);
        assert_eq!(lan.push_pull_interval, Duration::from_secs(30));
        let wan = Config::wan();
        assert_eq!(wan.probe_interval, Duration::from_secs(5));
        assert_eq!(wan.probe_timeout, Duration::from_secs(3));
        assert_eq!(
            (wan.gossip_interval, wan.gossip_nodes),
            (Duration::from_millis(500), 4)
        );
        assert_eq!(wan.suspicion_mult, 6);
        assert_eq!(wan.push_pull_interval, Duration::from_secs(60));
        for c in [lan, wan, Config::local()] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = Config::lan();
        c.gossip_nodes = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::Zero {
                field: "gossip_nodes"
            })
        );
        let mut c = Config::lan();
        c.probe_timeout = Duration::from_secs(2);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ProbeTimeoutTooLong { .. })
        ));
        let mut c = Config::lan();
        c.packet_size = 100;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "packet_size",
                ..
            })
        ));
    }

    #[test]
    fn scaling_formulas_follow_memberlist() {
        let c = Config::lan();
        assert_eq!(c.retransmit_limit(0), 4);
        assert_eq!(c.retransmit_limit(9), 4);
        assert_eq!(c.retransmit_limit(10), 8);
        assert_eq!(c.retransmit_limit(1000), 16);
        assert_eq!(c.min_suspicion_timeout(1000), Duration::from_secs(12));
        assert_eq!(c.min_suspicion_timeout(5), Duration::from_secs(4));
        assert_eq!(c.scaled_push_pull_interval(32), Duration::from_secs(30));
        assert_eq!(c.scaled_push_pull_interval(1000), Duration::from_secs(180));
    }
}
