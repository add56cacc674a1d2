"""The nbd block driver: the daemon as a client of a remote NBD server.

An ``nbd`` node points at nbdkit or qemu-nbd on a UNIX socket and is
re-exported by the daemon's own NBD server; real clients (qemu-img,
qemu-io, nbdinfo) use the re-export, and what reaches the remote server
is checked there (its data, its map, nbdkit's log of the commands).
Reconnection is tested by killing and restarting the server under load.
TLS (tls-creds, tls-hostname) is in test_nbd_client_tls.py.

iotests groups: rw, quick (the reconnect tests are slower)
"""

import contextlib
import json
import os
import re
import time

import pytest

import iotests
from iotests import (MiB, Reference, compare_images, create_image, free_tcp_port,
                     qemu_img, qemu_io_cmds, qemu_io_popen, run, wait_all)
from nbd_servers import Nbdkit, QemuNbd

pytestmark = pytest.mark.rw

SIZE = 64 * MiB
WRITES = [
    (0xAB, 0, MiB),
    (0xCD, 3 * MiB + 512, 64 * 1024),
    (0x01, 10 * MiB, 4 * MiB),
    (0xEF, SIZE - 4096, 4096),
]
EIO_TEXT = "Input/output error"


def add_nbd_node(daemon, server, node="remote", export=None, **opts):
    args = {"driver": "nbd", "node-name": node,
            "server": {"type": "unix", "path": server.sock}}
    if export is not None:
        args["export"] = export
    args.update({k.replace("_", "-"): v for k, v in opts.items()})
    daemon.command("blockdev-add", args)


def reexport(daemon, node="remote", name="vol"):
    """Export @node writable over the daemon's NBD server; return its URI."""
    sock = daemon.start_nbd_unix()
    daemon.export(node, name=name, writable=True)
    return iotests.nbd_uri(sock, name)


@contextlib.contextmanager
def nbdkit_node(daemon, scratch, plugin_args, filters=(), **node_opts):
    """nbdkit ``plugin_args`` (with ``filters``) behind the nbd node
    "remote", re-exported writable; yields (nbdkit, URI of the re-export)
    and stops nbdkit afterwards."""
    kit = Nbdkit(scratch, plugin_args, filters=filters).start()
    try:
        add_nbd_node(daemon, kit, **node_opts)
        yield kit, reexport(daemon)
    finally:
        kit.stop()


def nbd_map(uri):
    return run(["nbdinfo", "--map", uri]).stdout


def write_cmds(writes):
    return [f"write -q -P {p:#x} {off} {ln}" for p, off, ln in writes]


def read_cmds(writes):
    return [f"read -q -P {p:#x} {off} {ln}" for p, off, ln in writes]


# --- data reaches the server ------------------------------------------------

def test_convert_reaches_nbdkit(daemon, scratch):
    src = create_image(os.path.join(scratch, "src.img"), SIZE, patterns=WRITES)
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE)]) as (kit, uri):
        qemu_img("convert", "-n", "-f", "raw", "-O", "raw", src, uri)
        compare_images(src, kit.uri())
        qemu_io_cmds(uri, read_cmds(WRITES))
        daemon.assert_alive()


def test_writes_reach_qemu_nbd_file(daemon, scratch):
    img = create_image(os.path.join(scratch, "remote.img"), SIZE)
    ref = Reference(SIZE)
    for p, off, ln in WRITES:
        ref.write(p, off, ln)
    server = QemuNbd(scratch, img, export="disk").start()
    try:
        add_nbd_node(daemon, server, export="disk")
        uri = reexport(daemon)
        qemu_io_cmds(uri, write_cmds(WRITES) + ["flush"])
        qemu_io_cmds(uri, read_cmds(WRITES))
        daemon.del_export("e")
        daemon.command("blockdev-del", node_name="remote")
    finally:
        server.stop()
    ref.check_file(img)


def test_read_only_export_needs_read_only_node(daemon, scratch):
    kit = Nbdkit(scratch, ["-r", "memory", str(SIZE)]).start()
    try:
        resp = daemon.cmd("blockdev-add", {
            "driver": "nbd", "node-name": "remote",
            "server": {"type": "unix", "path": kit.sock}})
        assert resp["error"]["desc"] == "Could not open image: Permission denied", resp
        add_nbd_node(daemon, kit, read_only=True)
        add_nbd_node(daemon, kit, node="auto", auto_read_only=True)
        nodes = daemon.command("query-named-block-nodes", flat=True)
        assert [n["ro"] for n in nodes] == [True, True]
    finally:
        kit.stop()


# --- what passes through -----------------------------------------------------

