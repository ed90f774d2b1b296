//! The cross-datacenter call: an HTTP request carried whole to a server of another datacenter over
//! the server RPC port, served there by that datacenter's own rules, and its answer (status,
//! body and query-meta headers) carried back.

use std::time::Duration;

use axum::http::StatusCode;
use tribune_consensus::{AppRequest, ConsensusError};
use tribune_kvstore::Backend;

use crate::http::ApiError;
use crate::node::{Agent, AppCall, AppReply, ForwardedHttp, ForwardedResponse};

/// Consul's `rpc_hold_timeout`: how long a call to another datacenter may take beyond the wait of
/// a blocking query.
const HOLD_TIMEOUT: Duration = Duration::from_secs(7);

/// How long a call may take: the hold timeout, plus, for a blocking query, its wait (Consul's
/// default 5 min, at most 10 min) and the 1/16 jitter the remote server may add.
pub(crate) fn call_timeout(query: Option<&str>) -> Duration {
    let params = crate::http::Params::parse(query);
    if !params.has("index") {
        return HOLD_TIMEOUT;
    }
    let wait = params
        .get("wait")
        .and_then(|w| crate::duration::parse_go_duration(w).ok())
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600));
    HOLD_TIMEOUT + wait + wait / 16
}

impl<B: Backend> Agent<B> {
    /// Carries `request` to a live server of `datacenter` and returns its answer. A call that
    /// could not be sent (no connection) goes to the next server of that datacenter within the
    /// same request; one that may have been sent is never repeated.
    pub(crate) async fn forward_to_datacenter(
        &self,
        datacenter: &str,
        request: ForwardedHttp,
    ) -> Result<ForwardedResponse, ApiError> {
        let federation = self
            .federation
            .as_ref()
            .ok_or_else(|| ApiError::internal(crate::federation::RouteError::NoPath.to_string()))?;
        let servers = federation
            .route(datacenter)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // Counted once routed: only datacenters the WAN pool knows become label values.
        self.telemetry.cross_dc(datacenter);
        let timeout = call_timeout(request.uri.split_once('?').map(|(_, q)| q));
        let payload = AppCall::RemoteHttp(request).encode();
        for server in &servers {
            let call = AppRequest {
                datacenter: Some(datacenter.to_owned()),
                payload: payload.clone(),
            };
            match self
                .consensus
                .call_app_within(server.raft_id, &server.rpc_addr, call, timeout)
                .await
            {
                Ok(reply) => {
                    return match AppReply::decode(&reply) {
                        Ok(AppReply::Http(response)) => Ok(response),
                        Ok(_) => Err(ApiError::internal(format!(
                            "unexpected answer from server {} of datacenter {datacenter}",
                            server.node
                        ))),
                        Err(e) => Err(ApiError::internal(e)),
                    };
                }
                Err(ConsensusError::NotSent { reason, .. }) => {
                    tracing::debug!(server = %server.node, %datacenter, %reason, "cross-datacenter call not sent; trying the next server");
                    federation.call_failed(datacenter, &server.node);
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("rpc error making call to datacenter {datacenter}: {e}"),
                    ));
                }
            }
        }
        Err(ApiError::internal(
            crate::federation::RouteError::NoServerReachable.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_query_may_wait_its_whole_wait_there() {
        assert_eq!(call_timeout(None), HOLD_TIMEOUT);
        assert_eq!(
            call_timeout(Some("wait=10s")),
            HOLD_TIMEOUT,
            "no index: not blocking"
        );
        assert_eq!(
            call_timeout(Some("index=5&wait=16s")),
            HOLD_TIMEOUT + Duration::from_secs(17)
        );
        assert_eq!(
            call_timeout(Some("index=5")),
            HOLD_TIMEOUT + Duration::from_secs(300) + Duration::from_secs(300) / 16
        );
        assert_eq!(
            call_timeout(Some("index=5&wait=1h")),
            HOLD_TIMEOUT + Duration::from_secs(600) + Duration::from_secs(600) / 16
        );
    }
}
