//! The userspace UDP/TCP proxy (being written).
