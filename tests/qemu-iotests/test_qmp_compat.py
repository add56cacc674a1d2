"""What QMP clients written for QEMU expect: the version rule and OOB.

Both behaviours are checked unchanged against qemu-storage-daemon 7.2
(see docs/interop/qmp-compatibility.rst).

iotests groups: quick
"""

import json

import pytest

pytestmark = pytest.mark.quick

GE = "GenericError"


def test_version_is_qemu_interface_level(daemon):
    """"qemu" is the QEMU release whose interface is implemented (7.2)."""
    ret = daemon.command("query-version")
    # Distributions put their patch level in micro (Debian: 22); blockd 0.
    assert (ret["qemu"]["major"], ret["qemu"]["minor"]) == (7, 2)
    assert daemon.qmp.greeting["QMP"]["version"] == ret


def test_greeting_offers_oob(daemon):
    assert daemon.qmp.greeting["QMP"]["capabilities"] == ["oob"]


def _raw(q, request):
    return q.cmd_raw(json.dumps(request).encode() + b"\n")


def test_exec_oob_before_enabling(daemon_factory):
    """Until "oob" is enabled, exec-oob is not part of the request language."""
    d = daemon_factory(monitors=2)
    q = d.connect_monitor(1, negotiate=False)
    unexpected = {"id": 1, "error": {
        "class": GE, "desc": "QMP input member 'exec-oob' is unexpected"}}
    try:
        assert _raw(q, {"exec-oob": "query-version", "id": 1}) == unexpected
        assert q.cmd("qmp_capabilities", {"enable": []}) == {"return": {}}
        assert _raw(q, {"exec-oob": "query-version", "id": 1}) == unexpected
    finally:
        q.close()


@pytest.mark.parametrize("command,error_class,desc", [
    ("query-version", GE, "The command query-version does not support OOB"),
    ("quit", GE, "The command quit does not support OOB"),
    ("no-such-command", "CommandNotFound",
     "The command no-such-command has not been found"),
    # QEMU's test command is not built into the storage daemon.
    ("x-oob-test", "CommandNotFound", "The command x-oob-test has not been found"),
])
def test_exec_oob_with_oob_enabled(daemon_factory, command, error_class, desc):
    d = daemon_factory(monitors=2)
    q = d.connect_monitor(1, negotiate=False)
    try:
        assert q.cmd("qmp_capabilities", {"enable": ["oob"]}) == {"return": {}}
        resp = _raw(q, {"exec-oob": command, "id": "o"})
        assert resp == {"id": "o", "error": {"class": error_class, "desc": desc}}
        # Both keys at once stay an error; plain execute still works.
        resp = _raw(q, {"exec-oob": "query-version", "execute": "query-version"})
        assert resp["error"]["class"] == GE
        assert "return" in q.cmd("query-version")
    finally:
        q.close()
    d.assert_alive()


def test_no_command_allows_oob(daemon):
    """Like qemu-storage-daemon 7.2, no command is marked allow-oob."""
    schema = daemon.command("query-qmp-schema")
    assert [e["name"] for e in schema if e.get("allow-oob")] == []
