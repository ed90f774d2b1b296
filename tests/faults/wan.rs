//! The second datacenter of a WAN run: one `tribune agent -server` of dc2, WAN-joined with dc1's
//! three servers, and the userspace proxy (tribune-netem) it advertises as its WAN address, so
//! that everything dc1 sends it — WAN gossip (UDP and TCP) and forwarded calls on the server RPC
//! port — crosses the proxy. What dc2 starts itself (its own probes of dc1's servers) goes
//! directly: the delay covers every `?dc=dc2` call and their answers, and half of the gossip.
//!
//! Also the checks beyond the histories: how long dc1 takes to declare a cut-off dc2 failed,
//! that `?dc=dc2` then fails fast with Consul's error, and that dc2 is routable again by itself
//! after the heal.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tribune_netem::proxy::{Proxy, ProxyConfig, ProxyStats};

use super::cluster::{self, Cluster, DC2_PROXY_IP, SERF_WAN_PORT, Slot};
use super::http;
use super::workload::{NOT_SENT_ERRORS, REMOTE_DC};

/// The one-way delay of the WAN-delay fault (each way: a 50 ms round trip).
pub(crate) const WAN_DELAY: Duration = Duration::from_millis(25);
/// How long dc1 may take to see dc2 again after a heal (the pools' reconnect runs every 30 s at
/// worst; gossip to the recently dead usually brings it back within seconds).
pub(crate) const REJOIN_LIMIT: Duration = Duration::from_secs(75);
/// How long dc1 may take to declare a cut-off dc2 failed (WAN timing of gossip-wan.json).
pub(crate) const DETECT_LIMIT: Duration = Duration::from_secs(30);
/// A `?dc=dc2` call through dc1 while dc2 is declared failed must answer within this.
pub(crate) const FAIL_FAST: Duration = Duration::from_secs(3);

/// dc2 and the proxy in front of it.
pub(crate) struct Wan {
    pub(crate) dc2: Cluster,
    pub(crate) dc1_http: Vec<SocketAddr>,
    pub(crate) dc2_http: SocketAddr,
    /// The gossip proxy first, then the RPC proxy; dropped (stopped) with the run.
    proxies: Vec<Proxy>,
}

impl Wan {
    /// Starts the proxies and dc2's server (dc1's slots must already be [`cluster::federate`]d
    /// with `dc2`).
    pub(crate) fn start(runtime: &Runtime, dc1: &[Slot], dc2: Slot) -> Wan {
        let mut proxies = Vec::new();
        // WAN gossip (UDP and TCP) and the server RPC port (TCP), at dc2's advertised address.
        for (port, udp) in [(SERF_WAN_PORT, true), (dc2.rpc_port, false)] {
            let listen = SocketAddr::from((DC2_PROXY_IP, port));
            let mut config = ProxyConfig::new(listen, SocketAddr::from((dc2.ip, port)));
            config.udp = udp;
            config.seed = u64::from(port);
            let proxy = runtime
                .block_on(Proxy::start(config))
                .unwrap_or_else(|e| panic!("the WAN proxy on {listen}: {e}"));
            proxies.push(proxy);
        }
        let dc2_http = dc2.http();
        Wan {
            dc2: Cluster::start(vec![dc2]),
            dc1_http: dc1.iter().map(Slot::http).collect(),
            dc2_http,
            proxies,
        }
    }

    /// Sets the one-way delay of both proxies (gossip and RPC).
    pub(crate) fn set_delay(&self, each_way: Duration) {
        for proxy in &self.proxies {
            proxy.control().set_delay(each_way);
        }
    }

    /// The proxies' counters (gossip, RPC), for the run's log.
    pub(crate) fn stats(&self) -> Vec<ProxyStats> {
        self.proxies.iter().map(|p| p.control().stats()).collect()
    }

