//! Roles, identities, templated policies, JWT auth methods, binding rules and login/logout, as
//! Consul's HTTP API offers them: a role's policies apply to the tokens linking it and stop applying
//! when the role changes; identities and templates round-trip with Consul's checks; a login with a
//! JWT signed by a configured key mints a token bound by the matching rules, and only such a token
//! can log out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::jwt::Signer;
use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::config::{Config, DefaultPolicy};

const ROOT: &str = "4d1fd2b8-34a3-4b0a-9d4c-2a1f3c1c0029";
const LIMIT: Duration = Duration::from_secs(10);

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &Value) -> Reply {
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        Vec::new()
    } else {
        vec![("X-Consul-Token", token)]
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    request(http.0, method, path, &headers, body.as_bytes()).await
}

async fn ok(http: &Client, method: &str, path: &str, body: &Value) -> Value {
    let reply = call(http, method, path, ROOT, body).await;
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    reply.json()
}

fn acl_server() -> Config {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    config
}

async fn started() -> (tribune::NodeHandle, Client) {
    let node = start_leader(acl_server()).await;
    let http = Client::of(&node);
    wait_for("the initial management token", LIMIT, || async {
        call(&http, "GET", "/v1/acl/tokens", ROOT, &Value::Null)
            .await
            .status
            == 200
    })
    .await;
    (node, http)
}

