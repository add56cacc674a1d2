"""Dirty bitmaps over QMP: the commands, write tracking, persistence.

Every test runs against blockd and against qemu-storage-daemon
(``BLOCKD_BINARY=/usr/bin/qemu-storage-daemon``) with the same
expectations: messages, counts and SHA-256 digests are QEMU's.  The
expected digests are computed here from the bits the writes must set, in
the layout QEMU hashes (little-endian 64-bit words, one bit per granule).
"""

import hashlib
import os

import pytest

import iotests
from iotests import nbd_uri, qemu_img, qemu_io_cmds

MiB = 1024 * 1024
SIZE = 64 * MiB


def expected_sha256(size, gran, dirty_granules):
    nbits = max((size + gran - 1) // gran, 1)
    words = [0] * ((nbits + 63) // 64)
    for g in dirty_granules:
        words[g // 64] |= 1 << (g % 64)
    return hashlib.sha256(b"".join(w.to_bytes(8, "little") for w in words)).hexdigest()


def granules(ranges, gran):
    """Granule numbers touched by byte ranges [(offset, length)]."""
    out = set()
    for off, length in ranges:
        out.update(range(off // gran, (off + length - 1) // gran + 1))
    return out


def open_qcow2(d, img, node="q", read_only=False):
    d.command("blockdev-add", {"driver": "qcow2", "node-name": node, "read-only": read_only,
                               "file": {"driver": "file", "filename": img}})


def bitmaps(d, node):
    for info in d.command("query-named-block-nodes", {"flat": True}):
        if info["node-name"] == node:
            return info.get("dirty-bitmaps", [])
    raise AssertionError(f"node {node} not listed")


def bitmap_info(d, node, name):
    for b in bitmaps(d, node):
        if b.get("name") == name:
            return b
    raise AssertionError(f"no bitmap {name} on {node}")


def sha(d, node, name):
    return d.command("x-debug-block-dirty-bitmap-sha256", {"node": node, "name": name})["sha256"]


def error_of(d, cmd, args):
    resp = d.cmd(cmd, args)
    assert "error" in resp, resp
    assert resp["error"]["class"] == "GenericError", resp
    return resp["error"]["desc"]


@pytest.fixture
def img(scratch):
    path = os.path.join(scratch, "a.qcow2")
    qemu_img("create", "-f", "qcow2", path, str(SIZE))
    return path


def test_bad_arguments(daemon, scratch, img):
    v2 = os.path.join(scratch, "v2.qcow2")
    raw = os.path.join(scratch, "r.raw")
    qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", v2, str(SIZE))
    qemu_img("create", "-f", "raw", raw, str(SIZE // 2))
    open_qcow2(daemon, img, "q")
    open_qcow2(daemon, v2, "v2")
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "r",
                                    "file": {"driver": "file", "filename": raw}})
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "b"})
    daemon.command("block-dirty-bitmap-add", {"node": "r", "name": "rb"})
    add = "block-dirty-bitmap-add"
    cases = [
        (add, {"node": "q", "name": "b"}, "Bitmap already exists: b"),
        (add, {"node": "q", "name": ""}, "Bitmap name cannot be empty"),
        (add, {"node": "nosuch", "name": "x"}, "Cannot find device='nosuch' nor node-name='nosuch'"),
        (add, {"node": "q", "name": "x", "granularity": 1000},
         "Granularity must be power of 2 and at least 512"),
        (add, {"node": "q", "name": "x", "granularity": 256},
         "Granularity must be power of 2 and at least 512"),
        (add, {"node": "q", "name": "x", "granularity": 0},
         "Granularity must be power of 2 and at least 512"),
        (add, {"node": "q", "name": "x" * 1024}, "Bitmap name too long: " + "x" * 1024),
        (add, {"node": "r", "name": "p", "persistent": True},
         "Can't store persistent bitmaps to r: Operation not supported"),
        (add, {"node": "v2", "name": "p", "persistent": True},
         "Can't make bitmap 'p' persistent in 'v2': Cannot store dirty bitmaps in qcow2 v2 files"),
        ("block-dirty-bitmap-remove", {"node": "q", "name": "nosuch"}, "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-remove", {"node": "nosuch", "name": "b"}, "Node 'nosuch' not found"),
        ("block-dirty-bitmap-clear", {"node": "q", "name": "nosuch"}, "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-enable", {"node": "nosuch", "name": "b"}, "Node 'nosuch' not found"),
        ("block-dirty-bitmap-disable", {"node": "q", "name": "nosuch"}, "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-merge", {"node": "q", "target": "nosuch", "bitmaps": ["b"]},
         "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-merge", {"node": "q", "target": "b", "bitmaps": ["nosuch"]},
         "Dirty bitmap 'nosuch' not found"),
        ("block-dirty-bitmap-merge", {"node": "q", "target": "b",
                                      "bitmaps": [{"node": "nosuch", "name": "b"}]},
         "Node 'nosuch' not found"),
        ("block-dirty-bitmap-merge", {"node": "q", "target": "b",
                                      "bitmaps": [{"node": "r", "name": "rb"}]},
         f"Bitmaps are of different sizes (destination size is {SIZE}, source size is "
         f"{SIZE // 2}) and can't be merged"),
        ("x-debug-block-dirty-bitmap-sha256", {"node": "q", "name": "nosuch"},
         "Dirty bitmap 'nosuch' not found"),
    ]
    for cmd, args, msg in cases:
        assert error_of(daemon, cmd, args) == msg, (cmd, args)
    # Nothing was created by the refusals.
    assert [b["name"] for b in bitmaps(daemon, "q")] == ["b"]
    # Schema errors come from the argument checks.
    resp = daemon.cmd(add, {"node": "q", "name": "g", "granularity": -1})
    assert resp["error"]["class"] == "GenericError", resp


def test_writes_mark_enabled_bitmaps(daemon, img):
    open_qcow2(daemon, img)
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "a"})
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "fine", "granularity": 4096})
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "off", "disabled": True})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    writes = [(0, 512), (1 * MiB + 4096, 70000), (SIZE - 1, 1)]
    zeroes = [(8 * MiB, 3 * 65536)]
    qemu_io_cmds(nbd_uri(sock, "q"),
                 [f"write -q -P 1 {o} {n}" for o, n in writes] +
                 [f"write -q -z {o} {n}" for o, n in zeroes])
    listed = {b["name"]: b for b in bitmaps(daemon, "q")}
    # Newest first, as QEMU lists them.
    assert [b["name"] for b in bitmaps(daemon, "q")] == ["off", "fine", "a"]
    for name, gran in (("a", 65536), ("fine", 4096)):
        dirty = granules(writes + zeroes, gran)
        assert listed[name] == {"name": name, "recording": True, "persistent": False,
                                "busy": False, "granularity": gran,
                                "count": len(dirty) * gran}
        assert sha(daemon, "q", name) == expected_sha256(SIZE, gran, dirty)
    assert listed["off"]["count"] == 0 and listed["off"]["recording"] is False
    assert sha(daemon, "q", "off") == expected_sha256(SIZE, 65536, set())


