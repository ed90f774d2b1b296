//! `tribune lock PREFIX CHILD...`: Consul's `consul lock`. Creates a session, acquires `PREFIX/.lock`,
//! runs the child while the lock is held, and releases the lock and destroys the session when the
//! child exits. If the lock is lost (session invalidated, key taken), the child is stopped.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use super::http::{ApiClient, encode_key, encode_query_value};
use super::{CliError, GlobalArgs};

/// The flags of `lock` that take a separate value, so argument normalisation can find the child.
pub(crate) const FLAGS_WITH_VALUES: &[&str] =
    &["n", "name", "timeout", "monitor-retry", "http-addr", "token"];

/// The flags value Consul's lock helper stores on a lock key, so other tools recognise it.
const LOCK_FLAG_VALUE: u64 = 0x2ddc_cbc0_58a5_0c18;
/// The session TTL; the session is renewed at half of it.
const SESSION_TTL: Duration = Duration::from_secs(15);
/// How long a blocking read of the lock key waits before asking again.
const MONITOR_WAIT: &str = "15s";
/// The pause before retrying an acquire refused while nobody holds the key (lock-delay).
const LOCK_DELAY_RETRY: Duration = Duration::from_secs(1);
/// How long the child has to exit after SIGTERM before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `tribune lock`.
#[derive(Debug, clap::Args)]
pub(crate) struct LockArgs {
    /// The KV prefix; the lock key is `PREFIX/.lock`.
    prefix: String,
    /// The command to run while holding the lock.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    child: Vec<String>,
    /// How many holders at once; only 1 (a lock) is supported.
    #[arg(short = 'n', default_value_t = 1)]
    limit: u32,
    /// The session's name.
    #[arg(long)]
    name: Option<String>,
    /// Give up acquiring after this long (0: wait forever).
    #[arg(long, default_value = "0s", value_parser = tribune::duration::parse_go_duration)]
    timeout: Duration,
    /// Run the child through `sh -c` (false: execute it directly).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, default_value = "true")]
    shell: bool,
    /// Pass this command's stdin to the child.
    #[arg(long = "pass-stdin")]
    pass_stdin: bool,
    /// Exit with the child's exit code instead of 2 when it fails.
    #[arg(long = "child-exit-code")]
    child_exit_code: bool,
    /// Print what the lock is doing.
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockEntry {
    #[serde(default)]
    session: Option<String>,
}

pub(crate) async fn run(args: LockArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    if args.limit != 1 {
        return Err(CliError::Usage(
            "semaphores (-n above 1) are not supported; use -n=1".into(),
        ));
    }
    let key = format!("{}/.lock", args.prefix.trim_end_matches('/'));
    let mut client = global.client()?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("Tribune lock for {:?} at {:?}", args.child.join(" "), args.prefix));
    let session = create_session(&mut client, &name).await?;
    let verbose = |message: &str| {
        if args.verbose {
            println!("{message}");
        }
    };
    verbose(&format!("Created session {session}"));

    let renewer = tokio::spawn(renew(global.client()?, session.clone()));
    let acquired = if args.timeout.is_zero() {
        acquire(&mut client, &key, &session).await
    } else {
        tokio::time::timeout(args.timeout, acquire(&mut client, &key, &session))
            .await
            .unwrap_or_else(|_| Err(CliError::Failed("Lock acquisition failed: timeout".into())))
    };
    if let Err(error) = acquired {
        renewer.abort();
        let _ = destroy_session(&mut client, &session).await;
        return Err(error);
    }
    verbose(&format!("Lock acquired on {key}"));

    let result = hold(&args, global, &key, &session).await;
    renewer.abort();
    // Release first, so a waiter gets the lock without the session's lock-delay.
    let released = release(&mut client, &key, &session).await;
    let destroyed = destroy_session(&mut client, &session).await;
    verbose("Lock released");
    let code = result?;
    released?;
    destroyed?;
    Ok(code)
}

/// Runs the child while watching the lock; returns this command's exit code.
async fn hold(args: &LockArgs, global: &GlobalArgs, key: &str, session: &str) -> Result<ExitCode, CliError> {
    let mut command = if args.shell {
        let mut command = tokio::process::Command::new("sh");
        command.arg("-c").arg(args.child.join(" "));
        command
    } else {
        let mut command = tokio::process::Command::new(&args.child[0]);
        command.args(&args.child[1..]);
        command
    };
    if !args.pass_stdin {
        command.stdin(Stdio::null());
    }
    let mut child = command
        .spawn()
        .map_err(|error| CliError::Failed(format!("starting child {:?}: {error}", args.child.join(" "))))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let monitor = monitor(global.client()?, key.to_owned(), session.to_owned());
    tokio::pin!(monitor);
    let status = tokio::select! {
        status = child.wait() => status.map_err(|error| CliError::Failed(format!("waiting for the child: {error}")))?,
        lost = &mut monitor => {
            eprintln!("Lock lost ({lost}), stopping child");
            stop_child(&mut child).await;
            return Ok(ExitCode::FAILURE);
        }
        _ = interrupt.recv() => {
            stop_child(&mut child).await;
            return Ok(ExitCode::FAILURE);
        }
        _ = terminate.recv() => {
            stop_child(&mut child).await;
            return Ok(ExitCode::FAILURE);
        }
    };
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("Child terminated: {status}");
    if args.child_exit_code {
        let code = status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(1);
        Ok(ExitCode::from(code))
    } else {
        Ok(ExitCode::from(2))
    }
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // `kill` keeps this binary free of libc bindings for one signal.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn create_session(client: &mut ApiClient, name: &str) -> Result<String, CliError> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "ID")]
        id: String,
    }
    let body = json!({
        "Name": name,
        "TTL": format!("{}s", SESSION_TTL.as_secs()),
        "Behavior": "release",
    })
    .to_string();
    let created: Created = client
        .call(Method::PUT, "/v1/session/create", body)
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("creating session"))?;
    Ok(created.id)
}

