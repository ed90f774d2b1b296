//! What a watch runs on a change: a script with the result as JSON on stdin and `CONSUL_INDEX` in
//! its environment, or an HTTP request carrying the result as its body with `X-Consul-Index`, as
//! Consul's watch handlers do.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::checks::{CheckStatus, HttpProbe};

/// Consul's default timeout of an HTTP handler.
pub(crate) const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an HTTP handler's answer is kept for the log.
const ANSWER_LIMIT: usize = 4096;

/// A watch's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Handler {
    /// A program and its arguments; one string through `sh -c` when `shell`.
    Script {
        /// The program and its arguments (or one shell command).
        args: Vec<String>,
        /// Whether a single string is run by `sh -c`.
        shell: bool,
    },
    /// An HTTP request to `path` (a full URL).
    Http(HttpHandler),
}

/// Consul's `http_handler_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpHandler {
    /// The URL called.
    pub path: String,
    /// The method (default POST).
    pub method: String,
    /// Headers added to the request.
    pub header: BTreeMap<String, Vec<String>>,
    /// How long the request may take.
    pub timeout: Duration,
    /// Whether an HTTPS server's certificate goes unchecked.
    pub tls_skip_verify: bool,
}

impl Handler {
    /// Hands `result`, read at `index`, to the handler; why it failed otherwise.
    pub async fn run(&self, result: &Value, index: u64) -> Result<(), String> {
        match self {
            Handler::Script { args, shell } => run_script(args, *shell, result, index).await,
            Handler::Http(http) => http.call(result, index).await,
        }
    }
}

impl HttpHandler {
    async fn call(&self, result: &Value, index: u64) -> Result<(), String> {
        let mut header = self.header.clone();
        header
            .entry("Content-Type".into())
            .or_insert_with(|| vec!["application/json".into()]);
        header.insert("X-Consul-Index".into(), vec![index.to_string()]);
        let probe = HttpProbe {
            url: self.path.clone(),
            method: self.method.clone(),
            header,
            body: result.to_string(),
            tls_skip_verify: self.tls_skip_verify,
            tls_server_name: String::new(),
            disable_redirects: false,
            timeout: self.timeout,
            output_limit: ANSWER_LIMIT,
        };
        let outcome = probe.run().await;
        // A 2xx answer is what a passing HTTP check is.
        if outcome.status == CheckStatus::Passing {
            Ok(())
        } else {
            Err(outcome.output)
        }
    }
}

/// Runs the script with the result on stdin and `CONSUL_INDEX` set; why it failed otherwise.
async fn run_script(args: &[String], shell: bool, result: &Value, index: u64) -> Result<(), String> {
    let mut command = match args {
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

    #[tokio::test]
    async fn a_script_gets_the_result_on_stdin_and_the_index_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let handler = Handler::Script {
            args: vec![format!(
                "cat > {}; echo \" $CONSUL_INDEX\" >> {}",
                out.display(),
                out.display()
            )],
            shell: true,
        };
        handler.run(&serde_json::json!({"k": 1}), 42).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"k\":1}\n 42\n");
        let failing = Handler::Script {
            args: vec!["false".into()],
            shell: false,
        };
        assert!(failing.run(&Value::Null, 1).await.is_err());
    }
}
