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
OFFSET_MASK = 0x00fffffffffffe00
BITMAPS_EXT = 0x23852875

# The names in "Preventing invalid write on metadata (overlaps with %s)".
KIND = {
    "l1": "active L1 table",
    "l2": "active L2 table",
    "reftable": "refcount table",
    "refblock": "refcount block",
    "snapshot-table": "snapshot table",
    "snapshot-l1": "inactive L1 table",
    "snapshot-l2": "inactive L2 table",
    "bitmap-directory": "bitmap directory",
    "bitmap-table": "bitmap table",
}


def bitmap_directory(data, header_length):
    """The offset of the bitmap directory, from the header extension."""
    pos = header_length
    while True:
        ext_type, length = struct.unpack_from(">II", data, pos)
        if ext_type == 0:
            return None
        if ext_type == BITMAPS_EXT:
            return struct.unpack_from(">Q", data, pos + 24)[0]
        pos += 8 + (length + 7) // 8 * 8


def header(img):
    """Where each kind of metadata lives (its first instance)."""
    with open(img, "rb") as f:
        data = f.read()

    def u64(offset):
        return struct.unpack_from(">Q", data, offset)[0]

    cluster_bits, = struct.unpack_from(">I", data, 20)
    nb_snapshots, = struct.unpack_from(">I", data, 60)
    refcount_order, header_length = struct.unpack_from(">II", data, 96)
    h = {
        "cluster_bits": cluster_bits,
        "refcount_order": refcount_order,
        "l1": u64(40),
        "l2": u64(u64(40)) & OFFSET_MASK,
        "reftable": u64(48),
        "refblock": u64(u64(48)) & ~0x1ff,
    }
    if nb_snapshots:
        h["snapshot-table"] = u64(64)
        h["snapshot-l1"] = u64(u64(64))
        h["snapshot-l2"] = u64(h["snapshot-l1"]) & OFFSET_MASK
    directory = bitmap_directory(data, header_length)
    if directory:
        h["bitmap-directory"] = directory
        h["bitmap-table"] = u64(directory)
    return h


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


def assert_refused(daemon, what):
    assert ("Preventing invalid write on metadata (overlaps with "
            f"{KIND[what]})") in daemon.stderr(), daemon.stderr()


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
    assert "return" in resp, resp
    assert daemon.stop(), daemon.stderr()
    assert_intact(img, before)
    assert bitmap_names(img) == ["bm0"]
    assert_refused(daemon, what)


@iotests.blockd_only("checks blockd's own messages")
def test_bitmap_store_refused_at_close(daemon_factory, scratch):
    """Storing the bitmap at close is refused and named; data stays intact.

    Setting in_use at open rewrites the directory in place (as QEMU does),
    so the open succeeds; the store at close needs new clusters, and the
    damaged refcount hands out the active L1 table's.
    """
    img, before = damaged_image(scratch, "l1")
    d = daemon_factory("--blockdev", "driver=qcow2,node-name=n,file.driver=file,"
                       f"file.filename={img}")
    assert d.stop()
    err = d.stderr()
    assert ("qcow2: Marking image as corrupt: Preventing invalid write on "
            "metadata (overlaps with active L1 table)") in err, err
    assert "Lost persistent bitmaps during inactivation of node 'n'" in err, err
    assert_intact(img, before)
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    assert info["format-specific"]["data"]["corrupt"] is True, info


def guest_write_refused(daemon, img, before, what):
    """A guest write allocating a new cluster gets EIO instead."""
    resp = blockdev_add(daemon, img)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("n", writable=True)
    res = qemu_io_cmds(nbd_uri(sock, "n"), ["write -q -P 2 8M 64k"],
                       check=False)
    assert "Input/output error" in res.output, res
    assert daemon.stop(), daemon.stderr()
    assert_intact(img, before)
    assert_refused(daemon, what)


@pytest.mark.parametrize("what", TARGETS)
def test_guest_write_not_written_over_metadata(daemon, scratch, what):
    img, before = damaged_image(scratch, what, bitmap=False)
    guest_write_refused(daemon, img, before, what)


