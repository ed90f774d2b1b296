//! Building request paths for Consul's HTTP API: the percent-encoding of keys and query values
//! (tribune-replicate's `api_path`, one copy for both crates) and parameters appended. Shared by
//! the command line and the agent's own watches.

pub use tribune_replicate::api_path::{encode_key, encode_query_value};

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
