//! Every route of the HTTP API under `acl.default_policy = "deny"`, walked with an anonymous, a
//! read-only and a management token, against what Consul's documentation requires of each; and the
//! two holes the walk is there to keep shut (txn reads past key rules, session destroy without a
//! check).
//!
//! The expected-outcome table below must name every route of `tribune::server_routes()` (the table
//! the router is built from), so a route added without an entry here fails the test before anything
//! is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Client, Reply, pool_agent, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::config::{Config, DefaultPolicy};
use tribune::{Node, NodeHandle, client_routes, server_routes};

const ROOT: &str = "4f0e8b52-5d0b-4a57-9a36-0d3c1b7a2e11";
const LIMIT: Duration = Duration::from_secs(20);

/// What a route requires, as Consul documents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// No ACL: every caller gets the same answer (`/v1/status/*`, `/v1/catalog/datacenters`,
    /// `/v1/acl/bootstrap`).
    Public,
    /// A read permission: refused to anonymous, allowed to the read-only token.
    Read,
    /// The caller's own token (`/v1/acl/token/self`): refused to anonymous, which has no stored token.
    OwnToken,
    /// A write permission: refused to anonymous and to the read-only token.
    Write,
    /// Answered to anyone but filtered by read permission: anonymous sees nothing, the read-only
    /// token sees the items.
    Filtered,
    /// Refused as malformed before any permission matters (`PUT /v1/kv/` names no key), the same for
    /// every caller, and changes nothing.
    Invalid,
    /// Only a token a login minted (`/v1/acl/logout`): a caller without a token is told it has none,
    /// any other token is refused.
    LoginToken,
}

/// One request of the walk: the route it exercises, what the route requires, and the status an
/// allowed caller gets for this particular request.
struct Case {
    method: &'static str,
    pattern: &'static str,
    rule: Rule,
    path: String,
    body: &'static str,
    allowed_status: u16,
}

/// What the walk's requests refer to.
struct Fixtures {
    session: String,
    node: String,
    serf_addr: String,
    read_only_accessor: String,
    read_only_policy: String,
}

impl Fixtures {
    /// A request path of [`ROUTES`] with its `{placeholders}` replaced by the fixtures.
    fn fill(&self, template: &str) -> String {
        let path = [
            ("{session}", self.session.as_str()),
            ("{node}", &self.node),
            ("{serf_addr}", &self.serf_addr),
            ("{read_only_accessor}", &self.read_only_accessor),
            ("{read_only_policy}", &self.read_only_policy),
            ("{missing}", MISSING),
        ]
        .iter()
        .fold(template.to_owned(), |path, (name, value)| {
            path.replace(name, value)
        });
        assert!(
            !path.contains('{'),
            "a placeholder in {template} names no fixture"
        );
        path
    }
}

/// `allowed_status` of a request whose allowed answer depends on what ran before it.
const ANY_STATUS: u16 = 0;

/// An ID that names no token or policy.
const MISSING: &str = "00000000-0000-4000-8000-00000000beef";

const KEYRING_BODY: &str = r#"{"Key": "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="}"#;
const TXN_BODY: &str = r#"[{"KV": {"Verb": "set", "Key": "app/t", "Value": "dg=="}}]"#;
const AGENT_TOKEN_BODY: &str = r#"{"Token": ""}"#;
const SHORT_COORDINATE_BODY: &str =
    r#"{"Node": "walk-node", "Coord": {"Vec": [0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 0.0}}"#;
const NEW_TOKEN_BODY: &str = r#"{"Description": "walk", "Policies": []}"#;
const RENAME_BODY: &str = r#"{"Description": "read-only, renamed", "Policies": [{"Name": "read-only"}]}"#;
const NEW_POLICY_BODY: &str = r#"{"Name": "walk-policy", "Rules": ""}"#;
const MISSING_POLICY_BODY: &str = r#"{"Name": "walk-missing", "Rules": ""}"#;
const NEW_ROLE_BODY: &str = r#"{"Name": "walk-role"}"#;
const MISSING_ROLE_BODY: &str = r#"{"Name": "walk-missing-role"}"#;
const UNSUPPORTED_METHOD_BODY: &str = r#"{"Name": "walk", "Type": "kubernetes", "Config": {}}"#;
const ORPHAN_RULE_BODY: &str = r#"{"AuthMethod": "nope", "BindType": "role", "BindName": "x"}"#;
const PREVIEW_BODY: &str = r#"{"Name": "web"}"#;
const EMPTY_LOGIN_BODY: &str = r#"{"AuthMethod": ""}"#;
/// The `web` service the catalog and health reads find, with a check.
const WEB_BODY: &str = r#"{"Node": "web-1", "Address": "192.0.2.10",
    "Service": {"Service": "web", "Port": 80},
    "Check": {"CheckID": "web-alive", "Name": "web alive", "ServiceID": "web", "Status": "passing"}}"#;
