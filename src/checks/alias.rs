//! Alias checks: the health of another node or service instance, read with blocking queries through the
//! agent's own API (`/v1/health/node/<node>`), aggregated as Consul does: any critical check makes the
//! alias critical, else any warning makes it a warning, else it passes; an aliased service that does
//! not exist is critical.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use serde::Deserialize;

use super::{CheckSink, CheckStatus};
use crate::local_api::LocalApi;

/// Consul retries this many failed reads before it backs off.
const BACKOFF_AFTER: u32 = 3;
/// The longest wait between failed reads.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What an alias check follows.
#[derive(Debug, Clone)]
pub(super) struct AliasTarget {
    /// `AliasNode`; `None` for the agent's own node.
    pub(super) node: Option<String>,
    /// `AliasService`; empty aliases the node's own (service-less) checks.
    pub(super) service_id: String,
    /// The agent's node, read when `node` is `None`.
    pub(super) local_node: String,
    /// The alias check's own ID: on its own node it is not part of what it aggregates.
    pub(super) own_check_id: String,
}

impl AliasTarget {
    fn node_to_read(&self) -> &str {
        self.node.as_deref().unwrap_or(&self.local_node)
    }
}

/// The fields of a health check the aggregate reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(super) struct SeenCheck {
    pub(super) node: String,
    #[serde(rename = "CheckID")]
    pub(super) check_id: String,
    pub(super) name: String,
    pub(super) status: String,
    pub(super) output: String,
    #[serde(rename = "ServiceID")]
    pub(super) service_id: String,
}

/// The aggregate of the checks read, before asking whether a service without checks exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Aggregate {
    pub(super) status: CheckStatus,
    pub(super) output: String,
    /// Whether any check of the aliased service (or, for a node alias, any node check) was seen.
    pub(super) found: bool,
}

/// Consul's `processChecks`: node-level checks and the aliased service's checks count; the first
/// critical one decides, else the last warning, else all pass ("No checks found." when there are none).
pub(super) fn aggregate(checks: &[SeenCheck], target: &AliasTarget) -> Aggregate {
    let mut status = CheckStatus::Passing;
    let mut output = "No checks found.".to_owned();
    let mut found = false;
    for check in checks {
        if let Some(node) = &target.node
            && !node.eq_ignore_ascii_case(&check.node)
        {
            continue;
        }
        // Consul's local alias would count itself when it is a node-level check on its own node, and
        // stay critical for good; it is left out.
        if check.check_id == target.own_check_id && check.node.eq_ignore_ascii_case(&target.local_node) {
            continue;
        }
        let matches = check.service_id == target.service_id;
        if !check.service_id.is_empty() && !matches {
            continue;
        }
        found |= matches;
        match CheckStatus::parse(&check.status) {
            Some(bad @ (CheckStatus::Critical | CheckStatus::Warning)) => {
                status = bad;
                output = format!("Aliased check {:?} failing: {}", check.name, check.output);
                if bad == CheckStatus::Critical {
                    break;
                }
            }
            _ => {
                if status == CheckStatus::Passing {
                    output = "All checks passing.".to_owned();
                }
            }
        }
    }
    Aggregate {
        status,
        output,
        found,
    }
}

/// The result when the aliased service does not exist on the node.
pub(super) fn missing(target: &AliasTarget) -> (CheckStatus, String) {
    (
        CheckStatus::Critical,
        format!(
            "Service {} could not be found on node {}",
            target.service_id,
            target.node.as_deref().unwrap_or_default()
        ),
    )
}

/// A path segment with everything but unreserved characters percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the node has the service registered; `None` when that cannot be read (Consul then assumes
/// it does).
async fn service_exists(api: &dyn LocalApi, target: &AliasTarget) -> Option<bool> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct NodeServices {
        #[serde(default)]
        services: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    }
    let path = format!("/v1/catalog/node/{}?stale", path_segment(target.node_to_read()));
    let answer = api
        .call(Method::GET, &path, None, Bytes::new())
        .await
        .ok()?
        .ok()
        .ok()?;
    let found: Option<NodeServices> = answer.json().ok()?;
    Some(
        found
            .and_then(|n| n.services)
            .is_some_and(|services| services.contains_key(&target.service_id)),
    )
}

