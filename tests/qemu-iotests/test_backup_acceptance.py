"""Live backup as its users see it: the acceptance scenarios of issue 10.

Each test drives the daemon only through QMP and NBD, with real clients
writing all the time (guest_writer.GuestWriter: interactive qemu-io
processes on the export, each in its own quarter of the disk), and checks
every backup against an in-test model of the disk at the backup's point
in time.  The same scripts run against qemu-storage-daemon 7.2.

- a full backup and two incremental ones, taken while 4 clients write;
- a failed incremental (the target's writes fail: nbdkit's error filter
  behind the nbd driver) and a cancelled one (a slow target: nbdkit's
  delay filter) lose no dirty bit, and a retry is right;
- pull-mode fleecing: copy-before-write into a scratch image, a
  snapshot-access node exported with the checkpoint bitmap, nbdcopy
  pulls it while the clients go on writing.
"""

import os
import time
from typing import Any, Dict, List, Sequence, Tuple

import pytest

import iotests
from guest_writer import GuestWriter, PointInTime, Write, at_point_in_time
from iotests import Reference
from nbd_servers import Nbdkit

MiB = 1024 * 1024
SIZE = 64 * MiB
WRITERS = 4
GRANULARITY = 64 * 1024
JOB_TIMEOUT = 120.0


@pytest.fixture
def disk(daemon_factory, scratch):
    """A daemon with a 64 MiB raw disk "disk" (node "disk" over
    "disk-file"), filled with a pattern and exported writable over NBD;
    yields (daemon, initial model, NBD URI of the disk)."""
    ref = Reference(SIZE)
    patterns = [(0x10 + i, i * 8 * MiB, 8 * MiB) for i in range(SIZE // (8 * MiB))]
    for p in patterns:
        ref.write(*p)
    image = iotests.create_image(os.path.join(scratch, "disk.raw"), SIZE, patterns=patterns)
    d = daemon_factory()
    d.add_file_raw(image, node="disk", file_node="disk-file")
    sock = d.start_nbd_unix()
    d.export("disk", export_id="guest", name="disk", writable=True)
    yield d, ref, iotests.nbd_uri(sock, "disk")


def start_writers(uri: str, pause_s: float = 0.002) -> List[GuestWriter]:
    quarter = SIZE // WRITERS
    writers = [GuestWriter(uri, (i * quarter, (i + 1) * quarter), seed=100 + i,
                           pause_s=pause_s) for i in range(WRITERS)]
    for w in writers:
        w.start()
    return writers


def stop_writers(writers: Sequence[GuestWriter]) -> None:
    errors = [e for e in (w.stop() for w in writers) if e]
    assert not errors, errors


def model_at(initial: Reference, writes: Sequence[Write]) -> Reference:
    ref = Reference(SIZE)
    ref.data[:] = initial.data
    for w in writes:
        ref.write(*w)
    return ref


def add_qcow2(d, scratch: str, node: str, backing_file: str = "") -> str:
    """A new qcow2 target (over @backing_file if given, opened without its
    backing, as backup tools do) added as @node; returns its path."""
    path = os.path.join(scratch, f"{node}.qcow2")
    args: List[Any] = ["create", "-q", "-f", "qcow2"]
    if backing_file:
        args += ["-b", backing_file, "-F", "qcow2"]
    iotests.qemu_img(*args, path, SIZE)
    d.command("blockdev-add", {"driver": "qcow2", "node-name": node, "backing": None,
                               "file": {"driver": "file", "filename": path}})
    return path


def backup_action(job_id: str, target: str, sync: str, **extra: Any) -> Dict[str, Any]:
    return {"type": "blockdev-backup",
            "data": {"job-id": job_id, "device": "disk", "target": target, "sync": sync,
                     **extra}}


def wait_job_end(d, job_id: str, timeout: float = JOB_TIMEOUT) -> Dict[str, Any]:
    """Wait for the job's BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in d.qmp.get_events(wait=0.2):
            if ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
                    and ev["data"]["device"] == job_id:
                return ev
    pytest.fail(f"job {job_id} did not end within {timeout}s")


def bitmap_sha256(d, node: str, name: str) -> str:
    return d.command("x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name})["sha256"]


def bitmap_info(d, node: str, name: str) -> Dict[str, Any]:
    for info in d.command("query-named-block-nodes", {"flat": True}):
        if info["node-name"] == node:
            for b in info.get("dirty-bitmaps", []):
                if b.get("name") == name:
                    return b
    pytest.fail(f"no bitmap {name} on {node}")


def check_backup(path: str, fmt: str, model: Reference, scratch: str) -> None:
    """@path (read through its backing chain) equals @model."""
    expected = model.save(os.path.join(scratch, "expected.raw"))
    iotests.compare_images(expected, path, fmt_b=fmt)


@pytest.mark.rw
@pytest.mark.slow
def test_full_then_two_incrementals_under_four_writers(disk, scratch):
    d, initial, uri = disk
    full = add_qcow2(d, scratch, "full")
    inc1 = add_qcow2(d, scratch, "inc1", backing_file=full)
    inc2 = add_qcow2(d, scratch, "inc2", backing_file=inc1)
    writers = start_writers(uri)
    try:
        checkpoints = []
        for job_id, actions in (
                ("full", [{"type": "block-dirty-bitmap-add",
                           "data": {"node": "disk", "name": "bm0",
                                    "granularity": GRANULARITY}},
                          backup_action("full", "full", "full", speed=16 * MiB)]),
                ("inc1", [backup_action("inc1", "inc1", "incremental", bitmap="bm0")]),
                ("inc2", [backup_action("inc2", "inc2", "incremental", bitmap="bm0")])):
            _, instant = at_point_in_time(writers, lambda a=actions: d.command(
                "transaction", {"actions": a}))
            checkpoints.append(instant.writes())
            ev = wait_job_end(d, job_id)
            assert ev["event"] == "BLOCK_JOB_COMPLETED" and "error" not in ev["data"], ev
        # Writes really happened while the jobs ran.
        assert len(checkpoints[1]) > len(checkpoints[0])
        assert len(checkpoints[2]) > len(checkpoints[1])
    finally:
        stop_writers(writers)
    for node in ("full", "inc1", "inc2"):
        d.command("blockdev-del", {"node-name": node})
    for path, writes in zip((full, inc1, inc2), checkpoints):
        check_backup(path, "qcow2", model_at(initial, writes), scratch)


def add_nbdkit_target(d, kit: Nbdkit, node: str) -> None:
    d.command("blockdev-add", {"driver": "nbd", "node-name": node,
                               "server": {"type": "unix", "path": kit.sock}})


def full_backup_with_bitmap(d, scratch: str) -> str:
    """A completed full backup into "full" (closed again), with bitmap bm0
    started at the same instant; returns the full backup's path."""
    full = add_qcow2(d, scratch, "full")
    d.command("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "disk", "name": "bm0", "granularity": GRANULARITY}},
        backup_action("full", "full", "full")]})
    ev = wait_job_end(d, "full")
    assert "error" not in ev["data"], ev
    d.command("blockdev-del", {"node-name": "full"})
    return full


