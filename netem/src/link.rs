//! In-process link conditions: a shared [`Network`] that transports ask, before each send, what
//! happens to one message from one address to another.
//!
//! Addresses are put in named groups (a datacenter, a rack, one server); conditions are set per
//! ordered pair of groups and may change at any moment from a test. A decision is a pure function
//! of the seed, the two addresses, how many decisions that directed pair had before, and the
//! conditions in force: no clock, no global RNG. Two runs that ask the same questions in the same
//! order per link get the same answers, whatever the interleaving between links.
//!
//! ```
//! use std::time::Duration;
//! use tribune_netem::link::{Conditions, Network, Verdict};
//!
//! let net = Network::new(7);
//! let (a, b) = ("127.0.0.1:8301".parse().unwrap(), "127.0.0.1:9301".parse().unwrap());
//! net.assign(a, "dc1");
//! net.assign(b, "dc2");
//! net.set_between("dc1", "dc2", Conditions::delay(Duration::from_millis(25))).unwrap();
//! assert_eq!(net.decide(a, b), Verdict::Deliver { after: Duration::from_millis(25) });
//! net.cut("dc1", "dc2");
//! assert_eq!(net.decide(b, a), Verdict::Drop);
//! net.heal("dc1", "dc2");
//! ```

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// What happens to one message (or one connection attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It arrives `after` this long (zero: at once).
    Deliver {
        /// The one-way delay to apply before handing it to the real socket.
        after: Duration,
    },
    /// It is lost: the sender sees silence, as behind a dropping firewall.
    Drop,
}

impl Verdict {
    /// Delivered at once: what an unconditioned link answers.
    pub const NOW: Verdict = Verdict::Deliver {
        after: Duration::ZERO,
    };
}

/// Conditions on a directed link between two groups.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditions {
    /// One-way delay of every message.
    pub delay: Duration,
    /// Each message's delay is drawn uniformly from `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a message is lost.
    pub loss: f64,
}

impl Conditions {
    /// A fixed one-way delay, no jitter, no loss.
    pub fn delay(delay: Duration) -> Self {
        Conditions {
            delay,
            ..Conditions::default()
        }
    }

    /// The same conditions with `delay ± jitter`.
    #[must_use]
    pub fn with_jitter(self, jitter: Duration) -> Self {
        Conditions { jitter, ..self }
    }

    /// The same conditions losing each message with probability `loss`.
    #[must_use]
    pub fn with_loss(self, loss: f64) -> Self {
        Conditions { loss, ..self }
    }

    fn validate(&self) -> Result<(), NetemError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(NetemError::InvalidLoss { loss: self.loss });
        }
        Ok(())
    }
}

/// Why the network refused a setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NetemError {
    /// A loss probability outside `[0, 1]` (or NaN).
    #[error("loss probability {loss} is not within [0, 1]")]
    InvalidLoss {
        /// The value given.
        loss: f64,
    },
}

/// Something that can be put in a group: one socket address, or every port of an IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Exactly this address and port.
    Addr(SocketAddr),
    /// Every port of this IP address (an exact [`Endpoint::Addr`] assignment wins).
    Ip(IpAddr),
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Addr(addr)
    }
}

impl From<IpAddr> for Endpoint {
    fn from(ip: IpAddr) -> Self {
        Endpoint::Ip(ip)
    }
}

/// The conditions between groups of addresses, shared by every transport of a test.
///
/// Cheap to clone: clones share the same state, so a test keeps one handle and changes the
/// conditions while the nodes holding the others run. Traffic from or to an address in no group,
/// and traffic within a group without a link set on itself, passes untouched.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Mutex<State>>,
}

/// Two handles are equal when they share one state (clones of one [`Network::new`]).
impl PartialEq for Network {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Network {}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Network")
            .field("seed", &st.seed)
            .field("members", &st.members.len())
            .field("links", &st.links.len())
            .field("cuts", &st.cuts.len())
            .finish()
    }
}

