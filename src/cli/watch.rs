//! `tribune watch`: Consul's watch command. It runs blocking queries against the agent for one
//! data view (`key`, `keyprefix`, `services`, `nodes`, `service`, `checks`, `event`) and, on the
//! first result and on every change, hands the result as JSON on stdin to a handler (with
//! `CONSUL_INDEX` in its environment). Without a handler it prints the first result and exits.
//! As Consul's, a handler that fails ends the watch with status 1.
//!
//! What it is not: the agent-side `watches` of a configuration file (none here), nor the HTTP
//! handler type of Consul's watches. A handler's own long flags (`-flag`) are rewritten by the
//! command line's single-dash handling: put handlers with such flags after `--` or in one
//! shell string.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::http::{ApiClient, add_query_param, encode_key, encode_query_value};
use super::{CliError, GlobalArgs};

/// `tribune watch -type T [flags] [handler…]`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// The view to watch: key, keyprefix, services, nodes, service, checks, event.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// The key of a `key` watch.
    #[arg(long)]
    key: Option<String>,
    /// The prefix of a `keyprefix` watch.
    #[arg(long)]
    prefix: Option<String>,
    /// The service of a `service` or `checks` watch.
    #[arg(long)]
    service: Option<String>,
    /// With `service`: only instances with this tag (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// With `service`: only instances whose checks all pass.
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "false", default_missing_value = "true", action = clap::ArgAction::Set)]
    passingonly: bool,
    /// With `checks`: only checks in this state (any, passing, warning, critical).
    #[arg(long)]
    state: Option<String>,
    /// With `event`: only events of this name.
    #[arg(long)]
    name: Option<String>,
    /// Run a one-argument handler through `sh -c` (`-shell=false`: execute it directly).
    #[arg(long, num_args = 0..=1, require_equals = true, default_value = "true", default_missing_value = "true", action = clap::ArgAction::Set)]
    shell: bool,
    /// Let any server answer, possibly with stale data.
    #[arg(long)]
    stale: bool,
    /// The handler and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    handler: Vec<String>,
}

/// One watchable view and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum View {
    Key(String),
    KeyPrefix(String),
    Services,
    Nodes,
    Service {
        name: String,
        tags: Vec<String>,
        passing: bool,
    },
    Checks {
        service: Option<String>,
        state: Option<String>,
    },
    Event {
        name: Option<String>,
    },
}

impl View {
    /// The view the flags ask for, with Consul's complaints.
    pub(crate) fn from_args(args: &WatchArgs) -> Result<View, CliError> {
        let kind = args.kind.as_deref().unwrap_or_default();
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(match kind {
            "" => return Err(CliError::Usage("Watch type must be specified".into())),
            "key" => View::Key(
                nonempty(&args.key)
                    .ok_or_else(|| CliError::Usage("Must specify a single key to watch".into()))?,
            ),
            "keyprefix" => View::KeyPrefix(
                nonempty(&args.prefix)
                    .ok_or_else(|| CliError::Usage("Must specify a single prefix to watch".into()))?,
            ),
            "services" => View::Services,
            "nodes" => View::Nodes,
            "service" => View::Service {
                name: nonempty(&args.service)
                    .ok_or_else(|| CliError::Usage("Must specify a single service to watch".into()))?,
                tags: args.tag.clone(),
                passing: args.passingonly,
            },
            "checks" => {
                let service = nonempty(&args.service);
                let state = nonempty(&args.state);
                if service.is_some() && state.is_some() {
                    return Err(CliError::Usage("Cannot specify service and state".into()));
                }
                View::Checks { service, state }
            }
            "event" => View::Event {
                name: nonempty(&args.name),
            },
            other => return Err(CliError::Usage(format!("Unsupported watch type: {other}"))),
        })
    }

