//! `tribune info`: the agent's `Stats` from `/v1/agent/self`, printed as Consul's `consul info`
//! (sections sorted, then `\tkey = value` lines sorted).

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use super::{CliError, GlobalArgs};

/// Formats the `Stats` object of `/v1/agent/self`.
pub(crate) fn format_stats(stats: &serde_json::Map<String, Value>) -> String {
    let mut sections: Vec<(&String, &Value)> = stats.iter().collect();
    sections.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (section, values) in sections {
        out.push_str(section);
        out.push_str(":\n");
        let Some(values) = values.as_object() else {
            continue;
        };
        let mut keys: Vec<(&String, &Value)> = values.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in keys {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("\t{key} = {text}\n"));
        }
    }
    out
}

pub(crate) async fn run(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let me: Value = client
        .call(Method::GET, "/v1/agent/self", "")
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("Error querying agent"))?;
    let Some(stats) = me.get("Stats").and_then(Value::as_object) else {
        return Err(CliError::Failed(
            "Error querying agent: no Stats in the answer".into(),
        ));
    };
    print!("{}", format_stats(stats));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_keys_are_sorted() {
        let stats = serde_json::json!({
            "raft": {"state": "Leader", "applied_index": "7"},
            "agent": {"checks": "0"},
        });
        assert_eq!(
            format_stats(stats.as_object().unwrap()),
            "agent:\n\tchecks = 0\nraft:\n\tapplied_index = 7\n\tstate = Leader\n"
        );
    }
}