def copy_bitmap(d, name: str, copy: str) -> None:
    """A new disabled bitmap @copy on "disk" with the bits of @name."""
    d.command("block-dirty-bitmap-add", {"node": "disk", "name": copy,
                                         "granularity": GRANULARITY, "disabled": True})
    d.command("block-dirty-bitmap-merge", {"node": "disk", "target": copy,
                                           "bitmaps": [name]})


def assert_superset(d, name: str, subset: str) -> None:
    """Every bit of @subset is set in @name (no writer may be running)."""
    copy_bitmap(d, name, "probe")
    d.command("block-dirty-bitmap-merge", {"node": "disk", "target": "probe",
                                           "bitmaps": [subset]})
    assert bitmap_sha256(d, "disk", "probe") == bitmap_sha256(d, "disk", name), \
        f"bits of {subset} missing from {name}"
    d.command("block-dirty-bitmap-remove", {"node": "disk", "name": "probe"})


@pytest.mark.rw
@pytest.mark.parametrize("ending", ["failure", "cancel"])
def test_failed_or_cancelled_incremental_keeps_every_dirty_bit(disk, scratch, ending):
    """An incremental into a target whose writes fail (or that is so slow
    that the job is cancelled) loses no bit of bm0: afterwards bm0 holds
    every bit it had at the start, and a retry into a good target, with
    the writers going on, equals the disk at the retry's start."""
    d, initial, uri = disk
    full = full_backup_with_bitmap(d, scratch)
    if ending == "failure":
        kit = Nbdkit(scratch, ["memory", str(SIZE), "error-pwrite=EIO",
                               "error-pwrite-rate=100%"], filters=["error"])
    else:
        kit = Nbdkit(scratch, ["memory", str(SIZE), "delay-write=5"], filters=["delay"])
    kit.start()
    add_nbdkit_target(d, kit, "bad")
    writers = start_writers(uri)
    try:
        time.sleep(0.5)

        # The writers wait while the bad job runs: its copy-before-write
        # would fail (or stall) their writes to clusters still to copy,
        # which is QEMU 7.2's behaviour (no on-cbw-error on backup).
        def bad_backup() -> None:
            copy_bitmap(d, "bm0", "at-start")
            d.command("transaction", {"actions": [
                backup_action("bad", "bad", "incremental", bitmap="bm0")]})
            if ending == "cancel":
                time.sleep(0.5)
                d.command("block-job-cancel", {"device": "bad", "force": True})
            ev = wait_job_end(d, "bad")
            if ending == "failure":
                assert ev["event"] == "BLOCK_JOB_COMPLETED" and "error" in ev["data"], ev
            else:
                assert ev["event"] == "BLOCK_JOB_CANCELLED", ev
            assert_superset(d, "bm0", "at-start")
        at_point_in_time(writers, bad_backup)
        kit.stop()
        d.command("blockdev-del", {"node-name": "bad"})
        inc = add_qcow2(d, scratch, "inc", backing_file=full)
        _, instant = at_point_in_time(writers, lambda: d.command("transaction", {"actions": [
            backup_action("inc", "inc", "incremental", bitmap="bm0")]}))
        ev = wait_job_end(d, "inc")
        assert "error" not in ev["data"], ev
    finally:
        stop_writers(writers)
    d.command("blockdev-del", {"node-name": "inc"})
    check_backup(inc, "qcow2", model_at(initial, instant.writes()), scratch)


