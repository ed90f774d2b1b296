//! A Tribune server embedded in a program: start a development node, write a key through the
//! Consul-compatible HTTP API, read it back, stop.
//!
//! Run with `cargo run --example embed`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use tribune::config::Config;
use tribune::{Node, NodeError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::start(Config::dev()).await?;
    let http = node.http_addr().ok_or(NodeError::Unsupported {
        field: "ports.http",
        reason: "disabled".into(),
    })?;
    while !node.is_leader() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let put = tokio::task::spawn_blocking(move || call(http, "PUT", "/v1/kv/greeting", "hello")).await??;
    let get = tokio::task::spawn_blocking(move || call(http, "GET", "/v1/kv/greeting?raw", "")).await??;
    println!("PUT -> {put}\nGET -> {get}");
    node.shutdown().await;
    Ok(())
}

/// A bare HTTP/1.1 call, to keep the example free of an HTTP client dependency.
fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}
