//! Spawned `tribune` processes: the binary without inherited agent settings, and a running
//! `tribune agent` whose banner tells the test where its HTTP API is.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long any one step of a process test may take before the test fails.
pub(crate) const STEP: Duration = Duration::from_secs(30);

/// The binary, with no agent address or token inherited from the environment.
pub(crate) fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tribune"));
    for name in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "TRIBUNE_HTTP_ADDR",
        "TRIBUNE_HTTP_TOKEN",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
}

/// A spawned `tribune agent`, killed if the test fails before stopping it.
pub(crate) struct AgentProcess {
    pub(crate) child: Child,
    pub(crate) http: SocketAddr,
    output: mpsc::Receiver<String>,
}

impl AgentProcess {
    /// Spawns a `-dev` agent with every port the OS's choice.
    pub(crate) fn spawn_dev() -> AgentProcess {
        Self::spawn(&[
            "-dev",
            "-http-port=0",
            "-server-port=0",
            "-serf-lan-port=0",
            "-serf-wan-port=0",
        ])
    }

    /// Spawns the agent and waits for its banner (which names the HTTP port it bound). DNS gets a
    /// free port unless `args` name one: agents of parallel tests must not all claim 8600.
    pub(crate) fn spawn(args: &[&str]) -> AgentProcess {
        if args.iter().any(|arg| arg.starts_with("-dns-port")) {
            return Self::spawn_exact(args);
        }
        let mut all = vec!["-dns-port=0"];
        all.extend_from_slice(args);
        Self::spawn_exact(&all)
    }

    /// [`AgentProcess::spawn`] with `args` alone (DNS on Consul's 8600 unless they say otherwise).
    pub(crate) fn spawn_exact(args: &[&str]) -> AgentProcess {
        let mut child = binary()
            .arg("agent")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tribune agent");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, output) = mpsc::channel();
        // Keep draining stdout so the agent never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut agent = AgentProcess {
            child,
            http: "0.0.0.0:0".parse().unwrap(),
            output,
        };
        let line = agent.wait_line("Client Addr:");
        let ip = line
            .split('[')
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap();
        let port = line
            .split("(HTTP: ")
            .nth(1)
            .and_then(|rest| rest.split([')', ',']).next())
            .unwrap();
        agent.http = format!("{ip}:{port}").parse().unwrap();
        agent
    }

    /// The next line of output containing `needle`.
    pub(crate) fn wait_line(&mut self, needle: &str) -> String {
        loop {
            match self.output.recv_timeout(STEP) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(error) => panic!("no line with {needle:?} from the agent: {error}"),
            }
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
