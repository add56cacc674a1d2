"""Dirty bitmaps exported over NBD as qemu:dirty-bitmap:NAME contexts.

Known ranges are written through a writable export while bitmaps record;
a second, read-only export then serves the bitmaps, and nbdinfo, qemu-img
(x-dirty-bitmap) and a raw client must see exactly the granules written:
flag 1 for dirty, 0 for clean, extents cut at the ends of each request.
An exported bitmap is busy until its export goes away, and block-export-add
refuses bitmaps it cannot export with QEMU 7.2's messages.

Every test but one runs against blockd and qemu-storage-daemon with the
same expectations.

iotests groups: quick
"""

import json
import os
import struct

import pytest

import iotests
import nbd_client as N
from iotests import KiB, MiB, nbd_uri, nbdinfo_map, qemu_img, qemu_io_cmds, run
from test_dirty_bitmaps import bitmap_info, error_of

pytestmark = pytest.mark.quick

SIZE = 64 * MiB
CLEAN, DIRTY = 0, 1
# (offset, length): unaligned and straddling writes, and one at the end.
WRITES = [
    (0, 512),
    (MiB + 4 * KiB, 4 * KiB),
    (3 * MiB - 512, 1024),
    (10 * MiB, 2 * MiB),
    (SIZE - 4 * KiB, 4 * KiB),
]
BUSY = "Bitmap '{}' is currently in use by another operation and cannot be used"


def expected_map(size, gran, writes):
    """The (offset, length, flag) runs of a bitmap after ``writes``."""
    dirty = set()
    for off, length in writes:
        dirty.update(range(off // gran, (off + length - 1) // gran + 1))
    runs = []
    for g in range((size + gran - 1) // gran):
        flag = DIRTY if g in dirty else CLEAN
        start, end = g * gran, min((g + 1) * gran, size)
        if runs and runs[-1][2] == flag:
            runs[-1] = (runs[-1][0], end - runs[-1][0], flag)
        else:
            runs.append((start, end - start, flag))
    return runs


def bitmap_map(uri, name):
    """nbdinfo's map of context qemu:dirty-bitmap:NAME, neighbours merged."""
    return nbdinfo_map(uri, f"qemu:dirty-bitmap:{name}")


def add_qcow2(d, path, node):
    qemu_img("create", "-f", "qcow2", path, str(SIZE))
    d.command("blockdev-add", {"driver": "qcow2", "node-name": node,
                               "file": {"driver": "file", "filename": path}})


def export(d, export_id, node, name, bitmaps=None, writable=False):
    args = {"type": "nbd", "id": export_id, "node-name": node, "name": name,
            "writable": writable}
    if bitmaps is not None:
        args["bitmaps"] = bitmaps
    d.command("block-export-add", args)


@pytest.fixture
def recorded(daemon, scratch):
    """Node q with bitmaps b (64 KiB) and c (4 KiB) that recorded WRITES,
    now disabled; the writable export is gone again."""
    add_qcow2(daemon, os.path.join(scratch, "q.qcow2"), "q")
    sock = daemon.start_nbd_unix()
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "b"})
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "c", "granularity": 4096})
    export(daemon, "w", "q", "w", writable=True)
    qemu_io_cmds(nbd_uri(sock, "w"), [f"write -q {o} {n}" for o, n in WRITES])
    daemon.del_export("w")
    for name in ("b", "c"):
        daemon.command("block-dirty-bitmap-disable", {"node": "q", "name": name})
    return daemon, sock


def test_map_shows_written_granules(recorded):
    d, sock = recorded
    export(d, "r", "q", "r", bitmaps=["b", "c"])
    uri = nbd_uri(sock, "r")
    out = json.loads(run(["nbdinfo", "--list", "--json", nbd_uri(sock)]).stdout)
    (exp,) = out["exports"]
    assert exp["contexts"] == ["base:allocation", "qemu:dirty-bitmap:b",
                               "qemu:dirty-bitmap:c"]
    assert bitmap_map(uri, "b") == expected_map(SIZE, 64 * KiB, WRITES)
    assert bitmap_map(uri, "c") == expected_map(SIZE, 4 * KiB, WRITES)
    # Spot-check the model itself on the straddling write.
    assert (3 * MiB - 4 * KiB, 8 * KiB, DIRTY) in bitmap_map(uri, "c")


