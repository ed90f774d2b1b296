//! User events across a server and a client agent (`/v1/event/fire`, `/v1/event/list` with its
//! blocking index and filters, `event:write` under ACLs), and the command line built on them and
//! on blocking queries: `tribune event`, `tribune watch`, `tribune catalog nodes|services`,
//! `tribune info`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::binary;
use common::{Client, Reply, pool_agent, request, start_leader, tribune_cli, wait_for};
use serde_json::{Value, json};
use tribune::Node;
use tribune::config::{Config, DefaultPolicy};

const LIMIT: Duration = Duration::from_secs(30);

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|e| e["ID"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn fire(http: &Client, path: &str, payload: &[u8]) -> Value {
    let reply = http.put(path, payload).await;
    assert_eq!(reply.status, 200, "PUT {path}: {}", reply.text());
    reply.json()
}

/// Waits until `http`'s event list holds `id`.
async fn until_listed(http: &Client, id: &str, what: &str) {
    wait_for(what, LIMIT, || async {
        ids(&http.get("/v1/event/list").await.json())
            .iter()
            .any(|i| i == id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_fired_on_one_agent_are_listed_on_the_other() {
    let mut server = pool_agent("s1", true, &[]);
    server.bootstrap_expect = 1;
    let s1 = start_leader(server).await;
    let c1 = Node::start(pool_agent("c1", false, &[&s1])).await.unwrap();
    let (server, client) = (Client::of(&s1), Client::of(&c1));
    wait_for("both agents in each other's pool", LIMIT, || async {
        let members = client.get("/v1/agent/members").await.json();
        members.as_array().is_some_and(|m| m.len() == 2)
    })
    .await;

    // Fired on the client, with Consul's answer; kept by both agents.
    let first = fire(&client, "/v1/event/fire/deploy", b"v1").await;
    assert_eq!(first["Name"], "deploy");
    assert_eq!(first["Payload"], "djE=");
    assert_eq!(first["Version"], 1);
    assert_eq!(first["LTime"], 0);
    assert_eq!(first["NodeFilter"], "");
    let first_id = first["ID"].as_str().unwrap().to_owned();
    until_listed(&server, &first_id, "the server lists the client's event").await;
    until_listed(&client, &first_id, "the client lists its own event").await;
    let listed = server.get("/v1/event/list").await;
    assert_eq!(listed.index(), tribune::user_event_index(&first_id));
    let kept = listed.json();
    assert_eq!(kept[0]["Payload"], "djE=");
    assert!(kept[0]["LTime"].as_u64().is_some(), "{kept}");

    // A blocking list with the current index waits out its wait when nothing is fired…
    let index = listed.index();
    let started = Instant::now();
    let waited = client.get(&format!("/v1/event/list?index={index}&wait=1s")).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "it blocked");
    assert_eq!(waited.index(), index);
    // …and returns as soon as an event arrives.
    let blocked = {
        let client = Client(client.0);
        tokio::spawn(async move {
            client
                .get(&format!("/v1/event/list?index={index}&wait=30s"))
                .await
        })
    };
    let second = fire(&server, "/v1/event/fire/restart", b"").await;
    let second_id = second["ID"].as_str().unwrap().to_owned();
    assert_eq!(second["Payload"], Value::Null);
    let woken = tokio::time::timeout(LIMIT, blocked)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(woken.index(), tribune::user_event_index(&second_id));
    assert_eq!(ids(&woken.json()), [first_id.clone(), second_id.clone()]);

    // ?name= lists one name, and its index is that list's last event's.
    let deploys = client.get("/v1/event/list?name=deploy").await;
    assert_eq!(ids(&deploys.json()), std::slice::from_ref(&first_id));
    assert_eq!(deploys.index(), tribune::user_event_index(&first_id));
    assert_eq!(client.get("/v1/event/list?name=none").await.index(), 1);

    // The node filter: only c1 keeps it. The server sees its own events in order, so once a later
    // unfiltered marker is listed there, the filtered one was decided.
    let only_c1 = fire(&server, "/v1/event/fire/only-c1?node=%5Ec1%24", b"").await;
    assert_eq!(only_c1["NodeFilter"], "^c1$");
    let only_c1 = only_c1["ID"].as_str().unwrap().to_owned();
    // The service filter: only the client agent runs `web` tagged v1, so only it keeps the event.
    let registered = client
        .put(
            "/v1/agent/service/register",
            br#"{"Name": "web", "ID": "web-1", "Tags": ["v1"], "Port": 80}"#,
        )
        .await;
    assert_eq!(registered.status, 200, "{}", registered.text());
    let web = fire(&server, "/v1/event/fire/web?service=web&tag=v1", b"").await;
    let web = web["ID"].as_str().unwrap().to_owned();
    let marker = fire(&server, "/v1/event/fire/marker", b"").await;
    let marker = marker["ID"].as_str().unwrap().to_owned();
    until_listed(&server, &marker, "the marker on the server").await;
    until_listed(&client, &only_c1, "c1 keeps the event for c1").await;
    until_listed(&client, &marker, "the marker on the client").await;
    let on_server = ids(&server.get("/v1/event/list").await.json());
    assert!(!on_server.contains(&only_c1), "s1 is not ^c1$");
    assert!(!on_server.contains(&web), "s1 runs no web service");
    until_listed(&client, &web, "c1 runs web tagged v1").await;

    // Refused with Consul's messages.
    let no_service = client.put("/v1/event/fire/x?tag=v1", b"").await;
    assert_eq!(no_service.status, 500, "Consul's status for a refused event");
    assert!(
        no_service.text().contains("tag filter without service filter"),
        "{}",
        no_service.text()
    );
    let bad = server.put("/v1/event/fire/x?node=(", b"").await;
    assert_eq!(bad.status, 500);
    assert!(bad.text().starts_with("Invalid node filter"), "{}", bad.text());

    c1.shutdown().await;
    s1.shutdown().await;
}

const ROOT: &str = "4d1fd2b8-34a3-4b0a-9d4c-2a1f3c1c0043";

async fn call(http: &Client, method: &str, path: &str, token: &str, body: &str) -> Reply {
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        Vec::new()
    } else {
        vec![("X-Consul-Token", token)]
    };
    request(http.0, method, path, &headers, body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_needs_event_write_and_listing_shows_what_event_read_allows() {
    let mut config = Config::dev();
    config.acl.enabled = true;
    config.acl.default_policy = DefaultPolicy::Deny;
    config.acl.tokens.initial_management = Some(ROOT.to_owned());
    let node = start_leader(config).await;
    let http = Client::of(&node);
    wait_for("the initial management token", LIMIT, || async {
        call(&http, "GET", "/v1/acl/tokens", ROOT, "").await.status == 200
    })
    .await;
    let policy = json!({"Name": "deployer", "Rules": "event \"deploy\" { policy = \"write\" }"});
    let created = call(&http, "PUT", "/v1/acl/policy", ROOT, &policy.to_string()).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let token = call(
        &http,
        "PUT",
        "/v1/acl/token",
        ROOT,
        &json!({"Policies": [{"Name": "deployer"}]}).to_string(),
    )
    .await
    .json()["SecretID"]
        .as_str()
        .unwrap()
        .to_owned();

    let anonymous = call(&http, "PUT", "/v1/event/fire/deploy", "", "").await;
    assert_eq!(anonymous.status, 403);
    assert!(
        anonymous.text().contains("Permission denied"),
        "{}",
        anonymous.text()
    );
    let other = call(&http, "PUT", "/v1/event/fire/other", &token, "").await;
    assert_eq!(other.status, 403, "event:write on deploy only");
    let allowed = call(&http, "PUT", "/v1/event/fire/deploy", &token, "go").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let deploy = allowed.json()["ID"].as_str().unwrap().to_owned();
    let root_fired = call(&http, "PUT", "/v1/event/fire/other", ROOT, "").await;
    assert_eq!(root_fired.status, 200);
    let other = root_fired.json()["ID"].as_str().unwrap().to_owned();

    wait_for("both events kept", LIMIT, || async {
        ids(&call(&http, "GET", "/v1/event/list", ROOT, "").await.json()).len() == 2
    })
    .await;
    let limited = call(&http, "GET", "/v1/event/list", &token, "").await;
    assert_eq!(
        ids(&limited.json()),
        std::slice::from_ref(&deploy),
        "write implies read of deploy only"
    );
    assert_eq!(limited.index(), tribune::user_event_index(&deploy));
    let everything = call(&http, "GET", "/v1/event/list", ROOT, "").await;
    assert_eq!(ids(&everything.json()), [deploy, other]);
    assert_eq!(
        ids(&call(&http, "GET", "/v1/event/list", "", "").await.json()),
        Vec::<String>::new()
    );
    node.shutdown().await;
}

/// Waits until the file at `path` holds `needle`.
async fn until_file_has(path: &std::path::Path, needle: &str) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never held {needle:?}: {text:?}", path.display());
}

/// A spawned `tribune watch`, killed when the test ends.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_fires_watches_and_lists() {
    let node = start_leader(Config::dev()).await;
    let http = Client::of(&node);
    let addr = node.http_addr().unwrap();
    let me = http.get("/v1/agent/self").await.json()["Config"]["NodeName"]
        .as_str()
        .unwrap()
        .to_owned();

    // tribune event
    let (ok, out) = tribune_cli(addr, &["event", "-name", "deploy", "v1"]).await;
    assert!(ok, "{out}");
    let id = out
        .trim()
        .strip_prefix("Event ID: ")
        .expect("Event ID line")
        .to_owned();
    until_listed(&http, &id, "the CLI's event").await;
    let (ok, out) = tribune_cli(addr, &["event", "-tag", "v1", "-service", "", "-name", "x"]).await;
    assert!(
        !ok && out.contains("Cannot provide tag filter without service filter"),
        "{out}"
    );
    let (ok, out) = tribune_cli(addr, &["event"]).await;
    assert!(!ok && out.contains("Event name must be specified"), "{out}");

    // tribune watch -type event without a handler: the current list, once.
    let (ok, out) = tribune_cli(addr, &["watch", "-type", "event", "-name", "deploy"]).await;
    assert!(ok, "{out}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&printed), std::slice::from_ref(&id));

    // tribune watch -type key with a handler: the first result, then a change.
    assert_eq!(http.put("/v1/kv/app/k", b"v1").await.text(), "true");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seen");
    let handler = format!("cat >> '{}'", file.display());
    let watch = Watch(
        binary()
            .arg(format!("-http-addr={addr}"))
            .args(["watch", "-type", "key", "-key", "app/k", &handler])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until_file_has(&file, "djE=").await;
    wait_for("the watch's blocking read parked", LIMIT, || async {
        node.parked_blocking_queries() >= 1
    })
    .await;
    assert_eq!(http.put("/v1/kv/app/k", b"v2").await.text(), "true");
    let seen = until_file_has(&file, "djI=").await;
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 2, "one line per change: {seen:?}");
    let entry: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(entry["Key"], "app/k");
    drop(watch);

    // tribune watch -type event with a handler sees a fired event.
    let events_file = dir.path().join("events");
    let handler = format!("cat >> '{}'", events_file.display());
    let watch = Watch(
        binary()
            .arg(format!("-http-addr={addr}"))
            .args(["watch", "-type", "event", "-name", "restart", &handler])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until_file_has(&events_file, "[]").await;
    let restart = fire(&http, "/v1/event/fire/restart", b"now").await;
    until_file_has(&events_file, restart["ID"].as_str().unwrap()).await;
    drop(watch);

    // A failing handler ends the watch with an error, as Consul's.
    let (ok, out) = tribune_cli(addr, &["watch", "-type", "key", "-key", "app/k", "exit 3"]).await;
    assert!(!ok && out.contains("Error executing handler"), "{out}");

    // tribune catalog nodes / services.
    let web = json!({
        "Node": "web-1", "Address": "10.0.0.7", "Datacenter": "dc1",
        "NodeMeta": {"rack": "r1"},
        "Service": {"Service": "web", "Tags": ["v2", "v1"], "Port": 80},
    });
    assert_eq!(
        http.put("/v1/catalog/register", web.to_string().as_bytes())
            .await
            .text(),
        "true"
    );
    wait_for(
        "the server's own node and service in the catalog",
        LIMIT,
        || async {
            !http.get("/v1/catalog/services").await.json()["consul"].is_null()
                && http
                    .get("/v1/catalog/nodes")
                    .await
                    .json()
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n["Node"] == me.as_str()))
        },
    )
    .await;
    let (ok, out) = tribune_cli(addr, &["catalog", "nodes"]).await;
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["Node", "ID", "Address", "DC"], "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("web-1 ") && l.contains("10.0.0.7")),
        "{out}"
    );
    assert!(lines.iter().any(|l| l.starts_with(&format!("{me} "))), "{out}");
    // The columns are aligned: each field starts where its header does.
    let address_at = lines[0].find("Address").unwrap();
    for line in &lines[1..] {
        assert!(
            line[address_at..].starts_with(|c: char| c.is_ascii_digit()),
            "{out}"
        );
    }
    let (ok, out) = tribune_cli(addr, &["catalog", "nodes", "-service", "web", "-detailed"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("rack=r1") && !out.contains(&me), "{out}");
    let (ok, out) = tribune_cli(addr, &["catalog", "nodes", "-node-meta", "rack=r1"]).await;
    assert!(ok && out.contains("web-1") && !out.contains(&me), "{out}");
    let (ok, out) = tribune_cli(addr, &["catalog", "services"]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "consul\nweb\n");
    let (ok, out) = tribune_cli(addr, &["catalog", "services", "-tags"]).await;
    assert!(ok, "{out}");
    assert_eq!(out, "consul\nweb     v1,v2\n");
    let (ok, out) = tribune_cli(addr, &["catalog", "services", "-node", "web-1"]).await;
    assert!(ok && out == "web\n", "{out}");

    // tribune info: the agent's stats, by section.
    let (ok, out) = tribune_cli(addr, &["info"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("agent:\n") && out.contains("consul:\n"), "{out}");
    assert!(out.contains("\tserver = true\n"), "{out}");
    node.shutdown().await;
}
