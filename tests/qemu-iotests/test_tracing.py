"""Tracing, as in QEMU: --trace / -T, the log backend, and the QMP commands.

The option's forms and its errors are qemu-storage-daemon's, so those tests
run against both daemons with the "nbd_*" events that both have.  Event
names differ between the two, so the tests that follow blockd's request
path event by event are blockd_only, and so are the tests of
trace-event-get-state and trace-event-set-state: qemu-storage-daemon 7.2
leaves those commands out (they are QEMU's, from its system emulator).

iotests groups: quick
"""

import os
import re
from typing import List

import pytest

import iotests
from iotests import (MiB, create_image, nbd_uri, qemu_io_cmds, run,
                     start_daemon_expect_failure)

pytestmark = pytest.mark.quick

# "name args": the log backend's line, as qemu-storage-daemon prints it.
LOG_LINE = re.compile(r"^([a-z0-9_]+) (.*)$")


def trace_lines(text: str, prefix: str = "") -> List[str]:
    """The log backend's lines in ``text`` whose event starts with ``prefix``."""
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m and m.group(1).startswith(prefix):
            out.append(line)
    return out


def exported_image(daemon_factory, scratch, *trace_args, fmt="raw"):
    """A daemon with ``trace_args``, exporting a new image writable as "e"."""
    img = os.path.join(scratch, f"img.{fmt}")
    create_image(img, 4 * MiB, fmt=fmt)
    d = daemon_factory(*trace_args)
    d.command("blockdev-add", {"driver": "file", "node-name": "f",
                               "filename": img})
    d.command("blockdev-add", {"driver": fmt, "node-name": "n", "file": "f"})
    sock = d.start_nbd_unix()
    d.export("n", writable=True)
    return d, nbd_uri(sock, "n")


def test_help_mentions_trace():
    res = run([iotests.require_binary(), "--help"])
    assert "-T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]" in res.stdout


@pytest.mark.parametrize("form", [["--trace", "nbd_*"], ["-T", "nbd_*"],
                                  ["--trace", "enable=nbd_*"], ["-T", "enable=nbd_*"]])
def test_trace_option_forms(daemon_factory, scratch, form):
    d, uri = exported_image(daemon_factory, scratch, *form)
    before = len(trace_lines(d.stderr(), "nbd_"))
    qemu_io_cmds(uri, ["read 0 4k"])
    assert len(trace_lines(d.stderr(), "nbd_")) > before, d.stderr()


def test_trace_off_by_default(daemon_factory, scratch):
    d, uri = exported_image(daemon_factory, scratch)
    qemu_io_cmds(uri, ["write 0 4k", "read 0 4k"])
    assert trace_lines(d.stderr(), "nbd_") == []


def test_trace_file(daemon_factory, scratch):
    log = os.path.join(scratch, "trace.log")
    d, uri = exported_image(daemon_factory, scratch, "--trace", f"nbd_*,file={log}")
    qemu_io_cmds(uri, ["read 0 4k"])
    with open(log) as f:
        assert trace_lines(f.read(), "nbd_"), "nothing traced to file="
    assert trace_lines(d.stderr(), "nbd_") == []


def test_trace_events_file(daemon_factory, scratch):
    # One pattern a line, '#' comments, and "-PATTERN" disables again.
    events = os.path.join(scratch, "events")
    with open(events, "w") as f:
        f.write("# NBD, but not its negotiation\n\nnbd_*\n-nbd_negotiate*\n")
    d, uri = exported_image(daemon_factory, scratch, "--trace", f"events={events}")
    qemu_io_cmds(uri, ["read 0 4k"])
    lines = trace_lines(d.stderr(), "nbd_")
    assert lines, d.stderr()
    assert not [line for line in lines if line.startswith("nbd_negotiate")], lines


def test_trace_unknown_event_warns(daemon_factory):
    # A name that matches no event only warns; a pattern that matches none
    # does not even warn.
    d = daemon_factory("--trace", "no_such_event", "--trace", "no_such_*")
    assert ("--trace no_such_event: warning: trace event 'no_such_event' "
            "does not exist") in d.stderr()
    assert "no_such_*" not in d.stderr()


@pytest.mark.parametrize("arg, message", [
    ("foo=bar", "--trace foo=bar: Invalid parameter 'foo'"),
    ("nbd_*,file=/nonexistent/trace.log",
     "--trace nbd_*,file=/nonexistent/trace.log: Error opening logfile "
     "/nonexistent/trace.log: No such file or directory"),
    ("events=/nonexistent/events", "/nonexistent/events: No such file or directory"),
])
def test_trace_option_errors(arg, message):
    res = start_daemon_expect_failure(["--trace", arg])
    assert res.returncode == 1
    assert message in res.stderr, res.stderr


def test_trace_missing_argument():
    res = start_daemon_expect_failure(["-T"])
    assert res.returncode == 1
    # getopt's words differ: "option requires an argument -- 'T'" (qsd),
    # "option '-T' requires an argument" (blockd).
    assert "requires an argument" in res.stderr and "T" in res.stderr, res.stderr


# -- blockd's own events ------------------------------------------------------