const REGISTER_BODY: &str = r#"{"Node": "walk-node", "Address": "192.0.2.11",
    "Service": {"Service": "walk", "Port": 81}}"#;
const DEREGISTER_BODY: &str = r#"{"Node": "walk-node"}"#;
/// A service and a check registered on the agent itself (the agent's local state).
const AGENT_SERVICE_BODY: &str = r#"{"Name": "walk-new", "Port": 82}"#;
const AGENT_CHECK_BODY: &str = r#"{"Name": "walk-new-check", "TTL": "30s"}"#;
const CHECK_UPDATE_BODY: &str = r#"{"Status": "passing", "Output": "walked"}"#;

/// One route of the walk: method, route pattern, what it requires, the request path (with the
/// `{placeholders}` of [`Fixtures::fill`]), the request body, the status an allowed caller gets.
type Route = (&'static str, &'static str, Rule, &'static str, &'static str, u16);

/// The expected outcome of every route, in the order the walk sends them: reads first, then
/// writes, the ones that destroy fixtures last, and the agent's leave at the very end.
#[rustfmt::skip]
const ROUTES: &[Route] = {
    use Rule::*;
    &[
        ("GET", "/v1/status/leader", Public, "/v1/status/leader", "", 200),
        ("GET", "/v1/status/peers", Public, "/v1/status/peers", "", 200),
        ("GET", "/v1/catalog/datacenters", Public, "/v1/catalog/datacenters", "", 200),
        ("GET", "/v1/coordinate/datacenters", Public, "/v1/coordinate/datacenters", "", 200),
        ("GET", "/v1/coordinate/nodes", Filtered, "/v1/coordinate/nodes", "", 200),
        ("GET", "/v1/coordinate/node/{node}", Filtered, "/v1/coordinate/node/{node}", "", 200),
        ("GET", "/v1/kv/", Filtered, "/v1/kv/?recurse", "", 200),
        ("GET", "/v1/kv/{*key}", Read, "/v1/kv/app/k", "", 200),
        ("GET", "/v1/session/info/{id}", Filtered, "/v1/session/info/{session}", "", 200),
        ("GET", "/v1/session/node/{node}", Filtered, "/v1/session/node/{node}", "", 200),
        ("GET", "/v1/session/list", Filtered, "/v1/session/list", "", 200),
        ("GET", "/v1/agent/self", Read, "/v1/agent/self", "", 200),
        ("GET", "/v1/agent/members", Filtered, "/v1/agent/members", "", 200),
        ("GET", "/v1/agent/metrics", Read, "/v1/agent/metrics", "", 200),
        ("GET", "/v1/agent/host", Read, "/v1/agent/host", "", 200),
        // A valid level would stream until the agent stops: an unknown one is refused after the
        // permission check.
        ("GET", "/v1/agent/monitor", Read, "/v1/agent/monitor?loglevel=bogus", "", 400),
        ("GET", "/v1/catalog/nodes", Filtered, "/v1/catalog/nodes", "", 200),
        ("GET", "/v1/catalog/services", Filtered, "/v1/catalog/services", "", 200),
        ("GET", "/v1/catalog/service/{name}", Filtered, "/v1/catalog/service/web", "", 200),
        ("GET", "/v1/catalog/node/{node}", Filtered, "/v1/catalog/node/{node}", "", 200),
        ("GET", "/v1/catalog/node-services/{node}", Filtered, "/v1/catalog/node-services/{node}", "", 200),
        ("GET", "/v1/health/node/{node}", Filtered, "/v1/health/node/{node}", "", 200),
        ("GET", "/v1/health/checks/{service}", Filtered, "/v1/health/checks/web", "", 200),
        ("GET", "/v1/health/service/{service}", Filtered, "/v1/health/service/web", "", 200),
        ("GET", "/v1/health/state/{state}", Filtered, "/v1/health/state/any", "", 200),
        ("GET", "/v1/agent/services", Filtered, "/v1/agent/services", "", 200),
        ("GET", "/v1/agent/service/{id}", Read, "/v1/agent/service/walk-local", "", 200),
        ("GET", "/v1/agent/checks", Filtered, "/v1/agent/checks", "", 200),
        ("GET", "/v1/agent/health/service/id/{id}", Read, "/v1/agent/health/service/id/walk-local", "", 200),
        ("GET", "/v1/agent/health/service/name/{name}", Read, "/v1/agent/health/service/name/walk-local", "", 200),
        ("GET", "/v1/acl/token/self", OwnToken, "/v1/acl/token/self", "", 200),
        ("GET", "/v1/acl/token/{accessor}", Read, "/v1/acl/token/{read_only_accessor}", "", 200),
        ("GET", "/v1/acl/tokens", Read, "/v1/acl/tokens", "", 200),
        ("GET", "/v1/acl/policy/name/{name}", Read, "/v1/acl/policy/name/read-only", "", 200),
        ("GET", "/v1/acl/policy/{id}", Read, "/v1/acl/policy/{read_only_policy}", "", 200),
        ("GET", "/v1/acl/role/name/{name}", Read, "/v1/acl/role/name/nope", "", 404),
        ("GET", "/v1/acl/role/{id}", Read, "/v1/acl/role/{missing}", "", 404),
        ("GET", "/v1/acl/roles", Read, "/v1/acl/roles", "", 200),
        ("GET", "/v1/acl/auth-method/{name}", Read, "/v1/acl/auth-method/nope", "", 404),
        ("GET", "/v1/acl/auth-methods", Read, "/v1/acl/auth-methods", "", 200),
        ("GET", "/v1/acl/binding-rule/{id}", Read, "/v1/acl/binding-rule/{missing}", "", 404),
        ("GET", "/v1/acl/binding-rules", Read, "/v1/acl/binding-rules", "", 200),
        ("GET", "/v1/acl/templated-policies", Read, "/v1/acl/templated-policies", "", 200),
        ("GET", "/v1/acl/templated-policy/name/{*name}", Read, "/v1/acl/templated-policy/name/builtin/dns", "", 200),
        ("POST", "/v1/acl/templated-policy/preview/{*name}", Read, "/v1/acl/templated-policy/preview/builtin/service", PREVIEW_BODY, 200),
        // A login names its auth method; with none, every caller gets Consul's refusal.
        ("POST", "/v1/acl/login", Invalid, "/v1/acl/login", EMPTY_LOGIN_BODY, 500),
        ("POST", "/v1/acl/logout", LoginToken, "/v1/acl/logout", "", ANY_STATUS),
        ("GET", "/v1/acl/policies", Read, "/v1/acl/policies", "", 200),
        ("GET", "/v1/acl/replication", Public, "/v1/acl/replication", "", 200),
        ("GET", "/v1/operator/raft/configuration", Read, "/v1/operator/raft/configuration", "", 200),
        ("GET", "/v1/operator/keyring", Read, "/v1/operator/keyring", "", 500),
        ("PUT", "/v1/kv/", Invalid, "/v1/kv/", "v", 400),
        ("PUT", "/v1/kv/{*key}", Write, "/v1/kv/app/k", "v2", 200),
        ("DELETE", "/v1/kv/{*key}", Write, "/v1/kv/app/other", "", 200),
        ("PUT", "/v1/txn", Write, "/v1/txn", TXN_BODY, 200),
        ("PUT", "/v1/catalog/register", Write, "/v1/catalog/register", REGISTER_BODY, 200),
        ("PUT", "/v1/catalog/deregister", Write, "/v1/catalog/deregister", DEREGISTER_BODY, 200),
        ("PUT", "/v1/session/create", Write, "/v1/session/create", "", 200),
        ("PUT", "/v1/session/renew/{id}", Write, "/v1/session/renew/{session}", "", 200),
        ("PUT", "/v1/session/destroy/{id}", Write, "/v1/session/destroy/{session}", "", 200),
        // An agent cannot join itself: the error comes after the permission check.
        ("PUT", "/v1/agent/join/{address}", Write, "/v1/agent/join/{serf_addr}", "", 500),
        ("PUT", "/v1/agent/force-leave/{node}", Write, "/v1/agent/force-leave/nobody", "", 500),
        ("PUT", "/v1/agent/token/{name}", Write, "/v1/agent/token/agent", AGENT_TOKEN_BODY, 200),
        ("PUT", "/v1/agent/reload", Write, "/v1/agent/reload", "", 200),
        // A one-dimensional coordinate is refused after the permission check.
        ("PUT", "/v1/coordinate/update", Write, "/v1/coordinate/update", SHORT_COORDINATE_BODY, 400),
        // Open to anyone until bootstrapped; the first caller may get a token, later ones are told
        // it is no longer allowed.
        ("PUT", "/v1/acl/bootstrap", Public, "/v1/acl/bootstrap", "", ANY_STATUS),
        ("PUT", "/v1/acl/token", Write, "/v1/acl/token", NEW_TOKEN_BODY, 200),
        ("PUT", "/v1/acl/token/{accessor}", Write, "/v1/acl/token/{read_only_accessor}", RENAME_BODY, 200),
        ("PUT", "/v1/acl/token/{accessor}/clone", Write, "/v1/acl/token/{read_only_accessor}/clone", "", 200),
        ("DELETE", "/v1/acl/token/{accessor}", Write, "/v1/acl/token/{missing}", "", 200),
        ("PUT", "/v1/acl/policy", Write, "/v1/acl/policy", NEW_POLICY_BODY, 200),
        ("PUT", "/v1/acl/policy/{id}", Write, "/v1/acl/policy/{missing}", MISSING_POLICY_BODY, 200),
        ("DELETE", "/v1/acl/policy/{id}", Write, "/v1/acl/policy/{missing}", "", 200),
        ("PUT", "/v1/acl/role", Write, "/v1/acl/role", NEW_ROLE_BODY, 200),
        ("PUT", "/v1/acl/role/{id}", Write, "/v1/acl/role/{missing}", MISSING_ROLE_BODY, 500),
        ("DELETE", "/v1/acl/role/{id}", Write, "/v1/acl/role/{missing}", "", 200),
        // Checked after the permission: a kubernetes method is not supported here.
        ("PUT", "/v1/acl/auth-method", Write, "/v1/acl/auth-method", UNSUPPORTED_METHOD_BODY, 500),
        ("PUT", "/v1/acl/auth-method/{name}", Write, "/v1/acl/auth-method/walk", UNSUPPORTED_METHOD_BODY, 500),
        ("DELETE", "/v1/acl/auth-method/{name}", Write, "/v1/acl/auth-method/nope", "", 200),
        ("PUT", "/v1/acl/binding-rule", Write, "/v1/acl/binding-rule", ORPHAN_RULE_BODY, 500),
        ("PUT", "/v1/acl/binding-rule/{id}", Write, "/v1/acl/binding-rule/{missing}", ORPHAN_RULE_BODY, 500),
        ("DELETE", "/v1/acl/binding-rule/{id}", Write, "/v1/acl/binding-rule/{missing}", "", 200),
        ("DELETE", "/v1/operator/raft/peer", Write, "/v1/operator/raft/peer?id=424242", "", 500),
        ("POST", "/v1/operator/keyring", Write, "/v1/operator/keyring", KEYRING_BODY, 500),
        ("PUT", "/v1/operator/keyring", Write, "/v1/operator/keyring", KEYRING_BODY, 500),
        ("DELETE", "/v1/operator/keyring", Write, "/v1/operator/keyring", KEYRING_BODY, 500),
        ("PUT", "/v1/event/fire/{name}", Write, "/v1/event/fire/deploy", "", 200),
        ("PUT", "/v1/agent/service/register", Write, "/v1/agent/service/register", AGENT_SERVICE_BODY, 200),
        ("PUT", "/v1/agent/check/register", Write, "/v1/agent/check/register", AGENT_CHECK_BODY, 200),
        ("PUT", "/v1/agent/check/pass/{id}", Write, "/v1/agent/check/pass/walk-ttl", "", 200),
        ("PUT", "/v1/agent/check/warn/{id}", Write, "/v1/agent/check/warn/walk-ttl", "", 200),
        ("PUT", "/v1/agent/check/fail/{id}", Write, "/v1/agent/check/fail/walk-ttl", "", 200),
        ("PUT", "/v1/agent/check/update/{id}", Write, "/v1/agent/check/update/walk-ttl", CHECK_UPDATE_BODY, 200),
        ("PUT", "/v1/agent/service/maintenance/{id}", Write, "/v1/agent/service/maintenance/walk-local?enable=false", "", 200),
        ("PUT", "/v1/agent/maintenance", Write, "/v1/agent/maintenance?enable=false", "", 200),
        // Consul answers 404 for an unknown ID before it checks the token: these remove fixtures
        // that exist for every caller (the management walk comes last).
        ("PUT", "/v1/agent/check/deregister/{id}", Write, "/v1/agent/check/deregister/walk-ttl", "", 200),
        ("PUT", "/v1/agent/service/deregister/{id}", Write, "/v1/agent/service/deregister/walk-local", "", 200),
        ("GET", "/v1/event/list", Filtered, "/v1/event/list", "", 200),
        ("GET", "/v1/snapshot", Write, "/v1/snapshot", "", 200),
        ("PUT", "/v1/snapshot", Write, "/v1/snapshot", "not an archive", 400),
        ("DELETE", "/v1/kv/", Write, "/v1/kv/?recurse", "", 200),
        ("PUT", "/v1/agent/leave", Write, "/v1/agent/leave", "", 200),
    ]
};

