//! `/v1/operator/keyring`: the gossip encryption keys, listed (GET) and rotated — install
//! (POST), use (PUT), remove (DELETE) — on every member at once, as Consul's `consul keyring`
//! does. On a server the operation covers the WAN pool and the LAN pool of every datacenter: the
//! server does the WAN pool and its own LAN pool, and carries the request to a server of each
//! other datacenter, which does only its LAN pool (it knows the request came from another
//! datacenter by a mark only the server port can set). Nothing goes through raft.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tribune_gossip::{Gossip, KeyringOp, KeyringReport, decode_key};
use tribune_kvstore::Backend;

use super::{ApiError, FromOtherDatacenter, Params, Shared, json_response};
use crate::node::{Agent, ForwardedHttp};

/// Consul's `KeyringResponse`: one pool's answer. It also carries a datacenter's LAN answer back
/// to the server that carried the operation there.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct PoolKeys {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    segment: String,
    /// Each key (base64) with the number of members holding it.
    keys: BTreeMap<String, usize>,
    /// Each primary key with the number of members using it.
    primary_keys: BTreeMap<String, usize>,
    num_nodes: usize,
    /// Member → why it refused or that it did not answer.
    messages: BTreeMap<String, String>,
    /// `n/m nodes reported failure` when a member refused or did not answer (Consul's internal
    /// `Error`): such a pool turns the whole answer into an error, so it is never listed.
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Debug, Deserialize)]
struct KeyBody {
    #[serde(rename = "Key")]
    key: String,
}

/// Consul's most relays of a keyring query; the fan-out here goes to every member directly, so
/// the factor is checked and otherwise has no effect.
const MAX_RELAY_FACTOR: u8 = 5;

/// What a request asks for, checked before anything is done.
#[derive(Debug)]
pub(crate) struct KeyringRequest {
    op: KeyringOp,
    local_only: bool,
}

impl KeyringRequest {
    pub(crate) fn parse(method: &Method, uri: &Uri, body: &[u8]) -> Result<Self, ApiError> {
        let params = Params::parse(uri.query());
        if let Some(factor) = params.get("relay-factor")
            && factor.parse::<u8>().map_or(true, |f| f > MAX_RELAY_FACTOR)
        {
            return Err(ApiError::bad_request(format!(
                "Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]"
            )));
        }
        let local_only = params.get("local-only").is_some_and(|v| v != "false");
        if local_only && *method != Method::GET {
            return Err(ApiError::bad_request(
                "local-only can only be used for GET requests",
            ));
        }
        let op = if *method == Method::GET {
            KeyringOp::List
        } else {
            let body: KeyBody = super::decode_json(body)
                .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
            let key =
                decode_key(&body.key).map_err(|e| ApiError::bad_request(format!("Invalid key: {e}")))?;
            match *method {
                Method::POST => KeyringOp::Install(key),
                Method::PUT => KeyringOp::Use(key),
                Method::DELETE => KeyringOp::Remove(key),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method not allowed",
                    ));
                }
            }
        };
        Ok(KeyringRequest { op, local_only })
    }

    pub(crate) fn is_list(&self) -> bool {
        !self.op.changes_keys()
    }

    /// Carries the request out on a server, as Consul does: on the WAN pool first (the servers of
    /// every datacenter), then on this datacenter's LAN pool, then on the LAN pool of every other
    /// datacenter the router knows, through one of its servers. A list shows every pool. A
    /// datacenter that cannot be reached or refuses fails the whole request with its error (the
    /// pools already done keep the change), as Consul's fan-out does.
    async fn run_everywhere<B: Backend>(
        self,
        agent: &Agent<B>,
        lan: &Gossip,
        wan: &Gossip,
        original: &OriginalRequest,
    ) -> Result<Response, ApiError> {
        let datacenter = agent.config.datacenter.as_str();
        let list = self.is_list();
        let mut pools = Vec::new();
        for (gossip, is_wan) in [(wan, true), (lan, false)] {
            let request = KeyringRequest {
                op: self.op.clone(),
                local_only: false,
            };
            pools.push(request.run_pool(gossip, datacenter, is_wan).await?);
        }
        let others: Vec<String> = match agent.federation.as_ref() {
            Some(federation) => federation.datacenters_by_distance().await,
            None => Vec::new(),
        }
        .into_iter()
        .filter(|dc| dc != datacenter)
        .collect();
        let answers = futures::future::join_all(
            others
                .iter()
                .map(|dc| agent.forward_to_datacenter(dc, original.to_forwarded())),
        )
        .await;
        for (dc, answer) in others.iter().zip(answers) {
            pools.extend(datacenter_pools(dc, answer?)?);
        }
        finish(pools, list)
    }

    /// Carries the request out on `gossip`'s pool (of `datacenter`).
    pub(crate) async fn run(self, gossip: &Gossip, datacenter: &str) -> Result<Response, ApiError> {
        let list = self.is_list();
        let pool = self.run_pool(gossip, datacenter, false).await?;
        finish(vec![pool], list)
    }

    /// The part of a server of another datacenter's operation that falls to this one: its LAN
    /// pool. The answer is the pool's, failures included, for that server to report.
    async fn run_for_other_datacenter(self, lan: &Gossip, datacenter: &str) -> Result<Response, ApiError> {
        let pool = self.run_pool(lan, datacenter, false).await?;
        Ok(json_response(HeaderMap::new(), &[pool]))
    }

    /// Carries the request out on one pool and answers that pool's keys and failures.
    async fn run_pool(self, gossip: &Gossip, datacenter: &str, wan: bool) -> Result<PoolKeys, ApiError> {
        // Without encryption there is nothing to list or rotate: say so once, not once per member.
        let local_keys = gossip.list_keys().await.map_err(|e| match e {
            tribune_gossip::RuntimeError::NoKeyring => {
                ApiError::internal("gossip encryption is not enabled on this agent (no encrypt key)")
            }
            other => ApiError::internal(other.to_string()),
        })?;
        if self.local_only {
            return Ok(PoolKeys {
                wan: false,
                datacenter: datacenter.to_owned(),
                segment: String::new(),
                primary_keys: local_keys.first().map(|k| (k.clone(), 1)).into_iter().collect(),
                keys: local_keys.into_iter().map(|k| (k, 1)).collect(),
                num_nodes: 1,
                messages: BTreeMap::new(),
                error: String::new(),
            });
        }
        let report = gossip
            .keyring(self.op)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(pool_keys(report, datacenter, wan))
    }
}

