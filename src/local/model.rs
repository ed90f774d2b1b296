//! The records of an agent's local state — a service instance and a check as the agent holds them —
//! and their JSON as `/v1/agent/services` and `/v1/agent/checks` show them (Consul's `AgentService`
//! and `HealthCheck`).
//!
//! Only shapes and conversions: no locking, no syncing, no parsing of request bodies
//! (`definition.rs`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use tribune_kvstore::{CheckDefinition, CheckStatus, HealthCheck, ServiceAddress, ServiceWeights};

use crate::duration::format_go_duration;

/// The ID of the node maintenance check (Consul's `_node_maintenance`).
pub(crate) const NODE_MAINTENANCE_CHECK: &str = "_node_maintenance";
/// The prefix of a service's maintenance check ID (Consul's `_service_maintenance:<id>`).
pub(crate) const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

/// A service instance registered on this agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LocalService {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) kind: String,
    pub(crate) tags: Vec<String>,
    pub(crate) address: String,
    pub(crate) tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) port: u16,
    pub(crate) weights: ServiceWeights,
    pub(crate) enable_tag_override: bool,
}

/// A check registered on this agent: a node check when `service_id` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalCheck {
    pub(crate) check_id: String,
    pub(crate) name: String,
    pub(crate) status: CheckStatus,
    pub(crate) notes: String,
    pub(crate) output: String,
    pub(crate) service_id: String,
    pub(crate) service_name: String,
    /// Consul's `Type` (`ttl`, `http`, `tcp`, `maintenance`, …).
    pub(crate) check_type: String,
    /// What it probes, its interval, timeout and `DeregisterCriticalServiceAfter`.
    pub(crate) definition: CheckDefinition,
}

impl LocalCheck {
    /// A check with only the fields every check has.
    pub(crate) fn new(check_id: &str, name: &str, status: CheckStatus) -> Self {
        LocalCheck {
            check_id: check_id.to_owned(),
            name: name.to_owned(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            check_type: String::new(),
            definition: CheckDefinition::default(),
        }
    }

    /// Whether it is one of the maintenance checks the agent adds itself.
    pub(crate) fn is_maintenance(&self) -> bool {
        self.check_id == NODE_MAINTENANCE_CHECK || self.check_id.starts_with(SERVICE_MAINTENANCE_PREFIX)
    }

    /// The check as the catalog's `HealthCheck` (indexes 0: the agent's view has none).
    pub(crate) fn to_health_check(&self, node: &str, service_tags: &[String]) -> HealthCheck {
        HealthCheck {
            node: node.to_owned(),
            check_id: self.check_id.clone(),
            name: self.name.clone(),
            status: self.status,
            notes: self.notes.clone(),
            output: self.output.clone(),
            service_id: self.service_id.clone(),
            service_name: self.service_name.clone(),
            service_tags: service_tags.to_vec(),
            check_type: self.check_type.clone(),
            definition: self.definition.clone(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The `Check` of a catalog registration carrying it.
    pub(crate) fn registration_json(&self, node: &str) -> Value {
        let d = &self.definition;
        let mut definition = json!({
            "Interval": format_go_duration(d.interval),
            "Timeout": format_go_duration(d.timeout),
            "DeregisterCriticalServiceAfter": format_go_duration(d.deregister_critical_service_after),
        });
        if let Value::Object(map) = &mut definition {
            let texts = [
                ("HTTP", &d.http),
                ("Method", &d.method),
                ("Body", &d.body),
                ("TLSServerName", &d.tls_server_name),
                ("TCP", &d.tcp),
                ("UDP", &d.udp),
                ("GRPC", &d.grpc),
            ];
            for (name, value) in texts {
                if !value.is_empty() {
                    map.insert(name.to_owned(), Value::String(value.clone()));
                }
            }
            if !d.header.is_empty() {
                map.insert("Header".to_owned(), json!(d.header));
            }
            if d.tls_skip_verify {
                map.insert("TLSSkipVerify".to_owned(), Value::Bool(true));
            }
            if d.grpc_use_tls {
                map.insert("GRPCUseTLS".to_owned(), Value::Bool(true));
            }
        }
        json!({
            "Node": node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status.as_str(),
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "Type": self.check_type,
            "Definition": definition,
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddressJson<'a> {
    address: &'a str,
    port: u16,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsJson {
    passing: u32,
    warning: u32,
}

/// A service as `/v1/agent/services` shows it (Consul's `AgentService`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AgentServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    meta: &'a BTreeMap<String, String>,
    port: u16,
    address: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: BTreeMap<&'a str, AddressJson<'a>>,
    weights: WeightsJson,
    enable_tag_override: bool,
    datacenter: &'a str,
}

impl<'a> AgentServiceJson<'a> {
    pub(crate) fn new(service: &'a LocalService, datacenter: &'a str) -> Self {
        AgentServiceJson {
            kind: &service.kind,
            id: &service.id,
            service: &service.service,
            tags: &service.tags,
            meta: &service.meta,
            port: service.port,
            address: &service.address,
            tagged_addresses: service
                .tagged_addresses
                .iter()
                .map(|(purpose, a)| {
                    (
                        purpose.as_str(),
                        AddressJson {
                            address: &a.address,
                            port: a.port,
                        },
                    )
                })
                .collect(),
            weights: WeightsJson {
                passing: service.weights.passing,
                warning: service.weights.warning,
            },
            enable_tag_override: service.enable_tag_override,
            datacenter,
        }
    }
}

impl LocalService {
    /// The `Service` of a catalog registration carrying it.
    pub(crate) fn registration_json(&self) -> Value {
        let tagged: BTreeMap<&str, Value> = self
            .tagged_addresses
            .iter()
            .map(|(purpose, a)| (purpose.as_str(), json!({"Address": a.address, "Port": a.port})))
            .collect();
        json!({
            "ID": self.id,
            "Service": self.service,
            "Kind": self.kind,
            "Tags": self.tags,
            "Address": self.address,
            "TaggedAddresses": tagged,
            "Meta": self.meta,
            "Port": self.port,
            "Weights": {"Passing": self.weights.passing, "Warning": self.weights.warning},
            "EnableTagOverride": self.enable_tag_override,
        })
    }
}
