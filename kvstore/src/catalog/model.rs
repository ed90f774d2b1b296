//! The catalog's records and the registration that writes them: plain serde data, bincode-encoded in
//! tables, commands and archives (so no `flatten`, no untyped JSON, no skipped fields).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A node as the catalog holds it (Consul's `Node`). Its name is its key, compared without regard to
/// ASCII case, as Consul does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Node {
    /// The node's UUID; empty for nodes registered without one.
    pub id: String,
    /// The node's name.
    pub node: String,
    /// The address services on the node default to.
    pub address: String,
    /// Extra addresses by purpose (`lan`, `wan`, `lan_ipv4`, ...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    pub meta: BTreeMap<String, String>,
    /// Index of the command that created the record.
    pub create_index: u64,
    /// Index of the command that last changed it.
    pub modify_index: u64,
}

/// An address and port for one purpose of a service (Consul's `ServiceAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceAddress {
    /// The address.
    pub address: String,
    /// The port.
    pub port: u16,
}

/// How DNS weighs an instance by its health (Consul's `Weights`; both 1 unless set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceWeights {
    /// Weight while every check passes; at least 1.
    pub passing: u32,
    /// Weight while a check warns.
    pub warning: u32,
}

impl Default for ServiceWeights {
    fn default() -> Self {
        Self {
            passing: 1,
            warning: 1,
        }
    }
}

/// One service instance, registered on one node under an ID unique on that node (Consul's
/// `ServiceNode` without the node's fields, or `NodeService` with the node's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceInstance {
    /// The node the instance runs on (the node record's spelling of its name).
    pub node: String,
    /// The instance's ID, unique on its node.
    pub id: String,
    /// The service's name.
    pub service: String,
    /// Consul's `Kind`: empty for a typical service, `connect-proxy`, `mesh-gateway`, ...
    pub kind: String,
    /// Tags, in the order registered.
    pub tags: Vec<String>,
    /// The instance's address; empty means the node's.
    pub address: String,
    /// Extra addresses by purpose.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Service metadata.
    pub meta: BTreeMap<String, String>,
    /// The port.
    pub port: u16,
    /// DNS weights.
    pub weights: ServiceWeights,
    /// Whether anti-entropy leaves tags changed through the catalog alone.
    pub enable_tag_override: bool,
    /// Index of the command that created the record.
    pub create_index: u64,
    /// Index of the command that last changed it.
    pub modify_index: u64,
}

/// A check's state, written as Consul writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckStatus {
    /// `passing`.
    Passing,
    /// `warning`.
    Warning,
    /// `critical` (also what a check registered without a status starts as, and what maintenance mode
    /// registers).
    Critical,
}

impl CheckStatus {
    /// Consul's spelling: `passing`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    /// Parses Consul's spelling (exactly; `any` is not a status).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check probes and how often, as Consul reports it in `Definition`. The store keeps it
/// uninterpreted; running checks is the agents' business. Every field may be left at its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckDefinition {
    /// URL of an HTTP check.
    pub http: String,
    /// HTTP method.
    pub method: String,
    /// HTTP request headers.
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP request body.
    pub body: String,
    /// Server name for TLS verification.
    pub tls_server_name: String,
    /// Whether TLS verification is skipped.
    pub tls_skip_verify: bool,
    /// `host:port` of a TCP check.
    pub tcp: String,
    /// `host:port` of a UDP check.
    pub udp: String,
    /// Endpoint of a gRPC check.
    pub grpc: String,
    /// Whether the gRPC check uses TLS.
    pub grpc_use_tls: bool,
    /// How often the check runs (zero: not set).
    pub interval: Duration,
    /// How long one run may take (zero: not set).
    pub timeout: Duration,
    /// How long the check may stay critical before its service is deregistered (zero: never).
    pub deregister_critical_service_after: Duration,
}

/// A health check as the catalog holds it (Consul's `HealthCheck`), keyed by node and check ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The node the check belongs to (the node record's spelling of its name).
    pub node: String,
    /// The check's ID, unique on its node.
    pub check_id: String,
    /// Human-readable name.
    pub name: String,
    /// Current state.
    pub status: CheckStatus,
    /// Free text set by whoever registered the check.
    pub notes: String,
    /// The output of the last run.
    pub output: String,
    /// The instance the check belongs to; empty for a node-level check.
    pub service_id: String,
    /// The instance's service name, filled in by the store (empty for a node-level check).
    pub service_name: String,
    /// The instance's tags, copied by the store when the check is written.
    pub service_tags: Vec<String>,
    /// `ttl`, `http`, `tcp`, `serf`, `alias`, ... (free text).
    pub check_type: String,
    /// What the check probes.
    pub definition: CheckDefinition,
    /// Index of the command that created the record.
    pub create_index: u64,
    /// Index of the command that last changed it.
    pub modify_index: u64,
}

