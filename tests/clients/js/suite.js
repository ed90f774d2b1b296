// The npm `consul` package (pinned in package.json / package-lock.json) against a running Tribune node.
//
// Run by tests/t08_clients.rs with TRIBUNE_HTTP_ADDR=host:port of a fresh node with ACLs enabled,
// default policy deny and no token yet, and NODE_PATH pointing at the installed node_modules. Every step
// asserts what Consul answers; the first failure ends the run with a non-zero status.
//
// The package has typed calls for KV, sessions, txn, status, ACL bootstrap, the catalog, health, the
// agent's services and checks, events and watches, but none for ACL
// policies and tokens (only the legacy ACL API Consul removed) nor for snapshots: those steps go
// through the client's own request layer (`_get`/`_put`/`_delete`), which adds the token header and
// error handling as its typed calls do.
"use strict";

const assert = require("assert");
const { EventEmitter } = require("events");
const Consul = require("consul");

const [host, port] = process.env.TRIBUNE_HTTP_ADDR.split(":");

function client(token) {
  const defaults = token ? { token } : undefined;
  return new Consul({ host, port, defaults });
}

function step(name) {
  console.log(`npm consul: ${name}`);
}

// Returns [index, body] of a read, through the package's `includeResponse` context (which must be an
// EventEmitter, as its own watch passes).
async function withIndex(call, opts) {
  const ctx = new EventEmitter();
  ctx.includeResponse = true;
  const [res, body] = await call({ ...opts, ctx });
  return [Number(res.headers["x-consul-index"]), body];
}

// A refused KV write: Consul answers `false`, which this package's request layer (papi) turns into
// `undefined` (it only keeps a truthy body), so both count as "refused".
function assertRefused(result) {
  assert.ok(result === false || result === undefined, `expected a refusal, got ${result}`);
}