@iotests.blockd_only("the event names are blockd's")
def test_request_path_of_one_write(daemon_factory, scratch):
    # One qemu-io write to a new qcow2 image, traced from the NBD request
    # to its reply: the request, the write entering the qcow2 node, the
    # cluster allocation, the write leaving the qcow2 node, the reply.
    log = os.path.join(scratch, "trace.log")
    d, uri = exported_image(daemon_factory, scratch,
                            "--trace", f"nbd_co_*,file={log}",
                            "--trace", "bdrv_co_pwrite*", "--trace", "qcow2_alloc_*",
                            fmt="qcow2")
    qemu_io_cmds(uri, ["write -P 0x5a 64k 64k"])
    with open(log) as f:
        lines = trace_lines(f.read())

    def index(event: str, *fields: str) -> int:
        for i, line in enumerate(lines):
            if line.startswith(event + " ") and all(x in line.split() for x in fields):
                return i
        pytest.fail(f"no {event} {fields} in:\n" + "\n".join(lines))

    request = index("nbd_co_receive_one", "type", "1", "offset", "65536")
    cookie = lines[request].split()[lines[request].split().index("cookie") + 1]
    node = lines[index("bdrv_co_pwrite", "offset", "65536")].split()[2]
    write = index("bdrv_co_pwrite", "bs", node, "offset", "65536")
    alloc = index("qcow2_alloc_write", "bs", node, "0x10000")
    done = index("bdrv_co_pwrite_done", "bs", node, "offset", "65536")
    reply = index("nbd_co_send_simple", "cookie", cookie)
    assert request < write < alloc < done < reply, "\n".join(lines)
    assert lines[done].endswith(" ret 0")
    assert lines[reply].split()[lines[reply].split().index("error") + 1] == "0"


@iotests.blockd_only("qemu-storage-daemon 7.2 has no trace-event-get-state")
def test_get_state(daemon_factory):
    d = daemon_factory("--trace", "nbd_co_receive_one")
    assert d.command("trace-event-get-state", name="nbd_co_receive_one") == [
        {"name": "nbd_co_receive_one", "state": "enabled", "vcpu": False}]
    assert d.command("trace-event-get-state", name="bdrv_co_flush") == [
        {"name": "bdrv_co_flush", "state": "disabled", "vcpu": False}]
    # Patterns: '*' any run of characters, '?' one character.
    names = sorted(e["name"] for e in d.command("trace-event-get-state", name="bdrv_co_p*"))
    assert names == ["bdrv_co_pdiscard", "bdrv_co_pread", "bdrv_co_pread_done",
                     "bdrv_co_pwrite", "bdrv_co_pwrite_done", "bdrv_co_pwrite_zeroes",
                     "bdrv_co_pwrite_zeroes_done"]
    names = sorted(e["name"] for e in d.command("trace-event-get-state",
                                                name="bdrv_co_p????"))
    assert names == ["bdrv_co_pread"]
    everything = d.command("trace-event-get-state", name="*")
    assert {e["state"] for e in everything} == {"enabled", "disabled"}
    assert all(e["vcpu"] is False for e in everything)
    assert d.command("trace-event-get-state", name="no_such_*") == []


@iotests.blockd_only("qemu-storage-daemon 7.2 has no trace-event-set-state")
def test_set_state_at_run_time(daemon_factory, scratch):
    d, uri = exported_image(daemon_factory, scratch)
    qemu_io_cmds(uri, ["read 0 4k"])
    assert trace_lines(d.stderr(), "nbd_co_") == []

    assert d.command("trace-event-set-state", name="nbd_co_*", enable=True) == {}
    states = d.command("trace-event-get-state", name="nbd_co_*")
    assert states and all(e["state"] == "enabled" for e in states)
    qemu_io_cmds(uri, ["read 0 4k"])
    traced = trace_lines(d.stderr(), "nbd_co_")
    assert [x for x in traced if x.startswith("nbd_co_receive_one ")], traced

    d.command("trace-event-set-state",
              {"name": "nbd_co_receive_one", "enable": False, "ignore-unavailable": True})
    assert d.command("trace-event-get-state", name="nbd_co_receive_one")[0]["state"] \
        == "disabled"
    before = len(trace_lines(d.stderr(), "nbd_co_receive_one "))
    qemu_io_cmds(uri, ["read 0 4k"])
    assert len(trace_lines(d.stderr(), "nbd_co_receive_one ")) == before


@iotests.blockd_only("qemu-storage-daemon 7.2 has no trace-event-*-state")
@pytest.mark.parametrize("command, args, desc", [
    ("trace-event-get-state", {"name": "no_such_event"}, 'unknown event "no_such_event"'),
    ("trace-event-set-state", {"name": "no_such_event", "enable": True},
     'unknown event "no_such_event"'),
    ("trace-event-set-state", {"name": "no_such_event", "enable": True,
                               "ignore-unavailable": True},
     'unknown event "no_such_event"'),
    ("trace-event-get-state", {"name": "nbd_co_receive_one", "vcpu": 0},
     "invalid vCPU index 0"),
    ("trace-event-set-state", {"name": "nbd_*", "enable": True, "vcpu": 1},
     "invalid vCPU index 1"),
])
def test_qmp_errors(daemon, command, args, desc):
    # QEMU's messages (trace/qmp.c): a storage daemon has no vCPUs.
    assert daemon.cmd(command, args) == {"error": {"class": "GenericError", "desc": desc}}


@iotests.blockd_only("qemu-storage-daemon 7.2 has no trace-event-set-state")
def test_set_state_argument_checks(daemon):
    resp = daemon.cmd("trace-event-set-state", {"name": "nbd_*"})
    assert resp["error"]["class"] == "GenericError"
    assert resp["error"]["desc"] == "Parameter 'enable' is missing"
