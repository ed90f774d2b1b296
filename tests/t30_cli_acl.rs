//! The ACL command line for roles, identities, templated policies, auth methods, binding rules and
//! login/logout, driven end to end against an in-process server: what each verb prints, and that
//! what it did is what the server now holds (read back over HTTP).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::jwt::Signer;
use common::process::binary;
use common::{Client, Reply, request, start_leader, wait_for};
use serde_json::{Value, json};
use tribune::config::{Config, DefaultPolicy};

const ROOT: &str = "4d1fd2b8-34a3-4b0a-9d4c-2a1f3c1c0030";
const LIMIT: Duration = Duration::from_secs(10);

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &str) -> Reply {
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        Vec::new()
    } else {
        vec![("X-Consul-Token", token)]
    };
    request(http.0, method, path, &headers, body.as_bytes()).await
}

async fn http_json(http: &Client, path: &str) -> Value {
    let reply = call(http, "GET", path, ROOT, "").await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    reply.json()
}

async fn can_write(http: &Client, secret: &str, key: &str) -> bool {
    let reply = call(http, "PUT", &format!("/v1/kv/{key}"), secret, "v").await;
    match reply.status {
        200 => true,
        403 => false,
        other => panic!("PUT {key}: {other} {}", reply.text()),
    }
}

fn acl_server() -> Config {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    config
}

