//! Reading a check definition from JSON the way Consul's agent does: field names in any case, with or
//! without underscores (`DeregisterCriticalServiceAfter`, `deregister_critical_service_after`), durations
//! as Go text or nanoseconds, and Consul's validation and messages.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{CheckDefinition, CheckKind, CheckStatus};
use crate::duration::parse_go_duration;

/// Why a definition was refused; the text is what Consul answers (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckDefinitionError {
    /// The JSON does not have the shape of a check.
    #[error("Request decode failed: {0}")]
    Decode(String),
    /// A check registered on its own has no `Name`.
    #[error("Missing check name")]
    MissingName,
    /// `Status` of a check registered on its own is not a status.
    #[error("Bad check status")]
    BadStatus,
    /// `Status` of a service's check is not a status.
    #[error("Status for checks must 'passing', 'warning', 'critical'")]
    BadServiceCheckStatus,
    /// The fields do not make a valid check (Consul's `CheckType.Validate`).
    #[error("Invalid check: {0}")]
    Invalid(String),
}

/// The fields read, keyed by their name lowercased without underscores.
struct Fields<'a>(BTreeMap<String, &'a Value>);

impl<'a> Fields<'a> {
    fn new(object: &'a serde_json::Map<String, Value>) -> Self {
        let mut fields = BTreeMap::new();
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            let normal: String = key
                .chars()
                .filter(|c| *c != '_')
                .map(|c| c.to_ascii_lowercase())
                .collect();
            // The first spelling wins, as with the PascalCase field before its snake_case alias.
            fields.entry(normal).or_insert(value);
        }
        Fields(fields)
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).copied()
    }

    fn string(&self, name: &str, label: &str) -> Result<String, CheckDefinitionError> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(type_error(label, "string", other)),
        }
    }

    fn bool(&self, name: &str, label: &str) -> Result<bool, CheckDefinitionError> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(type_error(label, "bool", other)),
        }
    }

    fn count(&self, name: &str, label: &str) -> Result<u32, CheckDefinitionError> {
        match self.get(name) {
            None => Ok(0),
            Some(Value::Number(n)) => {
                if let Some(v) = n.as_u64() {
                    Ok(u32::try_from(v).unwrap_or(u32::MAX))
                } else if n.as_i64().is_some() {
                    // A negative count behaves as 0 in Consul (every result is reported).
                    Ok(0)
                } else {
                    Err(type_error(label, "int", &Value::Number(n.clone())))
                }
            }
            Some(other) => Err(type_error(label, "int", other)),
        }
    }

    fn strings(&self, name: &str, label: &str) -> Result<Vec<String>, CheckDefinitionError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_error(label, "string", other)),
                })
                .collect(),
            Some(other) => Err(type_error(label, "[]string", other)),
        }
    }

    fn duration(&self, name: &str, label: &str) -> Result<Option<Duration>, CheckDefinitionError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => {
                let d = parse_go_duration(text)
                    .map_err(|e| CheckDefinitionError::Decode(format!("time: {e}")))?;
                Ok((!d.is_zero()).then_some(d))
            }
            Some(Value::Number(n)) => {
                // Nanoseconds, as Go's decoder reads a number into a time.Duration. A negative one
                // counts as unset, as Consul's `> 0` tests treat it.
                let nanos = n.as_f64().unwrap_or(0.0);
                if (1.0..9.2e18).contains(&nanos) {
                    Ok(Some(Duration::from_nanos(nanos as u64)))
                } else {
                    Ok(None)
                }
            }
            Some(other) => Err(type_error(label, "duration", other)),
        }
    }

    fn header(&self) -> Result<BTreeMap<String, Vec<String>>, CheckDefinitionError> {
        let mut out = BTreeMap::new();
        match self.get("header") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, values) in map {
                    let list = match values {
                        Value::Null => Vec::new(),
                        // Lenient where Go is strict: one value written without the list.
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => items
                            .iter()
                            .map(|item| match item {
                                Value::String(s) => Ok(s.clone()),
                                other => Err(type_error("Header", "string", other)),
                            })
                            .collect::<Result<_, _>>()?,
                        other => return Err(type_error("Header", "[]string", other)),
                    };
                    out.insert(name.clone(), list);
                }
            }
            Some(other) => return Err(type_error("Header", "map[string][]string", other)),
        }
        Ok(out)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's decoder's words for a value of the wrong type.