/// The walk's requests: [`ROUTES`] with the fixtures filled in.
fn cases(f: &Fixtures) -> Vec<Case> {
    ROUTES
        .iter()
        .map(|&(method, pattern, rule, path, body, allowed_status)| Case {
            method,
            pattern,
            rule,
            path: f.fill(path),
            body,
            allowed_status,
        })
        .collect()
}

/// The routes a client agent serves itself. A client agent refuses `acl.enabled` at start, so these
/// never run where ACLs are expected of it; everything else it hands to a server.
const CLIENT_LOCAL: &[(&str, &str)] = &[
    ("GET", "/v1/agent/self"),
    ("GET", "/v1/agent/members"),
    ("PUT", "/v1/agent/join/{address}"),
    ("PUT", "/v1/agent/leave"),
    ("PUT", "/v1/agent/force-leave/{node}"),
    ("GET", "/v1/operator/keyring"),
    ("POST", "/v1/operator/keyring"),
    ("PUT", "/v1/operator/keyring"),
    ("DELETE", "/v1/operator/keyring"),
    ("PUT", "/v1/event/fire/{name}"),
    ("GET", "/v1/event/list"),
    ("GET", "/v1/agent/services"),
    ("GET", "/v1/agent/service/{id}"),
    ("GET", "/v1/agent/checks"),
    ("GET", "/v1/agent/health/service/id/{id}"),
    ("GET", "/v1/agent/health/service/name/{name}"),
    ("PUT", "/v1/agent/service/register"),
    ("PUT", "/v1/agent/check/register"),
    ("PUT", "/v1/agent/check/pass/{id}"),
    ("PUT", "/v1/agent/check/warn/{id}"),
    ("PUT", "/v1/agent/check/fail/{id}"),
    ("PUT", "/v1/agent/check/update/{id}"),
    ("PUT", "/v1/agent/service/maintenance/{id}"),
    ("PUT", "/v1/agent/maintenance"),
    ("PUT", "/v1/agent/check/deregister/{id}"),
    ("PUT", "/v1/agent/service/deregister/{id}"),
    ("PUT", "/v1/agent/reload"),
    ("GET", "/v1/agent/monitor"),
    ("GET", "/v1/agent/host"),
    ("GET", "/v1/agent/metrics"),
];

