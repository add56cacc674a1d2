"""Live backup: every sync mode while a client writes, bitmaps, failures, states.

The source is exported writable over NBD and qemu-io writes to it while
the job runs (the background copy is slowed by its speed limit, so the
writes land before it is done).  Each target is compared with a copy of
the source taken before the job, its point in time.  Runs against blockd
and qemu-storage-daemon 7.2 with the same expectations; blockd-only
behaviour is marked.

iotests groups: rw
"""

import os
import shutil
import signal
import time

import pytest

import iotests
from nbd_servers import Nbdkit
from qmp import QMPTimeout
from iotests import (MiB, compare_images, nbd_uri, qemu_img, qemu_io_cmds,
                     qemu_io_popen, wait_all)

pytestmark = pytest.mark.rw

SIZE = 16 * MiB
CLUSTER = 64 * 1024
# Slow enough that the writers below land while the job still runs.
SLOW = 4 * MiB
WRITES = [(0x11, 0, CLUSTER), (0x22, 5 * MiB + 4096, 8192),
          (0x33, 9 * MiB, 3 * CLUSTER), (0x44, SIZE - 4096, 4096)]


def fill(path, fmt="raw", patterns=()):
    qemu_io_cmds(path, [f"write -q -P {p:#x} {o} {n}" for p, o, n in patterns], fmt=fmt)


@pytest.fixture
def disk(scratch):
    """A raw source with data in a few places and its point-in-time copy."""
    src = os.path.join(scratch, "src.img")
    qemu_img("create", "-q", "-f", "raw", src, str(SIZE))
    fill(src, patterns=[(0xa1, 0, 2 * MiB), (0xa2, 5 * MiB, MiB), (0xa3, SIZE - MiB, MiB)])
    ref = os.path.join(scratch, "ref.img")
    shutil.copyfile(src, ref)
    return src, ref


def add_qcow2(d, path, node, **opts):
    d.command("blockdev-add", {"driver": "qcow2", "node-name": node,
                               "file": {"driver": "file", "filename": path}, **opts})


def start_export(d):
    sock = d.start_nbd_unix()
    d.export("src", export_id="e", name="src", writable=True)
    return nbd_uri(sock, "src")


def guest_writes(uri, writes=WRITES):
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {o} {n}" for p, o, n in writes], fmt="")


def finish(d, job_id, timeout=60.0):
    """Wait until the job concluded; return its BLOCK_JOB_COMPLETED/CANCELLED."""
    d.qmp.wait_event("JOB_STATUS_CHANGE", timeout=timeout,
                     match={"id": job_id, "status": "concluded"})
    # The end event came before "concluded": it is queued already.
    for name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
        try:
            return d.qmp.wait_event(name, timeout=0.2, match={"device": job_id})
        except QMPTimeout:
            pass
    pytest.fail(f"no end event for job {job_id}")


def backup(d, **args):
    d.command("blockdev-backup", {"device": "src", "target": "tgt", "job-id": "j", **args})


def bitmap(d, node="src", name="b0"):
    for n in d.command("query-named-block-nodes"):
        if n["node-name"] == node:
            return [b for b in n.get("dirty-bitmaps", []) if b.get("name") == name][0]
    raise AssertionError(node)


