//! [`ApiCatalog`]: the DNS interface's catalog reads, through the agent's own HTTP API
//! ([`LocalApi`]) as Consul's DNS server reads through its agent: the default token (no token
//! header, so ACLs apply), `?stale` when `dns_config.allow_stale`, and a consistent re-read when
//! the stale answer is older than `max_stale`.
//!
//! It is not a cache: every question is one API read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::answer::{Catalog, Health, Instance, LookupError, NodeInfo};
use crate::local_api::{LocalApiError, LocalResponse, SharedLocalApi};

/// Reads the catalog through the agent's API.
pub(crate) struct ApiCatalog {
    pub(crate) api: SharedLocalApi,
    pub(crate) allow_stale: bool,
    pub(crate) max_stale: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson {
    #[serde(default)]
    node: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct WeightsJson {
    passing: u16,
    warning: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceJson {
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    weights: Option<WeightsJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckJson {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckServiceNodeJson {
    node: NodeJson,
    service: ServiceJson,
    #[serde(default)]
    checks: Vec<CheckJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServicesJson {
    node: NodeJson,
}

impl ApiCatalog {
    /// `GET path` with the DNS settings' consistency, mapped to a lookup's errors.
    async fn read(&self, path: &str, dc: Option<&str>) -> Result<LocalResponse, LookupError> {
        let mut query = path.to_owned();
        let mut sep = if path.contains('?') { '&' } else { '?' };
        if let Some(dc) = dc {
            let _ = write!(query, "{sep}dc={}", escape(dc));
            sep = '&';
        }
        let stale = format!("{query}{sep}stale");
        let first = if self.allow_stale { &stale } else { &query };
        let response = self.get(first).await?;
        let last_contact = response
            .headers
            .get("x-consul-lastcontact")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        if self.allow_stale && last_contact.is_some_and(|age| age > self.max_stale) {
            // Too far behind the leader: ask the leader, as Consul does past max_stale.
            return self.get(&query).await;
        }
        Ok(response)
    }

    async fn get(&self, path: &str) -> Result<LocalResponse, LookupError> {
        let response = self
            .api
            .call(Method::GET, path, None, Bytes::new())
            .await
            .map_err(|e| LookupError::Failed(e.to_string()))?;
        response.ok().map_err(|error| match error {
            LocalApiError::Status { body, .. } if body.contains("No path to datacenter") => {
                LookupError::UnknownDatacenter(body)
            }
            other => LookupError::Failed(other.to_string()),
        })
    }
}

impl Catalog for ApiCatalog {
    fn service<'a>(
        &'a self,
        dc: Option<&'a str>,
        service: &'a str,
        tag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Instance>, LookupError>> {
        Box::pin(async move {
            let mut path = format!("/v1/health/service/{}", escape(service));
            if let Some(tag) = tag {
                let _ = write!(path, "?tag={}", escape(tag));
            }
            let found: Vec<CheckServiceNodeJson> = self
                .read(&path, dc)
                .await?
                .json()
                .map_err(|e| LookupError::Failed(e.to_string()))?;
            Ok(found.into_iter().map(instance).collect())
        })
    }

    fn node<'a>(
        &'a self,
        dc: Option<&'a str>,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<NodeInfo>, LookupError>> {
        Box::pin(async move {
            let path = format!("/v1/catalog/node/{}", escape(node));
            let found: Option<NodeServicesJson> = self
                .read(&path, dc)
                .await?
                .json()
                .map_err(|e| LookupError::Failed(e.to_string()))?;
            Ok(found.map(|n| NodeInfo {
                address: n.node.address,
                meta: n.node.meta.unwrap_or_default(),
            }))
        })
    }
}

fn instance(found: CheckServiceNodeJson) -> Instance {
    let statuses = found.checks.iter().map(|c| c.status.as_str());
    let health = statuses.fold(Health::Passing, |worst, status| match (worst, status) {
        (Health::Critical, _) | (_, "critical") => Health::Critical,
        (Health::Warning, _) | (_, "warning") => Health::Warning,
        _ => worst,
    });
    let weights = found.service.weights.unwrap_or(WeightsJson {
        passing: 1,
        warning: 1,
    });
    Instance {
        node: found.node.node,
        node_address: found.node.address,
        service_address: found.service.address,
        port: found.service.port,
        weight_passing: weights.passing,
        weight_warning: weights.warning,
        health,
    }
}

/// Percent-encodes everything but unreserved characters, for a path segment or a query value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_add_up_to_the_worst_status() {
        let json = |statuses: &[&str]| -> CheckServiceNodeJson {
            let checks: Vec<_> = statuses
                .iter()
                .map(|s| serde_json::json!({"Status": s}))
                .collect();
            serde_json::from_value(serde_json::json!({
                "Node": {"Node": "n1", "Address": "192.0.2.1"},
                "Service": {"Address": "", "Port": 80, "Weights": {"Passing": 3, "Warning": 1}},
                "Checks": checks,
            }))
            .unwrap()
        };
        assert_eq!(instance(json(&[])).health, Health::Passing);
        assert_eq!(instance(json(&["passing", "warning"])).health, Health::Warning);
        assert_eq!(instance(json(&["critical", "warning"])).health, Health::Critical);
        assert_eq!(instance(json(&["warning", "critical"])).health, Health::Critical);
        assert_eq!(instance(json(&["passing"])).weight_passing, 3);
        assert_eq!(escape("web v1/x"), "web%20v1%2Fx");
    }
}
