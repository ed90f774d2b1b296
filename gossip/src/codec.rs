//! The wire format: versioned binary packets (UDP) and streams (TCP push-pull).
//!
//! ```text
//! packet  := VERSION count:u8 { len:u16 message }{count}
//! message := kind:u8 body       (a kind the decoder does not know is skipped: the packet's other
//!                                 messages still apply)
//! prune   := KIND_PRUNE incarnation:u32 node:str   (`force-leave -prune`: erase `node`)
//! stream  := VERSION STREAM_PUSH_PULL flags:u8 event_ltime:u64 count:u32 { member_state }{count}
//!                [ want_count:u32 { name:str }{want_count} ]   (when flags has WANT)
//!          | VERSION STREAM_PING seq:u32 target:str      (the TCP fallback probe)
//!          | VERSION STREAM_ACK seq:u32
//!          | VERSION STREAM_KEYRING_REQUEST id:u64 op:u8 key:bytes    (op: 0 list, 1 install, 2 use, 3 remove)
//!          | VERSION STREAM_KEYRING_REPLY id:u64 node:str 1:u8 count:u16 { key:str }{count}
//!          | VERSION STREAM_KEYRING_REPLY id:u64 node:str 0:u8 error:str
//! ```
//! A keyring reply lists the member's keys in base64, primary first.
//! ack     := KIND_ACK seq:u32 [ dims:u8 { x:f32 }{dims} error:f32 adjustment:f32 height:f32 ]
//! The acker's Vivaldi coordinate is optional and last, so an ack from a member that sends none
//! (coordinates off, or built before them) still decodes, to `coordinate: None`. Its components
//! (seconds) travel as f32, which resolves better than 10 ns below 100 ms and halves what every
//! ack, the most frequent packet, carries.
//! member_state := name:str addr incarnation:u32 status:u8 tags
//!               | name:str 0:u8 incarnation:u32 status:u8      (brief: address family 0, no tags)
//!
//! Integers are little-endian; strings are `len:u16` + UTF-8; addresses are `family:u8` (4 or 6) +
//! octets + `port:u16`. Decoding never panics and never allocates more than the input's length:
//! every length and count is checked against the bytes that remain before anything is reserved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::coordinate::Coordinate;
use crate::keyring::KeyringOp;
use crate::member::{MemberStatus, Tags};

/// The first byte of every plaintext packet and stream.
pub(crate) const PROTOCOL_VERSION: u8 = 1;
const STREAM_PUSH_PULL: u8 = 0x40;
const STREAM_PING: u8 = 0x41;
const STREAM_ACK: u8 = 0x42;
const STREAM_KEYRING_REQUEST: u8 = 0x43;
const STREAM_KEYRING_REPLY: u8 = 0x44;
const KEYRING_LIST: u8 = 0;
const KEYRING_INSTALL: u8 = 1;
const KEYRING_USE: u8 = 2;
const KEYRING_REMOVE: u8 = 3;
const FLAG_JOIN: u8 = 1;
const FLAG_REPLY: u8 = 2;
const FLAG_PUSH: u8 = 4;
const FLAG_WANT: u8 = 8;
/// The address family byte of a brief member state, which has no address and no tags.
const FAMILY_NONE: u8 = 0;
/// Bytes a packet spends before its first message: version and count.
pub(crate) const PACKET_HEADER: usize = 2;
/// Bytes each message of a packet spends on its length prefix.
pub(crate) const MESSAGE_OVERHEAD: usize = 2;
/// Most messages in one packet.
pub(crate) const MAX_MESSAGES_PER_PACKET: usize = 255;

const KIND_PING: u8 = 1;
const KIND_INDIRECT_PING: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_NACK: u8 = 4;
const KIND_ALIVE: u8 = 5;
const KIND_SUSPECT: u8 = 6;
const KIND_DEAD: u8 = 7;
const KIND_USER_EVENT: u8 = 8;
const KIND_PRUNE: u8 = 9;

