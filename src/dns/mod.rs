//! The agent's DNS interface, as Consul's: `<service>.service`, `<tag>.<service>.service`,
//! RFC 2782 `_<service>._<tag|tcp>.service`, `<node>.node` and `<hex ip>.addr` names under
//! `domain` (and `alt_domain`), with an optional `.<dc>` label; other names go to `recursors`.
//! Served over UDP and TCP on `ports.dns` of the first `client_addr`, by server and client agents.
//!
//! Parts: `name.rs` reads a question's name; `answer.rs` builds the answer from the catalog
//! behind a small trait (pure, unit-tested); `catalog.rs` implements that trait over the agent's
//! own HTTP API (so ACLs, `?dc=` forwarding and stale reads behave as for any client); this file
//! owns the sockets, UDP size limits and truncation, and forwarding to recursors.
//!
//! It is not a full Consul DNS: prepared queries (`.query.`), `.connect`/`.ingress`/`.virtual`
//! names, namespaces and partitions, NS records of the servers, DNS caching and the `soa` block
//! are not implemented; those names answer NXDOMAIN.

mod answer;
mod catalog;
mod name;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, DnsConfig};
use crate::error::NodeError;
use crate::local_api::SharedLocalApi;
use answer::{Outcome, Responder, reply_to};
use catalog::ApiCatalog;

/// The smallest UDP answer every client accepts (RFC 1035), and the most we send without EDNS.
const UDP_MIN_SIZE: usize = 512;
/// The most an EDNS client may ask for; larger requests are held to this.
const UDP_MAX_SIZE: usize = 4096;
/// How long a TCP connection may sit idle between questions.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Attempts at finding one free port for both UDP and TCP when `ports.dns` is 0.
const BIND_ATTEMPTS: usize = 20;

/// The DNS sockets, bound before the agent starts so a taken port fails the start.
#[derive(Debug)]
pub(crate) struct DnsListeners {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl DnsListeners {
    /// Binds UDP and TCP on one port of the first `client_addr`, or nothing when `ports.dns` is
    /// disabled. Port 0 picks a port free for both.
    pub(crate) async fn bind(config: &Config) -> Result<Option<DnsListeners>, NodeError> {
        let Some(port) = config.ports.dns else {
            return Ok(None);
        };
        let ip = config.client_addr.first().copied().unwrap_or(config.bind_addr);
        let addr = SocketAddr::new(ip, port);
        let error = |source| NodeError::Bind {
            listener: "dns",
            addr: addr.to_string(),
            source,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let udp = UdpSocket::bind(addr).await.map_err(error)?;
            let bound = udp.local_addr().map_err(error)?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => return Ok(Some(DnsListeners { udp, tcp })),
                // The OS's free UDP port may be taken for TCP: try another one.
                Err(_) if port == 0 && attempt < BIND_ATTEMPTS => continue,
                Err(source) => return Err(error(source)),
            }
        }
    }

    /// The bound address (the same port for UDP and TCP).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr().ok()
    }

    /// Serves questions until `stop`, reading the catalog through `api`.
    pub(crate) fn serve(
        self,
        config: &Config,
        api: SharedLocalApi,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let dns = config.dns.clone();
        let server = Arc::new(DnsServer {
            responder: Responder {
                catalog: Box::new(ApiCatalog {
                    api,
                    allow_stale: dns.allow_stale,
                    max_stale: dns.max_stale,
                }),
                datacenter: config.datacenter.clone(),
                config: dns,
            },
            rng: Mutex::new(SmallRng::from_os_rng()),
        });
        vec![
            tokio::spawn(serve_udp(Arc::clone(&server), self.udp, stop.clone())),
            tokio::spawn(serve_tcp(server, self.tcp, stop)),
        ]
    }
}

struct DnsServer {
    responder: Responder,
    /// Seeds each question's own RNG (the shuffle of instances).
    rng: Mutex<SmallRng>,
}

