"""query-named-block-nodes answers as qemu-storage-daemon 7.2 does.

Each scenario opens the same graph (on its own copy of the images) in the
daemon under test and in the reference daemon, and compares the whole
reply, flat and not flat.  Only what legitimately differs is normalised:
generated node names (``#blockNNN``, numbered by order of appearance) and
``actual-size`` (what the host filesystem allocated).

Not compared yet: graphs for which QEMU makes up a ``json:{...}``
pseudo-filename (a backing node other than the header's, null-co with
options); blockd reports the plain filename there (docs/interop).

iotests groups: quick
"""

import difflib
import json
import os
import re
from typing import Any, Callable, Dict, List, Sequence

import pytest

import iotests
from iotests import Daemon, qemu_img, qemu_io

REFERENCE = "/usr/bin/qemu-storage-daemon"
MiB = 1024 * 1024

pytestmark = pytest.mark.quick


def normalise(reply: Any, skip: Sequence[str] = ()) -> Any:
    names: Dict[str, str] = {}

    def rename(match: "re.Match[str]") -> str:
        return names.setdefault(match.group(0), f"#block{len(names)}")

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()
                    if k != "actual-size" and k not in skip}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, str):
            return re.sub(r"#block\d+", rename, obj)
        return obj

    return walk(reply)


def query_both(daemon_factory: Callable[..., Daemon], monkeypatch: Any,
               scratch: str, make_images: Callable[[str], None],
               args: Callable[[str], List[str]],
               skip: Sequence[str] = ()) -> None:
    """Open ``args(dir)`` in both daemons, each on fresh images, and compare."""
    if not os.access(REFERENCE, os.X_OK):
        pytest.fail(f"{REFERENCE} is not installed")
    replies = []
    for label, binary in (("test", iotests.daemon_binary()),
                          ("reference", REFERENCE)):
        d_dir = os.path.join(scratch, label)
        os.makedirs(d_dir)
        make_images(d_dir)
        monkeypatch.setenv("BLOCKD_BINARY", binary)
        d = daemon_factory(*args(d_dir), subdir=f"{label}-daemon")
        reply = {flat: normalise(d.command("query-named-block-nodes",
                                           {"flat": flat}), skip)
                 for flat in (False, True)}
        replies.append(filter_dir(reply, d_dir))
        d.stop()
    monkeypatch.undo()
    test, reference = replies
    for flat in (False, True):
        want = json.dumps(reference[flat], indent=1, sort_keys=True)
        got = json.dumps(test[flat], indent=1, sort_keys=True)
        diff = difflib.unified_diff(want.splitlines(), got.splitlines(),
                                    "reference", "test", lineterm="")
        assert got == want, f"flat={flat}:\n" + "\n".join(diff)


def filter_dir(obj: Any, directory: str) -> Any:
    if isinstance(obj, dict):
        return {k: filter_dir(v, directory) for k, v in obj.items()}
    if isinstance(obj, list):
        return [filter_dir(v, directory) for v in obj]
    if isinstance(obj, str):
        return obj.replace(directory, "DIR")
    return obj


def qcow2_node(path: str, node: str = "top", extra: str = "") -> List[str]:
    return ["--blockdev",
            f"driver=qcow2,node-name={node},file.driver=file,"
            f"file.filename={path}{extra}"]


def test_raw_over_odd_sized_file(daemon_factory, monkeypatch, scratch):
    """A file whose length is not a multiple of 512, raw on top."""
    def make(d: str) -> None:
        with open(os.path.join(d, "disk.raw"), "wb") as f:
            f.truncate(MiB + 1000)

    query_both(daemon_factory, monkeypatch, scratch, make, lambda d: [
        "--blockdev", f"driver=file,node-name=f0,filename={d}/disk.raw,"
                      "cache.direct=off",
        "--blockdev", "driver=raw,node-name=r0,file=f0,read-only=on"])


