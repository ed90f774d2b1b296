//! What travels on the server RPC port: framing and the request/response messages.
//!
//! A frame is `len: u32 BE | request id: u64 BE | kind: u8 | body`, where `len` counts everything
//! after itself and the body is bincode. Request ids let many requests share one connection and
//! be answered out of order.

use bytes::Bytes;
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, CodecError};
use crate::types::{Command, NodeId, NodeInfo, TypeConfig};

/// Largest frame accepted; bigger ones close the connection (a corrupt or hostile peer).
pub(crate) const MAX_FRAME_BYTES: usize = 128 * 1024 * 1024;
/// Frame header after the length: request id and kind.
const HEADER_BYTES: usize = 9;

pub(crate) const KIND_REQUEST: u8 = 0;
pub(crate) const KIND_RESPONSE: u8 = 1;

/// A request sent to another server's RPC port.
///
/// It is opaque to applications except for its [`RpcKind`], which a fault-injecting
/// [`Transport`](crate::Transport) may use to pick what to disturb.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RpcRequest(pub(crate) Request);

/// The answer to an [`RpcRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcResponse(pub(crate) Response);

impl RpcRequest {
    /// An application request for a server's [`AppHandler`](crate::AppHandler), sent by a caller
    /// that runs no consensus server itself (a client agent) through a [`Transport`](crate::Transport).
    pub fn app(request: AppRequest) -> Self {
        RpcRequest(Request::App(request))
    }
}

impl RpcResponse {
    /// The application's answer to an [`RpcRequest::app`].
    pub fn into_app(self) -> Result<bytes::Bytes, crate::ConsensusError> {
        match self.0 {
            Response::App(Ok(bytes)) => Ok(bytes),
            Response::App(Err(e)) => Err(crate::server::remote_to_error(e)),
            _ => Err(crate::ConsensusError::App {
                reason: "the server answered an application request with another kind of response".into(),
            }),
        }
    }
}

/// What an [`RpcRequest`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RpcKind {
    /// Raft log replication and heartbeats.
    AppendEntries,
    /// Raft elections.
    Vote,
    /// One chunk of a Raft snapshot.
    InstallSnapshot,
    /// A client write forwarded to the leader.
    ForwardWrite,
    /// An opaque application request.
    App,
    /// A bootstrap probe ("do you already have Raft state?").
    Probe,
    /// A pre-vote ("would you vote for me?"), asked before an election.
    PreVote,
}

impl RpcRequest {
    /// What the request is for.
    pub fn kind(&self) -> RpcKind {
        match &self.0 {
            Request::AppendEntries(_) => RpcKind::AppendEntries,
            Request::Vote(_) => RpcKind::Vote,
            Request::InstallSnapshot(_) => RpcKind::InstallSnapshot,
            Request::Forward(_) => RpcKind::ForwardWrite,
            Request::App(_) => RpcKind::App,
            Request::Probe => RpcKind::Probe,
            Request::PreVote(_) => RpcKind::PreVote,
        }
    }
}

/// An opaque application request carried over the server RPC port, Consul-style: the node uses
/// it to forward reads and client-agent requests to the leader or another server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRequest {
    /// The datacenter the request is for; `None` means the receiving server's own. Reserved for
    /// cross-datacenter forwarding: today a server answers whatever it receives.
    pub datacenter: Option<String>,
    /// The request bytes, meaningful to the registered [`AppHandler`](crate::AppHandler).
    pub payload: Bytes,
}

/// A pre-vote: the term the candidate would campaign in and how far its log goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreVoteRequest {
    pub(crate) candidate: NodeId,
    pub(crate) term: u64,
    pub(crate) last_log_id: Option<crate::types::LogId>,
}

/// A client write forwarded from a follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardedWrite {
    pub(crate) datacenter: Option<String>,
    pub(crate) command: Command,
}

