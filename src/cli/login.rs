//! `tribune login` and `tribune logout`: trade a credential an auth method accepts for a token, and
//! give such a token back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hyper::Method;
use serde_json::{Value, json};

use super::http::{ApiClient, Target};
use super::{CliError, GlobalArgs};

/// `tribune login`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// The auth method to log in with.
    #[arg(long)]
    method: String,
    /// Accepted for Consul's command line; the method's stored type is what counts.
    #[arg(long = "type")]
    _method_type: Option<String>,
    /// A file holding the bearer token (a JWT) the method verifies.
    #[arg(long = "bearer-token-file", value_name = "PATH")]
    bearer_token_file: PathBuf,
    /// Where the new token's SecretID is written (mode 0600).
    #[arg(long = "token-sink-file", value_name = "PATH")]
    token_sink_file: PathBuf,
    /// Metadata for the new token's description, `key=value`; repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

pub(crate) async fn login(args: LoginArgs, global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let meta = parse_meta(&args.meta)?;
    let bearer = std::fs::read_to_string(&args.bearer_token_file)
        .map_err(|source| CliError::io(args.bearer_token_file.display(), source))?;
    let bearer = bearer.trim();
    if bearer.is_empty() {
        return Err(CliError::Failed(format!(
            "No bearer token found in {}",
            args.bearer_token_file.display()
        )));
    }
    // A login proves who it is with the bearer token alone; whatever token the environment names
    // is not sent.
    let mut target =
        Target::resolve(global.http_addr.as_deref(), None)?.with_datacenter(global.datacenter.as_deref());
    target.token = None;
    let mut client = ApiClient::new(target);
    let body = json!({ "AuthMethod": args.method, "BearerToken": bearer, "Meta": meta }).to_string();
    let token: Value = client
        .call(Method::POST, "/v1/acl/login", body)
        .await
        .and_then(|reply| reply.ok())
        .and_then(|reply| reply.json())
        .map_err(|error| error.context("Error logging in"))?;
    let secret = token
        .get("SecretID")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::Failed("Error logging in: the agent's answer has no SecretID".into()))?;
    write_sink(&args.token_sink_file, secret)
        .map_err(|error| error.context("Error writing token to file sink"))?;
    Ok(ExitCode::SUCCESS)
}

/// `tribune logout`: deletes the token the command runs with (-token or the environment's), which
/// must be one a login minted.
pub(crate) async fn logout(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let mut client = global.client()?;
    client
        .call(Method::POST, "/v1/acl/logout", "")
        .await
        .and_then(|reply| reply.ok())
        .map_err(|error| error.context("Error destroying token"))?;
    Ok(ExitCode::SUCCESS)
}

fn parse_meta(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(CliError::Usage(format!(
                "Meta {pair:?} is not in the form key=value"
            ))),
        })
        .collect()
}

/// Writes the secret to a temporary file beside `path`, readable by its owner only, then renames it
/// into place, so a reader never sees half a secret.
fn write_sink(path: &Path, secret: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let file_name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{} names no file", path.display())))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options
        .open(&temporary)
        .and_then(|mut file| file.write_all(secret.as_bytes()).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        CliError::io(path.display(), source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_pairs_need_a_key_and_an_equals_sign() {
        let meta = parse_meta(&["pod=web-1".into(), "empty=".into()]).unwrap();
        assert_eq!(meta.get("pod").map(String::as_str), Some("web-1"));
        assert_eq!(meta.get("empty").map(String::as_str), Some(""));
        assert!(parse_meta(&["novalue".into()]).is_err());
        assert!(parse_meta(&["=x".into()]).is_err());
    }

    #[test]
    fn the_sink_holds_exactly_the_secret_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("token");
        std::fs::write(&sink, "an older, longer secret").unwrap();
        write_sink(&sink, "s3cret").unwrap();
        assert_eq!(std::fs::read_to_string(&sink).unwrap(), "s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