/// How a question arrived, which decides the size rules of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl DnsServer {
    fn config(&self) -> &DnsConfig {
        &self.responder.config
    }

    /// The wire answer to the wire question `bytes`, or `None` for a packet that is not a query.
    async fn handle(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(bytes).ok()?;
        if request.message_type() != MessageType::Query {
            return None;
        }
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let seed = self.rng.lock().next_u64();
        let mut rng = SmallRng::seed_from_u64(seed);
        let config = self.config();
        let encoding = Encoding {
            compress: !config.disable_compression,
        };
        match self.responder.answer(&request, serial, &mut rng).await {
            Outcome::Answer(mut response) => {
                limit_address_answers(&request, &mut response, config.a_record_limit);
                match transport {
                    Transport::Tcp => encoding.encode(&response),
                    Transport::Udp => {
                        let max = usize::from(request.max_payload()).clamp(UDP_MIN_SIZE, UDP_MAX_SIZE);
                        fit_udp(
                            response,
                            config.udp_answer_limit,
                            max,
                            config.enable_truncate,
                            encoding,
                        )
                    }
                }
            }
            Outcome::Recurse => Some(self.recurse(&request, bytes).await),
        }
    }

    /// Asks the recursors in order; the first answer that is NOERROR or NXDOMAIN is passed on.
    async fn recurse(&self, request: &Message, bytes: &[u8]) -> Vec<u8> {
        let config = self.config();
        if config.recursors.is_empty() {
            // Consul hands names outside its domains to no one: REFUSED.
            let mut refused = reply_to(request, false);
            refused.set_response_code(ResponseCode::Refused);
            return refused.to_vec().unwrap_or_default();
        }
        for recursor in &config.recursors {
            match forward(bytes, *recursor, config.recursor_timeout).await {
                Ok(answer) => {
                    let usable = Message::from_vec(&answer).is_ok_and(|m| {
                        m.id() == request.id()
                            && matches!(m.response_code(), ResponseCode::NoError | ResponseCode::NXDomain)
                    });
                    if usable {
                        return answer;
                    }
                }
                Err(e) => tracing::debug!(%recursor, error = %e, "DNS recursor failed"),
            }
        }
        tracing::warn!(name = ?request.queries().first().map(|q| q.name().to_ascii()), "all DNS recursors failed");
        let mut failed = reply_to(request, true);
        failed.set_response_code(ResponseCode::ServFail);
        failed.to_vec().unwrap_or_default()
    }
}

/// One exchange with a recursor over UDP.
async fn forward(bytes: &[u8], recursor: SocketAddr, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if recursor.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(recursor).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    buf.truncate(n);
    Ok(buf)
}

/// Holds an A, AAAA or ANY answer to `limit` records on every transport (`a_record_limit`; 0 for
/// no limit).
fn limit_address_answers(request: &Message, response: &mut Message, limit: usize) {
    let address_question = request
        .queries()
        .first()
        .is_some_and(|q| matches!(q.query_type(), RecordType::A | RecordType::AAAA | RecordType::ANY));
    if limit > 0 && address_question {
        response.answers_mut().truncate(limit);
    }
}

/// How answers are written on the wire.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    /// Whether repeated names become pointers (RFC 1035 4.1.4); off with `disable_compression`.
    compress: bool,
}

impl Encoding {
    fn encode(self, message: &Message) -> Option<Vec<u8>> {
        let mut buffer = Vec::with_capacity(UDP_MIN_SIZE);
        let mut encoder = BinEncoder::new(&mut buffer);
        // hickory writes names without pointers in its canonical mode.
        encoder.set_canonical_names(!self.compress);
        message.emit(&mut encoder).ok()?;
        Some(buffer)
    }
}

/// Applies the UDP rules to an answer: at most `limit` answer records, then as many as fit in
/// `max` bytes, additional records kept only for the SRV targets that remain; TC set when records
/// were cut and `enable_truncate` is on.
fn fit_udp(
    mut response: Message,
    limit: usize,
    max: usize,
    enable_truncate: bool,
    encoding: Encoding,
) -> Option<Vec<u8>> {
    let mut cut = false;
    if response.answers().len() > limit {
        response.answers_mut().truncate(limit);
        cut = true;
    }
    keep_extras_of_answers(&mut response);
    loop {
        let bytes = encoding.encode(&response)?;
        if bytes.len() <= max {
            if cut && enable_truncate {
                response.set_truncated(true);
                return encoding.encode(&response);
            }
            return Some(bytes);
        }
        if response.answers_mut().pop().is_some() {
            keep_extras_of_answers(&mut response);
        } else if response.additionals_mut().pop().is_none() {
            return Some(bytes);
        }
        cut = true;
    }
}

/// Drops additional records for SRV targets no longer answered.
fn keep_extras_of_answers(response: &mut Message) {
    let targets: Vec<_> = response
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(srv) => Some(srv.target().clone()),
            _ => None,
        })
        .collect();
    if response
        .answers()
        .iter()
        .any(|r| r.record_type() == RecordType::SRV)
    {
        response
            .additionals_mut()
            .retain(|r| targets.iter().any(|t| t == r.name()));
    }
}

async fn serve_udp(server: Arc<DnsServer>, socket: UdpSocket, mut stop: watch::Receiver<bool>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65_535];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (n, from) = match received {
            Ok(received) => received,
            // An ICMP error of an earlier send surfaces here on some systems; keep serving.
            Err(e) => {
                tracing::debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        let packet = buf.get(..n).unwrap_or_default().to_vec();
        let (server, socket) = (Arc::clone(&server), Arc::clone(&socket));
        tokio::spawn(async move {
            if let Some(answer) = server.handle(&packet, Transport::Udp).await
                && let Err(e) = socket.send_to(&answer, from).await
            {
                tracing::debug!(%from, error = %e, "DNS UDP send failed");
            }
        });
    }
}

