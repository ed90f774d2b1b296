//! Consul's user events: the record an agent gossips in the LAN pool (`consul event`,
//! `PUT /v1/event/fire/{name}`), the filters an agent applies when one arrives, and the ring of
//! the last [`BUFFER_SIZE`] events it kept, which `GET /v1/event/list` reads and blocks on.
//!
//! An event travels as a tribune-gossip user event named `consul:event:<name>` whose payload is
//! the JSON [`UserEvent`] (Consul gossips msgpack; Tribune's gossip is its own wire format, so only
//! the HTTP shape must match Consul's). The pool delivers each event once to every member, the
//! sender included; [`Events::receive`] then decides whether this agent keeps it: the node filter
//! is a regexp on the agent's node name, the service and tag filters are regexps on the agent's
//! own services, asked through [`LocalServices`].
//!
//! What it is not: no persistence (the ring is lost on restart, as Consul's), no delivery
//! guarantee beyond gossip's, no handler execution (that is `tribune watch -type event`).
//! The agents' local state (`crate::local::LocalState`) answers the service filters.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How many events an agent remembers (Consul's `eventBuf`).
pub(crate) const BUFFER_SIZE: usize = 256;

/// The gossip name prefix of Consul's user events; other user events in the pool are not ours.
pub(crate) const GOSSIP_PREFIX: &str = "consul:event:";

/// The newest record version this agent understands (Consul's `userEventMaxVersion`).
pub(crate) const MAX_VERSION: u32 = 1;

/// One user event, as Consul's HTTP API shows it and as it travels in the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UserEvent {
    /// A random UUID chosen by the agent that fired it; its hash is the list's index.
    #[serde(rename = "ID")]
    pub(crate) id: String,
    /// The event's name.
    pub(crate) name: String,
    /// Opaque bytes, base64 in JSON, `null` when empty (Go's `[]byte(nil)`).
    #[serde(with = "payload_base64")]
    pub(crate) payload: Vec<u8>,
    /// A regexp the receiving agent's node name must match ("" matches all).
    pub(crate) node_filter: String,
    /// A regexp one of the receiving agent's services must match ("" matches all).
    pub(crate) service_filter: String,
    /// With a service filter: a regexp one tag of the matching service must match.
    pub(crate) tag_filter: String,
    /// The record version.
    pub(crate) version: u32,
    /// The pool's Lamport time at which it was sent; 0 in the answer to a fire.
    #[serde(rename = "LTime")]
    pub(crate) ltime: u64,
}

mod payload_base64 {
    use base64::Engine as _;
    use serde::Deserialize as _;

    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if bytes.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        match text {
            None => Ok(Vec::new()),
            Some(text) => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

/// What a fire asks for; the filters are checked before anything is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FireRequest {
    /// The event's name.
    pub(crate) name: String,
    /// The payload.
    pub(crate) payload: Vec<u8>,
    /// `?node=`.
    pub(crate) node_filter: String,
    /// `?service=`.
    pub(crate) service_filter: String,
    /// `?tag=`.
    pub(crate) tag_filter: String,
}

/// Why an event could not be fired or was not understood. The messages are Consul's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum EventError {
    /// No name.
    #[error("User event missing name")]
    MissingName,
    /// A tag filter needs a service filter.
    #[error("Cannot provide tag filter without service filter")]
    TagWithoutService,
    /// A filter is not a valid regexp.
    #[error("Invalid {which} filter: {reason}")]
    BadFilter {
        /// `node`, `service` or `tag`.
        which: &'static str,
        /// The regexp parser's complaint.
        reason: String,
    },
    /// The record could not be encoded or decoded.
    #[error("user event record: {0}")]
    Codec(String),
}

fn compile(which: &'static str, pattern: &str) -> Result<Option<Regex>, EventError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern).map(Some).map_err(|e| EventError::BadFilter {
        which,
        reason: e.to_string(),
    })
}

impl FireRequest {
    /// Checks the request and builds the record with `id` (chosen by the caller: no randomness
    /// here). Version is [`MAX_VERSION`]; the Lamport time is the pool's, known on delivery.
    pub(crate) fn into_event(self, id: String) -> Result<UserEvent, EventError> {
        if self.name.is_empty() {
            return Err(EventError::MissingName);
        }
        if !self.tag_filter.is_empty() && self.service_filter.is_empty() {
            return Err(EventError::TagWithoutService);
        }
        compile("node", &self.node_filter)?;
        compile("service", &self.service_filter)?;
        compile("tag", &self.tag_filter)?;
        Ok(UserEvent {
            id,
            name: self.name,
            payload: self.payload,
            node_filter: self.node_filter,
            service_filter: self.service_filter,
            tag_filter: self.tag_filter,
            version: MAX_VERSION,
            ltime: 0,
        })
    }
}

impl UserEvent {
    /// The gossip name and payload that carry this event.
    pub(crate) fn to_gossip(&self) -> Result<(String, Vec<u8>), EventError> {
        let bytes = serde_json::to_vec(self).map_err(|e| EventError::Codec(e.to_string()))?;
        Ok((format!("{GOSSIP_PREFIX}{}", self.name), bytes))
    }

