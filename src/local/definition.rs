//! Reading service and check definitions, from `/v1/agent/service/register` and
//! `/v1/agent/check/register` bodies (Consul's PascalCase, matched whatever the case) and from
//! configuration files' `service`/`services`/`check`/`checks` blocks (snake_case keys), into
//! [`LocalService`] and [`LocalCheck`] records with Consul's defaults: a service's ID is its name;
//! its checks are `service:<id>` (or `service:<id>:<n>` among several) named
//! `Service '<name>' check`; a check's ID is its name.
//!
//! It does not run checks (`src/checks`), nor decide who may register them (the HTTP layer).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tribune_kvstore::{CheckDefinition, CheckStatus, ServiceWeights};

use super::model::{LocalCheck, LocalService};
use crate::duration::parse_go_duration;
use crate::http::catalog_json::{ServiceAddressJson, WeightsJson};

/// Why a definition was refused; the text is what the API answers (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DefinitionError {
    /// The body is not the JSON object expected.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// A service without a name.
    #[error("Missing service name")]
    MissingServiceName,
    /// A check registered alone without a name.
    #[error("Missing check name")]
    MissingCheckName,
    /// A check whose kind cannot be told, or whose timing does not fit its kind.
    #[error("Invalid check: {0}")]
    InvalidCheck(String),
    /// A check status that is not `passing`, `warning` or `critical`.
    #[error("Invalid check status: {0:?}")]
    InvalidStatus(String),
}

/// Consul's field names of service and check definitions. Keys of a body or a file are matched to
/// them ignoring case and underscores (`deregister_critical_service_after`, `checkid`, `Check_ID`).
const FIELDS: &[&str] = &[
    "Address",
    "AliasNode",
    "AliasService",
    "Args",
    "Body",
    "Check",
    "CheckID",
    "Checks",
    "DeregisterCriticalServiceAfter",
    "DockerContainerID",
    "EnableTagOverride",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "HTTP",
    "Header",
    "ID",
    "Interval",
    "Kind",
    "Meta",
    "Method",
    "Name",
    "Notes",
    "OSService",
    "Output",
    "Passing",
    "Port",
    "ScriptArgs",
    "ServiceID",
    "Shell",
    "Status",
    "SuccessBeforePassing",
    "TCP",
    "TLSServerName",
    "TLSSkipVerify",
    "TTL",
    "TaggedAddresses",
    "Tags",
    "Timeout",
    "Token",
    "UDP",
    "Warning",
    "Weights",
];

/// Maps whose keys are the user's own, left as written.
const FREE_FORM: &[&str] = &["Meta", "Header"];

fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The definition with every known key in Consul's spelling. Recursion is bounded by the depth of
/// the parsed document (serde_json's and hcl's nesting limits).
pub(crate) fn canonicalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, inner) in map {
                let folded = fold(key);
                let name = FIELDS
                    .iter()
                    .find(|f| fold(f) == folded)
                    .map_or_else(|| key.clone(), |f| (*f).to_owned());
                let inner = if FREE_FORM.contains(&name.as_str()) {
                    inner.clone()
                } else if name == "TaggedAddresses" {
                    match inner {
                        Value::Object(addresses) => Value::Object(
                            addresses
                                .iter()
                                .map(|(purpose, a)| (purpose.clone(), canonicalize(a)))
                                .collect(),
                        ),
                        other => other.clone(),
                    }
                } else {
                    canonicalize(inner)
                };
                out.insert(name, inner);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonicalize).collect()),
        other => other.clone(),
    }
}

/// A duration: Go's notation (`"10s"`) or a number of nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationField {
    Text(String),
    Nanos(u64),
}

