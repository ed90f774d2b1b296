//! `tribune snapshot save|restore|inspect|agent`: archives of the whole state through `/v1/snapshot`.
//!
//! The archive is a tribune-snapshot file. `save` streams it to `<file>.unverified`, verifies it
//! (framing, record count, SHA-256) and only then renames it, as Consul does; `restore` verifies the
//! file before sending a byte; `inspect` works offline; `agent` saves periodically and keeps the newest
//! `-retain` archives.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper::{Method, StatusCode};
use tokio::signal::unix::{SignalKind, signal};
use tribune_snapshot::{Inspection, RecordKind};

use super::http::{ApiClient, RequestBody};
use super::kv::Progress;
use super::{CliError, GlobalArgs, columns};

/// The snapshot verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Saves a snapshot of the state to a file, verified before it takes the final name.
    Save(SaveArgs),
    /// Restores the state from a snapshot file (all or nothing).
    Restore(FileArg),
    /// Prints a snapshot file's metadata and record counts (offline).
    Inspect(FileArg),
    /// Saves snapshots periodically into a directory, keeping the newest -retain.
    Agent(AgentArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct SaveArgs {
    /// Where to write the snapshot.
    file: PathBuf,
    /// Let any server answer (the archive may be behind the leader).
    #[arg(long)]
    stale: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FileArg {
    /// The snapshot file.
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Time between saves.
    #[arg(long, default_value = "1h", value_parser = tribune::duration::parse_go_duration)]
    interval: Duration,
    /// How many snapshots to keep (0 keeps all).
    #[arg(long, default_value_t = 30)]
    retain: usize,
    /// The directory snapshots are written to.
    #[arg(long = "local-path", default_value = ".")]
    local_path: PathBuf,
    /// Let any server answer.
    #[arg(long)]
    stale: bool,
}

/// Archives at least this large show progress on stderr.
const PROGRESS_BYTES: u64 = 8 * 1024 * 1024;
/// The pieces a restore is sent in.
const UPLOAD_CHUNK_BYTES: usize = 64 * 1024;
/// Snapshot agent file names: `tribune-<unix ms>.snap`.
const AGENT_FILE_PREFIX: &str = "tribune-";
const AGENT_FILE_SUFFIX: &str = ".snap";

pub(crate) async fn run(command: SnapshotCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    match command {
        SnapshotCommand::Save(args) => {
            let mut client = global.client()?;
            let inspection = save(&mut client, &args.file, args.stale)
                .await
                .map_err(|error| error.context("saving snapshot"))?;
            println!("Saved and verified snapshot to index {}", inspection.meta.index);
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Restore(args) => {
            let mut client = global.client()?;
            restore(&mut client, &args.file)
                .await
                .map_err(|error| error.context("restoring snapshot"))?;
            println!("Restored snapshot");
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Inspect(args) => {
            let inspection =
                inspect_file(&args.file).map_err(|error| error.context("inspecting snapshot"))?;
            print!("{}", format_inspection(&inspection));
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Agent(args) => agent(global, args).await,
    }
}

fn inspect_file(path: &Path) -> Result<Inspection, CliError> {
    let file = std::fs::File::open(path).map_err(|source| CliError::io(path.display(), source))?;
    tribune_snapshot::inspect(std::io::BufReader::new(file))
        .map_err(|error| CliError::Failed(format!("{}: {error}", path.display())))
}

/// Downloads a snapshot into `<path>.unverified`, verifies it, then renames it to `path`.
async fn save(client: &mut ApiClient, path: &Path, stale: bool) -> Result<Inspection, CliError> {
    let query = if stale { "?stale" } else { "" };
    let response = client
        .send(
            Method::GET,
            &format!("/v1/snapshot{query}"),
            super::http::full_body(""),
        )
        .await?;
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(CliError::Status {
            status: parts.status.as_u16(),
            body: String::from_utf8_lossy(&text).trim().to_owned(),
        });
    }
    let expected: Option<u64> = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let unverified = tribune_snapshot::unverified_path(path)
        .map_err(|error| CliError::Failed(format!("{}: {error}", path.display())))?;
    let result = async {
        let mut file = std::fs::File::create(&unverified)
            .map_err(|source| CliError::io(unverified.display(), source))?;
        let progress = ByteProgress::new(expected);
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| CliError::Failed(format!("reading the snapshot: {error}")))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data)
                    .map_err(|source| CliError::io(unverified.display(), source))?;
                received += data.len() as u64;
                progress.update(received);
            }
        }
        progress.finish();
        file.sync_all()
            .map_err(|source| CliError::io(unverified.display(), source))?;
        let inspection = inspect_file(&unverified)?;
        std::fs::rename(&unverified, path).map_err(|source| CliError::io(path.display(), source))?;
        sync_parent(path);
        Ok(inspection)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&unverified);
    }
    result
}