    /// The path and query that read the view.
    pub(crate) fn path(&self) -> String {
        match self {
            View::Key(key) => format!("/v1/kv/{}", encode_key(key)),
            View::KeyPrefix(prefix) => format!("/v1/kv/{}?recurse", encode_key(prefix)),
            View::Services => "/v1/catalog/services".into(),
            View::Nodes => "/v1/catalog/nodes".into(),
            View::Service { name, tags, passing } => {
                let mut path = format!("/v1/health/service/{}", encode_query_value(name));
                for tag in tags {
                    path = add_query_param(&path, "tag", tag);
                }
                if *passing {
                    path = add_query_param(&path, "passing", "1");
                }
                path
            }
            View::Checks {
                service: Some(service),
                ..
            } => {
                format!("/v1/health/checks/{}", encode_query_value(service))
            }
            View::Checks { state, .. } => {
                format!(
                    "/v1/health/state/{}",
                    encode_query_value(state.as_deref().unwrap_or("any"))
                )
            }
            View::Event { name } => match name {
                Some(name) => add_query_param("/v1/event/list", "name", name),
                None => "/v1/event/list".into(),
            },
        }
    }

    /// The result a handler sees for an answer: a key's entry (not the list of one), `null` for a
    /// missing key or prefix, and for events only those after the one at `last_index`.
    pub(crate) fn result(&self, status: StatusCode, body: &[u8], last_index: u64) -> Result<Value, CliError> {
        if status == StatusCode::NOT_FOUND && matches!(self, View::Key(_) | View::KeyPrefix(_)) {
            return Ok(Value::Null);
        }
        if status != StatusCode::OK {
            return Err(CliError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(body).trim().to_owned(),
            });
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| CliError::Decode {
            what: "the agent's answer",
            reason: e.to_string(),
        })?;
        Ok(match (self, value) {
            (View::Key(_), Value::Array(mut entries)) if !entries.is_empty() => entries.swap_remove(0),
            (View::Key(_), Value::Array(_)) => Value::Null,
            (View::Event { .. }, Value::Array(events)) => Value::Array(events_after(events, last_index)),
            (_, value) => value,
        })
    }
}

/// The events after the one whose ID hashes to `last_index` (all of them when none does), as
/// Consul's event watch prunes the list.
fn events_after(events: Vec<Value>, last_index: u64) -> Vec<Value> {
    let position = events.iter().position(|event| {
        let id = event.get("ID").and_then(Value::as_str).unwrap_or_default();
        tribune::user_event_index(id) == last_index
    });
    match position {
        Some(at) => events.into_iter().skip(at + 1).collect(),
        None => events,
    }
}

/// Whether a watch whose last result was `last` (at `last_index`) hands `result` (at `index`) on:
/// always the first; later only when both the index and the result changed.
pub(crate) fn is_change(last: Option<&Value>, last_index: u64, result: &Value, index: u64) -> bool {
    match last {
        None => true,
        Some(last) => index != last_index && last != result,
    }
}

/// How long to wait before asking again after an error: doubling from 1 s up to 32 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5))
}

pub(crate) async fn run(args: WatchArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let view = View::from_args(&args)?;
    let mut client = global.client()?;
    let mut last: Option<Value> = None;
    let mut last_index: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        let (result, index) = match read(&mut client, &view, last_index, args.stale).await {
            Ok(read) => read,
            // The first read decides whether the agent is there at all, as Consul's check does.
            Err(error) if last.is_none() => return Err(error.context("Error querying Consul agent")),
            Err(error) => {
                eprintln!("Error querying Consul agent: {error}");
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        let changed = is_change(last.as_ref(), last_index, &result, index);
        // An index that went backwards (a restored or new server) starts over without blocking.
        last_index = if index < last_index { 0 } else { index };
        if !changed {
            continue;
        }
        last = Some(result.clone());
        if args.handler.is_empty() {
            let mut out = Vec::new();
            let mut serializer = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(b"    "),
            );
            serde::Serialize::serialize(&result, &mut serializer).map_err(|e| CliError::Decode {
                what: "the result",
                reason: e.to_string(),
            })?;
            println!("{}", String::from_utf8_lossy(&out));
            return Ok(ExitCode::SUCCESS);
        }
        if let Err(message) = run_handler(&args.handler, args.shell, &result, index).await {
            eprintln!("Error executing handler: {message}");
            return Ok(ExitCode::FAILURE);
        }
    }
}

