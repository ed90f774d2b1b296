//! `tribune monitor` and `tribune reload`: the agent's log lines as they are written
//! (`/v1/agent/monitor`), and a reload of its configuration (`/v1/agent/reload`), as Consul's
//! commands.

use std::io::Write as _;
use std::process::ExitCode;

use http_body_util::BodyExt as _;
use hyper::Method;

use super::http::{add_query_param, full_body};
use super::{CliError, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct MonitorArgs {
    /// The lowest level streamed: trace, debug, info, warn or err.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// Lines as JSON objects.
    #[arg(long = "log-json")]
    log_json: bool,
}

/// The monitor request the flags describe.
fn monitor_path(args: &MonitorArgs) -> String {
    let path = add_query_param("/v1/agent/monitor", "loglevel", &args.log_level);
    if args.log_json {
        add_query_param(&path, "logjson", "true")
    } else {
        path
    }
}

/// Streams until the agent closes the stream or the command is interrupted.
pub(crate) async fn monitor(args: MonitorArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    let response = client
        .send(Method::GET, &monitor_path(&args), full_body(Vec::new()))
        .await
        .map_err(|error| error.context("Error starting monitor"))?;
    let (parts, mut body) = response.into_parts();
    if !parts.status.is_success() {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(CliError::Status {
            status: parts.status.as_u16(),
            body: String::from_utf8_lossy(&text).trim().to_owned(),
        }
        .context("Error starting monitor"));
    }
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        // A closed stdout (`| head`) ends the command quietly.
                        if stdout.write_all(data).and_then(|()| stdout.flush()).is_err() {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
                Some(Err(error)) => return Err(CliError::Failed(format!("Remote side ended the monitor! {error}"))),
                None => {
                    println!("Remote side ended the monitor! This usually means that the\nremote side has exited or crashed.");
                    return Ok(ExitCode::FAILURE);
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `tribune reload`.
pub(crate) async fn reload(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    client
        .call(Method::PUT, "/v1/agent/reload", Vec::new())
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("Error reloading"))?;
    println!("Configuration reload triggered");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_consuls_monitor_request() {
        let plain = MonitorArgs {
            log_level: "debug".into(),
            log_json: false,
        };
        assert_eq!(monitor_path(&plain), "/v1/agent/monitor?loglevel=debug");
        let json = MonitorArgs {
            log_level: "info".into(),
            log_json: true,
        };
        assert_eq!(
            monitor_path(&json),
            "/v1/agent/monitor?loglevel=info&logjson=true"
        );
    }
}
