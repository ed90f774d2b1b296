//! The `tribune` binary against real agents: KV, ACL, snapshot inspect, keygen, lock and bench against
//! an in-process development server; `agent` itself spawned as a process (configuration precedence,
//! configuration errors, `-dev` answering and stopping on SIGTERM).
#![cfg(feature = "cli")]
// The helpers below run only inside tests; a failed step should fail the test where it happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Output, Stdio};

use common::process::{AgentProcess, STEP, binary};
use common::{dev_server, request, start_leader, wait_for};
use tribune::config::{Config, DefaultPolicy};

/// The result of one command.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn success(self) -> Ran {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn failure(self) -> Ran {
        assert_ne!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs the binary against `addr` with `args`, feeding `stdin`.
async fn run_with(addr: SocketAddr, args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Ran {
    let mut command = binary();
    command
        .arg(format!("-http-addr={addr}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("spawn tribune");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(&stdin).expect("write stdin");
        drop(input);
        Ran::from(child.wait_with_output().expect("wait for tribune"))
    })
    .await
    .expect("the command's thread")
}

async fn run(addr: SocketAddr, args: &[&str]) -> Ran {
    run_with(addr, args, &[], b"").await
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_put_get_delete_export_import() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();

    let put = run(addr, &["kv", "put", "greeting", "hello"]).await.success();
    assert_eq!(put.stdout, "Success! Data written to: greeting\n");
    assert_eq!(
        run(addr, &["kv", "get", "greeting"]).await.success().stdout,
        "hello\n"
    );
    run_with(
        addr,
        &["kv", "put", "-flags=42", "app/a", "-"],
        &[],
        b"from stdin",
    )
    .await
    .success();
    run(addr, &["kv", "put", "--base64", "app/b/c", "dHdv"])
        .await
        .success();

    let recurse = run(addr, &["kv", "get", "-recurse", "app"]).await.success();
    assert_eq!(recurse.stdout, "app/a:from stdin\napp/b/c:two\n");
    let keys = run(addr, &["kv", "get", "-keys", "app/"]).await.success();
    assert_eq!(keys.stdout, "app/a\napp/b/\n");
    let detailed = run(addr, &["kv", "get", "-detailed", "app/a"]).await.success();
    assert_eq!(field(&detailed.stdout, "Flags"), "42");
    assert_eq!(field(&detailed.stdout, "Session"), "-");
    let modify_index = field(&detailed.stdout, "ModifyIndex").to_owned();

    // CAS: a stale index is refused with Consul's message, the current one is accepted.
    let refused = run(addr, &["kv", "put", "-cas", "-modify-index=0", "app/a", "x"])
        .await
        .failure();
    assert_eq!(refused.stderr, "Error! Did not write to app/a: CAS failed\n");
    let cas = format!("-modify-index={modify_index}");
    run(
        addr,
        &["kv", "put", "-cas", &cas, "-flags=42", "app/a", "from stdin"],
    )
    .await
    .success();

    let export = run(addr, &["kv", "export", "app/"]).await.success();
    let exported: serde_json::Value = serde_json::from_str(&export.stdout).unwrap();
    assert_eq!(
        exported,
        serde_json::json!([
            {"key": "app/a", "flags": 42, "value": "ZnJvbSBzdGRpbg=="},
            {"key": "app/b/c", "flags": 0, "value": "dHdv"},
        ])
    );

    let deleted = run(addr, &["kv", "delete", "-recurse", "app/"]).await.success();
    assert_eq!(deleted.stdout, "Success! Deleted keys with prefix: app/\n");
    let missing = run(addr, &["kv", "get", "app/a"]).await.failure();
    assert_eq!(missing.stderr, "Error! No key exists at: app/a\n");

    // Import from a file and from stdin, the second under another prefix.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, &export.stdout).unwrap();
    let imported = run(addr, &["kv", "import", &format!("@{}", file.display())])
        .await
        .success();
    assert_eq!(imported.stdout, "Imported: app/a\nImported: app/b/c\n");
    run_with(
        addr,
        &["kv", "import", "-prefix=copy/", "-"],
        &[],
        export.stdout.as_bytes(),
    )
    .await
    .success();
    let again = run(addr, &["kv", "export"]).await.success();
    let again: Vec<serde_json::Value> = serde_json::from_str(&again.stdout).unwrap();
    let keys: Vec<&str> = again.iter().map(|entry| entry["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["app/a", "app/b/c", "copy/app/a", "copy/app/b/c", "greeting"]
    );
    assert_eq!(again[0]["flags"], 42);

    let single = run(addr, &["kv", "delete", "greeting"]).await.success();
    assert_eq!(single.stdout, "Success! Deleted key: greeting\n");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_names_the_agent_and_tribune_wins() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    let env = |tribune: String| {
        vec![
            ("CONSUL_HTTP_ADDR", "127.0.0.1:1".to_owned()),
            ("TRIBUNE_HTTP_ADDR", tribune),
        ]
    };
    let mut command = binary();
    for (name, value) in env(addr.to_string()) {
        command.env(name, value);
    }
    command.args(["kv", "put", "k", "v"]);
    let ran = Ran::from(
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap(),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let mut command = binary();
    command
        .env("CONSUL_HTTP_ADDR", "127.0.0.1:1")
        .args(["kv", "get", "k"]);
    let ran = Ran::from(
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap(),
    );
    assert_ne!(ran.code, Some(0));
    assert!(
        ran.stderr
            .starts_with("Error querying agent: connecting to the agent at 127.0.0.1:1"),
        "{}",
        ran.stderr
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acl_bootstrap_policies_and_tokens() {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    let node = start_leader(config).await;
    let addr = node.http_addr().unwrap();

    let boot = run(addr, &["acl", "bootstrap"]).await.success();
    assert_eq!(
        field(&boot.stdout, "Description:"),
        "Bootstrap Token (Global Management)"
    );
    assert!(
        boot.stdout
            .contains("00000000-0000-0000-0000-000000000001 - global-management")
    );
    let management = field(&boot.stdout, "SecretID:").to_owned();
    let again = run(addr, &["acl", "bootstrap"]).await.failure();
    assert!(
        again.stderr.contains("ACL bootstrap no longer allowed"),
        "{}",
        again.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.hcl");
    std::fs::write(&rules, "key_prefix \"app/\" {\n  policy = \"write\"\n}\n").unwrap();
    let token_env = vec![("CONSUL_HTTP_TOKEN", management.clone())];
    let created = run_with(
        addr,
        &[
            "acl",
            "policy",
            "create",
            "-name=app",
            "-description=app keys",
            &format!("-rules=@{}", rules.display()),
        ],
        &token_env,
        b"",
    )
    .await
    .success();
    let policy_id = field(&created.stdout, "ID:").to_owned();
    assert_eq!(field(&created.stdout, "Name:"), "app");
    let read = run_with(addr, &["acl", "policy", "read", "-name", "app"], &token_env, b"")
        .await
        .success();
    assert!(read.stdout.contains("key_prefix \"app/\""), "{}", read.stdout);
    let list = run_with(addr, &["acl", "policy", "list"], &token_env, b"")
        .await
        .success();
    assert!(
        list.stdout.contains("global-management:\n") && list.stdout.contains("app:\n"),
        "{}",
        list.stdout
    );

    let token = run_with(
        addr,
        &[
            "acl",
            "token",
            "create",
            "-description",
            "app token",
            "-policy-name",
            "app",
        ],
        &token_env,
        b"",
    )
    .await
    .success();
    let accessor = field(&token.stdout, "AccessorID:").to_owned();
    let secret = field(&token.stdout, "SecretID:").to_owned();
    assert!(
        token.stdout.contains(&format!("{policy_id} - app")),
        "{}",
        token.stdout
    );

    // The new token writes where its policy allows and nowhere else; -token beats the environment.
    run_with(
        addr,
        &["kv", "put", &format!("-token={secret}"), "app/x", "1"],
        &token_env,
        b"",
    )
    .await
    .success();
    let denied = run(addr, &["kv", "put", "-token", &secret, "other/x", "1"])
        .await
        .failure();
    assert!(
        denied.stderr.contains("403 (Permission denied)"),
        "{}",
        denied.stderr
    );

    let shown = run_with(addr, &["acl", "token", "read", "-id", &accessor], &token_env, b"")
        .await
        .success();
    assert_eq!(field(&shown.stdout, "Description:"), "app token");
    let own = run(addr, &["acl", "token", "read", "-self", "-token", &secret])
        .await
        .success();
    assert_eq!(field(&own.stdout, "AccessorID:"), accessor);
    let tokens = run_with(addr, &["acl", "token", "list"], &token_env, b"")
        .await
        .success();
    assert!(tokens.stdout.contains(&accessor));

    let gone = run_with(
        addr,
        &["acl", "token", "delete", "-id", &accessor],
        &token_env,
        b"",
    )
    .await
    .success();
    assert_eq!(
        gone.stdout,
        format!("Token \"{accessor}\" deleted successfully\n")
    );
    run_with(addr, &["acl", "token", "read", "-id", &accessor], &token_env, b"")
        .await
        .failure();
    let gone = run_with(
        addr,
        &["acl", "policy", "delete", "-name", "app"],
        &token_env,
        b"",
    )
    .await
    .success();
    assert_eq!(
        gone.stdout,
        format!("Policy \"{policy_id}\" deleted successfully\n")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_inspect_reads_a_saved_file() {
    use tribune_kvstore::{Command as KvCommand, ExportOptions, Store, StoreConfig};
    let store = Store::in_memory(StoreConfig::new("dc1".to_owned())).unwrap();
    for (index, key) in [(1, "a"), (2, "b"), (3, "c")] {
        let command = KvCommand::KvSet {
            key: key.to_owned(),
            value: b"value".to_vec(),
            flags: 0,
        };
        store.apply(index, &command).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.snap");
    let options = ExportOptions {
        term: 7,
        ..ExportOptions::default()
    };
    store
        .export(std::fs::File::create(&path).unwrap(), &options)
        .unwrap();

    // Offline: the address points nowhere.
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let inspect = run(nowhere, &["snapshot", "inspect", path.to_str().unwrap()])
        .await
        .success();
    assert_eq!(field(&inspect.stdout, " Index"), "3");
    assert_eq!(field(&inspect.stdout, " Term"), "7");
    assert_eq!(field(&inspect.stdout, " Datacenter"), "dc1");
    let kvs = field(&inspect.stdout, " KVS");
    assert!(kvs.starts_with("3 "), "{}", inspect.stdout);

    // A damaged file is refused by name.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let damaged = run(nowhere, &["snapshot", "inspect", path.to_str().unwrap()])
        .await
        .failure();
    assert!(
        damaged.stderr.starts_with("Error inspecting snapshot: "),
        "{}",
        damaged.stderr
    );
    assert!(damaged.stderr.contains("state.snap"), "{}", damaged.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn keygen_prints_32_random_bytes_in_base64() {
    use base64::Engine as _;
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let first = run(nowhere, &["keygen"]).await.success().stdout;
    let second = run(nowhere, &["keygen"]).await.success().stdout;
    for key in [&first, &second] {
        assert!(key.ends_with('\n'));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.trim_end())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_runs_the_child_while_holding_the_key() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    let ran = run(addr, &["lock", "-verbose", "jobs/nightly", "echo", "held", "-n"])
        .await
        .success();
    assert!(
        ran.stdout.contains("Lock acquired on jobs/nightly/.lock"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("held -n"),
        "the child's flags stay the child's: {}",
        ran.stdout
    );
    // Released: the key exists without a holder.
    let entry = request(addr, "GET", "/v1/kv/jobs/nightly/.lock", &[], b"").await;
    assert_eq!(entry.status, 200);
    assert!(
        entry.json()[0]
            .get("Session")
            .is_none_or(serde_json::Value::is_null),
        "{}",
        entry.text()
    );
    // A failing child makes lock exit 2, or with the child's code on request.
    let failed = run(addr, &["lock", "jobs/nightly", "exit 3"]).await;
    assert_eq!(failed.code, Some(2));
    let failed = run(addr, &["lock", "-child-exit-code", "jobs/nightly", "exit 3"]).await;
    assert_eq!(failed.code, Some(3));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_drives_a_dev_server() {
    let node = dev_server().await;
    let addr = node.http_addr().unwrap();
    for mode in ["put", "get", "stale"] {
        let ran = run(
            addr,
            &[
                "bench",
                "-clients=2",
                "-duration=10s",
                "-max-requests=200",
                "-keys=20",
                &format!("-mode={mode}"),
            ],
        )
        .await
        .success();
        assert!(
            ran.stdout.contains("requests: 200 ok, 0 errors"),
            "{}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("req/s") && ran.stdout.contains("p99"),
            "{}",
            ran.stdout
        );
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_dev_answers_and_stops_on_sigterm() {
    let mut agent = AgentProcess::spawn_dev();
    let http = agent.http;
    wait_for("the dev agent to know its leader", STEP, || async move {
        let reply = request(http, "GET", "/v1/status/leader", &[], b"").await;
        reply.status == 200 && reply.json().as_str().is_some_and(|leader| !leader.is_empty())
    })
    .await;
    agent.signal("TERM");
    agent.wait_line("Shutdown complete");
    let status = tokio::task::block_in_place(|| agent.child.wait()).unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_flags_win_over_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("base.json");
    std::fs::write(&file, r#"{"node_name": "from-file", "datacenter": "east"}"#).unwrap();
    let conf_dir = dir.path().join("conf.d");
    std::fs::create_dir(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("10-dc.hcl"), "datacenter = \"west\"\n").unwrap();
    std::fs::write(conf_dir.join("20-name.json"), r#"{"node_name": "from-dir"}"#).unwrap();
    let mut agent = AgentProcess::spawn(&[
        "-dev",
        &format!("-config-file={}", file.display()),
        &format!("-config-dir={}", conf_dir.display()),
        "-node=from-flag",
        "-http-port=0",
        "-server-port=0",
        "-serf-lan-port=0",
        "-serf-wan-port=0",
    ]);
    let reply = request(agent.http, "GET", "/v1/agent/self", &[], b"").await;
    let config = &reply.json()["Config"];
    assert_eq!(config["NodeName"], "from-flag");
    assert_eq!(config["Datacenter"], "west", "the directory comes after the file");
    agent.signal("INT");
    agent.wait_line("Shutdown complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_configuration_errors_name_the_file_the_key_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.json");
    std::fs::write(&file, r#"{"acl": {"enabled": true, "tokens": {"agnet": "x"}}}"#).unwrap();
    let mut command = binary();
    command.args(["agent", "-dev", &format!("-config-file={}", file.display())]);
    let ran = Ran::from(
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap(),
    )
    .failure();
    assert!(ran.stderr.contains(&file.display().to_string()), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("unknown key `acl.tokens.agnet`"),
        "{}",
        ran.stderr
    );

    let mut command = binary();
    command.args(["agent", "-dev", "-bind=somewhere"]);
    let ran = Ran::from(
        tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap(),
    )
    .failure();
    assert!(ran.stderr.contains("flag -bind (bind_addr)"), "{}", ran.stderr);
}
