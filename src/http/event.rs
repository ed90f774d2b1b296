//! `PUT /v1/event/fire/{name}` and `GET /v1/event/list`, on server and client agents alike.
//!
//! Both are the agent's own: a fire goes into this agent's LAN pool, a list reads this agent's
//! ring ([`crate::events`]). Neither is carried to the leader; a fire with `?dc=` naming another
//! datacenter is carried to a server there (by the server's dispatch, or by a client agent handing
//! it to its server), which fires it in its own pool, as Consul's `Internal.EventFire` does.
//! The list's `X-Consul-Index` is Consul's hash of the last event's ID, so a blocking list
//! (`?index=&wait=`) returns when the last visible event changes.
//!
//! ACLs (servers; client agents run without ACLs): a fire needs `event:write` on its name, a list
//! shows only the events whose name the token may `event:read`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use tokio::sync::watch;
use tokio::time::Instant;
use tribune_gossip::Gossip;
use tribune_kvstore::Backend;

use super::{Access, ApiError, MAX_FORWARDED_BODY, Params, json_response};
use crate::client::ClientAgent;
use crate::events::{Events, FireRequest, UserEvent, list_index};
use crate::node::Agent;

/// Fires an event in `gossip`'s pool and answers the record, as Consul (LTime 0: the pool's time
/// is known on delivery).
async fn fire_in(
    gossip: Option<&Gossip>,
    name: String,
    params: &Params,
    payload: Bytes,
) -> Result<Response, ApiError> {
    let request = FireRequest {
        name,
        payload: payload.to_vec(),
        node_filter: params.get("node").unwrap_or_default().to_owned(),
        service_filter: params.get("service").unwrap_or_default().to_owned(),
        tag_filter: params.get("tag").unwrap_or_default().to_owned(),
    };
    let event = request
        .into_event(uuid::Uuid::new_v4().to_string())
        // Consul answers a refused event with a 500 and the reason, whatever the reason.
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(gossip) = gossip else {
        return Err(ApiError::internal(
            "this agent has no LAN pool (ports.serf_lan is disabled)",
        ));
    };
    let (gossip_name, bytes) = event.to_gossip().map_err(|e| ApiError::internal(e.to_string()))?;
    gossip
        .send_user_event(&gossip_name, &bytes)
        .await
        .map_err(|e| ApiError::internal(format!("Error firing event: {e}")))?;
    Ok(json_response(HeaderMap::new(), &event))
}

/// The events `access` may read, named `?name=` when given, and their index.
fn visible(events: &Events, params: &Params, access: &Access) -> (Vec<UserEvent>, u64) {
    let mut list = events.list();
    access.filter(&mut list, |authz, event| authz.event_read(&event.name));
    if let Some(name) = params.get("name").filter(|n| !n.is_empty()) {
        list.retain(|event| event.name == name);
    }
    let index = list_index(&list);
    (list, index)
}

/// Lists the ring; with `?index=` equal to the current index, waits for a kept event that changes
/// it, until the wait ends or the agent stops.
async fn list_from(
    events: &Events,
    params: &Params,
    access: &Access,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Response, ApiError> {
    let blocking = params.blocking()?;
    // Subscribed before the first look, so an event kept in between is not missed.
    let mut kept = events.subscribe();
    let deadline = blocking.map(|b| b.deadline());
    let (list, index) = loop {
        let _ = kept.borrow_and_update();
        let (list, index) = visible(events, params, access);
        let (Some(blocking), Some(deadline)) = (blocking, deadline) else {
            break (list, index);
        };
        if index != blocking.index || Instant::now() >= deadline {
            break (list, index);
        }
        tokio::select! {
            changed = kept.changed() => if changed.is_err() { break (list, index) },
            _ = tokio::time::sleep_until(deadline) => break (list, index),
            _ = shutdown.wait_for(|stopped| *stopped) => break (list, index),
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&index.to_string()) {
        headers.insert("x-consul-index", value);
    }
    Ok(json_response(headers, &list))
}

async fn body_bytes(request: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), MAX_FORWARDED_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"))
}

/// `PUT /v1/event/fire/{name}` on a server (a `?dc=` for another datacenter never reaches here:
/// the dispatch carries it there).
pub(crate) async fn fire<B: Backend>(
    State(agent): State<Arc<Agent<B>>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let uri = request.uri().clone();
    let params = Params::parse(uri.query());
    agent.authorize(request.headers(), &uri, |authz| authz.event_write(&name))?;
    let payload = body_bytes(request).await?;
    fire_in(agent.gossip.as_ref(), name, &params, payload).await
}

/// `GET /v1/event/list` on a server.
pub(crate) async fn list<B: Backend>(
    State(agent): State<Arc<Agent<B>>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let access = agent.access(&headers, &uri)?;
    list_from(&agent.events, &params, &access, agent.shutdown.clone()).await
}

/// `PUT /v1/event/fire/{name}` on a client agent: fired in its own pool, or handed to a server
/// when `?dc=` names another datacenter.
pub(crate) async fn client_fire(
    State(agent): State<Arc<ClientAgent>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let params = Params::parse(request.uri().query());
    if let Some(dc) = params.get("dc").filter(|dc| !dc.is_empty())
        && !dc.eq_ignore_ascii_case(&agent.config.datacenter)
    {
        return super::client::forward(State(agent), request).await;
    }
    let payload = body_bytes(request).await?;
    fire_in(Some(&agent.gossip), name, &params, payload).await
}

/// `GET /v1/event/list` on a client agent.
pub(crate) async fn client_list(
    State(agent): State<Arc<ClientAgent>>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let shutdown = agent.stop_tasks.subscribe();
    list_from(&agent.events, &params, &Access::Unrestricted, shutdown).await
}
