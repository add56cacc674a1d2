"""Live backup with compress=true: qcow2 compressed clusters on the target.

As in test_backup.py, the source is exported writable over NBD and
qemu-io writes to it while the (slowed) job runs; the target must equal
a copy of the source taken before the job.  ``qemu-img check`` must find
the target clean, and its count of compressed clusters shows that the
data really was compressed (all of it that shrinks, none of what does
not).  Targets that cannot take compressed writes are refused with
QEMU's message.  Runs against blockd and qemu-storage-daemon 7.2 with the
same expectations.

iotests groups: rw
"""

import json
import os
import shutil
import signal
import time

import pytest

from iotests import MiB, compare_images, qemu_img
from test_backup import (CLUSTER, SIZE, SLOW, add_qcow2, backup, finish, fill,
                         guest_writes, open_src, start_export)

pytestmark = pytest.mark.rw

REFUSED = "Compression is not supported for this drive "


def check(path):
    """``qemu-img check``: assert the image is clean; return its report."""
    res = qemu_img("check", "--output=json", "-f", "qcow2", path, check=False)
    report = json.loads(res.stdout)
    assert res.returncode == 0, res
    for key in ("check-errors", "corruptions", "leaks"):
        assert report.get(key, 0) == 0, report
    return report


def qcow2_target(d, scratch, compression_type="zlib", node="tgt"):
    path = os.path.join(scratch, f"{node}.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"compression_type={compression_type}",
             path, str(SIZE))
    add_qcow2(d, path, node)
    return path


@pytest.fixture
def compressible(scratch):
    """A raw source of runs of one byte, holes between them, and its copy."""
    src = os.path.join(scratch, "src.img")
    qemu_img("create", "-q", "-f", "raw", src, str(SIZE))
    fill(src, patterns=[(0xa1, 0, 2 * MiB), (0xa2, 5 * MiB, MiB), (0xa3, 9 * MiB, MiB),
                        (0xa4, SIZE - MiB, MiB)])
    ref = os.path.join(scratch, "ref.img")
    shutil.copyfile(src, ref)
    return src, ref


def completed(d):
    """Wait for job "j" to end; assert that it succeeded."""
    ev = finish(d, "j")
    assert ev["event"] == "BLOCK_JOB_COMPLETED" and "error" not in ev["data"], ev
    return ev


def backed_up(d, tgt, ref, exported=True):
    """Job "j" succeeded: stop the daemon, check that the qcow2 @tgt holds
    the raw @ref, and return its `qemu-img check` report."""
    completed(d)
    if exported:
        d.del_export("e")
    d.stop()
    compare_images(tgt, ref, "qcow2", "raw")
    return check(tgt)


@pytest.mark.parametrize("compression_type", ["zlib", "zstd"])
def test_point_in_time(daemon, scratch, compressible, compression_type):
    src, ref = compressible
    open_src(daemon, src)
    tgt = qcow2_target(daemon, scratch, compression_type)
    uri = start_export(daemon)
    backup(daemon, sync="full", speed=SLOW, compress=True)
    guest_writes(uri)
    report = backed_up(daemon, tgt, ref)
    # Every cluster with data is compressed (the holes were written as zeroes).
    assert report["compressed-clusters"] == 5 * MiB // CLUSTER, report
    info = json.loads(qemu_img("info", "--output=json", tgt).stdout)
    assert info["format-specific"]["data"]["compression-type"] == compression_type


def test_incompressible_data_is_stored_plain(daemon, scratch):
    """Random clusters do not shrink: written as normal clusters, still right."""
    src = os.path.join(scratch, "src.img")
    with open(src, "wb") as f:
        f.write(os.urandom(4 * MiB))
        f.write(bytes([0x5a]) * MiB)
        f.write(os.urandom(SIZE - 5 * MiB))
    ref = os.path.join(scratch, "ref.img")
    shutil.copyfile(src, ref)
    open_src(daemon, src)
    tgt = qcow2_target(daemon, scratch)
    uri = start_export(daemon)
    backup(daemon, sync="full", speed=SLOW, compress=True)
    guest_writes(uri)
    report = backed_up(daemon, tgt, ref)
    # Only the MiB of one byte shrinks; every cluster is allocated.
    assert report["compressed-clusters"] == MiB // CLUSTER, report
    assert report["allocated-clusters"] == SIZE // CLUSTER, report


def test_partial_last_cluster(daemon, scratch):
    """A disk that ends inside a cluster: the last one is compressed too."""
    size = 3 * CLUSTER + 4096
    src = os.path.join(scratch, "src.img")
    qemu_img("create", "-q", "-f", "raw", src, str(size))
    fill(src, patterns=[(0xb1, 0, size)])
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, str(size))
    open_src(daemon, src)
    add_qcow2(daemon, tgt, "tgt")
    backup(daemon, sync="full", compress=True)
    assert backed_up(daemon, tgt, src, exported=False)["compressed-clusters"] == 4


