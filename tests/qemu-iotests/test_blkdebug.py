"""blkdebug: errors injected below a qcow2 node, seen through NBD.

The graph is qcow2 -> blkdebug -> file, with the qcow2 node exported
writable over NBD.  Rules tied to debug events that qcow2 or the core
raise on the blkdebug node make the next matching request fail; the
client sees the error, the daemon goes on serving, and the image stays
consistent (``qemu-img check`` may report leaked clusters, never
corruptions).

iotests groups: rw, quick
"""

import json
import os

import pytest

import iotests
from iotests import MiB, nbd_uri, qemu_img, qemu_io, qemu_io_cmds, run
from nbd_client import CMD_FLUSH, EIO, NBDClient

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 16 * MiB
MESSAGE = {5: "Input/output error", 28: "No space left on device"}


def blkdebug(img, **opts):
    return {"driver": "blkdebug", "node-name": "d",
            "image": {"driver": "file", "filename": img}, **opts}


def serve_qcow2(daemon, img, **blkdebug_opts):
    """Export qcow2 -> blkdebug -> file; return the NBD URI."""
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q",
                                    "file": blkdebug(img, **blkdebug_opts)})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    return nbd_uri(sock, "q")


def nbd_io(uri, *cmds):
    return qemu_io_cmds(uri, cmds, check=False)


def assert_consistent(daemon, img):
    """After quit: no corruption (leaks are allowed after a failure)."""
    assert daemon.stop(), daemon.stderr()
    res = qemu_img("check", "--output=json", img, check=False)
    report = json.loads(res.stdout)
    assert report.get("corruptions", 0) == 0, report
    assert report.get("check-errors", 0) == 0, report


def image(scratch, fmt="qcow2", cmds=(), opts=()):
    img = os.path.join(scratch, f"t.{fmt}")
    qemu_img("create", "-q", "-f", fmt, *opts, img, SIZE)
    for cmd in cmds:
        qemu_io("-f", fmt, "-c", cmd, img)
    return img


@pytest.mark.parametrize("event", ["cluster_alloc", "l2_alloc_write",
                                   "refblock_alloc"])
@pytest.mark.parametrize("errno", [5, 28])
def test_allocation_error(daemon, scratch, event, errno):
    """The first write allocates; with 512-byte clusters one refcount
    block covers 128 KiB of the file, so a 256 KiB write needs new ones."""
    img = image(scratch, opts=["-o", "cluster_size=512"])
    uri = serve_qcow2(daemon, img, **{"inject-error": [
        {"event": event, "errno": errno, "once": True}]})

    res = nbd_io(uri, "write -q -P 1 0 256k")
    assert f"write failed: {MESSAGE[errno]}" in res.output, res
    res = nbd_io(uri, "write -q -P 2 1M 64k", "read -q -P 2 1M 64k")
    assert res.output == "", res
    daemon.assert_alive()
    assert_consistent(daemon, img)
    qemu_io("-f", "qcow2", "-c", "read -q -P 2 1M 64k", img)


def test_refblock_alloc_on_existing_block(daemon, scratch):
    """As in QEMU, refblock_alloc also fires when the refcount block that
    an allocation updates exists already (here: the image's only one)."""
    img = image(scratch, cmds=["write -q -P 1 0 64k"])
    uri = serve_qcow2(daemon, img, **{"inject-error": [
        {"event": "refblock_alloc", "once": True}]})

    res = nbd_io(uri, "write -q -P 2 1M 64k")
    assert "write failed: Input/output error" in res.output, res
    res = nbd_io(uri, "write -q -P 3 1M 64k", "read -q -P 3 1M 64k")
    assert res.output == "", res
    assert_consistent(daemon, img)


def test_flush_error(daemon, scratch):
    """The NBD flush gets EIO (qemu-io does not print flush errors).

    The data cluster exists, so the writes allocate nothing and qcow2
    flushes nothing itself.  Flushing the qcow2 node raises flush_to_disk
    on the blkdebug node, which activates the rule, and then flushes the
    blkdebug node, which fails.
    """
    img = image(scratch, cmds=["write -q -P 1 0 64k"])
    serve_qcow2(daemon, img, **{"inject-error": [
        {"event": "flush_to_disk", "iotype": "flush", "once": True}]})

    with NBDClient(daemon.sock("nbd.sock")) as c:
        c.connect_export("q")
        assert c.write(0, b"\x02" * 4096) == 0
        assert c.simple_cmd(CMD_FLUSH) == EIO
        assert c.write(0, b"\x03" * 4096) == 0
        assert c.simple_cmd(CMD_FLUSH) == 0
        assert c.read(0, 4096) == (0, b"\x03" * 4096)
        c.disconnect()
    daemon.assert_alive()
    assert_consistent(daemon, img)
    qemu_io("-f", "qcow2", "-c", "read -q -P 3 0 4k", img)


