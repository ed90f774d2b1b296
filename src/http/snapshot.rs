//! `/v1/snapshot`: GET streams an archive of the whole state; PUT restores one through the log.
//!
//! The archive is kvstore's export, a tribune-snapshot file (not Consul's gzipped tar: clients treat
//! it as opaque bytes they save and send back). Both directions spool through a temporary file, as
//! Consul's server does, so memory stays bounded by one chunk whatever the state's size, and a
//! restore verifies the whole archive (framing, record count, SHA-256) before anything is proposed.

use std::io::{Read, Seek, SeekFrom, Write};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tribune_kvstore::{Backend, Command, ExportOptions, StateRecord};
use tribune_snapshot::{SnapshotError, SnapshotReader};

use super::{ApiError, Params, Shared, accepted};

/// Size of the pieces a saved archive is streamed in.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;

/// Largest archive `PUT /v1/snapshot` accepts.
pub(crate) const MAX_RESTORE_BYTES: usize = 1024 * 1024 * 1024;

/// Record payload bytes per `RestoreChunk` command: large enough that a restore takes few log
/// entries, small enough that one entry replicates in a single raft request.
const RESTORE_CHUNK_BYTES: usize = 1024 * 1024;

/// `GET /v1/snapshot[?stale]`: an archive of the state after the read barrier of the requested mode;
/// `X-Consul-Index` is the archive's index. Needs `acl = "write"` (the archive holds every secret).
pub(crate) async fn save<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    agent.authorize(&request_headers, &uri, |a| a.snapshot())?;
    let mode = params.read_mode()?;
    agent.read_barrier(mode).await.map_err(ApiError::consensus)?;
    let store = std::sync::Arc::clone(&agent.store);
    let exported = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let file = tempfile::tempfile().map_err(|e| format!("creating a temporary file: {e}"))?;
        let options = ExportOptions {
            created_at_unix_ms: super::now_unix_ms(),
            ..ExportOptions::default()
        };
        let (mut file, inspection) = store
            .export(file, &options)
            .map_err(|e| format!("exporting the state: {e}"))?;
        file.flush()
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .map_err(|e| format!("rewinding the archive: {e}"))?;
        Ok((file, inspection))
    })
    .await
    .map_err(|e| ApiError::internal(format!("snapshot task failed: {e}")))?;
    let (file, inspection) = exported.map_err(ApiError::internal)?;

    let (chunks, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || stream_file(file, &chunks));
    let body = Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.extend(agent.query_meta().with_index(inspection.meta.index).headers());
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(length) = HeaderValue::from_str(&inspection.total_bytes.to_string()) {
        headers.insert("content-length", length);
    }
    Ok(response)
}

