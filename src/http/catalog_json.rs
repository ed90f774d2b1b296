//! The catalog's records in Consul's JSON: what `/v1/catalog/*` and `/v1/health/*` answer (nodes,
//! `CatalogService`, `NodeService`, `HealthCheck`, `CheckServiceNode`) and the bodies they read
//! (`RegisterRequest`, `DeregisterRequest`).
//!
//! Only shapes and their conversions live here: no ACLs, no store access, no filtering.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tribune_kvstore::{
    CheckDefinition, CheckRegistration, CheckServiceNode, CheckStatus, HealthCheck, Node, Registration,
    ServiceAddress, ServiceInstance, ServiceNode, ServiceRegistration, ServiceWeights,
};

use super::{ApiError, null_as_default};
use crate::duration::{format_go_duration, parse_go_duration};

/// A node as `/v1/catalog/nodes` and the `Node` of health results show it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeJson {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
    tagged_addresses: BTreeMap<String, String>,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

impl NodeJson {
    pub(crate) fn new(node: Node, datacenter: &str) -> Self {
        NodeJson {
            id: node.id,
            node: node.node,
            address: node.address,
            datacenter: datacenter.to_owned(),
            tagged_addresses: node.tagged_addresses,
            meta: node.meta,
            create_index: node.create_index,
            modify_index: node.modify_index,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceAddressJson {
    #[serde(alias = "address", default)]
    address: String,
    #[serde(alias = "port", default)]
    port: u16,
}

fn addresses_json(addresses: BTreeMap<String, ServiceAddress>) -> BTreeMap<String, ServiceAddressJson> {
    addresses
        .into_iter()
        .map(|(purpose, a)| {
            (
                purpose,
                ServiceAddressJson {
                    address: a.address,
                    port: a.port,
                },
            )
        })
        .collect()
}

impl From<ServiceAddressJson> for ServiceAddress {
    fn from(a: ServiceAddressJson) -> Self {
        ServiceAddress {
            address: a.address,
            port: a.port,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WeightsJson {
    #[serde(default)]
    passing: u32,
    #[serde(default)]
    warning: u32,
}

impl From<WeightsJson> for ServiceWeights {
    fn from(w: WeightsJson) -> Self {
        ServiceWeights {
            passing: w.passing,
            warning: w.warning,
        }
    }
}

impl From<ServiceWeights> for WeightsJson {
    fn from(w: ServiceWeights) -> Self {
        WeightsJson {
            passing: w.passing,
            warning: w.warning,
        }
    }
}

/// One instance as `/v1/catalog/service/:name` shows it: the node's fields, then the service's,
/// prefixed (Consul's `ServiceNode`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CatalogServiceJson {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
    tagged_addresses: BTreeMap<String, String>,
    node_meta: BTreeMap<String, String>,
    service_kind: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    service_name: String,
    service_tags: Vec<String>,
    service_address: String,
    service_tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    service_weights: WeightsJson,
    service_meta: BTreeMap<String, String>,
    service_port: u16,
    service_enable_tag_override: bool,
    create_index: u64,
    modify_index: u64,
}

impl CatalogServiceJson {
    pub(crate) fn new(found: ServiceNode, datacenter: &str) -> Self {
        let ServiceNode { node, service } = found;
        CatalogServiceJson {
            id: node.id,
            node: node.node,
            address: node.address,
            datacenter: datacenter.to_owned(),
            tagged_addresses: node.tagged_addresses,
            node_meta: node.meta,
            service_kind: service.kind,
            service_id: service.id,
            service_name: service.service,
            service_tags: service.tags,
            service_address: service.address,
            service_tagged_addresses: addresses_json(service.tagged_addresses),
            service_weights: service.weights.into(),
            service_meta: service.meta,
            service_port: service.port,
            service_enable_tag_override: service.enable_tag_override,
            create_index: service.create_index,
            modify_index: service.modify_index,
        }
    }
}

/// One instance as a node's services and health results show it (Consul's `NodeService`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeServiceJson {
    kind: String,
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Vec<String>,
    address: String,
    tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    meta: BTreeMap<String, String>,
    port: u16,
    weights: WeightsJson,
    enable_tag_override: bool,
    create_index: u64,
    modify_index: u64,
}

impl From<ServiceInstance> for NodeServiceJson {
    fn from(service: ServiceInstance) -> Self {
        NodeServiceJson {
            kind: service.kind,
            id: service.id,
            service: service.service,
            tags: service.tags,
            address: service.address,
            tagged_addresses: addresses_json(service.tagged_addresses),
            meta: service.meta,
            port: service.port,
            weights: service.weights.into(),
            enable_tag_override: service.enable_tag_override,
            create_index: service.create_index,
            modify_index: service.modify_index,
        }
    }
}

/// What a check probes, as Consul shows `Definition` (durations in Go's notation).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DefinitionJson {
    #[serde(rename = "HTTP")]
    http: String,
    header: Option<BTreeMap<String, Vec<String>>>,
    method: String,
    body: String,
    #[serde(rename = "TLSServerName")]
    tls_server_name: String,
    #[serde(rename = "TLSSkipVerify")]
    tls_skip_verify: bool,
    #[serde(rename = "TCP")]
    tcp: String,
    #[serde(rename = "UDP")]
    udp: String,
    #[serde(rename = "GRPC")]
    grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    grpc_use_tls: bool,
    interval: String,
    timeout: String,
    deregister_critical_service_after: String,
}

/// A check as `/v1/health/*` shows it (Consul's `HealthCheck`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthCheckJson {
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    status: &'static str,
    notes: String,
    output: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    service_name: String,
    service_tags: Vec<String>,
    #[serde(rename = "Type")]
    check_type: String,
    interval: String,
    timeout: String,
    exposed_port: u16,
    definition: DefinitionJson,
    create_index: u64,
    modify_index: u64,
}

fn duration_or_empty(duration: Duration) -> String {
    if duration.is_zero() {
        String::new()
    } else {
        format_go_duration(duration)
    }
}

impl From<HealthCheck> for HealthCheckJson {
    fn from(check: HealthCheck) -> Self {
        let d = check.definition;
        HealthCheckJson {
            node: check.node,
            check_id: check.check_id,
            name: check.name,
            status: check.status.as_str(),
            notes: check.notes,
            output: check.output,
            service_id: check.service_id,
            service_name: check.service_name,
            service_tags: check.service_tags,
            check_type: check.check_type,
            interval: duration_or_empty(d.interval),
            timeout: duration_or_empty(d.timeout),
            exposed_port: 0,
            definition: DefinitionJson {
                http: d.http,
                header: (!d.header.is_empty()).then_some(d.header),
                method: d.method,
                body: d.body,
                tls_server_name: d.tls_server_name,
                tls_skip_verify: d.tls_skip_verify,
                tcp: d.tcp,
                udp: d.udp,
                grpc: d.grpc,
                grpc_use_tls: d.grpc_use_tls,
                interval: format_go_duration(d.interval),
                timeout: format_go_duration(d.timeout),
                deregister_critical_service_after: format_go_duration(d.deregister_critical_service_after),
            },
            create_index: check.create_index,
            modify_index: check.modify_index,
        }
    }
}

/// One element of `/v1/health/service/:name` (Consul's `CheckServiceNode`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckServiceNodeJson {
    node: NodeJson,
    service: NodeServiceJson,
    checks: Vec<HealthCheckJson>,
}

impl CheckServiceNodeJson {
    pub(crate) fn new(found: CheckServiceNode, datacenter: &str) -> Self {
        CheckServiceNodeJson {
            node: NodeJson::new(found.node, datacenter),
            service: found.service.into(),
            checks: found.checks.into_iter().map(HealthCheckJson::from).collect(),
        }
    }
}

/// A duration in a request body: Go's notation (`"10s"`), or a number of nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationBody {
    Text(String),
    Nanos(u64),
}