def test_state_machine(daemon, scratch):
    """The second write fails: the first moves the node to state 2.

    Neither write allocates, so write_aio is the only event they raise.
    The rule stays active (no "once"), but fails writes only.
    """
    img = image(scratch, cmds=["write -q -P 1 0 64k"])
    uri = serve_qcow2(daemon, img, **{
        "set-state": [{"event": "write_aio", "state": 1, "new_state": 2}],
        "inject-error": [{"event": "write_aio", "state": 2,
                          "iotype": "write", "immediately": True}]})

    res = nbd_io(uri, "write -q -P 2 0 4k")
    assert res.output == "", res
    res = nbd_io(uri, "write -q -P 3 4k 4k")
    assert "write failed: Input/output error" in res.output, res
    res = nbd_io(uri, "read -q -P 2 0 4k", "read -q -P 1 4k 60k")
    assert res.output == "", res
    daemon.assert_alive()
    assert_consistent(daemon, img)


def host_offset(img, guest_offset):
    mapping = json.loads(qemu_img("map", "--output=json", img).stdout)
    for m in mapping:
        if m["start"] <= guest_offset < m["start"] + m["length"] and m["data"]:
            return m["offset"] + guest_offset - m["start"]
    raise AssertionError(f"guest offset {guest_offset} not allocated")


