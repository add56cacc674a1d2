"""Fleecing: pulling a point-in-time snapshot out of a disk in use.

The snapshot-access recipe (QEMU's image-fleecing test, reference §3.7):
a copy-before-write node ``cbw`` over the disk, with a scratch image
``tmp`` as its target, and a ``snapshot-access`` node ``snap`` over
``cbw``, exported over NBD.  The "guest" is a writable NBD export of a
raw node ``guest`` whose file is re-pointed from the disk to ``cbw``
with blockdev-reopen (a daemon has no devices to qom-set), and back at
teardown.

While the guest keeps writing, nbdcopy pulls the snapshot export; the
pulled image must equal the disk as it was when the filter went in.
``nbdinfo --map`` shows the snapshot's allocation and the exported
dirty bitmap; reads outside the filter's bitmap are refused; discards
through the snapshot export free the scratch image's space.  The older
scheme without snapshot-access (a qcow2 overlay over the disk as the
target, exported itself) pulls the point in time too.

Everything runs against blockd and qemu-storage-daemon alike.

iotests groups: quick rw
"""

import os
import random

import pytest

import iotests
from iotests import (KiB, MiB, blockd_only, compare_images, nbd_uri, nbdinfo_map, qemu_img,
                     qemu_io_cmds, qemu_io_popen, run, wait_all)
from nbd_client import EINVAL, NBDClient

pytestmark = [pytest.mark.quick, pytest.mark.rw]

SIZE = 16 * MiB
CLUSTER = 64 * KiB
# Where the disk holds data at first; the rest is a hole.
DATA_EXTENTS = [(0, 2 * MiB), (6 * MiB, MiB), (12 * MiB, 3 * MiB)]
# NBD extent types as nbdinfo reports them.
DATA, HOLE_ZERO = 0, 3
CLEAN, DIRTY = 0, 1
# The filter refuses snapshot reads with EACCES; NBD has no such error,
# and servers send EINVAL for it.
SNAPSHOT_EACCES = EINVAL


def make_disk(path):
    """A sparse raw image with DATA_EXTENTS filled with pseudo-random data."""
    rnd = random.Random(4711)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off, length in DATA_EXTENTS:
            f.seek(off)
            f.write(rnd.randbytes(length))
    return path


def make_scratch(path):
    with open(path, "wb") as f:
        f.truncate(SIZE)
    return path


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


def error_of(resp):
    assert "error" in resp, resp
    return resp["error"]["desc"]


