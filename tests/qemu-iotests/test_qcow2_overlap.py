"""Metadata writes never land on live metadata of a damaged qcow2 image.

Each image has 1 MiB of guest data (pattern 1) and one persistent bitmap,
and then one in-use metadata cluster -- the active L1 table, an L2 table,
the refcount table or a refcount block -- gets refcount 0 in its
refcount block, so that ``qemu-img check`` reports a corruption and the
allocator takes that cluster for the next thing it allocates.  Opened
read/write, the daemon rewrites the bitmap directory (in_use flags) at
open or at close; a guest write allocates a data cluster.  Those writes
must be refused by the overlap check ("Preventing invalid write on
metadata (overlaps with ...)"), which marks the image corrupt, instead of
overwriting the metadata: afterwards the guest data still reads back and
``qemu-img check`` finds no more corruption than before.

iotests groups: rw, quick
"""

import json
import os
import struct

import pytest

import iotests
from iotests import MiB, nbd_uri, qemu_img, qemu_io, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 16 * MiB
TARGETS = ["l1", "l2", "reftable", "refblock"]


def header(img):
    """The header fields the tests need, and the first L1 and refcount entries."""
    with open(img, "rb") as f:
        data = f.read()
    cluster_bits, = struct.unpack_from(">I", data, 20)
    l1_offset, = struct.unpack_from(">Q", data, 40)
    reftable_offset, = struct.unpack_from(">Q", data, 48)
    refcount_order, = struct.unpack_from(">I", data, 96)
    l2_offset, = struct.unpack_from(">Q", data, l1_offset)
    refblock_offset, = struct.unpack_from(">Q", data, reftable_offset)
    return {
        "cluster_bits": cluster_bits,
        "refcount_order": refcount_order,
        "l1": l1_offset,
        "l2": l2_offset & 0x00fffffffffffe00,
        "reftable": reftable_offset,
        "refblock": refblock_offset & ~0x1ff,
    }


def drop_refcount(img, what):
    """Set the refcount of the cluster holding metadata @what to 0."""
    h = header(img)
    assert h["refcount_order"] == 4, "the tests patch 16-bit refcounts"
    cluster = h[what] >> h["cluster_bits"]
    entries = 1 << (h["cluster_bits"] + 3 - h["refcount_order"])
    assert cluster < entries, "the cluster is described by the first block"
    with open(img, "r+b") as f:
        f.seek(h["refblock"] + cluster * 2)
        assert struct.unpack(">H", f.read(2))[0] == 1
        f.seek(h["refblock"] + cluster * 2)
        f.write(struct.pack(">H", 0))
    return h[what]


def check(img):
    res = qemu_img("check", "--output=json", img, check=False)
    assert res.stdout.strip(), res
    return json.loads(res.stdout)


def damaged_image(scratch, what, bitmap=True):
    img = os.path.join(scratch, "t.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, SIZE)
    qemu_io("-f", "qcow2", "-c", "write -q -P 1 0 1M", img)
    if bitmap:
        qemu_img("bitmap", "--add", img, "bm0")
    drop_refcount(img, what)
    before = check(img)
    # One refcount error; for an L2 table also its wrong COPIED flag.
    assert before.get("corruptions") in (1, 2), before
    return img, before


def assert_intact(img, before):
    """Guest data reads back; no corruption was added (leaks may be)."""
    res = qemu_io("-r", "-f", "qcow2", "-c", "read -q -P 1 0 1M", img,
                  check=False)
    assert res.returncode == 0 and "Pattern verification failed" not in \
        res.output, res
    after = check(img)
    assert after.get("check-errors", 0) == 0, after
    assert after.get("corruptions", 0) <= before["corruptions"], after


def bitmap_names(img):
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    data = info.get("format-specific", {}).get("data", {})
    return [b["name"] for b in data.get("bitmaps", [])]


def blockdev_add(daemon, img):
    return daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "n",
        "file": {"driver": "file", "filename": img}})


@pytest.mark.parametrize("what", [
    "l1",
    pytest.param("l2", marks=iotests.blockd_only(
        "qemu-storage-daemon 7.2 writes the bitmap table over the first "
        "bytes of the L2 table at close, unchecked: guest data is lost")),
    "reftable",
    "refblock",
])
def test_bitmap_directory_not_written_over_metadata(daemon, scratch, what):
    """The recipe: open read/write (blockdev-add), quit, read back."""
    img, before = damaged_image(scratch, what)
    resp = blockdev_add(daemon, img)
    if "error" in resp:
        # blockd rewrites the directory at open: the open fails.
        assert "could not mark bitmaps in use" in resp["error"]["desc"], resp
    daemon.stop()
    assert_intact(img, before)
    assert bitmap_names(img) == ["bm0"]
    assert "Preventing invalid write on metadata" in daemon.stderr(), \
        daemon.stderr()


@iotests.blockd_only("qemu-storage-daemon sets in_use by rewriting the "
                     "directory in place at open, which allocates nothing; "
                     "its open succeeds and storing the bitmap fails at close")
def test_bitmap_directory_open_error(scratch):
    """On the command line the refused write is named, and the open fails."""
    img, before = damaged_image(scratch, "l1")
    res = iotests.start_daemon_expect_failure([
        "--blockdev", "driver=qcow2,node-name=n,file.driver=file,"
        f"file.filename={img}"])
    assert res.returncode != 0, res
    assert ("qcow2: Marking image as corrupt: Preventing invalid write on "
            "metadata (overlaps with active L1 table)") in res.stderr, res
    assert "could not mark bitmaps in use" in res.stderr, res
    assert_intact(img, before)
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True, info


@pytest.mark.parametrize("what", TARGETS)
def test_guest_write_not_written_over_metadata(daemon, scratch, what):
    """A guest write allocating a new cluster gets EIO instead."""
    img, before = damaged_image(scratch, what, bitmap=False)
    resp = blockdev_add(daemon, img)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("n", writable=True)
    res = qemu_io_cmds(nbd_uri(sock, "n"), ["write -q -P 2 8M 64k"],
                       check=False)
    assert "Input/output error" in res.output, res
    daemon.stop()
    assert_intact(img, before)
    assert ("Preventing invalid write on metadata (overlaps with "
            in daemon.stderr()), daemon.stderr()
