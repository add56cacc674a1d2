"""NBD export of a file+raw node: the acceptance scenario and its variations.

Data written through NBD by real clients (qemu-io, nbdcopy, nbdinfo) is
checked against a reference image built locally from the same patterns.

iotests groups: quick, rw
"""

import json
import os
import socket

import pytest

import iotests
from iotests import (MiB, Reference, compare_images, create_image, free_tcp_port, nbd_uri,
                     qemu_io_cmds, qemu_io_popen, run, wait_all, require_tool)
from nbd_client import NBDClient

pytestmark = [pytest.mark.quick, pytest.mark.rw]

SIZE = 64 * MiB
WRITES = [
    (0xAB, 0, MiB),
    (0xCD, 3 * MiB + 512, 64 * 1024),
    (0x01, 10 * MiB, 4 * MiB),
    (0xEF, SIZE - 4096, 4096),
    (0x00, 20 * MiB, 4096),            # explicit zeroes
]


def write_patterns(uri, writes):
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {off} {ln}" for p, off, ln in writes])


def verify_patterns(uri, writes, extra=()):
    qemu_io_cmds(uri, [f"read -q -P {p:#x} {off} {ln}" for p, off, ln in writes], extra=extra)


def model_of(size, writes):
    m = Reference(size)
    for p, off, ln in writes:
        m.write(p, off, ln)
    return m


def test_acceptance_qmp(daemon, scratch):
    img = create_image(os.path.join(scratch, "disk.img"), SIZE)
    ref = model_of(SIZE, WRITES).save(os.path.join(scratch, "ref.img"))
    daemon.command("blockdev-add", driver="file", node_name="disk-file", filename=img)
    daemon.command("blockdev-add", driver="raw", node_name="disk", file="disk-file")
    sock = daemon.sock("nbd.sock")
    assert daemon.command("nbd-server-start",
                          addr={"type": "unix", "data": {"path": sock}}) == {}
    assert daemon.command("block-export-add", type="nbd", id="e", node_name="disk",
                          name="vol", writable=True) == {}
    assert daemon.command("query-block-exports") == [
        {"type": "nbd", "id": "e", "node-name": "disk", "shutting-down": False}]
    uri = nbd_uri(sock, "vol")
    write_patterns(uri, WRITES)
    verify_patterns(uri, WRITES)
    daemon.del_export("e")
    assert daemon.command("query-block-exports") == []
    compare_images(img, ref)
    daemon.command("nbd-server-stop")


def test_acceptance_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "disk.img"), SIZE)
    ref = model_of(SIZE, WRITES).save(os.path.join(scratch, "ref.img"))
    sockdir = iotests._short_dir()
    sock = os.path.join(sockdir, "nbd.sock")
    try:
        d = daemon_factory("--blockdev", f"driver=file,node-name=disk-file,filename={img}",
                           "--blockdev", "driver=raw,node-name=disk,file=disk-file",
                           "--nbd-server", f"addr.type=unix,addr.path={sock}",
                           "--export", "type=nbd,id=e,node-name=disk,name=vol,writable=on")
        assert d.command("query-block-exports") == [
            {"type": "nbd", "id": "e", "node-name": "disk", "shutting-down": False}]
        uri = nbd_uri(sock, "vol")
        write_patterns(uri, WRITES)
        verify_patterns(uri, WRITES)
        assert d.cmd("quit") == {"return": {}}
        assert d.wait_exit() == 0
        compare_images(img, ref)
    finally:
        iotests.shutil.rmtree(sockdir, ignore_errors=True)


def test_export_json_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "disk.img"), MiB, patterns=[(0x3C, 0, MiB)])
    sockdir = iotests._short_dir()
    sock = os.path.join(sockdir, "nbd.sock")
    try:
        d = daemon_factory(
            "--blockdev", iotests.json_arg({"driver": "raw", "node-name": "disk",
                                            "file": {"driver": "file", "filename": img}}),
            "--nbd-server", iotests.json_arg({"addr": {"type": "unix", "path": sock}}),
            "--export", iotests.json_arg({"type": "nbd", "id": "e", "node-name": "disk"}))
        # The export name defaults to the node name; writable defaults to off.
        verify_patterns(nbd_uri(sock, "disk"), [(0x3C, 0, MiB)], extra=["-r"])
        assert d.command("query-block-exports")[0]["id"] == "e"
    finally:
        iotests.shutil.rmtree(sockdir, ignore_errors=True)