fn duration(field: &str, value: Option<DurationField>) -> Result<Duration, DefinitionError> {
    match value {
        None => Ok(Duration::ZERO),
        Some(DurationField::Nanos(n)) => Ok(Duration::from_nanos(n)),
        Some(DurationField::Text(text)) if text.is_empty() => Ok(Duration::ZERO),
        Some(DurationField::Text(text)) => parse_go_duration(&text)
            .map_err(|e| DefinitionError::Decode(format!("invalid {field} {text:?}: {e}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceFields {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    tagged_addresses: Option<BTreeMap<String, ServiceAddressJson>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    weights: Option<WeightsJson>,
    #[serde(default)]
    enable_tag_override: Option<bool>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    check: Option<Value>,
    #[serde(default)]
    checks: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckFields {
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "CheckID", default)]
    check_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(rename = "ServiceID", default)]
    service_id: Option<String>,
    #[serde(rename = "TTL", default)]
    ttl: Option<DurationField>,
    #[serde(rename = "HTTP", default)]
    http: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    header: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(rename = "TLSServerName", default)]
    tls_server_name: Option<String>,
    #[serde(rename = "TLSSkipVerify", default)]
    tls_skip_verify: Option<bool>,
    #[serde(rename = "TCP", default)]
    tcp: Option<String>,
    #[serde(rename = "UDP", default)]
    udp: Option<String>,
    #[serde(rename = "GRPC", default)]
    grpc: Option<String>,
    #[serde(rename = "GRPCUseTLS", default)]
    grpc_use_tls: Option<bool>,
    #[serde(rename = "H2PING", default)]
    h2ping: Option<String>,
    #[serde(default)]
    args: Option<Vec<String>>,
    #[serde(default)]
    script_args: Option<Vec<String>>,
    #[serde(rename = "DockerContainerID", default)]
    docker_container_id: Option<String>,
    #[serde(default)]
    alias_node: Option<String>,
    #[serde(default)]
    alias_service: Option<String>,
    #[serde(rename = "OSService", default)]
    os_service: Option<String>,
    #[serde(default)]
    interval: Option<DurationField>,
    #[serde(default)]
    timeout: Option<DurationField>,
    #[serde(default)]
    deregister_critical_service_after: Option<DurationField>,
    #[serde(default)]
    token: Option<String>,
}

/// A check read from a definition, with what its runner needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckSpec {
    /// The record the agent keeps and syncs.
    pub(crate) check: LocalCheck,
    /// The definition in Consul's spelling, its ID and service filled in, for the check runner.
    pub(crate) raw: Value,
    /// Its position in the service's `Checks`, for the runner's defaults.
    pub(crate) index: Option<usize>,
    /// The TTL of a TTL check.
    pub(crate) ttl: Option<Duration>,
    /// The token it was registered with.
    pub(crate) token: Option<String>,
}

/// A service read from a definition, with its checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceSpec {
    pub(crate) service: LocalService,
    pub(crate) checks: Vec<CheckSpec>,
    /// The token it was registered with (Consul syncs it under that token).
    pub(crate) token: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, DefinitionError> {
    serde_json::from_value(value.clone()).map_err(|e| DefinitionError::Decode(e.to_string()))
}

/// A service definition (a register body or a configuration block), keys in any spelling.
pub(crate) fn parse_service(value: &Value) -> Result<ServiceSpec, DefinitionError> {
    let value = canonicalize(value);
    if !value.is_object() {
        return Err(DefinitionError::Decode(
            "a service definition must be an object".into(),
        ));
    }
    let fields: ServiceFields = decode(&value)?;
    let name = fields.name.unwrap_or_default();
    if name.is_empty() {
        return Err(DefinitionError::MissingServiceName);
    }
    let id = fields
        .id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let weights = fields
        .weights
        .map_or_else(ServiceWeights::default, ServiceWeights::from);
    let service = LocalService {
        id: id.clone(),
        service: name.clone(),
        kind: fields.kind.unwrap_or_default(),
        tags: fields.tags.unwrap_or_default(),
        address: fields.address.unwrap_or_default(),
        tagged_addresses: fields
            .tagged_addresses
            .unwrap_or_default()
            .into_iter()
            .map(|(purpose, a)| (purpose, a.into()))
            .collect(),
        meta: fields.meta.unwrap_or_default(),
        port: fields.port.unwrap_or(0),
        weights,
        enable_tag_override: fields.enable_tag_override.unwrap_or(false),
    };
    let mut definitions: Vec<Value> = fields.check.into_iter().filter(|c| !c.is_null()).collect();
    definitions.extend(fields.checks.unwrap_or_default());
    let several = definitions.len() > 1;
    let mut checks = Vec::with_capacity(definitions.len());
    for (n, definition) in definitions.iter().enumerate() {
        let default_id = if several {
            format!("service:{id}:{}", n + 1)
        } else {
            format!("service:{id}")
        };
        let index = several.then_some(n);
        checks.push(check_spec(
            definition,
            Some((&service, default_id.as_str())),
            index,
        )?);
    }
    Ok(ServiceSpec {
        service,
        checks,
        token: fields.token.filter(|t| !t.is_empty()),
    })
}