async fn serve_tcp(server: Arc<DnsServer>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(Arc::clone(&server), stream, stop.clone()));
            }
            Err(e) => tracing::debug!(error = %e, "DNS TCP accept failed"),
        }
    }
}

/// Questions on one TCP connection, each framed by a two-byte length, until the client closes,
/// goes idle or the agent stops.
async fn serve_connection(server: Arc<DnsServer>, mut stream: TcpStream, mut stop: watch::Receiver<bool>) {
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            let mut packet = vec![0u8; usize::from(len)];
            stream.read_exact(&mut packet).await?;
            Ok::<_, std::io::Error>(packet)
        };
        let packet = tokio::select! {
            read = tokio::time::timeout(TCP_IDLE, read) => match read {
                Ok(Ok(packet)) => packet,
                _ => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let Some(answer) = server.handle(&packet, Transport::Tcp).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, Record};

    const COMPRESSED: Encoding = Encoding { compress: true };

    fn srv_answer(count: u8) -> Message {
        let mut message = Message::new();
        let qname = Name::from_ascii("web.service.consul.").unwrap();
        for i in 0..count {
            let target = Name::from_ascii(format!("web-{i}.node.dc1.consul.")).unwrap();
            message.add_answer(Record::from_rdata(
                qname.clone(),
                0,
                RData::SRV(SRV::new(1, 1, 80, target.clone())),
            ));
            message.add_additional(Record::from_rdata(target, 0, RData::A(A::new(192, 0, 2, i))));
        }
        message
    }

    #[test]
    fn udp_answers_are_cut_to_the_limit_with_their_extras_and_flagged_when_asked() {
        let bytes = fit_udp(srv_answer(5), 3, UDP_MIN_SIZE, true, COMPRESSED).unwrap();
        let cut = Message::from_vec(&bytes).unwrap();
        assert_eq!(cut.answers().len(), 3);
        assert_eq!(cut.additionals().len(), 3);
        assert!(cut.truncated());

        let quiet =
            Message::from_vec(&fit_udp(srv_answer(5), 3, UDP_MIN_SIZE, false, COMPRESSED).unwrap()).unwrap();
        assert_eq!(quiet.answers().len(), 3);
        assert!(!quiet.truncated(), "TC only with enable_truncate");

        let whole =
            Message::from_vec(&fit_udp(srv_answer(2), 3, UDP_MIN_SIZE, true, COMPRESSED).unwrap()).unwrap();
        assert_eq!((whole.answers().len(), whole.truncated()), (2, false));
    }

    #[test]
    fn udp_answers_are_cut_to_the_size_limit() {
        let bytes = fit_udp(srv_answer(40), 100, UDP_MIN_SIZE, true, COMPRESSED).unwrap();
        assert!(bytes.len() <= UDP_MIN_SIZE, "{}", bytes.len());
        let cut = Message::from_vec(&bytes).unwrap();
        assert!(cut.truncated());
        assert!(!cut.answers().is_empty() && cut.answers().len() < 40);
        assert_eq!(cut.answers().len(), cut.additionals().len());
    }

    #[test]
    fn disable_compression_writes_every_name_in_full() {
        let message = srv_answer(3);
        let compressed = COMPRESSED.encode(&message).unwrap();
        let plain = Encoding { compress: false }.encode(&message).unwrap();
        assert!(
            plain.len() > compressed.len(),
            "{} vs {}",
            plain.len(),
            compressed.len()
        );
        let decoded = Message::from_vec(&plain).unwrap();
        assert_eq!(
            decoded.answers(),
            Message::from_vec(&compressed).unwrap().answers()
        );
        assert_eq!(decoded.additionals().len(), 3);
    }

    #[test]
    fn a_record_limit_holds_address_answers_only() {
        let asking = |kind| {
            let mut request = Message::new();
            request.add_query(Query::query(
                Name::from_ascii("web.service.consul.").unwrap(),
                kind,
            ));
            request
        };
        let mut srv = srv_answer(5);
        limit_address_answers(&asking(RecordType::SRV), &mut srv, 2);
        assert_eq!(srv.answers().len(), 5, "SRV answers are not A answers");
        let mut addresses = srv_answer(5);
        limit_address_answers(&asking(RecordType::A), &mut addresses, 2);
        assert_eq!(addresses.answers().len(), 2);
        let mut unlimited = srv_answer(5);
        limit_address_answers(&asking(RecordType::AAAA), &mut unlimited, 0);
        assert_eq!(unlimited.answers().len(), 5, "0 is no limit");
    }
}