def test_enable_disable_clear_merge(daemon, img):
    open_qcow2(daemon, img)
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    uri = nbd_uri(sock, "q")

    def add(name, **kw):
        daemon.command("block-dirty-bitmap-add", {"node": "q", "name": name, **kw})

    add("a")
    add("b", disabled=True)
    add("c", granularity=512)
    qemu_io_cmds(uri, ["write -q -P 1 0 64k"])
    daemon.command("block-dirty-bitmap-enable", {"node": "q", "name": "b"})
    daemon.command("block-dirty-bitmap-disable", {"node": "q", "name": "a"})
    qemu_io_cmds(uri, ["write -q -P 2 1M 64k"])
    assert sha(daemon, "q", "a") == expected_sha256(SIZE, 65536, {0})
    assert sha(daemon, "q", "b") == expected_sha256(SIZE, 65536, {16})
    # Merge into a disabled target: the union, other granularity included.
    daemon.command("block-dirty-bitmap-merge", {"node": "q", "target": "a",
                                                "bitmaps": ["b", {"node": "q", "name": "c"}]})
    assert sha(daemon, "q", "a") == expected_sha256(SIZE, 65536, {0, 16})
    daemon.command("block-dirty-bitmap-clear", {"node": "q", "name": "b"})
    assert sha(daemon, "q", "b") == expected_sha256(SIZE, 65536, set())
    # A failed merge leaves the target alone, even after a good source.
    before = sha(daemon, "q", "b")
    error_of(daemon, "block-dirty-bitmap-merge",
             {"node": "q", "target": "b", "bitmaps": ["a", "nosuch"]})
    assert sha(daemon, "q", "b") == before
    daemon.command("block-dirty-bitmap-remove", {"node": "q", "name": "c"})
    assert [b["name"] for b in bitmaps(daemon, "q")] == ["b", "a"]