/// A check registered alone (`/v1/agent/check/register`, a configuration `check` block). Its
/// service, when it names one, is filled in by the state, which knows the services.
pub(crate) fn parse_check(value: &Value) -> Result<CheckSpec, DefinitionError> {
    check_spec(value, None, None)
}

fn check_spec(
    value: &Value,
    service: Option<(&LocalService, &str)>,
    index: Option<usize>,
) -> Result<CheckSpec, DefinitionError> {
    let mut raw = canonicalize(value);
    if !raw.is_object() {
        return Err(DefinitionError::Decode(
            "a check definition must be an object".into(),
        ));
    }
    let fields: CheckFields = decode(&raw)?;
    let given_id = fields
        .check_id
        .filter(|id| !id.is_empty())
        .or(fields.id.filter(|id| !id.is_empty()));
    let (check_id, name, service_id, service_name) = match service {
        Some((service, default_id)) => {
            let id = given_id.unwrap_or_else(|| default_id.to_owned());
            let name = fields
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("Service '{}' check", service.service));
            (id, name, service.id.clone(), service.service.clone())
        }
        None => {
            let name = fields
                .name
                .filter(|n| !n.is_empty())
                .ok_or(DefinitionError::MissingCheckName)?;
            let id = given_id.unwrap_or_else(|| name.clone());
            (id, name, fields.service_id.unwrap_or_default(), String::new())
        }
    };
    let status = match fields.status.as_deref() {
        None | Some("") => CheckStatus::Critical,
        Some(text) => {
            CheckStatus::parse(text).ok_or_else(|| DefinitionError::InvalidStatus(text.to_owned()))?
        }
    };
    let ttl = duration("TTL", fields.ttl)?;
    let interval = duration("Interval", fields.interval)?;
    let timeout = duration("Timeout", fields.timeout)?;
    let deregister_after = duration(
        "DeregisterCriticalServiceAfter",
        fields.deregister_critical_service_after,
    )?;
    let has = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
    let args = fields.args.or(fields.script_args).unwrap_or_default();
    let check_type = if !ttl.is_zero() {
        "ttl"
    } else if has(&fields.http) {
        "http"
    } else if has(&fields.tcp) {
        "tcp"
    } else if has(&fields.udp) {
        "udp"
    } else if has(&fields.grpc) {
        "grpc"
    } else if has(&fields.h2ping) {
        "h2ping"
    } else if has(&fields.docker_container_id) {
        "docker"
    } else if !args.is_empty() {
        "script"
    } else if has(&fields.alias_node) || has(&fields.alias_service) {
        "alias"
    } else if has(&fields.os_service) {
        "os_service"
    } else {
        return Err(DefinitionError::InvalidCheck(
            "Must provide TTL or Script/DockerContainerID/HTTP/TCP/UDP/H2PING/GRPC/AliasService/OSService and Interval"
                .into(),
        ));
    };
    let needs_interval = matches!(
        check_type,
        "http" | "tcp" | "udp" | "grpc" | "h2ping" | "docker" | "script" | "os_service"
    );
    if needs_interval && interval.is_zero() {
        return Err(DefinitionError::InvalidCheck(
            "Interval must be > 0 for Script, Docker, HTTP, H2PING, TCP, UDP, OSService or GRPC checks"
                .into(),
        ));
    }
    let definition = CheckDefinition {
        http: fields.http.unwrap_or_default(),
        method: fields.method.unwrap_or_default(),
        header: fields.header.unwrap_or_default(),
        body: fields.body.unwrap_or_default(),
        tls_server_name: fields.tls_server_name.unwrap_or_default(),
        tls_skip_verify: fields.tls_skip_verify.unwrap_or(false),
        tcp: fields.tcp.unwrap_or_default(),
        udp: fields.udp.unwrap_or_default(),
        grpc: fields.grpc.unwrap_or_default(),
        grpc_use_tls: fields.grpc_use_tls.unwrap_or(false),
        interval,
        timeout,
        deregister_critical_service_after: deregister_after,
    };
    if let Value::Object(map) = &mut raw {
        map.insert("CheckID".into(), Value::String(check_id.clone()));
        map.insert("Name".into(), Value::String(name.clone()));
        if !service_id.is_empty() {
            map.insert("ServiceID".into(), Value::String(service_id.clone()));
        }
    }
    let check = LocalCheck {
        check_id,
        name,
        status,
        notes: fields.notes.unwrap_or_default(),
        output: fields.output.unwrap_or_default(),
        service_id,
        service_name,
        check_type: check_type.to_owned(),
        definition,
    };
    Ok(CheckSpec {
        check,
        raw,
        index,
        ttl: (!ttl.is_zero()).then_some(ttl),
        token: fields.token.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use serde_json::json;

    use super::*;

    #[test]
    fn a_service_s_checks_follow_consul_s_ids_and_names() {
        let spec = parse_service(&json!({
            "Name": "web", "Port": 80, "Tags": ["a"],
            "Check": {"TTL": "10s"},
        }))
        .unwrap();
        assert_eq!(spec.service.id, "web");
        assert_eq!(spec.service.weights, ServiceWeights::default());
        assert_eq!(spec.checks.len(), 1);
        let check = &spec.checks[0].check;
        assert_eq!(check.check_id, "service:web");
        assert_eq!(check.name, "Service 'web' check");
        assert_eq!(check.service_id, "web");
        assert_eq!(check.check_type, "ttl");
        assert_eq!(check.status, CheckStatus::Critical);
        assert_eq!(spec.checks[0].raw["CheckID"], "service:web");

        let spec = parse_service(&json!({
            "ID": "web-1", "Name": "web",
            "Checks": [{"TTL": "10s"}, {"HTTP": "http://127.0.0.1/", "Interval": "5s", "CheckID": "own"}],
        }))
        .unwrap();
        let ids: Vec<&str> = spec.checks.iter().map(|c| c.check.check_id.as_str()).collect();
        assert_eq!(ids, ["service:web-1:1", "own"]);
        assert_eq!(spec.checks[1].check.definition.interval, Duration::from_secs(5));
    }

    #[test]
    fn configuration_blocks_use_snake_case() {
        let spec = parse_service(&json!({
            "name": "db", "id": "db-1", "port": 5432, "enable_tag_override": true,
            "meta": {"some_key": "v"},
            "tagged_addresses": {"lan_ipv4": {"address": "10.0.0.1", "port": 5432}},
            "check": {"check_id": "db-alive", "tcp": "127.0.0.1:5432", "interval": "10s",
                      "deregister_critical_service_after": "90m"},
        }))
        .unwrap();
        assert!(spec.service.enable_tag_override);
        assert_eq!(spec.service.meta["some_key"], "v");
        assert_eq!(spec.service.tagged_addresses["lan_ipv4"].address, "10.0.0.1");
        let check = &spec.checks[0].check;
        assert_eq!(check.check_id, "db-alive");
        assert_eq!(check.check_type, "tcp");
        assert_eq!(
            check.definition.deregister_critical_service_after,
            Duration::from_secs(90 * 60)
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_consul_s_texts() {
        assert_eq!(
            parse_service(&json!({"Port": 1})).unwrap_err(),
            DefinitionError::MissingServiceName
        );
        assert_eq!(
            parse_check(&json!({"TTL": "1s"})).unwrap_err(),
            DefinitionError::MissingCheckName
        );
        assert!(matches!(
            parse_check(&json!({"Name": "x"})).unwrap_err(),
            DefinitionError::InvalidCheck(_)
        ));
        assert!(matches!(
            parse_check(&json!({"Name": "x", "HTTP": "http://a/"})).unwrap_err(),
            DefinitionError::InvalidCheck(_)
        ));
        assert!(matches!(
            parse_check(&json!({"Name": "x", "TTL": "1s", "Status": "ok"})).unwrap_err(),
            DefinitionError::InvalidStatus(_)
        ));
        assert!(matches!(
            parse_service(&json!({"Name": "x", "Port": "eighty"})).unwrap_err(),
            DefinitionError::Decode(_)
        ));
        let check = parse_check(&json!({"Name": "mem", "TTL": "30s", "Status": "passing"})).unwrap();
        assert_eq!(check.check.check_id, "mem");
        assert_eq!(check.check.status, CheckStatus::Passing);
        assert_eq!(check.ttl, Some(Duration::from_secs(30)));
    }
}