/// A service to register (`Service` of Consul's `RegisterRequest`): an instance without its node and
/// indexes, which the store fills in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceRegistration {
    /// The instance ID; empty means the service name, as in Consul.
    pub id: String,
    /// The service name (required).
    pub service: String,
    /// Consul's `Kind` (empty for a typical service).
    pub kind: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The instance's address; empty means the node's.
    pub address: String,
    /// Extra addresses by purpose.
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Service metadata (keys of letters, digits, `-` and `_`; the `consul-` prefix is reserved).
    pub meta: BTreeMap<String, String>,
    /// The port.
    pub port: u16,
    /// DNS weights; `None`, or a passing weight of 0, stores Consul's default of 1/1.
    pub weights: Option<ServiceWeights>,
    /// Whether anti-entropy leaves catalog tag changes alone.
    pub enable_tag_override: bool,
}

impl ServiceRegistration {
    /// The ID the instance is stored under: `id`, or the service name when `id` is empty.
    pub fn effective_id(&self) -> &str {
        if self.id.is_empty() {
            &self.service
        } else {
            &self.id
        }
    }
}

/// A check to register (`Check` / `Checks` of Consul's `RegisterRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckRegistration {
    /// The node; empty means the registration's node, anything else must name that same node.
    pub node: String,
    /// The check ID; empty means the check's name, as in Consul.
    pub check_id: String,
    /// Human-readable name.
    pub name: String,
    /// The state; `None` registers the check as critical, as Consul does.
    pub status: Option<CheckStatus>,
    /// Free text.
    pub notes: String,
    /// The output of the last run.
    pub output: String,
    /// The instance the check belongs to, which must be registered on the node (in this registration
    /// or before); empty for a node-level check.
    pub service_id: String,
    /// `ttl`, `http`, `tcp`, `serf`, ... (free text).
    pub check_type: String,
    /// What the check probes.
    pub definition: CheckDefinition,
}

impl CheckRegistration {
    /// The ID the check is stored under: `check_id`, or the name when `check_id` is empty.
    pub fn effective_id(&self) -> &str {
        if self.check_id.is_empty() {
            &self.name
        } else {
            &self.check_id
        }
    }
}

/// Consul's catalog `RegisterRequest`: a node, optionally one service and any checks, written all or
/// nothing by [`crate::Command::CatalogRegister`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Registration {
    /// The node's name (required).
    pub node: String,
    /// The node's UUID; empty for none.
    pub id: String,
    /// The node's address (required unless `skip_node_update` is set).
    pub address: String,
    /// The node's tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// The node's metadata.
    pub node_meta: BTreeMap<String, String>,
    /// A service to register on the node.
    pub service: Option<ServiceRegistration>,
    /// Checks to register on the node, in order.
    pub checks: Vec<CheckRegistration>,
    /// Leave an existing node record as it is (it is still created when missing).
    pub skip_node_update: bool,
}

/// A node with the instances registered on it (Consul's `NodeServices`), in service ID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeServices {
    /// The node.
    pub node: Node,
    /// Its instances, by service ID.
    pub services: Vec<ServiceInstance>,
}

/// One instance with its node (what `/v1/catalog/service/:name` flattens into a `CatalogService`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNode {
    /// The node the instance runs on.
    pub node: Node,
    /// The instance.
    pub service: ServiceInstance,
}

/// One instance with its node and the checks that decide its health (Consul's `CheckServiceNode`,
/// one element of `/v1/health/service/:name`): the node's node-level checks, then the instance's own,
/// each group in check ID order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckServiceNode {
    /// The node the instance runs on.
    pub node: Node,
    /// The instance.
    pub service: ServiceInstance,
    /// Node-level checks of the node, then the instance's checks.
    pub checks: Vec<HealthCheck>,
}

/// A session the catalog destroyed: its node was deregistered, or a check it is bound to went
/// critical or was deregistered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyedSession {
    /// The session's ID.
    pub id: String,
    /// What destroying it did to its locks (the leader applies the lock-delay it reports).
    pub invalidation: crate::outcome::SessionInvalidation,
}

/// What a catalog command did besides writing the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogOutcome {
    /// The sessions it destroyed, in the order they were destroyed.
    pub destroyed_sessions: Vec<DestroyedSession>,
}