struct State {
    seed: u64,
    members: HashMap<Endpoint, Arc<str>>,
    links: HashMap<(Arc<str>, Arc<str>), Conditions>,
    /// Directed group pairs that lose everything, kept apart from `links` so that healing a cut
    /// restores the delay that was set before it.
    cuts: HashSet<(Arc<str>, Arc<str>)>,
    /// Decisions made so far per directed address pair: the position in that link's stream.
    counters: HashMap<(SocketAddr, SocketAddr), u64>,
}

impl Network {
    /// A network with no groups and no conditions, whose random draws (loss, jitter) derive from
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        Network {
            inner: Arc::new(Mutex::new(State {
                seed,
                members: HashMap::new(),
                links: HashMap::new(),
                cuts: HashSet::new(),
                counters: HashMap::new(),
            })),
        }
    }

    /// Puts `endpoint` in `group` (moving it out of any group it was in).
    pub fn assign(&self, endpoint: impl Into<Endpoint>, group: &str) {
        self.inner
            .lock()
            .members
            .insert(endpoint.into(), Arc::from(group));
    }

    /// Takes `endpoint` out of its group: its traffic passes untouched again.
    pub fn unassign(&self, endpoint: impl Into<Endpoint>) {
        self.inner.lock().members.remove(&endpoint.into());
    }

    /// Sets the conditions of messages sent from group `from` to group `to` (one direction).
    pub fn set_one_way(&self, from: &str, to: &str, conditions: Conditions) -> Result<(), NetemError> {
        conditions.validate()?;
        self.inner
            .lock()
            .links
            .insert((Arc::from(from), Arc::from(to)), conditions);
        Ok(())
    }

    /// Sets the same conditions both ways between groups `a` and `b` (`a == b`: within one group).
    pub fn set_between(&self, a: &str, b: &str, conditions: Conditions) -> Result<(), NetemError> {
        conditions.validate()?;
        let mut st = self.inner.lock();
        st.links.insert((Arc::from(a), Arc::from(b)), conditions);
        st.links.insert((Arc::from(b), Arc::from(a)), conditions);
        Ok(())
    }

    /// Removes the conditions both ways between `a` and `b` (a cut between them stays).
    pub fn clear_between(&self, a: &str, b: &str) {
        let mut st = self.inner.lock();
        st.links.remove(&(Arc::from(a), Arc::from(b)));
        st.links.remove(&(Arc::from(b), Arc::from(a)));
    }

    /// Loses every message both ways between `a` and `b` until [`Network::heal`].
    pub fn cut(&self, a: &str, b: &str) {
        let mut st = self.inner.lock();
        st.cuts.insert((Arc::from(a), Arc::from(b)));
        st.cuts.insert((Arc::from(b), Arc::from(a)));
    }

    /// Loses every message from `from` to `to` only (the reverse direction still works).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        self.inner.lock().cuts.insert((Arc::from(from), Arc::from(to)));
    }

    /// Ends a cut both ways between `a` and `b`; the conditions set before it apply again.
    pub fn heal(&self, a: &str, b: &str) {
        let mut st = self.inner.lock();
        st.cuts.remove(&(Arc::from(a), Arc::from(b)));
        st.cuts.remove(&(Arc::from(b), Arc::from(a)));
    }

    /// Removes every condition and cut; groups stay.
    pub fn clear(&self) {
        let mut st = self.inner.lock();
        st.links.clear();
        st.cuts.clear();
    }

    /// The fate of one message from `from` to `to`: dropped when the link is cut or by its loss
    /// probability, otherwise delivered after its delay (± jitter).
    pub fn decide(&self, from: SocketAddr, to: SocketAddr) -> Verdict {
        self.inner.lock().decide(from, to, true)
    }

    /// The fate of a connection attempt from `from` to `to` (a stream transport's SYN): dropped
    /// only when the link is cut, since a stream's retransmissions hide random loss; otherwise
    /// the one-way delay before the first byte gets there.
    pub fn connect(&self, from: SocketAddr, to: SocketAddr) -> Verdict {
        self.inner.lock().decide(from, to, false)
    }
}

impl State {
    fn group_of(&self, addr: SocketAddr) -> Option<&Arc<str>> {
        self.members
            .get(&Endpoint::Addr(addr))
            .or_else(|| self.members.get(&Endpoint::Ip(addr.ip())))
    }