def test_block_status_passes_through(daemon, scratch):
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE)]) as (kit, uri):
        qemu_io_cmds(kit.uri(), write_cmds(WRITES))
        direct = nbd_map(kit.uri())
        assert "hole" in direct and "data" in direct
        assert nbd_map(uri) == direct


def _kit_commands(log_path):
    """nbdkit's log filter: the data commands, as (name, fields) pairs."""
    with open(log_path) as f:
        text = f.read()
    out = []
    for m in re.finditer(r"connection=\d+ (Write|Zero|Trim|Flush) id=\d+ ([^.\n]*)\.\.\.",
                         text):
        fields = dict(kv.split("=", 1) for kv in m.group(2).split())
        out.append((m.group(1), fields))
    return out


def test_zero_trim_fua_pass_through(daemon, scratch):
    log = os.path.join(scratch, "kit-commands.log")
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE), f"logfile={log}"],
                     filters=["log"], discard="unmap") as (_, uri):
        qemu_io_cmds(uri, ["write -z 0 64k",          # NO_HOLE
                           "write -z -u 64k 64k",     # may punch a hole
                           "discard 128k 64k",
                           "write -f -P 7 192k 4k"],  # FUA
                     extra=["-t", "writeback"])
        cmds = _kit_commands(log)
        assert ("Zero", {"offset": "0x0", "count": "0x10000", "trim": "0",
                         "fua": "0", "fast": "0"}) in cmds, cmds
        assert ("Zero", {"offset": "0x10000", "count": "0x10000", "trim": "1",
                         "fua": "0", "fast": "0"}) in cmds, cmds
        assert ("Trim", {"offset": "0x20000", "count": "0x10000", "fua": "0"}) in cmds, cmds
        assert ("Write", {"offset": "0x30000", "count": "0x1000", "fua": "1"}) in cmds, cmds


# --- reconnecting ------------------------------------------------------------

def _kill_and_restart(server, down_seconds):
    server.kill()
    time.sleep(down_seconds)
    server.start()


@pytest.mark.slow
def test_reconnect_within_delay(daemon, scratch):
    """Writes in flight and queued while the server restarts all succeed."""
    img = create_image(os.path.join(scratch, "remote.img"), SIZE)
    kit = Nbdkit(scratch, ["file", img], filters=["delay"], name="kit")
    kit.plugin_args += ["delay-write=2"]
    kit.start()
    writes = [(0x10 + i, i * MiB, 256 * 1024) for i in range(16)]
    try:
        add_nbd_node(daemon, kit, reconnect_delay=60)
        uri = reexport(daemon)
        io = qemu_io_popen(uri, [f"aio_write -P {p:#x} {off} {ln}" for p, off, ln in writes]
                           + ["aio_flush"])
        time.sleep(0.5)             # the writes wait in the server
        _kill_and_restart(kit, 1.0)
        wait_all([io])
        qemu_io_cmds(kit.uri(), read_cmds(writes))
        daemon.assert_alive()
        # Closing flushes, and a flush would wait out the delay (as in QEMU)
        # if the server were gone first.
        daemon.del_export("e")
        daemon.command("blockdev-del", node_name="remote")
    finally:
        kit.stop()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0, 1])
def test_reconnect_delay_expired(daemon, scratch, delay):
    """Past reconnect-delay requests fail with EIO; once the server is back
    (the driver keeps reconnecting) requests work again."""
    img = create_image(os.path.join(scratch, "remote.img"), SIZE)
    kit = Nbdkit(scratch, ["file", img]).start()
    try:
        add_nbd_node(daemon, kit, reconnect_delay=delay)
        uri = reexport(daemon)
        qemu_io_cmds(uri, write_cmds(WRITES[:1]))
        # The delay runs from the loss of the connection.
        start = time.monotonic()
        kit.kill()
        res = qemu_io_cmds(uri, ["write -P 0x22 0 64k"], check=False)
        assert EIO_TEXT in res.output, res
        assert time.monotonic() - start >= delay * 0.9
        daemon.assert_alive()
        kit.start()
        deadline = time.monotonic() + 60
        while True:
            res = qemu_io_cmds(uri, ["write -q -P 0x33 0 64k"], check=False)
            if "error" not in res.output.lower():
                break
            assert EIO_TEXT in res.output, res
            assert time.monotonic() < deadline, "no reconnection within 60 s"
            time.sleep(0.5)
        qemu_io_cmds(kit.uri(), ["read -q -P 0x33 0 64k", "read -q -P 0xab 64k 960k"])
    finally:
        kit.stop()


# --- a faulty or slow server -------------------------------------------------

@pytest.mark.parametrize("errno_name,text", [("EIO", EIO_TEXT),
                                             ("ENOSPC", "No space left on device")])
