"""Jobs over QMP: blockdev-create as a job, its events, and job verbs.

Runs unchanged against blockd and qemu-storage-daemon: the event
sequences, query-jobs entries and error messages asserted here are the
reference daemon's.  Jobs that need to stay busy use preallocation=full
of a large file, which both daemons write in the background.
"""

import json
import os
from typing import Any, Dict, List

import pytest

import iotests
from iotests import MiB

pytestmark = pytest.mark.quick


def create(d: Any, job_id: str, **opts: Any) -> Dict[str, Any]:
    return d.cmd("blockdev-create", {"job-id": job_id,
                                     "options": {"driver": "file", **opts}})


def statuses(d: Any, job_id: str, until: str, timeout: float = 30.0) -> List[str]:
    """Collect JOB_STATUS_CHANGE statuses of ``job_id`` up to ``until``."""
    seen: List[str] = []
    while not seen or seen[-1] != until:
        ev = d.qmp.wait_event("JOB_STATUS_CHANGE", timeout=timeout,
                              match={"id": job_id})
        assert set(ev["data"]) == {"id", "status"}, ev
        seen.append(ev["data"]["status"])
    return seen


def query_job(d: Any, job_id: str) -> Dict[str, Any]:
    jobs = [j for j in d.command("query-jobs") if j["id"] == job_id]
    assert len(jobs) == 1, jobs
    return jobs[0]


def assert_error(resp: Dict[str, Any], desc: str, cls: str = "GenericError") -> None:
    assert resp.get("error") == {"class": cls, "desc": desc}, resp


def test_create_file(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "a.img")
    assert create(daemon, "c0", filename=path, size=MiB) == {"return": {}}
    assert statuses(daemon, "c0", "concluded") == [
        "created", "running", "waiting", "pending", "concluded"]
    # blockdev-create is not a block job: no BLOCK_JOB_* events.
    assert not [e for e in daemon.qmp.get_events() if e["event"] != "JOB_STATUS_CHANGE"]
    assert query_job(daemon, "c0") == {
        "id": "c0", "type": "create", "status": "concluded",
        "current-progress": 1, "total-progress": 1}
    assert daemon.command("query-block-jobs") == []
    daemon.command("job-dismiss", id="c0")
    assert statuses(daemon, "c0", "null") == ["null"]
    assert daemon.command("query-jobs") == []

    info = json.loads(iotests.qemu_img("info", "--output=json", "-f", "raw", path).stdout)
    assert info["virtual-size"] == MiB
    assert info["format"] == "raw"


@pytest.mark.parametrize("prealloc", ["off", "falloc", "full"])
def test_create_preallocation(daemon: Any, scratch: str, prealloc: str) -> None:
    path = os.path.join(scratch, f"{prealloc}.img")
    size = 8 * MiB
    # An existing file is truncated first.
    with open(path, "wb") as f:
        f.write(b"\xaa" * (16 * MiB))
    daemon.command("blockdev-create", {"job-id": "c", "options": {
        "driver": "file", "filename": path, "size": size,
        "preallocation": prealloc}})
    assert statuses(daemon, "c", "concluded")[-1] == "concluded"
    assert "error" not in query_job(daemon, "c")
    daemon.command("job-dismiss", id="c")
    st = os.stat(path)
    assert st.st_size == size
    allocated = st.st_blocks * 512
    if prealloc == "off":
        # Only the first block is written.
        assert allocated < MiB
    else:
        assert allocated >= size
    with open(path, "rb") as f:
        assert f.read() == bytes(size)


def test_create_tiny_file_first_sector(daemon: Any, scratch: str) -> None:
    # QEMU writes the first sector of a tiny image, which extends it.
    path = os.path.join(scratch, "tiny.img")
    daemon.command("blockdev-create", {"job-id": "c", "options": {
        "driver": "file", "filename": path, "size": 1}})
    statuses(daemon, "c", "concluded")
    assert os.stat(path).st_size == 512


def test_create_failures(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "m.img")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    daemon.command("blockdev-create", {"job-id": "m", "options": {
        "driver": "file", "filename": path, "size": MiB,
        "preallocation": "metadata"}})
    assert statuses(daemon, "m", "concluded") == [
        "created", "running", "aborting", "concluded"]
    assert query_job(daemon, "m")["error"] == "Unsupported preallocation mode: metadata"
    # The file was truncated before the mode was refused, as in QEMU.
    assert os.stat(path).st_size == 0

    bad = os.path.join(scratch, "no", "such", "dir.img")
    daemon.command("blockdev-create", {"job-id": "n", "options": {
        "driver": "file", "filename": bad, "size": MiB}})
    assert statuses(daemon, "n", "concluded")[-2:] == ["aborting", "concluded"]
    assert query_job(daemon, "n")["error"] == (
        f"Could not create '{bad}': No such file or directory")
    # Newest first.
    assert [j["id"] for j in daemon.command("query-jobs")] == ["n", "m"]


