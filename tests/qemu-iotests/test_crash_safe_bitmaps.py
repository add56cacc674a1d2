"""Crash-surviving persistent bitmaps (``__org.blockd_crash-safe``).

A crash-safe bitmap is stored in the qcow2 image when it is added and
its stored copy is kept a superset of its bits while the image is open
(docs/interop/bitmaps.rst).  So after ``kill -9`` the stored bitmap is
consistent (not in_use) and covers every write a client got
acknowledged.  The tests kill the daemon in the middle of a qemu-io run
through an NBD export, note which writes qemu-io reported done before
the kill, and read the stored bits back with blockd's test tool
(tests/unit/qcow2-bitmap-tool).  The default mode keeps QEMU's
behaviour: inconsistent after a kill.  qemu-img and qemu-storage-daemon
must still handle the image.

iotests groups: rw, quick
"""

import json
import os
import random
import subprocess

import pytest

import iotests
from iotests import MiB, nbd_uri, qemu_img, qemu_io_cmds
from test_dirty_bitmaps import bitmap_info, open_qcow2

pytestmark = [pytest.mark.rw, pytest.mark.quick,
              iotests.blockd_only("the crash-safe mode is a blockd extension")]

SIZE = 1024 * MiB
GRAN = 512                      # 2M bits: several bitmap data clusters
CS = "__org.blockd_crash-safe"


def tool(img, *args):
    build = os.environ.get("BLOCKD_BUILD_DIR",
                           os.path.join(iotests.REPO_ROOT, "build"))
    path = os.path.join(build, "tests", "unit", "qcow2-bitmap-tool")
    res = iotests.run([path, "-r", img, *map(str, args)], check=False)
    assert res.returncode == 0, res
    return res.stdout


def stored_bits(img, name):
    """The set bits of stored bitmap ``name``, as a list of (first, last)."""
    gran, _, ranges = tool(img, "load", name).split()
    if ranges == "none":
        return int(gran), []
    out = []
    for r in ranges.split(","):
        first, _, last = r.partition("-")
        out.append((int(first), int(last or first)))
    return int(gran), out


def covered(ranges, first, last):
    return any(a <= first and last <= b for a, b in ranges)


