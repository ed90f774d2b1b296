"""py-consul (PyPI `py-consul`, pinned in requirements.txt) against a running Tribune node.

Run by tests/t08_clients.rs with TRIBUNE_HTTP_ADDR=host:port of a fresh node with ACLs enabled,
default policy deny and no token yet. Every step asserts what Consul answers; the first failure
ends the run with a non-zero status and says which step failed.
"""

import base64
import os
import sys
import threading
import time

import consul
from consul.exceptions import ACLPermissionDenied

HOST, PORT = os.environ["TRIBUNE_HTTP_ADDR"].rsplit(":", 1)


def client(token=None):
    return consul.Consul(host=HOST, port=int(PORT), token=token)


def step(name):
    print(f"py-consul: {name}", flush=True)


def main():
    anonymous = client()

    step("status")
    leader = anonymous.status.leader()
    assert leader, f"no leader: {leader!r}"
    assert anonymous.status.peers() == [leader], anonymous.status.peers()

    step("acl bootstrap")
    root = anonymous.acl.bootstrap()
    secret = root["SecretID"]
    assert root["Policies"][0]["Name"] == "global-management", root
    c = client(secret)

    step("kv put/get, flags")
    assert c.kv.put("app/config", "v1", flags=42) is True
    index, entry = c.kv.get("app/config")
    assert entry["Value"] == b"v1" and entry["Flags"] == 42, entry
    # py-consul returns X-Consul-Index as the header's string.
    assert int(index) >= entry["ModifyIndex"], (index, entry)
    assert c.kv.get("app/missing")[1] is None

    step("kv cas")
    assert c.kv.put("app/config", "stale", cas=entry["ModifyIndex"] - 1) is False
    assert c.kv.put("app/config", "v2", cas=entry["ModifyIndex"]) is True
    assert c.kv.put("app/new", "x", cas=0) is True
    assert c.kv.put("app/new", "y", cas=0) is False

    step("kv recurse and keys with a separator")
    for key in ["tree/a", "tree/b/1", "tree/b/2", "tree/c"]:
        assert c.kv.put(key, key) is True
    _, entries = c.kv.get("tree/", recurse=True)
    assert [e["Key"] for e in entries] == ["tree/a", "tree/b/1", "tree/b/2", "tree/c"], entries
    _, keys = c.kv.get("tree/", keys=True, separator="/")
    assert keys == ["tree/a", "tree/b/", "tree/c"], keys
    assert c.kv.delete("tree/", recurse=True) is True
    assert c.kv.get("tree/", recurse=True)[1] is None

    step("kv blocking query (index, wait)")
    index, _ = c.kv.get("app/config")
    index = int(index)
    started = time.monotonic()
    same, _ = c.kv.get("app/config", index=index, wait="300ms")
    assert int(same) == index and time.monotonic() - started >= 0.25, (same, index)
    writer = threading.Timer(0.3, lambda: c.kv.put("app/config", "v3"))
    writer.start()
    newer, entry = c.kv.get("app/config", index=index, wait="20s")
    writer.join()
    assert int(newer) > index and entry["Value"] == b"v3", (newer, entry)

    step("sessions: create, info, renew, list, acquire, release, destroy")
    session = c.session.create(name="py", ttl=30, lock_delay=0)
    _, info = c.session.info(session)
    assert info["ID"] == session and info["TTL"] == "30s", info
    renewed = c.session.renew(session)
    assert renewed["ID"] == session, renewed
    _, sessions = c.session.list()
    assert session in [s["ID"] for s in sessions], sessions
    _, node_sessions = c.session.node(info["Node"])
    assert session in [s["ID"] for s in node_sessions], node_sessions
    assert c.kv.put("lock/leader", "me", acquire=session) is True
    other = c.session.create(name="other", lock_delay=0)
    assert c.kv.put("lock/leader", "them", acquire=other) is False
    _, held = c.kv.get("lock/leader")
    assert held["Session"] == session and held["LockIndex"] == 1, held
    assert c.kv.put("lock/leader", "done", release=session) is True
    _, released = c.kv.get("lock/leader")
    assert "Session" not in released or released["Session"] is None, released
    assert c.session.destroy(session) is True
    assert c.session.info(session)[1] is None

    step("sessions: behavior delete")
    ephemeral = c.session.create(behavior="delete", lock_delay=0)
    assert c.kv.put("ephemeral/key", "x", acquire=ephemeral) is True
    assert c.session.destroy(ephemeral) is True
    assert c.kv.get("ephemeral/key")[1] is None
    c.session.destroy(other)

    step("agent tokens, and txn through the default token")
    # py-consul's txn.put sends no token: the agent's default token (set through py-consul) serves it.
    assert c.agent.token.set_default(secret) is True
    for kind in ("agent", "agent_recovery", "replication"):
        assert c.agent.token.set(kind, secret) is True
    value = base64.b64encode(b"t").decode()
    result = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": "txn/a", "Value": value}},
            {"KV": {"Verb": "get", "Key": "txn/a"}},
        ]
    )
    assert result["Results"][1]["KV"]["Value"] == value, result
    reads = c.txn.put([{"KV": {"Verb": "get", "Key": "txn/a"}}])
    assert reads["Results"][0]["KV"]["Key"] == "txn/a", reads
    try:
        c.txn.put([{"KV": {"Verb": "check-not-exists", "Key": "txn/a"}}])
        raise AssertionError("a failed check must be refused")
    except consul.ConsulException as e:
        assert "409" in str(e), e
    assert c.agent.token.set_default("") is True
    # As Consul: without the default token a read the anonymous token may not make is filtered out of
    # the results (Consul filters txn reads on the output side) ...
    hidden = c.txn.put([{"KV": {"Verb": "get", "Key": "txn/a"}}])
    assert not hidden.get("Results"), hidden
    # ... and a write it may not make fails the transaction with "Permission denied" (409).
    try:
        c.txn.put([{"KV": {"Verb": "set", "Key": "txn/a", "Value": value}}])
        raise AssertionError("without the default token the anonymous token may not write")
    except consul.ConsulException as e:
        assert "409" in str(e), e

    step("acl policies and tokens")
    # py-consul JSON-encodes `rules` itself: they are given as the JSON form of the rules.
    policy = c.acl.policy.create(name="readonly", rules={"key_prefix": {"app/": {"policy": "read"}}})
    assert c.acl.policy.read(policy["ID"])["Name"] == "readonly"
    assert "readonly" in [p["Name"] for p in c.acl.policy.list()]
    token = c.acl.token.create(description="reader", policies_id=[policy["ID"]])
    read_back = c.acl.token.read(token["AccessorID"])
    assert read_back["Policies"][0]["ID"] == policy["ID"], read_back
    assert token["AccessorID"] in [t["AccessorID"] for t in c.acl.token.list()]
    reader = client(token["SecretID"])
    assert reader.acl.token.read_self()["AccessorID"] == token["AccessorID"]
    assert reader.kv.get("app/config")[1]["Value"] == b"v3"

    step("acl token clone, update, filters, expiration, anonymous")
    twin = c.acl.token.clone(token["AccessorID"], description="twin")
    assert twin["AccessorID"] != token["AccessorID"] and twin["SecretID"] != token["SecretID"], twin
    assert twin["Description"] == "twin" and twin["Policies"][0]["ID"] == policy["ID"], twin
    updated = c.acl.token.update(twin["AccessorID"], description="renamed", policies_name=["readonly"])
    assert updated["Description"] == "renamed" and updated["Policies"][0]["Name"] == "readonly", updated
    by_policy = [t["AccessorID"] for t in c.acl.token.list(policy=policy["ID"])]
    assert sorted(by_policy) == sorted([token["AccessorID"], twin["AccessorID"]]), by_policy
    brief = c.acl.token.create(description="brief", expiration_ttl="1h")
    assert brief.get("ExpirationTime"), brief
    anonymous_token = c.acl.token.read("00000000-0000-0000-0000-000000000002")
    assert anonymous_token["Description"] == "Anonymous Token", anonymous_token
    assert c.acl.token.delete(twin["AccessorID"]) is True
    assert c.acl.token.delete(brief["AccessorID"]) is True

    step("acl denial is a 403")
    for denied in (
        lambda: reader.kv.put("app/config", "nope"),
        lambda: reader.kv.get("lock/leader"),
        lambda: anonymous.kv.get("app/config"),
        lambda: reader.acl.policy.list(),
        lambda: reader.snapshot.save(),
    ):
        try:
            denied()
            raise AssertionError("a denied call succeeded")
        except ACLPermissionDenied:
            pass
    assert c.acl.token.delete(token["AccessorID"]) is True
    assert c.acl.policy.delete(policy["ID"]) is True
    try:
        reader.kv.get("app/config")
        raise AssertionError("a deleted token still works")
    except ACLPermissionDenied:
        pass

    step("catalog register and read, health with passing and tag, a blocking health read, deregister")
    service = {"ID": "web-a", "Service": "web", "Tags": ["primary", "v1"], "Port": 80}
    check = {"CheckID": "web-alive", "Name": "web alive", "ServiceID": "web-a", "Status": "passing"}
    assert c.catalog.register("web-1", "10.0.0.5", service=service, check=check) is True
    _, services = c.catalog.services()
    assert services.get("web") == ["primary", "v1"], services
    _, nodes = c.catalog.nodes()
    assert "web-1" in [n["Node"] for n in nodes], nodes
    _, instances = c.catalog.service("web", tag="primary")
    assert [i["ServiceID"] for i in instances] == ["web-a"], instances
    _, node = c.catalog.node("web-1")
    assert node["Services"]["web-a"]["Port"] == 80, node
    index, healthy = c.health.service("web", passing=True)
    assert [h["Service"]["ID"] for h in healthy] == ["web-a"], healthy
    check["Status"] = "critical"
    assert c.catalog.register("web-1", "10.0.0.5", service=service, check=check) is True
    new_index, healthy = c.health.service("web", passing=True, index=index, wait="5s")
    assert healthy == [] and int(new_index) > int(index), (new_index, healthy)
    _, critical = c.health.state("critical")
    assert "web-alive" in [ch["CheckID"] for ch in critical], critical
    _, checks = c.health.checks("web")
    assert [ch["Status"] for ch in checks] == ["critical"], checks
    _, node_checks = c.health.node("web-1")
    assert [ch["CheckID"] for ch in node_checks] == ["web-alive"], node_checks
    # Under default deny, the anonymous token sees none of it.
    assert anonymous.catalog.services()[1] == {}
    assert anonymous.health.service("web")[1] == []
    assert c.catalog.deregister("web-1", service_id="web-a") is True
    assert "web" not in c.catalog.services()[1]
    assert c.catalog.deregister("web-1") is True
    assert c.catalog.node("web-1")[1] is None

    step("snapshot save and restore")
    archive = c.snapshot.save()
    assert isinstance(archive, bytes) and len(archive) > 0
    assert c.kv.put("app/config", "after-save") is True
    assert c.kv.put("app/extra", "x") is True
    assert c.snapshot.restore(archive) is True
    assert c.kv.get("app/config")[1]["Value"] == b"v3"
    assert c.kv.get("app/extra")[1] is None
    assert c.kv.put("app/after-restore", "ok") is True

    print("py-consul: all steps passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # report any failure as a non-zero exit with its traceback
        import traceback

        traceback.print_exc()
        sys.exit(1)