    /// The event a gossip user event carries: `None` when it is not one of Consul's events.
    pub(crate) fn from_gossip(name: &str, payload: &[u8], ltime: u64) -> Option<Result<Self, EventError>> {
        name.strip_prefix(GOSSIP_PREFIX)?;
        Some(
            serde_json::from_slice::<UserEvent>(payload)
                .map(|mut event| {
                    event.ltime = ltime;
                    event
                })
                .map_err(|e| EventError::Codec(e.to_string())),
        )
    }

    /// The blocking index of a list ending with this event (Consul's `uuidToUint64`).
    pub(crate) fn index(&self) -> u64 {
        id_to_index(&self.id)
    }
}

/// Consul's index of an event ID: the UUID's first 16 hex digits XOR its last 16, so the same
/// list gives the same index on every agent. An ID that is not a UUID gives 0.
pub fn id_to_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return 0;
    }
    let (Some(lower), Some(upper)) = (hex.get(..16), hex.get(16..)) else {
        return 0;
    };
    match (u64::from_str_radix(lower, 16), u64::from_str_radix(upper, 16)) {
        (Ok(lower), Ok(upper)) => lower ^ upper,
        _ => 0,
    }
}

/// The index of a list of events as `/v1/event/list` reports it: the last event's, or 1 for none
/// (never 0, so a blocking client does not spin).
pub(crate) fn list_index(events: &[UserEvent]) -> u64 {
    events.last().map_or(1, UserEvent::index).max(1)
}

/// "Does this agent run a service matching these regexps?": the service and tag filters' question.
pub(crate) trait LocalServices: Send + Sync {
    /// True when a local service's name matches `service` and, given `tag`, one of its tags
    /// matches `tag`.
    fn runs(&self, service: &Regex, tag: Option<&Regex>) -> bool;
}

/// No local services: every service filter fails (for tests of the buffer alone).
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NoLocalServices;

#[cfg(test)]
impl LocalServices for NoLocalServices {
    fn runs(&self, _service: &Regex, _tag: Option<&Regex>) -> bool {
        false
    }
}

/// Whether an agent named `node` running `services` keeps `event` (Consul's
/// `shouldProcessUserEvent`). A filter that does not compile keeps nothing.
pub(crate) fn should_keep(event: &UserEvent, node: &str, services: &dyn LocalServices) -> bool {
    if event.version > MAX_VERSION {
        return false;
    }
    let (Ok(node_filter), Ok(service_filter), Ok(tag_filter)) = (
        compile("node", &event.node_filter),
        compile("service", &event.service_filter),
        compile("tag", &event.tag_filter),
    ) else {
        return false;
    };
    if node_filter.is_some_and(|re| !re.is_match(node)) {
        return false;
    }
    match service_filter {
        Some(service) => services.runs(&service, tag_filter.as_ref()),
        None => true,
    }
}

/// The last [`BUFFER_SIZE`] events an agent kept, oldest first.
#[derive(Debug, Default)]
pub(crate) struct EventRing {
    events: VecDeque<UserEvent>,
}

