//! Three `tribune agent -server` processes with their data on disk: started, killed with SIGKILL,
//! paused with SIGSTOP, resumed and restarted from their data directories. Every process is killed
//! when the cluster is dropped, a panicking test included. A WAN run adds a second datacenter of
//! one server (a `Cluster` of its own) and WAN-joins the two.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;

pub(crate) const SERVERS: usize = 3;

/// Where a server listens. In a private network namespace each server owns an address
/// (127.0.0.2, .3, .4) and the standard ports; otherwise all share 127.0.0.1 with free ports.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) http_port: u16,
    pub(crate) rpc_port: u16,
    pub(crate) serf_port: u16,
    pub(crate) data_dir: PathBuf,
    pub(crate) log: PathBuf,
    /// The group the process runs as, which the namespace's SNAT rule maps to `ip`.
    pub(crate) gid: Option<u32>,
    pub(crate) datacenter: String,
    /// The WAN pool settings (`None`: the WAN port is off).
    pub(crate) wan: Option<WanSettings>,
    /// More configuration files (the ACL settings of a federated ACL run).
    pub(crate) config_files: Vec<PathBuf>,
}

/// A server's place in the WAN pool.
#[derive(Debug, Clone)]
pub(crate) struct WanSettings {
    pub(crate) serf_wan_port: u16,
    /// The address other datacenters reach it at (a proxy's, to put the proxy in the path).
    pub(crate) advertise: Option<Ipv4Addr>,
    pub(crate) retry_join: Vec<String>,
    /// The `gossip_wan` timing, as a config file.
    pub(crate) config_file: PathBuf,
}

impl Slot {
    pub(crate) fn http(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.http_port))
    }

    pub(crate) fn rpc(&self) -> String {
        format!("{}:{}", self.ip, self.rpc_port)
    }

    fn serf(&self) -> String {
        format!("{}:{}", self.ip, self.serf_port)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("no free loopback port: {error}"))
}

/// The first group id given to servers (server i runs as `GID_BASE + i`).
pub(crate) const GID_BASE: u32 = 47_000;

pub(crate) fn slots(root: &Path, namespaced: bool) -> Vec<Slot> {
    (0..SERVERS)
        .map(|i| {
            let (ip, http_port, rpc_port, serf_port, gid) = if namespaced {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
                (ip, 8500, 8300, 8301, Some(GID_BASE + i as u32))
            } else {
                (Ipv4Addr::LOCALHOST, free_port(), free_port(), free_port(), None)
            };
            Slot {
                name: format!("s{}", i + 1),
                ip,
                http_port,
                rpc_port,
                serf_port,
                data_dir: root.join(format!("s{}-data", i + 1)),
                log: root.join(format!("s{}.log", i + 1)),
                gid,
                datacenter: "dc1".to_owned(),
                wan: None,
                config_files: Vec::new(),
            }
        })
        .collect()
}

/// dc2's address inside the namespace (after dc1's 127.0.0.2-4).
pub(crate) const DC2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Where the WAN proxy in front of dc2 listens; dc2 advertises it as its WAN address.
pub(crate) const DC2_PROXY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 2);
pub(crate) const SERF_WAN_PORT: u16 = 8302;

/// The one server of the second datacenter (namespace only: it needs its own address).
pub(crate) fn dc2_slot(root: &Path) -> Slot {
    Slot {
        name: "dc2-s1".to_owned(),
        ip: DC2_IP,
        http_port: 8500,
        rpc_port: 8300,
        serf_port: 8301,
        data_dir: root.join("dc2-s1-data"),
        log: root.join("dc2-s1.log"),
        gid: Some(GID_BASE + SERVERS as u32),
        datacenter: "dc2".to_owned(),
        wan: None,
        config_files: Vec::new(),
    }
}

/// WAN-joins dc1's servers and dc2's: every server on the WAN port with fast WAN timing (so a
/// cut-off datacenter is declared failed in seconds, not minutes), dc2 advertising the proxy's
/// address, each side retrying a join to the other.
pub(crate) fn federate(root: &Path, dc1: &mut [Slot], dc2: &mut Slot) {
    let config_file = root.join("gossip-wan.json");
    std::fs::write(
        &config_file,
        r#"{"gossip_wan": {"probe_interval": "500ms", "probe_timeout": "250ms", "suspicion_mult": 3, "gossip_interval": "100ms"}}"#,
    )
    .expect("write the gossip_wan config");
    for slot in dc1.iter_mut() {
        slot.wan = Some(WanSettings {
            serf_wan_port: SERF_WAN_PORT,
            advertise: None,
            retry_join: vec![format!("{DC2_PROXY_IP}:{SERF_WAN_PORT}")],
            config_file: config_file.clone(),
        });
    }
    dc2.wan = Some(WanSettings {
        serf_wan_port: SERF_WAN_PORT,
        advertise: Some(DC2_PROXY_IP),
        retry_join: dc1.iter().map(|s| format!("{}:{SERF_WAN_PORT}", s.ip)).collect(),
        config_file,
    });
}

/// A server's process state as the nemesis left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Paused,
    Killed,
}

pub(crate) struct Cluster {
    pub(crate) slots: Vec<Slot>,
    children: Vec<Option<Child>>,
    states: Vec<State>,
}