def dirty_granules(writes: Sequence[Write]) -> List[Tuple[int, int, int]]:
    """The map of qemu:dirty-bitmap for @writes, as nbdinfo_map() gives it."""
    dirty = set()
    for _, offset, length in writes:
        dirty.update(range(offset // GRANULARITY, (offset + length - 1) // GRANULARITY + 1))
    extents: List[Tuple[int, int, int]] = []
    for g in range(SIZE // GRANULARITY):
        kind = 1 if g in dirty else 0
        if extents and extents[-1][2] == kind:
            extents[-1] = (extents[-1][0], extents[-1][1] + GRANULARITY, kind)
        else:
            extents.append((g * GRANULARITY, GRANULARITY, kind))
    return extents


@pytest.mark.rw
def test_pull_mode_fleecing_with_nbdcopy(disk, scratch):
    """The snapshot-access recipe: the guest's disk node is re-pointed onto
    a copy-before-write filter (blockdev-reopen of its file child), and
    the snapshot-access node above the filter is exported with the
    checkpoint bitmap.  nbdcopy pulls it while the writers go on: the copy
    equals the disk at the instant of the re-pointing, and the bitmap
    shows exactly the granules written between the checkpoint and then."""
    iotests.require_tool("nbdcopy")
    d, initial, uri = disk
    scratch_img = os.path.join(scratch, "fleece.qcow2")
    iotests.qemu_img("create", "-q", "-f", "qcow2", scratch_img, SIZE)
    writers = start_writers(uri)
    try:
        _, checkpoint = at_point_in_time(writers, lambda: d.command(
            "block-dirty-bitmap-add", {"node": "disk", "name": "bm0",
                                       "granularity": GRANULARITY}))
        time.sleep(0.5)

        def start_fleecing() -> None:
            d.command("transaction", {"actions": [
                {"type": "block-dirty-bitmap-disable", "data": {"node": "disk", "name": "bm0"}},
                {"type": "block-dirty-bitmap-add", "data": {"node": "disk", "name": "bm1",
                                                            "granularity": GRANULARITY}}]})
            d.command("blockdev-add", {"driver": "qcow2", "node-name": "fleece",
                                       "file": {"driver": "file", "filename": scratch_img}})
            d.command("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw",
                                       "file": "disk-file", "target": "fleece"})
            d.command("blockdev-reopen", {"options": [
                {"driver": "raw", "node-name": "disk", "file": "cbw"}]})
        _, at_fleecing = at_point_in_time(writers, start_fleecing)
        d.command("blockdev-add", {"driver": "snapshot-access", "node-name": "snap",
                                   "file": "cbw"})
        d.command("block-export-add", {"type": "nbd", "id": "snap", "node-name": "snap",
                                       "name": "snap",
                                       "bitmaps": [{"node": "disk", "name": "bm0"}]})
        snap_uri = iotests.nbd_uri(d.sock("nbd.sock"), "snap")
        pulled = os.path.join(scratch, "pulled.raw")
        iotests.run(["nbdcopy", snap_uri, pulled])
        dirty_map = iotests.nbdinfo_map(snap_uri, "qemu:dirty-bitmap:bm0")
        time.sleep(0.5)

        def stop_fleecing() -> None:
            d.del_export("snap")
            d.command("blockdev-del", {"node-name": "snap"})
            d.command("blockdev-reopen", {"options": [
                {"driver": "raw", "node-name": "disk", "file": "disk-file"}]})
            d.command("blockdev-del", {"node-name": "cbw"})
            d.command("blockdev-del", {"node-name": "fleece"})
        at_point_in_time(writers, stop_fleecing)
        time.sleep(0.3)
    finally:
        stop_writers(writers)
    since_checkpoint = at_fleecing.writes_since(checkpoint)
    assert since_checkpoint, "no write between the checkpoint and the fleecing"
    model_at(initial, at_fleecing.writes()).check_file(pulled)
    assert dirty_map == dirty_granules(since_checkpoint)
    everything = PointInTime(writers, [len(w.done) for w in writers])
    model_at(initial, everything.writes()).check_file(os.path.join(scratch, "disk.raw"))