def test_server_write_errors(daemon, scratch, errno_name, text):
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE), f"error-pwrite={errno_name}",
                                       "error-pwrite-rate=100%"],
                     filters=["error"]) as (_, uri):
        res = qemu_io_cmds(uri, ["write -P 1 0 64k"], check=False)
        assert text in res.output, res
        qemu_io_cmds(uri, ["read -q -P 0 0 64k"])
        daemon.assert_alive()


def test_server_read_errors(daemon, scratch):
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE), "error-pread=EIO",
                                       "error-pread-rate=100%"],
                     filters=["error"]) as (_, uri):
        # Data, so that no server skips the read of a known hole.
        qemu_io_cmds(uri, ["write -q -P 1 0 64k"])
        res = qemu_io_cmds(uri, ["read 0 64k"], check=False)
        assert EIO_TEXT in res.output, res
        qemu_io_cmds(uri, ["write -q -P 2 64k 64k"])
        daemon.assert_alive()


def test_many_requests_in_flight(daemon, scratch):
    """A slow server: many requests at once complete, with the right data."""
    writes = [(0x40 + i, i * 256 * 1024, 64 * 1024) for i in range(64)]
    with nbdkit_node(daemon, scratch, ["memory", str(SIZE), "delay-read=50ms",
                                       "delay-write=50ms"],
                     filters=["delay"]) as (kit, uri):
        clients = [qemu_io_popen(uri, [f"aio_write -P {p:#x} {off} {ln}"
                                       for p, off, ln in writes[k::4]] + ["aio_flush"])
                   for k in range(4)]
        wait_all(clients)
        qemu_io_cmds(uri, [f"aio_read -P {p:#x} {off} {ln}" for p, off, ln in writes]
                     + ["aio_flush"])
        qemu_io_cmds(kit.uri(), read_cmds(writes))


# --- bad options and failed connections --------------------------------------

def _add_error(daemon, args):
    resp = daemon.cmd("blockdev-add", {"driver": "nbd", "node-name": "remote", **args})
    assert "error" in resp, resp
    assert resp["error"]["class"] == "GenericError", resp
    assert daemon.command("query-named-block-nodes", flat=True) == []
    return resp["error"]["desc"]


def test_missing_server(daemon):
    assert _add_error(daemon, {}) == "Parameter 'server' is missing"


def test_unknown_socket(daemon, scratch):
    path = os.path.join(iotests._short_dir(), "missing.sock")
    assert _add_error(daemon, {"server": {"type": "unix", "path": path}}) == \
        f"Failed to connect to '{path}': No such file or directory"


def test_refused_tcp(daemon):
    port = free_tcp_port()
    assert _add_error(daemon, {"server": {"type": "inet", "host": "127.0.0.1",
                                          "port": str(port)}}) == \
        f"Failed to connect to '127.0.0.1:{port}': Connection refused"


def test_socket_path_too_long(daemon):
    path = "/tmp/" + "x" * 200
    assert _add_error(daemon, {"server": {"type": "unix", "path": path}}) == \
        f"UNIX socket path '{path}' is too long"


def test_unresolvable_host(daemon):
    # .invalid never resolves (RFC 2606); the reason depends on the resolver.
    desc = _add_error(daemon, {"server": {"type": "inet", "host": "no.such.host.invalid",
                                          "port": "10809"}})
    assert desc.startswith("address resolution failed for no.such.host.invalid:10809: "), desc


def test_tcp_server(daemon, scratch):
    port = free_tcp_port()
    kit = Nbdkit(scratch, ["--port", str(port), "--ipaddr", "127.0.0.1", "memory", str(SIZE)])
    kit.argv_for = lambda sock, pidfile: [
        "nbdkit", "--foreground", "--pidfile", pidfile, *kit.plugin_args]
    kit.start()
    try:
        daemon.command("blockdev-add", {"driver": "nbd", "node-name": "remote",
                                        "server": {"type": "inet", "host": "127.0.0.1",
                                                   "port": str(port)}})
        uri = reexport(daemon)
        qemu_io_cmds(uri, write_cmds(WRITES[:2]))
        qemu_io_cmds(f"nbd://127.0.0.1:{port}", read_cmds(WRITES[:2]))
    finally:
        kit.stop()


def test_unknown_export(daemon, scratch):
    img = create_image(os.path.join(scratch, "remote.img"), MiB)
    server = QemuNbd(scratch, img, export="vol").start()
    try:
        assert _add_error(daemon, {"server": {"type": "unix", "path": server.sock},
                                   "export": "nope"}) == "Requested export not available"
    finally:
        server.stop()


def test_fd_address(daemon):
    assert _add_error(daemon, {"server": {"type": "fd", "str": "nosuchfd"}}) == \
        "only QEMU supports file descriptor passing"


