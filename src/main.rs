//! The `tribune` binary: `tribune agent` runs a node; the other verbs (`kv`, `snapshot`, `acl`,
//! `operator`, `lock`, `keygen`, `bench`) are Consul's command line over the agent's HTTP API.
//! See `tribune --help`, or the "Using the CLI" section of the README.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