def test_qemu_img_map_with_x_dirty_bitmap(recorded):
    """qemu-img reads the bitmap as block status: dirty shows as a hole."""
    d, sock = recorded
    export(d, "r", "q", "r", bitmaps=["c"])
    opts = (f"driver=nbd,server.type=unix,server.path={sock},export=r,"
            "x-dirty-bitmap=qemu:dirty-bitmap:c")
    entries = json.loads(qemu_img("map", "--output=json", "--image-opts", opts).stdout)
    dirty = [(e["start"], e["length"]) for e in entries if not e["data"]]
    assert dirty == [(o, n) for o, n, f in expected_map(SIZE, 4 * KiB, WRITES) if f == DIRTY]


def block_status(sock, export_name, context, offset, length, flags=0):
    """Extents [(length, flags)] of one NBD_CMD_BLOCK_STATUS for ``context``."""
    with N.NBDClient(sock) as c:
        c.handshake_start()
        c.structured_replies()
        ids = c.set_meta_context(export_name, [context])
        rtype, _ = c.opt_go(export_name)
        assert rtype == N.REP_ACK
        h = c.send_request(N.CMD_BLOCK_STATUS, offset, length, flags=flags)
        cflags, ctype, handle, payload = c.read_structured_chunk()
        assert (handle, ctype) == (h, N.REPLY_TYPE_BLOCK_STATUS)
        assert cflags & N.REPLY_FLAG_DONE
        assert struct.unpack(">I", payload[:4])[0] == ids[context]
        words = struct.unpack(f">{(len(payload) - 4) // 4}I", payload[4:])
        return list(zip(words[::2], words[1::2]))


def test_extents_cut_at_request_ends(recorded):
    d, sock = recorded
    export(d, "r", "q", "r", bitmaps=["b", "c"])
    c = "qemu:dirty-bitmap:c"
    # Clean head up to the dirty granule at 1 MiB + 4 KiB, clean tail cut short.
    assert block_status(sock, "r", c, MiB + 100, 8 * KiB) == [
        (4 * KiB - 100, CLEAN), (4 * KiB, DIRTY), (100, CLEAN)]
    assert block_status(sock, "r", c, MiB + 100, 8 * KiB, N.CMD_FLAG_REQ_ONE) == [
        (4 * KiB - 100, CLEAN)]
    # Starting and ending inside dirty granules.
    assert block_status(sock, "r", c, 10 * MiB + 100, 4 * KiB) == [(4 * KiB, DIRTY)]
    assert block_status(sock, "r", "qemu:dirty-bitmap:b", 3 * MiB - 100, 200) == [
        (200, DIRTY)]
    # The last granule reaches the end of the export.
    assert block_status(sock, "r", c, SIZE - 8 * KiB, 8 * KiB) == [
        (4 * KiB, CLEAN), (4 * KiB, DIRTY)]


def test_busy_while_exported(recorded):
    d, sock = recorded
    export(d, "r", "q", "r", bitmaps=[{"node": "q", "name": "b"}])
    assert bitmap_info(d, "q", "b")["busy"] is True
    assert bitmap_info(d, "q", "c")["busy"] is False
    assert error_of(d, "block-dirty-bitmap-clear", {"node": "q", "name": "b"}) == BUSY.format("b")
    assert error_of(d, "block-dirty-bitmap-remove", {"node": "q", "name": "b"}) == BUSY.format("b")
    # Busy means not exportable a second time either.
    assert error_of(d, "block-export-add", {"type": "nbd", "id": "r2", "node-name": "q",
                                            "name": "r2", "bitmaps": ["b"]}) == BUSY.format("b")
    assert bitmap_map(nbd_uri(sock, "r"), "b") == expected_map(SIZE, 64 * KiB, WRITES)
    d.del_export("r")
    assert bitmap_info(d, "q", "b")["busy"] is False
    d.command("block-dirty-bitmap-clear", {"node": "q", "name": "b"})
    export(d, "r", "q", "r", bitmaps=["b"])
    assert bitmap_map(nbd_uri(sock, "r"), "b") == [(0, SIZE, CLEAN)]