/// One protocol message carried in a packet.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// A direct probe of the member named `target`, to be acked to the sender.
    Ping {
        /// Sequence number echoed in the ack.
        seq: u32,
        /// Name of the member probed; a member with another name ignores the ping.
        target: String,
    },
    /// A request to probe `target` on the sender's behalf.
    IndirectPing {
        /// Sequence number echoed in the ack or nack sent back to the requester.
        seq: u32,
        /// Name of the member to probe.
        target: String,
        /// Its address.
        target_addr: SocketAddr,
        /// Whether the requester wants a nack when the target stays silent (Lifeguard).
        want_nack: bool,
    },
    /// Answer to a ping.
    Ack {
        /// The ping's sequence number.
        seq: u32,
        /// The acker's network coordinate, when it computes one (only on the answer to a direct
        /// ping; a relayed ack carries none).
        coordinate: Option<Coordinate>,
    },
    /// An indirect prober got no ack in time (Lifeguard): proof that the prober itself is healthy.
    Nack {
        /// The indirect ping's sequence number.
        seq: u32,
    },
    /// `node` is alive at `incarnation`, with this address and these tags.
    Alive {
        /// Incarnation of the claim.
        incarnation: u32,
        /// Member name.
        node: String,
        /// Member address.
        addr: SocketAddr,
        /// Member tags.
        tags: Tags,
    },
    /// `from` suspects `node` at `incarnation`.
    Suspect {
        /// Incarnation of the claim.
        incarnation: u32,
        /// Suspected member.
        node: String,
        /// Accuser.
        from: String,
    },
    /// `from` declares `node` dead at `incarnation`; `from == node` is a graceful leave.
    Dead {
        /// Incarnation of the claim.
        incarnation: u32,
        /// Member declared dead.
        node: String,
        /// Who declared it.
        from: String,
    },
    /// `node`, down (failed or left) at `incarnation`, is to be erased from every member's list
    /// rather than kept as departed until reaped: Consul's `force-leave -prune`. A build that
    /// predates this kind drops the whole packet carrying it; decoders from this one on skip
    /// any kind they do not know (see [`decode_packet`]).
    Prune {
        /// Incarnation of the claim: a member known at a higher one is not erased.
        incarnation: u32,
        /// Member to erase.
        node: String,
    },
    /// An application event broadcast to the whole pool.
    UserEvent {
        /// Lamport time of the event.
        ltime: u64,
        /// Event name.
        name: String,
        /// Event payload.
        payload: Vec<u8>,
    },
}

/// One member's state in a push-pull exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    /// Member name.
    pub name: String,
    /// Member address (unspecified, port 0, when `brief`).
    pub addr: SocketAddr,
    /// Incarnation.
    pub incarnation: u32,
    /// Status as seen by the sender.
    pub status: MemberStatus,
    /// Tags (empty when `brief`).
    pub tags: Tags,
    /// Only name, status and incarnation were sent: a digest entry that says "I know this member
    /// at this incarnation" without repeating what the receiver most likely holds already.
    pub brief: bool,
}

impl MemberState {
    /// A digest entry: name, incarnation and status only.
    pub fn brief(name: String, incarnation: u32, status: MemberStatus) -> MemberState {
        MemberState {
            name,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            incarnation,
            status,
            tags: Tags::new(),
            brief: true,
        }
    }
}

/// A state exchange, sent over a stream on join and periodically.
///
/// A request lists every member the sender knows: itself and the member it is sending to in full,
/// the rest as brief digest entries. The reply carries in full what the requester lacks or holds
/// at an older incarnation, and `want`s the members the requester knows newer; the requester
/// sends those in a third stream flagged `push`, answered by an empty reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPull {
    /// The sender is joining (asks the receiver to answer with its own state).
    pub join: bool,
    /// This is the answer to a request.
    pub reply: bool,
    /// A one-way delivery of the members the receiver asked for in `want`: merge, answer empty.
    pub push: bool,
    /// The sender's user-event Lamport clock.
    pub event_ltime: u64,
    /// The sender first, then the members it reports (in full or brief).
    pub members: Vec<MemberState>,
    /// Members the sender wants in full: the receiver knows them at a newer incarnation.
    pub want: Vec<String>,
}

/// One message carried over a stream (TCP): a request and its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamMessage {
    /// A full state exchange.
    PushPull(PushPull),
    /// A fallback probe over a reliable stream, sent alongside indirect probes (memberlist's TCP
    /// ping): tells a lossy network from a dead member.
    Ping {
        /// The probe's sequence number.
        seq: u32,
        /// Name of the member probed.
        target: String,
    },
    /// Reply to a stream ping.
    Ack {
        /// The probe's sequence number.
        seq: u32,
    },
    /// A keyring operation fanned out by one member to every other
    /// ([`crate::Pool::start_keyring_op`]).
    KeyringRequest {
        /// The operation's number at its origin.
        id: u64,
        /// What to do.
        op: KeyringOp,
    },
    /// A member's answer to a [`StreamMessage::KeyringRequest`].
    KeyringReply {
        /// The request's `id`.
        id: u64,
        /// Who answers.
        node: String,
        /// The member's keys afterwards (base64, primary first), or why it refused.
        result: Result<Vec<String>, String>,
    },
}