def test_nbdinfo_list(daemon, scratch):
    require_tool("nbdinfo")
    img = create_image(os.path.join(scratch, "a.img"), 8 * MiB)
    daemon.add_file_raw(img, node="r")
    daemon.command("blockdev-add", driver="null-co", node_name="n", size=3 * MiB)
    sock = daemon.start_nbd_unix()
    daemon.export("r", export_id="e1", name="rw-export", writable=True)
    daemon.export("n", export_id="e2", writable=False)
    out = json.loads(run(["nbdinfo", "--list", "--json", nbd_uri(sock)]).stdout)
    exports = {e["export-name"]: e for e in out["exports"]}
    assert set(exports) == {"rw-export", "n"}
    assert exports["rw-export"]["export-size"] == 8 * MiB
    assert exports["rw-export"]["is_read_only"] is False
    assert exports["rw-export"]["can_trim"] is True
    assert exports["rw-export"]["can_zero"] is True
    assert exports["rw-export"]["can_flush"] is True
    assert exports["rw-export"]["can_fua"] is True
    assert exports["n"]["export-size"] == 3 * MiB
    assert exports["n"]["is_read_only"] is True
    assert exports["n"]["can_trim"] is False
    assert "base:allocation" in exports["n"]["contexts"]
    assert out["protocol"] == "newstyle-fixed"
    assert out["structured"] is True