def flags(img):
    info = json.loads(qemu_img("info", "-U", "--output=json", img).stdout)
    return {b["name"]: set(b["flags"])
            for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", [])}


def sha(d, name):
    return d.command("x-debug-block-dirty-bitmap-sha256", {"node": "q", "name": name})["sha256"]


def error_of(d, cmd, args):
    resp = d.cmd(cmd, args)
    assert "error" in resp, resp
    return resp["error"]["desc"]


def random_writes(seed, n):
    rng = random.Random(seed)
    return [(rng.randrange(SIZE // 4096) * 4096, 4096) for _ in range(n)]


def write_cmds(writes):
    return [f"write -P 0x5a {off} {length}" for off, length in writes]


def killed_during_writes(d, uri, writes, acked_before_kill):
    """Run qemu-io on ``writes``; kill ``d`` once it reported
    ``acked_before_kill`` of them done.  Returns the acknowledged writes."""
    argv = ["stdbuf", "-oL", iotests.QEMU_IO, "-f", "raw"]
    for c in write_cmds(writes):
        argv += ["-c", c]
    proc = subprocess.Popen(argv + [uri], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    acked = []
    try:
        for line in proc.stdout:
            # "wrote 4096/4096 bytes at offset 1234": printed once completed.
            if line.startswith("wrote "):
                acked.append(int(line.split()[-1]))
                if len(acked) == acked_before_kill:
                    d.kill()
                    break
        for line in proc.stdout:
            if line.startswith("wrote "):
                acked.append(int(line.split()[-1]))
    finally:
        proc.wait(timeout=60)
    return acked


@pytest.fixture
def img(scratch):
    path = os.path.join(scratch, "cs.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", path, SIZE)
    return path


def start_with_bitmap(daemon_factory, img, crash_safe, granularity=GRAN):
    d = daemon_factory()
    open_qcow2(d, img)
    args = {"node": "q", "name": "b", "persistent": True, "granularity": granularity}
    if crash_safe:
        args[CS] = True
    d.command("block-dirty-bitmap-add", args)
    sock = d.start_nbd_unix()
    d.export("q", writable=True)
    return d, nbd_uri(sock, "q")


def test_schema_lists_the_member(daemon):
    schema = daemon.command("query-qmp-schema")
    members = [m["name"] for e in schema if e["meta-type"] == "object"
               for m in e.get("members", [])]
    assert CS in members


def test_bad_arguments(daemon, scratch, img):
    open_qcow2(daemon, img)
    msg = error_of(daemon, "block-dirty-bitmap-add", {"node": "q", "name": "x", CS: True})
    assert msg == "'__org.blockd_crash-safe' requires 'persistent'"
    raw = os.path.join(scratch, "r.raw")
    qemu_img("create", "-q", "-f", "raw", raw, "1M")
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "r",
                                    "file": {"driver": "file", "filename": raw}})
    msg = error_of(daemon, "block-dirty-bitmap-add",
                   {"node": "r", "name": "x", "persistent": True, CS: True})
    assert msg.startswith("Can't store persistent bitmaps to r"), msg
    ro = os.path.join(scratch, "ro.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", ro, "1M")
    open_qcow2(daemon, ro, node="ro", read_only=True)
    msg = error_of(daemon, "block-dirty-bitmap-add",
                   {"node": "ro", "name": "x", "persistent": True, CS: True})
    assert msg.startswith("Can't make bitmap 'x' persistent in 'ro'"), msg
    # Nothing was added anywhere.
    assert flags(img) == {} and flags(ro) == {}


def test_stored_at_add_and_not_in_use(daemon, img):
    open_qcow2(daemon, img)
    daemon.command("block-dirty-bitmap-add",
                   {"node": "q", "name": "b", "persistent": True, CS: True})
    # Stored at once, consistent, recording.
    assert flags(img) == {"b": {"auto"}}
    res = qemu_img("check", "-U", img)
    assert "No errors were found" in res.stdout, res


def test_kill_during_writes_keeps_acknowledged_writes(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True)
    first = random_writes(1, 300)
    qemu_io_cmds(uri, write_cmds(first))
    second = random_writes(2, 3000)
    acked = killed_during_writes(d, uri, second, 200)
    # Killed in the middle: the rest of the writes failed.
    assert 200 <= len(acked) < len(second)
    acked_set = set(acked)

    assert flags(img) == {"b": {"auto"}}
    gran, ranges = stored_bits(img, "b")
    assert gran == GRAN
    for off, length in first + [w for w in second if w[0] in acked_set]:
        assert covered(ranges, off // GRAN, (off + length - 1) // GRAN), off

    d2 = daemon_factory()
    open_qcow2(d2, img)
    info = bitmap_info(d2, "q", "b")
    assert "inconsistent" not in info and info["recording"] and info["persistent"]
    # Still crash-safe after the restart: not flagged while open.
    assert flags(img) == {"b": {"auto"}}
    assert d2.stop()
    # A kill may leak clusters allocated at that moment; nothing worse.
    res = qemu_img("check", img, check=False)
    assert res.returncode in (0, 3) and "corruptions" not in res.stdout, res


def test_kill_again_after_restart(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True, granularity=65536)
    qemu_io_cmds(uri, ["write -P 1 0 64k"])
    d.kill()
    d2 = daemon_factory()
    open_qcow2(d2, img)
    sock = d2.start_nbd_unix()
    d2.export("q", writable=True)
    qemu_io_cmds(nbd_uri(sock, "q"), ["write -P 2 512M 4k", "write -P 3 1000M 4k"])
    d2.kill()
    assert flags(img) == {"b": {"auto"}}
    _, ranges = stored_bits(img, "b")
    for off in (0, 512 * MiB, 1000 * MiB):
        assert covered(ranges, off // 65536, off // 65536)


def test_default_mode_still_inconsistent_after_kill(daemon_factory, img):
    # As in QEMU: a bitmap added over QMP is stored only at close, so it
    # is lost; one loaded from the image is left in_use.
    qemu_img("bitmap", "--add", img, "b")
    d = daemon_factory()
    open_qcow2(d, img)
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "new", "persistent": True})
    sock = d.start_nbd_unix()
    d.export("q", writable=True)
    qemu_io_cmds(nbd_uri(sock, "q"), write_cmds(random_writes(3, 20)))
    d.kill()
    assert flags(img) == {"b": {"auto", "in-use"}}
    d2 = daemon_factory()
    open_qcow2(d2, img)
    assert bitmap_info(d2, "q", "b")["inconsistent"] is True


def test_clean_stop_keeps_exact_bits(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True, granularity=65536)
    qemu_io_cmds(uri, ["write -P 1 3M 200k", "write -P 2 700M 4k"])
    digest = sha(d, "b")
    count = bitmap_info(d, "q", "b")["count"]
    assert d.stop()
    assert flags(img) == {"b": {"auto"}}
    _, ranges = stored_bits(img, "b")
    assert ranges == [(48, 51), (11200, 11200)]
    d2 = daemon_factory()
    open_qcow2(d2, img)
    assert sha(d2, "b") == digest
    assert bitmap_info(d2, "q", "b")["count"] == count


def test_clear_and_merge(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True, granularity=65536)
    qemu_io_cmds(uri, ["write -P 1 10M 4k"])
    d.command("block-dirty-bitmap-clear", {"node": "q", "name": "b"})
    # A disabled source, merged in: its bits must reach the stored copy.
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "src", "granularity": 65536})
    qemu_io_cmds(uri, ["write -P 1 900M 4k"])
    d.command("block-dirty-bitmap-clear", {"node": "q", "name": "b"})
    d.command("block-dirty-bitmap-disable", {"node": "q", "name": "b"})
    d.command("block-dirty-bitmap-merge", {"node": "q", "target": "b", "bitmaps": ["src"]})
    d.kill()
    _, ranges = stored_bits(img, "b")
    # The cleared write may stay (a superset); the merged bit must be there.
    assert covered(ranges, 900 * MiB // 65536, 900 * MiB // 65536)


def test_remove_drops_it_from_the_image(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True)
    d.command("block-dirty-bitmap-remove", {"node": "q", "name": "b"})
    assert flags(img) == {}
    # A new ordinary bitmap of the same name is not crash-safe: the name
    # left blockd's extension.
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "b", "persistent": True})
    assert d.stop()
    d2 = daemon_factory()
    open_qcow2(d2, img)
    assert flags(img) == {"b": {"auto", "in-use"}}
    d2.kill()
    assert flags(img) == {"b": {"auto", "in-use"}}