def test_read_error_in_sector(daemon, scratch):
    """Only reads that cover the rule's sector of the image file fail."""
    img = image(scratch, cmds=["write -q -P 1 0 64k", "write -q -P 2 1M 64k"])
    bad = host_offset(img, 1 * MiB + 8192)
    uri = serve_qcow2(daemon, img, **{"inject-error": [
        {"event": "read_aio", "iotype": "read", "sector": bad // 512}]})

    res = nbd_io(uri, "read -q -P 1 0 64k", "read -q -P 2 1M 8k",
                 "read -q -P 2 1036k 16k")
    assert res.output == "", res
    for cmd in ["read -q 1M 64k", "read -q 1032k 512", "read -q 1028k 8k"]:
        res = nbd_io(uri, cmd)
        assert "read failed: Input/output error" in res.output, (cmd, res)
    daemon.assert_alive()
    assert_consistent(daemon, img)


def test_align_exported_directly(daemon, scratch):
    """align=4096 is the node's request alignment: NBD advertises it."""
    img = image(scratch, fmt="raw")
    daemon.command("blockdev-add", blkdebug(img, align=4096))
    sock = daemon.start_nbd_unix()
    daemon.export("d", writable=True)
    uri = nbd_uri(sock, "d")

    info = json.loads(run(["nbdinfo", "--json", uri]).stdout)
    assert info["exports"][0]["block_size_minimum"] == 4096, info
    res = nbd_io(uri, "write -q -P 5 1000 100", "read -q -P 5 1000 100",
                 "read -q -P 0 0 1000", "read -q -P 0 1100 3000")
    assert res.output == "", res


def test_align_below_qcow2(daemon, scratch):
    """qcow2's small metadata writes to an align=4096 node are RMW'd."""
    img = image(scratch)
    uri = serve_qcow2(daemon, img, align=4096)

    res = nbd_io(uri, "write -q -P 6 1000 100", "write -q -P 7 3M 512",
                 "read -q -P 6 1000 100", "read -q -P 0 0 1000",
                 "read -q -P 7 3M 512")
    assert res.output == "", res
    assert_consistent(daemon, img)
    qemu_io("-f", "qcow2", "-c", "read -q -P 6 1000 100",
            "-c", "read -q -P 7 3M 512", img)


@pytest.mark.parametrize("opts, message", [
    ({"align": 3}, "Cannot meet constraints with align 3"),
    ({"align": -4096},
     "Parameter 'align' expects a non-negative number below 2^64"),
    ({"align": 4096, "max-transfer": 512},
     "Cannot meet constraints with max-transfer 512"),
    ({"max-transfer": -1},
     "Parameter 'max-transfer' expects a non-negative number below 2^64"),
    ({"align": 1 << 40}, "Cannot meet constraints with align 1099511627776"),
    ({"max-transfer": 1 << 31}, "Parameter 'max-transfer' expects int32_t"),
    ({"inject-error": [{"event": "no_such_event"}]},
     "Parameter 'event' does not accept value 'no_such_event'"),
    ({"inject-error": [{"event": "read_aio", "iotype": "ioctl"}]},
     "Parameter 'iotype' does not accept value 'ioctl'"),
    ({"inject-error": [{"event": "read_aio", "errno": "x"}]},
     "Invalid parameter type for 'inject-error[0].errno', expected: "
     "integer"),
    ({"set-state": [{"event": "read_aio"}]},
     "Parameter 'set-state[0].new_state' is missing"),
    ({"config": "/nonexistent/blkdebug.conf"},
     "Could not read blkdebug config file: No such file or directory"),
])
def test_bad_options(daemon, scratch, opts, message):
    img = image(scratch, fmt="raw")
    resp = daemon.cmd("blockdev-add", blkdebug(img, **opts))
    assert resp.get("error", {}).get("desc") == message, resp
    daemon.assert_alive()


def test_image_missing(daemon):
    resp = daemon.cmd("blockdev-add", {"driver": "blkdebug",
                                       "node-name": "d"})
    assert resp["error"]["desc"] == "Parameter 'image' is missing", resp


# Which request of SEQUENCE fails (EIO) after a once-only rule on the
# event, as qemu-storage-daemon 7.2 does it.  The image has its first
# cluster allocated; 1M and 2M are not.
SEQUENCE = ["read 0", "rewrite 0", "allocate 1M (COW)", "flush",
            "allocate 2M (whole cluster)", "read 1M", "flush"]
FAILING = {
    "l1_update": None,
    "l2_load": 0,
    "l2_update": 3,
    "l2_alloc_write": None,
    "read_aio": 0,
    "write_aio": 1,
    "cluster_alloc": 2,
    "refblock_alloc": 2,
    "refblock_load": 2,
    "refblock_update_part": 3,
    "flush_to_os": 3,
    "flush_to_disk": 3,
    "pwritev": 1,
    "pwritev_done": 2,
    "cow_read": None,
}


def run_sequence(sock):
    with NBDClient(sock) as c:
        c.connect_export("q")
        results = [
            c.read(0, 4096)[0],
            c.write(0, b"\x02" * 4096),
            c.write(1 * MiB, b"\x03" * 4096),
            c.simple_cmd(CMD_FLUSH),
            c.write(2 * MiB, b"\x04" * 65536),
            c.read(1 * MiB, 4096)[0],
            c.simple_cmd(CMD_FLUSH),
        ]
        c.disconnect()
    return results


@pytest.mark.parametrize("event", sorted(FAILING))
def test_event_points(daemon, scratch, event):
    """Each event fires at the same point of a request as in QEMU."""
    img = image(scratch, cmds=["write -q -P 1 0 64k"])
    serve_qcow2(daemon, img, **{"inject-error": [
        {"event": event, "once": True}]})

    results = run_sequence(daemon.sock("nbd.sock"))
    expected = [0] * len(SEQUENCE)
    if FAILING[event] is not None:
        expected[FAILING[event]] = EIO
    assert results == expected, list(zip(SEQUENCE, results))
    assert_consistent(daemon, img)


@iotests.blockd_only("QEMU zeroes the rest of a new cluster with a "
                     "write-zeroes request, which raises pwritev_zero; "
                     "blockd writes it together with the data")
def test_pwritev_zero_not_raised_by_qcow2_allocation(daemon, scratch):
    img = image(scratch, cmds=["write -q -P 1 0 64k"])
    serve_qcow2(daemon, img, **{"inject-error": [
        {"event": "pwritev_zero", "once": True}]})
    assert run_sequence(daemon.sock("nbd.sock")) == [0] * len(SEQUENCE)
    assert_consistent(daemon, img)


def test_open_fails_on_event_none(daemon, scratch):
    """"none" fires when blkdebug opens: qcow2's first read fails."""
    img = image(scratch)
    resp = daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "q",
        "file": blkdebug(img, **{"inject-error": [{"event": "none"}]})})
    assert resp.get("error", {}).get("desc") == \
        "Could not read qcow2 header: Input/output error", resp
    daemon.assert_alive()