def test_argument_errors(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "e.img")
    assert_error(daemon.cmd("blockdev-create", {"job-id": "x", "options": {
        "driver": "null-co"}}), "Driver does not support blockdev-create")
    assert_error(daemon.cmd("blockdev-create", {"job-id": "x", "options": {
        "driver": "raw", "filename": path, "size": MiB}}),
        "Parameter 'options.filename' is unexpected")
    assert_error(create(daemon, "x", filename=path),
                 "Parameter 'options.size' is missing")
    assert_error(create(daemon, "x", filename=path, size=MiB, preallocation="bogus"),
                 "Parameter 'preallocation' does not accept value 'bogus'")
    assert_error(daemon.cmd("blockdev-create", {"job-id": "x"}),
                 "Parameter 'options' is missing")
    assert_error(create(daemon, "0x", filename=path, size=MiB), "Invalid job ID '0x'")
    assert_error(create(daemon, "", filename=path, size=MiB), "Invalid job ID ''")
    assert daemon.command("query-jobs") == []
    assert daemon.qmp.get_events() == []


def test_duplicate_id_until_dismissed(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "d.img")
    daemon.command("blockdev-create", {"job-id": "d", "options": {
        "driver": "file", "filename": path, "size": MiB}})
    statuses(daemon, "d", "concluded")
    assert_error(create(daemon, "d", filename=path, size=MiB),
                 "Job ID 'd' already in use")
    daemon.command("job-dismiss", id="d")
    assert create(daemon, "d", filename=path, size=MiB) == {"return": {}}
    statuses(daemon, "d", "concluded")


def test_verbs_on_concluded_job(daemon: Any, scratch: str) -> None:
    daemon.command("blockdev-create", {"job-id": "j", "options": {
        "driver": "file", "filename": os.path.join(scratch, "v.img"), "size": MiB}})
    statuses(daemon, "j", "concluded")
    for verb in ("pause", "cancel", "complete", "finalize"):
        assert_error(daemon.cmd(f"job-{verb}", id="j"),
                     f"Job 'j' in state 'concluded' cannot accept command verb '{verb}'")
    assert_error(daemon.cmd("job-resume", id="j"),
                 "Can't resume a job that was not paused")
    assert query_job(daemon, "j")["status"] == "concluded"
    assert daemon.qmp.get_events() == []


def test_unknown_jobs(daemon: Any, scratch: str) -> None:
    for verb in ("pause", "resume", "cancel", "complete", "finalize", "dismiss"):
        assert_error(daemon.cmd(f"job-{verb}", id="nope"), "Job not found")
    # A create job is not a block job: block-job-* do not see it either.
    daemon.command("blockdev-create", {"job-id": "c", "options": {
        "driver": "file", "filename": os.path.join(scratch, "u.img"), "size": MiB}})
    statuses(daemon, "c", "concluded")
    for name in ("nope", "c"):
        for verb in ("pause", "resume", "complete", "cancel"):
            assert_error(daemon.cmd(f"block-job-{verb}", device=name),
                         f"Block job '{name}' not found", "DeviceNotActive")
        assert_error(daemon.cmd("block-job-cancel", device=name, force=True),
                     f"Block job '{name}' not found", "DeviceNotActive")
        assert_error(daemon.cmd("block-job-set-speed", device=name, speed=1),
                     f"Block job '{name}' not found", "DeviceNotActive")
        for verb in ("finalize", "dismiss"):
            assert_error(daemon.cmd(f"block-job-{verb}", id=name),
                         f"Block job '{name}' not found", "DeviceNotActive")
    assert daemon.command("query-block-jobs") == []


def start_slow_create(d: Any, scratch: str, job_id: str) -> str:
    """A create job that stays busy for a while (zeroes written to disk)."""
    path = os.path.join(scratch, f"{job_id}.img")
    d.command("blockdev-create", {"job-id": job_id, "options": {
        "driver": "file", "filename": path, "size": 512 * MiB,
        "preallocation": "full"}})
    return path


def test_verbs_on_running_job(daemon: Any, scratch: str) -> None:
    start_slow_create(daemon, scratch, "s")
    # Sent at once, so the job is still writing zeroes.
    assert_error(daemon.cmd("job-dismiss", id="s"),
                 "Job 's' in state 'running' cannot accept command verb 'dismiss'")
    assert_error(daemon.cmd("job-finalize", id="s"),
                 "Job 's' in state 'running' cannot accept command verb 'finalize'")
    assert_error(daemon.cmd("job-complete", id="s"),
                 "Job 's' in state 'running' cannot accept command verb 'complete'")
    assert_error(daemon.cmd("job-resume", id="s"),
                 "Can't resume a job that was not paused")
    assert statuses(daemon, "s", "concluded", timeout=120) == [
        "created", "running", "waiting", "pending", "concluded"]
    daemon.command("job-dismiss", id="s")


def test_quit_while_job_runs(daemon_factory: Any, scratch: str) -> None:
    d = daemon_factory()
    start_slow_create(d, scratch, "q")
    assert d.cmd("quit") == {"return": {}}
    assert d.wait_exit(timeout=120) in (0, None)
