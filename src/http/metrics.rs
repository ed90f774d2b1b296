//! `GET /v1/agent/metrics`: this agent's metrics as Consul's JSON, or as Prometheus text with
//! `?format=prometheus` (when `telemetry.prometheus_retention_time` is above zero); and the
//! middleware that times every HTTP request under its route's name.
//!
//! It is not where series are kept or rendered (`crate::telemetry`). Served by each agent for
//! itself, never forwarded (an `/v1/agent/` path), and only to a token with `agent:read`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tribune_kvstore::Backend;

use super::{ApiError, ForwardedByServer, FromOtherDatacenter, Params, Shared, json_response};
use crate::telemetry::{self, GaugeReading, Telemetry};

/// The media type of Prometheus's text format, as Consul answers it.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Consul's reason for an empty Prometheus answer.
const PROMETHEUS_DISABLED: &str = "Prometheus is not enabled since its retention time is not positive";

/// `GET /v1/agent/metrics[?format=prometheus]` of a server agent.
pub(crate) async fn agent_metrics<B: Backend>(
    State(agent): State<Shared<B>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = &agent.config.node_name;
    agent.authorize(&headers, &uri, |a| a.agent_read(node))?;
    if let Some(refusal) = prometheus_refusal(&agent.telemetry, &uri) {
        return Ok(refusal);
    }
    let cache = agent.resolver.token_cache_counts();
    let totals = vec![
        (telemetry::ACL_TOKEN_CACHE_HIT, cache.hits),
        (telemetry::ACL_TOKEN_CACHE_MISS, cache.misses),
    ];
    let snapshot = agent.telemetry.snapshot(gauges(&agent).await, totals);
    Ok(render(&snapshot, &uri))
}

/// `GET /v1/agent/metrics[?format=prometheus]` of a client agent: its own series, never a
/// server's. (A client agent runs without ACLs, so there is no token to check.)
pub(crate) async fn client_agent_metrics(
    State(agent): State<Arc<crate::client::ClientAgent>>,
    uri: Uri,
) -> Response {
    if let Some(refusal) = prometheus_refusal(&agent.telemetry, &uri) {
        return refusal;
    }
    let gauges = vec![health_score(&agent.gossip).await];
    render(&agent.telemetry.snapshot(gauges, Vec::new()), &uri)
}

/// `memberlist.health.score`: Lifeguard's health score of this agent in its LAN pool.
async fn health_score(gossip: &tribune_gossip::Gossip) -> GaugeReading {
    GaugeReading {
        name: telemetry::MEMBERLIST_HEALTH_SCORE,
        value: f64::from(gossip.health_score().await.unwrap_or_default()),
    }
}

fn wants_prometheus(uri: &Uri) -> bool {
    Params::parse(uri.query()).get("format") == Some("prometheus")
}

/// The answer to a Prometheus scrape of an agent without retention: current Consul's empty 200,
/// with why in a header (older ones answered 415 with the same words).
fn prometheus_refusal(telemetry: &Telemetry, uri: &Uri) -> Option<Response> {
    if !wants_prometheus(uri) || telemetry.prometheus_enabled() {
        return None;
    }
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("x-consul-reason", HeaderValue::from_static(PROMETHEUS_DISABLED));
    Some(response)
}

/// A reading as Prometheus text or as Consul's JSON, as the request asks.
fn render(snapshot: &telemetry::Snapshot, uri: &Uri) -> Response {
    if wants_prometheus(uri) {
        let mut response = snapshot.prometheus().into_response();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static(PROMETHEUS_TEXT));
        return response;
    }
    json_response(HeaderMap::new(), &snapshot.json())
}

/// The gauges read at the request: from consensus, the LAN pool, the leader's session timers and,
/// on the leader of an ACL secondary, replication.
async fn gauges<B: Backend>(agent: &Shared<B>) -> Vec<GaugeReading> {
    let last_log_index = agent
        .consensus
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    let (mut servers, mut clients) = (0u32, 0u32);
    if let Some(gossip) = &agent.gossip
        && let Ok(members) = gossip.members().await
    {
        for member in members.iter().filter(|m| m.status.is_live()) {
            if crate::node::is_server(member, &agent.config.datacenter) {
                servers += 1;
            } else {
                clients += 1;
            }
        }
    }
    let mut gauges = vec![
        GaugeReading {
            name: telemetry::MEMBERS_SERVERS,
            value: f64::from(servers),
        },
        GaugeReading {
            name: telemetry::MEMBERS_CLIENTS,
            value: f64::from(clients),
        },
        GaugeReading {
            name: telemetry::SESSION_TTL_ACTIVE,
            value: agent.sessions.active_timers() as f64,
        },
        GaugeReading {
            name: telemetry::SERVER_IS_LEADER,
            value: if agent.consensus.is_leader() { 1.0 } else { 0.0 },
        },
        GaugeReading {
            name: telemetry::RAFT_APPLIED_INDEX,
            value: agent.consensus.applied_index() as f64,
        },
        GaugeReading {
            name: telemetry::RAFT_LAST_INDEX,
            value: last_log_index as f64,
        },
    ];
    if let Some(gossip) = &agent.gossip {
        gauges.push(health_score(gossip).await);
    }
    if agent.consensus.is_leader() && crate::acl_replication::is_acl_secondary(agent) {
        gauges.extend(agent.acl_replication.gauges());
    }
    gauges
}

/// Times each request under its route's names. A request another server forwarded here is not
/// timed: that server timed it where its client sent it. (A client agent times what it hands to
/// a server: the server times it again, as the route it served.)
pub(crate) async fn time_requests(
    State(telemetry): State<Arc<Telemetry>>,
    request: Request,
    next: Next,
) -> Response {
    let forwarded = request.extensions().get::<ForwardedByServer>().is_some()
        || request.extensions().get::<FromOtherDatacenter>().is_some();
    let timing = match request.extensions().get::<MatchedPath>() {
        Some(route) if !forwarded => telemetry.time_http(request.method().as_str(), route.as_str()),
        _ => None,
    };
    // Consul's agent logs every request at debug. Nothing is kept for the line unless someone
    // reads debug lines (the output's level or a monitor), so a request pays nothing for it.
    let logged = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        (
            request.method().clone(),
            request.uri().clone(),
            std::time::Instant::now(),
        )
    });
    let response = next.run(request).await;
    drop(timing);
    if let Some((method, uri, started)) = logged {
        tracing::debug!(
            method = %method,
            url = %redacted_url(&uri),
            latency = ?started.elapsed(),
            "Request finished"
        );
    }
    response
}

/// A request's path and query for the log, with a `token` parameter's value hidden as Consul hides
/// it.
fn redacted_url(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("token") => format!("{name}=<hidden>"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_hide_the_token() {
        let uri = |text: &str| text.parse::<Uri>().unwrap();
        assert_eq!(redacted_url(&uri("/v1/kv/a")), "/v1/kv/a");
        assert_eq!(
            redacted_url(&uri("/v1/kv/a?recurse&token=s3cret&dc=dc2")),
            "/v1/kv/a?recurse&token=<hidden>&dc=dc2"
        );
        assert_eq!(redacted_url(&uri("/v1/kv/a?TOKEN=x")), "/v1/kv/a?TOKEN=<hidden>");
    }
}