/// Why bytes could not be decoded. Decoding stops at the first problem; nothing is applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// The first byte is not a protocol version this build speaks (an encrypted packet received
    /// without a keyring lands here too).
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The byte found.
        version: u8,
    },
    /// The input ends in the middle of `what`.
    #[error("truncated input while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// An unknown message or stream kind.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The byte found.
        kind: u8,
    },
    /// A string field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {what}: {value}")]
    InvalidValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// Bytes remain after the last field of a message.
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
/// Strings longer than `u16::MAX` are cut at a character boundary; the pool refuses such names and
/// tags before they reach the encoder, so this only guards the format.
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_u16(out, end as u16);
    out.extend_from_slice(&s.as_bytes()[..end]);
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = b.len().min(u16::MAX as usize);
    put_u16(out, len as u16);
    out.extend_from_slice(&b[..len]);
}
fn put_f32(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&(v as f32).to_bits().to_le_bytes());
}
/// A coordinate of more than 255 dimensions (refused by `CoordinateConfig::validate`) is cut.
fn put_coordinate(out: &mut Vec<u8>, c: &Coordinate) {
    let dims = c.vec.len().min(usize::from(u8::MAX));
    out.push(dims as u8);
    for x in c.vec.iter().take(dims) {
        put_f32(out, *x);
    }
    put_f32(out, c.error);
    put_f32(out, c.adjustment);
    put_f32(out, c.height);
}
fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    put_u16(out, addr.port());
}
fn put_tags(out: &mut Vec<u8>, tags: &Tags) {
    let count = tags.len().min(u16::MAX as usize);
    put_u16(out, count as u16);
    for (k, v) in tags.iter().take(count) {
        put_str(out, k);
        put_str(out, v);
    }
}

/// Size of `tags` once encoded.
pub(crate) fn encoded_tags_len(tags: &Tags) -> usize {
    2 + tags.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>()
}

fn status_byte(s: MemberStatus) -> u8 {
    match s {
        MemberStatus::Alive => 0,
        MemberStatus::Suspect => 1,
        MemberStatus::Failed => 2,
        MemberStatus::Left => 3,
    }
}

/// Appends `msg` (kind and body, no length prefix) to `out`.
pub(crate) fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Ping { seq, target } => {
            out.push(KIND_PING);
            put_u32(out, *seq);
            put_str(out, target);
        }
        Message::IndirectPing {
            seq,
            target,
            target_addr,
            want_nack,
        } => {
            out.push(KIND_INDIRECT_PING);
            put_u32(out, *seq);
            put_str(out, target);
            put_addr(out, target_addr);
            out.push(u8::from(*want_nack));
        }
        Message::Ack { seq, coordinate } => {
            out.push(KIND_ACK);
            put_u32(out, *seq);
            if let Some(c) = coordinate {
                put_coordinate(out, c);
            }
        }
        Message::Nack { seq } => {
            out.push(KIND_NACK);
            put_u32(out, *seq);
        }
        Message::Alive {
            incarnation,
            node,
            addr,
            tags,
        } => {
            out.push(KIND_ALIVE);
            put_u32(out, *incarnation);
            put_str(out, node);
            put_addr(out, addr);
            put_tags(out, tags);
        }
        Message::Suspect {
            incarnation,
            node,
            from,
        } => {
            out.push(KIND_SUSPECT);
            put_u32(out, *incarnation);
            put_str(out, node);
            put_str(out, from);
        }
        Message::Dead {
            incarnation,
            node,
            from,
        } => {
            out.push(KIND_DEAD);
            put_u32(out, *incarnation);
            put_str(out, node);
            put_str(out, from);
        }
        Message::Prune { incarnation, node } => {
            out.push(KIND_PRUNE);
            put_u32(out, *incarnation);
            put_str(out, node);
        }
        Message::UserEvent { ltime, name, payload } => {
            out.push(KIND_USER_EVENT);
            put_u64(out, *ltime);
            put_str(out, name);
            put_bytes(out, payload);
        }
    }
}

