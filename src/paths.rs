//! Building request paths for Consul's HTTP API: keys percent-encoded with `/` kept, query values
//! encoded whole, parameters appended. Shared by the command line and the agent's own watches.

/// Percent-encodes a KV key (or any path part), keeping `/` and RFC 3986's unreserved characters.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/');
        if unreserved {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes a query parameter's value.
pub fn encode_query_value(value: &str) -> String {
    encode_key(value).replace('/', "%2F")
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
