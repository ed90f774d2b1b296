//! The DNS interface of a development server, asked over UDP and TCP as `dig` and resolvers ask:
//!
//! - `web.service.consul` A: the passing and warning instances, the critical one left out; over UDP
//!   at most `udp_answer_limit` records with TC set (`enable_truncate`), every record over TCP;
//! - SRV with the targets' A records in the additional section; `<tag>.<service>.service`, RFC 2782
//!   `_web._primary` and `_web._tcp`, and the `.dc1.` form;
//! - `<node>.node` A with the node's meta as TXT; NXDOMAIN with Consul's SOA for an unknown
//!   service, node, datacenter or a service whose every instance is critical;
//! - names outside the domain forwarded to a recursor (a tiny UDP DNS server of the test), SERVFAIL
//!   when the recursor is silent, REFUSED when none is configured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::{Client, start_leader, wait_for};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tribune::config::Config;

const LIMIT: Duration = Duration::from_secs(20);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

fn question(name: &str, qtype: RecordType) -> Message {
    let mut request = Message::new();
    request
        .set_id(NEXT_ID.fetch_add(1, Ordering::Relaxed))
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    request
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = question(name, qtype);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&request.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(ANSWER_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no UDP answer to {name}"))
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.id(), request.id());
    answer
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let request = question(name, qtype);
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let bytes = request.to_vec().unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    };
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no TCP answer to {name}"));
    assert_eq!(answer.id(), request.id());
    answer
}

fn addresses(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn srv_targets(records: &[Record]) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(srv) => Some((srv.target().to_ascii(), srv.port())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn assert_nxdomain_with_soa(answer: &Message, what: &str) {
    assert_eq!(
        answer.response_code(),
        ResponseCode::NXDomain,
        "{what}: {answer:?}"
    );
    let soa = answer
        .name_servers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) => Some((r.name().to_ascii(), soa.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{what}: no SOA in {answer:?}"));
    assert_eq!(soa.0, "consul.");
    assert_eq!(soa.1.mname().to_ascii(), "ns.consul.");
    assert_eq!(soa.1.rname().to_ascii(), "hostmaster.consul.");
    assert_eq!(
        (soa.1.refresh(), soa.1.retry(), soa.1.expire()),
        (3600, 600, 86400)
    );
}

/// A recursor that knows one name, `example.test.` (A 203.0.113.7), and answers NXDOMAIN for the
/// rest. It serves until the test's runtime ends.
async fn tiny_recursor() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true)
                .add_queries(request.queries().iter().cloned());
            match request.queries().first() {
                Some(q) if q.name().to_ascii().eq_ignore_ascii_case("example.test.") => {
                    answer.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(203, 0, 113, 7))),
                    ));
                }
                _ => {
                    answer.set_response_code(ResponseCode::NXDomain);
                }
            }
            let _ = socket.send_to(&answer.to_vec().unwrap(), from).await;
        }
    });
    addr
}