@pytest.mark.parametrize("cluster_size", [512, 2 * MiB])
def test_cluster_sizes(daemon, scratch, compressible, cluster_size):
    """The smallest clusters (a 1-bit sector count in the descriptor, many
    per copied chunk) and the largest (one per chunk)."""
    src, _ = compressible
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster_size}", tgt,
             str(SIZE))
    open_src(daemon, src)
    add_qcow2(daemon, tgt, "tgt")
    backup(daemon, sync="full", compress=True)
    assert backed_up(daemon, tgt, src, exported=False)["compressed-clusters"] > 0


def test_drive_backup(daemon, scratch, compressible):
    src, ref = compressible
    open_src(daemon, src)
    tgt = os.path.join(scratch, "new.qcow2")
    uri = start_export(daemon)
    daemon.command("drive-backup", {"device": "src", "target": tgt, "format": "qcow2",
                                    "sync": "full", "job-id": "j", "speed": SLOW,
                                    "compress": True})
    guest_writes(uri)
    assert backed_up(daemon, tgt, ref)["compressed-clusters"] > 0


def test_allocated_target_cluster_fails(daemon, scratch, compressible):
    """A compressed cluster never replaces data: the job fails with EIO."""
    src, _ = compressible
    open_src(daemon, src)
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, str(SIZE))
    fill(tgt, "qcow2", [(0xee, 0, CLUSTER)])
    add_qcow2(daemon, tgt, "tgt")
    backup(daemon, sync="full", compress=True)
    ev = finish(daemon, "j")
    assert ev["data"].get("error") == "Input/output error", ev
    daemon.stop()
    check(tgt)


def test_kill_mid_backup(daemon_factory, scratch, compressible):
    """kill -9 while compressing: the target has no corruption, and every
    cluster it shows holds the point in time (or is not there yet)."""
    src, ref = compressible
    d = daemon_factory()
    open_src(d, src)
    # Small clusters (an L2 table maps 2 MiB) and a cache of two tables:
    # the data at 9 MiB evicts (writes) the table of the first 2 MiB, so
    # compressed clusters are on disk when the daemon dies.
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", tgt, str(SIZE))
    add_qcow2(d, tgt, "tgt", **{"l2-cache-size": 8192})
    backup(d, sync="full", speed=2 * MiB, compress=True)
    deadline = time.monotonic() + 30
    while d.command("query-jobs")[0]["current-progress"] < 10 * MiB:
        assert time.monotonic() < deadline, "the backup makes no progress"
        time.sleep(0.1)
    d.send_signal(signal.SIGKILL)
    d.wait_exit()
    res = qemu_img("check", "--output=json", "-f", "qcow2", tgt, check=False)
    report = json.loads(res.stdout)
    # Leaked clusters are harmless; nothing else may be wrong.
    assert res.returncode in (0, 3), res
    assert report.get("corruptions", 0) == 0 and report.get("check-errors", 0) == 0, report
    assert report.get("compressed-clusters", 0) > 0, report
    got = os.path.join(scratch, "got.img")
    qemu_img("convert", "-f", "qcow2", "-O", "raw", tgt, got)
    with open(got, "rb") as g, open(ref, "rb") as r:
        for off in range(0, SIZE, CLUSTER):
            have, want = g.read(CLUSTER), r.read(CLUSTER)
            assert have in (want, bytes(CLUSTER)), f"cluster at {off:#x}"


def test_raw_target_refused(daemon, scratch, compressible):
    src, _ = compressible
    open_src(daemon, src)
    path = os.path.join(scratch, "tgt.img")
    qemu_img("create", "-q", "-f", "raw", path, str(SIZE))
    daemon.add_file_raw(path, node="tgt")
    resp = daemon.cmd("blockdev-backup", {"device": "src", "target": "tgt", "job-id": "j",
                                          "sync": "full", "compress": True})
    assert resp.get("error") == {"class": "GenericError", "desc": REFUSED}, resp
    assert daemon.command("query-jobs") == []


def test_filter_that_cannot_pass_compressed_writes_refused(daemon, scratch, compressible):
    """blkdebug over a qcow2 image: the filter itself cannot pass them on."""
    src, _ = compressible
    open_src(daemon, src)
    path = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", path, str(SIZE))
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": {
        "driver": "file", "filename": path}})
    daemon.command("blockdev-add", {"driver": "blkdebug", "node-name": "tgt", "image": "q"})
    resp = daemon.cmd("blockdev-backup", {"device": "src", "target": "tgt", "job-id": "j",
                                          "sync": "full", "compress": True})
    assert resp.get("error") == {"class": "GenericError", "desc": REFUSED}, resp
    assert daemon.command("query-jobs") == []