def test_nbdinfo_map_sparse(daemon, scratch):
    require_tool("nbdinfo")
    path = os.path.join(scratch, "sparse.img")
    with open(path, "wb") as f:           # fully sparse; no qemu-img first-block write
        f.truncate(4 * MiB)
    qemu_io_cmds(path, ["write -q -P 1 1M 64k", "write -q -P 2 3M 4k"])
    daemon.add_file_raw(path, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r")
    out = json.loads(run(["nbdinfo", "--map", "--json", nbd_uri(sock, "r")]).stdout)
    assert sum(e["length"] for e in out) == 4 * MiB
    data = [(e["offset"], e["length"]) for e in out if not e["type"] & 1]
    # Merge adjacent data extents before comparing.
    merged = []
    for off, ln in data:
        if merged and merged[-1][0] + merged[-1][1] == off:
            merged[-1] = (merged[-1][0], merged[-1][1] + ln)
        else:
            merged.append((off, ln))
    assert merged == [(MiB, 64 * 1024), (3 * MiB, 4096)]
    holes = [e for e in out if e["type"] & 1]
    assert all(e["type"] == 3 for e in holes), "holes read as zero"


def test_read_only_export_refuses_writes(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB, patterns=[(0x42, 0, 4 * MiB)])
    daemon.add_file_raw(img, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=False)
    uri = nbd_uri(sock, "r")
    # Opening read-write is refused outright; a read-only open refuses writes.
    assert qemu_io_cmds(uri, ["write -P 0x99 0 4k"], check=False).returncode != 0
    res = qemu_io_cmds(uri, ["write -P 0x99 0 4k"], check=False, extra=["-r"])
    assert res.returncode != 0
    verify_patterns(uri, [(0x42, 0, 4 * MiB)], extra=["-r"])
    daemon.del_export("e")
    qemu_io_cmds(img, ["read -q -P 0x42 0 4M"])


def test_concurrent_clients(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 16 * MiB)
    daemon.add_file_raw(img, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    uri = nbd_uri(sock, "r")
    writes = []
    procs = []
    for i in range(4):
        region = [(0x10 + i, i * 4 * MiB + j * 256 * 1024, 128 * 1024) for j in range(16)]
        writes += region
        procs.append(qemu_io_popen(uri, [f"write -q -P {p:#x} {o} {ln}" for p, o, ln in region]))
    wait_all(procs)
    # Readers in parallel, too.
    wait_all([qemu_io_popen(uri, [f"read -q -P {p:#x} {o} {ln}" for p, o, ln in writes[i::4]])
              for i in range(4)])
    daemon.del_export("e")
    compare_images(img, model_of(16 * MiB, writes).save(os.path.join(scratch, "ref.img")))


def test_export_del_event_and_errors(daemon_factory, scratch):
    d = daemon_factory(monitors=2)
    q2 = d.connect_monitor(1)
    try:
        d.command("blockdev-add", driver="null-co", node_name="n", size=MiB)
        assert d.cmd("block-export-add", type="nbd", id="e", node_name="n") == {
            "error": {"class": "GenericError", "desc": "NBD server not running"}}
        assert d.cmd("nbd-server-stop") == {
            "error": {"class": "GenericError", "desc": "NBD server not running"}}
        sock = d.start_nbd_unix()
        assert d.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}}) == {
            "error": {"class": "GenericError", "desc": "NBD server already running"}}
        d.export("n", export_id="e")
        assert d.cmd("block-export-add", type="nbd", id="e", node_name="n", name="x") == {
            "error": {"class": "GenericError", "desc": "Block export id 'e' is already in use"}}
        assert d.cmd("block-export-add", type="nbd", id="e2", node_name="n") == {
            "error": {"class": "GenericError",
                      "desc": "NBD server already has export named 'n'"}}
        assert d.cmd("block-export-add", type="nbd", id="e3", node_name="zz") == {
            "error": {"class": "GenericError",
                      "desc": "Cannot find device='' nor node-name='zz'"}}
        assert d.cmd("block-export-del", id="zz") == {
            "error": {"class": "GenericError", "desc": "Export 'zz' is not found"}}
        assert [e["id"] for e in d.command("query-block-exports")] == ["e"]
        assert d.command("block-export-del", id="e") == {}
        ev = d.qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=10)
        assert iotests.filter_qmp_event(ev) == {
            "event": "BLOCK_EXPORT_DELETED", "data": {"id": "e"},
            "timestamp": {"seconds": "SECS", "microseconds": "USECS"}}
        assert q2.wait_event("BLOCK_EXPORT_DELETED", timeout=10)["data"] == {"id": "e"}
        assert d.command("query-block-exports") == []
        # Gone from the NBD side as well.
        with NBDClient(sock) as c:
            c.handshake_start()
            assert c.opt_go("n")[0] == 0x80000006
        # The id can be reused.
        d.export("n", export_id="e")
        # nbd-server-stop removes the remaining exports (with events).
        d.command("nbd-server-stop")
        assert d.qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=10)["data"] == {"id": "e"}
        assert d.command("query-block-exports") == []
        assert d.qmp.get_events() == []
    finally:
        q2.close()


def test_export_del_with_connected_client(daemon, scratch):
    daemon.command("blockdev-add", driver="null-co", node_name="n", size=MiB)
    sock = daemon.start_nbd_unix()
    daemon.export("n")
    c = NBDClient(sock)
    try:
        c.connect_export("n")
        resp = daemon.cmd("block-export-del", id="e")
        assert resp == {"error": {"class": "GenericError", "desc": "export 'e' still in use"}}
        assert daemon.qmp.get_events() == []
        assert daemon.command("block-export-del", id="e", mode="hard") == {}
        daemon.qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=10, match={"id": "e"})
        assert c.is_closed_by_peer(10)
    finally:
        c.close()
    assert daemon.command("query-block-exports") == []


def _tcp_uri(port, name):
    return f"nbd://127.0.0.1:{port}/{name}"


def test_tcp_qmp(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB)
    daemon.add_file_raw(img, node="r")
    port = free_tcp_port()
    daemon.command("nbd-server-start",
                   addr={"type": "inet", "data": {"host": "127.0.0.1", "port": str(port)}})
    daemon.export("r", writable=True)
    write_patterns(_tcp_uri(port, "r"), [(0x61, 0, MiB), (0x62, 2 * MiB, 4096)])
    verify_patterns(_tcp_uri(port, "r"), [(0x61, 0, MiB), (0x62, 2 * MiB, 4096)])
    daemon.del_export("e")
    compare_images(img, model_of(4 * MiB, [(0x61, 0, MiB), (0x62, 2 * MiB, 4096)])
                   .save(os.path.join(scratch, "ref.img")))