def test_qcow2_v3_with_bitmaps(daemon_factory, monkeypatch, scratch):
    def make(d: str) -> None:
        img = os.path.join(d, "disk.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-o",
                 "lazy_refcounts=on,cluster_size=65536", img, "16M")
        qemu_io("-c", "write -P 1 0 1M", img)
        qemu_img("bitmap", "--add", img, "b0")
        qemu_img("bitmap", "--add", "--disable", "-g", "1M", img, "b1")

    # The node's runtime dirty-bitmaps come with the dirty-bitmaps issue;
    # until then only the image's bitmaps (format-specific) are compared.
    query_both(daemon_factory, monkeypatch, scratch, make,
               lambda d: qcow2_node(f"{d}/disk.qcow2", extra=",read-only=on"),
               skip=["dirty-bitmaps"])


def test_qcow2_v2(daemon_factory, monkeypatch, scratch):
    def make(d: str) -> None:
        qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10",
                 os.path.join(d, "disk.qcow2"), "8M")

    query_both(daemon_factory, monkeypatch, scratch, make,
               lambda d: qcow2_node(f"{d}/disk.qcow2"))


def make_chain(d: str) -> None:
    """base <- mid <- top, the middle one naming its format, the top not."""
    qemu_img("create", "-q", "-f", "qcow2", os.path.join(d, "base.qcow2"), "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
             os.path.join(d, "mid.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", os.path.join(d, "mid.qcow2"),
             "-F", "qcow2", os.path.join(d, "top.qcow2"))
    qemu_io("-c", "write -P 3 1M 1M", os.path.join(d, "top.qcow2"))


def test_three_level_chain(daemon_factory, monkeypatch, scratch):
    query_both(daemon_factory, monkeypatch, scratch, make_chain,
               lambda d: qcow2_node(f"{d}/top.qcow2"))


def test_backing_reference_not_found(daemon, scratch):
    """A backing reference to a missing node, with QEMU's message."""
    make_chain(scratch)
    resp = daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "top", "backing": "nosuch",
        "file": {"driver": "file", "filename": f"{scratch}/top.qcow2"}})
    assert resp["error"]["desc"] == ("Could not open backing file: Cannot "
                                     "find device='nosuch' nor "
                                     "node-name='nosuch'")


def test_null_co_and_detect_zeroes(daemon_factory, monkeypatch, scratch):
    query_both(daemon_factory, monkeypatch, scratch, lambda d: None, lambda d: [
        "--blockdev", "driver=null-co,node-name=n0",
        "--blockdev", "driver=null-co,node-name=n1,detect-zeroes=on",
        "--blockdev", "driver=null-co,node-name=n2,"
                      "detect-zeroes=unmap,discard=unmap"])


def test_detect_zeroes_unmap_needs_discard_unmap(daemon):
    resp = daemon.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                       "detect-zeroes": "unmap"})
    assert resp["error"]["desc"] == ("setting detect-zeroes to unmap is not "
                                     "allowed without setting discard "
                                     "operation to unmap")
    assert daemon.command("query-named-block-nodes") == []


@pytest.mark.parametrize("mode", ["off", "on", "unmap"])
def test_detect_zeroes_writes(daemon, scratch, mode):
    """Zero writes become write-zeroes; with unmap they free the clusters."""
    img = os.path.join(scratch, "disk.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    qemu_io("-c", "write -P 7 0 4M", img)
    daemon.command("blockdev-add", {
        "driver": "qcow2", "node-name": "q0", "discard": "unmap",
        "detect-zeroes": mode,
        "file": {"driver": "file", "filename": img}})
    sock = daemon.start_nbd_unix()
    daemon.export("q0", writable=True)
    qemu_io("-f", "raw", "-c", "write -P 0 0 2M", iotests.nbd_uri(sock, "q0"))
    daemon.del_export()
    daemon.command("blockdev-del", {"node-name": "q0"})
    qemu_io("-c", "read -P 0 0 2M", "-c", "read -P 7 2M 2M", img)
    first = json.loads(qemu_img("map", "--output=json", img).stdout)[0]
    assert first["start"] == 0 and first["length"] >= 2 * MiB
    # off: data written; on: zero flag, clusters kept; unmap: freed.
    assert first["zero"] == (mode != "off")
    assert first["data"] == (mode == "off")
    assert ("offset" in first) == (mode != "unmap")
