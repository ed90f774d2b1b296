//! What a watch reads: one of Consul's watch types as a request path, and the answer as the
//! handler sees it.

use axum::http::StatusCode;
use serde_json::Value;

use crate::paths::{add_query_param, encode_key, encode_query_value};

/// Why a watch cannot be set up, or a read cannot be handed on; Consul's words where it has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// No `type`.
    #[error("Watch type must be specified")]
    NoType,
    /// A type this agent does not watch.
    #[error("Unsupported watch type: {0}")]
    UnknownType(String),
    /// A parameter the type needs is missing.
    #[error("Must specify a single {0} to watch")]
    Missing(&'static str),
    /// A `checks` watch names both a service and a state.
    #[error("Cannot specify service and state")]
    ServiceAndState,
    /// A parameter has the wrong shape or value.
    #[error("watch parameter {key}: {reason}")]
    Invalid {
        /// The parameter.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("Unexpected response code: {status} ({body})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// The answer is not JSON.
    #[error("the agent's answer is not JSON: {0}")]
    Decode(String),
}

/// One watchable view and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// One KV entry.
    Key(String),
    /// Every KV entry under a prefix.
    KeyPrefix(String),
    /// The catalog's services.
    Services,
    /// The catalog's nodes.
    Nodes,
    /// The instances of one service with their checks.
    Service {
        /// The service.
        name: String,
        /// Only instances with all these tags.
        tags: Vec<String>,
        /// Only instances whose checks all pass.
        passing: bool,
    },
    /// Health checks, of one service or in one state.
    Checks {
        /// The service whose checks.
        service: Option<String>,
        /// The state (any, passing, warning, critical).
        state: Option<String>,
    },
    /// User events, of one name or all.
    Event {
        /// The event name.
        name: Option<String>,
    },
}

/// A watch's parameters as Consul's `watch` command and `watches` blocks name them.
#[derive(Debug, Clone, Default)]
pub struct ViewParams {
    /// `type`.
    pub kind: Option<String>,
    /// `key`.
    pub key: Option<String>,
    /// `prefix`.
    pub prefix: Option<String>,
    /// `service`.
    pub service: Option<String>,
    /// `tag` (repeatable).
    pub tags: Vec<String>,
    /// `passingonly`.
    pub passing_only: bool,
    /// `state`.
    pub state: Option<String>,
    /// `name`.
    pub name: Option<String>,
}

impl View {
    /// The view the parameters ask for, with Consul's complaints.
    pub fn from_params(params: &ViewParams) -> Result<View, WatchError> {
        let kind = params.kind.as_deref().unwrap_or_default();
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(match kind {
            "" => return Err(WatchError::NoType),
            "key" => View::Key(nonempty(&params.key).ok_or(WatchError::Missing("key"))?),
            "keyprefix" => View::KeyPrefix(nonempty(&params.prefix).ok_or(WatchError::Missing("prefix"))?),
            "services" => View::Services,
            "nodes" => View::Nodes,
            "service" => View::Service {
                name: nonempty(&params.service).ok_or(WatchError::Missing("service"))?,
                tags: params.tags.clone(),
                passing: params.passing_only,
            },
            "checks" => {
                let service = nonempty(&params.service);
                let state = nonempty(&params.state);
                if service.is_some() && state.is_some() {
                    return Err(WatchError::ServiceAndState);
                }
                View::Checks { service, state }
            }
            "event" => View::Event {
                name: nonempty(&params.name),
            },
            other => return Err(WatchError::UnknownType(other.to_owned())),
        })
    }

    /// The path and query that read the view.
    pub fn path(&self) -> String {
        match self {
            View::Key(key) => format!("/v1/kv/{}", encode_key(key)),
            View::KeyPrefix(prefix) => format!("/v1/kv/{}?recurse", encode_key(prefix)),
            View::Services => "/v1/catalog/services".into(),
            View::Nodes => "/v1/catalog/nodes".into(),
            View::Service { name, tags, passing } => {
                let mut path = format!("/v1/health/service/{}", encode_query_value(name));
                for tag in tags {
                    path = add_query_param(&path, "tag", tag);
                }
                if *passing {
                    path = add_query_param(&path, "passing", "1");
                }
                path
            }
            View::Checks {
                service: Some(service),
                ..
            } => format!("/v1/health/checks/{}", encode_query_value(service)),
            View::Checks { state, .. } => format!(
                "/v1/health/state/{}",
                encode_query_value(state.as_deref().unwrap_or("any"))
            ),
            View::Event { name } => match name {
                Some(name) => add_query_param("/v1/event/list", "name", name),
                None => "/v1/event/list".into(),
            },
        }
    }