async fn started() -> (tribune::NodeHandle, Client, SocketAddr) {
    let node = start_leader(acl_server()).await;
    let http = Client::of(&node);
    let addr = node.http_addr().unwrap();
    wait_for("the initial management token", LIMIT, || async {
        call(&http, "GET", "/v1/acl/tokens", ROOT, "").await.status == 200
    })
    .await;
    (node, http, addr)
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the CLI with the management token in CONSUL_HTTP_TOKEN unless `env` sets it otherwise.
async fn cli_env(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = binary();
    command
        .arg(format!("-http-addr={addr}"))
        .args(args)
        .env("CONSUL_HTTP_TOKEN", ROOT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output().expect("run tribune"))
        .await
        .unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn cli(addr: SocketAddr, args: &[&str]) -> Ran {
    cli_env(addr, args, &[]).await
}

fn ok(ran: Ran) -> String {
    assert_eq!(
        ran.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

/// The stderr of a run that must fail.
fn failed(ran: Ran) -> String {
    assert_ne!(ran.code, Some(0), "expected a failure; stdout: {}", ran.stdout);
    ran.stderr
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_token_identities_and_templates_on_the_command_line() {
    let (node, http, addr) = started().await;
    let p1 = ok(cli(addr, &["acl", "policy", "create", "-name", "p1"]).await);
    let p1_id = field(&p1, "ID:").to_owned();
    ok(cli(
        addr,
        &[
            "acl",
            "policy",
            "create",
            "-name",
            "p2",
            "-rules",
            "key_prefix \"app/\" { policy = \"write\" }",
        ],
    )
    .await);

    // Policy update: merged by default (the description given, the rules kept), renamed with -id.
    let updated = ok(cli(
        addr,
        &[
            "acl",
            "policy",
            "update",
            "-name",
            "p2",
            "-description",
            "app writers",
        ],
    )
    .await);
    assert!(updated.contains("Description:  app writers"), "{updated}");
    assert!(updated.contains("key_prefix \"app/\""), "{updated}");
    let renamed = ok(cli(
        addr,
        &[
            "acl",
            "policy",
            "update",
            "-id",
            &p1_id[..8],
            "-name",
            "p1-renamed",
        ],
    )
    .await);
    assert!(renamed.contains("Name:         p1-renamed"), "{renamed}");
    ok(cli(
        addr,
        &[
            "acl",
            "policy",
            "update",
            "-id",
            &p1_id,
            "-name",
            "p1",
            "-no-merge",
        ],
    )
    .await);

    // Create: every kind of link and identity, printed as Consul prints a role.
    let created = ok(cli(
        addr,
        &[
            "acl",
            "role",
            "create",
            "-name",
            "app-role",
            "-description",
            "the app",
            "-policy-id",
            &p1_id[..8],
            "-service-identity",
            "web:dc1",
            "-node-identity",
            "n1:dc1",
            "-templated-policy",
            "builtin/service",
            "-var",
            "name:api",
        ],
    )
    .await);
    let role_id = field(&created, "ID:").to_owned();
    assert_eq!(field(&created, "Name:"), "app-role");
    assert_eq!(field(&created, "Description:"), "the app");
    assert!(
        created.contains(&format!("Policies:\n   {p1_id} - p1\n")),
        "{created}"
    );
    assert!(
        created.contains("Service Identities:\n   web (Datacenters: dc1)\n"),
        "{created}"
    );
    assert!(
        created.contains("Node Identities:\n   n1 (Datacenter: dc1)\n"),
        "{created}"
    );
    assert!(
        created
            .contains("Templated Policies:\n   builtin/service\n      Name: api\n      Datacenters: all\n"),
        "{created}"
    );
    let stored = http_json(&http, &format!("/v1/acl/role/{role_id}")).await;
    assert_eq!(stored["Name"], "app-role");
    assert_eq!(stored["Policies"][0]["ID"], p1_id.as_str());
    assert_eq!(stored["NodeIdentities"][0]["NodeName"], "n1");
    assert_eq!(stored["TemplatedPolicies"][0]["TemplateVariables"]["name"], "api");

    // Read by ID prefix and by name; JSON output is the agent's object.
    let read = ok(cli(addr, &["acl", "role", "read", "-id", &role_id[..8]]).await);
    assert_eq!(field(&read, "ID:"), role_id);
    let as_json: Value = serde_json::from_str(&ok(cli(
        addr,
        &["acl", "role", "read", "-name", "app-role", "-format=json"],
    )
    .await))
    .unwrap();
    assert_eq!(as_json["ID"], role_id.as_str());
    assert_eq!(as_json["ServiceIdentities"][0]["Datacenters"], json!(["dc1"]));
    let with_meta = ok(cli(addr, &["acl", "role", "read", "-id", &role_id, "-meta"]).await);
    assert_eq!(
        field(&with_meta, "Modify Index:"),
        stored["ModifyIndex"].to_string()
    );
    let list = ok(cli(addr, &["acl", "role", "list"]).await);
    assert!(
        list.contains(&format!("app-role:\n   ID:           {role_id}\n")),
        "{list}"
    );
    let missing = failed(cli(addr, &["acl", "role", "read", "-id", "ffffffff"]).await);
    assert!(
        missing.contains("No such role ID with prefix: ffffffff"),
        "{missing}"
    );
    let bad_identity = failed(
        cli(
            addr,
            &["acl", "role", "create", "-name", "x", "-node-identity", "n1"],
        )
        .await,
    );
    assert!(bad_identity.contains("NODENAME:DATACENTER"), "{bad_identity}");

    // Update merges by default: p2 joins p1, the identities stay, the description changes.
    let merged = ok(cli(
        addr,
        &[
            "acl",
            "role",
            "update",
            "-id",
            &role_id[..8],
            "-policy-name",
            "p2",
            "-description",
            "new",
        ],
    )
    .await);
    assert_eq!(field(&merged, "Description:"), "new");
    assert!(
        merged.contains(" - p1\n") && merged.contains(" - p2\n"),
        "{merged}"
    );
    assert!(merged.contains("web (Datacenters: dc1)"), "{merged}");
    // -no-merge: exactly what the flags say.
    let replaced = ok(cli(
        addr,
        &[
            "acl",
            "role",
            "update",
            "-id",
            &role_id,
            "-no-merge",
            "-name",
            "app-role",
            "-policy-name",
            "p2",
        ],
    )
    .await);
    assert!(
        !replaced.contains(" - p1\n") && replaced.contains(" - p2\n"),
        "{replaced}"
    );
    let stored = http_json(&http, &format!("/v1/acl/role/{role_id}")).await;
    assert!(stored.get("ServiceIdentities").is_none(), "{stored}");
    assert_eq!(stored["Description"], "");

    // A token linking the role by name, with identities and a template of its own.
    let token = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "create",
            "-description",
            "svc",
            "-role-name",
            "app-role",
            "-service-identity",
            "api",
            "-node-identity",
            "n2:dc1",
            "-templated-policy",
            "builtin/dns",
        ],
    )
    .await);
    let accessor = field(&token, "AccessorID:").to_owned();
    let secret = field(&token, "SecretID:").to_owned();
    assert!(
        token.contains(&format!("Roles:\n   {role_id} - app-role\n")),
        "{token}"
    );
    assert!(
        token.contains("Service Identities:\n   api (Datacenters: all)\n"),
        "{token}"
    );
    assert!(
        token.contains("Node Identities:\n   n2 (Datacenter: dc1)\n"),
        "{token}"
    );
    assert!(token.contains("Templated Policies:\n   builtin/dns\n"), "{token}");
    // The role's policy is the token's: p2 writes app/.
    assert!(can_write(&http, &secret, "app/x").await);
    assert!(!can_write(&http, &secret, "other/x").await);

    // Update keeps what no flag names, appends with -append-*, replaces with the plain flags.
    let kept = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "update",
            "-id",
            &accessor[..8],
            "-description",
            "svc2",
        ],
    )
    .await);
    assert_eq!(field(&kept, "Description:"), "svc2");
    assert!(
        kept.contains(" - app-role\n") && kept.contains("api (Datacenters: all)"),
        "{kept}"
    );
    assert!(
        kept.contains("n2 (Datacenter: dc1)") && kept.contains("builtin/dns"),
        "{kept}"
    );
    let appended = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "update",
            "-id",
            &accessor,
            "-append-service-identity",
            "db:dc1",
            "-append-policy-name",
            "p1",
        ],
    )
    .await);
    assert!(
        appended.contains("   api (Datacenters: all)\n   db (Datacenters: dc1)\n"),
        "{appended}"
    );
    assert!(
        appended.contains(" - p1\n") && appended.contains(" - app-role\n"),
        "{appended}"
    );
    let replaced = ok(cli(
        addr,
        &[
            "acl",
            "token",
            "update",
            "-id",
            &accessor,
            "-service-identity",
            "web",
            "-templated-policy",
            "builtin/node",
            "-var",
            "name:n3",
        ],
    )
    .await);
    assert!(
        replaced.contains("Service Identities:\n   web (Datacenters: all)\nNode"),
        "{replaced}"
    );
    assert!(
        !replaced.contains("builtin/dns") && replaced.contains("builtin/node\n      Name: n3\n"),
        "{replaced}"
    );
    let stored = http_json(&http, &format!("/v1/acl/token/{accessor}")).await;
    assert_eq!(stored["Roles"][0]["ID"], role_id.as_str());
    assert_eq!(stored["ServiceIdentities"], json!([{"ServiceName": "web"}]));
    assert_eq!(stored["Policies"][0]["Name"], "p1");
    let both = failed(
        cli(
            addr,
            &[
                "acl",
                "token",
                "update",
                "-id",
                &accessor,
                "-role-name",
                "app-role",
                "-append-role-name",
                "app-role",
            ],
        )
        .await,
    );
    assert!(both.contains("Cannot combine"), "{both}");
    let read = ok(cli(addr, &["acl", "token", "read", "-id", &accessor]).await);
    assert!(
        read.contains(" - app-role\n") && read.contains("web (Datacenters: all)"),
        "{read}"
    );
    let listed = ok(cli(addr, &["acl", "token", "list"]).await);
    assert!(
        listed.contains(&format!("Roles:\n   {role_id} - app-role\n")),
        "{listed}"
    );
    let json_token: Value = serde_json::from_str(&ok(cli(
        addr,
        &["acl", "token", "read", "-id", &accessor, "-format", "json"],
    )
    .await))
    .unwrap();
    assert_eq!(json_token["NodeIdentities"][0]["NodeName"], "n2");

    // Delete by name: the role is gone, and so is what it granted.
    let deleted = ok(cli(addr, &["acl", "role", "delete", "-name", "app-role"]).await);
    assert_eq!(deleted.trim(), format!("Role {role_id:?} deleted successfully"));
    assert_eq!(
        call(&http, "GET", &format!("/v1/acl/role/{role_id}"), ROOT, "")
            .await
            .status,
        404
    );
    assert!(!can_write(&http, &secret, "app/y").await);

    // The template catalogue.
    let templates = ok(cli(addr, &["acl", "templated-policy", "list"]).await);
    assert!(
        templates.lines().any(|l| l == "builtin/service") && templates.lines().any(|l| l == "builtin/dns"),
        "{templates}"
    );
    let service = ok(cli(
        addr,
        &["acl", "templated-policy", "read", "-name", "builtin/service"],
    )
    .await);
    assert_eq!(field(&service, "Name:"), "builtin/service");
    assert!(
        service.contains("Input variables:\n\tName: String - Required"),
        "{service}"
    );
    let dns = ok(cli(
        addr,
        &["acl", "templated-policy", "read", "-name", "builtin/dns", "-meta"],
    )
    .await);
    assert!(
        dns.contains("Input variables: None") && dns.contains("Raw Template:\n"),
        "{dns}"
    );
    let preview = ok(cli(
        addr,
        &[
            "acl",
            "templated-policy",
            "preview",
            "-name",
            "builtin/service",
            "-var",
            "name:api",
        ],
    )
    .await);
    assert!(preview.contains("service \"api\""), "{preview}");
    let unnamed = failed(
        cli(
            addr,
            &["acl", "templated-policy", "preview", "-name", "builtin/service"],
        )
        .await,
    );
    assert!(unnamed.contains("400"), "{unnamed}");
    let unknown = failed(
        cli(
            addr,
            &["acl", "templated-policy", "read", "-name", "builtin/nope"],
        )
        .await,
    );
    assert!(unknown.contains("404"), "{unknown}");
    node.shutdown().await;
}