    fn decide(&mut self, from: SocketAddr, to: SocketAddr, lossy: bool) -> Verdict {
        let (Some(src), Some(dst)) = (self.group_of(from), self.group_of(to)) else {
            return Verdict::NOW;
        };
        let key = (Arc::clone(src), Arc::clone(dst));
        if self.cuts.contains(&key) {
            return Verdict::Drop;
        }
        let Some(conditions) = self.links.get(&key).copied() else {
            return Verdict::NOW;
        };
        let counter = self.counters.entry((from, to)).or_insert(0);
        let n = *counter;
        *counter = counter.wrapping_add(1);
        // Two draws per decision, always both, so that a change of loss does not shift the
        // jitter stream of later messages.
        let base = mix(self.seed ^ mix(addr_bits(from)) ^ mix(addr_bits(to)).rotate_left(17));
        let loss_draw = unit(mix(base ^ n.wrapping_mul(2)));
        let jitter_draw = unit(mix(base ^ n.wrapping_mul(2).wrapping_add(1)));
        if lossy && loss_draw < conditions.loss {
            return Verdict::Drop;
        }
        Verdict::Deliver {
            after: jittered(conditions.delay, conditions.jitter, jitter_draw),
        }
    }
}

/// `delay` moved by up to `jitter` either way, `draw` in `[0, 1)` choosing where.
fn jittered(delay: Duration, jitter: Duration, draw: f64) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    let offset = jitter.mul_f64(2.0 * draw);
    (delay + offset).saturating_sub(jitter)
}