def test_persistent_bitmap_survives_restart(daemon_factory, img):
    d = daemon_factory()
    open_qcow2(d, img)
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "p", "persistent": True})
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "pd", "persistent": True,
                                         "disabled": True, "granularity": 4096})
    d.command("block-dirty-bitmap-add", {"node": "q", "name": "transient"})
    sock = d.start_nbd_unix()
    d.export("q", writable=True)
    qemu_io_cmds(nbd_uri(sock, "q"), ["write -q -P 1 3M 200k"])
    digest = sha(d, "q", "p")
    assert digest == expected_sha256(SIZE, 65536, granules([(3 * MiB, 200 * 1024)], 65536))
    assert d.stop()

    info = qemu_img("info", "--output=json", img).stdout
    assert '"name": "p"' in info and '"name": "pd"' in info and "transient" not in info
    qemu_img("check", img)

    d2 = daemon_factory()
    open_qcow2(d2, img)
    listed = {b["name"]: b for b in bitmaps(d2, "q")}
    assert set(listed) == {"p", "pd"}
    assert listed["p"]["persistent"] and listed["p"]["recording"]
    assert not listed["pd"]["recording"] and listed["pd"]["granularity"] == 4096
    assert "inconsistent" not in listed["p"]
    assert sha(d2, "q", "p") == digest
    # Removing a persistent bitmap deletes it from the image at once.
    d2.command("block-dirty-bitmap-remove", {"node": "q", "name": "pd"})
    out = qemu_img("info", "-U", "--output=json", img).stdout
    assert '"name": "pd"' not in out


def test_bitmaps_from_qemu_img(daemon, img):
    qemu_img("bitmap", "--add", "-g", "128k", img, "made")
    qemu_img("bitmap", "--add", "--disable", img, "off")
    open_qcow2(daemon, img)
    listed = {b["name"]: b for b in bitmaps(daemon, "q")}
    assert listed["made"] == {"name": "made", "recording": True, "persistent": True,
                              "busy": False, "granularity": 131072, "count": 0}
    assert listed["off"]["recording"] is False


def test_kill_leaves_persistent_bitmap_inconsistent(daemon_factory, img):
    qemu_img("bitmap", "--add", img, "p")
    d = daemon_factory()
    open_qcow2(d, img)
    d.kill()
    d2 = daemon_factory()
    open_qcow2(d2, img)
    (info,) = bitmaps(d2, "q")
    assert info["inconsistent"] is True and info["recording"] is False
    msg = error_of(d2, "block-dirty-bitmap-clear", {"node": "q", "name": "p"})
    assert msg == "Bitmap 'p' is inconsistent and cannot be used"
    error_of(d2, "block-dirty-bitmap-enable", {"node": "q", "name": "p"})
    d2.command("block-dirty-bitmap-remove", {"node": "q", "name": "p"})
    assert bitmaps(d2, "q") == []


def test_read_only_bitmaps(daemon, img):
    qemu_img("bitmap", "--add", img, "ro")
    open_qcow2(daemon, img, read_only=True)
    msg = error_of(daemon, "block-dirty-bitmap-clear", {"node": "q", "name": "ro"})
    assert msg == "Bitmap 'ro' is readonly and cannot be modified"
    error_of(daemon, "block-dirty-bitmap-remove", {"node": "q", "name": "ro"})
    # Enable and disable are allowed on read-only bitmaps.
    daemon.command("block-dirty-bitmap-disable", {"node": "q", "name": "ro"})
    daemon.command("block-dirty-bitmap-enable", {"node": "q", "name": "ro"})
    assert daemon.stop()
    qemu_img("check", img)


def runs(granule_set, gran, size=SIZE):
    """Maximal runs of dirty granules as (offset, length), clipped to size."""
    out = []
    for g in sorted(granule_set):
        start, end = g * gran, min((g + 1) * gran, size)
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, end - start))
    return out


def dirty_extents(d, node, names, **kw):
    ret = d.command("__org.blockd_query-dirty-extents", {"node": node, "bitmaps": names, **kw})
    return ret, [(e["offset"], e["length"]) for e in ret["extents"]]


