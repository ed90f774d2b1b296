//! `/v1/operator/keyring`: the LAN pool's gossip encryption keys, listed (GET) and rotated —
//! install (POST), use (PUT), remove (DELETE) — on every member at once, as Consul's
//! `consul keyring` does. Any agent serves it; nothing goes through raft.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tribune_gossip::{Gossip, KeyringOp, KeyringReport, decode_key};
use tribune_kvstore::Backend;

use super::{ApiError, Params, Shared, json_response};

/// Consul's `KeyringResponse`: one pool's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
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

    /// Carries the request out on a server: on the WAN pool first (the servers of every
    /// datacenter), then on this datacenter's LAN pool, as Consul does; a list shows both pools.
    pub(crate) async fn run_on_server(
        self,
        lan: &Gossip,
        wan: Option<&Gossip>,
        datacenter: &str,
    ) -> Result<Response, ApiError> {
        let Some(wan) = wan.filter(|_| !self.local_only) else {
            return self.run(lan, datacenter).await;
        };
        let list = self.is_list();
        let mut pools = Vec::new();
        for (gossip, is_wan) in [(wan, true), (lan, false)] {
            let request = KeyringRequest {
                op: self.op.clone(),
                local_only: false,
            };
            if let Some(mut keys) = request.run_pool(gossip, datacenter, is_wan).await? {
                keys.wan = is_wan;
                pools.push(keys);
            }
        }
        if list {
            Ok(json_response(HeaderMap::new(), &pools))
        } else {
            Ok(StatusCode::OK.into_response())
        }
    }

    /// Carries the request out on `gossip`'s pool (of `datacenter`).
    pub(crate) async fn run(self, gossip: &Gossip, datacenter: &str) -> Result<Response, ApiError> {
        let list = self.is_list();
        match self.run_pool(gossip, datacenter, false).await? {
            Some(keys) if list => Ok(json_response(HeaderMap::new(), &[keys])),
            _ => Ok(StatusCode::OK.into_response()),
        }
    }

    /// Carries the request out on one pool; a list answers that pool's keys.
    async fn run_pool(
        self,
        gossip: &Gossip,
        datacenter: &str,
        wan: bool,
    ) -> Result<Option<PoolKeys>, ApiError> {
        // Without encryption there is nothing to list or rotate: say so once, not once per member.
        let local_keys = gossip.list_keys().await.map_err(|e| match e {
            tribune_gossip::RuntimeError::NoKeyring => {
                ApiError::internal("gossip encryption is not enabled on this agent (no encrypt key)")
            }
            other => ApiError::internal(other.to_string()),
        })?;
        if self.local_only {
            let pool = PoolKeys {
                wan: false,
                datacenter: datacenter.to_owned(),
                segment: String::new(),
                primary_keys: local_keys.first().map(|k| (k.clone(), 1)).into_iter().collect(),
                keys: local_keys.into_iter().map(|k| (k, 1)).collect(),
                num_nodes: 1,
                messages: BTreeMap::new(),
            };
            return Ok(Some(pool));
        }
        let list = self.is_list();
        let report = gossip
            .keyring(self.op)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !report.errors.is_empty() || report.num_responses != report.num_nodes {
            return Err(ApiError::internal(failure_message(&report, datacenter, wan)));
        }
        Ok(list.then(|| pool_keys(report, datacenter)))
    }
}

fn pool_keys(report: KeyringReport, datacenter: &str) -> PoolKeys {
    PoolKeys {
        wan: false,
        datacenter: datacenter.to_owned(),
        segment: String::new(),
        keys: report.keys,
        primary_keys: report.primary_keys,
        num_nodes: report.num_nodes,
        messages: report.errors,
    }
}

/// Consul's wording: the pool's failure count, then each member's reason, as Go's multierror
/// prints a list.
fn failure_message(report: &KeyringReport, datacenter: &str, wan: bool) -> String {
    let pool = if wan { "WAN" } else { "LAN" };
    let mut lines = vec![format!(
        "{datacenter} ({pool}) error: {}/{} nodes reported failure",
        report.errors.len(),
        report.num_nodes
    )];
    lines.extend(
        report
            .errors
            .iter()
            .map(|(node, reason)| format!("{node}: {reason}")),
    );
    let noun = if lines.len() == 1 { "error" } else { "errors" };
    let mut text = format!("{} {noun} occurred:\n", lines.len());
    for line in lines {
        text.push_str(&format!("\t* {line}\n"));
    }
    text.push('\n');
    text
}

/// `/v1/operator/keyring` on a server. Listing needs `keyring:read`; changes need `keyring:write`.
pub(crate) async fn keyring<B: Backend>(
    State(agent): State<Shared<B>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
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
    let wan = agent.federation.as_ref().map(|f| f.wan());
    request.run_on_server(gossip, wan, &agent.config.datacenter).await
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
        assert_eq!(
            failure_message(&report, "dc1", false),
            "3 errors occurred:\n\t* dc1 (LAN) error: 2/3 nodes reported failure\n\t* n2: no answer \
             before the deadline\n\t* n3: gossip key is not installed in the keyring\n\n"
        );
    }
}