    /// Waits until every dc1 server serves a `?dc=dc2` read (dc2 answered it): the ms it took.
    pub(crate) async fn wait_routable(&self, limit: Duration) -> Option<u64> {
        let started = Instant::now();
        let path = format!("/v1/kv/wan/k0?stale&dc={REMOTE_DC}");
        let mut pending: Vec<SocketAddr> = self.dc1_http.clone();
        while started.elapsed() < limit {
            let mut still = Vec::new();
            for server in pending {
                let served = http::call(server, "GET", &path, b"", Duration::from_secs(2))
                    .await
                    .is_ok_and(|reply| reply.status == 200 || reply.status == 404);
                if !served {
                    still.push(server);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Some(millis(started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Waits until every dc1 server lists dc2's server as failed in `members -wan`: the ms it
    /// took.
    pub(crate) async fn wait_declared_failed(&self, limit: Duration) -> Option<u64> {
        let started = Instant::now();
        let name = format!("dc2-s1.{REMOTE_DC}");
        while started.elapsed() < limit {
            let mut all = true;
            for server in &self.dc1_http {
                let failed = http::call(
                    *server,
                    "GET",
                    "/v1/agent/members?wan=1",
                    b"",
                    Duration::from_secs(2),
                )
                .await
                .ok()
                .and_then(|reply| reply.json())
                .and_then(|json| {
                    let members = json.as_array()?.clone();
                    let member = members
                        .iter()
                        .find(|m| m.get("Name").and_then(|n| n.as_str()) == Some(name.as_str()))?;
                    member.get("Status")?.as_u64()
                })
                // Serf's numbers: 4 is failed (a member that left is 3, and not a failure).
                .is_some_and(|status| status == 4);
                all &= failed;
            }
            if all {
                return Some(millis(started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// While dc2 is declared failed: a `?dc=dc2` read through each dc1 server must answer 500
    /// `Remote DC has no server currently reachable` within [`FAIL_FAST`]. What went wrong, if
    /// anything, and the slowest answer.
    pub(crate) async fn check_fail_fast(&self) -> (Vec<String>, Option<u64>) {
        let mut problems = Vec::new();
        let mut slowest = None;
        let path = format!("/v1/kv/wan/k0?dc={REMOTE_DC}");
        for (i, server) in self.dc1_http.iter().enumerate() {
            let started = Instant::now();
            let reply = http::call(*server, "GET", &path, b"", FAIL_FAST * 3).await;
            let took = started.elapsed();
            slowest = slowest.max(Some(millis(took)));
            match reply {
                Ok(reply) if reply.status == 500 && reply.text().trim() == NOT_SENT_ERRORS[1] => {
                    if took > FAIL_FAST {
                        problems.push(format!(
                            "s{}: ?dc=dc2 while dc2 was cut off took {took:?} (more than {FAIL_FAST:?})",
                            i + 1
                        ));
                    }
                }
                Ok(reply) => problems.push(format!(
                    "s{}: ?dc=dc2 while dc2 was cut off and declared failed answered {} {:?}, not 500 {:?}",
                    i + 1,
                    reply.status,
                    reply.text(),
                    NOT_SENT_ERRORS[1]
                )),
                Err(e) => problems.push(format!(
                    "s{}: ?dc=dc2 while dc2 was cut off got no answer in {:?} ({e:?})",
                    i + 1,
                    FAIL_FAST * 3
                )),
            }
        }
        (problems, slowest)
    }

    /// The time of a few `?dc=dc2&stale` reads through dc1's first server, in ms (fastest first).
    pub(crate) async fn forwarded_read_times(&self, count: usize) -> Vec<u64> {
        let path = format!("/v1/kv/wan/k0?stale&dc={REMOTE_DC}");
        let mut times = Vec::new();
        for _ in 0..count {
            let started = Instant::now();
            let reply = http::call(self.dc1_http[0], "GET", &path, b"", Duration::from_secs(3)).await;
            if reply.is_ok_and(|r| r.status == 200 || r.status == 404) {
                times.push(millis(started.elapsed()));
            }
        }
        times.sort_unstable();
        times
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// dc1's slots federated with dc2's, for a WAN run.
pub(crate) fn slots(root: &Path) -> (Vec<Slot>, Slot) {
    let mut dc1 = cluster::slots(root, true);
    let mut dc2 = cluster::dc2_slot(root);
    cluster::federate(root, &mut dc1, &mut dc2);
    (dc1, dc2)
}