async fn register(http: &Client, body: Value) {
    let reply = http
        .put("/v1/catalog/register", body.to_string().as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn instance(node: &str, address: &str, service: &str, tags: &[&str], status: &str) -> Value {
    json!({
        "Datacenter": "dc1",
        "Node": node,
        "Address": address,
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": format!("{service}-{node}"), "Service": service, "Tags": tags, "Port": 8080},
        "Check": {"CheckID": format!("{service}-{node}-alive"), "Name": "alive",
                  "ServiceID": format!("{service}-{node}"), "Status": status},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_nodes_and_outside_names_are_answered_as_consul_does() {
    let recursor = tiny_recursor().await;
    let mut config = Config::dev();
    config.dns.recursors = vec![recursor];
    config.dns.enable_truncate = true;
    let node = start_leader(config).await;
    let dns = node.dns_addr().expect("DNS enabled in Config::dev()");
    assert_eq!(dns.ip(), Ipv4Addr::LOCALHOST);
    let http = Client::of(&node);

    // Five healthy instances of `web` (one tagged primary, one warning), one critical, and a
    // service whose only instance is critical.
    register(
        &http,
        instance("web-1", "192.0.2.11", "web", &["primary"], "passing"),
    )
    .await;
    for i in 2..=4 {
        register(
            &http,
            instance(
                &format!("web-{i}"),
                &format!("192.0.2.1{i}"),
                "web",
                &[],
                "passing",
            ),
        )
        .await;
    }
    register(&http, instance("web-5", "192.0.2.15", "web", &[], "warning")).await;
    register(&http, instance("web-6", "192.0.2.16", "web", &[], "critical")).await;
    register(&http, instance("db-1", "192.0.2.21", "db", &[], "critical")).await;

    let healthy = [
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.13",
        "192.0.2.14",
        "192.0.2.15",
    ];
    wait_for("the five healthy instances over TCP", LIMIT, || async {
        addresses(tcp(dns, "web.service.consul.", RecordType::A).await.answers()) == healthy
    })
    .await;

    // UDP: cut to udp_answer_limit (3), TC set; the critical instance never appears.
    let answer = udp(dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(answer.authoritative());
    assert_eq!(answer.answers().len(), 3, "{answer:?}");
    assert!(answer.truncated(), "TC over UDP when records were cut");
    assert!(
        addresses(answer.answers())
            .iter()
            .all(|a| healthy.contains(&a.as_str()))
    );
    let whole = tcp(dns, "WEB.Service.Consul.", RecordType::A).await;
    assert!(!whole.truncated());
    assert_eq!(
        addresses(whole.answers()),
        healthy,
        "case-insensitive, every record over TCP"
    );

    // SRV with the targets' addresses in the additional section, over TCP and UDP.
    let srv = tcp(dns, "web.service.consul.", RecordType::SRV).await;
    let expected: Vec<(String, u16)> = (1..=5)
        .map(|i| (format!("web-{i}.node.dc1.consul."), 8080))
        .collect();
    assert_eq!(srv_targets(srv.answers()), expected);
    assert_eq!(addresses(srv.additionals()), healthy);
    let srv_udp = udp(dns, "web.service.consul.", RecordType::SRV).await;
    assert_eq!(srv_udp.answers().len(), 3);
    assert_eq!(
        srv_udp
            .additionals()
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        3
    );
    assert!(srv_udp.truncated());

    // Tags, RFC 2782 and the datacenter label.
    let tagged = udp(dns, "primary.web.service.consul.", RecordType::A).await;
    assert_eq!(addresses(tagged.answers()), ["192.0.2.11"]);
    let rfc = udp(dns, "_web._primary.service.consul.", RecordType::SRV).await;
    assert_eq!(
        srv_targets(rfc.answers()),
        [("web-1.node.dc1.consul.".to_owned(), 8080)]
    );
    assert_eq!(addresses(rfc.additionals()), ["192.0.2.11"]);
    let rfc_tcp = tcp(dns, "_web._tcp.service.dc1.consul.", RecordType::SRV).await;
    assert_eq!(srv_targets(rfc_tcp.answers()), expected);
    let in_dc = tcp(dns, "web.service.dc1.consul.", RecordType::A).await;
    assert_eq!(addresses(in_dc.answers()), healthy);

    // Nodes, with their meta as TXT.
    let web1 = udp(dns, "web-1.node.consul.", RecordType::A).await;
    assert_eq!(addresses(web1.answers()), ["192.0.2.11"]);
    assert!(
        web1.additionals()
            .iter()
            .any(|r| matches!(r.data(), RData::TXT(t) if t.to_string() == "rack=r1")),
        "{web1:?}"
    );
    let web1_dc = tcp(dns, "web-1.node.dc1.consul.", RecordType::A).await;
    assert_eq!(addresses(web1_dc.answers()), ["192.0.2.11"]);

    // NXDOMAIN with the SOA: unknown service, node, datacenter; every instance critical.
    for name in [
        "nope.service.consul.",
        "nope.node.consul.",
        "web.service.dc9.consul.",
        "db.service.consul.",
        "web.nothing.consul.",
    ] {
        assert_nxdomain_with_soa(&udp(dns, name, RecordType::A).await, name);
    }
    // A known name with no record of the type: NOERROR, empty, SOA in authority.
    let aaaa = tcp(dns, "web-1.node.consul.", RecordType::AAAA).await;
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(aaaa.answers().is_empty());
    assert_eq!(aaaa.name_servers().len(), 1);

    // Names outside the domain go to the recursor, over either transport.
    let outside = udp(dns, "example.test.", RecordType::A).await;
    assert_eq!(addresses(outside.answers()), ["203.0.113.7"]);
    let outside = tcp(dns, "EXAMPLE.test.", RecordType::A).await;
    assert_eq!(addresses(outside.answers()), ["203.0.113.7"]);
    let unknown = udp(dns, "other.test.", RecordType::A).await;
    assert_eq!(unknown.response_code(), ResponseCode::NXDomain);

    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_names_are_refused_without_recursors_and_fail_when_the_recursors_are_silent() {
    let node = start_leader(Config::dev()).await;
    let dns = node.dns_addr().unwrap();
    let refused = udp(dns, "example.test.", RecordType::A).await;
    assert_eq!(refused.response_code(), ResponseCode::Refused);
    // The agent's own service answers while the outside is refused.
    wait_for("consul.service.consul", LIMIT, || async {
        !udp(dns, "consul.service.consul.", RecordType::SRV)
            .await
            .answers()
            .is_empty()
    })
    .await;
    node.shutdown().await;

    // A recursor that never answers: SERVFAIL once its timeout passes.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = Config::dev();
    config.dns.recursors = vec![silent.local_addr().unwrap()];
    config.dns.recursor_timeout = Duration::from_millis(200);
    let node = start_leader(config).await;
    let failed = udp(node.dns_addr().unwrap(), "example.test.", RecordType::A).await;
    assert_eq!(failed.response_code(), ResponseCode::ServFail);
    assert!(failed.recursion_available());
    node.shutdown().await;

    // ports.dns = -1 disables the listener.
    let mut config = Config::dev();
    config.ports.dns = None;
    let node = start_leader(config).await;
    assert_eq!(node.dns_addr(), None);
    node.shutdown().await;
}
