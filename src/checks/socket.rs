//! TCP and UDP checks: a connect, or a datagram and a wait for an answer or an error.

use std::net::SocketAddr;
use std::time::Duration;

use super::CheckStatus;
use super::runner::Outcome;
use super::status::go_io_error;

/// Resolves `address` (`host:port`) as Go's dialer would, or the error text Go gives.
async fn resolve(network: &str, address: &str) -> Result<Vec<SocketAddr>, String> {
    let Some((host, _port)) = address.rsplit_once(':') else {
        return Err(format!(
            "dial {network}: address {address}: missing port in address"
        ));
    };
    match tokio::net::lookup_host(address).await {
        Ok(found) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                Err(format!("dial {network}: lookup {host}: no such host"))
            } else {
                Ok(found)
            }
        }
        Err(_) => Err(format!("dial {network}: lookup {host}: no such host")),
    }
}

/// Consul's TCP check: passing when a connection opens within `timeout` ("TCP connect <addr>: Success"),
/// else critical with Go's dial error ("dial tcp 127.0.0.1:1: connect: connection refused").
pub(super) async fn tcp(address: &str, timeout: Duration) -> Outcome {
    let attempt = async {
        let addrs = resolve("tcp", address).await?;
        let mut last = String::new();
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    drop(stream);
                    return Ok(());
                }
                Err(e) => last = format!("dial tcp {addr}: connect: {}", go_io_error(&e)),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Outcome::counted(CheckStatus::Passing, format!("TCP connect {address}: Success")),
        Ok(Err(text)) => Outcome::counted(CheckStatus::Critical, text),
        Err(_) => Outcome::counted(CheckStatus::Critical, format!("dial tcp {address}: i/o timeout")),
    }
}

/// Consul's UDP check: sends an empty datagram; an answer, or silence until `timeout`, is passing ("UDP
/// connect <addr>: Success"); an error (an ICMP port unreachable read back as "connection refused") is
/// critical.
pub(super) async fn udp(address: &str, timeout: Duration) -> Outcome {
    let success = || Outcome::counted(CheckStatus::Passing, format!("UDP connect {address}: Success"));
    let addr = match resolve("udp", address).await {
        Ok(addrs) => match addrs.first() {
            Some(addr) => *addr,
            None => {
                return Outcome::counted(CheckStatus::Critical, format!("dial udp {address}: no address"));
            }
        },
        Err(text) => return Outcome::counted(CheckStatus::Critical, text),
    };
    let local: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::counted(
                CheckStatus::Critical,
                format!("dial udp {addr}: {}", go_io_error(&e)),
            );
        }
    };
    if let Err(e) = socket.connect(addr).await {
        return Outcome::counted(
            CheckStatus::Critical,
            format!("dial udp {addr}: {}", go_io_error(&e)),
        );
    }
    let local = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
    if let Err(e) = socket.send(&[]).await {
        return Outcome::counted(
            CheckStatus::Critical,
            format!("write udp {local}->{addr}: write: {}", go_io_error(&e)),
        );
    }
    let mut buf = [0u8; 1];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Ok(Ok(_)) | Err(_) => success(),
        Ok(Err(e)) => Outcome::counted(
            CheckStatus::Critical,
            format!("read udp {local}->{addr}: read: {}", go_io_error(&e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_open_and_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = tcp(&addr, Duration::from_secs(5)).await;
        assert_eq!(open.status, CheckStatus::Passing);
        assert_eq!(open.output, format!("TCP connect {addr}: Success"));

        drop(listener);
        let closed = tcp(&addr, Duration::from_secs(5)).await;
        assert_eq!(closed.status, CheckStatus::Critical);
        assert_eq!(
            closed.output,
            format!("dial tcp {addr}: connect: connection refused")
        );

        let no_port = tcp("127.0.0.1", Duration::from_secs(5)).await;
        assert_eq!(no_port.status, CheckStatus::Critical);
        assert!(no_port.output.contains("missing port"), "{}", no_port.output);
    }

    #[tokio::test]
    async fn udp_echo_silence_and_refusal() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            server
                .send_to(&buf[..n.max(1).min(buf.len())], from)
                .await
                .unwrap();
            server
        });
        let answered = udp(&addr, Duration::from_secs(5)).await;
        assert_eq!(answered.status, CheckStatus::Passing);
        assert_eq!(answered.output, format!("UDP connect {addr}: Success"));
        let server = echo.await.unwrap();

        // A server that reads and says nothing: the wait runs out, which Consul counts as passing.
        let silent = udp(&addr, Duration::from_millis(200)).await;
        assert_eq!(silent.status, CheckStatus::Passing);

        // No socket on the port: the kernel's port-unreachable comes back as "connection refused".
        drop(server);
        let refused = udp(&addr, Duration::from_secs(5)).await;
        assert_eq!(refused.status, CheckStatus::Critical);
        assert!(
            refused.output.starts_with("read udp 127.0.0.1:")
                && refused.output.ends_with("read: connection refused"),
            "{}",
            refused.output
        );
    }
}