@iotests.blockd_only("__org.blockd_query-dirty-extents is a blockd extension")
def test_changes_map(daemon, scratch):
    size = 64 * MiB + 1024            # the last granule is partial
    img = os.path.join(scratch, "c.qcow2")
    qemu_img("create", "-f", "qcow2", img, str(size))
    open_qcow2(daemon, img)
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "old", "granularity": 65536})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    uri = nbd_uri(sock, "q")
    first = [(0, 4096), (64 * 1024, 128 * 1024), (5 * MiB, 1)]
    qemu_io_cmds(uri, [f"write -q -P 1 {o} {n}" for o, n in first])
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "new", "granularity": 4096})
    second = [(7 * MiB + 4096, 8192), (size - 10, 10)]
    qemu_io_cmds(uri, [f"write -q -P 2 {o} {n}" for o, n in second])

    ret, ext = dirty_extents(daemon, "q", ["new"])
    assert ret["granularity"] == 4096 and "next-offset" not in ret
    assert ext == runs(granules(second, 4096), 4096, size)
    assert ret["dirty-bytes"] == len(granules(second, 4096)) * 4096
    # The union of an older checkpoint and a newer one, at the finer granularity.
    ret, ext = dirty_extents(daemon, "q", ["old", "new"])
    union = set()
    for g in granules(first + second, 65536):
        union.update(range(g * 16, g * 16 + 16))
    union = {g for g in union if g * 4096 < size}
    assert ret["granularity"] == 4096
    assert ext == runs(union, 4096, size)
    # Paged: two runs at a time, resuming where the answer says.
    pages, kw = [], {"max-extents": 2}
    while True:
        ret, ext = dirty_extents(daemon, "q", ["old", "new"], **kw)
        pages += ext
        if "next-offset" not in ret:
            break
        kw["offset"] = ret["next-offset"]
    assert pages == runs(union, 4096, size)
    # An offset inside a run cuts it.
    ret, ext = dirty_extents(daemon, "q", ["old"], offset=64 * 1024 + 100)
    assert ext[0] == (64 * 1024 + 100, 128 * 1024 - 100)
    # The same runs as the NBD context qemu:dirty-bitmap:NAME, run for run.
    from test_nbd_dirty_bitmap import bitmap_map
    for name in ("old", "new"):
        daemon.command("block-dirty-bitmap-disable", {"node": "q", "name": name})
    daemon.command("block-export-add", {"type": "nbd", "id": "maps", "node-name": "q",
                                        "name": "maps", "bitmaps": ["old", "new"]})
    for name in ("old", "new"):
        nbd_runs = [(o, n) for o, n, dirty in bitmap_map(nbd_uri(sock, "maps"), name) if dirty]
        assert dirty_extents(daemon, "q", [name])[1] == nbd_runs, name
    for args, msg in [
        ({"bitmaps": []}, "Parameter 'bitmaps' must name at least one bitmap"),
        ({"bitmaps": ["nosuch"]}, "Dirty bitmap 'nosuch' not found"),
        ({"bitmaps": ["old"], "max-extents": 0},
         "Parameter 'max-extents' expects a number of at least 1"),
    ]:
        assert error_of(daemon, "__org.blockd_query-dirty-extents", {"node": "q", **args}) == msg
    assert error_of(daemon, "__org.blockd_query-dirty-extents",
                    {"node": "nosuch", "bitmaps": ["old"]}) == "Node 'nosuch' not found"


def test_bitmap_grows_with_its_node(daemon, img):
    """A bitmap on a qcow2 node's file grows as allocation grows the file."""
    daemon.command("blockdev-add", {"driver": "file", "node-name": "qf", "filename": img})
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "qf"})
    size_before = os.path.getsize(img)
    daemon.command("block-dirty-bitmap-add", {"node": "qf", "name": "fb"})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    qemu_io_cmds(nbd_uri(sock, "q"), ["write -q -P 3 0 1M"])
    assert os.path.getsize(img) >= size_before + MiB
    (info,) = bitmaps(daemon, "qf")
    # The new data clusters lie past the old end of the file.
    assert info["count"] >= MiB, info


def autoclear_bits(img):
    with open(img, "rb") as f:
        f.seek(88)
        return int.from_bytes(f.read(8), "big")


def test_removing_the_last_bitmap_leaves_a_clean_header(daemon_factory, img):
    """No autoclear bit without the extension: QEMU could not write it."""
    qemu_img("bitmap", "--add", img, "p")
    d = daemon_factory()
    open_qcow2(d, img)
    d.command("block-dirty-bitmap-remove", {"node": "q", "name": "p"})
    assert d.stop()
    assert autoclear_bits(img) == 0
    # QEMU's own block layer writes metadata (a new cluster) into it.
    iotests.qemu_io("-f", "qcow2", "-c", "write -q -P 1 32M 64k", img)
    qemu_img("check", img)


@iotests.blockd_only("repairs what earlier blockd builds left")
def test_stray_autoclear_bit_cleared_at_open(daemon, img):
    with open(img, "r+b") as f:
        f.seek(88)
        f.write((1).to_bytes(8, "big"))
    open_qcow2(daemon, img)
    assert autoclear_bits(img) == 0
