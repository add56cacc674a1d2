#!/usr/bin/python3
"""blockd demo (run by "make demo"): a live backup.

A raw disk is exported over NBD and qemu-io keeps writing to it, through
the export, for the whole demo.  Meanwhile the demo takes a full backup
(with a dirty bitmap created in the same transaction, so both share one
point in time) and then an incremental backup of what was written since,
showing the jobs' progress.  At the end each backup is compared with
qemu-img against a reference image built locally from the writes that
had completed when its job started, and the disk against all the writes.

The point in time is exact: the writer sends one write at a time and
waits for its reply, and the demo starts a backup between two writes, so
the writes before the start are known.

BLOCKD_BINARY selects the daemon (default: build/storage-daemon/blockd);
BLOCKD_BINARY=/usr/bin/qemu-storage-daemon runs the same demo against QEMU.
Exits non-zero on the first failure.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "qemu-iotests"))

from guest_writer import GuestWriter, Write, at_point_in_time  # noqa: E402
from qmp import QMP  # noqa: E402  (path set up above)

MiB = 1024 * 1024
SIZE = 256 * MiB
FULL_SPEED = 48 * MiB           # bytes/s: long enough to watch the progress
WRITE_PAUSE = 0.004             # seconds between two guest writes

def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"demo: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def run(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"{' '.join(argv)}: {res.stdout}{res.stderr}")


def qemu_io_script(image: str, fmt: str, writes: List[Write]) -> None:
    """Apply @writes to a local image, in order, through one qemu-io."""
    script = "".join(f"write -q -P {p} {o} {n}\n" for p, o, n in writes)
    res = subprocess.run(["qemu-io", "-f", fmt, image], input=script,
                         capture_output=True, text=True)
    if res.returncode != 0 or "error" in res.stdout.lower():
        fail(f"qemu-io on {image}: {res.stdout}{res.stderr}")


def wait_for_job(qmp: QMP, job_id: str) -> Dict[str, Any]:
    """Show the job's progress until it completes; its completion event."""
    tty = sys.stdout.isatty()
    last = -1
    while True:
        for ev in qmp.get_events():
            if ev["event"] == "BLOCK_JOB_COMPLETED" and ev["data"]["device"] == job_id:
                if tty:
                    print()
                if "error" in ev["data"]:
                    fail(f"job {job_id}: {ev['data']['error']}")
                return ev
            if ev["event"] == "BLOCK_JOB_CANCELLED":
                fail(f"job {job_id} was cancelled")
        for job in qmp.command("query-jobs"):
            if job["id"] != job_id or not job["total-progress"]:
                continue
            pct = 100 * job["current-progress"] // job["total-progress"]
            if tty:
                bar = "#" * (pct // 4)
                print(f"\r    {job_id}: [{bar:<25}] {pct:3d}% {job['status']:<9}",
                      end="", flush=True)
            elif pct // 25 != last // 25:
                print(f"    {job_id}: {pct:3d}% {job['status']}", flush=True)
            last = pct
        time.sleep(0.2)


def start_backup(qmp: QMP, writer: GuestWriter, actions: List[Dict[str, Any]]) -> int:
    """Run @actions as one transaction between two guest writes; the
    number of writes the backup contains."""
    _, instant = at_point_in_time([writer], lambda: qmp.command("transaction",
                                                                {"actions": actions}))
    return instant.counts[0]


def backup_action(job_id: str, target: str, sync: str, **extra: Any) -> Dict[str, Any]:
    return {"type": "blockdev-backup",
            "data": {"job-id": job_id, "device": "disk", "target": target,
                     "sync": sync, **extra}}


def add_qcow2_target(qmp: QMP, node: str, path: str) -> None:
    qmp.command("blockdev-add", {"driver": "qcow2", "node-name": node, "backing": None,
                                 "file": {"driver": "file", "filename": path}})


def main() -> None:
    blockd = os.environ.get("BLOCKD_BINARY",
                            os.path.join(REPO, "build", "storage-daemon", "blockd"))
    if not os.access(blockd, os.X_OK):
        fail(f"daemon binary {blockd} not found (build first, or set BLOCKD_BINARY)")
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed")

    work = tempfile.mkdtemp(prefix="blockd-demo.", dir="/tmp")
    daemon = None
    try:
        disk = os.path.join(work, "disk.img")
        full = os.path.join(work, "full.qcow2")
        inc = os.path.join(work, "inc1.qcow2")
        sock = os.path.join(work, "nbd.sock")
        qmp_path = os.path.join(work, "qmp.sock")
        pidfile = os.path.join(work, "blockd.pid")

        step(f"creating a {SIZE // MiB} MiB raw disk filled with data")
        initial = [(0x10 + i, i * 32 * MiB, 32 * MiB) for i in range(SIZE // (32 * MiB))]
        run("qemu-img", "create", "-q", "-f", "raw", disk, str(SIZE))
        qemu_io_script(disk, "raw", initial)
        run("qemu-img", "create", "-q", "-f", "qcow2", full, str(SIZE))
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", full, "-F", "qcow2", inc)

        step(f"starting {os.path.basename(blockd)}: the disk exported over NBD")
        daemon = subprocess.Popen(
            [blockd, "--chardev", f"socket,id=mon0,path={qmp_path},server=on,wait=off",
             "--monitor", "chardev=mon0",
             "--blockdev", f"driver=file,node-name=disk-file,filename={disk}",
             "--blockdev", "driver=raw,node-name=disk,file=disk-file",
             "--nbd-server", f"addr.type=unix,addr.path={sock}",
             "--export", "type=nbd,id=export0,node-name=disk,name=disk,writable=on",
             "--pidfile", pidfile])
        deadline = time.monotonic() + 30
        while not os.path.exists(pidfile):
            if daemon.poll() is not None or time.monotonic() > deadline:
                fail("the daemon did not start")
            time.sleep(0.02)
        qmp = QMP(qmp_path)
        add_qcow2_target(qmp, "full", full)
        add_qcow2_target(qmp, "inc1", inc)

        step("the guest (qemu-io over NBD) starts writing, and keeps writing")
        writer = GuestWriter(f"nbd+unix:///disk?socket={sock}", (0, SIZE), seed=2026,
                             pause_s=WRITE_PAUSE)
        writer.start()
        time.sleep(0.5)

        step("full backup, with bitmap 'checkpoint0' created at the same instant")
        n_full = start_backup(qmp, writer, [
            {"type": "block-dirty-bitmap-add",
             "data": {"node": "disk", "name": "checkpoint0", "granularity": 65536}},
            backup_action("full0", "full", "full", speed=FULL_SPEED)])
        wait_for_job(qmp, "full0")
        print(f"    {len(writer.done) - n_full} guest writes landed during the full backup")

        time.sleep(1.0)
        dirty = next(b["count"] for n in qmp.command("query-named-block-nodes")
                     if n["node-name"] == "disk" for b in n["dirty-bitmaps"]
                     if b.get("name") == "checkpoint0")
        step(f"incremental backup of the {dirty // 1024} KiB written since "
             "(checkpoint0's dirty bits)")
        n_inc = start_backup(qmp, writer, [
            backup_action("inc1", "inc1", "incremental", bitmap="checkpoint0")])
        ev = wait_for_job(qmp, "inc1")
        print(f"    the incremental backup copied {ev['data']['len'] // 1024} KiB "
              f"of {SIZE // MiB} MiB")

        time.sleep(0.5)
        error = writer.stop()
        if error:
            fail(f"guest writer: {error}")
        step(f"guest stopped after {len(writer.done)} writes")
        for node in ("full", "inc1"):
            qmp.command("blockdev-del", {"node-name": node})

        step("verifying each backup against its point in time")
        ref = os.path.join(work, "ref.img")
        checks = [("full backup", full, writer.done[:n_full]),
                  ("incremental backup (over the full one)", inc, writer.done[:n_inc]),
                  ("live disk", disk, writer.done)]
        for name, image, writes in checks:
            run("qemu-img", "create", "-q", "-f", "raw", ref, str(SIZE))
            qemu_io_script(ref, "raw", initial + writes)
            run("qemu-img", "compare", "-q", "-U", ref, image)
            print(f"    {name}: equal to its point in time ({len(writes)} guest writes)")
        qmp.command("quit")
        daemon.wait(timeout=30)
        daemon = None
        step("demo passed")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
