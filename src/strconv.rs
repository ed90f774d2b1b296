//! Go's `strconv.ParseBool`, as Consul reads a boolean in a query parameter, a filter expression's
//! value or a command-line flag: `1`, `t`, `T`, `TRUE`, `true`, `True` and their false twins, nothing
//! else.

/// The boolean `text` spells, or `None` when Go would refuse it.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_go_spellings_are_booleans() {
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(no), Some(false), "{no}");
        }
        for neither in ["", "yes", "tRuE", "2", " true"] {
            assert_eq!(parse_go_bool(neither), None, "{neither:?}");
        }
    }
}
