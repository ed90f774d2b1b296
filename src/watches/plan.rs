//! A `watches` entry of the agent's configuration, read as Consul reads it: the view's parameters,
//! `datacenter`, `token`, and a handler (`args`, the older `handler` string, or `handler_type =
//! "http"` with `http_handler_config`). Unknown parameters are refused.

use std::collections::BTreeMap;

use serde_json::Value;

use super::handler::{DEFAULT_HTTP_TIMEOUT, Handler, HttpHandler};
use super::view::{View, ViewParams, WatchError};

/// A watch the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchPlan {
    /// What it reads.
    pub view: View,
    /// What it runs on a change.
    pub handler: Handler,
    /// The datacenter it reads (`?dc=`), the agent's own when `None`.
    pub datacenter: Option<String>,
    /// The token it reads with, the agent's default when `None`.
    pub token: Option<String>,
}

fn invalid(key: &str, reason: impl Into<String>) -> WatchError {
    WatchError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn string(key: &str, value: &Value) -> Result<String, WatchError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(key, "must be a string"))
}

fn strings(key: &str, value: &Value) -> Result<Vec<String>, WatchError> {
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(items) => items.iter().map(|item| string(key, item)).collect(),
        _ => Err(invalid(key, "must be a string or a list of strings")),
    }
}

impl WatchPlan {
    /// Reads one `watches` entry.
    pub fn parse(value: &Value) -> Result<WatchPlan, WatchError> {
        let object = value
            .as_object()
            .ok_or_else(|| invalid("watches", "each watch must be an object"))?;
        let mut params = ViewParams::default();
        let (mut datacenter, mut token) = (None, None);
        let (mut args, mut handler_string, mut handler_type, mut http_config) = (None, None, None, None);
        for (key, value) in object {
            match key.as_str() {
                "type" => params.kind = Some(string(key, value)?),
                "key" => params.key = Some(string(key, value)?),
                "prefix" => params.prefix = Some(string(key, value)?),
                "service" => params.service = Some(string(key, value)?),
                "tag" => params.tags = strings(key, value)?,
                "passingonly" => {
                    params.passing_only = value.as_bool().ok_or_else(|| invalid(key, "must be a boolean"))?;
                }
                "state" => params.state = Some(string(key, value)?),
                "name" => params.name = Some(string(key, value)?),
                "datacenter" => datacenter = Some(string(key, value)?).filter(|d| !d.is_empty()),
                "token" => token = Some(string(key, value)?).filter(|t| !t.is_empty()),
                "args" => args = Some(strings(key, value)?),
                "handler" => handler_string = Some(string(key, value)?),
                "handler_type" => handler_type = Some(string(key, value)?),
                "http_handler_config" => http_config = Some(http_handler(value)?),
                other => return Err(invalid(other, "unknown watch parameter")),
            }
        }
        let view = View::from_params(&params)?;
        let handler = match handler_type.as_deref().unwrap_or("script") {
            "script" => match (args, handler_string) {
                (Some(_), Some(_)) => return Err(invalid("args", "only one of args or handler may be set")),
                (Some(args), None) if !args.is_empty() => Handler::Script { args, shell: false },
                (None, Some(script)) if !script.is_empty() => Handler::Script {
                    args: vec![script],
                    shell: true,
                },
                _ => return Err(invalid("args", "a script watch needs args or handler")),
            },
            "http" => Handler::Http(
                http_config
                    .ok_or_else(|| invalid("http_handler_config", "required with handler_type \"http\""))?,
            ),
            other => {
                return Err(invalid(
                    "handler_type",
                    format!("{other:?} is not script or http"),
                ));
            }
        };
        Ok(WatchPlan {
            view,
            handler,
            datacenter,
            token,
        })
    }
}

/// `http_handler_config { path, method, header, timeout, tls_skip_verify }`.
fn http_handler(value: &Value) -> Result<HttpHandler, WatchError> {
    let key = "http_handler_config";
    let object = value
        .as_object()
        .ok_or_else(|| invalid(key, "must be an object"))?;
    let mut handler = HttpHandler {
        path: String::new(),
        method: "POST".into(),
        header: BTreeMap::new(),
        timeout: DEFAULT_HTTP_TIMEOUT,
        tls_skip_verify: false,
    };
    for (name, value) in object {
        let at = format!("{key}.{name}");
        match name.as_str() {
            "path" => handler.path = string(&at, value)?,
            "method" => handler.method = string(&at, value)?.to_ascii_uppercase(),
            "header" => {
                let headers = value
                    .as_object()
                    .ok_or_else(|| invalid(&at, "must be an object of lists"))?;
                for (header, values) in headers {
                    handler.header.insert(header.clone(), strings(&at, values)?);
                }
            }
            "timeout" => {
                handler.timeout = crate::duration::parse_go_duration(&string(&at, value)?)
                    .map_err(|e| invalid(&at, e.to_string()))?;
            }
            "tls_skip_verify" => {
                handler.tls_skip_verify = value.as_bool().ok_or_else(|| invalid(&at, "must be a boolean"))?;
            }
            other => return Err(invalid(&format!("{key}.{other}"), "unknown parameter")),
        }
    }
    if !(handler.path.starts_with("http://") || handler.path.starts_with("https://")) {
        return Err(invalid(
            &format!("{key}.path"),
            "must be an http:// or https:// URL",
        ));
    }
    Ok(handler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn script_and_http_watches_read_as_consul_writes_them() {
        let script =
            WatchPlan::parse(&json!({"type": "checks", "state": "critical", "args": ["/bin/alert", "-x"]}))
                .unwrap();
        assert_eq!(
            script.view,
            View::Checks {
                service: None,
                state: Some("critical".into())
            }
        );
        assert_eq!(
            script.handler,
            Handler::Script {
                args: vec!["/bin/alert".into(), "-x".into()],
                shell: false
            }
        );
        let old = WatchPlan::parse(&json!({"type": "key", "key": "a", "handler": "cat >> /tmp/x"})).unwrap();
        assert!(matches!(old.handler, Handler::Script { shell: true, .. }));

        let http = WatchPlan::parse(&json!({
            "type": "service", "service": "web", "tag": "v1", "passingonly": true, "datacenter": "dc2",
            "handler_type": "http",
            "http_handler_config": {"path": "https://alerts.example/hook", "method": "put",
                "header": {"x-team": ["core"]}, "timeout": "3s", "tls_skip_verify": true}
        }))
        .unwrap();
        assert_eq!(http.datacenter.as_deref(), Some("dc2"));
        let Handler::Http(config) = http.handler else {
            panic!("an http handler");
        };
        assert_eq!(config.method, "PUT");
        assert_eq!(config.timeout, std::time::Duration::from_secs(3));
        assert_eq!(config.header["x-team"], ["core"]);
        assert!(config.tls_skip_verify);
    }

    #[test]
    fn bad_watches_are_refused_naming_what_is_wrong() {
        let refused = |value: Value| WatchPlan::parse(&value).unwrap_err().to_string();
        assert_eq!(refused(json!({"args": ["x"]})), "Watch type must be specified");
        assert!(refused(json!({"type": "key", "key": "a"})).contains("needs args or handler"));
        assert!(refused(json!({"type": "key", "key": "a", "args": ["x"], "colour": 1})).contains("colour"));
        assert!(refused(json!({"type": "nodes", "handler_type": "http"})).contains("http_handler_config"));
        assert!(
            refused(
                json!({"type": "nodes", "handler_type": "http", "http_handler_config": {"path": "ftp://x"}})
            )
            .contains("http:// or https://")
        );
    }
}