/// Follows the target until aborted, reporting each change of its aggregate to `sink`.
pub(super) async fn run(
    target: AliasTarget,
    api: Arc<dyn LocalApi>,
    check_id: String,
    sink: Arc<dyn CheckSink>,
) {
    let mut index: u64 = 0;
    let mut failures: u32 = 0;
    loop {
        if failures > BACKOFF_AFTER {
            let shift = (failures - BACKOFF_AFTER).min(31);
            let wait = Duration::from_secs(1u64 << shift).min(BACKOFF_MAX);
            tokio::time::sleep(wait).await;
        }
        let path = format!(
            "/v1/health/node/{}?stale&index={index}&wait=60s",
            path_segment(target.node_to_read())
        );
        let read = async {
            let answer = api.call(Method::GET, &path, None, Bytes::new()).await?.ok()?;
            let checks: Vec<SeenCheck> = answer.json()?;
            Ok::<_, crate::local_api::LocalApiError>((answer.index(), checks))
        };
        let (new_index, checks) = match read.await {
            Ok(found) => found,
            Err(e) => {
                failures = failures.saturating_add(1);
                // Consul tolerates one failed read before it reports one.
                if failures > 1 {
                    sink.update(
                        &check_id,
                        CheckStatus::Critical,
                        format!("Failure checking aliased node or service: {e}"),
                    );
                }
                continue;
            }
        };
        failures = 0;
        let new_index = new_index.unwrap_or(0).max(1);
        let unchanged = new_index == index;
        index = new_index;

        let result = aggregate(&checks, &target);
        let (status, output) = if !result.found && service_exists(api.as_ref(), &target).await == Some(false)
        {
            missing(&target)
        } else {
            (result.status, result.output)
        };
        sink.update(&check_id, status, output);
        if unchanged {
            // A read that came back at once with the same index must not turn into a busy loop.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_api::{LocalApiError, LocalResponse};
    use axum::http::{HeaderMap, StatusCode};
    use futures::future::BoxFuture;
    use parking_lot::Mutex;

    fn check(node: &str, name: &str, status: &str, service: &str) -> SeenCheck {
        SeenCheck {
            node: node.into(),
            check_id: name.into(),
            name: name.into(),
            status: status.into(),
            output: format!("{name} says {status}"),
            service_id: service.into(),
        }
    }

    fn target(node: Option<&str>, service: &str) -> AliasTarget {
        AliasTarget {
            node: node.map(str::to_owned),
            service_id: service.into(),
            local_node: "self".into(),
            own_check_id: "alias".into(),
        }
    }

    #[test]
    fn aggregate_takes_the_worst_of_node_and_service_checks() {
        let t = target(Some("n1"), "web");
        let all = vec![
            check("n1", "serf", "passing", ""),
            check("n1", "web-http", "passing", "web"),
            check("n1", "db-http", "critical", "db"),
        ];
        let a = aggregate(&all, &t);
        assert_eq!(a.status, CheckStatus::Passing);
        assert_eq!(a.output, "All checks passing.");
        assert!(a.found);

        let warn = vec![
            check("n1", "web-a", "warning", "web"),
            check("n1", "web-b", "passing", "web"),
        ];
        let a = aggregate(&warn, &t);
        assert_eq!(a.status, CheckStatus::Warning);
        assert_eq!(a.output, "Aliased check \"web-a\" failing: web-a says warning");

        let crit = vec![
            check("n1", "web-a", "warning", "web"),
            check("n1", "serf", "critical", ""),
            check("n1", "web-b", "warning", "web"),
        ];
        let a = aggregate(&crit, &t);
        assert_eq!(a.status, CheckStatus::Critical);
        assert_eq!(a.output, "Aliased check \"serf\" failing: serf says critical");

        // Another node's checks do not count.
        let other = vec![check("n2", "web", "critical", "web")];
        let a = aggregate(&other, &t);
        assert_eq!((a.status, a.found), (CheckStatus::Passing, false));
        assert_eq!(a.output, "No checks found.");
        // The alias check itself, a node check on its own node, does not count.
        let own = vec![
            check("self", "alias", "critical", ""),
            check("self", "web-http", "passing", "web"),
        ];
        let a = aggregate(&own, &target(None, "web"));
        assert_eq!(
            (a.status, a.output.as_str()),
            (CheckStatus::Passing, "All checks passing.")
        );
        assert_eq!(
            missing(&t),
            (
                CheckStatus::Critical,
                "Service web could not be found on node n1".to_owned()
            )
        );
    }

    /// A LocalApi serving fixed answers for the health and catalog reads.
    struct FakeApi {
        health: Mutex<Result<String, ()>>,
        catalog: String,
        calls: Mutex<Vec<String>>,
    }

    impl LocalApi for FakeApi {
        fn call(
            &self,
            _method: Method,
            path: &str,
            _token: Option<&str>,
            _body: Bytes,
        ) -> BoxFuture<'_, Result<LocalResponse, LocalApiError>> {
            self.calls.lock().push(path.to_owned());
            let answer = if path.starts_with("/v1/health/node/") {
                self.health.lock().clone()
            } else {
                Ok(self.catalog.clone())
            };
            Box::pin(async move {
                let body = answer.map_err(|()| LocalApiError::Stopped)?;
                let mut headers = HeaderMap::new();
                headers.insert("x-consul-index", "7".parse().unwrap());
                Ok(LocalResponse {
                    status: StatusCode::OK,
                    headers,
                    body: Bytes::from(body),
                })
            })
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(CheckStatus, String)>>);

    impl CheckSink for Recorder {
        fn update(&self, _check_id: &str, status: CheckStatus, output: String) {
            self.0.lock().push((status, output));
        }
    }

    async fn wait_for(recorder: &Recorder, count: usize) -> Vec<(CheckStatus, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let seen = recorder.0.lock().clone();
            if seen.len() >= count {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "no result: {seen:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_node_and_reports_a_missing_service() {
        let api = Arc::new(FakeApi {
            health: Mutex::new(Ok(
                r#"[{"Node":"self","CheckID":"c","Name":"web-http","Status":"critical","Output":"down","ServiceID":"web"}]"#
                    .to_owned(),
            )),
            catalog: r#"{"Node":{"Node":"self"},"Services":{"web":{}}}"#.to_owned(),
            calls: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Recorder::default());
        let task = tokio::spawn(run(
            target(None, "web"),
            api.clone(),
            "alias".into(),
            sink.clone(),
        ));
        let seen = wait_for(&sink, 1).await;
        assert_eq!(
            seen[0],
            (
                CheckStatus::Critical,
                "Aliased check \"web-http\" failing: down".to_owned()
            )
        );
        // The first read does not block; the next blocks on the index the first returned.
        wait_for(&sink, 2).await;
        let calls = api.calls.lock().clone();
        assert_eq!(calls[0], "/v1/health/node/self?stale&index=0&wait=60s");
        assert_eq!(calls[1], "/v1/health/node/self?stale&index=7&wait=60s");
        task.abort();

        // A service with no checks that is not registered either: critical.
        let api = Arc::new(FakeApi {
            health: Mutex::new(Ok("[]".to_owned())),
            catalog: r#"{"Node":{"Node":"n 1"},"Services":{}}"#.to_owned(),
            calls: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Recorder::default());
        let task = tokio::spawn(run(
            target(Some("n 1"), "db"),
            api.clone(),
            "alias".into(),
            sink.clone(),
        ));
        let seen = wait_for(&sink, 1).await;
        assert_eq!(
            seen[0],
            (
                CheckStatus::Critical,
                "Service db could not be found on node n 1".to_owned()
            )
        );
        assert!(
            api.calls
                .lock()
                .iter()
                .any(|c| c == "/v1/catalog/node/n%201?stale")
        );
        task.abort();

        // Failed reads: the second one in a row is reported.
        let api = Arc::new(FakeApi {
            health: Mutex::new(Err(())),
            catalog: String::new(),
            calls: Mutex::new(Vec::new()),
        });
        let sink = Arc::new(Recorder::default());
        let task = tokio::spawn(run(target(Some("n1"), "web"), api, "alias".into(), sink.clone()));
        let seen = wait_for(&sink, 1).await;
        assert_eq!(
            seen[0],
            (
                CheckStatus::Critical,
                "Failure checking aliased node or service: the agent's HTTP API is not running".to_owned()
            )
        );
        task.abort();
    }
}