/// Encodes one message on its own.
pub(crate) fn message_bytes(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    encode_message(msg, &mut out);
    out
}

/// A packet buffer holding only the header; append messages with [`push_framed`], then
/// [`finish_packet`].
pub(crate) fn start_packet() -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(PROTOCOL_VERSION);
    out.push(0);
    out
}

/// Appends one encoded message with its length prefix. The caller keeps messages under 64 KiB
/// (the pool's are bounded by the MTU) and at most [`MAX_MESSAGES_PER_PACKET`] per packet.
pub(crate) fn push_framed(out: &mut Vec<u8>, msg: &[u8]) {
    put_u16(out, msg.len().min(u16::MAX as usize) as u16);
    out.extend_from_slice(msg);
}

/// Writes the message count into the header.
pub(crate) fn finish_packet(out: &mut [u8], count: usize) {
    if let Some(c) = out.get_mut(1) {
        *c = count.min(MAX_MESSAGES_PER_PACKET) as u8;
    }
}

/// The raw messages of a framed packet, undecoded.
#[cfg(test)]
pub(crate) fn split_framed(packet: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = &packet[PACKET_HEADER..];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        out.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    out
}

/// Encodes a packet holding `messages`.
/// At most 255 messages are encoded; extra ones are left out.
pub fn encode_packet(messages: &[Message]) -> Vec<u8> {
    let mut out = start_packet();
    let count = messages.len().min(MAX_MESSAGES_PER_PACKET);
    for m in messages.iter().take(count) {
        push_framed(&mut out, &message_bytes(m));
    }
    finish_packet(&mut out, count);
    out
}

/// Encodes a push-pull stream.
pub fn encode_push_pull(pp: &PushPull) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pp.members.len() * 48);
    out.push(PROTOCOL_VERSION);
    out.push(STREAM_PUSH_PULL);
    let mut flags = 0;
    for (on, flag) in [
        (pp.join, FLAG_JOIN),
        (pp.reply, FLAG_REPLY),
        (pp.push, FLAG_PUSH),
        (!pp.want.is_empty(), FLAG_WANT),
    ] {
        if on {
            flags |= flag;
        }
    }
    out.push(flags);
    put_u64(&mut out, pp.event_ltime);
    put_u32(&mut out, pp.members.len() as u32);
    for m in &pp.members {
        put_member_state(&mut out, m);
    }
    if !pp.want.is_empty() {
        put_u32(&mut out, pp.want.len() as u32);
        for name in &pp.want {
            put_str(&mut out, name);
        }
    }
    out
}

pub(crate) fn put_member_state(out: &mut Vec<u8>, m: &MemberState) {
    put_str(out, &m.name);
    if m.brief {
        out.push(FAMILY_NONE);
    } else {
        put_addr(out, &m.addr);
    }
    put_u32(out, m.incarnation);
    out.push(status_byte(m.status));
    if !m.brief {
        put_tags(out, &m.tags);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { what })
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = usize::from(self.u16(what)?);
        Ok(self.take(len, what)?.to_vec())
    }
    fn f32(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from(f32::from_bits(self.u32(what)?)))
    }
    /// Values are not checked here: the coordinate client refuses non-finite ones.
    fn coordinate(&mut self) -> Result<Coordinate, DecodeError> {
        let dims = usize::from(self.u8("coordinate dimensions")?);
        if self.buf.len() < (dims + 3) * 4 {
            return Err(DecodeError::Truncated { what: "coordinate" });
        }
        let mut vec = Vec::with_capacity(dims);
        for _ in 0..dims {
            vec.push(self.f32("coordinate vector")?);
        }
        Ok(Coordinate {
            vec,
            error: self.f32("coordinate error")?,
            adjustment: self.f32("coordinate adjustment")?,
            height: self.f32("coordinate height")?,
        })
    }
    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8("address family")? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>("IPv4 address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>("IPv6 address")?)),
            other => {
                return Err(DecodeError::InvalidValue {
                    what: "address family",
                    value: other.into(),
                });
            }
        };
        Ok(SocketAddr::new(ip, self.u16("port")?))
    }
    fn tags(&mut self) -> Result<Tags, DecodeError> {
        let count = self.u16("tag count")?;
        let mut tags = Tags::new();
        for _ in 0..count {
            let k = self.string("tag key")?;
            let v = self.string("tag value")?;
            tags.insert(k, v);
        }
        Ok(tags)
    }
    fn status(&mut self) -> Result<MemberStatus, DecodeError> {
        match self.u8("member status")? {
            0 => Ok(MemberStatus::Alive),
            1 => Ok(MemberStatus::Suspect),
            2 => Ok(MemberStatus::Failed),
            3 => Ok(MemberStatus::Left),
            other => Err(DecodeError::InvalidValue {
                what: "member status",
                value: other.into(),
            }),
        }
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidValue {
                what,
                value: other.into(),
            }),
        }
    }
    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.buf.len(),
            })
        }
    }
}

fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf: bytes };
    let msg = match r.u8("message kind")? {
        KIND_PING => Message::Ping {
            seq: r.u32("seq")?,
            target: r.string("target")?,
        },
        KIND_INDIRECT_PING => Message::IndirectPing {
            seq: r.u32("seq")?,
            target: r.string("target")?,
            target_addr: r.addr()?,
            want_nack: r.flag("nack flag")?,
        },
        KIND_ACK => Message::Ack {
            seq: r.u32("seq")?,
            coordinate: if r.buf.is_empty() {
                None
            } else {
                Some(r.coordinate()?)
            },
        },
        KIND_NACK => Message::Nack { seq: r.u32("seq")? },
        KIND_ALIVE => Message::Alive {
            incarnation: r.u32("incarnation")?,
            node: r.string("node")?,
            addr: r.addr()?,
            tags: r.tags()?,
        },
        KIND_SUSPECT => Message::Suspect {
            incarnation: r.u32("incarnation")?,
            node: r.string("node")?,
            from: r.string("from")?,
        },
        KIND_DEAD => Message::Dead {
            incarnation: r.u32("incarnation")?,
            node: r.string("node")?,
            from: r.string("from")?,
        },
        KIND_PRUNE => Message::Prune {
            incarnation: r.u32("incarnation")?,
            node: r.string("node")?,
        },
        KIND_USER_EVENT => Message::UserEvent {
            ltime: r.u64("ltime")?,
            name: r.string("event name")?,
            payload: r.bytes("event payload")?,
        },
        kind => return Err(DecodeError::UnknownKind { kind }),
    };
    r.finish()?;
    Ok(msg)
}

fn check_version(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    match r.u8("version") {
        Err(_) => Err(DecodeError::Empty),
        Ok(PROTOCOL_VERSION) => Ok(()),
        Ok(version) => Err(DecodeError::UnsupportedVersion { version }),
    }
}

