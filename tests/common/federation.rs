//! Datacenters of `tribune agent -server` processes on 127.0.0.1, WAN-joined, with their data on
//! disk so a server can be killed, wiped and restarted; and `tribune replicate` processes beside
//! them. Every process is killed when its owner is dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::process::binary;
use super::{Client, wait_for};

/// How long a datacenter may take to elect a leader and join the WAN pool.
pub(crate) const FORM_LIMIT: Duration = Duration::from_secs(60);

/// One server's ports and files.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) http: SocketAddr,
    rpc_port: u16,
    serf_lan_port: u16,
    pub(crate) serf_wan_port: u16,
    pub(crate) data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The servers of one datacenter.
pub(crate) struct Datacenter {
    pub(crate) name: String,
    pub(crate) servers: Vec<Server>,
    /// WAN addresses of the other datacenter's servers to join.
    retry_join_wan: Vec<String>,
    gossip_wan: PathBuf,
}

impl Datacenter {
    /// Lays out `count` servers of `name` under `root` (nothing starts yet).
    pub(crate) fn new(root: &Path, name: &str, count: usize) -> Datacenter {
        let gossip_wan = root.join("gossip-wan.json");
        std::fs::write(
            &gossip_wan,
            r#"{"gossip_wan": {"probe_interval": "300ms", "probe_timeout": "150ms", "suspicion_mult": 3, "gossip_interval": "100ms"}}"#,
        )
        .unwrap();
        let servers = (1..=count)
            .map(|i| {
                let server = format!("{name}-s{i}");
                Server {
                    http: SocketAddr::from(([127, 0, 0, 1], super::ports::free_port())),
                    rpc_port: super::ports::free_port(),
                    serf_lan_port: super::ports::free_port(),
                    serf_wan_port: super::ports::free_port(),
                    data_dir: root.join(format!("{server}-data")),
                    log: root.join(format!("{server}.log")),
                    name: server,
                    child: None,
                }
            })
            .collect();
        Datacenter {
            name: name.to_owned(),
            servers,
            retry_join_wan: Vec::new(),
            gossip_wan,
        }
    }

    /// Makes every server of `self` retry a WAN join to every server of `other`.
    pub(crate) fn join_wan(&mut self, other: &Datacenter) {
        self.retry_join_wan = other
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.serf_wan_port))
            .collect();
    }

    /// Starts (or restarts) server `i` from its data directory.
    pub(crate) fn start(&mut self, i: usize) {
        let expect = self.servers.len();
        let lan: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| format!("-retry-join=127.0.0.1:{}", s.serf_lan_port))
            .collect();
        let server = &mut self.servers[i];
        assert!(server.child.is_none(), "{} is running", server.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&server.log)
            .unwrap();
        let mut command = binary();
        command
            .arg("agent")
            .args([
                "-server".to_owned(),
                format!("-bootstrap-expect={expect}"),
                format!("-datacenter={}", self.name),
                format!("-node={}", server.name),
                format!("-data-dir={}", server.data_dir.display()),
                "-bind=127.0.0.1".to_owned(),
                "-client=127.0.0.1".to_owned(),
                format!("-http-port={}", server.http.port()),
                format!("-server-port={}", server.rpc_port),
                format!("-serf-lan-port={}", server.serf_lan_port),
                format!("-serf-wan-port={}", server.serf_wan_port),
                "-dns-port=0".to_owned(),
                format!("-config-file={}", self.gossip_wan.display()),
                "-retry-interval=200ms".to_owned(),
                "-retry-interval-wan=300ms".to_owned(),
            ])
            .args(lan)
            .args(self.retry_join_wan.iter().map(|a| format!("-retry-join-wan={a}")))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        server.child = Some(command.spawn().expect("spawn tribune agent"));
    }

    /// Starts every server.
    pub(crate) fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            self.start(i);
        }
    }

    /// Kills server `i` with SIGKILL.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The HTTP address of a running server.
    pub(crate) fn any_http(&self) -> SocketAddr {
        self.servers
            .iter()
            .find(|s| s.child.is_some())
            .map(|s| s.http)
            .expect("a running server")
    }

    /// The index of the running server that leads, if one does.
    pub(crate) async fn leader(&self) -> Option<usize> {
        for (i, server) in self.servers.iter().enumerate() {
            if server.child.is_none() {
                continue;
            }
            let reply = super::request(server.http, "GET", "/v1/agent/self", &[], b"").await;
            if reply.status == 200 && reply.json()["Stats"]["raft"]["state"] == "Leader" {
                return Some(i);
            }
        }
        None
    }

    /// Waits until every running server knows a leader and sees `datacenters` in the catalog.
    pub(crate) async fn wait_formed(&self, datacenters: &[&str]) {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let client = Client(server.http);
            wait_for(
                &format!("{} to know a leader and {datacenters:?}", server.name),
                FORM_LIMIT,
                || async {
                    // The agent may not listen yet, and the test client panics on a refused connection.
                    if tokio::net::TcpStream::connect(client.0).await.is_err() {
                        return false;
                    }
                    let Ok(leader) =
                        tokio::time::timeout(Duration::from_secs(2), client.get("/v1/status/leader")).await
                    else {
                        return false;
                    };
                    if leader.status != 200 || leader.text().trim() == "\"\"" {
                        return false;
                    }
                    let dcs = client.get("/v1/catalog/datacenters").await;
                    dcs.status == 200
                        && datacenters
                            .iter()
                            .all(|dc| dcs.json().as_array().is_some_and(|a| a.iter().any(|d| d == dc)))
                },
            )
            .await;
        }
    }
}