/// Makes a rename durable. Best effort: some file systems refuse to sync a directory.
fn sync_parent(path: &Path) {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Verifies a snapshot file, then streams it to `PUT /v1/snapshot`.
async fn restore(client: &mut ApiClient, path: &Path) -> Result<(), CliError> {
    let inspection = inspect_file(path)?;
    let file = std::fs::File::open(path).map_err(|source| CliError::io(path.display(), source))?;
    let progress = ByteProgress::new(Some(inspection.total_bytes));
    let chunks = futures::stream::unfold((file, 0u64, progress), |(mut file, sent, progress)| async move {
        let mut buffer = vec![0; UPLOAD_CHUNK_BYTES];
        match file.read(&mut buffer) {
            Ok(0) => {
                progress.finish();
                None
            }
            Ok(read) => {
                buffer.truncate(read);
                let sent = sent + read as u64;
                progress.update(sent);
                Some((Ok(Frame::data(Bytes::from(buffer))), (file, sent, progress)))
            }
            Err(error) => Some((Err(error), (file, sent, progress))),
        }
    });
    let body: RequestBody = StreamBody::new(chunks).boxed_unsync();
    let response = client.send(Method::PUT, "/v1/snapshot", body).await?;
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status != StatusCode::OK {
        return Err(CliError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).trim().to_owned(),
        });
    }
    Ok(())
}

/// A friendly name for a kvstore record kind, in Consul's `snapshot inspect` vocabulary.
fn kind_name(kind: RecordKind) -> String {
    use tribune_kvstore as kv;
    let name = match kind {
        k if k == kv::KV_RECORD => "KVS",
        k if k == kv::TOMBSTONE_RECORD => "Tombstone",
        k if k == kv::SESSION_RECORD => "Session",
        k if k == kv::ACL_TOKEN_RECORD => "ACLToken",
        k if k == kv::ACL_POLICY_RECORD => "ACLPolicy",
        k if k == kv::TABLE_INDEX_RECORD => "Index",
        k if k == kv::ACL_BOOTSTRAP_RECORD => "ACLBootstrap",
        other => return format!("Unknown({other})"),
    };
    name.to_owned()
}

/// `snapshot inspect`'s output: the metadata, then count and size per record type, largest first.
pub(crate) fn format_inspection(inspection: &Inspection) -> String {
    let meta = &inspection.meta;
    let mut out = String::new();
    let head = [
        (
            "ID",
            format!("{}-{}-{}", meta.term, meta.index, meta.created_at_unix_ms),
        ),
        ("Size", inspection.total_bytes.to_string()),
        ("Index", meta.index.to_string()),
        ("Term", meta.term.to_string()),
        ("Version", inspection.format_version.to_string()),
        ("Datacenter", meta.datacenter.clone()),
        ("Producer", meta.producer.clone()),
        ("SHA-256", inspection.sha256_hex.clone()),
    ];
    for (name, value) in head {
        out.push_str(&format!(" {name:<12} {value}\n"));
    }
    out.push('\n');
    let mut kinds: Vec<(String, u64, u64)> = inspection
        .kinds
        .iter()
        .map(|(kind, stats)| (kind_name(*kind), stats.count, stats.bytes))
        .collect();
    kinds.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let rule = || vec![" ----".to_owned(), "----".to_owned(), "----".to_owned()];
    let mut rows = vec![
        vec![" Type".to_owned(), "Count".to_owned(), "Size".to_owned()],
        rule(),
    ];
    let mut total = 0;
    for (name, count, bytes) in kinds {
        total += bytes;
        rows.push(vec![format!(" {name}"), count.to_string(), bytes.to_string()]);
    }
    rows.push(rule());
    rows.push(vec![" Total".to_owned(), String::new(), total.to_string()]);
    out.push_str(&columns(&rows));
    out
}

