//! Loopback ports for agent processes, chosen below the kernel's ephemeral range.
//!
//! A port the OS hands out for `bind(0)` comes from the ephemeral range, which every outgoing
//! connection also draws from: between the test freeing it and the agent binding it, a client
//! connection of a concurrent test may take it, and the agent fails to start. Ports below the range
//! are never given to outgoing connections, so the only race left is with another test of this
//! process, which the shared counter rules out.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (32768–60999) and above well-known services.
const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback port free for both TCP and UDP (an agent's serf ports use both), never returned twice
/// by this process.
pub(crate) fn free_port() -> u16 {
    let span = HIGH - LOW;
    // Test binaries of one `cargo test` run one after another; the process id spreads them anyway.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(LOW + offset) else {
            continue;
        };
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for TCP and UDP in {LOW}..{HIGH}");
}
