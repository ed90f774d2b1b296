//! Tribune's snapshot archive codec: a versioned, self-describing, streaming format with a SHA-256 trailer.
