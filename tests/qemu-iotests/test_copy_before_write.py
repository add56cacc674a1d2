"""The copy-before-write filter opened with blockdev-add, on its own.

A source image whose every 64 KiB cluster holds its own pattern sits
below a copy-before-write node ``cbw`` whose target is an empty image.
Guest writes go through a writable NBD export of ``cbw`` (qemu-io); the
target must then hold the old data of exactly the clusters written and
nothing else, while the source holds the new data.  The ``bitmap``
option restricts which clusters are copied; on-cbw-error decides what a
failing target (blkdebug) or a slow one (nbdkit's delay filter behind
the nbd driver, with cbw-timeout) does to the guest's write and to the
snapshot, read through a snapshot-access node.  Permission conflicts and
option errors carry QEMU 7.2's messages.

Everything runs against blockd and qemu-storage-daemon alike, except
min-cluster-size (QEMU 9.2).

iotests groups: quick rw
"""

import os
import time

import pytest

from iotests import KiB, MiB, blockd_only, nbd_uri, qemu_io_cmds
from nbd_client import CMD_FLUSH, NBDClient
from nbd_servers import Nbdkit

pytestmark = [pytest.mark.quick, pytest.mark.rw]

SIZE = 4 * MiB
CLUSTER = 64 * KiB
NCLUSTERS = SIZE // CLUSTER
NEW = 0xee


def old_pattern(cluster):
    """The source's original byte in ``cluster`` (never 0 or NEW)."""
    return cluster % 200 + 1