/// What the keyring request was, to carry it to other datacenters as it came (its token header
/// or `?token=` included, so each datacenter applies its own ACLs).
struct OriginalRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl OriginalRequest {
    fn to_forwarded(&self) -> ForwardedHttp {
        ForwardedHttp {
            method: self.method.to_string(),
            uri: self
                .uri
                .path_and_query()
                .map_or_else(|| "/v1/operator/keyring".to_owned(), |pq| pq.to_string()),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect(),
            body: self.body.to_vec(),
        }
    }
}

/// The pools another datacenter's server answered for, or its refusal as this request's error.
fn datacenter_pools(
    datacenter: &str,
    answer: crate::node::ForwardedResponse,
) -> Result<Vec<PoolKeys>, ApiError> {
    if answer.status != StatusCode::OK.as_u16() {
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(ApiError::new(
            status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        ));
    }
    serde_json::from_slice(&answer.body).map_err(|e| {
        ApiError::internal(format!(
            "unreadable keyring answer from datacenter {datacenter}: {e}"
        ))
    })
}

/// The answer to the whole operation: Consul's list of pools, or every failure at once.
fn finish(pools: Vec<PoolKeys>, list: bool) -> Result<Response, ApiError> {
    if let Some(message) = failure_message(&pools) {
        return Err(ApiError::internal(message));
    }
    if list {
        Ok(json_response(HeaderMap::new(), &pools))
    } else {
        Ok(StatusCode::OK.into_response())
    }
}

fn pool_keys(report: KeyringReport, datacenter: &str, wan: bool) -> PoolKeys {
    let failed = !report.errors.is_empty() || report.num_responses != report.num_nodes;
    PoolKeys {
        wan,
        datacenter: datacenter.to_owned(),
        segment: String::new(),
        error: if failed {
            format!(
                "{}/{} nodes reported failure",
                report.errors.len(),
                report.num_nodes
            )
        } else {
            String::new()
        },
        keys: report.keys,
        primary_keys: report.primary_keys,
        num_nodes: report.num_nodes,
        messages: report.errors,
    }
}

/// Consul's wording: for each pool that failed, its name (`WAN`, `dc1 (LAN)`) and failure count,
/// then each member's reason, all in one list as Go's multierror prints it.
fn failure_message(pools: &[PoolKeys]) -> Option<String> {
    let mut lines = Vec::new();
    for pool in pools.iter().filter(|p| !p.error.is_empty()) {
        let name = if pool.wan {
            "WAN".to_owned()
        } else {
            format!("{} (LAN)", pool.datacenter)
        };
        lines.push(format!("{name} error: {}", pool.error));
        lines.extend(
            pool.messages
                .iter()
                .map(|(node, reason)| format!("{node}: {reason}")),
        );
    }
    if lines.is_empty() {
        return None;
    }
    let noun = if lines.len() == 1 { "error" } else { "errors" };
    let mut text = format!("{} {noun} occurred:\n", lines.len());
    for line in lines {
        text.push_str(&format!("\t* {line}\n"));
    }
    text.push('\n');
    Some(text)
}

