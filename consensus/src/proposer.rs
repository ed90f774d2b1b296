//! The leader's proposer: packs the writes that arrive while earlier proposals are in flight
//! into one Raft log entry.
//!
//! openraft 0.9 appends every client write as its own entry and waits for that append to be
//! synced before it handles the next message, so without batching a leader commits at most one
//! command per fsync, however many clients wait. The proposer keeps a few proposals in flight;
//! while they are, new commands queue, and the next proposal takes everything queued (up to the
//! configured count and bytes). One writer thus still gets one command per entry and the lowest
//! latency, and many writers share each fsync.

use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::ConsensusError;
use crate::types::{CommandBatch, NodeId, NodeInfo, Raft};
use crate::wire::WriteResponse;

/// How big a proposal may grow and how many may be in flight at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) max_commands: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_in_flight: usize,
    /// Writes that may wait in the queue; beyond them a write is refused with
    /// [`ConsensusError::Overloaded`] (never dropped once accepted).
    pub(crate) max_queued: usize,
}

struct Pending {
    command: Bytes,
    reply: oneshot::Sender<Result<WriteResponse, ConsensusError>>,
}

/// A handle to the proposer task; the task ends when the last handle is dropped.
pub(crate) struct Proposer {
    queue: mpsc::Sender<Pending>,
    max_queued: usize,
}

impl Proposer {
    pub(crate) fn start(raft: Raft, limits: BatchLimits) -> Self {
        let (queue, rx) = mpsc::channel(limits.max_queued.max(1));
        tokio::spawn(propose_loop(raft, rx, limits));
        Proposer {
            queue,
            max_queued: limits.max_queued,
        }
    }

    /// Proposes `command` on this server (which should be the leader) and waits until it is
    /// committed and applied.
    pub(crate) async fn write(&self, command: Bytes) -> Result<WriteResponse, ConsensusError> {
        let (reply, response) = oneshot::channel();
        self.queue
            .try_send(Pending { command, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ConsensusError::Overloaded {
                    queued: self.max_queued,
                },
                mpsc::error::TrySendError::Closed(_) => ConsensusError::Stopped {
                    reason: "the proposer has stopped".into(),
                },
            })?;
        response.await.map_err(|_| ConsensusError::Stopped {
            reason: "the proposer dropped the write".into(),
        })?
    }
}

async fn propose_loop(raft: Raft, mut queue: mpsc::Receiver<Pending>, limits: BatchLimits) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    // A command too big to join the previous proposal; it starts the next one.
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => match queue.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // Wait for a free slot *before* draining the queue: whatever arrives meanwhile joins
        // this proposal.
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut bytes = first.command.len();
        let mut batch = vec![first];
        while batch.len() < limits.max_commands {
            match queue.try_recv() {
                Ok(next) if bytes + next.command.len() <= limits.max_bytes => {
                    bytes += next.command.len();
                    batch.push(next);
                }
                Ok(next) => {
                    carried = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        submit(&raft, batch, slot).await;
    }
}

/// Hands one proposal to Raft (in queue order) and answers its writers when it is applied.
async fn submit(raft: &Raft, batch: Vec<Pending>, slot: tokio::sync::OwnedSemaphorePermit) {
    let (commands, replies): (Vec<Bytes>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let receiver = match raft.client_write_ff(CommandBatch(commands)).await {
        Ok(receiver) => receiver,
        Err(fatal) => {
            let e = ConsensusError::Stopped {
                reason: fatal.to_string(),
            };
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    tokio::spawn(async move {
        let outcome = receiver.await;
        drop(slot);
        let result = match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(write_error(RaftError::APIError(e))),
            Err(_) => Err(ConsensusError::Stopped {
                reason: "Raft stopped before the write was applied".into(),
            }),
        };
        match result {
            Ok(resp) => {
                let log_index = resp.log_id.index;
                let mut applied = resp.data.0.into_iter();
                for reply in replies {
                    let answer = match applied.next() {
                        Some(a) => Ok(WriteResponse {
                            index: a.index,
                            log_index,
                            response: a.response,
                        }),
                        None => Err(ConsensusError::Stopped {
                            reason: format!(
                                "no state machine response for a command of log entry {log_index}"
                            ),
                        }),
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    });
}

pub(crate) fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ConsensusError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ConsensusError::NotLeader {
            leader: f.leader_id,
            leader_info: f.leader_node,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ConsensusError::Membership {
            reason: c.to_string(),
        },
        RaftError::Fatal(f) => ConsensusError::Stopped {
            reason: f.to_string(),
        },
    }
}
