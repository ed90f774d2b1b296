//! Shared helpers of the node's integration tests: start dev servers and talk HTTP/1.1 to them over
//! loopback with a minimal client (one request per connection), and wait on conditions with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "cli")]
pub(crate) mod federation;
pub(crate) mod jwt;
pub(crate) mod ports;
#[cfg(feature = "cli")]
pub(crate) mod process;
pub(crate) mod wan;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tribune::config::Config;
use tribune::{Node, NodeHandle};

/// The longest any single request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// A header's value (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `X-Consul-Index` as a number.
    pub(crate) fn index(&self) -> u64 {
        self.header("x-consul-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no X-Consul-Index in {self:?}"))
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole response.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    tokio::time::timeout(REQUEST_TIMEOUT, send(addr, method, path, headers, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} took over {REQUEST_TIMEOUT:?}"))
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]).into_owned();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A client bound to one node's HTTP address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub(crate) SocketAddr);

impl Client {
    pub(crate) fn of(node: &NodeHandle) -> Self {
        Client(node.http_addr().expect("HTTP enabled"))
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        request(self.0, "GET", path, &[], b"").await
    }

    pub(crate) async fn put(&self, path: &str, body: &[u8]) -> Reply {
        request(self.0, "PUT", path, &[], body).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Reply {
        request(self.0, "DELETE", path, &[], b"").await
    }

    /// `PUT /v1/session/create` with `body`; fails the test unless it answers an ID.
    pub(crate) async fn create_session(&self, body: &str) -> String {
        let reply = self.put("/v1/session/create", body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        match reply.json()["ID"].as_str() {
            Some(id) => id.to_owned(),
            None => panic!("no ID in {}", reply.text()),
        }
    }
}

/// Starts a development server and waits until it leads its one-server cluster.
pub(crate) async fn dev_server() -> NodeHandle {
    start_leader(Config::dev()).await
}

/// Starts a one-server cluster from `config` and waits until it is the leader.
pub(crate) async fn start_leader(config: Config) -> NodeHandle {
    let node = Node::start(config).await.expect("start the node");
    wait_for("the node to lead", Duration::from_secs(10), || async {
        node.is_leader()
    })
    .await;
    node
}

/// Waits until `condition` holds, checking every 20 ms, and fails the test after `limit`.
pub(crate) async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent of a three-server datacenter on loopback (`bootstrap_expect = 3` for a server), joining
/// the LAN pool through the given agents' gossip addresses.
pub(crate) fn pool_agent(name: &str, server: bool, join: &[&NodeHandle]) -> Config {
    let mut config = Config::dev();
    config.node_name = name.to_owned();
    config.server = server;
    config.bootstrap_expect = if server { 3 } else { 0 };
    config.retry_join = join
        .iter()
        .filter_map(|node| node.serf_lan_addr())
        .map(|addr| addr.to_string())
        .collect();
    config.retry_interval = Duration::from_millis(200);
    config
}

/// Starts three servers `s1`, `s2`, `s3` that form one datacenter through the LAN pool (each from
/// [`pool_agent`], then changed by `configure`), and waits up to `limit` until every one of them
/// names the same leader.
pub(crate) async fn three_server_dc_with(
    limit: Duration,
    configure: impl Fn(&mut Config),
) -> [NodeHandle; 3] {
    let server = |name: &str, join: &[&NodeHandle]| {
        let mut config = pool_agent(name, true, join);
        configure(&mut config);
        config
    };
    let s1 = Node::start(server("s1", &[])).await.expect("start s1");
    let s2 = Node::start(server("s2", &[&s1])).await.expect("start s2");
    let s3 = Node::start(server("s3", &[&s1, &s2])).await.expect("start s3");
    let servers = [s1, s2, s3];
    wait_for("one leader that every server knows", limit, || async {
        let leaders: Vec<Option<String>> = servers.iter().map(|n| n.leader()).collect();
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    servers
}

/// [`three_server_dc_with`] with the servers' configuration as [`pool_agent`] makes it.
pub(crate) async fn three_server_dc(limit: Duration) -> [NodeHandle; 3] {
    three_server_dc_with(limit, |_| {}).await
}

/// WAN pool timing fast enough for a test on one host (Consul's `gossip_wan` block), on a free
/// `serf_wan` port.
pub(crate) fn fast_wan(config: &mut Config) {
    config.ports.serf_wan = Some(0);
    config.gossip_wan.probe_interval = Some(Duration::from_millis(100));
    config.gossip_wan.probe_timeout = Some(Duration::from_millis(50));
    config.gossip_wan.gossip_interval = Some(Duration::from_millis(20));
    config.gossip_wan.suspicion_mult = Some(3);
}

/// A one-server datacenter `datacenter` whose server `node` joins the WAN pool through `join`, with
/// [`fast_wan`] timing.
pub(crate) fn wan_server(datacenter: &str, node: &str, join: &[&NodeHandle]) -> Config {
    let mut config = Config::dev();
    config.datacenter = datacenter.into();
    config.node_name = node.into();
    fast_wan(&mut config);
    config.retry_join_wan = join
        .iter()
        .filter_map(|n| n.serf_wan_addr())
        .map(|a| a.to_string())
        .collect();
    config.retry_interval_wan = Duration::from_millis(200);
    config
}

/// Runs the `tribune` CLI against the agent at `http_addr`; whether it succeeded, and its stdout
/// followed by its stderr.
#[cfg(feature = "cli")]
pub(crate) async fn tribune_cli(http_addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let mut command = process::binary();
    command
        .arg(format!("-http-addr={http_addr}"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}
