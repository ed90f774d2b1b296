//! `tribune replicate`: consul-replicate's daemon, with its flags and configuration files, over the
//! tribune-replicate engine (which does not delete a destination wholesale because a source answered
//! empty or stale).
//!
//! - `args.rs`: the flags; `file.rs`: the HCL/JSON files; `settings.rs`: the layers they make, merged
//!   (files in order, then flags) and resolved against the environment and the defaults.
//! - `run.rs`: the process: logging, pid file, the session lock, the replicator, signals (SIGHUP
//!   reloads), exit codes; `metrics.rs`: the Prometheus endpoint.
//!
//! It talks to one local agent over HTTP (`-consul-addr`, default 127.0.0.1:8500), which forwards the
//! source reads to the source datacenter, exactly as consul-replicate does.

use std::process::ExitCode;

mod args;
mod file;
mod metrics;
mod run;
mod settings;

pub(crate) use args::ReplicateArgs;

use super::{CliError, GlobalArgs};

/// Runs `tribune replicate`.
pub(crate) async fn run(args: ReplicateArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    if args.version {
        println!("tribune replicate v{}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    run::run(args, global).await
}

/// Everything that can stop the command, worded for the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicateCliError {
    /// A configuration file could not be read.
    #[error(transparent)]
    File(#[from] file::FileError),
    /// The settings cannot run.
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
}

impl From<ReplicateCliError> for CliError {
    fn from(error: ReplicateCliError) -> Self {
        CliError::Failed(error.to_string())
    }
}