impl EventRing {
    /// Adds an event, dropping the oldest when full.
    pub(crate) fn push(&mut self, event: UserEvent) {
        if self.events.len() >= BUFFER_SIZE {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The events, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<UserEvent> {
        self.events.iter().cloned().collect()
    }
}

/// An agent's events: the ring, who it is for the filters, and a counter that moves on every
/// kept event, which blocked lists wait on.
pub(crate) struct Events {
    node_name: String,
    services: Arc<dyn LocalServices>,
    ring: Mutex<EventRing>,
    kept: watch::Sender<u64>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The events of the agent `node_name`, whose local services `services` answers for.
    pub(crate) fn new(node_name: impl Into<String>, services: Arc<dyn LocalServices>) -> Self {
        Events {
            node_name: node_name.into(),
            services,
            ring: Mutex::new(EventRing::default()),
            kept: watch::channel(0).0,
        }
    }

    /// A gossip user event arrived (or this agent sent it): kept when it is Consul's and its
    /// filters select this agent. Returns whether it was kept.
    pub(crate) fn receive(&self, name: &str, payload: &[u8], ltime: u64) -> bool {
        let event = match UserEvent::from_gossip(name, payload, ltime) {
            None => return false,
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                tracing::warn!(event = %name, error = %e, "dropping a user event that cannot be decoded");
                return false;
            }
        };
        if !should_keep(&event, &self.node_name, self.services.as_ref()) {
            tracing::debug!(event = %event.name, id = %event.id, "user event filtered out");
            return false;
        }
        tracing::debug!(event = %event.name, id = %event.id, "user event kept");
        self.ring.lock().push(event);
        self.kept.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// The events kept, oldest first.
    pub(crate) fn list(&self) -> Vec<UserEvent> {
        self.ring.lock().snapshot()
    }

    /// Changes whenever an event is kept.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.kept.subscribe()
    }
}

/// The services registered on this agent (its local state), as Consul's event filters see them.
impl LocalServices for crate::local::LocalState {
    fn runs(&self, service: &Regex, tag: Option<&Regex>) -> bool {
        self.services().iter().any(|local| {
            service.is_match(&local.service)
                && tag.is_none_or(|tag| local.tags.iter().any(|t| tag.is_match(t)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, name: &str) -> UserEvent {
        FireRequest {
            name: name.into(),
            ..FireRequest::default()
        }
        .into_event(id.into())
        .unwrap()
    }

    struct Runs(&'static str, &'static [&'static str]);
    impl LocalServices for Runs {
        fn runs(&self, service: &Regex, tag: Option<&Regex>) -> bool {
            service.is_match(self.0) && tag.is_none_or(|t| self.1.iter().any(|x| t.is_match(x)))
        }
    }

    #[test]
    fn the_index_is_consuls_xor_of_the_uuid_halves() {
        // 0x0123456789abcdef ^ 0xfedcba9876543210 = 0xffffffffffffffff
        assert_eq!(id_to_index("01234567-89ab-cdef-fedc-ba9876543210"), u64::MAX);
        assert_eq!(
            id_to_index("00000000-0000-0001-0000-000000000003"),
            1 ^ 3,
            "lower 16 digits XOR upper 16"
        );
        assert_eq!(id_to_index("not-a-uuid"), 0);
        assert_eq!(list_index(&[]), 1);
        let e = event("00000000-0000-0000-0000-000000000005", "a");
        assert_eq!(list_index(std::slice::from_ref(&e)), 5);
    }

    #[test]
    fn fire_checks_its_filters_with_consuls_messages() {
        let req = |name: &str, node: &str, service: &str, tag: &str| FireRequest {
            name: name.into(),
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            payload: Vec::new(),
        };
        assert_eq!(
            req("", "", "", "").into_event("x".into()),
            Err(EventError::MissingName)
        );
        assert_eq!(
            req("a", "", "", "t").into_event("x".into()),
            Err(EventError::TagWithoutService)
        );
        let bad = req("a", "(", "", "").into_event("x".into()).unwrap_err();
        assert!(bad.to_string().starts_with("Invalid node filter: "), "{bad}");
        let ok = req("a", "n.*", "web", "v1").into_event("x".into()).unwrap();
        assert_eq!(ok.version, 1);
        assert_eq!(ok.ltime, 0);
    }

    #[test]
    fn filters_select_by_node_name_and_local_services() {
        let mut e = event("00000000-0000-0000-0000-000000000001", "deploy");
        assert!(should_keep(&e, "web-1", &NoLocalServices));
        e.node_filter = "^web-".into();
        assert!(should_keep(&e, "web-1", &NoLocalServices));
        assert!(!should_keep(&e, "db-1", &NoLocalServices));
        e.node_filter = String::new();
        e.service_filter = "^api$".into();
        assert!(
            !should_keep(&e, "web-1", &NoLocalServices),
            "no local services yet"
        );
        assert!(should_keep(&e, "web-1", &Runs("api", &["v1"])));
        e.tag_filter = "v2".into();
        assert!(!should_keep(&e, "web-1", &Runs("api", &["v1"])));
        assert!(should_keep(&e, "web-1", &Runs("api", &["v1", "v2"])));
        e.tag_filter = String::new();
        e.version = 2;
        assert!(
            !should_keep(&e, "web-1", &Runs("api", &[])),
            "a newer version is dropped"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_256_and_only_consuls_events() {
        let events = Events::new("n1", Arc::new(NoLocalServices));
        let mut seen = events.subscribe();
        assert!(!events.receive("other", b"{}", 1), "not a consul event");
        assert!(!events.receive("consul:event:x", b"garbage", 1));
        for i in 0..300u64 {
            let e = event(&format!("00000000-0000-0000-0000-{i:012x}"), "x");
            let (name, bytes) = e.to_gossip().unwrap();
            assert_eq!(name, "consul:event:x");
            assert!(events.receive(&name, &bytes, i + 7));
        }
        assert!(seen.has_changed().unwrap());
        let list = events.list();
        assert_eq!(list.len(), BUFFER_SIZE);
        assert_eq!(list.first().unwrap().ltime, 44 + 7);
        assert_eq!(list.last().unwrap().ltime, 299 + 7);
        assert_eq!(list_index(&list), 299);
        let _ = seen.borrow_and_update();
        assert!(!seen.has_changed().unwrap());
    }

    #[test]
    fn json_matches_consuls_shape() {
        let mut e = event("00000000-0000-0000-0000-000000000001", "deploy");
        let empty = serde_json::to_value(&e).unwrap();
        assert_eq!(empty["Payload"], serde_json::Value::Null);
        e.payload = b"hi".to_vec();
        let value = serde_json::to_value(&e).unwrap();
        for field in [
            "ID",
            "Name",
            "Payload",
            "NodeFilter",
            "ServiceFilter",
            "TagFilter",
            "Version",
            "LTime",
        ] {
            assert!(value.get(field).is_some(), "{field} in {value}");
        }
        assert_eq!(value["Payload"], "aGk=");
        let back: UserEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, e);
    }
}