impl Drop for Datacenter {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A running `tribune replicate`, killed when dropped.
pub(crate) struct Replicator {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Replicator {
    /// Starts `tribune replicate args...`, its output appended to `log`.
    pub(crate) fn spawn(log: &Path, args: &[String]) -> Replicator {
        let out = File::options().create(true).append(true).open(log).unwrap();
        let child = binary()
            .arg("replicate")
            .args(args)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn tribune replicate");
        Replicator {
            child,
            log: log.to_owned(),
        }
    }

    /// The replicator's output so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `HUP`).
    pub(crate) fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Key → (value, flags) under a prefix.
pub(crate) type Contents = BTreeMap<String, (Vec<u8>, u64)>;

/// Every entry under `prefix` at `addr` (`query` appended, e.g. `&dc=dc1` or `&stale`).
pub(crate) async fn contents(addr: SocketAddr, prefix: &str, query: &str) -> Contents {
    let reply = super::request(addr, "GET", &format!("/v1/kv/{prefix}?recurse{query}"), &[], b"").await;
    if reply.status == 404 {
        return Contents::new();
    }
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["Value"]
                .as_str()
                .map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap())
                .unwrap_or_default();
            (
                e["Key"].as_str().unwrap().to_owned(),
                (value, e["Flags"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// One KV operation of a transaction.
pub(crate) enum Write<'a> {
    Set(&'a str, &'a [u8], u64),
    Delete(&'a str),
}

/// Applies `writes` through `/v1/txn` in transactions of 64 operations.
pub(crate) async fn write_all(addr: SocketAddr, writes: &[Write<'_>]) {
    for chunk in writes.chunks(64) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|w| match w {
                Write::Set(key, value, flags) => json!({"KV": {
                    "Verb": "set", "Key": key, "Flags": flags,
                    "Value": base64::engine::general_purpose::STANDARD.encode(value),
                }}),
                Write::Delete(key) => json!({"KV": {"Verb": "delete", "Key": key}}),
            })
            .collect();
        let body = serde_json::to_vec(&ops).unwrap();
        let reply = super::request(addr, "PUT", "/v1/txn", &[], &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}