/// `/v1/operator/keyring` on a server. Listing needs `keyring:read`; changes need `keyring:write`.
pub(crate) async fn keyring<B: Backend>(
    State(agent): State<Shared<B>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    from_other_datacenter: Option<Extension<FromOtherDatacenter>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = KeyringRequest::parse(&method, &uri, &body)?;
    if request.is_list() {
        agent.authorize(&headers, &uri, |a| a.keyring_read())?;
    } else {
        agent.authorize(&headers, &uri, |a| a.keyring_write())?;
    }
    let gossip = agent.gossip.as_ref().ok_or_else(|| {
        ApiError::internal("this agent runs no LAN gossip pool (ports.serf_lan is disabled)")
    })?;
    let datacenter = agent.config.datacenter.as_str();
    if from_other_datacenter.is_some() {
        return request.run_for_other_datacenter(gossip, datacenter).await;
    }
    match agent.federation.as_ref().filter(|_| !request.local_only) {
        Some(federation) => {
            let original = OriginalRequest {
                method,
                uri,
                headers,
                body,
            };
            request
                .run_everywhere(&agent, gossip, federation.wan(), &original)
                .await
        }
        None => request.run(gossip, datacenter).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(method: Method, uri: &str, body: &str) -> Result<KeyringRequest, ApiError> {
        KeyringRequest::parse(&method, &uri.parse().unwrap(), body.as_bytes())
    }

    #[test]
    fn requests_are_checked_before_anything_is_done() {
        let key = r#"{"Key": "AQEBAQEBAQEBAQEBAQEBAQ=="}"#;
        assert!(parse(Method::GET, "/v1/operator/keyring", "").unwrap().is_list());
        assert!(
            parse(Method::GET, "/v1/operator/keyring?local-only=1", "")
                .unwrap()
                .local_only
        );
        assert!(
            !parse(Method::POST, "/v1/operator/keyring", key)
                .unwrap()
                .is_list()
        );
        assert!(matches!(
            parse(Method::PUT, "/v1/operator/keyring", key).unwrap().op,
            KeyringOp::Use(_)
        ));
        assert!(matches!(
            parse(Method::DELETE, "/v1/operator/keyring?relay-factor=5", key)
                .unwrap()
                .op,
            KeyringOp::Remove(_)
        ));
        for (method, uri, body, status) in [
            (Method::GET, "/v1/operator/keyring?relay-factor=6", "", 400),
            (Method::GET, "/v1/operator/keyring?relay-factor=x", "", 400),
            (Method::POST, "/v1/operator/keyring?local-only", key, 400),
            (Method::POST, "/v1/operator/keyring", "{}", 400),
            (
                Method::POST,
                "/v1/operator/keyring",
                r#"{"Key": "c2hvcnQ="}"#,
                400,
            ),
        ] {
            let error = parse(method.clone(), uri, body).unwrap_err();
            assert_eq!(error.status().as_u16(), status, "{method} {uri} {body}");
        }
    }

    #[test]
    fn failures_are_worded_as_consul_words_them() {
        let report = KeyringReport {
            id: 1,
            num_nodes: 3,
            num_responses: 2,
            errors: BTreeMap::from([
                ("n2".to_owned(), "no answer before the deadline".to_owned()),
                (
                    "n3".to_owned(),
                    "gossip key is not installed in the keyring".to_owned(),
                ),
            ]),
            ..KeyringReport::default()
        };
        let healthy = KeyringReport {
            id: 2,
            num_nodes: 2,
            num_responses: 2,
            ..KeyringReport::default()
        };
        assert_eq!(failure_message(&[pool_keys(healthy.clone(), "dc1", true)]), None);
        assert_eq!(
            failure_message(&[
                pool_keys(healthy, "dc1", true),
                pool_keys(report.clone(), "dc2", false)
            ])
            .unwrap(),
            "3 errors occurred:\n\t* dc2 (LAN) error: 2/3 nodes reported failure\n\t* n2: no answer \
             before the deadline\n\t* n3: gossip key is not installed in the keyring\n\n"
        );
        let wan = failure_message(&[pool_keys(report, "dc1", true)]).unwrap();
        assert!(
            wan.contains("\t* WAN error: 2/3 nodes reported failure\n"),
            "{wan}"
        );
    }

    #[test]
    fn a_pool_answer_survives_the_trip_between_datacenters() {
        let report = KeyringReport {
            id: 1,
            num_nodes: 2,
            num_responses: 1,
            keys: BTreeMap::from([("K1".to_owned(), 1)]),
            primary_keys: BTreeMap::from([("K1".to_owned(), 1)]),
            errors: BTreeMap::from([("n2".to_owned(), "no answer".to_owned())]),
        };
        let body = serde_json::to_vec(&[pool_keys(report, "dc2", false)]).unwrap();
        let answer = crate::node::ForwardedResponse {
            status: 200,
            headers: Vec::new(),
            body,
        };
        let pools = datacenter_pools("dc2", answer).unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].datacenter, "dc2");
        assert_eq!(pools[0].num_nodes, 2);
        assert!(failure_message(&pools).unwrap().contains("dc2 (LAN) error: 1/2"));
        let refused = crate::node::ForwardedResponse {
            status: 403,
            headers: Vec::new(),
            body: b"Permission denied".to_vec(),
        };
        let error = datacenter_pools("dc2", refused).unwrap_err();
        assert_eq!(error.status().as_u16(), 403);
    }
}
