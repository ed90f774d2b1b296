//! Script checks: run a program (no shell) with its output captured, bounded and timed.

use std::io::Read as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::CheckStatus;
use super::runner::Outcome;
use super::status::{TailBuffer, exit_status, go_io_error};
use crate::duration::format_go_duration;

/// One script check's command line and bounds.
pub(super) struct ScriptProbe {
    pub(super) args: Vec<String>,
    pub(super) timeout: Duration,
    pub(super) output_limit: usize,
}

impl ScriptProbe {
    /// Consul's `CheckMonitor.check`: exit 0 passing, 1 warning, anything else critical, with stdout
    /// and stderr together as the output (the last bytes, after `Captured N of M bytes` when cut). At
    /// the timeout the process group is killed and the check is critical with `Timed out (<t>) running
    /// check`; Consul reports that one without its counters.
    pub(super) async fn run(&self) -> Outcome {
        let Some((program, rest)) = self.args.split_first() else {
            return Outcome::counted(CheckStatus::Critical, "exec: no command".to_owned());
        };
        let buffer = Arc::new(Mutex::new(TailBuffer::new(self.output_limit)));
        // One pipe for both streams, so the output interleaves as the script wrote it.
        let (mut reader, writer) = match std::io::pipe() {
            Ok(pair) => pair,
            Err(e) => return Outcome::counted(CheckStatus::Critical, go_io_error(&e)),
        };
        let writer_err = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return Outcome::counted(CheckStatus::Critical, go_io_error(&e)),
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer_err)
            .kill_on_drop(true);
        command.process_group(0);
        let spawned = command.spawn();
        // The parent's copies of the pipe's write end go with the command, so the reader sees the end
        // of the output when the script (and whatever it started) is done.
        drop(command);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return Outcome::counted(CheckStatus::Critical, spawn_error(program, &e)),
        };
        // A check stopped while its script runs (the runner aborted) kills the script's group too.
        let mut group = GroupGuard(child.id().and_then(group_of));
        let sink = buffer.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().write(chunk.get(..n).unwrap_or_default()),
                }
            }
        });

        let deadline = tokio::time::Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(exit)) => {
                group.0 = None;
                // A grandchild may hold the pipe open after the script exits: read until the end or
                // the deadline, whichever comes first.
                let _ = tokio::time::timeout_at(deadline, reading).await;
                let output = buffer.lock().script_output();
                Outcome::counted(exit_status(exit.code()), output)
            }
            Ok(Err(e)) => Outcome::counted(CheckStatus::Critical, go_io_error(&e)),
            Err(_) => {
                group.kill();
                let _ = child.kill().await;
                let mut msg = format!("Timed out ({}) running check", format_go_duration(self.timeout));
                let output = buffer.lock().script_output();
                if !output.is_empty() {
                    msg.push_str("\n\n");
                    msg.push_str(&output);
                }
                Outcome {
                    status: CheckStatus::Critical,
                    output: msg,
                    counted: false,
                }
            }
        }
    }
}

/// The process group a script leads (it is spawned with `process_group(0)`); never group 1, which
/// would signal every process.
fn group_of(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|pid| *pid > 1)
        .and_then(rustix::process::Pid::from_raw)
}

/// Kills a script's process group — what it started too, as Consul's `KillCommandSubtree` — when told
/// to or when dropped while armed.
struct GroupGuard(Option<rustix::process::Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Go's words for a program that could not be started.
fn spawn_error(program: &str, err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
        format!("exec: {program:?}: executable file not found in $PATH")
    } else {
        format!("fork/exec {program}: {}", go_io_error(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(script: &str, timeout: Duration, limit: usize) -> ScriptProbe {
        ScriptProbe {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout,
            output_limit: limit,
        }
    }

    #[tokio::test]
    async fn exit_codes_map_to_statuses_with_both_streams() {
        let ok = probe("echo out; echo err >&2; exit 0", Duration::from_secs(10), 4096)
            .run()
            .await;
        assert_eq!(ok.status, CheckStatus::Passing);
        assert_eq!(ok.output, "out\nerr\n");
        assert!(ok.counted);
        let warn = probe("echo careful; exit 1", Duration::from_secs(10), 4096)
            .run()
            .await;
        assert_eq!(warn.status, CheckStatus::Warning);
        assert_eq!(warn.output, "careful\n");
        let crit = probe("exit 2", Duration::from_secs(10), 4096).run().await;
        assert_eq!(crit.status, CheckStatus::Critical);
        assert_eq!(crit.output, "");
    }

    #[tokio::test]
    async fn long_output_keeps_the_tail_with_consuls_marker() {
        let out = probe("printf 'abcdefghij'", Duration::from_secs(10), 4)
            .run()
            .await;
        assert_eq!(out.status, CheckStatus::Passing);
        assert_eq!(out.output, "Captured 4 of 10 bytes\n...\nghij");
    }

    /// Whether process `pid` is gone (or only a zombie waiting for its reaper).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_script_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child");
        // The script starts a long sleeper in the background, notes its pid and waits for it.
        let script = format!("sleep 60 & echo $! > {}; echo started; wait", pid_file.display());
        let began = std::time::Instant::now();
        let out = probe(&script, Duration::from_millis(500), 4096).run().await;
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the script was not killed in time"
        );
        assert_eq!(out.status, CheckStatus::Critical);
        assert!(!out.counted);
        assert_eq!(out.output, "Timed out (500ms) running check\n\nstarted\n");
        let child = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone(&child) {
            assert!(
                std::time::Instant::now() < deadline,
                "the script's child outlived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_critical() {
        let p = ScriptProbe {
            args: vec!["tribune-no-such-program".into()],
            timeout: Duration::from_secs(5),
            output_limit: 4096,
        };
        let out = p.run().await;
        assert_eq!(out.status, CheckStatus::Critical);
        assert_eq!(
            out.output,
            "exec: \"tribune-no-such-program\": executable file not found in $PATH"
        );
    }
}