impl Cluster {
    pub(crate) fn start(slots: Vec<Slot>) -> Cluster {
        let mut cluster = Cluster {
            children: slots.iter().map(|_| None).collect(),
            states: vec![State::Killed; slots.len()],
            slots,
        };
        for i in 0..cluster.slots.len() {
            cluster.restart(i);
        }
        cluster
    }

    fn command(&self, i: usize) -> Command {
        let slot = &self.slots[i];
        let binary = env!("CARGO_BIN_EXE_tribune");
        let mut command = match slot.gid {
            Some(gid) => {
                // setpriv execs the agent, so the pid is the agent's; the parent-death signal
                // kills it if the test thread dies without running destructors.
                let mut command = Command::new("setpriv");
                command.args([
                    format!("--regid={gid}"),
                    "--clear-groups".to_owned(),
                    "--pdeathsig=KILL".to_owned(),
                    "--".to_owned(),
                    binary.to_owned(),
                ]);
                command
            }
            None => Command::new(binary),
        };
        command.args([
            "agent".to_owned(),
            "-server".to_owned(),
            format!("-bootstrap-expect={}", self.slots.len()),
            format!("-datacenter={}", slot.datacenter),
            format!("-node={}", slot.name),
            format!("-data-dir={}", slot.data_dir.display()),
            format!("-bind={}", slot.ip),
            format!("-client={}", slot.ip),
            format!("-http-port={}", slot.http_port),
            format!("-server-port={}", slot.rpc_port),
            format!("-serf-lan-port={}", slot.serf_port),
            "-dns-port=-1".to_owned(),
            "-retry-interval=200ms".to_owned(),
        ]);
        match &slot.wan {
            None => {
                command.arg("-serf-wan-port=-1");
            }
            Some(wan) => {
                command.args([
                    format!("-config-file={}", wan.config_file.display()),
                    format!("-serf-wan-port={}", wan.serf_wan_port),
                    "-retry-interval-wan=500ms".to_owned(),
                ]);
                if let Some(ip) = wan.advertise {
                    command.arg(format!("-advertise-wan={ip}"));
                }
                for addr in &wan.retry_join {
                    command.arg(format!("-retry-join-wan={addr}"));
                }
            }
        }
        for file in &slot.config_files {
            command.arg(format!("-config-file={}", file.display()));
        }
        for other in self.slots.iter().filter(|other| other.name != slot.name) {
            command.arg(format!("-retry-join={}", other.serf()));
        }
        for name in [
            "CONSUL_HTTP_ADDR",
            "CONSUL_HTTP_TOKEN",
            "TRIBUNE_HTTP_ADDR",
            "TRIBUNE_HTTP_TOKEN",
        ] {
            command.env_remove(name);
        }
        command.env("RUST_LOG", "info");
        command
    }

    /// Starts server `i` (again) from its data directory; its output is appended to its log.
    pub(crate) fn restart(&mut self, i: usize) {
        assert_eq!(self.states[i], State::Killed, "server {i} is still running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.slots[i].log)
            .unwrap_or_else(|error| panic!("open {}: {error}", self.slots[i].log.display()));
        let err: File = log.try_clone().expect("clone log handle");
        let child = self
            .command(i)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|error| panic!("spawn server {i}: {error}"));
        self.children[i] = Some(child);
        self.states[i] = State::Running;
    }

    /// SIGKILL: no goodbye, nothing flushed beyond what the server already synced.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.states[i] = State::Killed;
    }

    pub(crate) fn pause(&mut self, i: usize) {
        if self.states[i] == State::Running {
            self.signal(i, "STOP");
            self.states[i] = State::Paused;
        }
    }

    pub(crate) fn resume(&mut self, i: usize) {
        if self.states[i] == State::Paused {
            self.signal(i, "CONT");
            self.states[i] = State::Running;
        }
    }

    fn signal(&self, i: usize, name: &str) {
        let Some(child) = &self.children[i] else { return };
        let status = Command::new("kill")
            .args([format!("-{name}"), child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} server {i}: {status}");
    }

    /// Resumes every paused server and restarts every killed one.
    pub(crate) fn revive_all(&mut self) {
        for i in 0..self.slots.len() {
            match self.states[i] {
                State::Paused => self.resume(i),
                State::Killed => self.restart(i),
                State::Running => {}
            }
        }
    }

    /// The leader as server `i` reports it (an index into the slots).
    pub(crate) async fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let reply = http::call(
            self.slots[i].http(),
            "GET",
            "/v1/status/leader",
            b"",
            Duration::from_millis(500),
        )
        .await
        .ok()?;
        if reply.status != 200 {
            return None;
        }
        let addr = reply.json()?.as_str()?.to_owned();
        self.slots.iter().position(|slot| slot.rpc() == addr)
    }

    /// A running leader that every running server agrees on, if there is one now.
    pub(crate) async fn agreed_leader(&self) -> Option<usize> {
        let mut seen = Vec::new();
        for i in (0..self.slots.len()).filter(|i| self.states[*i] == State::Running) {
            seen.push(self.leader_seen_by(i).await);
        }
        let first = (*seen.first()?)?;
        (seen.iter().all(|s| *s == Some(first)) && self.states[first] == State::Running).then_some(first)
    }

    /// Waits (bounded by `limit`) for an agreed leader.
    pub(crate) async fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(leader) = self.agreed_leader().await {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process; nothing here may panic while unwinding.
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