def test_transaction_abort_unstores(daemon_factory, img):
    d = daemon_factory()
    open_qcow2(d, img)
    resp = d.cmd("transaction", {"actions": [
        {"type": "block-dirty-bitmap-add",
         "data": {"node": "q", "name": "t", "persistent": True, CS: True}},
        {"type": "abort", "data": {}}]})
    assert "error" in resp, resp
    assert flags(img) == {}


def test_qemu_tools_handle_the_image(daemon_factory, img, scratch):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True, granularity=65536)
    qemu_io_cmds(uri, ["write -P 1 5M 64k"])
    d.kill()
    res = qemu_img("check", img, check=False)
    assert res.returncode in (0, 3), res        # leaks only, after a kill
    qemu_img("check", "-r", "leaks", img)
    res = qemu_img("check", img)
    assert "No errors were found" in res.stdout, res
    assert flags(img) == {"b": {"auto"}}

    # qemu-storage-daemon opens it and sees an ordinary bitmap.
    out = subprocess.run(
        ["/usr/bin/qemu-storage-daemon",
         "--blockdev", json.dumps({"driver": "qcow2", "node-name": "q",
                                   "file": {"driver": "file", "filename": img}}),
         "--chardev", "stdio,id=m", "--monitor", "chardev=m,mode=control"],
        input='{"execute": "qmp_capabilities"}\n'
              '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}\n'
              '{"execute": "quit"}\n',
        capture_output=True, text=True, timeout=60)
    assert '"name": "b"' in out.stdout and '"inconsistent"' not in out.stdout, out
    # qemu-img commit into it, and bitmap --add: QEMU keeps blockd's
    # extension (it stores bitmaps back at its clean close).
    top = os.path.join(scratch, "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", top)
    qemu_io_cmds(top, ["write -P 3 100M 64k"], fmt="qcow2")
    qemu_img("commit", "-q", top)
    qemu_img("bitmap", "--add", img, "other")
    assert flags(img) == {"b": {"auto"}, "other": {"auto"}}
    with open(img, "rb") as f:
        assert b"blkc" in f.read(65536)
    _, ranges = stored_bits(img, "b")
    assert covered(ranges, 100 * MiB // 65536, 100 * MiB // 65536)
    d2 = daemon_factory()
    open_qcow2(d2, img)
    # Still crash-safe: only the ordinary bitmap is flagged while open.
    assert flags(img) == {"b": {"auto"}, "other": {"auto", "in-use"}}
    assert d2.stop()
    qemu_img("bitmap", "--remove", img, "b")
    assert flags(img) == {"other": {"auto"}}
    res = qemu_img("check", img)
    assert "No errors were found" in res.stdout, res


def test_reopen_read_only_and_back(daemon_factory, img):
    d, uri = start_with_bitmap(daemon_factory, img, crash_safe=True, granularity=65536)
    qemu_io_cmds(uri, ["write -P 1 0 64k"])
    d.del_export()
    file = {"driver": "file", "filename": img}
    d.command("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "q",
                                               "read-only": True, "file": file}]})
    d.command("blockdev-reopen", {"options": [{"driver": "qcow2", "node-name": "q",
                                               "file": file}]})
    # Read/write again: still crash-safe, and writes are marked again.
    assert flags(img) == {"b": {"auto"}}
    d.export("q", writable=True)
    qemu_io_cmds(uri, ["write -P 2 300M 4k"])
    d.kill()
    assert flags(img) == {"b": {"auto"}}
    _, ranges = stored_bits(img, "b")
    assert covered(ranges, 0, 0) and covered(ranges, 300 * MiB // 65536, 300 * MiB // 65536)