    /// The result a handler sees for an answer: a key's entry (not the list of one), `null` for a
    /// missing key or prefix, and for events only those after the one at `last_index`.
    pub fn result(&self, status: StatusCode, body: &[u8], last_index: u64) -> Result<Value, WatchError> {
        if status == StatusCode::NOT_FOUND && matches!(self, View::Key(_) | View::KeyPrefix(_)) {
            return Ok(Value::Null);
        }
        if status != StatusCode::OK {
            return Err(WatchError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(body).trim().to_owned(),
            });
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| WatchError::Decode(e.to_string()))?;
        Ok(match (self, value) {
            (View::Key(_), Value::Array(mut entries)) if !entries.is_empty() => entries.swap_remove(0),
            (View::Key(_), Value::Array(_)) => Value::Null,
            (View::Event { .. }, Value::Array(events)) => Value::Array(events_after(events, last_index)),
            (_, value) => value,
        })
    }
}

/// The events after the one whose ID hashes to `last_index` (all of them when none does), as
/// Consul's event watch prunes the list.
fn events_after(events: Vec<Value>, last_index: u64) -> Vec<Value> {
    let position = events.iter().position(|event| {
        let id = event.get("ID").and_then(Value::as_str).unwrap_or_default();
        crate::events::id_to_index(id) == last_index
    });
    match position {
        Some(at) => events.into_iter().skip(at + 1).collect(),
        None => events,
    }
}

/// Whether a watch whose last result was `last` (at `last_index`) hands `result` (at `index`) on:
/// always the first; later only when both the index and the result changed.
pub fn is_change(last: Option<&Value>, last_index: u64, result: &Value, index: u64) -> bool {
    match last {
        None => true,
        Some(last) => index != last_index && last != result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_a_new_index_and_a_new_result() {
        let a = serde_json::json!({"k": 1});
        let b = serde_json::json!({"k": 2});
        assert!(is_change(None, 0, &a, 5), "the first result is handed on");
        assert!(!is_change(Some(&a), 5, &b, 5), "same index");
        assert!(!is_change(Some(&a), 5, &a, 6), "same result");
        assert!(is_change(Some(&a), 5, &b, 6));
    }

    #[test]
    fn views_read_consuls_paths_and_shapes() {
        assert_eq!(View::Key("a b/c".into()).path(), "/v1/kv/a%20b/c");
        assert_eq!(View::KeyPrefix("p/".into()).path(), "/v1/kv/p/?recurse");
        let service = View::Service {
            name: "web".into(),
            tags: vec!["v1".into()],
            passing: true,
        };
        assert_eq!(service.path(), "/v1/health/service/web?tag=v1&passing=1");
        assert_eq!(
            View::Checks {
                service: None,
                state: None
            }
            .path(),
            "/v1/health/state/any"
        );
        assert_eq!(
            View::Event {
                name: Some("deploy".into())
            }
            .path(),
            "/v1/event/list?name=deploy"
        );
        let key = View::Key("k".into());
        assert_eq!(key.result(StatusCode::NOT_FOUND, b"", 0).unwrap(), Value::Null);
        assert_eq!(
            key.result(StatusCode::OK, br#"[{"Key":"k"}]"#, 0).unwrap(),
            serde_json::json!({"Key": "k"})
        );
        assert!(
            key.result(StatusCode::FORBIDDEN, b"Permission denied", 0)
                .is_err()
        );
    }

    #[test]
    fn an_event_watch_hands_on_only_newer_events() {
        let first = "00000000-0000-0000-0000-000000000001";
        let second = "00000000-0000-0000-0000-000000000002";
        let body = format!(r#"[{{"ID":"{first}"}},{{"ID":"{second}"}}]"#);
        let view = View::Event { name: None };
        let all = view.result(StatusCode::OK, body.as_bytes(), 0).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2);
        let newer = view.result(StatusCode::OK, body.as_bytes(), 1).unwrap();
        assert_eq!(newer, serde_json::json!([{ "ID": second }]));
    }

    #[test]
    fn params_are_checked_as_consul_checks_them() {
        let params = |kind: &str| ViewParams {
            kind: Some(kind.into()),
            ..ViewParams::default()
        };
        assert_eq!(View::from_params(&ViewParams::default()), Err(WatchError::NoType));
        assert_eq!(View::from_params(&params("key")), Err(WatchError::Missing("key")));
        assert_eq!(
            View::from_params(&params("nope")),
            Err(WatchError::UnknownType("nope".into()))
        );
        let both = ViewParams {
            service: Some("web".into()),
            state: Some("critical".into()),
            ..params("checks")
        };
        assert_eq!(View::from_params(&both), Err(WatchError::ServiceAndState));
        assert_eq!(View::from_params(&params("services")), Ok(View::Services));
    }
}
