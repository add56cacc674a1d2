"""QMP basics: greeting, capability negotiation, ids, introspection, events.

iotests groups: quick
"""

import pytest

from qmp import QMP

pytestmark = pytest.mark.quick

# Everything blockd must implement (see docs/interop/qmp-compatibility.rst).
REQUIRED_COMMANDS = [
    "qmp_capabilities", "query-version", "query-commands", "query-qmp-schema", "quit",
    "blockdev-add", "blockdev-del", "query-named-block-nodes", "nbd-server-start",
    "nbd-server-stop", "block-export-add", "block-export-del", "query-block-exports",
]

NOT_NEGOTIATED = "Expecting capabilities negotiation with 'qmp_capabilities'"


def test_greeting_shape(daemon):
    greeting = daemon.qmp.greeting
    assert set(greeting) == {"QMP"}
    body = greeting["QMP"]
    assert set(body) == {"version", "capabilities"}
    assert isinstance(body["capabilities"], list)
    ver = body["version"]
    assert set(ver) == {"qemu", "package"}
    assert isinstance(ver["package"], str)
    assert set(ver["qemu"]) == {"major", "minor", "micro"}
    assert all(isinstance(ver["qemu"][k], int) for k in ver["qemu"])


def test_commands_before_negotiation(daemon_factory):
    d = daemon_factory(monitors=2)
    q = d.connect_monitor(1, negotiate=False)
    try:
        for name in ("query-version", "quit", "blockdev-add", "no-such-command"):
            resp = q.cmd(name)
            assert resp == {"error": {"class": "CommandNotFound", "desc": NOT_NEGOTIATED}}
        # The id is echoed even for refused commands.
        assert q.cmd("query-version", cmd_id=7) == {
            "id": 7, "error": {"class": "CommandNotFound", "desc": NOT_NEGOTIATED}}
        assert q.cmd("qmp_capabilities", cmd_id="neg") == {"return": {}, "id": "neg"}
        assert "return" in q.cmd("query-version")
        # A second negotiation is refused.
        assert q.cmd("qmp_capabilities") == {"error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored"}}
    finally:
        q.close()
    d.assert_alive()


@pytest.mark.parametrize("cmd_id", [0, 17, -3, 2**53, 1.5, "abc", "", {"a": [1, {"b": None}]},
                                    [1, "x"], True, None])
def test_id_echoed(daemon, cmd_id):
    # None means an explicit JSON null id; the QMP client only adds "id" when
    # it is not None, so build that request by hand.
    if cmd_id is None:
        resp = daemon.qmp.cmd_raw(b'{"execute": "query-version", "id": null}\n')
        assert "id" in resp and resp["id"] is None
    else:
        resp = daemon.cmd("query-version", cmd_id=cmd_id)
        assert resp["id"] == cmd_id
    assert "return" in resp
    # Errors echo the id too.
    resp = daemon.cmd("no-such-command", cmd_id="err-id")
    assert resp["id"] == "err-id"
    assert resp["error"]["class"] == "CommandNotFound"


def test_query_version_shape(daemon):
    ret = daemon.command("query-version")
    assert set(ret) == {"qemu", "package"}
    assert set(ret["qemu"]) == {"major", "minor", "micro"}
    assert all(isinstance(v, int) and v >= 0 for v in ret["qemu"].values())
    assert isinstance(ret["package"], str)
    # The greeting announces the same version.
    assert daemon.qmp.greeting["QMP"]["version"] == ret


def test_query_commands(daemon):
    ret = daemon.command("query-commands")
    assert isinstance(ret, list)
    assert all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in ret)
    names = [c["name"] for c in ret]
    assert len(names) == len(set(names)), "duplicate command names"
    missing = [c for c in REQUIRED_COMMANDS if c not in names]
    assert not missing, f"query-commands lacks {missing}"


def test_query_qmp_schema(daemon):
    schema = daemon.command("query-qmp-schema")
    assert isinstance(schema, list) and schema
    for entry in schema:
        assert isinstance(entry, dict)
        assert isinstance(entry.get("name"), str)
        assert entry.get("meta-type") in {"command", "event", "object", "enum", "array",
                                          "alternate", "builtin"}
    by_name = {e["name"]: e for e in schema}
    for cmd in REQUIRED_COMMANDS:
        assert cmd in by_name, f"schema lacks {cmd}"
        e = by_name[cmd]
        assert e["meta-type"] == "command"
        # arg-type and ret-type refer to entries of the schema itself.
        assert e["arg-type"] in by_name
        assert e["ret-type"] in by_name
    assert by_name["BLOCK_EXPORT_DELETED"]["meta-type"] == "event"
    # blockdev-del takes a mandatory string node-name.
    args = by_name[by_name["blockdev-del"]["arg-type"]]
    assert args["meta-type"] == "object"
    members = {m["name"]: m for m in args["members"]}
    assert by_name[members["node-name"]["type"]]["json-type"] == "string"
    assert "default" not in members["node-name"]


def test_two_monitors_get_events(daemon_factory):
    d = daemon_factory(monitors=2)
    q2 = d.connect_monitor(1)
    try:
        d.command("blockdev-add", driver="null-co", node_name="n", size=1 << 20)
        d.start_nbd_unix()
        d.export("n", export_id="ev")
        d.command("block-export-del", id="ev")
        ev1 = d.qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=10)
        ev2 = q2.wait_event("BLOCK_EXPORT_DELETED", timeout=10)
        assert ev1["data"] == {"id": "ev"} == ev2["data"]
        assert ev1 == ev2, "both monitors see the same event (same timestamp)"
        ts = ev1["timestamp"]
        assert set(ts) == {"seconds", "microseconds"}
        assert isinstance(ts["seconds"], int) and 0 <= ts["microseconds"] < 1000000
        # Commands work on both monitors concurrently.
        assert "return" in q2.cmd("query-block-exports")
        assert "return" in d.cmd("query-block-exports")
    finally:
        q2.close()


def test_quit(daemon):
    assert daemon.cmd("quit") == {"return": {}}
    assert daemon.wait_exit() in (0, None)
    # After quit the monitor connection is closed by the daemon.
    with pytest.raises(Exception):
        daemon.qmp.read_response(timeout=5)


def test_monitor_reconnect(daemon):
    daemon.qmp.close()
    for _ in range(3):
        with QMP(daemon.monitor_paths[0]) as q:
            assert "return" in q.cmd("query-version")
    daemon.qmp = QMP(daemon.monitor_paths[0])