fn type_error(field: &str, want: &str, got: &Value) -> CheckDefinitionError {
    CheckDefinitionError::Decode(format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {want}",
        json_kind(got)
    ))
}

impl CheckDefinition {
    /// A check from `/v1/agent/check/register` JSON, a config file's `check`, or one entry of a
    /// service's `Check`/`Checks`.
    ///
    /// Field names match whatever their case and underscores (`ID`/`CheckID`/`check_id`, `Args`/
    /// `ScriptArgs`/`script_args`, ...); unknown fields are ignored. For a service's check, `service`
    /// is `Some((service_id, service_name))`: the check belongs to that instance whatever its own
    /// `ServiceID` says, its ID defaults to `service:<id>` — `service:<id>:<index+1>` when `index` is
    /// `Some` (pass it when the service has more than one check) — and its name to
    /// `Service '<name>' check`. A check on its own needs a name and its ID defaults to the name.
    ///
    /// The kind follows Consul's order when several are given (gRPC, HTTP, TTL, TCP, UDP, alias,
    /// script); the errors are Consul's: `Interval must be > 0 ...`, `Interval and TTL cannot both be
    /// specified`, `TTL must be > 0 for TTL checks` (also what a check with no kind gets), ...
    pub(crate) fn from_json(
        value: &Value,
        service: Option<(&str, &str)>,
        index: Option<usize>,
    ) -> Result<Self, CheckDefinitionError> {
        let Value::Object(object) = value else {
            return Err(CheckDefinitionError::Decode(format!(
                "json: cannot unmarshal {} into Go value of type structs.CheckDefinition",
                json_kind(value)
            )));
        };
        let f = Fields::new(object);

        let mut id = f.string("id", "ID")?;
        if id.is_empty() {
            id = f.string("checkid", "CheckID")?;
        }
        let mut name = f.string("name", "Name")?;
        let notes = f.string("notes", "Notes")?;
        let status_text = f.string("status", "Status")?;
        let own_service_id = f.string("serviceid", "ServiceID")?;

        let ttl = f.duration("ttl", "TTL")?;
        let http = f.string("http", "HTTP")?;
        let method = f.string("method", "Method")?;
        let header = f.header()?;
        let body = f.string("body", "Body")?;
        let tls_skip_verify = f.bool("tlsskipverify", "TLSSkipVerify")?;
        let tls_server_name = f.string("tlsservername", "TLSServerName")?;
        let disable_redirects = f.bool("disableredirects", "DisableRedirects")?;
        let tcp = f.string("tcp", "TCP")?;
        let udp = f.string("udp", "UDP")?;
        let mut args = f.strings("scriptargs", "ScriptArgs")?;
        if args.is_empty() {
            args = f.strings("args", "Args")?;
        }
        let grpc = f.string("grpc", "GRPC")?;
        let grpc_use_tls = f.bool("grpcusetls", "GRPCUseTLS")?;
        let alias_node = f.string("aliasnode", "AliasNode")?;
        let alias_service = f.string("aliasservice", "AliasService")?;
        let interval = f.duration("interval", "Interval")?;
        let timeout = f.duration("timeout", "Timeout")?;
        let deregister_critical_service_after =
            f.duration("deregistercriticalserviceafter", "DeregisterCriticalServiceAfter")?;
        let success_before_passing = f.count("successbeforepassing", "SuccessBeforePassing")?;
        let failures_before_warning = f.count("failuresbeforewarning", "FailuresBeforeWarning")?;
        let failures_before_critical = f.count("failuresbeforecritical", "FailuresBeforeCritical")?;
        let output_max_size = match f.get("outputmaxsize") {
            None => None,
            Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) => (v > 0).then(|| usize::try_from(v).unwrap_or(usize::MAX)),
                (None, Some(_)) => {
                    return Err(CheckDefinitionError::Invalid(
                        "MaxOutputMaxSize must be positive".to_owned(),
                    ));
                }
                _ => return Err(type_error("OutputMaxSize", "int", &Value::Number(n.clone()))),
            },
            Some(other) => return Err(type_error("OutputMaxSize", "int", other)),
        };

        let service_id = match service {
            Some((sid, sname)) => {
                if id.is_empty() {
                    id = match index {
                        Some(i) => format!("service:{sid}:{}", i.saturating_add(1)),
                        None => format!("service:{sid}"),
                    };
                }
                if name.is_empty() {
                    name = format!("Service '{sname}' check");
                }
                Some(sid.to_owned())
            }
            None => {
                if name.is_empty() {
                    return Err(CheckDefinitionError::MissingName);
                }
                if id.is_empty() {
                    id = name.clone();
                }
                (!own_service_id.is_empty()).then_some(own_service_id)
            }
        };

        let status = match status_text.as_str() {
            "" => None,
            text => Some(CheckStatus::parse(text).ok_or(if service.is_some() {
                CheckDefinitionError::BadServiceCheckStatus
            } else {
                CheckDefinitionError::BadStatus
            })?),
        };

        // Consul's CheckType.Validate, in its order.
        let is_script = !args.is_empty();
        let is_alias = !alias_node.is_empty() || !alias_service.is_empty();
        let interval_check =
            is_script || !http.is_empty() || !tcp.is_empty() || !udp.is_empty() || !grpc.is_empty();
        let invalid = |text: &str| Err(CheckDefinitionError::Invalid(text.to_owned()));
        if interval.is_some() && ttl.is_some() {
            return invalid("Interval and TTL cannot both be specified");
        }
        if interval_check && interval.is_none() {
            return invalid("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks");
        }
        if interval_check && is_alias {
            return invalid("Interval cannot be set for Alias checks");
        }
        if is_alias && ttl.is_some() {
            return invalid("TTL must be not be set for Alias checks");
        }
        if !interval_check && !is_alias && ttl.is_none() {
            return invalid("TTL must be > 0 for TTL checks");
        }
        if failures_before_warning > failures_before_critical {
            return invalid("FailuresBeforeWarning can't be higher than FailuresBeforeCritical");
        }

        // Consul's CheckType.Type order decides between several kinds.
        let kind = if !grpc.is_empty() {
            CheckKind::Grpc {
                target: grpc,
                use_tls: grpc_use_tls,
                tls_skip_verify,
                tls_server_name,
            }
        } else if !http.is_empty() {
            CheckKind::Http {
                url: http,
                method,
                header,
                body,
                tls_skip_verify,
                tls_server_name,
                disable_redirects,
            }
        } else if let Some(ttl) = ttl {
            CheckKind::Ttl { ttl }
        } else if !tcp.is_empty() {
            CheckKind::Tcp { address: tcp }
        } else if !udp.is_empty() {
            CheckKind::Udp { address: udp }
        } else if is_alias {
            CheckKind::Alias {
                node: (!alias_node.is_empty()).then_some(alias_node),
                service_id: (!alias_service.is_empty()).then_some(alias_service),
            }
        } else {
            CheckKind::Script { args }
        };

        Ok(CheckDefinition {
            id,
            name,
            service_id,
            notes,
            status,
            kind,
            interval,
            timeout,
            deregister_critical_service_after,
            success_before_passing,
            failures_before_critical,
            failures_before_warning,
            output_max_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<CheckDefinition, CheckDefinitionError> {
        CheckDefinition::from_json(&value, None, None)
    }

    #[test]
    fn pascal_case_http_check() {
        let def = parse(json!({
            "ID": "web-check", "Name": "Web", "ServiceID": "web-1", "Notes": "the front",
            "Status": "passing", "HTTP": "https://127.0.0.1:8443/health", "Method": "POST",
            "Header": {"X-A": ["1", "2"]}, "Body": "{}", "TLSSkipVerify": true,
            "TLSServerName": "web.internal", "Interval": "10s", "Timeout": "1.5s",
            "DeregisterCriticalServiceAfter": "90m", "SuccessBeforePassing": 2,
            "FailuresBeforeCritical": 3, "OutputMaxSize": 100, "DisableRedirects": true
        }))
        .unwrap();
        assert_eq!(def.id, "web-check");
        assert_eq!(def.name, "Web");
        assert_eq!(def.service_id.as_deref(), Some("web-1"));
        assert_eq!(def.notes, "the front");
        assert_eq!(def.status, Some(CheckStatus::Passing));
        assert_eq!(def.interval, Some(Duration::from_secs(10)));
        assert_eq!(def.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            def.deregister_critical_service_after,
            Some(Duration::from_secs(5400))
        );
        assert_eq!((def.success_before_passing, def.failures_before_critical), (2, 3));
        assert_eq!(def.output_limit(4096), 100);
        assert_eq!(
            def.kind,
            CheckKind::Http {
                url: "https://127.0.0.1:8443/health".into(),
                method: "POST".into(),
                header: BTreeMap::from([("X-A".to_owned(), vec!["1".to_owned(), "2".to_owned()])]),
                body: "{}".into(),
                tls_skip_verify: true,
                tls_server_name: "web.internal".into(),
                disable_redirects: true,
            }
        );
    }

    #[test]
    fn snake_case_config_file_check() {
        let def = parse(json!({
            "id": "mem", "name": "Memory", "args": ["/usr/local/bin/check_mem", "-limit", "256MB"],
            "interval": "30s", "timeout": "5s", "service_id": "db",
            "deregister_critical_service_after": "1m", "success_before_passing": 2,
            "failures_before_warning": 1, "failures_before_critical": 4, "output_max_size": 10000
        }))
        .unwrap();
        assert_eq!(def.id, "mem");
        assert_eq!(def.service_id.as_deref(), Some("db"));
        assert_eq!(
            def.kind,
            CheckKind::Script {
                args: vec!["/usr/local/bin/check_mem".into(), "-limit".into(), "256MB".into()]
            }
        );
        assert_eq!(
            def.deregister_critical_service_after,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            (
                def.success_before_passing,
                def.failures_before_warning,
                def.failures_before_critical
            ),
            (2, 1, 4)
        );
        // A check cannot raise the agent's limit.
        assert_eq!(def.output_limit(4096), 4096);

        let spellings = parse(json!({
            "CheckID": "x", "name": "X", "script_args": ["true"], "Interval": 5_000_000_000u64,
            "tls_skip_verify": true, "grpc_use_tls": true
        }))
        .unwrap();
        assert_eq!(spellings.id, "x");
        assert_eq!(spellings.interval, Some(Duration::from_secs(5)));
        assert_eq!(
            spellings.kind,
            CheckKind::Script {
                args: vec!["true".into()]
            }
        );
    }

    #[test]
    fn other_kinds_and_defaults() {
        let ttl = parse(json!({"Name": "heartbeat", "TTL": "15s"})).unwrap();
        assert_eq!(ttl.id, "heartbeat");
        assert_eq!(
            ttl.kind,
            CheckKind::Ttl {
                ttl: Duration::from_secs(15)
            }
        );
        assert_eq!((ttl.interval, ttl.timeout), (None, None));
        assert_eq!(ttl.status, None);
        assert_eq!(ttl.service_id, None);

        let tcp = parse(json!({"Name": "ssh", "TCP": "127.0.0.1:22", "Interval": "10s"})).unwrap();
        assert_eq!(
            tcp.kind,
            CheckKind::Tcp {
                address: "127.0.0.1:22".into()
            }
        );
        let udp = parse(json!({"Name": "dns", "UDP": "127.0.0.1:53", "Interval": "10s"})).unwrap();
        assert_eq!(
            udp.kind,
            CheckKind::Udp {
                address: "127.0.0.1:53".into()
            }
        );
        let grpc = parse(json!({
            "Name": "g", "GRPC": "127.0.0.1:9090/db", "GRPCUseTLS": true, "Interval": "10s",
            "HTTP": "http://ignored"
        }))
        .unwrap();
        // gRPC comes first in Consul's order.
        assert!(matches!(grpc.kind, CheckKind::Grpc { use_tls: true, .. }));
        let alias = parse(json!({"Name": "a", "AliasService": "web"})).unwrap();
        assert_eq!(
            alias.kind,
            CheckKind::Alias {
                node: None,
                service_id: Some("web".into())
            }
        );
        let alias = parse(json!({"name": "a", "alias_node": "n2"})).unwrap();
        assert_eq!(
            alias.kind,
            CheckKind::Alias {
                node: Some("n2".into()),
                service_id: None
            }
        );
    }

    #[test]
    fn service_checks_take_consuls_defaults() {
        let one = json!({"TTL": "10s", "ServiceID": "ignored"});
        let def = CheckDefinition::from_json(&one, Some(("web-1", "web")), None).unwrap();
        assert_eq!(def.id, "service:web-1");
        assert_eq!(def.name, "Service 'web' check");
        assert_eq!(def.service_id.as_deref(), Some("web-1"));
        let def = CheckDefinition::from_json(&one, Some(("web-1", "web")), Some(1)).unwrap();
        assert_eq!(def.id, "service:web-1:2");
        let named = json!({"CheckID": "own", "Name": "Own", "TTL": "10s"});
        let def = CheckDefinition::from_json(&named, Some(("web-1", "web")), Some(0)).unwrap();
        assert_eq!((def.id.as_str(), def.name.as_str()), ("own", "Own"));
        let bad = json!({"TTL": "10s", "Status": "fine"});
        assert_eq!(
            CheckDefinition::from_json(&bad, Some(("web-1", "web")), None)
                .unwrap_err()
                .to_string(),
            "Status for checks must 'passing', 'warning', 'critical'"
        );
    }

    #[test]
    fn consuls_errors() {
        let err = |v: Value| parse(v).unwrap_err().to_string();
        assert_eq!(err(json!({"TTL": "10s"})), "Missing check name");
        assert_eq!(
            err(json!({"Name": "x", "TTL": "10s", "Status": "up"})),
            "Bad check status"
        );
        assert_eq!(
            err(json!({"Name": "x", "HTTP": "http://a"})),
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        );
        assert_eq!(
            err(json!({"Name": "x", "TTL": "10s", "Interval": "10s"})),
            "Invalid check: Interval and TTL cannot both be specified"
        );
        assert_eq!(
            err(json!({"Name": "x"})),
            "Invalid check: TTL must be > 0 for TTL checks"
        );
        assert_eq!(
            err(json!({"Name": "x", "TTL": "0s"})),
            "Invalid check: TTL must be > 0 for TTL checks"
        );
        assert_eq!(
            err(json!({"Name": "x", "AliasService": "w", "TTL": "10s"})),
            "Invalid check: TTL must be not be set for Alias checks"
        );
        assert_eq!(
            err(json!({"Name": "x", "AliasService": "w", "TCP": "a:1", "Interval": "10s"})),
            "Invalid check: Interval cannot be set for Alias checks"
        );
        assert_eq!(
            err(json!({"Name": "x", "TTL": "10s", "FailuresBeforeWarning": 3, "FailuresBeforeCritical": 2})),
            "Invalid check: FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        );
        assert_eq!(
            err(json!({"Name": "x", "TTL": "ten"})),
            "Request decode failed: time: invalid duration \"ten\""
        );
        assert_eq!(
            err(json!({"Name": "x", "TTL": "10s", "Args": "true"})),
            "Request decode failed: json: cannot unmarshal string into Go struct field Args of type []string"
        );
        assert_eq!(
            err(json!({"Name": 5, "TTL": "10s"})),
            "Request decode failed: json: cannot unmarshal number into Go struct field Name of type string"
        );
        assert!(err(json!([1])).starts_with("Request decode failed: "));
    }
}
