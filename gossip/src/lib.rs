//! SWIM + Lifeguard gossip membership as a sans-IO state machine, with a tokio runtime and a simulator.