async fn can_write(http: &Client, secret: &str, key: &str) -> bool {
    let reply = call(http, "PUT", &format!("/v1/kv/{key}"), secret, &json!("v")).await;
    match reply.status {
        200 => true,
        403 => false,
        other => panic!("PUT {key}: {other} {}", reply.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_s_policies_apply_to_its_tokens_until_the_role_changes() {
    let (_node, http) = started().await;
    let policy = ok(
        &http,
        "PUT",
        "/v1/acl/policy",
        &json!({"Name": "app-write", "Rules": "key_prefix \"app/\" { policy = \"write\" }"}),
    )
    .await;
    let role = ok(
        &http,
        "PUT",
        "/v1/acl/role",
        &json!({
            "Name": "app-role", "Description": "the app",
            "Policies": [{"Name": "app-write"}],
            "ServiceIdentities": [{"ServiceName": "web"}, {"ServiceName": "web", "Datacenters": ["dc1"]}],
            "NodeIdentities": [{"NodeName": "n1", "Datacenter": "dc1"}],
        }),
    )
    .await;
    let role_id = role["ID"].as_str().unwrap().to_owned();
    assert_eq!(role["Policies"][0]["ID"], policy["ID"]);
    assert_eq!(role["Policies"][0]["Name"], "app-write");
    // The same service twice collapses into one identity valid everywhere.
    assert_eq!(role["ServiceIdentities"], json!([{"ServiceName": "web"}]));
    assert_eq!(role["NodeIdentities"][0]["Datacenter"], "dc1");

    // Read by ID and by name, and listed by policy.
    let by_id = ok(&http, "GET", &format!("/v1/acl/role/{role_id}"), &Value::Null).await;
    let by_name = ok(&http, "GET", "/v1/acl/role/name/app-role", &Value::Null).await;
    assert_eq!(by_id["Hash"], by_name["Hash"]);
    let listed = ok(
        &http,
        "GET",
        &format!("/v1/acl/roles?policy={}", policy["ID"].as_str().unwrap()),
        &Value::Null,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let missing = call(&http, "GET", "/v1/acl/role/name/nope", ROOT, &Value::Null).await;
    assert_eq!(missing.status, 404);

    // Consul's refusals.
    let duplicate = call(&http, "PUT", "/v1/acl/role", ROOT, &json!({"Name": "app-role"})).await;
    assert_eq!(duplicate.status, 500);
    assert!(
        duplicate.text().contains("already exists"),
        "{}",
        duplicate.text()
    );
    let bad_identity = call(
        &http,
        "PUT",
        "/v1/acl/role",
        ROOT,
        &json!({"Name": "r2", "ServiceIdentities": [{"ServiceName": "Web Server"}]}),
    )
    .await;
    assert_eq!(bad_identity.status, 500);
    assert!(
        bad_identity.text().contains("has an invalid name"),
        "{}",
        bad_identity.text()
    );
    let unknown_policy = call(
        &http,
        "PUT",
        "/v1/acl/role",
        ROOT,
        &json!({"Name": "r3", "Policies": [{"Name": "nope"}]}),
    )
    .await;
    assert!(
        unknown_policy.text().contains("No such ACL policy"),
        "{}",
        unknown_policy.text()
    );

    // A token linking the role by name may write what the role's policy allows, nothing else.
    let token = ok(
        &http,
        "PUT",
        "/v1/acl/token",
        &json!({"Description": "via role", "Roles": [{"Name": "app-role"}]}),
    )
    .await;
    assert_eq!(token["Roles"][0]["ID"], role["ID"]);
    let secret = token["SecretID"].as_str().unwrap().to_owned();
    assert!(can_write(&http, &secret, "app/a").await);
    assert!(!can_write(&http, &secret, "other/a").await);
    let by_role = ok(
        &http,
        "GET",
        &format!("/v1/acl/tokens?role={role_id}"),
        &Value::Null,
    )
    .await;
    assert_eq!(by_role.as_array().unwrap().len(), 1);

    // The role loses the policy: the token loses the right.
    ok(
        &http,
        "PUT",
        &format!("/v1/acl/role/{role_id}"),
        &json!({"Name": "app-role", "Policies": []}),
    )
    .await;
    assert!(!can_write(&http, &secret, "app/b").await);
    // It gets it back, then the role is deleted: gone again, and the link no longer shows.
    ok(
        &http,
        "PUT",
        &format!("/v1/acl/role/{role_id}"),
        &json!({"Name": "app-role", "Policies": [{"Name": "app-write"}]}),
    )
    .await;
    assert!(can_write(&http, &secret, "app/c").await);
    assert_eq!(
        ok(&http, "DELETE", &format!("/v1/acl/role/{role_id}"), &Value::Null).await,
        json!(true)
    );
    assert!(!can_write(&http, &secret, "app/d").await);
    let accessor = token["AccessorID"].as_str().unwrap();
    let reread = ok(&http, "GET", &format!("/v1/acl/token/{accessor}"), &Value::Null).await;
    assert!(reread.get("Roles").is_none(), "{reread}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_and_templated_policies_round_trip_with_consul_s_checks() {
    let (_node, http) = started().await;
    let token = ok(
        &http,
        "PUT",
        "/v1/acl/token",
        &json!({
            "ServiceIdentities": [{"ServiceName": "api", "Datacenters": ["dc1"]}],
            "NodeIdentities": [{"NodeName": "node-1", "Datacenter": "dc1"}],
            "TemplatedPolicies": [
                {"TemplateName": "builtin/service", "TemplateVariables": {"Name": "api"}},
                {"TemplateName": "builtin/dns"},
            ],
        }),
    )
    .await;
    assert_eq!(token["ServiceIdentities"][0]["ServiceName"], "api");
    assert_eq!(token["NodeIdentities"][0]["NodeName"], "node-1");
    assert_eq!(token["TemplatedPolicies"].as_array().unwrap().len(), 2);
    assert_ne!(token["CreateTime"], "0001-01-01T00:00:00Z");

    let refused = [
        (
            json!({"NodeIdentities": [{"NodeName": "n"}]}),
            "missing the datacenter field",
        ),
        (
            json!({"TemplatedPolicies": [{"TemplateName": "builtin/nope"}]}),
            "does not exist",
        ),
        (
            json!({"TemplatedPolicies": [{"TemplateName": "builtin/service"}]}),
            "Expected: object",
        ),
        (
            json!({"Local": true, "ServiceIdentities": [{"ServiceName": "api", "Datacenters": ["dc1"]}]}),
            "cannot specify a list of datacenters on a local token",
        ),
    ];
    for (body, message) in refused {
        let reply = call(&http, "PUT", "/v1/acl/token", ROOT, &body).await;
        assert_eq!(reply.status, 500, "{body}: {}", reply.text());
        assert!(reply.text().contains(message), "{body}: {}", reply.text());
    }

    // The template catalogue, one template, and a preview.
    let templates = ok(&http, "GET", "/v1/acl/templated-policies", &Value::Null).await;
    assert!(templates.get("builtin/service").is_some() && templates.get("builtin/dns").is_some());
    let dns = ok(
        &http,
        "GET",
        "/v1/acl/templated-policy/name/builtin/dns",
        &Value::Null,
    )
    .await;
    assert_eq!(dns["TemplateName"], "builtin/dns");
    let preview = ok(
        &http,
        "POST",
        "/v1/acl/templated-policy/preview/builtin/service",
        &json!({"Name": "api"}),
    )
    .await;
    assert!(
        preview["Rules"].as_str().unwrap().contains("service \"api\""),
        "{preview}"
    );
    let unnamed = call(
        &http,
        "POST",
        "/v1/acl/templated-policy/preview/builtin/service",
        ROOT,
        &json!({"Name": ""}),
    )
    .await;
    assert_eq!(unnamed.status, 400, "{}", unnamed.text());
    let unknown = call(
        &http,
        "GET",
        "/v1/acl/templated-policy/name/builtin/nope",
        ROOT,
        &Value::Null,
    )
    .await;
    assert_eq!(unknown.status, 404);
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_login_mints_a_token_bound_by_the_matching_rules() {
    let (_node, http) = started().await;
    let signer = Signer::new();
    ok(
        &http,
        "PUT",
        "/v1/acl/policy",
        &json!({"Name": "app-write", "Rules": "key_prefix \"app/\" { policy = \"write\" }"}),
    )
    .await;
    ok(
        &http,
        "PUT",
        "/v1/acl/role",
        &json!({"Name": "app-team", "Policies": [{"Name": "app-write"}]}),
    )
    .await;
    let method = ok(
        &http,
        "PUT",
        "/v1/acl/auth-method",
        &json!({
            "Name": "ci", "Type": "jwt", "DisplayName": "CI jobs", "MaxTokenTTL": "5m",
            "Config": {
                "JWTValidationPubKeys": [signer.public_pem()],
                "BoundIssuer": "https://ci.example",
                "BoundAudiences": ["tribune"],
                "ClaimMappings": {"team": "team", "service": "service"},
            },
        }),
    )
    .await;
    assert_eq!(method["MaxTokenTTL"], "5m0s");
    let methods = ok(&http, "GET", "/v1/acl/auth-methods", &Value::Null).await;
    assert_eq!(methods[0]["Name"], "ci");
    assert!(
        methods[0].get("Config").is_none(),
        "the list shows stubs: {methods}"
    );

    // Consul's refusals for methods and rules.
    let unsupported = call(
        &http,
        "PUT",
        "/v1/acl/auth-method",
        ROOT,
        &json!({"Name": "k", "Type": "kubernetes", "Config": {}}),
    )
    .await;
    assert_eq!(unsupported.status, 500, "{}", unsupported.text());
    let orphan = call(
        &http,
        "PUT",
        "/v1/acl/binding-rule",
        ROOT,
        &json!({"AuthMethod": "nope", "BindType": "role", "BindName": "x"}),
    )
    .await;
    assert_eq!(orphan.status, 500, "{}", orphan.text());
    assert!(orphan.text().contains("does not exist"), "{}", orphan.text());

    let team_rule = ok(
        &http,
        "PUT",
        "/v1/acl/binding-rule",
        &json!({"AuthMethod": "ci", "Selector": "value.team == \"app\"", "BindType": "role", "BindName": "${value.team}-team"}),
    )
    .await;
    ok(
        &http,
        "PUT",
        "/v1/acl/binding-rule",
        &json!({"AuthMethod": "ci", "Selector": "value.service != \"\"", "BindType": "service", "BindName": "${value.service}"}),
    )
    .await;
    ok(
        &http,
        "PUT",
        "/v1/acl/binding-rule",
        &json!({
            "AuthMethod": "ci", "Selector": "value.team == \"app\"", "BindType": "templated-policy",
            "BindName": "builtin/service", "BindVars": {"Name": "${value.service}"},
        }),
    )
    .await;
    let rules = ok(&http, "GET", "/v1/acl/binding-rules?authmethod=ci", &Value::Null).await;
    assert_eq!(rules.as_array().unwrap().len(), 3, "{rules}");
    assert_eq!(rules[0]["ID"], team_rule["ID"]);

    let claims = |team: &str, service: &str| {
        json!({
            "iss": "https://ci.example", "aud": "tribune", "iat": unix_now(), "exp": unix_now() + 600,
            "team": team, "service": service,
        })
    };
    let login = |jwt: String| {
        let http = &http;
        async move {
            call(
                http,
                "POST",
                "/v1/acl/login",
                "",
                &json!({"AuthMethod": "ci", "BearerToken": jwt, "Meta": {"job": "42"}}),
            )
            .await
        }
    };

    let reply = login(signer.jwt(&claims("app", "web"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = reply.json();
    assert_eq!(token["AuthMethod"], "ci");
    assert_eq!(token["Local"], true);
    assert_eq!(token["Roles"][0]["Name"], "app-team");
    assert_eq!(token["ServiceIdentities"][0]["ServiceName"], "web", "{token}");
    assert_eq!(
        token["TemplatedPolicies"],
        json!([{"TemplateName": "builtin/service", "TemplateVariables": {"name": "web"}}]),
        "{token}"
    );
    assert_eq!(token["Description"], "token created via login: {\"job\":\"42\"}");
    assert!(
        token["ExpirationTime"].is_string(),
        "MaxTokenTTL bounds the token: {token}"
    );
    let secret = token["SecretID"].as_str().unwrap().to_owned();
    assert!(can_write(&http, &secret, "app/from-ci").await);
    assert!(!can_write(&http, &secret, "other/from-ci").await);
    let minted = ok(&http, "GET", "/v1/acl/tokens?authmethod=ci", &Value::Null).await;
    assert_eq!(minted.as_array().unwrap().len(), 1);

    // Another team binds only the service identity; nothing at all is a refusal.
    let other = login(signer.jwt(&claims("ops", "db"))).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert!(other.json().get("Roles").is_none());
    let nothing = login(signer.jwt(&claims("ops", ""))).await;
    assert_eq!(
        (nothing.status, nothing.text().trim()),
        (403, "Permission denied")
    );

    // A JWT signed by another key, from another issuer or expired is not accepted.
    let stranger = Signer::new().jwt(&claims("app", "web"));
    assert_eq!(login(stranger).await.status, 500);
    let mut wrong_issuer = claims("app", "web");
    wrong_issuer["iss"] = json!("https://elsewhere");
    assert_eq!(login(signer.jwt(&wrong_issuer)).await.status, 500);
    let mut expired = claims("app", "web");
    expired["exp"] = json!(unix_now() - 3600);
    expired["iat"] = json!(unix_now() - 7200);
    let expired = login(signer.jwt(&expired)).await;
    assert!(expired.text().contains("expired"), "{}", expired.text());

    // Only a login's token logs out, and then it is gone.
    let root_out = call(&http, "POST", "/v1/acl/logout", ROOT, &Value::Null).await;
    assert_eq!(root_out.status, 403);
    let out = call(&http, "POST", "/v1/acl/logout", &secret, &Value::Null).await;
    assert_eq!(out.status, 200, "{}", out.text());
    let after = call(&http, "GET", "/v1/acl/token/self", &secret, &Value::Null).await;
    assert_eq!(after.status, 403);
    let anonymous_out = call(&http, "POST", "/v1/acl/logout", "", &Value::Null).await;
    assert_eq!(anonymous_out.status, 401);

    // Deleting the method takes its rules and the tokens it minted with it.
    ok(&http, "DELETE", "/v1/acl/auth-method/ci", &Value::Null).await;
    assert_eq!(
        ok(&http, "GET", "/v1/acl/binding-rules", &Value::Null).await,
        json!([]),
    );
    assert_eq!(
        ok(&http, "GET", "/v1/acl/tokens?authmethod=ci", &Value::Null).await,
        json!([])
    );
}