/// The result of a committed, applied write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    /// The command's index as the state machine saw it
    /// ([`CommittedCommand::index`](crate::CommittedCommand::index)).
    pub index: u64,
    /// The Raft log index of the entry that carried the command (for `Raft::wait` conditions).
    pub log_index: u64,
    /// What the state machine returned for it.
    pub response: Bytes,
}

/// Why a remote server refused or failed a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RemoteError {
    NotLeader {
        leader: Option<NodeId>,
        leader_info: Option<NodeInfo>,
    },
    NoAppHandler,
    App(String),
    Failed(String),
    /// The leader's write queue was full; the write was not queued.
    Overloaded {
        queued: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Forward(ForwardedWrite),
    App(AppRequest),
    Probe,
    /// Would the receiver vote for this candidate now? Asked before a real election, so that a
    /// server that cannot win never raises its term (see `election.rs`).
    PreVote(PreVoteRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, SnapshotMismatch>),
    Forward(Result<WriteResponse, RemoteError>),
    App(Result<Bytes, RemoteError>),
    Probe {
        initialized: bool,
    },
    /// The receiver could not serve the request at all (e.g. its Raft has stopped).
    Failed(String),
    /// The answer to [`Request::PreVote`].
    PreVote {
        /// Whether the receiver would vote for the candidate.
        granted: bool,
    },
}

/// One decoded frame.
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) kind: u8,
    pub(crate) body: Vec<u8>,
}

/// Encodes a message into a complete frame.
pub(crate) fn encode_frame<T: Serialize>(id: u64, kind: u8, msg: &T) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(msg)?;
    let len = HEADER_BYTES + body.len();
    if len > MAX_FRAME_BYTES {
        return Err(CodecError {
            reason: format!("frame of {len} bytes exceeds the {MAX_FRAME_BYTES} limit"),
        });
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut len_buf = [0u8; 4];
    match r.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if !(HEADER_BYTES..=MAX_FRAME_BYTES).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame length {len} outside {HEADER_BYTES}..={MAX_FRAME_BYTES}"),
        ));
    }
    let mut header = [0u8; HEADER_BYTES];
    r.read_exact(&mut header).await?;
    let (id_bytes, kind) = header.split_at(8);
    let mut id = [0u8; 8];
    id.copy_from_slice(id_bytes);
    let mut body = vec![0u8; len - HEADER_BYTES];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame {
        id: u64::from_be_bytes(id),
        kind: kind.first().copied().unwrap_or(u8::MAX),
        body,
    }))
}

/// Writes queued frames, coalescing whatever is queued into one flush.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::io::Result<()> {
    let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, w);
    while let Some(frame) = rx.recv().await {
        w.write_all(&frame).await?;
        while let Ok(more) = rx.try_recv() {
            w.write_all(&more).await?;
        }
        w.flush().await?;
    }
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_lengths_are_errors() {
        let req = RpcRequest(Request::App(AppRequest {
            datacenter: Some("dc2".into()),
            payload: Bytes::from("x"),
        }));
        let bytes = encode_frame(42, KIND_REQUEST, &req).unwrap();
        let mut r = bytes.as_slice();
        let frame = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((frame.id, frame.kind), (42, KIND_REQUEST));
        let back: RpcRequest = codec::decode(&frame.body).unwrap();
        assert_eq!(back.kind(), RpcKind::App);
        // Clean end of stream between frames.
        assert!(read_frame(&mut r).await.unwrap().is_none());
        // A length below the header, or above the limit, is an error, not an allocation.
        for len in [3u32, u32::MAX] {
            let mut bad = len.to_be_bytes().to_vec();
            bad.extend_from_slice(&[0; 16]);
            assert!(read_frame(&mut bad.as_slice()).await.is_err());
        }
        // A truncated frame is an error.
        let mut cut = &bytes[..bytes.len() - 1];
        assert!(read_frame(&mut cut).await.is_err());
        // Garbage bodies do not decode.
        assert!(codec::decode::<RpcRequest>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