class Fleecing:
    """The disk, its guest export, and (after :meth:`start`) the fleecing nodes."""

    def __init__(self, d, scratch):
        self.d = d
        self.scratch = scratch
        self.disk_path = make_disk(os.path.join(scratch, "disk.raw"))
        self.tmp_path = make_scratch(os.path.join(scratch, "fleece.raw"))
        d.add_file_raw(self.disk_path, "disk0")
        d.command("blockdev-add", {"driver": "raw", "node-name": "guest", "file": "disk0"})
        self.sock = d.start_nbd_unix()
        d.command("block-export-add", {"type": "nbd", "id": "e-guest", "node-name": "guest",
                                       "name": "guest", "writable": True})
        self.guest = nbd_uri(self.sock, "guest")
        self.snap = nbd_uri(self.sock, "snap")

    def point_in_time(self):
        """A copy of the disk as it is now (no guest write is in flight)."""
        path = os.path.join(self.scratch, f"pit{random.randrange(1 << 30)}.raw")
        with open(self.disk_path, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        return path

    def start(self, bitmap=None, export_bitmaps=None, writable=False, **cbw_opts):
        d = self.d
        d.add_file_raw(self.tmp_path, "tmp", raw_opts={"discard": "unmap"}, discard="unmap")
        cbw = {"driver": "copy-before-write", "node-name": "cbw", "file": "disk0",
               "target": "tmp", **cbw_opts}
        if bitmap:
            cbw["bitmap"] = {"node": "disk0", "name": bitmap}
        d.command("blockdev-add", cbw)
        self.reopen_guest("cbw")
        d.command("blockdev-add", {"driver": "snapshot-access", "node-name": "snap",
                                   "file": "cbw", "discard": "unmap"})
        exp = {"type": "nbd", "id": "e-snap", "node-name": "snap", "name": "snap",
               "writable": writable}
        if export_bitmaps:
            exp["bitmaps"] = export_bitmaps
        d.command("block-export-add", exp)

    def reopen_guest(self, file):
        self.d.command("blockdev-reopen", {"options": [
            {"driver": "raw", "node-name": "guest", "file": file}]})

    def stop(self):
        d = self.d
        d.del_export("e-snap")
        d.command("blockdev-del", {"node-name": "snap"})
        self.reopen_guest("disk0")
        d.command("blockdev-del", {"node-name": "cbw"})
        d.command("blockdev-del", {"node-name": "tmp"})
        d.command("blockdev-del", {"node-name": "tmp-file"})

    def guest_write(self, writes, pattern=0xa5):
        qemu_io_cmds(self.guest, [f"write -P {pattern:#x} {o} {n}" for o, n in writes])


@pytest.fixture
def fleece(daemon, scratch):
    return Fleecing(daemon, scratch)


# Guest writes while the snapshot is pulled: into data, into holes,
# unaligned, across extent ends.
GUEST_WRITES = [(i * 301 * KiB % (SIZE - 200 * KiB), (i % 5 + 1) * 13 * KiB)
                for i in range(60)]


@pytest.mark.parametrize("cbw_opts", [
    {},
    pytest.param({"__org.blockd_write-behind-buffer": 256 * KiB}, id="write-behind",
                 marks=blockd_only("__org.blockd_write-behind-buffer is a blockd "
                                   "extension")),
])
def test_pull_equals_point_in_time(fleece, scratch, cbw_opts):
    """nbdcopy pulls the point in time while the guest writes."""
    iotests.require_tool("nbdcopy")
    fleece.guest_write([(MiB, 4 * KiB)], pattern=0x11)      # before: in the snapshot
    fleece.start(**cbw_opts)
    pit = fleece.point_in_time()
    guest = qemu_io_popen(fleece.guest, [f"write -P 0x5a {o} {n}" for o, n in GUEST_WRITES])
    pulled = os.path.join(scratch, "pulled.raw")
    run(["nbdcopy", fleece.snap, pulled])
    wait_all([guest])
    compare_images(pulled, pit)
    # The snapshot still reads the point in time after all guest writes.
    pulled_again = os.path.join(scratch, "pulled2.raw")
    run(["nbdcopy", fleece.snap, pulled_again])
    compare_images(pulled_again, pit)
    # And the disk has the guest's data.
    res = qemu_io_cmds(fleece.guest, [f"read -P 0x5a {o} {n}" for o, n in GUEST_WRITES[-5:]])
    assert "Pattern verification failed" not in res.output
    fleece.stop()


def test_map_shows_point_in_time_allocation(fleece):
    """The snapshot's base:allocation map is the disk's map at the point in
    time, also where the guest overwrote data since (now in the scratch
    image).  (Old zeroes copied to the scratch image may show as data or
    as zeroes, depending on how the file system took the write-zeroes:
    not checked.)"""
    fleece.start()
    fleece.guest_write([(0, 3 * CLUSTER), (6 * MiB + CLUSTER, 5), (14 * MiB, CLUSTER)])
    want = []
    pos = 0
    for off, length in DATA_EXTENTS:
        if off > pos:
            want.append((pos, off - pos, HOLE_ZERO))
        want.append((off, length, DATA))
        pos = off + length
    want.append((pos, SIZE - pos, HOLE_ZERO))
    got = nbdinfo_map(fleece.snap)
    assert got == want, (got, want)
    fleece.stop()


def add_bitmap_with(fleece, name, writes):
    """A bitmap on disk0 that recorded ``writes`` of the guest, then disabled."""
    d = fleece.d
    d.command("block-dirty-bitmap-add", {"node": "disk0", "name": name,
                                         "granularity": CLUSTER})
    fleece.guest_write(writes, pattern=0x22)
    d.command("block-dirty-bitmap-disable", {"node": "disk0", "name": name})


BITMAP_WRITES = [(CLUSTER, 100), (5 * MiB, 2 * CLUSTER), (SIZE - CLUSTER, CLUSTER)]


def bitmap_runs():
    """The runs of a CLUSTER-granular bitmap after BITMAP_WRITES."""
    dirty = set()
    for off, length in BITMAP_WRITES:
        dirty.update(range(off // CLUSTER, (off + length - 1) // CLUSTER + 1))
    runs = []
    for c in range(SIZE // CLUSTER):
        flag = DIRTY if c in dirty else CLEAN
        if runs and runs[-1][2] == flag:
            runs[-1] = (runs[-1][0], runs[-1][1] + CLUSTER, flag)
        else:
            runs.append((c * CLUSTER, CLUSTER, flag))
    return runs


def test_incremental_pull_with_bitmap(fleece, scratch):
    """The filter's bitmap restricts the snapshot; the exported bitmap
    tells the client what to read; reads outside it are refused."""
    add_bitmap_with(fleece, "bm0", BITMAP_WRITES)
    fleece.start(bitmap="bm0", export_bitmaps=[{"node": "disk0", "name": "bm0"}])
    with open(fleece.point_in_time(), "rb") as f:
        want = f.read()
    fleece.guest_write([(0, 2 * CLUSTER), (5 * MiB, 4 * KiB)], pattern=0x77)

    runs = nbdinfo_map(fleece.snap, "qemu:dirty-bitmap:bm0")
    assert runs == bitmap_runs()
    with NBDClient(fleece.sock) as c:
        c.connect_export("snap")
        # Cluster by cluster: see test_read_across_copied_clusters.
        for off, length, flag in runs:
            for piece in range(off, off + length, CLUSTER):
                n = CLUSTER
                err, data = c.read(piece, n)
                if flag == DIRTY:
                    assert (err, data) == (0, want[piece:piece + n]), (piece, n)
                else:
                    assert err == SNAPSHOT_EACCES, (piece, n, err)
        # A read straddling the end of a dirty run is refused whole.
        assert c.read(2 * CLUSTER - 512, 1024)[0] == SNAPSHOT_EACCES
        c.disconnect()
    # qemu-io reports the refusal too.
    res = qemu_io_cmds(fleece.snap, [f"read {3 * CLUSTER} 4k"], extra=["-r"], check=False)
    assert res.output == "read failed: Invalid argument\n", res
    fleece.stop()


@blockd_only("qemu-storage-daemon 7.2 returns the guest's new data for the "
             "copied part of a snapshot read that also covers clusters not "
             "copied yet")
def test_read_across_copied_clusters(fleece):
    """One snapshot read over clusters the guest overwrote (old data in the
    scratch image) and clusters it did not (old data still on the disk)."""
    fleece.start()
    with open(fleece.point_in_time(), "rb") as f:
        want = f.read()
    fleece.guest_write([(CLUSTER, 4 * KiB), (3 * CLUSTER, CLUSTER)], pattern=0x77)
    with NBDClient(fleece.sock) as c:
        c.connect_export("snap")
        for off, n in [(0, 4 * CLUSTER), (CLUSTER + 512, CLUSTER), (0, MiB)]:
            assert c.read(off, n) == (0, want[off:off + n]), (off, n)
        c.disconnect()
    fleece.stop()


def discard_and_check(fleece, offset, length, freed_clusters):
    """Discard through the snapshot export; ``freed_clusters`` clusters of
    the scratch image must become free."""
    used = allocated_bytes(fleece.tmp_path)
    qemu_io_cmds(fleece.snap, [f"discard {offset} {length}"])
    assert used - allocated_bytes(fleece.tmp_path) == freed_clusters * CLUSTER


def test_discard_frees_scratch_space(fleece):
    """A client's discards through the snapshot export free the scratch
    image, make the clusters unreadable, and stop the copies there."""
    fleece.start(writable=True)
    fleece.guest_write([(0, 2 * MiB)])
    assert allocated_bytes(fleece.tmp_path) >= 2 * MiB
    discard_and_check(fleece, CLUSTER, MiB, 16)
    with NBDClient(fleece.sock) as c:
        c.connect_export("snap")
        assert c.read(CLUSTER, 4 * KiB)[0] == SNAPSHOT_EACCES
        assert c.read(MiB, 4 * KiB)[0] == SNAPSHOT_EACCES
        assert c.read(0, CLUSTER)[0] == 0
        assert c.read(MiB + CLUSTER, CLUSTER)[0] == 0
        c.disconnect()
    # Guest writes to discarded clusters copy nothing any more.
    used = allocated_bytes(fleece.tmp_path)
    fleece.guest_write([(2 * CLUSTER, 4 * CLUSTER)], pattern=0x99)
    assert allocated_bytes(fleece.tmp_path) == used
    fleece.stop()


@blockd_only("qemu-storage-daemon 7.2 aborts on an unaligned snapshot discard "
             "(hbitmap_reset assertion); later QEMU aligns it inwards")
def test_unaligned_discard_is_aligned_inwards(fleece):
    fleece.start(writable=True)
    fleece.guest_write([(0, 2 * MiB)])
    # Only the whole clusters inside [512, 2 MiB - 512) are discarded.
    discard_and_check(fleece, 512, 2 * MiB - 1024, 30)
    with NBDClient(fleece.sock) as c:
        c.connect_export("snap")
        assert c.read(0, CLUSTER)[0] == 0
        assert c.read(2 * MiB - CLUSTER, CLUSTER)[0] == 0
        assert c.read(CLUSTER, CLUSTER)[0] == SNAPSHOT_EACCES
        c.disconnect()
    # Less than a cluster: nothing.
    discard_and_check(fleece, 100, CLUSTER, 0)
    fleece.stop()


def test_snapshot_access_refuses_writes(fleece):
    fleece.start(writable=True)
    res = qemu_io_cmds(fleece.snap, ["write 0 4k", "write -z 0 64k"], check=False)
    assert res.output.count("failed") == 2, res
    fleece.stop()


def test_pull_from_overlay_target(fleece, scratch):
    """The older scheme without snapshot-access: the target is a qcow2
    overlay whose backing file is the disk, exported itself.  Clusters
    the filter copied read from the overlay, the others from the disk
    below it (QEMU's image-fleecing, second variant)."""
    iotests.require_tool("nbdcopy")
    d = fleece.d
    overlay = os.path.join(scratch, "overlay.qcow2")
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", fleece.disk_path, "-u",
             overlay, str(SIZE))
    d.command("blockdev-add", {"driver": "qcow2", "node-name": "tmp", "backing": "disk0",
                               "file": {"driver": "file", "filename": overlay}})
    d.command("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw",
                               "file": "disk0", "target": "tmp"})
    fleece.reopen_guest("cbw")
    d.command("block-export-add", {"type": "nbd", "id": "e-tmp", "node-name": "tmp",
                                   "name": "tmp"})
    pit = fleece.point_in_time()
    guest = qemu_io_popen(fleece.guest, [f"write -P 0x5a {o} {n}" for o, n in GUEST_WRITES])
    pulled = os.path.join(scratch, "pulled.raw")
    run(["nbdcopy", nbd_uri(fleece.sock, "tmp"), pulled])
    wait_all([guest])
    compare_images(pulled, pit)
    d.del_export("e-tmp")
    if iotests.is_reference():
        # qemu-storage-daemon 7.2 aborts in blockdev-reopen here
        # (bdrv_parent_drained_end_single_no_poll assertion); quit
        # tears the graph down instead.
        return
    fleece.reopen_guest("disk0")
    d.command("blockdev-del", {"node-name": "cbw"})
    d.command("blockdev-del", {"node-name": "tmp"})


def test_snapshot_access_over_another_driver(fleece):
    """As in QEMU, the node opens over any node, and then reads fail."""
    d = fleece.d
    d.command("blockdev-add", {"driver": "snapshot-access", "node-name": "snap",
                               "file": "disk0"})
    info = [n for n in d.command("query-named-block-nodes") if n["node-name"] == "snap"]
    assert info[0]["image"]["virtual-size"] == SIZE
    d.command("block-export-add", {"type": "nbd", "id": "e-snap", "node-name": "snap",
                                   "name": "snap"})
    res = qemu_io_cmds(fleece.snap, ["read 0 4k"], extra=["-r"], check=False)
    assert res.output == "read failed: Operation not supported\n", res
    d.del_export("e-snap")
    d.command("blockdev-del", {"node-name": "snap"})