/// Byte progress for large transfers.
struct ByteProgress {
    inner: Progress,
    enabled: bool,
}

impl ByteProgress {
    fn new(total: Option<u64>) -> Self {
        let total = total.unwrap_or(0);
        let enabled = total >= PROGRESS_BYTES;
        ByteProgress {
            // Progress counts in KiB so it fits usize comfortably everywhere.
            inner: Progress::new(enabled, usize::try_from(total / 1024).unwrap_or(usize::MAX)),
            enabled,
        }
    }

    fn update(&self, bytes: u64) {
        if self.enabled {
            self.inner
                .update(usize::try_from(bytes / 1024).unwrap_or(usize::MAX).max(1));
        }
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

async fn agent(global: &GlobalArgs, args: AgentArgs) -> Result<ExitCode, CliError> {
    if args.interval.is_zero() {
        return Err(CliError::Usage("-interval must be above zero".into()));
    }
    std::fs::create_dir_all(&args.local_path)
        .map_err(|source| CliError::io(args.local_path.display(), source))?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::Failed(format!("installing signal handlers: {error}")))?;
    let mut client = global.client()?;
    println!(
        "==> Snapshot agent running: every {}, keeping {} in {}",
        humantime::format_duration(args.interval),
        if args.retain == 0 {
            "all".to_owned()
        } else {
            args.retain.to_string()
        },
        args.local_path.display()
    );
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
        let name = format!("{AGENT_FILE_PREFIX}{}{AGENT_FILE_SUFFIX}", unix_ms());
        let path = args.local_path.join(name);
        // A failed save is reported and retried at the next tick; the agent keeps running.
        match save(&mut client, &path, args.stale).await {
            Ok(inspection) => {
                println!(
                    "Saved snapshot {} (index {})",
                    path.display(),
                    inspection.meta.index
                );
                if let Err(error) = prune(&args.local_path, args.retain) {
                    eprintln!("Error removing old snapshots: {error}");
                }
            }
            Err(error) => eprintln!("Error saving snapshot: {error}"),
        }
    }
    println!("==> Snapshot agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Removes the oldest agent snapshots beyond `retain` (0 keeps all).
fn prune(dir: &Path, retain: usize) -> Result<(), CliError> {
    if retain == 0 {
        return Ok(());
    }
    let mut saved: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|source| CliError::io(dir.display(), source))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let stamp = name
                .strip_prefix(AGENT_FILE_PREFIX)?
                .strip_suffix(AGENT_FILE_SUFFIX)?
                .parse()
                .ok()?;
            Some((stamp, entry.path()))
        })
        .collect();
    saved.sort();
    let excess = saved.len().saturating_sub(retain);
    for (_, path) in saved.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(|source| CliError::io(path.display(), source))?;
    }
    Ok(())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for stamp in [5, 1, 3, 4, 2] {
            std::fs::write(dir.path().join(format!("tribune-{stamp}.snap")), b"x").unwrap();
        }
        std::fs::write(dir.path().join("other.snap"), b"x").unwrap();
        prune(dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["other.snap", "tribune-4.snap", "tribune-5.snap"]);
    }
}
