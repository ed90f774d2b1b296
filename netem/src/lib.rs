//! Emulated network conditions for testing Tribune across datacenters on one machine, where the
//! kernel offers no `tc netem`: one-way delay, packet loss and cuts between groups of addresses.
//!
//! - [`link`]: an in-process layer that Tribune's own transports (gossip UDP/TCP, the server RPC
//!   connections) consult before they send, so in-process clusters see the conditions.
//! - [`proxy`]: a userspace UDP/TCP proxy applying the same kind of conditions to processes, for
//!   tests that start `tribune agent` processes.
//!
//! It is not a packet-level emulator: it acts on datagrams and on whole stream writes, and it
//! models no bandwidth limits or reordering beyond what independent delays produce.

pub mod link;
pub mod proxy;