def expect_clusters(ref, writes, cluster=CLUSTER):
    """The clusters @writes touch, with @ref's data: what CBW saves."""
    model = bytearray(os.path.getsize(ref))
    with open(ref, "rb") as f:
        old = f.read()
    for _, off, n in writes:
        start = off // cluster * cluster
        end = -(-(off + n) // cluster) * cluster
        model[start:end] = old[start:end]
    return bytes(model)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def open_src(d, src, fmt="raw"):
    if fmt == "raw":
        d.add_file_raw(src, node="src")
    else:
        add_qcow2(d, src, "src")


def open_raw_target(d, scratch, name="tgt"):
    path = os.path.join(scratch, f"{name}.img")
    qemu_img("create", "-q", "-f", "raw", path, str(SIZE))
    d.add_file_raw(path, node=name)
    return path


# --- sync modes ------------------------------------------------------------------

def test_sync_full_point_in_time(daemon, scratch, disk):
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    uri = start_export(daemon)
    backup(daemon, sync="full", speed=SLOW)
    guest_writes(uri)
    ev = finish(daemon, "j")
    assert ev["event"] == "BLOCK_JOB_COMPLETED" and "error" not in ev["data"], ev
    assert ev["data"]["len"] == ev["data"]["offset"] == SIZE
    compare_images(tgt, ref)
    # The guest's writes reached the source, and the filter is gone.
    assert {n["drv"] for n in daemon.command("query-named-block-nodes")} == {"raw", "file"}
    daemon.del_export("e")
    daemon.stop()
    fill_ref = os.path.join(scratch, "after.img")
    shutil.copyfile(ref, fill_ref)
    fill(fill_ref, patterns=WRITES)
    compare_images(src, fill_ref)


def test_sync_top(daemon, scratch):
    """Only the top layer is copied; with the base as backing it is the disk."""
    base = os.path.join(scratch, "base.qcow2")
    src = os.path.join(scratch, "src.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, str(SIZE))
    fill(base, "qcow2", [(0xb1, 0, 4 * MiB), (0xb2, 9 * MiB, 2 * MiB)])
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", src)
    fill(src, "qcow2", [(0xc1, MiB, MiB), (0xc2, 12 * MiB, MiB)])
    ref = os.path.join(scratch, "ref.img")
    qemu_img("convert", "-f", "qcow2", "-O", "raw", src, ref)
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", tgt)
    add_qcow2(daemon, src, "src")
    add_qcow2(daemon, tgt, "tgt")
    uri = start_export(daemon)
    backup(daemon, sync="top", speed=SLOW)
    guest_writes(uri)
    ev = finish(daemon, "j")
    assert "error" not in ev["data"], ev
    daemon.del_export("e")
    daemon.stop()
    compare_images(tgt, ref, "qcow2", "raw")
    # Nothing of the base only was copied (the 0xb2 run is untouched).
    mapped = qemu_img("map", "--output=json", "-f", "qcow2", tgt).stdout
    import json
    top = [e for e in json.loads(mapped) if e["depth"] == 0 and e["data"]]
    assert not any(e["start"] <= 10 * MiB < e["start"] + e["length"] for e in top), top


def test_sync_none_keeps_overwritten_clusters(daemon, scratch, disk):
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    uri = start_export(daemon)
    backup(daemon, sync="none")
    guest_writes(uri)
    # The job runs until cancelled; the filter saved what the guest overwrote.
    assert [j["status"] for j in daemon.command("query-jobs")] == ["running"]
    daemon.command("job-cancel", id="j")
    ev = finish(daemon, "j")
    assert ev["event"] == "BLOCK_JOB_CANCELLED", ev
    daemon.del_export("e")
    daemon.stop()
    assert read_file(tgt) == expect_clusters(ref, WRITES)


def test_sync_bitmap_incremental(daemon, scratch, disk):
    src, _ = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    daemon.command("block-dirty-bitmap-add", {"node": "src", "name": "b0"})
    uri = start_export(daemon)
    dirty = [(0x51, 3 * MiB, 4096), (0x52, 7 * MiB, 2 * CLUSTER)]
    guest_writes(uri, dirty)
    ref = os.path.join(scratch, "ref2.img")
    shutil.copyfile(src, ref)
    backup(daemon, sync="incremental", bitmap="b0", speed=SLOW)
    during = [(0x61, 3 * MiB, 4096), (0x62, 14 * MiB, 4096)]
    guest_writes(uri, during)
    ev = finish(daemon, "j")
    assert "error" not in ev["data"], ev
    # Progress counts what the bitmap had: three clusters.
    assert ev["data"]["len"] == ev["data"]["offset"] == 3 * CLUSTER
    # on-success: the bitmap now holds the writes made during the job.
    b = bitmap(daemon)
    assert (b["count"], b["busy"], b["recording"]) == (2 * CLUSTER, False, True)
    daemon.del_export("e")
    daemon.stop()
    assert read_file(tgt) == expect_clusters(ref, dirty)


# --- bitmap-mode on failure and cancel --------------------------------------------

def blkdebug_target(d, scratch, errors):
    path = os.path.join(scratch, "tgt.img")
    qemu_img("create", "-q", "-f", "raw", path, str(SIZE))
    d.command("blockdev-add", {"driver": "raw", "node-name": "tgt", "file": {
        "driver": "blkdebug", "inject-error": errors,
        "image": {"driver": "file", "filename": path}}})


def nbdkit_error_target(d, scratch):
    from nbd_servers import Nbdkit
    kit = Nbdkit(scratch, ["memory", str(SIZE), "error-pwrite=EIO",
                           "error-pwrite-rate=100%"], filters=["error"]).start()
    d.command("blockdev-add", {"driver": "nbd", "node-name": "tgt",
                               "server": {"type": "unix", "path": kit.sock}})
    return kit


@pytest.mark.parametrize("mode", ["on-success", "never", "always"])
@pytest.mark.parametrize("outcome", ["success", "blkdebug", "nbdkit", "cancel"])
def test_bitmap_mode(daemon, scratch, disk, mode, outcome):
    """QEMU's table: what the bitmap holds after success, failure, cancel."""
    src, _ = disk
    open_src(daemon, src)
    daemon.command("block-dirty-bitmap-add", {"node": "src", "name": "b0"})
    uri = start_export(daemon)
    guest_writes(uri, [(0x51, 3 * MiB, 4096), (0x52, 7 * MiB, 2 * CLUSTER)])
    kit = None
    if outcome == "blkdebug":
        blkdebug_target(daemon, scratch, [{"event": "none", "iotype": "write"}])
    elif outcome == "nbdkit":
        kit = nbdkit_error_target(daemon, scratch)
    else:
        open_raw_target(daemon, scratch)
    speed = 1 if outcome == "cancel" else 0
    backup(daemon, sync="bitmap", bitmap="b0", speed=speed, **{"bitmap-mode": mode})
    guest_writes(uri, [(0x61, 14 * MiB, 4096)])
    if outcome == "cancel":
        daemon.command("job-cancel", id="j")
    ev = finish(daemon, "j")
    old_and_new = 4 * CLUSTER
    if outcome == "success":
        assert "error" not in ev["data"], ev
        expected = old_and_new if mode == "never" else CLUSTER
    else:
        if outcome == "cancel":
            assert ev["event"] == "BLOCK_JOB_CANCELLED", ev
        else:
            assert ev["data"].get("error") == "Input/output error", ev
        # The old bits and the new ones; "always" gives up what was copied.
        copied = ev["data"]["offset"]
        expected = old_and_new - copied if mode == "always" else old_and_new
    b = bitmap(daemon)
    assert (b["count"], b["busy"]) == (expected, False), (b, ev)
    daemon.del_export("e")
    if kit:
        daemon.command("blockdev-del", {"node-name": "tgt"})
        kit.stop()


# --- grouped transactions ------------------------------------------------------------

def test_grouped_transaction_one_fails(daemon, scratch, disk):
    src, _ = disk
    open_src(daemon, src)
    src2 = os.path.join(scratch, "src2.img")
    shutil.copyfile(src, src2)
    daemon.add_file_raw(src2, node="src2")
    open_raw_target(daemon, scratch, "tgt2")
    blkdebug_target(daemon, scratch, [{"event": "none", "iotype": "write"}])
    for node in ("src", "src2"):
        daemon.command("block-dirty-bitmap-add", {"node": node, "name": "b0"})
    daemon.command("transaction", {
        "actions": [
            {"type": "blockdev-backup", "data": {
                "device": "src", "target": "tgt", "sync": "full", "job-id": "j0",
                "bitmap": "b0", "bitmap-mode": "on-success"}},
            {"type": "blockdev-backup", "data": {
                "device": "src2", "target": "tgt2", "sync": "full", "job-id": "j1",
                "bitmap": "b0", "bitmap-mode": "on-success", "speed": SLOW}}],
        "properties": {"completion-mode": "grouped"}})
    e0 = finish(daemon, "j0")
    e1 = finish(daemon, "j1")
    assert e0["event"] == "BLOCK_JOB_COMPLETED"
    assert e0["data"]["error"] == "Input/output error"
    assert e1["event"] == "BLOCK_JOB_CANCELLED"
    errs = [e for e in daemon.qmp.get_events() if e["event"] == "BLOCK_JOB_ERROR"]
    assert errs and errs[0]["data"] == {"device": "j0", "operation": "write",
                                         "action": "report"}
    # Both bitmaps were reclaimed: a retry can copy everything again.
    for node in ("src", "src2"):
        assert bitmap(daemon, node)["busy"] is False


# --- job states --------------------------------------------------------------------

def statuses(d, job_id, until, timeout=60.0):
    seen = []
    while not seen or seen[-1] != until:
        ev = d.qmp.wait_event("JOB_STATUS_CHANGE", timeout=timeout, match={"id": job_id})
        seen.append(ev["data"]["status"])
    return seen


def without_drain_noise(seen):
    """Drop the paused -> running pairs that drains cause (QEMU's too)."""
    out = []
    for status in seen:
        if out and out[-1] == "paused" and status == "running":
            out.pop()
        else:
            out.append(status)
    return out


def test_manual_finalize_and_dismiss(daemon, scratch, disk):
    """created/running/waiting/pending; the filter goes at finalize (test 283)."""
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    backup(daemon, sync="full", **{"auto-finalize": False, "auto-dismiss": False,
                                   "filter-node-name": "flt"})
    seen = statuses(daemon, "j", "pending")
    # Drains may pause the job on the way (QEMU's noise): ignore them.
    assert [s for s in seen if s != "paused"] == [
        "created", "running", "waiting", "pending"] or         [s for s in seen if s not in ("paused",)][:2] == ["created", "running"]
    daemon.qmp.wait_event("BLOCK_JOB_PENDING", timeout=10, match={"id": "j"})
    names = {n["node-name"] for n in daemon.command("query-named-block-nodes")}
    assert "flt" in names
    resp = daemon.cmd("job-dismiss", {"id": "j"})
    assert resp["error"]["desc"] == "Job 'j' in state 'pending' cannot accept command verb 'dismiss'"
    daemon.command("job-finalize", id="j")
    assert statuses(daemon, "j", "concluded") == ["concluded"]
    names = {n["node-name"] for n in daemon.command("query-named-block-nodes")}
    assert "flt" not in names
    assert [j["status"] for j in daemon.command("query-jobs")] == ["concluded"]
    daemon.command("job-dismiss", id="j")
    assert statuses(daemon, "j", "null") == ["null"]
    compare_images(tgt, ref)


def test_concluded_job_releases_nodes(daemon, scratch, disk):
    """A concluded job kept for inspection no longer holds its nodes (QEMU
    releases them at clean); only its id stays taken until job-dismiss."""
    src, _ = disk
    open_src(daemon, src)
    open_raw_target(daemon, scratch)
    backup(daemon, sync="full", **{"auto-dismiss": False})
    assert finish(daemon, "j")["event"] == "BLOCK_JOB_COMPLETED"
    resp = daemon.cmd("blockdev-backup", {"device": "src", "target": "tgt",
                                          "job-id": "j", "sync": "full"})
    assert resp["error"]["desc"] == "Job ID 'j' already in use"
    backup(daemon, sync="full", **{"job-id": "k"})
    assert finish(daemon, "k")["event"] == "BLOCK_JOB_COMPLETED"
    assert [j["id"] for j in daemon.command("query-jobs")] == ["j"]
    daemon.command("blockdev-del", {"node-name": "tgt"})
    daemon.command("job-dismiss", id="j")


# --- point in time under load, and kill -9 ----------------------------------------

def test_point_in_time_four_writers(daemon, scratch, disk):
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    uri = start_export(daemon)
    backup(daemon, sync="full", speed=SLOW)
    writers = []
    for w in range(4):
        cmds = [f"write -q -P {0x70 + w:#x} {(w * 4 + i) * MiB // 4 + w * 4096} 12288"
                for i in range(16)]
        writers.append(qemu_io_popen(uri, cmds, fmt="raw"))
    wait_all(writers)
    ev = finish(daemon, "j")
    assert "error" not in ev["data"], ev
    compare_images(tgt, ref)


def test_kill_mid_backup(daemon_factory, scratch, disk):
    src, ref = disk
    d = daemon_factory()
    open_src(d, src)
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, str(SIZE))
    add_qcow2(d, tgt, "tgt")
    backup(d, sync="full", speed=MiB)
    d.qmp.wait_event("JOB_STATUS_CHANGE", timeout=10, match={"id": "j", "status": "running"})
    d.send_signal(signal.SIGKILL)
    d.wait_exit()
    # The source is untouched, the target a consistent (partial) image.
    compare_images(src, ref)
    qemu_img("check", "-q", "-f", "qcow2", tgt)
    d2 = daemon_factory()
    open_src(d2, src)
    add_qcow2(d2, tgt, "tgt")
    backup(d2, sync="full")
    assert "error" not in finish(d2, "j")["data"]
    d2.stop()
    compare_images(tgt, ref, "qcow2", "raw")


# --- beyond QEMU -----------------------------------------------------------------

@iotests.blockd_only("QEMU does not flush the target: its backup succeeds here")
def test_target_flushed_before_success(daemon, scratch, disk):
    """A failing flush of the target fails the job (on-target-error report)."""
    src, _ = disk
    open_src(daemon, src)
    blkdebug_target(daemon, scratch, [{"event": "none", "iotype": "flush"}])
    backup(daemon, sync="full")
    ev = finish(daemon, "j")
    assert ev["data"].get("error") == "Input/output error", ev
    assert ev["data"]["offset"] == SIZE
    errs = [e["data"] for e in daemon.qmp.get_events() if e["event"] == "BLOCK_JOB_ERROR"]
    assert errs == [{"device": "j", "operation": "write", "action": "report"}]


# --- copy offload ------------------------------------------------------------------

def trace_copy_offload(d):
    """blockd: log offloads and reads (qsd 7.2 has no trace-event-set-state)."""
    if not iotests.is_reference():
        for name in ("bdrv_co_copy_range_done", "block_copy_copy_range_fail",
                     "bdrv_co_pread"):
            d.command("trace-event-set-state", name=name, enable=True)


def trace_count(d, event, suffix=""):
    """How many lines of @event ending in @suffix blockd logged."""
    return sum(1 for line in d.stderr().splitlines()
               if line.startswith(event + " ") and line.endswith(suffix))


def copy_reads(d):
    """Reads of whole clusters or more: block-copy's, not a client's probe."""
    return sum(1 for line in d.stderr().splitlines()
               if line.startswith("bdrv_co_pread ") and
               int(line.split(" bytes ")[1].split()[0]) >= CLUSTER)


def offloaded_backup_while_writing(d):
    """A full backup src -> tgt with use-copy-range while a client writes."""
    uri = start_export(d)
    trace_copy_offload(d)
    backup(d, sync="full", speed=SLOW, **{"x-perf": {"use-copy-range": True}})
    guest_writes(uri)
    ev = finish(d, "j")
    assert "error" not in ev["data"], ev


def test_copy_offload_point_in_time(daemon, scratch, disk):
    """x-perf use-copy-range between two raw files: the kernel copies
    (copy_file_range), and the target still holds the point in time."""
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    # Offloaded writes count as writes: a bitmap on the target sees them
    # (the zero runs come as write-zeroes).
    daemon.command("block-dirty-bitmap-add", node="tgt", name="t0")
    offloaded_backup_while_writing(daemon)
    compare_images(tgt, ref)
    assert bitmap(daemon, "tgt", "t0")["count"] == SIZE
    if not iotests.is_reference():
        # The daemon never read the data it copied, before guest writes
        # or in the background (qemu-io only probes the first sector).
        assert trace_count(daemon, "bdrv_co_copy_range_done", " ret 0") >= 4
        assert trace_count(daemon, "block_copy_copy_range_fail") == 0
        assert copy_reads(daemon) == 0


def test_copy_offload_falls_back(daemon, scratch, disk):
    """A qcow2 target cannot take an offload: the job reads and writes
    instead, from the first failure on, and the backup is the same."""
    src, ref = disk
    open_src(daemon, src)
    tgt = os.path.join(scratch, "tgt.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, str(SIZE))
    add_qcow2(daemon, tgt, "tgt")
    offloaded_backup_while_writing(daemon)
    daemon.command("blockdev-del", node_name="tgt")
    compare_images(tgt, ref, fmt_a="qcow2")
    if not iotests.is_reference():
        assert trace_count(daemon, "block_copy_copy_range_fail") == 1
        assert trace_count(daemon, "bdrv_co_copy_range_done", " ret 0") == 0
        assert copy_reads(daemon) > 0


@iotests.blockd_only("on-cbw-error on blockdev-backup is QEMU 10.1's; failing the job "
                     "is blockd's")
def test_break_snapshot_fails_the_job(daemon, scratch, disk):
    """A copy before a guest write fails: the write goes through, the job fails."""
    src, _ = disk
    open_src(daemon, src)
    blkdebug_target(daemon, scratch, [{"event": "none", "iotype": "write"}])
    uri = start_export(daemon)
    backup(daemon, sync="none", **{"on-cbw-error": "break-snapshot"})
    guest_writes(uri, WRITES[:1])
    ev = finish(daemon, "j")
    assert ev["event"] == "BLOCK_JOB_COMPLETED"
    assert "point in time" in ev["data"]["error"], ev


WRITE_BEHIND = "__org.blockd_write-behind-buffer"


def nbdkit_target(daemon, scratch, *filter_args, filters):
    """An nbdkit memory disk with @filters as node "tgt"."""
    kit = Nbdkit(scratch, ["memory", str(SIZE), *filter_args], filters=filters).start()
    daemon.command("blockdev-add", {"driver": "nbd", "node-name": "tgt",
                                    "server": {"type": "unix", "path": kit.sock}})
    return kit


@iotests.blockd_only(f"{WRITE_BEHIND} is a blockd extension")
def test_write_behind_guest_does_not_wait_for_slow_target(daemon, scratch, disk):
    """With a write-behind buffer the guest's write returns before the slow
    target has the old data; the target still gets exactly the old data."""
    src, ref = disk
    delay = 3
    open_src(daemon, src)
    kit = nbdkit_target(daemon, scratch, f"delay-write={delay}", filters=["delay"])
    try:
        uri = start_export(daemon)
        backup(daemon, sync="none", **{WRITE_BEHIND: MiB})
        start = time.monotonic()
        guest_writes(uri, WRITES[:1])
        assert time.monotonic() - start < delay - 1
        daemon.command("block-job-cancel", {"device": "j", "force": True})
        finish(daemon, "j", timeout=6 * delay)
        res = qemu_io_cmds(kit.uri(), [f"read -P 0xa1 0 {CLUSTER}"], fmt="raw")
        assert "Pattern verification failed" not in res.output, res
    finally:
        daemon.stop()
        kit.stop()


@iotests.blockd_only(f"{WRITE_BEHIND} is a blockd extension")
def test_failed_write_behind_fails_the_job(daemon, scratch, disk):
    """A target write that fails after the guest's write went on cannot
    fail that write: the snapshot is broken, and the job fails."""
    src, _ = disk
    open_src(daemon, src)
    kit = nbdkit_target(daemon, scratch, "error-pwrite=EIO", "error-pwrite-rate=100%",
                        filters=["error"])
    try:
        uri = start_export(daemon)
        backup(daemon, sync="none", **{WRITE_BEHIND: MiB})
        guest_writes(uri, WRITES[:1])
        ev = finish(daemon, "j")
        assert ev["event"] == "BLOCK_JOB_COMPLETED"
        assert "point in time" in ev["data"]["error"], ev
    finally:
        daemon.stop()
        kit.stop()


SPILL_SIZE = "__org.blockd_write-behind-spill-size"
SPILL_DIR = "__org.blockd_write-behind-spill-dir"


@iotests.blockd_only(f"{SPILL_SIZE} is a blockd extension")
def test_write_behind_spill_guest_does_not_wait(daemon, scratch, disk):
    """One cluster of write-behind memory and a spill file of a few MiB:
    guest writes to five clusters all return before the slow target could
    take one copy, and the finished backup is the point in time."""
    src, ref = disk
    delay = 3
    open_src(daemon, src)
    tgt = os.path.join(scratch, "tgt.img")
    qemu_img("create", "-q", "-f", "raw", tgt, str(SIZE))
    kit = Nbdkit(scratch, ["file", tgt, f"delay-write={delay}"], filters=["delay"]).start()
    daemon.command("blockdev-add", {"driver": "nbd", "node-name": "tgt",
                                    "server": {"type": "unix", "path": kit.sock}})
    # Clusters with data, away from the first chunk the job copies at once.
    writes = [(0x61, 5 * MiB, 4096), (0x62, 5 * MiB + 3 * CLUSTER + 512, 4096),
              (0x63, 5 * MiB + 9 * CLUSTER, CLUSTER), (0x64, SIZE - MiB, 8192),
              (0x65, SIZE - 4096, 4096)]
    try:
        uri = start_export(daemon)
        # Slow enough that the job holds none of those clusters meanwhile.
        backup(daemon, sync="full", speed=CLUSTER,
               **{WRITE_BEHIND: CLUSTER, SPILL_SIZE: 4 * MiB, SPILL_DIR: scratch})
        start = time.monotonic()
        guest_writes(uri, writes)
        assert time.monotonic() - start < delay - 1
        daemon.command("block-job-set-speed", {"device": "j", "speed": 0})
        ev = finish(daemon, "j", timeout=20 * delay)
        assert "error" not in ev["data"], ev
    finally:
        daemon.stop()
        kit.stop()
    compare_images(tgt, ref)


@iotests.blockd_only("__org.blockd_bitmap-node is a blockd extension")
def test_bitmap_on_another_node(daemon, scratch, disk):
    """The bitmap lives on the file node below the device's format node."""
    src, _ = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    daemon.command("block-dirty-bitmap-add", {"node": "src-file", "name": "b0"})
    uri = start_export(daemon)
    dirty = [(0x51, 3 * MiB, 4096)]
    guest_writes(uri, dirty)
    ref = os.path.join(scratch, "ref2.img")
    shutil.copyfile(src, ref)
    backup(daemon, sync="bitmap", bitmap="b0", **{
        "bitmap-mode": "on-success", "__org.blockd_bitmap-node": "src-file"})
    assert "error" not in finish(daemon, "j")["data"]
    assert bitmap(daemon, "src-file")["count"] == 0
    daemon.del_export("e")
    daemon.stop()
    assert read_file(tgt) == expect_clusters(ref, dirty)


@iotests.blockd_only("QEMU refuses bitmap actions in grouped transactions")
def test_grouped_checkpoint_and_backup(daemon, scratch, disk):
    """A new checkpoint bitmap and a full backup, atomically and grouped."""
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    uri = start_export(daemon)
    daemon.command("transaction", {
        "actions": [
            {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "c1"}},
            {"type": "blockdev-backup", "data": {
                "device": "src", "target": "tgt", "sync": "full", "job-id": "j",
                "speed": SLOW}}],
        "properties": {"completion-mode": "grouped"}})
    guest_writes(uri, WRITES[:2])
    assert "error" not in finish(daemon, "j")["data"]
    # The checkpoint holds exactly the writes after the backup's point in time.
    assert bitmap(daemon, "src", "c1")["count"] == 2 * CLUSTER
    compare_images(tgt, ref)


# --- drive-backup ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_drive_backup_creates_target(daemon, scratch, disk, fmt):
    src, ref = disk
    open_src(daemon, src)
    tgt = os.path.join(scratch, f"new.{fmt}")
    uri = start_export(daemon)
    daemon.command("drive-backup", {"device": "src", "target": tgt, "format": fmt,
                                    "sync": "full", "job-id": "j", "speed": SLOW})
    guest_writes(uri)
    assert "error" not in finish(daemon, "j")["data"]
    daemon.del_export("e")
    daemon.stop()
    compare_images(tgt, ref, fmt, "raw")


def test_drive_backup_existing_and_top(daemon, scratch, disk):
    """mode=existing probes the format; sync=top without backing is full."""
    src, ref = disk
    open_src(daemon, src)
    tgt = os.path.join(scratch, "old.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", tgt, str(SIZE))
    daemon.command("drive-backup", {"device": "src", "target": tgt, "mode": "existing",
                                    "sync": "top", "job-id": "j"})
    assert "error" not in finish(daemon, "j")["data"]
    daemon.stop()
    compare_images(tgt, ref, "qcow2", "raw")


def test_drive_backup_none_is_fleecing(daemon, scratch, disk):
    """sync=none: a qcow2 target backed by the source keeps the point in time."""
    src, ref = disk
    open_src(daemon, src)
    tgt = os.path.join(scratch, "fleece.qcow2")
    uri = start_export(daemon)
    daemon.command("drive-backup", {"device": "src", "target": tgt, "format": "qcow2",
                                    "sync": "none", "job-id": "j"})
    guest_writes(uri)
    daemon.command("job-cancel", id="j")
    assert finish(daemon, "j")["event"] == "BLOCK_JOB_CANCELLED"
    daemon.del_export("e")
    daemon.stop()
    # Overwritten clusters come from the target, the rest from the source.
    compare_images(tgt, ref, "qcow2", "raw")


# --- the same events as QEMU -----------------------------------------------------------

def job_events(d):
    """The job events so far, without timestamps and drain noise."""
    evs = [(e["event"], e["data"]) for e in d.qmp.get_events()
           if e["event"].startswith(("JOB_", "BLOCK_JOB_"))]
    out = []
    for ev in evs:
        if out and ev[0] == "JOB_STATUS_CHANGE" and ev[1]["status"] == "running" and \
                out[-1][0] == "JOB_STATUS_CHANGE" and out[-1][1]["status"] == "paused":
            out.pop()
        else:
            out.append(ev)
    return out


def status(job_id, s):
    return ("JOB_STATUS_CHANGE", {"id": job_id, "status": s})


def test_events_of_full_backup(daemon, scratch, disk):
    src, _ = disk
    open_src(daemon, src)
    open_raw_target(daemon, scratch)
    backup(daemon, sync="full")
    daemon.qmp.wait_event("JOB_STATUS_CHANGE", timeout=60, match={"id": "j", "status": "null"})
    # (The "null" change was taken off the queue above.)
    assert job_events(daemon) == [
        status("j", "created"), status("j", "running"), status("j", "waiting"),
        status("j", "pending"),
        ("BLOCK_JOB_COMPLETED", {"device": "j", "len": SIZE, "offset": SIZE, "speed": 0,
                                 "type": "backup"}),
        status("j", "concluded")]


def test_events_of_aborted_transaction(daemon, scratch, disk):
    src, _ = disk
    open_src(daemon, src)
    open_raw_target(daemon, scratch)
    resp = daemon.cmd("transaction", {"actions": [
        {"type": "blockdev-backup", "data": {"device": "src", "target": "tgt",
                                             "sync": "full", "job-id": "j"}},
        {"type": "abort", "data": {}}]})
    assert resp["error"]["desc"] == "Transaction aborted using Abort action"
    daemon.qmp.wait_event("JOB_STATUS_CHANGE", timeout=10, match={"id": "j", "status": "null"})
    # A job that never ran ends without BLOCK_JOB_CANCELLED.
    assert job_events(daemon) == [
        status("j", "created"), status("j", "aborting"), status("j", "concluded")]


def test_events_of_error_stop_and_resume(daemon, scratch, disk):
    """on-target-error=stop: BLOCK_JOB_ERROR, paused, io-status, resume."""
    src, ref = disk
    open_src(daemon, src)
    path = os.path.join(scratch, "tgt.img")
    qemu_img("create", "-q", "-f", "raw", path, str(SIZE))
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "tgt", "file": {
        "driver": "blkdebug", "node-name": "dbg",
        "inject-error": [{"event": "none", "iotype": "write", "once": True}],
        "image": {"driver": "file", "filename": path}}})
    backup(daemon, sync="full", **{"on-target-error": "stop"})
    ev = daemon.qmp.wait_event("BLOCK_JOB_ERROR", timeout=30, match={"device": "j"})
    assert ev["data"] == {"device": "j", "operation": "write", "action": "stop"}
    daemon.qmp.wait_event("JOB_STATUS_CHANGE", timeout=30,
                          match={"id": "j", "status": "paused"})
    job = daemon.command("query-block-jobs")[0]
    assert (job["status"], job["io-status"], job["paused"]) == ("paused", "failed", True)
    resp = daemon.cmd("job-dismiss", {"id": "j"})
    assert resp["error"]["desc"] == "Job 'j' in state 'paused' cannot accept command verb 'dismiss'"
    # The error was once: resuming retries the failed area and completes.
    daemon.command("job-resume", id="j")
    ev = finish(daemon, "j")
    assert "error" not in ev["data"], ev
    assert daemon.command("query-jobs") == []
    daemon.stop()
    compare_images(path, ref)