def test_bitmap_of_another_node(daemon, scratch):
    """{node, name} may name a recording bitmap of any node."""
    add_qcow2(daemon, os.path.join(scratch, "a.qcow2"), "a")
    add_qcow2(daemon, os.path.join(scratch, "o.qcow2"), "o")
    sock = daemon.start_nbd_unix()
    daemon.command("block-dirty-bitmap-add", {"node": "o", "name": "x", "granularity": 4096})
    export(daemon, "w", "o", "w", writable=True)
    writes = [(2 * MiB, 8 * KiB)]
    qemu_io_cmds(nbd_uri(sock, "w"), [f"write -q {o} {n}" for o, n in writes])
    export(daemon, "r", "a", "r", bitmaps=[{"node": "o", "name": "x"}])
    assert bitmap_map(nbd_uri(sock, "r"), "x") == expected_map(SIZE, 4 * KiB, writes)
    # Still recording: later writes show up in the next block status.
    qemu_io_cmds(nbd_uri(sock, "w"), ["write -q 5M 4k"])
    assert bitmap_map(nbd_uri(sock, "r"), "x") == expected_map(
        SIZE, 4 * KiB, writes + [(5 * MiB, 4 * KiB)])


@iotests.blockd_only("qemu-storage-daemon 7.2 aborts deleting the node")
def test_node_of_exported_bitmap_stays(daemon, scratch):
    add_qcow2(daemon, os.path.join(scratch, "a.qcow2"), "a")
    add_qcow2(daemon, os.path.join(scratch, "o.qcow2"), "o")
    daemon.start_nbd_unix()
    daemon.command("block-dirty-bitmap-add", {"node": "o", "name": "x"})
    export(daemon, "r", "a", "r", bitmaps=[{"node": "o", "name": "x"}])
    assert error_of(daemon, "blockdev-del", {"node-name": "o"}) == "Block device o is in use"
    daemon.del_export("r")
    daemon.command("blockdev-del", {"node-name": "o"})


def test_refusals(daemon, scratch):
    add_qcow2(daemon, os.path.join(scratch, "q.qcow2"), "q")
    daemon.start_nbd_unix()
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "b"})

    def refused(bitmaps, writable=False):
        return error_of(daemon, "block-export-add", {
            "type": "nbd", "id": "e", "node-name": "q", "writable": writable,
            "bitmaps": bitmaps})

    assert refused(["nope"]) == "Bitmap 'nope' is not found"
    assert refused(["b", "nope"], writable=True) == "Bitmap 'nope' is not found"
    assert refused([{"node": "q", "name": "nope"}]) == "Dirty bitmap 'nope' not found"
    assert refused([{"node": "zz", "name": "b"}]) == "Node 'zz' not found"
    assert refused(["b"]) == "Enabled bitmap 'b' incompatible with readonly export"
    # A failed export leaves nothing behind.
    assert bitmap_info(daemon, "q", "b")["busy"] is False
    assert daemon.command("query-block-exports") == []
    # Writable exports, and bitmaps named with their node, may record.
    export(daemon, "e", "q", "e", bitmaps=["b"], writable=True)
    daemon.del_export("e")
    export(daemon, "e", "q", "e", bitmaps=[{"node": "q", "name": "b"}])
    daemon.del_export("e")


def test_inconsistent_bitmap_refused(daemon_factory, scratch):
    img = os.path.join(scratch, "p.qcow2")
    qemu_img("create", "-f", "qcow2", img, str(SIZE))
    qemu_img("bitmap", "--add", img, "p")
    d = daemon_factory()
    d.command("blockdev-add", {"driver": "qcow2", "node-name": "q",
                               "file": {"driver": "file", "filename": img}})
    d.kill()
    d2 = daemon_factory()
    d2.command("blockdev-add", {"driver": "qcow2", "node-name": "q",
                                "file": {"driver": "file", "filename": img}})
    d2.start_nbd_unix()
    assert error_of(d2, "block-export-add", {
        "type": "nbd", "id": "e", "node-name": "q", "bitmaps": ["p"]}) == \
        "Bitmap 'p' is inconsistent and cannot be used"