fn parse_duration(field: &str, value: Option<DurationBody>) -> Result<Duration, ApiError> {
    match value {
        None => Ok(Duration::ZERO),
        Some(DurationBody::Nanos(n)) => Ok(Duration::from_nanos(n)),
        Some(DurationBody::Text(text)) if text.is_empty() => Ok(Duration::ZERO),
        Some(DurationBody::Text(text)) => parse_go_duration(&text).map_err(|e| {
            ApiError::bad_request(format!("Request decode failed: invalid {field} {text:?}: {e}"))
        }),
    }
}

/// `Check.Definition` of a registration.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DefinitionBody {
    #[serde(rename = "HTTP", default, deserialize_with = "null_as_default")]
    http: String,
    #[serde(default, deserialize_with = "null_as_default")]
    header: BTreeMap<String, Vec<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    method: String,
    #[serde(default, deserialize_with = "null_as_default")]
    body: String,
    #[serde(rename = "TLSServerName", default, deserialize_with = "null_as_default")]
    tls_server_name: String,
    #[serde(rename = "TLSSkipVerify", default, deserialize_with = "null_as_default")]
    tls_skip_verify: bool,
    #[serde(rename = "TCP", default, deserialize_with = "null_as_default")]
    tcp: String,
    #[serde(rename = "UDP", default, deserialize_with = "null_as_default")]
    udp: String,
    #[serde(rename = "GRPC", default, deserialize_with = "null_as_default")]
    grpc: String,
    #[serde(rename = "GRPCUseTLS", default, deserialize_with = "null_as_default")]
    grpc_use_tls: bool,
    #[serde(default)]
    interval: Option<DurationBody>,
    #[serde(default)]
    timeout: Option<DurationBody>,
    #[serde(default)]
    deregister_critical_service_after: Option<DurationBody>,
}