async fn call(http: &Client, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Consul-Token", t)).into_iter().collect();
    request(http.0, method, path, &headers, body.as_bytes()).await
}

/// Whether the answer is an ACL refusal: Consul's 403 texts, or a transaction failed by a
/// "Permission denied" operation.
fn denied(reply: &Reply) -> bool {
    let text = reply.text();
    match reply.status {
        403 => text == "Permission denied" || text == "ACL not found",
        409 => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["Errors"].as_array().cloned())
            .is_some_and(|errors| errors.iter().any(|e| e["What"] == "Permission denied")),
        _ => false,
    }
}

/// Whether a filtered answer shows nothing: an empty list or object, `null` (a catalog node the
/// caller may not see), or Consul's 404 for an empty KV tree.
fn shows_nothing(reply: &Reply) -> bool {
    reply.status == 404
        || serde_json::from_slice::<Value>(&reply.body)
            .is_ok_and(|v| v == json!([]) || v == json!({}) || v.is_null())
}

fn shows_something(reply: &Reply) -> bool {
    reply.status == 200
        && serde_json::from_slice::<Value>(&reply.body).is_ok_and(|v| {
            v.as_array().is_some_and(|a| !a.is_empty()) || v.as_object().is_some_and(|o| !o.is_empty())
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    ReadOnly,
    Management,
}

/// Checks one answer against the rule; `None` when it matches, else what went wrong.
fn check(case: &Case, caller: Caller, reply: &Reply) -> Option<String> {
    if case.rule == Rule::LoginToken {
        // None of the walk's callers holds a token a login minted.
        let refused = match caller {
            Caller::Anonymous => reply.status == 401,
            Caller::ReadOnly | Caller::Management => denied(reply),
        };
        return (!refused).then(|| {
            format!(
                "{caller:?} {} {}: got {} {:?}; expected a refusal",
                case.method,
                case.path,
                reply.status,
                reply.text()
            )
        });
    }
    let allowed = match (case.rule, caller) {
        (_, Caller::Management) | (Rule::Public | Rule::Invalid | Rule::Filtered, _) => true,
        (Rule::Read | Rule::OwnToken, Caller::ReadOnly) => true,
        (Rule::Read | Rule::OwnToken | Rule::Write | Rule::LoginToken, _) => false,
    };
    let what = format!(
        "{caller:?} {} {} ({:?}): got {} {:?}",
        case.method,
        case.path,
        case.rule,
        reply.status,
        reply.text().chars().take(120).collect::<String>()
    );
    if !allowed {
        return (!denied(reply)).then(|| format!("{what}; expected an ACL refusal"));
    }
    if denied(reply) {
        return Some(format!("{what}; expected to be allowed"));
    }
    let filtered_empty = case.rule == Rule::Filtered && caller == Caller::Anonymous;
    if case.allowed_status != ANY_STATUS && !filtered_empty && reply.status != case.allowed_status {
        return Some(format!("{what}; expected status {}", case.allowed_status));
    }
    if case.rule == Rule::Filtered {
        let ok = match caller {
            Caller::Anonymous => shows_nothing(reply),
            Caller::ReadOnly => shows_something(reply),
            Caller::Management => true,
        };
        if !ok {
            return Some(format!("{what}; the filter by read permission is wrong"));
        }
    }
    None
}

fn acl_server() -> Config {
    let mut config = pool_agent("s1", true, &[]);
    config.bootstrap_expect = 1;
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    // The agent's own service (with a passing check) and a TTL node check, as a configuration
    // file would declare them, for the walk's agent service and check routes.
    config.local.services.push(json!({
        "id": "walk-local", "name": "walk-local", "port": 83,
        "check": {"id": "walk-local-alive", "name": "alive", "ttl": "1h", "status": "passing"},
    }));
    config
        .local
        .checks
        .push(json!({"id": "walk-ttl", "name": "walk ttl", "ttl": "1h", "status": "passing"}));
    config
}

/// A read-only token: read on every labelled resource and on acl, operator and keyring.
async fn read_only_token(http: &Client) -> (String, String, String) {
    let rules = [
        "key_prefix \"\" { policy = \"read\" }",
        "session_prefix \"\" { policy = \"read\" }",
        "node_prefix \"\" { policy = \"read\" }",
        "agent_prefix \"\" { policy = \"read\" }",
        "service_prefix \"\" { policy = \"read\" }",
        "event_prefix \"\" { policy = \"read\" }",
        "query_prefix \"\" { policy = \"read\" }",
        "acl = \"read\"",
        "operator = \"read\"",
        "keyring = \"read\"",
    ]
    .join("\n");
    token_with_policy(http, "read-only", &rules).await
}

/// Creates policy `name` with `rules` and a token (described as `name`) holding it, with the
/// management token; returns the token's secret and accessor and the policy's ID.
async fn token_with_policy(http: &Client, name: &str, rules: &str) -> (String, String, String) {
    let policy = call(
        http,
        "PUT",
        "/v1/acl/policy",
        Some(ROOT),
        &json!({"Name": name, "Rules": rules}).to_string(),
    )
    .await;
    assert_eq!(policy.status, 200, "{}", policy.text());
    let policy_id = policy.json()["ID"].as_str().unwrap().to_owned();
    let token = call(
        http,
        "PUT",
        "/v1/acl/token",
        Some(ROOT),
        &json!({"Description": name, "Policies": [{"Name": name}]}).to_string(),
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let secret = token.json()["SecretID"].as_str().unwrap().to_owned();
    let accessor = token.json()["AccessorID"].as_str().unwrap().to_owned();
    (secret, accessor, policy_id)
}

async fn start_acl_server() -> (NodeHandle, Client) {
    let node = start_leader(acl_server()).await;
    let http = Client::of(&node);
    wait_for("the initial management token", LIMIT, || async {
        call(&http, "GET", "/v1/acl/token/self", Some(ROOT), "")
            .await
            .status
            == 200
    })
    .await;
    (node, http)
}

#[test]
fn the_expected_outcome_table_names_every_route() {
    let fixtures = Fixtures {
        session: "s".into(),
        node: "n".into(),
        serf_addr: "a".into(),
        read_only_accessor: "t".into(),
        read_only_policy: "p".into(),
    };
    let served: BTreeSet<(&str, &str)> = server_routes().iter().map(|r| (r.method, r.path)).collect();
    let cases = cases(&fixtures);
    let listed: BTreeSet<(&str, &str)> = cases.iter().map(|c| (c.method, c.pattern)).collect();
    assert_eq!(listed.len(), cases.len(), "a route is listed twice");
    let unlisted: Vec<_> = served.difference(&listed).collect();
    assert!(
        unlisted.is_empty(),
        "routes without an expected ACL outcome (add them to cases()): {unlisted:?}"
    );
    let stale: Vec<_> = listed.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "listed routes the router does not serve: {stale:?}"
    );

    let client_served: BTreeSet<(&str, &str)> = client_routes().iter().map(|r| (r.method, r.path)).collect();
    let client_listed: BTreeSet<(&str, &str)> = CLIENT_LOCAL.iter().copied().collect();
    assert_eq!(
        client_served, client_listed,
        "a client agent's own routes changed: decide how each checks ACLs, then update CLIENT_LOCAL"
    );
}

/// Creates on `server` what the walk refers to (a read-only token, the key `app/k`, a session) and
/// returns the read-only token's secret with the fixtures.
async fn walk_fixtures(server: &NodeHandle, http: &Client) -> (String, Fixtures) {
    let (read_only, read_only_accessor, read_only_policy) = read_only_token(http).await;
    assert_eq!(
        call(http, "PUT", "/v1/kv/app/k", Some(ROOT), "v").await.text(),
        "true"
    );
    // A user event in the agent's ring, for the filtered event list.
    assert_eq!(
        call(http, "PUT", "/v1/event/fire/fixture", Some(ROOT), "")
            .await
            .status,
        200
    );
    wait_for("the fixture event listed", LIMIT, || async {
        let listed = call(http, "GET", "/v1/event/list", Some(ROOT), "").await.json();
        listed.as_array().is_some_and(|events| !events.is_empty())
    })
    .await;
    let me = call(http, "GET", "/v1/agent/self", Some(ROOT), "").await.json();
    let node = me["Config"]["NodeName"].as_str().unwrap().to_owned();
    assert_eq!(
        call(http, "PUT", "/v1/catalog/register", Some(ROOT), WEB_BODY)
            .await
            .text(),
        "true"
    );
    // The leader registers its own node (with its serfHealth check) shortly after it is elected.
    wait_for("the server's node in the catalog", LIMIT, || async {
        let path = format!("/v1/health/node/{node}");
        shows_something(&call(http, "GET", &path, Some(ROOT), "").await)
    })
    .await;
    let session = call(http, "PUT", "/v1/session/create", Some(ROOT), "")
        .await
        .json()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    let fixtures = Fixtures {
        session,
        node,
        serf_addr: server.serf_lan_addr().unwrap().to_string(),
        read_only_accessor,
        read_only_policy,
    };
    (read_only, fixtures)
}

/// The walk's callers with their tokens, the most restricted first.
fn callers(read_only: &str) -> [(Caller, Option<&str>); 3] {
    [
        (Caller::Anonymous, None),
        (Caller::ReadOnly, Some(read_only)),
        (Caller::Management, Some(ROOT)),
    ]
}

/// Sends every case as every caller through `http`, one caller after the other, and fails the test
/// with every answer that breaks its case's rule.
async fn walk(http: &Client, cases: &[Case], callers: &[(Caller, Option<&str>)]) {
    let mut failures = Vec::new();
    for &(caller, token) in callers {
        for case in cases {
            let reply = call(http, case.method, &case.path, token, case.body).await;
            failures.extend(check(case, caller, &reply));
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_token_as_consul_requires() {
    let (node, http) = start_acl_server().await;
    let (read_only, fixtures) = walk_fixtures(&node, &http).await;
    walk(&http, &cases(&fixtures), &callers(&read_only)).await;
    node.stopped().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_agent_hands_every_other_route_to_a_server_that_checks_it() {
    let (server, http) = start_acl_server().await;
    let (read_only, fixtures) = walk_fixtures(&server, &http).await;

    // A client agent cannot check ACLs on its own routes, so it refuses to start with them.
    let mut with_acls = pool_agent("c-acl", false, &[&server]);
    with_acls.acl.enabled = true;
    assert!(Node::start(with_acls).await.is_err());

    let client_node = Node::start(pool_agent("c1", false, &[&server])).await.unwrap();
    let client = Client::of(&client_node);
    wait_for("the client to reach the server", LIMIT, || async {
        call(&client, "GET", "/v1/kv/app/k", Some(ROOT), "").await.status == 200
    })
    .await;
    let forwarded: Vec<Case> = cases(&fixtures)
        .into_iter()
        .filter(|case| !CLIENT_LOCAL.contains(&(case.method, case.pattern)))
        .collect();
    // Only the callers whose writes are refused: the walk through the client changes nothing.
    let refused: Vec<_> = callers(&read_only)
        .into_iter()
        .filter(|(caller, _)| *caller != Caller::Management)
        .collect();
    walk(&client, &forwarded, &refused).await;
    client_node.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_reads_follow_key_rules_and_denied_ops_fail_the_transaction() {
    let (node, http) = start_acl_server().await;
    for key in ["app/a", "app/b", "secret/s"] {
        assert_eq!(
            call(&http, "PUT", &format!("/v1/kv/{key}"), Some(ROOT), "v")
                .await
                .text(),
            "true"
        );
    }
    let rules = "key_prefix \"\" { policy = \"read\" }\nkey_prefix \"secret/\" { policy = \"deny\" }";
    let (reader, _, _) = token_with_policy(&http, "no-secrets", rules).await;
    let txn = |ops: Value| {
        let reader = reader.clone();
        async move { call(&http, "PUT", "/v1/txn", Some(&reader), &ops.to_string()).await }
    };
    let keys = |reply: &Reply| -> Vec<String> {
        reply.json()["Results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["KV"]["Key"].as_str().unwrap().to_owned())
            .collect()
    };

    // get-tree over the whole store shows only what the token may read.
    let tree = txn(json!([{"KV": {"Verb": "get-tree", "Key": ""}}])).await;
    assert_eq!(tree.status, 200, "{}", tree.text());
    assert_eq!(keys(&tree), ["app/a", "app/b"]);
    // A get of an unreadable key is filtered from the results, as Consul's.
    let get = txn(json!([
        {"KV": {"Verb": "get", "Key": "app/a"}},
        {"KV": {"Verb": "get", "Key": "secret/s"}},
    ]))
    .await;
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(keys(&get), ["app/a"]);

    // A check on an unreadable key would reveal it: the transaction fails with "Permission denied"
    // at that operation, a 409 as any failed transaction.
    for verb in ["check-index", "check-session"] {
        let checked = txn(json!([
            {"KV": {"Verb": "get", "Key": "app/a"}},
            {"KV": {"Verb": verb, "Key": "secret/s", "Index": 1, "Session": "x"}},
        ]))
        .await;
        assert_eq!(checked.status, 409, "{verb}: {}", checked.text());
        assert_eq!(
            checked.json()["Errors"],
            json!([{"OpIndex": 1, "What": "Permission denied"}]),
            "{verb}"
        );
    }
    // A write the token may not make fails the transaction the same way, and applies nothing.
    let write = txn(json!([{"KV": {"Verb": "set", "Key": "app/new", "Value": "dg=="}}])).await;
    assert_eq!(write.status, 409, "{}", write.text());
    assert_eq!(write.json()["Errors"][0]["What"], "Permission denied");
    assert_eq!(
        call(&http, "GET", "/v1/kv/app/new", Some(ROOT), "").await.status,
        404
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroying_an_unknown_session_needs_session_write() {
    let (node, http) = start_acl_server().await;
    let (read_only, _, _) = read_only_token(&http).await;
    let unknown = "/v1/session/destroy/00000000-0000-4000-8000-000000000042";
    for token in [None, Some(read_only.as_str())] {
        let reply = call(&http, "PUT", unknown, token, "").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (403, "Permission denied"),
            "token {token:?}"
        );
    }
    // A token that may destroy any session gets Consul's answer for an unknown ID.
    let reply = call(&http, "PUT", unknown, Some(ROOT), "").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "true"));
    node.shutdown().await;
}
