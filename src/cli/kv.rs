//! `tribune kv get|put|delete|export|import`: Consul's KV commands, flags and messages.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::http::{ApiClient, encode_key, encode_query_value};
use super::{CliError, GlobalArgs, read_value_arg};

/// The KV verbs.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KvCommand {
    /// Reads a key's value, or a prefix with -recurse / -keys.
    Get(GetArgs),
    /// Writes a value: literal, `@file`, or `-` for stdin.
    Put(PutArgs),
    /// Deletes a key, or a prefix with -recurse.
    Delete(DeleteArgs),
    /// Prints a prefix as JSON for `kv import`.
    Export(ExportArgs),
    /// Writes the entries of a `kv export` document: literal JSON, `@file`, or `-` for stdin.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// The key (or prefix).
    key: Option<String>,
    /// Read every key under the prefix, printed as `key:value`.
    #[arg(long)]
    recurse: bool,
    /// List the keys under the prefix.
    #[arg(long)]
    keys: bool,
    /// With -keys: roll keys up to the first separator after the prefix ("" for none).
    #[arg(long, default_value = "/")]
    separator: String,
    /// Print every field of the entry, not just its value.
    #[arg(long)]
    detailed: bool,
    /// Print values in base64.
    #[arg(long)]
    base64: bool,
    /// Let any server answer, possibly with stale data.
    #[arg(long)]
    stale: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PutArgs {
    /// The key.
    key: Option<String>,
    /// The value: literal, `@file` to read a file, `-` to read stdin; empty when absent.
    value: Option<String>,
    /// The value is base64; decode it before writing.
    #[arg(long)]
    base64: bool,
    /// Write only if the key's modify index is -modify-index (0: only if absent).
    #[arg(long)]
    cas: bool,
    /// The modify index -cas compares with.
    #[arg(long = "modify-index", value_name = "INDEX")]
    modify_index: Option<u64>,
    /// An opaque 64-bit number stored with the value.
    #[arg(long, value_name = "N")]
    flags: Option<u64>,
    /// Acquire the key's lock for -session.
    #[arg(long)]
    acquire: bool,
    /// Release the key's lock held by -session.
    #[arg(long)]
    release: bool,
    /// The session for -acquire / -release.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The key (or prefix).
    key: Option<String>,
    /// Delete every key under the prefix.
    #[arg(long)]
    recurse: bool,
    /// Delete only if the key's modify index is -modify-index.
    #[arg(long)]
    cas: bool,
    /// The modify index -cas compares with.
    #[arg(long = "modify-index", value_name = "INDEX")]
    modify_index: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// The prefix to export (everything when absent).
    prefix: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The document: literal JSON, `@file`, or `-` for stdin.
    data: Option<String>,
    /// Put this in front of every imported key.
    #[arg(long, default_value = "")]
    prefix: String,
}

/// An entry as `GET /v1/kv/...` returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

impl KvPair {
    fn value_bytes(&self) -> Result<Vec<u8>, CliError> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(encoded) => BASE64.decode(encoded).map_err(|error| CliError::Decode {
                what: "a value from the agent",
                reason: format!("{}: {error}", self.key),
            }),
        }
    }
}

/// One entry of Consul's `kv export` document.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExportedEntry {
    pub(crate) key: String,
    pub(crate) flags: u64,
    /// Base64.
    pub(crate) value: String,
}

pub(crate) async fn run(command: KvCommand, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    match command {
        KvCommand::Get(args) => get(&mut client, args).await,
        KvCommand::Put(args) => put(&mut client, args).await,
        KvCommand::Delete(args) => delete(&mut client, args).await,
        KvCommand::Export(args) => export(&mut client, args).await,
        KvCommand::Import(args) => import(&mut client, args).await,
    }
}

/// Refuses a key Consul's CLI refuses, and a missing one where a key is required.
fn check_key(key: Option<String>, required: bool) -> Result<String, CliError> {
    let key = match key {
        Some(key) => key,
        None if required => return Err(CliError::Usage("! Missing KEY argument".into())),
        None => String::new(),
    };
    if key.starts_with('/') {
        return Err(CliError::Usage(format!(
            "! Key {key:?} must not begin with a '/'"
        )));
    }
    Ok(key)
}

fn querying(error: CliError) -> CliError {
    error.context("querying agent")
}

fn write_out(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(|source| CliError::io("stdout", source))
}