async fn destroy_session(client: &mut ApiClient, session: &str) -> Result<(), CliError> {
    client
        .call(Method::PUT, &format!("/v1/session/destroy/{session}"), "")
        .await
        .and_then(|reply| reply.ok())
        .map(|_| ())
        .map_err(|error| error.context("destroying session"))
}

/// Renews the session at half its TTL until aborted or the session is gone.
async fn renew(mut client: ApiClient, session: String) {
    let mut ticker = tokio::time::interval(SESSION_TTL / 2);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match client
            .call(Method::PUT, &format!("/v1/session/renew/{session}"), "")
            .await
        {
            Ok(reply) if reply.status == StatusCode::NOT_FOUND => return,
            Ok(_) => {}
            // A failed renewal is retried at the next tick; the monitor notices a lost lock.
            Err(error) => eprintln!("Error renewing session: {error}"),
        }
    }
}

/// Acquires the lock, waiting for the holder to let go.
async fn acquire(client: &mut ApiClient, key: &str, session: &str) -> Result<(), CliError> {
    let path = format!(
        "/v1/kv/{}?acquire={}&flags={LOCK_FLAG_VALUE}",
        encode_key(key),
        encode_query_value(session)
    );
    loop {
        let acquired: bool = client
            .call(Method::PUT, &path, "")
            .await
            .and_then(|reply| reply.ok())
            .and_then(|reply| reply.json())
            .map_err(|error| error.context("acquiring the lock"))?;
        if acquired {
            return Ok(());
        }
        // Wait for the holder to change, or for lock-delay to pass when nobody holds it.
        let (holder, index) = read_lock(client, key, None).await?;
        if holder.is_none() {
            tokio::time::sleep(LOCK_DELAY_RETRY).await;
        } else {
            let _ = read_lock(client, key, Some(index)).await?;
        }
    }
}

/// Reads the lock key (blocking on `index` when given): its holder and `X-Consul-Index`.
async fn read_lock(
    client: &mut ApiClient,
    key: &str,
    index: Option<u64>,
) -> Result<(Option<String>, u64), CliError> {
    let path = match index {
        Some(index) => format!("/v1/kv/{}?index={index}&wait={MONITOR_WAIT}", encode_key(key)),
        None => format!("/v1/kv/{}", encode_key(key)),
    };
    let reply = client
        .call(Method::GET, &path, "")
        .await
        .map_err(|error| error.context("reading the lock"))?;
    let index = reply.index().unwrap_or(1);
    if reply.status == StatusCode::NOT_FOUND {
        return Ok((None, index));
    }
    let entries: Vec<LockEntry> = reply.ok().and_then(|reply| reply.json())?;
    let holder = entries
        .into_iter()
        .next()
        .and_then(|entry| entry.session)
        .filter(|session| !session.is_empty());
    Ok((holder, index))
}

/// Returns when the lock is no longer held by `session`, with the reason.
async fn monitor(mut client: ApiClient, key: String, session: String) -> String {
    let mut index = None;
    let mut failures = 0;
    loop {
        match read_lock(&mut client, &key, index).await {
            Ok((holder, next)) => {
                failures = 0;
                if holder.as_deref() != Some(session.as_str()) {
                    return "the session no longer holds the key".to_owned();
                }
                index = Some(next);
            }
            Err(error) => {
                // A few failed reads in a row (agent restarting) are tolerated, as Consul's -monitor-retry.
                failures += 1;
                if failures > 3 {
                    return format!("cannot watch the lock: {error}");
                }
                tokio::time::sleep(LOCK_DELAY_RETRY).await;
            }
        }
    }
}

async fn release(client: &mut ApiClient, key: &str, session: &str) -> Result<(), CliError> {
    let path = format!(
        "/v1/kv/{}?release={}",
        encode_key(key),
        encode_query_value(session)
    );
    client
        .call(Method::PUT, &path, "")
        .await
        .and_then(|reply| reply.ok())
        .map(|_| ())
        .map_err(|error| error.context("releasing the lock"))
}