/// Sends a file's bytes down `chunks`, stopping when the reader of the response went away.
fn stream_file(mut file: std::fs::File, chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let mut buffer = vec![0; STREAM_CHUNK_BYTES];
    loop {
        let sent = match file.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => chunks.blocking_send(Ok(Bytes::copy_from_slice(&buffer[..read]))),
            Err(e) => {
                let _ = chunks.blocking_send(Err(e));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// `PUT /v1/snapshot`: replaces the whole state with the archive in the body, on every server at the
/// same log index. The archive is spooled and verified first; then the server proposes
/// `RestoreBegin`, the records in `RestoreChunk`s and `RestoreCommit`, so the state is swapped at
/// once when the commit applies and never shows a partial restore. Needs `acl = "write"`.
pub(crate) async fn restore<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    if params.has("stale") {
        return Err(ApiError::bad_request(
            "Cannot use ?stale when restoring a snapshot",
        ));
    }
    agent.authorize(&request_headers, &uri, |a| a.snapshot())?;
    let file = spool(body).await?;
    let verified = tokio::task::spawn_blocking(move || {
        let mut file = file;
        let inspection = tribune_snapshot::verify(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        Ok::<_, SnapshotError>((file, inspection))
    })
    .await
    .map_err(|e| ApiError::internal(format!("snapshot task failed: {e}")))?;
    let (file, inspection) =
        verified.map_err(|e| ApiError::bad_request(format!("Invalid snapshot archive: {e}")))?;
    if inspection.meta.datacenter != agent.config.datacenter {
        return Err(ApiError::bad_request(format!(
            "Invalid snapshot archive: it belongs to datacenter {:?}, this one is {:?}",
            inspection.meta.datacenter, agent.config.datacenter
        )));
    }

    // One restore at a time from this server; a restore from another server that interleaves fails
    // its next chunk (the store names the restore in progress), never mixes records.
    let _serial = agent.restore_lock.lock().await;
    let restore_id = rand::random::<u64>();
    propose_step(&agent, Command::RestoreBegin { restore_id }).await?;
    let (chunks, mut receiver) = mpsc::channel::<Result<Vec<StateRecord>, String>>(1);
    let reader = tokio::task::spawn_blocking(move || read_chunks(file, &chunks));
    let mut outcome = Ok(());
    while let Some(chunk) = receiver.recv().await {
        let step = match chunk {
            Ok(records) => propose_step(&agent, Command::RestoreChunk { restore_id, records }).await,
            Err(message) => Err(ApiError::bad_request(format!(
                "Invalid snapshot archive: {message}"
            ))),
        };
        if let Err(e) = step {
            outcome = Err(e);
            break;
        }
    }
    drop(receiver);
    let _ = reader.await;
    if let Err(e) = outcome {
        // Free the staging area the aborted restore filled (best effort: a later restore clears it
        // too); the live state was never touched.
        let _ = agent
            .propose(&Command::RestoreBegin {
                restore_id: rand::random(),
            })
            .await;
        return Err(e);
    }
    propose_step(&agent, Command::RestoreCommit { restore_id }).await?;
    agent.after_restore().await;
    Ok(StatusCode::OK.into_response())
}

async fn propose_step<B: Backend>(agent: &Shared<B>, command: Command) -> Result<(), ApiError> {
    let (response, _) = agent.propose(&command).await.map_err(ApiError::propose)?;
    accepted(response).map(|_| ())
}

/// Writes the request body to a temporary file, refusing more than [`MAX_RESTORE_BYTES`].
async fn spool(body: Body) -> Result<std::fs::File, ApiError> {
    let (pieces, mut receiver) = mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut file = tempfile::tempfile()?;
        while let Some(piece) = receiver.blocking_recv() {
            file.write_all(&piece)?;
        }
        file.flush()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    });
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    let mut failure = None;
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                failure = Some(ApiError::bad_request(format!("reading the request body: {e}")));
                break;
            }
        };
        total = total.saturating_add(piece.len());
        if total > MAX_RESTORE_BYTES {
            failure = Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Snapshot archive over {MAX_RESTORE_BYTES} bytes"),
            ));
            break;
        }
        if pieces.send(piece).await.is_err() {
            break;
        }
    }
    drop(pieces);
    let written = writer
        .await
        .map_err(|e| ApiError::internal(format!("snapshot task failed: {e}")))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    written.map_err(|e| ApiError::internal(format!("spooling the snapshot: {e}")))
}

/// Decodes a verified archive's records into chunks of about [`RESTORE_CHUNK_BYTES`] and sends them
/// down `chunks`; stops early when the receiver is gone.
fn read_chunks(file: std::fs::File, chunks: &mpsc::Sender<Result<Vec<StateRecord>, String>>) {
    let mut reader = match SnapshotReader::open_verified(std::io::BufReader::new(file)) {
        Ok(reader) => reader,
        Err(e) => {
            let _ = chunks.blocking_send(Err(e.to_string()));
            return;
        }
    };
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0usize;
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => {
                let _ = chunks.blocking_send(Err(e.to_string()));
                return;
            }
        };
        chunk_bytes = chunk_bytes.saturating_add(record.payload.len());
        match StateRecord::from_archive(&record) {
            Ok(decoded) => chunk.push(decoded),
            Err(e) => {
                let _ = chunks.blocking_send(Err(e.to_string()));
                return;
            }
        }
        if chunk_bytes >= RESTORE_CHUNK_BYTES {
            chunk_bytes = 0;
            if chunks.blocking_send(Ok(std::mem::take(&mut chunk))).is_err() {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.blocking_send(Ok(chunk));
    }
}