// Polls `probe` until it returns a truthy value or `ms` pass; the value, or a failure naming `what`.
async function eventually(what, probe, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function expectStatus(status, promise) {
  try {
    await promise;
  } catch (err) {
    const got = err.response ? err.response.statusCode : err.statusCode;
    assert.strictEqual(got, status, `expected ${status}, got ${got}: ${err.message}`);
    return;
  }
  assert.fail(`expected a ${status} refusal, the call succeeded`);
}

async function main() {
  const anonymous = client();

  step("status");
  const leader = await anonymous.status.leader();
  assert.ok(leader, "a leader");
  assert.deepStrictEqual(await anonymous.status.peers(), [leader]);

  step("acl bootstrap");
  const root = await anonymous.acl.bootstrap();
  assert.strictEqual(root.Policies[0].Name, "global-management");
  const c = client(root.SecretID);

  step("kv set/get, flags");
  assert.strictEqual(await c.kv.set({ key: "app/config", value: "v1", flags: 42 }), true);
  let entry = await c.kv.get("app/config");
  assert.strictEqual(entry.Value, "v1");
  assert.strictEqual(entry.Flags, 42);
  assert.strictEqual(await c.kv.get("app/missing"), undefined);

  step("kv cas");
  assertRefused(await c.kv.set({ key: "app/config", value: "stale", cas: entry.ModifyIndex - 1 }));
  assert.strictEqual(
    await c.kv.set({ key: "app/config", value: "v2", cas: entry.ModifyIndex }),
    true,
  );

  step("kv recurse and keys with a separator");
  for (const key of ["tree/a", "tree/b/1", "tree/b/2", "tree/c"]) {
    assert.strictEqual(await c.kv.set(key, key), true);
  }
  const tree = await c.kv.get({ key: "tree/", recurse: true });
  assert.deepStrictEqual(
    tree.map((e) => e.Key),
    ["tree/a", "tree/b/1", "tree/b/2", "tree/c"],
  );
  assert.deepStrictEqual(await c.kv.keys({ key: "tree/", separator: "/" }), [
    "tree/a",
    "tree/b/",
    "tree/c",
  ]);
  assert.strictEqual(await c.kv.del({ key: "tree/", recurse: true }), true);
  assert.strictEqual(await c.kv.get({ key: "tree/", recurse: true }), undefined);

  step("kv blocking query (index, wait)");
  const [index] = await withIndex((o) => c.kv.get(o), { key: "app/config" });
  const started = Date.now();
  const [same] = await withIndex((o) => c.kv.get(o), { key: "app/config", index, wait: "300ms" });
  assert.strictEqual(same, index);
  assert.ok(Date.now() - started >= 250, "the read waited");
  const writer = new Promise((resolve) => setTimeout(resolve, 300)).then(() =>
    c.kv.set("app/config", "v3"),
  );
  const [newer, woke] = await withIndex((o) => c.kv.get(o), { key: "app/config", index, wait: "20s" });
  await writer;
  assert.ok(newer > index, `index ${newer} > ${index}`);
  assert.strictEqual(woke.Value, "v3");

  step("sessions: create, info, renew, list, acquire, release, destroy");
  const session = (await c.session.create({ name: "js", ttl: "30s", lockdelay: "0s" })).ID;
  const info = await c.session.info(session);
  assert.strictEqual(info.ID, session);
  assert.strictEqual(info.TTL, "30s");
  const renewed = await c.session.renew(session);
  assert.strictEqual(renewed[0].ID, session);
  assert.ok((await c.session.list()).some((s) => s.ID === session));
  assert.ok((await c.session.node(info.Node)).some((s) => s.ID === session));
  assert.strictEqual(await c.kv.set({ key: "lock/leader", value: "me", acquire: session }), true);
  const other = (await c.session.create({ lockdelay: "0s" })).ID;
  assertRefused(await c.kv.set({ key: "lock/leader", value: "them", acquire: other }));
  const held = await c.kv.get("lock/leader");
  assert.strictEqual(held.Session, session);
  assert.strictEqual(held.LockIndex, 1);
  assert.strictEqual(await c.kv.set({ key: "lock/leader", value: "done", release: session }), true);
  assert.strictEqual((await c.kv.get("lock/leader")).Session, undefined);
  await c.session.destroy(session);
  assert.strictEqual(await c.session.info(session), undefined);

  step("sessions: behavior delete");
  const ephemeral = (await c.session.create({ behavior: "delete", lockdelay: "0s" })).ID;
  assert.strictEqual(await c.kv.set({ key: "ephemeral/key", value: "x", acquire: ephemeral }), true);
  await c.session.destroy(ephemeral);
  assert.strictEqual(await c.kv.get("ephemeral/key"), undefined);
  await c.session.destroy(other);

  step("txn");
  const value = Buffer.from("t").toString("base64");
  const result = await c.transaction.create([
    { KV: { Verb: "set", Key: "txn/a", Value: value } },
    { KV: { Verb: "get", Key: "txn/a" } },
  ]);
  assert.strictEqual(result.Results[1].KV.Value, value);
  const reads = await c.transaction.create([{ KV: { Verb: "get", Key: "txn/a" } }]);
  assert.strictEqual(reads.Results[0].KV.Key, "txn/a");
  await expectStatus(409, c.transaction.create([{ KV: { Verb: "check-not-exists", Key: "txn/a" } }]));

  step("acl policies and tokens (through the request layer)");
  const json = (name, method, path, body) =>
    c[method]({ name, path, type: "json", body, headers: { "x-consul-token": root.SecretID } }).then(
      (res) => res.body,
    );
  const policy = await json("acl.policy.create", "_put", "/acl/policy", {
    Name: "readonly",
    Rules: 'key_prefix "app/" { policy = "read" }',
  });
  assert.strictEqual((await json("acl.policy.read", "_get", `/acl/policy/${policy.ID}`)).Name, "readonly");
  const token = await json("acl.token.create", "_put", "/acl/token", {
    Description: "reader",
    Policies: [{ ID: policy.ID }],
  });
  const readBack = await json("acl.token.read", "_get", `/acl/token/${token.AccessorID}`);
  assert.strictEqual(readBack.Policies[0].ID, policy.ID);
  const reader = client(token.SecretID);
  assert.strictEqual((await reader.kv.get("app/config")).Value, "v3");

  step("acl denial is a 403");
  await expectStatus(403, reader.kv.set("app/config", "nope"));
  await expectStatus(403, reader.kv.get("lock/leader"));
  await expectStatus(403, anonymous.kv.get("app/config"));
  assert.strictEqual(await json("acl.token.delete", "_delete", `/acl/token/${token.AccessorID}`), true);
  assert.strictEqual(await json("acl.policy.delete", "_delete", `/acl/policy/${policy.ID}`), true);
  await expectStatus(403, reader.kv.get("app/config"));

  step("catalog register and read, health with passing and a blocking read, deregister");
  const registration = (status) => ({
    node: "web-1",
    address: "10.0.0.5",
    nodemeta: { rack: "r1" },
    service: { id: "web-a", service: "web", tags: ["primary", "v1"], port: 80 },
    check: { checkid: "web-alive", name: "web alive", serviceid: "web-a", status },
  });
  await c.catalog.register(registration("passing"));
  assert.deepStrictEqual((await c.catalog.service.list()).web, ["primary", "v1"]);
  const nodes = await c.catalog.node.list();
  assert.ok(nodes.some((n) => n.Node === "web-1" && n.Meta.rack === "r1"), JSON.stringify(nodes));
  const instances = await c.catalog.service.nodes({ service: "web", tag: "primary" });
  assert.deepStrictEqual(instances.map((i) => i.ServiceID), ["web-a"]);
  const onNode = await c.catalog.node.services("web-1");
  assert.strictEqual(onNode.Services["web-a"].Port, 80);
  const [healthIndex, healthy] = await withIndex((o) => c.health.service(o), {
    service: "web",
    passing: true,
  });
  assert.deepStrictEqual(healthy.map((h) => h.Service.ID), ["web-a"]);
  await c.catalog.register(registration("critical"));
  const [newIndex, after] = await withIndex((o) => c.health.service(o), {
    service: "web",
    passing: true,
    index: healthIndex,
    wait: "5s",
  });
  assert.ok(newIndex > healthIndex, `${newIndex} > ${healthIndex}`);
  assert.deepStrictEqual(after, []);
  const critical = await c.health.state("critical");
  assert.ok(critical.some((ch) => ch.CheckID === "web-alive"), JSON.stringify(critical));
  const checks = await c.health.checks("web");
  assert.deepStrictEqual(checks.map((ch) => ch.Status), ["critical"]);
  const nodeChecks = await c.health.node("web-1");
  assert.deepStrictEqual(nodeChecks.map((ch) => ch.CheckID), ["web-alive"]);
  assert.deepStrictEqual(await anonymous.catalog.service.list(), {});
  await c.catalog.deregister({ node: "web-1", serviceid: "web-a" });
  assert.strictEqual((await c.catalog.service.list()).web, undefined);
  await c.catalog.deregister("web-1");

  step("agent: self, members, a service with a TTL check, pass and fail, maintenance, deregister");
  const self = await c.agent.self();
  const members = await c.agent.members();
  assert.ok(members.some((m) => m.Name === self.Config.NodeName), JSON.stringify(members));
  await c.agent.service.register({ name: "api", id: "api-1", port: 8080, tags: ["v2"], check: { ttl: "30s" } });
  assert.strictEqual((await c.agent.service.list())["api-1"].Service, "api");
  const ttlCheck = "service:api-1";
  assert.strictEqual((await c.agent.check.list())[ttlCheck].Status, "critical");
  await c.agent.check.pass({ id: ttlCheck, note: "all good" });
  const passed = (await c.agent.check.list())[ttlCheck];
  assert.deepStrictEqual([passed.Status, passed.Output], ["passing", "all good"]);
  // Anti-entropy carries the agent's service to the catalog.
  await eventually("api passing in the catalog", async () => (await c.health.service({ service: "api", passing: true })).length === 1);
  await c.agent.check.fail({ id: ttlCheck, note: "down" });
  await eventually("api gone from ?passing", async () => (await c.health.service({ service: "api", passing: true })).length === 0);
  await c.agent.service.maintenance({ id: "api-1", enable: true, reason: "upgrade" });
  const inMaintenance = (await c.agent.check.list())["_service_maintenance:api-1"];
  assert.deepStrictEqual([inMaintenance.Status, inMaintenance.Notes], ["critical", "upgrade"]);
  await c.agent.service.maintenance({ id: "api-1", enable: false });
  assert.strictEqual((await c.agent.check.list())["_service_maintenance:api-1"], undefined);
  await c.agent.service.deregister("api-1");
  assert.strictEqual((await c.agent.service.list())["api-1"], undefined);
  await eventually("api gone from the catalog", async () => (await c.catalog.service.list()).api === undefined);

  step("events: fire with a payload, list by name");
  const fired = await c.event.fire("deploy", "v42");
  assert.strictEqual(fired.Name, "deploy");
  const listed = await eventually("the event in the agent's list", async () =>
    (await c.event.list("deploy")).find((e) => e.ID === fired.ID),
  );
  assert.strictEqual(listed.Payload, "v42");

  step("watch: a key's changes reach the package's watcher");
  assert.strictEqual(await c.kv.set("watched/key", "one"), true);
  const watch = c.watch({ method: c.kv.get, options: { key: "watched/key" }, backofffactor: 100 });
  const values = [];
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the watch saw ${JSON.stringify(values)}`)), 15000);
      watch.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      watch.on("change", (data) => {
        values.push(data && data.Value);
        if (values.length === 1) {
          c.kv.set("watched/key", "two").catch(reject);
        } else if (data && data.Value === "two") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    watch.end();
  }
  assert.deepStrictEqual(values, ["one", "two"]);

  step("snapshot save and restore (through the request layer)");
  const saved = await c._get({
    name: "snapshot.save",
    path: "/snapshot",
    buffer: true,
    headers: { "x-consul-token": root.SecretID },
  });
  const archive = saved.body;
  assert.ok(Buffer.isBuffer(archive) && archive.length > 0, "an archive");
  assert.strictEqual(await c.kv.set("app/config", "after-save"), true);
  assert.strictEqual(await c.kv.set("app/extra", "x"), true);
  await c._put({
    name: "snapshot.restore",
    path: "/snapshot",
    body: archive,
    headers: { "x-consul-token": root.SecretID, "content-type": "application/octet-stream" },
  });
  assert.strictEqual((await c.kv.get("app/config")).Value, "v3");
  assert.strictEqual(await c.kv.get("app/extra"), undefined);
  assert.strictEqual(await c.kv.set("app/after-restore", "ok"), true);

  console.log("npm consul: all steps passed");
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  if (err && err.response) {
    console.error(`response: ${err.response.statusCode} ${JSON.stringify(err.response.body)}`);
  }
  process.exit(1);
});
