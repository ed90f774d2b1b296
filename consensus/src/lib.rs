//! Raft consensus for Tribune servers, on openraft, over opaque command bytes.
//!
//! It depends on no other Tribune crate: the application plugs in through a `StateMachine` trait.