def test_tcp_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB, patterns=[(0x71, 0, MiB)])
    port = free_tcp_port()
    daemon_factory("--blockdev", f"driver=file,node-name=f,filename={img}",
                   "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}",
                   "--export", "type=nbd,id=e,node-name=f")
    verify_patterns(_tcp_uri(port, "f"), [(0x71, 0, MiB)], extra=["-r"])


def test_max_connections(daemon, scratch):
    daemon.command("blockdev-add", driver="null-co", node_name="n", size=MiB)
    sock = daemon.start_nbd_unix(max_connections=1)
    daemon.export("n")
    first = NBDClient(sock)
    second = NBDClient(sock, timeout=1.0)   # connect() succeeds: kernel backlog
    try:
        first.connect_export("n")
        # The second client is not served while the first is connected.
        with pytest.raises(socket.timeout):
            second.read_greeting()
        first.disconnect()
        second.sock.settimeout(10)
        second.connect_export("n")
        assert second.read(0, 512)[0] == 0
    finally:
        first.close()
        second.close()
    daemon.assert_alive()


def test_trim_and_zero(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 8 * MiB, patterns=[(0x55, 0, 8 * MiB)])
    # Discard is passed down only if every node on the path allows it.
    daemon.add_file_raw(img, node="r", discard="unmap", raw_opts={"discard": "unmap"})
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    uri = nbd_uri(sock, "r")
    qemu_io_cmds(uri, ["discard -q 1M 1M", "write -q -z 3M 1M", "write -q -z -u 5M 1M",
                       "read -q -P 0 1M 1M", "read -q -P 0 3M 1M", "read -q -P 0 5M 1M",
                       "read -q -P 0x55 0 1M", "read -q -P 0x55 2M 1M", "read -q -P 0x55 4M 1M",
                       "read -q -P 0x55 6M 2M"])
    daemon.del_export("e")
    m = model_of(8 * MiB, [(0x55, 0, 8 * MiB), (0, MiB, MiB), (0, 3 * MiB, MiB),
                           (0, 5 * MiB, MiB)])
    m.check_file(img)
    # discard=unmap punched a hole.
    assert os.stat(img).st_blocks * 512 <= 8 * MiB - MiB


def test_discard_ignored_by_default(daemon, scratch):
    """file's discard option defaults to 'ignore': data stays after a trim."""
    img = create_image(os.path.join(scratch, "a.img"), 2 * MiB, patterns=[(0x55, 0, 2 * MiB)])
    daemon.add_file_raw(img, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    qemu_io_cmds(nbd_uri(sock, "r"), ["discard -q 0 1M", "read -q -P 0x55 0 2M"])


def test_fua_writes(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB)
    daemon.add_file_raw(img, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    uri = nbd_uri(sock, "r")
    qemu_io_cmds(uri, ["write -q -f -P 0x21 0 64k", "write -q -f -P 0x22 1M 4k",
                       "flush", "read -q -P 0x21 0 64k", "read -q -P 0x22 1M 4k"])
    # FUA data is in the file while the export still exists.
    qemu_io_cmds(img, ["read -q -P 0x21 0 64k", "read -q -P 0x22 1M 4k"], extra=["-U", "-r"])


def test_nbdcopy(daemon, scratch):
    require_tool("nbdcopy")
    src = create_image(os.path.join(scratch, "src.img"), 16 * MiB,
                       patterns=[(0x31, 0, MiB), (0x32, 5 * MiB, 3 * MiB),
                                 (0x33, 16 * MiB - 4096, 4096)])
    daemon.add_file_raw(src, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r")
    dst = os.path.join(scratch, "dst.img")
    run(["nbdcopy", nbd_uri(sock, "r"), dst])
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()
    # And the other direction: upload into a writable export.
    daemon.del_export("e")
    img2 = create_image(os.path.join(scratch, "b.img"), 16 * MiB)
    daemon.add_file_raw(img2, node="r2")
    daemon.export("r2", export_id="e2", writable=True)
    run(["nbdcopy", src, nbd_uri(sock, "r2")])
    daemon.del_export("e2")
    compare_images(src, img2)