impl DefinitionBody {
    fn into_definition(self) -> Result<CheckDefinition, ApiError> {
        Ok(CheckDefinition {
            http: self.http,
            method: self.method,
            header: self.header,
            body: self.body,
            tls_server_name: self.tls_server_name,
            tls_skip_verify: self.tls_skip_verify,
            tcp: self.tcp,
            udp: self.udp,
            grpc: self.grpc,
            grpc_use_tls: self.grpc_use_tls,
            interval: parse_duration("Interval", self.interval)?,
            timeout: parse_duration("Timeout", self.timeout)?,
            deregister_critical_service_after: parse_duration(
                "DeregisterCriticalServiceAfter",
                self.deregister_critical_service_after,
            )?,
        })
    }
}

/// A check of a registration (`Check` or an element of `Checks`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckBody {
    #[serde(default, deserialize_with = "null_as_default")]
    node: String,
    #[serde(rename = "CheckID", default, deserialize_with = "null_as_default")]
    check_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    status: String,
    #[serde(default, deserialize_with = "null_as_default")]
    notes: String,
    #[serde(default, deserialize_with = "null_as_default")]
    output: String,
    #[serde(rename = "ServiceID", default, deserialize_with = "null_as_default")]
    service_id: String,
    #[serde(rename = "Type", default, deserialize_with = "null_as_default")]
    check_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    definition: DefinitionBody,
}

impl CheckBody {
    pub(crate) fn into_registration(self) -> Result<CheckRegistration, ApiError> {
        let status = match self.status.as_str() {
            "" => None,
            text => Some(
                CheckStatus::parse(text)
                    .ok_or_else(|| ApiError::bad_request(format!("Invalid check status: {text:?}")))?,
            ),
        };
        Ok(CheckRegistration {
            node: self.node,
            check_id: self.check_id,
            name: self.name,
            status,
            notes: self.notes,
            output: self.output,
            service_id: self.service_id,
            check_type: self.check_type,
            definition: self.definition.into_definition()?,
        })
    }
}

/// The `Service` of a registration (Consul's `NodeService` as a request).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceBody {
    #[serde(rename = "ID", default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    service: String,
    #[serde(default, deserialize_with = "null_as_default")]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    address: String,
    #[serde(default, deserialize_with = "null_as_default")]
    tagged_addresses: BTreeMap<String, ServiceAddressJson>,
    #[serde(default, deserialize_with = "null_as_default")]
    meta: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    port: u16,
    #[serde(default)]
    weights: Option<WeightsJson>,
    #[serde(default, deserialize_with = "null_as_default")]
    enable_tag_override: bool,
}

impl ServiceBody {
    pub(crate) fn into_registration(self) -> ServiceRegistration {
        ServiceRegistration {
            id: self.id,
            service: self.service,
            kind: self.kind,
            tags: self.tags,
            address: self.address,
            tagged_addresses: self
                .tagged_addresses
                .into_iter()
                .map(|(purpose, a)| (purpose, a.into()))
                .collect(),
            meta: self.meta,
            port: self.port,
            weights: self.weights.map(|w| ServiceWeights {
                passing: w.passing,
                warning: w.warning,
            }),
            enable_tag_override: self.enable_tag_override,
        }
    }
}

/// `PUT /v1/catalog/register`'s body (Consul's `RegisterRequest`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterBody {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) datacenter: String,
    #[serde(rename = "ID", default, deserialize_with = "null_as_default")]
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    node: String,
    #[serde(default, deserialize_with = "null_as_default")]
    address: String,
    #[serde(default, deserialize_with = "null_as_default")]
    tagged_addresses: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    node_meta: BTreeMap<String, String>,
    #[serde(default)]
    service: Option<ServiceBody>,
    #[serde(default)]
    check: Option<CheckBody>,
    #[serde(default, deserialize_with = "null_as_default")]
    checks: Vec<CheckBody>,
    #[serde(default, deserialize_with = "null_as_default")]
    skip_node_update: bool,
}

impl RegisterBody {
    /// The store's registration, with Consul's request checks: a node and an address are required.
    pub(crate) fn into_registration(self) -> Result<Registration, ApiError> {
        if self.node.is_empty() {
            return Err(ApiError::internal("Must provide node"));
        }
        if self.address.is_empty() && !self.skip_node_update {
            return Err(ApiError::bad_request(
                "Must provide address if SkipNodeUpdate is not set",
            ));
        }
        if let Some(service) = &self.service
            && service.service.is_empty()
        {
            return Err(ApiError::internal("Must provide service name with ID"));
        }
        let mut checks = Vec::with_capacity(self.checks.len() + 1);
        for check in self.check.into_iter().chain(self.checks) {
            checks.push(check.into_registration()?);
        }
        Ok(Registration {
            node: self.node,
            id: self.id,
            address: self.address,
            tagged_addresses: self.tagged_addresses,
            node_meta: self.node_meta,
            service: self.service.map(ServiceBody::into_registration),
            checks,
            skip_node_update: self.skip_node_update,
        })
    }
}

/// `PUT /v1/catalog/deregister`'s body (Consul's `DeregisterRequest`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeregisterBody {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) datacenter: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) node: String,
    #[serde(rename = "ServiceID", default, deserialize_with = "null_as_default")]
    pub(crate) service_id: String,
    #[serde(rename = "CheckID", default, deserialize_with = "null_as_default")]
    pub(crate) check_id: String,
}
