//! Building request paths for Consul's HTTP API: keys percent-encoded with `/` kept, query values
//! encoded whole, parameters appended. Shared by the command line and the agent's own watches.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What a URL path keeps of a KV key: RFC 3986's unreserved characters and `/`.
const KEY_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// What a query parameter's value keeps: the unreserved characters only.
const VALUE_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a KV key (or any path part), keeping `/`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_KEEPS).to_string()
}

/// Percent-encodes a query parameter's value (a `/` too).
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, VALUE_KEEPS).to_string()
}

/// Appends `name=value` (the value encoded) to a path that may already have a query.
pub fn add_query_param(path_and_query: &str, name: &str, value: &str) -> String {
    let separator = match path_and_query.split_once('?') {
        None => "?",
        Some((_, "")) => "",
        Some((_, query)) if query.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{path_and_query}{separator}{name}={}", encode_query_value(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_slashes_and_values_do_not() {
        assert_eq!(encode_key("a b/c"), "a%20b/c");
        assert_eq!(encode_query_value("a/b"), "a%2Fb");
        assert_eq!(add_query_param("/v1/kv/a", "index", "5"), "/v1/kv/a?index=5");
        assert_eq!(
            add_query_param("/v1/kv/a?recurse", "tag", "x y"),
            "/v1/kv/a?recurse&tag=x%20y"
        );
        assert_eq!(add_query_param("/v1/kv/a?", "stale", ""), "/v1/kv/a?stale=");
    }
}