/// One read of the view, blocking on `last_index` when there is one.
async fn read(
    client: &mut ApiClient,
    view: &View,
    last_index: u64,
    stale: bool,
) -> Result<(Value, u64), CliError> {
    let mut path = view.path();
    if stale {
        path = add_query_param(&path, "stale", "");
    }
    if last_index > 0 {
        path = add_query_param(&path, "index", &last_index.to_string());
    }
    let reply = client.call(Method::GET, &path, "").await?;
    let index = reply.index().unwrap_or(0);
    let result = view.result(reply.status, &reply.body, last_index)?;
    Ok((result, index))
}

/// Runs the handler with the result on stdin and `CONSUL_INDEX` set; Err when it cannot start or
/// exits unsuccessfully.
async fn run_handler(handler: &[String], shell: bool, result: &Value, index: u64) -> Result<(), String> {
    let mut command = match handler {
        [script] if shell => {
            let mut command = tokio::process::Command::new("sh");
            command.arg("-c").arg(script);
            command
        }
        [program, rest @ ..] => {
            let mut command = tokio::process::Command::new(program);
            command.args(rest);
            command
        }
        [] => return Ok(()),
    };
    let mut input = serde_json::to_vec(result).map_err(|e| e.to_string())?;
    input.push(b'\n');
    command
        .env("CONSUL_INDEX", index.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        // A handler that does not read its input is not an error (a broken pipe is ignored).
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_a_new_index_and_a_new_result() {
        let a = serde_json::json!({"k": 1});
        let b = serde_json::json!({"k": 2});
        assert!(is_change(None, 0, &a, 5), "the first result is handed on");
        assert!(!is_change(Some(&a), 5, &b, 5), "same index");
        assert!(!is_change(Some(&a), 5, &a, 6), "same result");
        assert!(is_change(Some(&a), 5, &b, 6));
    }

    #[test]
    fn views_read_consuls_paths_and_shapes() {
        assert_eq!(View::Key("a b/c".into()).path(), "/v1/kv/a%20b/c");
        assert_eq!(View::KeyPrefix("p/".into()).path(), "/v1/kv/p/?recurse");
        let service = View::Service {
            name: "web".into(),
            tags: vec!["v1".into()],
            passing: true,
        };
        assert_eq!(service.path(), "/v1/health/service/web?tag=v1&passing=1");
        assert_eq!(
            View::Checks {
                service: None,
                state: None
            }
            .path(),
            "/v1/health/state/any"
        );
        assert_eq!(
            View::Event {
                name: Some("deploy".into())
            }
            .path(),
            "/v1/event/list?name=deploy"
        );
        let key = View::Key("k".into());
        assert_eq!(key.result(StatusCode::NOT_FOUND, b"", 0).unwrap(), Value::Null);
        assert_eq!(
            key.result(StatusCode::OK, br#"[{"Key":"k"}]"#, 0).unwrap(),
            serde_json::json!({"Key": "k"})
        );
        assert!(
            key.result(StatusCode::FORBIDDEN, b"Permission denied", 0)
                .is_err()
        );
    }

    #[test]
    fn an_event_watch_hands_on_only_newer_events() {
        let first = "00000000-0000-0000-0000-000000000001";
        let second = "00000000-0000-0000-0000-000000000002";
        let body = format!(r#"[{{"ID":"{first}"}},{{"ID":"{second}"}}]"#);
        let view = View::Event { name: None };
        let all = view.result(StatusCode::OK, body.as_bytes(), 0).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2);
        let newer = view.result(StatusCode::OK, body.as_bytes(), 1).unwrap();
        assert_eq!(newer, serde_json::json!([{ "ID": second }]));
    }
}
