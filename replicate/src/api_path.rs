//! Percent-encoding for Consul's HTTP API paths: a KV key keeps its `/` (its segments), a query
//! parameter's value is encoded whole. One copy for this crate's HTTP source, sink and lock and for
//! the tribune node's command line and watches.
//!
//! It is not a URL builder: callers put the parts together.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a query parameter's value has encoded: everything but RFC 3986's unreserved characters.
const ENCODED_IN_VALUES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a KV key in a URL path has encoded: the same but `/`, so the key keeps its segments.
const ENCODED_IN_KEYS: &AsciiSet = &ENCODED_IN_VALUES.remove(b'/');

/// Percent-encodes a KV key (or any path part) for a URL path, keeping `/`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, ENCODED_IN_KEYS).to_string()
}

/// Percent-encodes a query parameter's value (a `/` too).
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, ENCODED_IN_VALUES).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_slashes_and_values_do_not() {
        assert_eq!(encode_key("a b/c%d/é?&="), "a%20b/c%25d/%C3%A9%3F%26%3D");
        assert_eq!(encode_key("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_query_value("east/1 &x=y"), "east%2F1%20%26x%3Dy");
    }
}