def test_reconnect_delay_range(daemon, scratch):
    path = os.path.join(iotests._short_dir(), "missing.sock")
    assert _add_error(daemon, {"server": {"type": "unix", "path": path},
                               "reconnect-delay": -1}) == \
        "Parameter 'reconnect-delay' expects uint32_t"


def test_open_timeout_gives_up(daemon):
    path = os.path.join(iotests._short_dir(), "missing.sock")
    start = time.monotonic()
    assert _add_error(daemon, {"server": {"type": "unix", "path": path},
                               "open-timeout": 2}) == \
        f"Failed to connect to '{path}': No such file or directory"
    assert time.monotonic() - start >= 1.8


def test_open_timeout_waits_for_server(daemon, scratch):
    """blockdev-add keeps trying while the server starts."""
    kit = Nbdkit(scratch, ["memory", str(SIZE)]).start(wait=False, after=1.0)
    try:
        resp = daemon.cmd("blockdev-add", {"driver": "nbd", "node-name": "remote",
                                           "server": {"type": "unix", "path": kit.sock},
                                           "open-timeout": 60}, timeout=90)
        assert resp == {"return": {}}
        nodes = daemon.command("query-named-block-nodes", flat=True)
        assert nodes[0]["image"]["virtual-size"] == SIZE
    finally:
        kit.stop()


def test_query_shape(daemon, scratch):
    kit = Nbdkit(scratch, ["memory", str(SIZE)]).start()
    try:
        add_nbd_node(daemon, kit, export="x")
        node = daemon.command("query-named-block-nodes", flat=True)[0]
        assert node["drv"] == "nbd"
        assert node["file"] == f"nbd+unix:///x?socket={kit.sock}"
        assert node["image"] == {"virtual-size": SIZE, "filename": node["file"],
                                 "format": "nbd"}
    finally:
        kit.stop()


def test_schema_matches_qemu(daemon):
    """BlockdevOptionsNbd as QEMU 7.2 introspects it."""
    schema = daemon.command("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    options = by_name[by_name["blockdev-add"]["arg-type"]]
    nbd_type = next(v["type"] for v in options["variants"] if v["case"] == "nbd")
    members = [(m["name"], by_name[m["type"]].get("json-type", m["type"]),
                "default" in m, m.get("features", []))
               for m in by_name[nbd_type]["members"]]
    assert members[0][0] == "server"
    assert members[1:] == [
        ("export", "string", True, []),
        ("tls-creds", "string", True, []),
        ("tls-hostname", "string", True, []),
        ("x-dirty-bitmap", "string", True, ["unstable"]),
        ("reconnect-delay", "int", True, []),
        ("open-timeout", "int", True, []),
    ]


# --- x-dirty-bitmap ----------------------------------------------------------

def test_x_dirty_bitmap_reads_dirty_as_unallocated(daemon_factory, scratch):
    """Block status through x-dirty-bitmap: dirty reads as "no data"."""
    img = create_image(os.path.join(scratch, "disk.img"), SIZE)
    source = daemon_factory()
    source.add_file_raw(img, node="disk")
    source.command("block-dirty-bitmap-add", node="disk", name="b", granularity=65536)
    src_sock = source.start_nbd_unix()
    source.command("block-export-add", type="nbd", id="e", node_name="disk", name="disk",
                   writable=True, bitmaps=["b"])
    qemu_io_cmds(iotests.nbd_uri(src_sock, "disk"),
                 ["write -q -P 1 1M 64k", "write -q -P 2 8M 1M"])

    client = daemon_factory()
    client.command("blockdev-add", {"driver": "nbd", "node-name": "remote",
                                    "server": {"type": "unix", "path": src_sock},
                                    "export": "disk", "x-dirty-bitmap": "qemu:dirty-bitmap:b"})
    uri = reexport(client)
    res = run(["nbdinfo", "--json", "--map", uri])
    extents = [(e["offset"], e["length"], e["type"]) for e in json.loads(res.stdout)]
    assert extents == [(0, MiB, 0), (MiB, 64 * 1024, 1), (MiB + 64 * 1024, 7 * MiB - 64 * 1024, 0),
                       (8 * MiB, MiB, 1), (9 * MiB, SIZE - 9 * MiB, 0)]


def test_x_dirty_bitmap_missing_context(daemon, scratch):
    kit = Nbdkit(scratch, ["memory", str(SIZE)]).start()
    try:
        desc = _add_error(daemon, {"server": {"type": "unix", "path": kit.sock},
                                   "x-dirty-bitmap": "qemu:dirty-bitmap:x"})
        assert desc.startswith("Could not open image"), desc
    finally:
        kit.stop()