async fn get(client: &mut ApiClient, args: GetArgs) -> Result<ExitCode, CliError> {
    let listing = args.recurse || args.keys;
    let key = check_key(args.key, !listing)?;
    let stale = if args.stale { "&stale" } else { "" };
    if args.keys {
        let path = format!(
            "/v1/kv/{}?keys&separator={}{stale}",
            encode_key(&key),
            encode_query_value(&args.separator)
        );
        let reply = client.call(Method::GET, &path, "").await.map_err(querying)?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(ExitCode::SUCCESS);
        }
        let keys: Vec<String> = reply.ok().and_then(|reply| reply.json()).map_err(querying)?;
        for key in keys {
            println!("{key}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let recurse = if args.recurse { "?recurse" } else { "?" };
    let path = format!("/v1/kv/{}{recurse}{stale}", encode_key(&key));
    let reply = client.call(Method::GET, &path, "").await.map_err(querying)?;
    if reply.status == StatusCode::NOT_FOUND {
        if args.recurse {
            return Ok(ExitCode::SUCCESS);
        }
        return Err(CliError::Failed(format!("! No key exists at: {key}")));
    }
    let pairs: Vec<KvPair> = reply.ok().and_then(|reply| reply.json()).map_err(querying)?;
    for (i, pair) in pairs.iter().enumerate() {
        let value = pair.value_bytes()?;
        let shown = if args.base64 {
            BASE64.encode(&value).into_bytes()
        } else {
            value
        };
        if args.detailed {
            if i > 0 {
                println!();
            }
            print_detailed(pair, &shown);
        } else if args.recurse {
            let mut line = format!("{}:", pair.key).into_bytes();
            line.extend_from_slice(&shown);
            write_out(&line)?;
        } else {
            write_out(&shown)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_detailed(pair: &KvPair, shown_value: &[u8]) {
    let session = pair.session.as_deref().filter(|s| !s.is_empty()).unwrap_or("-");
    for (name, value) in [
        ("CreateIndex", pair.create_index.to_string()),
        ("Flags", pair.flags.to_string()),
        ("Key", pair.key.clone()),
        ("LockIndex", pair.lock_index.to_string()),
        ("ModifyIndex", pair.modify_index.to_string()),
        ("Session", session.to_owned()),
        ("Value", String::from_utf8_lossy(shown_value).into_owned()),
    ] {
        println!("{name:<16} {value}");
    }
}

async fn put(client: &mut ApiClient, args: PutArgs) -> Result<ExitCode, CliError> {
    let key = check_key(args.key, true)?;
    if args.cas && args.modify_index.is_none() {
        return Err(CliError::Usage("! Must specify -modify-index with -cas!".into()));
    }
    if (args.acquire || args.release) && args.session.is_none() {
        return Err(CliError::Usage(
            "! Missing -session (required with -acquire and -release)".into(),
        ));
    }
    if args.acquire && args.release {
        return Err(CliError::Usage(
            "! Cannot specify both -acquire and -release".into(),
        ));
    }
    let mut value = match &args.value {
        Some(arg) => read_value_arg(arg)?,
        None => Vec::new(),
    };
    if args.base64 {
        value = BASE64
            .decode(&value)
            .map_err(|error| CliError::Usage(format!("! Cannot base 64 decode value: {error}")))?;
    }
    let mut query = Vec::new();
    if let Some(flags) = args.flags {
        query.push(format!("flags={flags}"));
    }
    if let (true, Some(index)) = (args.cas, args.modify_index) {
        query.push(format!("cas={index}"));
    }
    let session = args
        .session
        .as_deref()
        .map(encode_query_value)
        .unwrap_or_default();
    if args.acquire {
        query.push(format!("acquire={session}"));
    }
    if args.release {
        query.push(format!("release={session}"));
    }
    let path = format!("/v1/kv/{}?{}", encode_key(&key), query.join("&"));
    let reply = client
        .call(Method::PUT, &path, value)
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context(&format!("! Failed writing data for {key}")))?;
    let written: bool = reply.json()?;
    match (written, args.acquire, args.release, args.cas) {
        (true, true, _, _) => println!("Success! Lock acquired on: {key}"),
        (true, _, true, _) => println!("Success! Lock released on: {key}"),
        (true, ..) => println!("Success! Data written to: {key}"),
        (false, true, _, _) => return Err(CliError::Failed(format!("! Failed to acquire lock on: {key}"))),
        (false, _, true, _) => return Err(CliError::Failed(format!("! Failed to release lock on: {key}"))),
        (false, _, _, true) => return Err(CliError::Failed(format!("! Did not write to {key}: CAS failed"))),
        (false, ..) => return Err(CliError::Failed(format!("! Failed writing data to: {key}"))),
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(client: &mut ApiClient, args: DeleteArgs) -> Result<ExitCode, CliError> {
    let key = check_key(args.key, !args.recurse)?;
    if args.cas && args.recurse {
        return Err(CliError::Usage("! Cannot specify both -cas and -recurse!".into()));
    }
    if args.cas && args.modify_index.is_none() {
        return Err(CliError::Usage("! Must specify -modify-index with -cas!".into()));
    }
    if !args.cas && args.modify_index.is_some() {
        return Err(CliError::Usage(
            "! Cannot specify -modify-index without -cas!".into(),
        ));
    }
    let query = match (args.recurse, args.modify_index) {
        (true, _) => "?recurse".to_owned(),
        (false, Some(index)) => format!("?cas={index}"),
        (false, None) => String::new(),
    };
    let path = format!("/v1/kv/{}{query}", encode_key(&key));
    let reply = client
        .call(Method::DELETE, &path, "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context(&format!("! Error deleting key {key}")))?;
    let deleted: bool = reply.json()?;
    if !deleted {
        return Err(CliError::Failed(format!(
            "! Did not delete key {key}: CAS failed"
        )));
    }
    if args.recurse {
        println!("Success! Deleted keys with prefix: {key}");
    } else {
        println!("Success! Deleted key: {key}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(client: &mut ApiClient, args: ExportArgs) -> Result<ExitCode, CliError> {
    let prefix = check_key(args.prefix, false)?;
    let path = format!("/v1/kv/{}?recurse", encode_key(&prefix));
    let reply = client.call(Method::GET, &path, "").await.map_err(querying)?;
    let pairs: Vec<KvPair> = if reply.status == StatusCode::NOT_FOUND {
        Vec::new()
    } else {
        reply.ok().and_then(|reply| reply.json()).map_err(querying)?
    };
    let entries: Vec<ExportedEntry> = pairs
        .into_iter()
        .map(|pair| ExportedEntry {
            value: pair.value.unwrap_or_default(),
            key: pair.key,
            flags: pair.flags,
        })
        .collect();
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    entries
        .serialize(&mut serializer)
        .map_err(|error| CliError::Failed(format!("encoding the export: {error}")))?;
    write_out(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Imports at least this many entries show a progress line on stderr.
const PROGRESS_THRESHOLD: usize = 1000;

async fn import(client: &mut ApiClient, args: ImportArgs) -> Result<ExitCode, CliError> {
    let data = match &args.data {
        Some(arg) => read_value_arg(arg)?,
        None => {
            return Err(CliError::Usage(
                "! Missing DATA argument (JSON, @file, or - for stdin)".into(),
            ));
        }
    };
    let entries: Vec<ExportedEntry> = serde_json::from_slice(&data)
        .map_err(|error| CliError::Failed(format!("! Cannot unmarshal data: {error}")))?;
    let total = entries.len();
    let progress = Progress::new(total >= PROGRESS_THRESHOLD, total);
    for (done, entry) in entries.into_iter().enumerate() {
        let value = BASE64.decode(&entry.value).map_err(|error| {
            CliError::Failed(format!("! Cannot base 64 decode value of {}: {error}", entry.key))
        })?;
        let key = format!("{}{}", args.prefix, entry.key);
        let path = format!("/v1/kv/{}?flags={}", encode_key(&key), entry.flags);
        client
            .call(Method::PUT, &path, value)
            .await
            .and_then(|reply| reply.ok())
            .map_err(|error| error.context(&format!("! Failed writing data for key {key}")))?;
        println!("Imported: {key}");
        progress.update(done + 1);
    }
    progress.finish();
    Ok(ExitCode::SUCCESS)
}

/// A progress line on stderr: redrawn in place on a terminal, every tenth otherwise.
pub(crate) struct Progress {
    enabled: bool,
    total: usize,
    terminal: bool,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total: usize) -> Self {
        Progress {
            enabled,
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub(crate) fn update(&self, done: usize) {
        if !self.enabled || self.total == 0 {
            return;
        }
        let percent = done * 100 / self.total;
        if self.terminal {
            eprint!("\r==> {done}/{} ({percent}%)", self.total);
        } else if done * 10 / self.total != (done - 1) * 10 / self.total {
            eprintln!("==> {done}/{} ({percent}%)", self.total);
        }
    }

    pub(crate) fn finish(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}