@pytest.mark.parametrize("what", [
    "snapshot-table",
    "snapshot-l1",
    pytest.param("snapshot-l2", marks=iotests.blockd_only(
        "qemu-storage-daemon checks inactive L2 tables only with "
        "overlap-check=all")),
    "bitmap-directory",
    pytest.param("bitmap-table", marks=iotests.blockd_only(
        "qemu-storage-daemon does not check bitmap tables")),
])
def test_guest_write_not_written_over_snapshots_and_bitmaps(daemon, scratch,
                                                            what):
    """The same for what snapshots and (disabled) bitmaps own."""
    img = os.path.join(scratch, "t.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, SIZE)
    qemu_io("-f", "qcow2", "-c", "write -q -P 1 0 1M", img)
    qemu_img("snapshot", "-c", "s0", img)
    # The active L1 table gets its own copy of the first L2 table: the
    # snapshot's one is used by the snapshot alone.
    qemu_io("-f", "qcow2", "-c", "write -q -P 1 0 64k", img)
    qemu_img("bitmap", "--add", "--disable", img, "bm0")
    drop_refcount(img, what)
    before = check(img)
    assert before.get("corruptions") == 1, before
    guest_write_refused(daemon, img, before, what)
    # The snapshot reads back too.
    raw = os.path.join(scratch, "s0.raw")
    qemu_img("convert", "-f", "qcow2", "-l", "s0", "-O", "raw", img, raw)
    with open(raw, "rb") as f:
        assert f.read(MiB) == b"\x01" * MiB


# --- The snapshot table, read at open for the check ---

def snapshot_image(scratch):
    img = os.path.join(scratch, "s.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, SIZE)
    qemu_io("-f", "qcow2", "-c", "write -q -P 1 0 1M", img)
    qemu_img("snapshot", "-c", "s0", img)
    return img


def patch(img, offset, fmt, value):
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def test_snapshot_table_at_end_of_file(daemon, scratch):
    """qemu-img leaves out the padding of the last entry at the file end."""
    img = snapshot_image(scratch)
    assert os.path.getsize(img) % 8, "the table ends the file, unpadded"
    resp = blockdev_add(daemon, img)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("n", writable=True)
    qemu_io_cmds(nbd_uri(sock, "n"), ["write -q -P 2 0 64k",
                                      "write -q -P 2 8M 64k"])
    assert daemon.stop(), daemon.stderr()
    res = qemu_img("check", img, check=False)
    assert "No errors were found" in res.stdout, res


def test_snapshot_extra_data_refused(daemon, scratch):
    img = snapshot_image(scratch)
    patch(img, header(img)["snapshot-table"] + 36, ">I", 1025)
    resp = blockdev_add(daemon, img)
    assert "Too much extra metadata in snapshot table entry 0" in \
        resp["error"]["desc"], resp


@iotests.blockd_only("QEMU reads a snapshot table past the end of the file")
def test_snapshot_table_past_eof_refused(daemon, scratch):
    img = snapshot_image(scratch)
    patch(img, 60, ">I", 1000)          # nb_snapshots
    resp = blockdev_add(daemon, img)
    assert "qcow2: snapshot table entry" in resp["error"]["desc"], resp
    assert "beyond the end of the image file" in resp["error"]["desc"], resp


@iotests.blockd_only("QEMU checks a snapshot's L1 table only when it is used")
def test_snapshot_l1_invalid_refused_read_write(daemon, scratch):
    img = snapshot_image(scratch)
    patch(img, header(img)["snapshot-table"], ">Q", 0x30200)
    resp = blockdev_add(daemon, img)
    assert resp["error"]["desc"] == \
        "qcow2: snapshot 0: Snapshot L1 table offset invalid", resp
    # Read-only, nothing is written: the L1 table is not needed.
    resp = daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "ro", "read-only": True,
        "file": {"driver": "file", "filename": img}})
    assert "return" in resp, resp