def clusters_of(offset, length):
    return set(range(offset // CLUSTER, (offset + length - 1) // CLUSTER + 1))


def make_source(path):
    """A raw image whose cluster i is filled with old_pattern(i)."""
    with open(path, "wb") as f:
        for c in range(NCLUSTERS):
            f.write(bytes([old_pattern(c)]) * CLUSTER)
    return path


def make_empty(path, size=SIZE):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def assert_target_holds(target_path, copied):
    """The target holds the old data of exactly the clusters ``copied``."""
    data = read_file(target_path)
    assert len(data) == SIZE
    for c in range(NCLUSTERS):
        want = bytes([old_pattern(c) if c in copied else 0]) * CLUSTER
        got = data[c * CLUSTER:(c + 1) * CLUSTER]
        assert got == want, f"target cluster {c}: {'copied' if c in copied else 'untouched'}" \
                            f" expected, found byte {got[0]:#x}"


def error_of(resp):
    assert "error" in resp, resp
    return resp["error"]["desc"]


class Graph:
    """Source ``src`` and target ``tgt`` (file + raw nodes) in a daemon."""

    def __init__(self, d, scratch):
        self.d = d
        self.src_path = make_source(os.path.join(scratch, "src.raw"))
        self.tgt_path = make_empty(os.path.join(scratch, "tgt.raw"))
        d.add_file_raw(self.src_path, "src")
        d.add_file_raw(self.tgt_path, "tgt")
        self.sock = None

    def add_cbw(self, target="tgt", node="cbw", **opts):
        self.d.command("blockdev-add", {"driver": "copy-before-write", "node-name": node,
                                        "file": "src", "target": target, **opts})

    def export(self, node="cbw", export_id="e-cbw", writable=True):
        if self.sock is None:
            self.sock = self.d.start_nbd_unix()
        self.d.command("block-export-add", {"type": "nbd", "id": export_id,
                                            "node-name": node, "name": node,
                                            "writable": writable})
        return nbd_uri(self.sock, node)

    def guest_write(self, writes, check=True):
        """qemu-io writes of NEW through the filter's export."""
        uri = self.export() if self.sock is None else nbd_uri(self.sock, "cbw")
        return qemu_io_cmds(uri, [f"write -P {NEW:#x} {o} {n}" for o, n in writes],
                            check=check)

    def expected_source(self, writes):
        data = bytearray()
        for c in range(NCLUSTERS):
            data += bytes([old_pattern(c)]) * CLUSTER
        for o, n in writes:
            data[o:o + n] = bytes([NEW]) * n
        return bytes(data)


@pytest.fixture
def graph(daemon, scratch):
    return Graph(daemon, scratch)


# (offset, length): unaligned, straddling a boundary, a whole cluster,
# several clusters, the very last byte.
WRITES = [
    (512, 512),
    (3 * CLUSTER - 4 * KiB, 8 * KiB),
    (10 * CLUSTER, CLUSTER),
    (20 * CLUSTER + 100, 3 * CLUSTER),
    (SIZE - 1, 1),
]


def test_old_data_of_written_clusters_is_copied(graph):
    graph.add_cbw()
    graph.export()
    graph.guest_write(WRITES)
    copied = set().union(*(clusters_of(o, n) for o, n in WRITES))
    assert_target_holds(graph.tgt_path, copied)
    assert read_file(graph.src_path) == graph.expected_source(WRITES)


def test_second_write_copies_nothing_more(graph):
    """A cluster is copied once: the old data stays the first old data."""
    graph.add_cbw()
    graph.export()
    graph.guest_write([(0, 4 * KiB)])
    graph.guest_write([(0, CLUSTER), (CLUSTER, 512)])
    assert_target_holds(graph.tgt_path, {0, 1})


def test_write_zeroes_and_discard_copy_first(graph):
    # Without discard=unmap, the filter node would drop discards itself.
    graph.add_cbw(discard="unmap")
    uri = graph.export()
    qemu_io_cmds(uri, [f"write -z {5 * CLUSTER} {CLUSTER}",
                       f"discard {8 * CLUSTER} {2 * CLUSTER}"])
    assert_target_holds(graph.tgt_path, {5, 8, 9})


def test_reads_come_from_the_source(graph):
    graph.add_cbw()
    uri = graph.export()
    graph.guest_write([(CLUSTER, 4 * KiB)])
    out = qemu_io_cmds(uri, [f"read -P {old_pattern(2):#x} {2 * CLUSTER} {CLUSTER}",
                             f"read -P {NEW:#x} {CLUSTER} {4 * KiB}"]).stdout
    assert "Pattern verification failed" not in out


def test_bitmap_restricts_the_copy(graph):
    """Only clusters dirty in the bitmap (when the filter opened) are copied."""
    d = graph.d
    d.command("block-dirty-bitmap-add", {"node": "src", "name": "bm",
                                         "granularity": CLUSTER})
    d.command("block-dirty-bitmap-disable", {"node": "src", "name": "bm"})
    # Mark clusters 1, 2 and 7 through a merge from a bitmap that recorded them.
    d.command("block-dirty-bitmap-add", {"node": "src", "name": "rec",
                                         "granularity": CLUSTER})
    uri = graph.export(node="src", export_id="e-src")
    qemu_io_cmds(uri, [f"write -P {old_pattern(1):#x} {CLUSTER} 512",
                       f"write -P {old_pattern(2):#x} {2 * CLUSTER + 512} 512",
                       f"write -P {old_pattern(7):#x} {7 * CLUSTER} {CLUSTER}"])
    d.del_export("e-src")
    d.command("block-dirty-bitmap-merge", {"node": "src", "target": "bm",
                                           "bitmaps": ["rec"]})
    graph.add_cbw(bitmap={"node": "src", "name": "bm"})
    # Later changes of the bitmap have no effect on the filter.
    d.command("block-dirty-bitmap-clear", {"node": "src", "name": "bm"})
    graph.export()
    graph.guest_write([(0, 3 * CLUSTER), (6 * CLUSTER, 2 * CLUSTER)])
    assert_target_holds(graph.tgt_path, {1, 2, 7})


def test_bitmap_errors(graph, scratch):
    d = graph.d
    big = make_empty(os.path.join(scratch, "big.raw"), 2 * SIZE)
    d.add_file_raw(big, "big")
    d.command("block-dirty-bitmap-add", {"node": "big", "name": "bm2"})
    args = {"driver": "copy-before-write", "node-name": "cbw", "file": "src",
            "target": "tgt"}
    assert error_of(d.cmd("blockdev-add", {**args, "bitmap": {"node": "src",
                                                              "name": "nope"}})) == \
        "Dirty bitmap 'nope' not found"
    assert error_of(d.cmd("blockdev-add", {**args, "bitmap": {"node": "nonode",
                                                              "name": "bm2"}})) == \
        "Node 'nonode' not found"
    assert error_of(d.cmd("blockdev-add", {**args, "bitmap": {"node": "big",
                                                              "name": "bm2"}})) == \
        "Cannot create block-copy-state: Failed to merge bitmap 'bm2' to internal " \
        f"copy-bitmap: Bitmaps are of different sizes (destination size is {SIZE}, " \
        f"source size is {2 * SIZE}) and can't be merged"
    # Nothing of the failed attempts is left behind.
    names = [n["node-name"] for n in d.command("query-named-block-nodes")]
    assert "cbw" not in names
    graph.add_cbw()


def test_option_errors(graph):
    d = graph.d
    args = {"driver": "copy-before-write", "node-name": "cbw", "file": "src"}
    assert error_of(d.cmd("blockdev-add", args)) == "Parameter 'target' is missing"
    assert error_of(d.cmd("blockdev-add", {**args, "target": "tgt",
                                           "cbw-timeout": -1})) == \
        "Parameter 'cbw-timeout' expects uint32_t"
    assert error_of(d.cmd("blockdev-add", {**args, "target": "tgt",
                                           "on-cbw-error": "foo"})) == \
        "Parameter 'on-cbw-error' does not accept value 'foo'"


@blockd_only("min-cluster-size is QEMU 9.2; qemu-storage-daemon 7.2 refuses it")
def test_min_cluster_size(graph):
    d = graph.d
    args = {"driver": "copy-before-write", "node-name": "cbw", "file": "src",
            "target": "tgt"}
    assert error_of(d.cmd("blockdev-add", {**args, "min-cluster-size": 3 * CLUSTER})) == \
        "min-cluster-size needs to be a power of 2"
    graph.add_cbw(**{"min-cluster-size": 4 * CLUSTER})
    graph.export()
    graph.guest_write([(5 * CLUSTER, 512)])
    # One 256 KiB copy unit: clusters 4 to 7.
    assert_target_holds(graph.tgt_path, {4, 5, 6, 7})


def failing_target(graph):
    """A blkdebug node over ``tgt`` on which every write fails with EIO."""
    graph.d.command("blockdev-add", {
        "driver": "blkdebug", "node-name": "bad", "image": "tgt",
        "inject-error": [{"event": "none", "iotype": "write", "errno": 5}]})
    return "bad"


# A snapshot read the filter refuses (EACCES), as qemu-io reports it over
# NBD: the protocol has no EACCES, and servers send EINVAL for it.
SNAPSHOT_EACCES = "read failed: Invalid argument\n"


def snapshot_read(graph, cmds, check=True):
    """qemu-io commands on the read-only export of the snapshot-access node."""
    return qemu_io_cmds(nbd_uri(graph.sock, "snap"), cmds, check=check, extra=["-r"])


def export_disk_and_snapshot(graph):
    """A snapshot-access node "snap" on the filter; the filter exported
    writable as the guest's disk, the snapshot read-only as "e-snap"."""
    graph.d.command("blockdev-add", {"driver": "snapshot-access", "node-name": "snap",
                                     "file": "cbw"})
    graph.export()
    graph.export(node="snap", export_id="e-snap", writable=False)


def test_break_guest_write(graph):
    """The guest's write fails and writes nothing; the snapshot stays valid."""
    graph.add_cbw(target=failing_target(graph), **{"on-cbw-error": "break-guest-write"})
    export_disk_and_snapshot(graph)
    res = graph.guest_write([(CLUSTER, 4 * KiB)], check=False)
    assert "write failed" in res.output, res
    assert read_file(graph.src_path) == graph.expected_source([])
    out = snapshot_read(graph, [f"read -P {old_pattern(1):#x} {CLUSTER} {CLUSTER}"]).output
    assert "Pattern verification failed" not in out


def test_break_snapshot(graph):
    """The guest's write goes through; the snapshot can no longer be read."""
    graph.add_cbw(target=failing_target(graph), **{"on-cbw-error": "break-snapshot"})
    export_disk_and_snapshot(graph)
    # Before the failure, the snapshot reads.
    snapshot_read(graph, [f"read -P {old_pattern(9):#x} {9 * CLUSTER} {CLUSTER}"])
    graph.guest_write([(CLUSTER, 4 * KiB), (2 * CLUSTER, 4 * KiB)])
    assert read_file(graph.src_path) == \
        graph.expected_source([(CLUSTER, 4 * KiB), (2 * CLUSTER, 4 * KiB)])
    res = snapshot_read(graph, [f"read {9 * CLUSTER} {CLUSTER}"], check=False)
    assert res.output == SNAPSHOT_EACCES, res


def slow_target(graph, scratch, delay):
    """An nbd node on nbdkit whose writes take ``delay`` seconds."""
    kit = Nbdkit(scratch, ["memory", str(SIZE), f"delay-write={delay}"],
                 filters=["delay"], name="slow").start()
    graph.d.command("blockdev-add", {"driver": "nbd", "node-name": "slow",
                                     "server": {"type": "unix", "path": kit.sock}})
    return kit


@pytest.mark.parametrize("policy", ["break-guest-write", "break-snapshot"])
def test_cbw_timeout(graph, scratch, policy):
    """A copy slower than cbw-timeout counts as a failed copy."""
    delay, timeout = 6, 1
    kit = slow_target(graph, scratch, delay)
    try:
        graph.add_cbw(target="slow", **{"on-cbw-error": policy, "cbw-timeout": timeout})
        export_disk_and_snapshot(graph)
        start = time.monotonic()
        res = graph.guest_write([(CLUSTER, 4 * KiB)], check=False)
        elapsed = time.monotonic() - start
        # The write waits for the timeout, not for the slow copy.
        assert timeout * 0.9 <= elapsed < delay - 1, elapsed
        snap = snapshot_read(graph, [f"read {CLUSTER} 4k"], check=False)
        if policy == "break-guest-write":
            assert "write failed" in res.output, res
            assert read_file(graph.src_path) == graph.expected_source([])
            assert snap.returncode == 0 and "failed" not in snap.output, snap
        else:
            assert res.returncode == 0 and "failed" not in res.output, res
            assert read_file(graph.src_path) == \
                graph.expected_source([(CLUSTER, 4 * KiB)])
            assert snap.output == SNAPSHOT_EACCES, snap
        # Tearing the filter down waits for the copy still running.
        graph.d.del_export("e-snap")
        graph.d.del_export("e-cbw")
        graph.d.command("blockdev-del", {"node-name": "snap"})
        graph.d.command("blockdev-del", {"node-name": "cbw"}, timeout=3 * delay)
    finally:
        graph.d.stop()
        kit.stop()


# QEMU 7.2's wording: the permission, the parent that requires it and the
# one that does not share it (an export's backend has no name).
PERM_CONFLICT_SIDE = (
    "Permission conflict on node 'src': permissions 'write' are both required by "
    "node 'side' (uses node 'src' as 'file' child) and unshared by node 'cbw' "
    "(uses node 'src' as 'file' child).")
PERM_CONFLICT_FILTER = (
    "Permission conflict on node 'src': permissions 'write' are both required by "
    "an unnamed block device (uses node 'src' as 'root' child) and unshared by "
    "node 'cbw' (uses node 'src' as 'file' child).")


def test_other_writer_on_source_conflicts(graph):
    """While the filter has parents, nobody else may write to its file."""
    d = graph.d
    graph.add_cbw()
    graph.export()
    d.command("blockdev-add", {"driver": "raw", "node-name": "side", "file": "src"})
    resp = d.cmd("block-export-add", {"type": "nbd", "id": "e-side", "node-name": "side",
                                      "writable": True})
    assert error_of(resp) == PERM_CONFLICT_SIDE, resp


def test_filter_over_written_source_conflicts(graph):
    """An export of the filter cannot start while another parent writes the file."""
    d = graph.d
    graph.export(node="src", export_id="e-src")
    graph.add_cbw()
    resp = d.cmd("block-export-add", {"type": "nbd", "id": "e-cbw", "node-name": "cbw",
                                      "writable": False})
    assert error_of(resp) == PERM_CONFLICT_FILTER, resp


def test_target_cannot_be_resized_by_others(graph):
    """Others may read and write the target, but not resize it."""
    graph.add_cbw()
    graph.export(node="tgt", export_id="e-tgt", writable=True)
    res = qemu_io_cmds(nbd_uri(graph.sock, "tgt"), [f"read 0 {CLUSTER}"])
    assert "failed" not in res.output


@blockd_only("QEMU flushes every child it writes to, the target too")
def test_flush_does_not_reach_the_target(graph):
    """A flush through the filter flushes the source only: flushes of the
    target fail, and still the guest's flush succeeds."""
    d = graph.d
    d.command("blockdev-add", {
        "driver": "blkdebug", "node-name": "bad", "image": "tgt",
        "inject-error": [{"event": "none", "iotype": "flush", "errno": 5}]})
    graph.add_cbw(target="bad")
    graph.export()
    with NBDClient(graph.sock) as c:
        c.connect_export("cbw")
        assert c.write(0, bytes([NEW]) * 4096) == 0
        assert c.simple_cmd(CMD_FLUSH) == 0
        c.disconnect()
    assert_target_holds(graph.tgt_path, {0})


WRITE_BEHIND = "__org.blockd_write-behind-buffer"


@blockd_only("__org.blockd_write-behind-buffer is a blockd extension")
def test_write_behind_lets_the_guest_go_on(graph, scratch):
    """With a write-behind buffer, a guest write waits for reading the old
    data only, not for the slow target; snapshot reads of the cluster
    wait for its copy and get the old data."""
    delay = 4
    kit = slow_target(graph, scratch, delay)
    try:
        graph.add_cbw(target="slow", **{WRITE_BEHIND: MiB})
        export_disk_and_snapshot(graph)
        start = time.monotonic()
        graph.guest_write([(CLUSTER, 4 * KiB)])
        assert time.monotonic() - start < delay - 1
        assert read_file(graph.src_path) == graph.expected_source([(CLUSTER, 4 * KiB)])
        res = snapshot_read(graph, [f"read -P {old_pattern(1):#x} {CLUSTER} {CLUSTER}"])
        assert "Pattern verification failed" not in res.output
        assert time.monotonic() - start >= delay * 0.9
    finally:
        graph.d.stop()
        kit.stop()


@blockd_only("__org.blockd_write-behind-buffer is a blockd extension")
def test_failed_write_behind_breaks_the_snapshot(graph):
    """A copy that fails behind the guest's write cannot fail the write any
    more: it breaks the snapshot, even under break-guest-write."""
    graph.add_cbw(target=failing_target(graph), **{"on-cbw-error": "break-guest-write",
                                                   WRITE_BEHIND: MiB})
    export_disk_and_snapshot(graph)
    graph.guest_write([(CLUSTER, 4 * KiB)])
    assert read_file(graph.src_path) == graph.expected_source([(CLUSTER, 4 * KiB)])
    res = snapshot_read(graph, [f"read {CLUSTER} 4k"], check=False)
    assert res.output == SNAPSHOT_EACCES, res


@blockd_only("__org.blockd_write-behind-buffer is a blockd extension")
def test_write_behind_in_schema(graph):
    schema = graph.d.command("query-qmp-schema")
    members = [m["name"] for e in schema if e["meta-type"] == "object"
               for m in e.get("members", [])]
    assert WRITE_BEHIND in members


SPILL_SIZE = "__org.blockd_write-behind-spill-size"
SPILL_DIR = "__org.blockd_write-behind-spill-dir"
# Guest writes into five different clusters, each its own copy.
SPILL_CLUSTERS = [1, 5, 9, 13, 40]


def spill_writes(clusters):
    return [(c * CLUSTER + 512, 4 * KiB) for c in clusters]


@blockd_only(f"{SPILL_SIZE} is a blockd extension")
def test_write_behind_spill_lets_the_guest_go_on(graph, scratch):
    """With one cluster of write-behind memory and a spill file of a few
    MiB, guest writes to five clusters all return long before the slow
    target could take a single copy; snapshot reads wait for the copies
    (read back from the spill one cluster at a time) and get the old
    data."""
    delay = 3
    spill_dir = os.path.join(scratch, "spill")
    os.mkdir(spill_dir)
    kit = slow_target(graph, scratch, delay)
    writes = spill_writes(SPILL_CLUSTERS)
    try:
        graph.add_cbw(target="slow", **{WRITE_BEHIND: CLUSTER, SPILL_SIZE: 4 * MiB,
                                        SPILL_DIR: spill_dir})
        export_disk_and_snapshot(graph)
        start = time.monotonic()
        graph.guest_write(writes)
        assert time.monotonic() - start < delay - 1
        # The spill file has no name: nothing to clean up after a crash.
        assert os.listdir(spill_dir) == []
        assert read_file(graph.src_path) == graph.expected_source(writes)
        res = snapshot_read(graph, [f"read -P {old_pattern(c):#x} {c * CLUSTER} {CLUSTER}"
                                    for c in SPILL_CLUSTERS])
        assert "Pattern verification failed" not in res.output
        # One copy from memory, then four read back from the spill.
        assert time.monotonic() - start >= delay * 0.9
    finally:
        graph.d.stop()
        kit.stop()


@blockd_only(f"{SPILL_SIZE} is a blockd extension")
def test_write_behind_spill_full_waits(graph, scratch):
    """Memory and spill (two clusters) taken: the next guest write waits
    for its copy to reach the slow target, as without write-behind."""
    delay = 3
    kit = slow_target(graph, scratch, delay)
    try:
        graph.add_cbw(target="slow", **{WRITE_BEHIND: CLUSTER, SPILL_SIZE: 2 * CLUSTER,
                                        SPILL_DIR: scratch})
        export_disk_and_snapshot(graph)
        start = time.monotonic()
        graph.guest_write(spill_writes([1, 5, 9]))
        assert time.monotonic() - start < delay - 1
        start = time.monotonic()
        graph.guest_write(spill_writes([13]))
        assert time.monotonic() - start >= delay * 0.9
        res = snapshot_read(graph, [f"read -P {old_pattern(c):#x} {c * CLUSTER} {CLUSTER}"
                                    for c in [1, 5, 9, 13]])
        assert "Pattern verification failed" not in res.output
    finally:
        graph.d.stop()
        kit.stop()


@blockd_only(f"{SPILL_SIZE} is a blockd extension")
@pytest.mark.parametrize("opts,desc", [
    # QMP takes -1 for a size as 2^64 - 1, as QEMU does.
    ({SPILL_SIZE: -1}, f"{SPILL_SIZE} too large: {2**64 - 1} > {2**63 - 1}"),
    ({SPILL_SIZE: "big"}, f"Invalid parameter type for '{SPILL_SIZE}', expected: integer"),
    ({SPILL_DIR: 7}, f"Invalid parameter type for '{SPILL_DIR}', expected: string"),
    ({WRITE_BEHIND: CLUSTER, SPILL_SIZE: 2**63},
     f"{SPILL_SIZE} too large: {2**63} > {2**63 - 1}"),
    ({WRITE_BEHIND: CLUSTER, SPILL_SIZE: CLUSTER - 1},
     "Cannot create block-copy-state: The write-behind spill size (65535 bytes) is "
     "less than a cluster (65536 bytes)"),
    ({SPILL_SIZE: MiB},
     "Cannot create block-copy-state: A write-behind spill needs a write-behind "
     "buffer of at least a cluster (65536 bytes)"),
    ({WRITE_BEHIND: CLUSTER - 1, SPILL_SIZE: MiB},
     "Cannot create block-copy-state: A write-behind spill needs a write-behind "
     "buffer of at least a cluster (65536 bytes)"),
    ({WRITE_BEHIND: CLUSTER, SPILL_DIR: "/tmp"},
     f"{SPILL_DIR} needs {SPILL_SIZE}"),
    ({WRITE_BEHIND: CLUSTER, SPILL_SIZE: MiB, SPILL_DIR: "/nonexistent"},
     "Cannot create block-copy-state: Could not create a write-behind spill file "
     "in '/nonexistent': No such file or directory"),
], ids=["negative", "string", "dir-not-string", "too-large", "less-than-a-cluster",
        "no-buffer", "buffer-less-than-a-cluster", "dir-without-size", "no-such-dir"])
def test_write_behind_spill_option_errors(graph, opts, desc):
    d = graph.d
    args = {"driver": "copy-before-write", "node-name": "cbw", "file": "src",
            "target": "tgt"}
    assert error_of(d.cmd("blockdev-add", {**args, **opts})) == desc
    names = [n["node-name"] for n in d.command("query-named-block-nodes")]
    assert "cbw" not in names


@blockd_only("the write-behind buffer is a blockd extension; qsd 7.2 has no "
             "min-cluster-size")
@pytest.mark.parametrize("name", [WRITE_BEHIND, "min-cluster-size"])
def test_byte_count_too_large(graph, name):
    """QMP takes -1 for a size as 2^64 - 1; no byte count passes 2^63 - 1."""
    d = graph.d
    args = {"driver": "copy-before-write", "node-name": "cbw", "file": "src",
            "target": "tgt", name: -1}
    assert error_of(d.cmd("blockdev-add", args)) == \
        f"{name} too large: {2**64 - 1} > {2**63 - 1}"


@blockd_only(f"{SPILL_SIZE} is a blockd extension")
def test_write_behind_spill_in_schema(graph):
    schema = graph.d.command("query-qmp-schema")
    members = {m["name"]: m["type"] for e in schema if e["meta-type"] == "object"
               for m in e.get("members", [])}
    assert SPILL_SIZE in members and SPILL_DIR in members
