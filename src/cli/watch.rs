//! `tribune watch`: Consul's watch command. It runs blocking queries against the agent for one
//! data view (`key`, `keyprefix`, `services`, `nodes`, `service`, `checks`, `event`) and, on the
//! first result and on every change, hands the result as JSON on stdin to a handler (with
//! `CONSUL_INDEX` in its environment). Without a handler it prints the first result and exits.
//! As Consul's, a handler that fails ends the watch with status 1.
//!
//! The views, the change rule and the script handler are the library's (`tribune::watches`), which
//! also runs the agent-side `watches` of a configuration file, with HTTP handlers too. A handler's own long flags (`-flag`) are rewritten by the
//! command line's single-dash handling: put handlers with such flags after `--` or in one
//! shell string.

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;
use tribune::watches::{Handler, View, ViewParams, WatchError, backoff, is_change};

use super::http::{ApiClient, add_query_param};
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

/// The view the flags ask for, with Consul's complaints.
fn view_of(args: &WatchArgs) -> Result<View, CliError> {
    let params = ViewParams {
        kind: args.kind.clone(),
        key: args.key.clone(),
        prefix: args.prefix.clone(),
        service: args.service.clone(),
        tags: args.tag.clone(),
        passing_only: args.passingonly,
        state: args.state.clone(),
        name: args.name.clone(),
    };
    View::from_params(&params).map_err(|e| CliError::Usage(e.to_string()))
}

pub(crate) async fn run(args: WatchArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let view = view_of(&args)?;
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
        let handler = Handler::Script {
            args: args.handler.clone(),
            shell: args.shell,
        };
        if let Err(message) = handler.run(&result, index).await {
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
    let result = view
        .result(reply.status, &reply.body, last_index)
        .map_err(|error| match error {
            WatchError::Status { status, body } => CliError::Status { status, body },
            other => CliError::Decode {
                what: "the agent's answer",
                reason: other.to_string(),
            },
        })?;
    Ok((result, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_the_view() {
        let args = |kind: &str| WatchArgs {
            kind: Some(kind.into()),
            key: Some("k".into()),
            prefix: None,
            service: None,
            tag: Vec::new(),
            passingonly: false,
            state: None,
            name: None,
            shell: true,
            stale: false,
            handler: Vec::new(),
        };
        assert_eq!(view_of(&args("key")).unwrap(), View::Key("k".into()));
        assert!(
            matches!(view_of(&args("keyprefix")), Err(CliError::Usage(m)) if m == "Must specify a single prefix to watch")
        );
    }
}