/// Decodes a plaintext packet into its messages. Either every message decodes or none is returned.
pub fn decode_packet(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut r = Reader { buf: bytes };
    check_version(&mut r)?;
    let count = r.u8("message count")?;
    // Each message needs at least its length prefix and kind, so `count` is bounded by the input.
    let mut out = Vec::with_capacity(usize::from(count).min(r.buf.len() / 3));
    for _ in 0..count {
        let len = usize::from(r.u16("message length")?);
        match decode_message(r.take(len, "message")?) {
            Ok(msg) => out.push(msg),
            // Each message carries its length, so a kind from a newer build costs only itself,
            // not the probes and claims sharing its packet.
            Err(DecodeError::UnknownKind { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    r.finish()?;
    Ok(out)
}

/// Encodes a stream message.
pub fn encode_stream(msg: &StreamMessage) -> Vec<u8> {
    match msg {
        StreamMessage::PushPull(pp) => encode_push_pull(pp),
        StreamMessage::Ping { seq, target } => {
            let mut out = vec![PROTOCOL_VERSION, STREAM_PING];
            put_u32(&mut out, *seq);
            put_str(&mut out, target);
            out
        }
        StreamMessage::Ack { seq } => {
            let mut out = vec![PROTOCOL_VERSION, STREAM_ACK];
            put_u32(&mut out, *seq);
            out
        }
        StreamMessage::KeyringRequest { id, op } => {
            let mut out = vec![PROTOCOL_VERSION, STREAM_KEYRING_REQUEST];
            put_u64(&mut out, *id);
            let (code, key): (u8, &[u8]) = match op {
                KeyringOp::List => (KEYRING_LIST, &[]),
                KeyringOp::Install(k) => (KEYRING_INSTALL, k),
                KeyringOp::Use(k) => (KEYRING_USE, k),
                KeyringOp::Remove(k) => (KEYRING_REMOVE, k),
            };
            out.push(code);
            put_bytes(&mut out, key);
            out
        }
        StreamMessage::KeyringReply { id, node, result } => {
            let mut out = vec![PROTOCOL_VERSION, STREAM_KEYRING_REPLY];
            put_u64(&mut out, *id);
            put_str(&mut out, node);
            match result {
                Ok(keys) => {
                    out.push(1);
                    let count = keys.len().min(u16::MAX as usize);
                    put_u16(&mut out, count as u16);
                    for key in keys.iter().take(count) {
                        put_str(&mut out, key);
                    }
                }
                Err(message) => {
                    out.push(0);
                    put_str(&mut out, message);
                }
            }
            out
        }
    }
}

fn keyring_request_body(r: &mut Reader<'_>) -> Result<StreamMessage, DecodeError> {
    let id = r.u64("keyring request id")?;
    let code = r.u8("keyring operation")?;
    let key = r.bytes("keyring key")?;
    let op = match code {
        KEYRING_LIST => KeyringOp::List,
        KEYRING_INSTALL => KeyringOp::Install(key),
        KEYRING_USE => KeyringOp::Use(key),
        KEYRING_REMOVE => KeyringOp::Remove(key),
        other => {
            return Err(DecodeError::InvalidValue {
                what: "keyring operation",
                value: other.into(),
            });
        }
    };
    Ok(StreamMessage::KeyringRequest { id, op })
}

fn keyring_reply_body(r: &mut Reader<'_>) -> Result<StreamMessage, DecodeError> {
    let id = r.u64("keyring reply id")?;
    let node = r.string("keyring reply node")?;
    let result = match r.u8("keyring reply outcome")? {
        1 => {
            let count = r.u16("keyring reply key count")?;
            // Each key takes at least its two length bytes: a count the input cannot hold is
            // refused before anything is reserved.
            if usize::from(count) * 2 > r.buf.len() {
                return Err(DecodeError::Truncated {
                    what: "keyring reply keys",
                });
            }
            let mut keys = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                keys.push(r.string("keyring reply key")?);
            }
            Ok(keys)
        }
        0 => Err(r.string("keyring reply error")?),
        other => {
            return Err(DecodeError::InvalidValue {
                what: "keyring reply outcome",
                value: other.into(),
            });
        }
    };
    Ok(StreamMessage::KeyringReply { id, node, result })
}

/// Decodes a plaintext stream message.
pub fn decode_stream(bytes: &[u8]) -> Result<StreamMessage, DecodeError> {
    let mut r = Reader { buf: bytes };
    check_version(&mut r)?;
    let msg = match r.u8("stream kind")? {
        STREAM_PUSH_PULL => StreamMessage::PushPull(push_pull_body(&mut r)?),
        STREAM_PING => StreamMessage::Ping {
            seq: r.u32("seq")?,
            target: r.string("target")?,
        },
        STREAM_ACK => StreamMessage::Ack { seq: r.u32("seq")? },
        STREAM_KEYRING_REQUEST => keyring_request_body(&mut r)?,
        STREAM_KEYRING_REPLY => keyring_reply_body(&mut r)?,
        kind => return Err(DecodeError::UnknownKind { kind }),
    };
    r.finish()?;
    Ok(msg)
}

/// Decodes a plaintext push-pull stream (any other stream message is an error).
pub fn decode_push_pull(bytes: &[u8]) -> Result<PushPull, DecodeError> {
    match decode_stream(bytes)? {
        StreamMessage::PushPull(pp) => Ok(pp),
        StreamMessage::Ping { .. } => Err(DecodeError::UnknownKind { kind: STREAM_PING }),
        StreamMessage::Ack { .. } => Err(DecodeError::UnknownKind { kind: STREAM_ACK }),
        StreamMessage::KeyringRequest { .. } => Err(DecodeError::UnknownKind {
            kind: STREAM_KEYRING_REQUEST,
        }),
        StreamMessage::KeyringReply { .. } => Err(DecodeError::UnknownKind {
            kind: STREAM_KEYRING_REPLY,
        }),
    }
}

fn push_pull_body(r: &mut Reader<'_>) -> Result<PushPull, DecodeError> {
    let flags = r.u8("flags")?;
    if flags > FLAG_JOIN | FLAG_REPLY | FLAG_PUSH | FLAG_WANT {
        return Err(DecodeError::InvalidValue {
            what: "flags",
            value: flags.into(),
        });
    }
    let event_ltime = r.u64("event ltime")?;
    let count = r.u32("member count")? as usize;
    // The smallest member state (brief, empty name) takes 2 + 1 + 4 + 1 = 8 bytes.
    let mut members = Vec::with_capacity(count.min(r.buf.len() / 8));
    for _ in 0..count {
        let name = r.string("member name")?;
        if r.buf.first() == Some(&FAMILY_NONE) {
            r.u8("address family")?;
            let incarnation = r.u32("incarnation")?;
            members.push(MemberState::brief(name, incarnation, r.status()?));
        } else {
            members.push(MemberState {
                name,
                addr: r.addr()?,
                incarnation: r.u32("incarnation")?,
                status: r.status()?,
                tags: r.tags()?,
                brief: false,
            });
        }
    }
    let mut want = Vec::new();
    if flags & FLAG_WANT != 0 {
        let count = r.u32("want count")? as usize;
        // Each name takes at least its 2-byte length.
        want.reserve(count.min(r.buf.len() / 2));
        for _ in 0..count {
            want.push(r.string("wanted name")?);
        }
    }
    Ok(PushPull {
        join: flags & FLAG_JOIN != 0,
        reply: flags & FLAG_REPLY != 0,
        push: flags & FLAG_PUSH != 0,
        event_ltime,
        members,
        want,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_messages() -> Vec<Message> {
        let mut tags = Tags::new();
        tags.insert("role".into(), "consul".into());
        tags.insert("dc".into(), "dc1".into());
        vec![
            Message::Ping {
                seq: 7,
                target: "a".into(),
            },
            Message::IndirectPing {
                seq: 9,
                target: "b".into(),
                target_addr: "[::1]:8301".parse().unwrap(),
                want_nack: true,
            },
            Message::Ack {
                seq: u32::MAX,
                coordinate: None,
            },
            Message::Ack {
                seq: 12,
                // Values exact in f32, so that the round trip compares equal.
                coordinate: Some(Coordinate {
                    vec: vec![0.0009765625, -0.001953125, 0.0, 0.0, 0.0, 0.0, 0.0, 3.5],
                    error: 0.25,
                    adjustment: -0.0001220703125,
                    height: 0.0000152587890625,
                }),
            },
            Message::Nack { seq: 0 },
            Message::Alive {
                incarnation: 3,
                node: "né".into(),
                addr: "10.0.0.1:7946".parse().unwrap(),
                tags,
            },
            Message::Suspect {
                incarnation: 4,
                node: "x".into(),
                from: "y".into(),
            },
            Message::Dead {
                incarnation: 5,
                node: "x".into(),
                from: "x".into(),
            },
            Message::UserEvent {
                ltime: 42,
                name: "deploy".into(),
                payload: vec![1, 2, 3],
            },
            Message::Prune {
                incarnation: 6,
                node: "gone.dc2".into(),
            },
        ]
    }

    #[test]
    fn an_unknown_message_kind_is_skipped_not_the_packet() {
        let known = Message::Nack { seq: 3 };
        let mut packet = start_packet();
        push_framed(&mut packet, &[0xee, 1, 2, 3]);
        push_framed(&mut packet, &message_bytes(&known));
        finish_packet(&mut packet, 2);
        assert_eq!(decode_packet(&packet).unwrap(), vec![known]);
    }

    #[test]
    fn packets_round_trip() {
        let msgs = sample_messages();
        let bytes = encode_packet(&msgs);
        assert_eq!(decode_packet(&bytes).unwrap(), msgs);
    }

    #[test]
    fn push_pull_round_trips() {
        let pp = PushPull {
            join: true,
            reply: false,
            push: false,
            event_ltime: 99,
            members: vec![MemberState {
                name: "n1".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                incarnation: 2,
                status: MemberStatus::Left,
                tags: Tags::new(),
                brief: false,
            }],
            want: Vec::new(),
        };
        assert_eq!(decode_push_pull(&encode_push_pull(&pp)).unwrap(), pp);
        let mut tags = Tags::new();
        tags.insert("role".into(), "node".into());
        let delta = PushPull {
            join: false,
            reply: true,
            push: true,
            event_ltime: 1,
            members: vec![
                MemberState {
                    name: "n1".into(),
                    addr: "[::1]:2".parse().unwrap(),
                    incarnation: 5,
                    status: MemberStatus::Alive,
                    tags: tags.clone(),
                    brief: false,
                },
                MemberState::brief("n2".into(), 7, MemberStatus::Suspect),
            ],
            want: vec!["n3".into(), "n4".into()],
        };
        let bytes = encode_push_pull(&delta);
        assert_eq!(decode_push_pull(&bytes).unwrap(), delta);
        for cut in 0..bytes.len() {
            assert!(decode_push_pull(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A brief entry costs its name, the family byte, incarnation and status: nothing else.
        let one = |m: MemberState| {
            let mut out = Vec::new();
            put_member_state(&mut out, &m);
            out.len()
        };
        assert_eq!(
            one(MemberState::brief("n2".into(), 7, MemberStatus::Alive)),
            2 + 2 + 1 + 4 + 1
        );
        for m in [
            StreamMessage::Ping {
                seq: 3,
                target: "b".into(),
            },
            StreamMessage::Ack { seq: 3 },
        ] {
            assert_eq!(decode_stream(&encode_stream(&m)).unwrap(), m);
        }
        assert!(decode_push_pull(&encode_stream(&StreamMessage::Ack { seq: 1 })).is_err());
    }

    #[test]
    fn keyring_messages_round_trip_and_refuse_every_truncation() {
        let messages = [
            StreamMessage::KeyringRequest {
                id: 7,
                op: KeyringOp::List,
            },
            StreamMessage::KeyringRequest {
                id: 8,
                op: KeyringOp::Install(vec![1; 16]),
            },
            StreamMessage::KeyringRequest {
                id: 9,
                op: KeyringOp::Use(vec![2; 32]),
            },
            StreamMessage::KeyringRequest {
                id: u64::MAX,
                op: KeyringOp::Remove(vec![3; 16]),
            },
            StreamMessage::KeyringReply {
                id: 9,
                node: "n1".into(),
                result: Ok(vec!["a2V5MQ==".into(), "a2V5Mg==".into()]),
            },
            StreamMessage::KeyringReply {
                id: 10,
                node: "n2".into(),
                result: Err("gossip key is not installed in the keyring".into()),
            },
        ];
        for m in messages {
            let bytes = encode_stream(&m);
            assert_eq!(decode_stream(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(decode_stream(&bytes[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            assert!(decode_push_pull(&bytes).is_err());
        }
        let mut bad_op = encode_stream(&StreamMessage::KeyringRequest {
            id: 1,
            op: KeyringOp::List,
        });
        bad_op[10] = 9;
        assert!(matches!(
            decode_stream(&bad_op),
            Err(DecodeError::InvalidValue {
                what: "keyring operation",
                value: 9
            })
        ));
        // A reply announcing 65,535 keys in a few bytes is refused before anything is reserved.
        let mut huge = vec![PROTOCOL_VERSION, STREAM_KEYRING_REPLY];
        huge.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut huge, "n");
        huge.push(1);
        put_u16(&mut huge, u16::MAX);
        assert!(matches!(decode_stream(&huge), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let bytes = encode_packet(&sample_messages());
        for cut in 0..bytes.len() {
            assert!(decode_packet(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode_packet(&b);
                let _ = decode_push_pull(&b);
            }
        }
        assert_eq!(decode_packet(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode_packet(&[9, 0]),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        );
    }

    #[test]
    fn an_ack_without_a_coordinate_still_decodes() {
        // The bytes of an ack as members built before coordinates send it: kind and seq only.
        let old = [PROTOCOL_VERSION, 1, 5, 0, KIND_ACK, 42, 0, 0, 0];
        assert_eq!(
            decode_packet(&old).unwrap(),
            vec![Message::Ack {
                seq: 42,
                coordinate: None
            }]
        );
        let mut coordinate = Coordinate::new(&crate::CoordinateConfig::default());
        coordinate.height = 0.0000152587890625; // exact in f32
        let with = Message::Ack {
            seq: 42,
            coordinate: Some(coordinate),
        };
        let bytes = message_bytes(&with);
        assert_eq!(bytes.len(), 5 + 1 + 8 * 4 + 3 * 4);
        assert_eq!(decode_message(&bytes).unwrap(), with);
        // A coordinate cut short anywhere is refused, never read as a shorter one.
        for cut in 6..bytes.len() {
            assert!(decode_message(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn huge_counts_do_not_allocate_ahead_of_input() {
        let mut b = vec![PROTOCOL_VERSION, STREAM_PUSH_PULL, 0];
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_push_pull(&b), Err(DecodeError::Truncated { .. })));
    }
}
