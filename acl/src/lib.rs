//! Consul's ACL rule language and policy engine: parse rules, merge a token's policies, decide.
//!
//! Pure: no IO, no clock. Tokens and policies come from a `TokenSource` the caller implements.