def test_source_read_error_reported(daemon, scratch, disk):
    src, _ = disk
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "src", "file": {
        "driver": "blkdebug", "inject-error": [{"event": "none", "iotype": "read"}],
        "image": {"driver": "file", "filename": src}}})
    open_raw_target(daemon, scratch)
    backup(daemon, sync="full")
    ev = finish(daemon, "j")
    assert ev["data"].get("error") == "Input/output error", ev
    errs = [e["data"] for e in daemon.qmp.get_events() if e["event"] == "BLOCK_JOB_ERROR"]
    assert errs == [{"device": "j", "operation": "read", "action": "report"}]


def test_speed_counts_copies_before_writes(daemon, scratch, disk):
    """The speed limits everything the backup copies: after the guest forced
    12 MiB of copies at 4 MiB/s, the background copy waits about 3 s, so
    that it does not compete with the guest for the disk (QEMU charges
    these copies too)."""
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    uri = start_export(daemon)
    backup(daemon, sync="full", speed=SLOW)
    guest_writes(uri, [(0x55, 4 * MiB, 12 * MiB)])
    offset = daemon.command("query-block-jobs")[0]["offset"]
    assert offset >= 12 * MiB
    time.sleep(1.0)
    # Not charged, the background copy would have gone on at 4 MiB/s; a
    # task started before the writes may still end.
    assert daemon.command("query-block-jobs")[0]["offset"] - offset <= MiB
    daemon.command("block-job-set-speed", device="j", speed=0)
    ev = finish(daemon, "j")
    assert "error" not in ev["data"] and ev["data"]["offset"] == SIZE, ev
    compare_images(tgt, ref)


def test_pause_resume_and_speed(daemon, scratch, disk):
    """055: a paused job makes no progress; set-speed shows; resume completes."""
    import time
    src, ref = disk
    open_src(daemon, src)
    tgt = open_raw_target(daemon, scratch)
    backup(daemon, sync="full", speed=MiB)
    daemon.command("job-pause", id="j")
    daemon.qmp.wait_event("JOB_STATUS_CHANGE", timeout=30,
                          match={"id": "j", "status": "paused"})
    # (QEMU parks the job while its copies in flight still finish.)
    time.sleep(0.5)
    offset = daemon.command("query-block-jobs")[0]["offset"]
    time.sleep(1.0)
    job = daemon.command("query-block-jobs")[0]
    assert (job["offset"], job["status"], job["paused"]) == (offset, "paused", True)
    daemon.command("block-job-set-speed", device="j", speed=0)
    assert daemon.command("query-block-jobs")[0]["speed"] == 0
    daemon.command("job-resume", id="j")
    ev = finish(daemon, "j")
    assert "error" not in ev["data"] and ev["data"]["offset"] == SIZE, ev
    compare_images(tgt, ref)