/// SplitMix64's finaliser: a well-spread 64-bit hash, stable across platforms and releases.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in `[0, 1)` from the top 53 bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The address folded into 64 bits (IPv6 addresses hashed down).
fn addr_bits(addr: SocketAddr) -> u64 {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            mix((bits >> 64) as u64) ^ (bits as u64) ^ (1 << 63)
        }
    };
    (ip << 16) ^ u64::from(addr.port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn two_groups(seed: u64) -> Network {
        let net = Network::new(seed);
        net.assign(addr(1), "a");
        net.assign(addr(2), "a");
        net.assign(addr(3), "b");
        net
    }

    #[test]
    fn no_group_or_no_link_means_no_conditions() {
        let net = two_groups(1);
        net.set_between("a", "b", Conditions::delay(Duration::from_millis(5)))
            .unwrap();
        assert_eq!(net.decide(addr(1), addr(9)), Verdict::NOW, "9 is in no group");
        assert_eq!(
            net.decide(addr(1), addr(2)),
            Verdict::NOW,
            "within a: no link set"
        );
        assert_eq!(
            net.decide(addr(1), addr(3)),
            Verdict::Deliver {
                after: Duration::from_millis(5)
            }
        );
    }

    #[test]
    fn an_exact_address_wins_over_its_ip() {
        let net = Network::new(1);
        net.assign(IpAddr::from([127, 0, 0, 2]), "far");
        net.assign(SocketAddr::from(([127, 0, 0, 2], 7)), "near");
        net.assign(addr(1), "near");
        net.set_between("near", "far", Conditions::delay(Duration::from_millis(9)))
            .unwrap();
        let far = SocketAddr::from(([127, 0, 0, 2], 8));
        let near = SocketAddr::from(([127, 0, 0, 2], 7));
        assert_eq!(
            net.decide(addr(1), far),
            Verdict::Deliver {
                after: Duration::from_millis(9)
            }
        );
        assert_eq!(net.decide(addr(1), near), Verdict::NOW);
        net.unassign(IpAddr::from([127, 0, 0, 2]));
        assert_eq!(net.decide(addr(1), far), Verdict::NOW);
    }

    #[test]
    fn a_cut_drops_both_ways_and_healing_restores_the_delay() {
        let net = two_groups(1);
        let d = Conditions::delay(Duration::from_millis(25));
        net.set_between("a", "b", d).unwrap();
        net.cut("a", "b");
        for _ in 0..10 {
            assert_eq!(net.decide(addr(1), addr(3)), Verdict::Drop);
            assert_eq!(net.decide(addr(3), addr(2)), Verdict::Drop);
            assert_eq!(net.connect(addr(3), addr(2)), Verdict::Drop);
        }
        assert_eq!(net.decide(addr(1), addr(2)), Verdict::NOW, "inside a still works");
        net.heal("a", "b");
        assert_eq!(net.decide(addr(3), addr(1)), Verdict::Deliver { after: d.delay });
        net.clear();
        assert_eq!(net.decide(addr(3), addr(1)), Verdict::NOW);
    }

    #[test]
    fn a_one_way_cut_or_delay_leaves_the_other_direction() {
        let net = two_groups(1);
        net.set_one_way("a", "b", Conditions::delay(Duration::from_millis(3)))
            .unwrap();
        net.cut_one_way("b", "a");
        assert_eq!(
            net.decide(addr(1), addr(3)),
            Verdict::Deliver {
                after: Duration::from_millis(3)
            }
        );
        assert_eq!(net.decide(addr(3), addr(1)), Verdict::Drop);
        net.clear_between("a", "b");
        assert_eq!(net.decide(addr(1), addr(3)), Verdict::NOW);
    }

    fn sample(net: &Network, from: SocketAddr, to: SocketAddr, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| net.decide(from, to)).collect()
    }

    #[test]
    fn decisions_replay_from_the_seed_whatever_other_links_do() {
        let lossy = Conditions::delay(Duration::from_millis(20))
            .with_jitter(Duration::from_millis(10))
            .with_loss(0.3);
        let first = two_groups(42);
        first.set_between("a", "b", lossy).unwrap();
        let second = two_groups(42);
        second.set_between("a", "b", lossy).unwrap();
        // Interleave another link's traffic in the second run only.
        let mut replay = Vec::new();
        for _ in 0..200 {
            let _ = second.decide(addr(3), addr(2));
            replay.push(second.decide(addr(1), addr(3)));
        }
        assert_eq!(sample(&first, addr(1), addr(3), 200), replay);
        let other = two_groups(43);
        other.set_between("a", "b", lossy).unwrap();
        assert_ne!(sample(&other, addr(1), addr(3), 200), replay);
    }

    #[test]
    fn loss_and_jitter_follow_their_settings() {
        let net = two_groups(7);
        let delay = Duration::from_millis(20);
        let jitter = Duration::from_millis(10);
        net.set_between(
            "a",
            "b",
            Conditions::delay(delay).with_jitter(jitter).with_loss(0.25),
        )
        .unwrap();
        let verdicts = sample(&net, addr(1), addr(3), 4000);
        let dropped = verdicts.iter().filter(|v| **v == Verdict::Drop).count();
        assert!(
            (800..1200).contains(&dropped),
            "{dropped} of 4000 dropped at 25 %"
        );
        let delays: Vec<Duration> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Deliver { after } => Some(*after),
                Verdict::Drop => None,
            })
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= delay - jitter && *d <= delay + jitter)
        );
        let below = delays.iter().filter(|d| **d < delay).count();
        assert!(
            below * 10 > delays.len() * 4 && below * 10 < delays.len() * 6,
            "{below} of {} below the mean",
            delays.len()
        );
        // A connection attempt ignores loss (the stream would retransmit) but keeps the delay.
        assert!((0..200).all(|_| net.connect(addr(1), addr(3)) != Verdict::Drop));
    }

    #[test]
    fn jitter_never_makes_a_delay_negative() {
        assert_eq!(
            jittered(Duration::from_millis(1), Duration::from_millis(5), 0.0),
            Duration::ZERO
        );
        assert_eq!(
            jittered(Duration::from_millis(1), Duration::ZERO, 0.9),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn a_loss_outside_zero_to_one_is_refused() {
        let net = Network::new(0);
        for loss in [-0.1, 1.5, f64::NAN] {
            let err = net
                .set_between("a", "b", Conditions::default().with_loss(loss))
                .unwrap_err();
            assert!(matches!(err, NetemError::InvalidLoss { .. }));
        }
        net.set_one_way("a", "b", Conditions::default().with_loss(1.0))
            .unwrap();
    }
}