fn claims(team: &str, service: &str) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    json!({
        "iss": "https://ci.example", "aud": "tribune", "iat": now, "exp": now + 600,
        "team": team, "service": service,
    })
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_methods_binding_rules_login_and_logout_on_the_command_line() {
    let (node, http, addr) = started().await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::new();
    ok(cli(
        addr,
        &[
            "acl",
            "policy",
            "create",
            "-name",
            "app-write",
            "-rules",
            "key_prefix \"app/\" { policy = \"write\" }",
        ],
    )
    .await);
    ok(cli(
        addr,
        &[
            "acl",
            "role",
            "create",
            "-name",
            "app-team",
            "-policy-name",
            "app-write",
        ],
    )
    .await);

    // Auth method: the config from a file, printed as Consul prints a method.
    let config = dir.path().join("ci.json");
    std::fs::write(
        &config,
        json!({
            "JWTValidationPubKeys": [signer.public_pem()],
            "BoundIssuer": "https://ci.example",
            "BoundAudiences": ["tribune"],
            "ClaimMappings": {"team": "team", "service": "service"},
        })
        .to_string(),
    )
    .unwrap();
    let created = ok(cli(
        addr,
        &[
            "acl",
            "auth-method",
            "create",
            "-type",
            "jwt",
            "-name",
            "ci",
            "-display-name",
            "CI jobs",
            "-max-token-ttl",
            "5m",
            "-config",
            &format!("@{}", path_arg(&config)),
        ],
    )
    .await);
    assert_eq!(field(&created, "Name:"), "ci");
    assert_eq!(field(&created, "Type:"), "jwt");
    assert_eq!(field(&created, "DisplayName:"), "CI jobs");
    assert_eq!(field(&created, "MaxTokenTTL:"), "5m0s");
    assert!(
        created.contains("Config:\n{") && created.contains("\"BoundIssuer\": \"https://ci.example\""),
        "{created}"
    );
    let listed = ok(cli(addr, &["acl", "auth-method", "list"]).await);
    assert!(
        listed.contains("ci:\n   Type:         jwt\n   DisplayName:  CI jobs\n"),
        "{listed}"
    );
    let updated = ok(cli(
        addr,
        &[
            "acl",
            "auth-method",
            "update",
            "-name",
            "ci",
            "-description",
            "ci logins",
        ],
    )
    .await);
    assert_eq!(field(&updated, "Description:"), "ci logins");
    let stored = http_json(&http, "/v1/acl/auth-method/ci").await;
    assert_eq!(
        (stored["Description"].as_str(), stored["MaxTokenTTL"].as_str()),
        (Some("ci logins"), Some("5m0s"))
    );
    assert_eq!(stored["Config"]["BoundAudiences"], json!(["tribune"]));
    let read: Value = serde_json::from_str(&ok(cli(
        addr,
        &["acl", "auth-method", "read", "-name", "ci", "-format=json"],
    )
    .await))
    .unwrap();
    assert_eq!(read["DisplayName"], "CI jobs");
    let unsupported = failed(
        cli(
            addr,
            &[
                "acl",
                "auth-method",
                "create",
                "-type",
                "kubernetes",
                "-name",
                "k",
                "-config",
                "{}",
            ],
        )
        .await,
    );
    assert!(
        unsupported.contains("Failed to create new auth method"),
        "{unsupported}"
    );
    let bad_json = failed(
        cli(
            addr,
            &[
                "acl",
                "auth-method",
                "create",
                "-type",
                "jwt",
                "-name",
                "j",
                "-config",
                "{",
            ],
        )
        .await,
    );
    assert!(bad_json.contains("JSON"), "{bad_json}");

    // Binding rules: a role by team, a templated policy by service.
    let team_rule = ok(cli(
        addr,
        &[
            "acl",
            "binding-rule",
            "create",
            "-method",
            "ci",
            "-bind-type",
            "role",
            "-bind-name",
            "${value.team}-team",
            "-selector",
            "value.team == \"app\"",
        ],
    )
    .await);
    let team_rule_id = field(&team_rule, "ID:").to_owned();
    assert_eq!(field(&team_rule, "AuthMethod:"), "ci");
    assert_eq!(field(&team_rule, "BindType:"), "role");
    assert_eq!(field(&team_rule, "BindName:"), "${value.team}-team");
    let service_rule = ok(cli(
        addr,
        &[
            "acl",
            "binding-rule",
            "create",
            "-method",
            "ci",
            "-bind-type",
            "templated-policy",
            "-bind-name",
            "builtin/service",
            "-bind-vars",
            "name=${value.service}",
            "-selector",
            "value.service != \"\"",
        ],
    )
    .await);
    let service_rule_id = field(&service_rule, "ID:").to_owned();
    assert!(
        service_rule.contains("BindVars:") && service_rule.contains("- Name: ${value.service}\n"),
        "{service_rule}"
    );
    let rules = ok(cli(addr, &["acl", "binding-rule", "list", "-method", "ci"]).await);
    assert!(
        rules.contains(&format!("{team_rule_id}:\n   AuthMethod:   ci\n")),
        "{rules}"
    );
    assert!(rules.contains(&format!("{service_rule_id}:\n")), "{rules}");
    let read = ok(cli(addr, &["acl", "binding-rule", "read", "-id", &team_rule_id[..8]]).await);
    assert_eq!(field(&read, "ID:"), team_rule_id);
    let updated = ok(cli(
        addr,
        &[
            "acl",
            "binding-rule",
            "update",
            "-id",
            &team_rule_id[..8],
            "-description",
            "team rule",
        ],
    )
    .await);
    assert_eq!(field(&updated, "Description:"), "team rule");
    let stored = http_json(&http, &format!("/v1/acl/binding-rule/{team_rule_id}")).await;
    assert_eq!(
        stored["Selector"], "value.team == \"app\"",
        "the update kept the selector: {stored}"
    );
    assert_eq!(stored["Description"], "team rule");
    let orphan = failed(
        cli(
            addr,
            &[
                "acl",
                "binding-rule",
                "create",
                "-method",
                "nope",
                "-bind-name",
                "x",
            ],
        )
        .await,
    );
    assert!(orphan.contains("does not exist"), "{orphan}");

    // Login writes the new token's secret to the sink; the token carries what the rules bound.
    let bearer = dir.path().join("jwt");
    std::fs::write(&bearer, format!("{}\n", signer.jwt(&claims("app", "web")))).unwrap();
    let sink = dir.path().join("sink");
    let login_args = |bearer: &Path, sink: &Path| {
        vec![
            "login".to_owned(),
            "-method".to_owned(),
            "ci".to_owned(),
            "-bearer-token-file".to_owned(),
            path_arg(bearer),
            "-token-sink-file".to_owned(),
            path_arg(sink),
            "-meta".to_owned(),
            "job=42".to_owned(),
        ]
    };
    let args = login_args(&bearer, &sink);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(ok(cli(addr, &args).await), "");
    let secret = std::fs::read_to_string(&sink).unwrap();
    assert_eq!(secret.len(), 36, "{secret:?}");
    let minted = {
        let reply = call(&http, "GET", "/v1/acl/token/self", &secret, "").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };
    assert_eq!(minted["AuthMethod"], "ci");
    assert_eq!(minted["Description"], "token created via login: {\"job\":\"42\"}");
    assert_eq!(minted["Roles"][0]["Name"], "app-team");
    assert!(can_write(&http, &secret, "app/from-ci").await);
    assert!(!can_write(&http, &secret, "other/from-ci").await);
    let own = ok(cli(addr, &["acl", "token", "read", "-self", "-token", &secret]).await);
    assert_eq!(field(&own, "Auth Method:"), "ci");

    // A JWT another key signed is refused, and no sink is written.
    let stranger = dir.path().join("stranger-jwt");
    std::fs::write(&stranger, Signer::new().jwt(&claims("app", "web"))).unwrap();
    let untouched = dir.path().join("untouched");
    let args = login_args(&stranger, &untouched);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = failed(cli(addr, &args).await);
    assert!(refused.contains("Error logging in"), "{refused}");
    assert!(!untouched.exists());
    let empty = dir.path().join("empty-jwt");
    std::fs::write(&empty, "\n").unwrap();
    let args = login_args(&empty, &untouched);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(failed(cli(addr, &args).await).contains("No bearer token found"));

    // Logout: not with the management token, yes with the login's (as -token or from the environment).
    let root_out = failed(cli(addr, &["logout"]).await);
    assert!(root_out.contains("403"), "{root_out}");
    ok(cli(addr, &["logout", "-token", &secret]).await);
    assert_eq!(
        call(&http, "GET", "/v1/acl/token/self", &secret, "").await.status,
        403
    );
    let second = dir.path().join("second");
    let args = login_args(&bearer, &second);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(cli(addr, &args).await);
    let second_secret = std::fs::read_to_string(&second).unwrap();
    assert_ne!(second_secret, secret);
    ok(cli_env(addr, &["logout"], &[("CONSUL_HTTP_TOKEN", &second_secret)]).await);
    assert_eq!(
        call(&http, "GET", "/v1/acl/token/self", &second_secret, "")
            .await
            .status,
        403
    );

    // Deleting a rule, then the method (which takes the remaining rule with it).
    let deleted = ok(cli(
        addr,
        &["acl", "binding-rule", "delete", "-id", &service_rule_id[..8]],
    )
    .await);
    assert_eq!(
        deleted.trim(),
        format!("Binding rule {service_rule_id:?} deleted successfully")
    );
    let remaining = http_json(&http, "/v1/acl/binding-rules?authmethod=ci").await;
    assert_eq!(remaining.as_array().unwrap().len(), 1);
    assert_eq!(remaining[0]["ID"], team_rule_id.as_str());
    let deleted = ok(cli(addr, &["acl", "auth-method", "delete", "-name", "ci"]).await);
    assert_eq!(deleted.trim(), "Auth-method \"ci\" deleted successfully");
    assert_eq!(http_json(&http, "/v1/acl/binding-rules").await, json!([]));
    assert_eq!(ok(cli(addr, &["acl", "auth-method", "list"]).await), "");
    node.shutdown().await;
}
