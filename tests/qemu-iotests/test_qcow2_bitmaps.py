"""Persistent bitmaps in qcow2 images: the directory, the in_use flag, storage.

Images get bitmaps from ``qemu-img bitmap --add`` (enabled and disabled,
several granularities).  While the daemon has an image open read/write,
``qemu-img info -U`` must show its auto (enabled) bitmaps ``in-use``; after
a clean shutdown without writes the flags are as before, and after writes
blockd leaves them ``in-use`` (it does not track writes yet, so the stored
contents are stale and must be treated as inconsistent).  ``qemu-img
check`` must find no corruption either way.  Damaged directories are
refused at blockdev-add.

The storage API (store, load, remove) is not reachable over QMP yet: the
test-only ``qcow2-bitmap-tool`` (tests/unit) drives it, and qemu-img and
qemu-storage-daemon then validate what it wrote; bitmaps QEMU recorded are
loaded back by the tool.

iotests groups: rw, quick
"""

import json
import os
import struct

import pytest

import iotests
from iotests import MiB, nbd_uri, qemu_img, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 16 * MiB
BITMAPS = [("auto64k", 65536, True), ("off4k", 4096, False), ("auto512", 512, True)]


def tool_path():
    build = os.environ.get("BLOCKD_BUILD_DIR",
                           os.path.join(iotests.REPO_ROOT, "build"))
    path = os.path.join(build, "tests", "unit", "qcow2-bitmap-tool")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built")
    return path


def tool(img, *args, check=True, read_only=False):
    argv = [tool_path()] + (["-r"] if read_only else []) + [img] + [str(a) for a in args]
    res = iotests.run(argv, check=False)
    if check:
        assert res.returncode == 0, res
    return res


def make_image(scratch, name="t.qcow2", bitmaps=BITMAPS, *opts):
    img = os.path.join(scratch, name)
    args = ["create", "-q", "-f", "qcow2"]
    for o in opts:
        args += ["-o", o]
    qemu_img(*args, img, SIZE)
    for bname, gran, enabled in bitmaps:
        qemu_img("bitmap", "--add", "-g", gran, *([] if enabled else ["--disable"]),
                 img, bname)
    return img


def bitmap_flags(img, force_share=False):
    """{name: (granularity, set of flags)} from qemu-img info."""
    args = ["info", "--output=json"] + (["-U"] if force_share else []) + [img]
    info = json.loads(qemu_img(*args).stdout)
    data = info.get("format-specific", {}).get("data", {})
    return {b["name"]: (b["granularity"], set(b["flags"]))
            for b in data.get("bitmaps", [])}


def check_clean(img):
    """qemu-img check: no errors and no leaks."""
    res = qemu_img("check", img, check=False)
    assert res.returncode == 0, res
    assert "No errors were found" in res.stdout, res


def open_writable(daemon, img, node="d", read_only=False):
    resp = daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": node, "read-only": read_only,
        "file": {"driver": "file", "filename": img}})
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export(node, writable=not read_only)
    return nbd_uri(sock, node)


def expected_flags(enabled, in_use):
    flags = {"auto"} if enabled else set()
    return flags | ({"in-use"} if in_use else set())


def test_in_use_while_open_then_restored(daemon, scratch):
    img = make_image(scratch)
    before = bitmap_flags(img)
    assert before == {n: (g, expected_flags(e, False)) for n, g, e in BITMAPS}
    open_writable(daemon, img)
    during = bitmap_flags(img, force_share=True)
    for name, gran, enabled in BITMAPS:
        # Every bitmap loaded is flagged, enabled or not, as in QEMU.
        assert during[name] == (gran, expected_flags(enabled, True)), during
    assert daemon.stop()
    assert bitmap_flags(img) == before
    check_clean(img)


def test_writes_recorded_and_stored_at_close(daemon, scratch):
    img = make_image(scratch)
    uri = open_writable(daemon, img)
    qemu_io_cmds(uri, ["write -q -P 7 1M 64k", "write -q -z 4M 1M"])
    assert daemon.stop()
    # Stored back at clean close: in_use cleared, flags kept.
    assert bitmap_flags(img) == {n: (g, expected_flags(e, False)) for n, g, e in BITMAPS}
    check_clean(img)
    if iotests.is_reference():
        return
    # The enabled bitmaps hold exactly the writes; the disabled one none.
    assert tool(img, "load", "auto64k", read_only=True).stdout.split() == \
        ["65536", "256", "16-16,64-79"]
    assert tool(img, "load", "off4k", read_only=True).stdout.split() == \
        ["4096", "4096", "none"]


@iotests.blockd_only("kills blockd and reads the image with blockd's test tool")
def test_kill_leaves_bitmaps_inconsistent(daemon, scratch):
    img = make_image(scratch)
    uri = open_writable(daemon, img)
    qemu_io_cmds(uri, ["write -q -P 7 1M 64k"])
    daemon.kill()
    flags = bitmap_flags(img)
    assert all("in-use" in f for _, f in flags.values()), flags
    # Inconsistent bitmaps can only be removed.
    res = tool(img, "load", "auto64k", check=False)
    assert res.returncode == 1 and "is inconsistent" in res.stderr, res
    qemu_img("bitmap", "--remove", img, "auto64k")
    assert "auto64k" not in bitmap_flags(img)


def test_read_only_open_leaves_image_alone(daemon, scratch):
    img = make_image(scratch)
    with open(img, "rb") as f:
        before = f.read()
    open_writable(daemon, img, read_only=True)
    assert all("in-use" not in f for _, f in bitmap_flags(img, True).values())
    assert daemon.stop()
    with open(img, "rb") as f:
        assert f.read() == before


@iotests.blockd_only("QEMU drops the ignored extension and its clusters leak")
def test_extension_without_autoclear_bit_ignored(daemon, scratch):
    img = make_image(scratch)
    with open(img, "r+b") as f:
        f.seek(88)
        f.write(struct.pack(">Q", 0))
    uri = open_writable(daemon, img)
    qemu_io_cmds(uri, ["write -q -P 3 0 64k"])
    assert daemon.stop()
    assert bitmap_flags(img) == {}
    res = qemu_img("check", img, check=False)
    assert res.returncode in (0, 3) and "ERROR" not in res.output, res


# --- Damaged directories --------------------------------------------------

def bitmaps_ext(img):
    """(position of the extension data, nb, dir size, dir offset)."""
    with open(img, "rb") as f:
        hdr = f.read(65536)
    pos = struct.unpack(">I", hdr[100:104])[0]
    while True:
        typ, ln = struct.unpack(">II", hdr[pos:pos + 8])
        if typ == 0x23852875:
            nb, _, size, off = struct.unpack(">IIQQ", hdr[pos + 8:pos + 32])
            return pos + 8, nb, size, off
        assert typ != 0, "no bitmaps extension"
        pos += 8 + (ln + 7) // 8 * 8


def patch(img, offset, fmt, value):
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def damage(img, kind):
    ext, nb, size, off = bitmaps_ext(img)
    if kind == "dir-beyond-eof":
        patch(img, ext + 16, ">Q", 1 << 40)
    elif kind == "zero-bitmaps":
        patch(img, ext, ">I", 0)
    elif kind == "reserved":
        patch(img, ext + 4, ">I", 1)
    elif kind == "dir-size":
        patch(img, ext + 8, ">Q", size - 8)
    elif kind == "name-size-0":
        patch(img, off + 18, ">H", 0)
    elif kind == "gran-8":
        patch(img, off + 17, ">B", 8)
    elif kind == "gran-32":
        patch(img, off + 17, ">B", 32)
    elif kind == "type-2":
        patch(img, off + 16, ">B", 2)
    elif kind == "table-beyond-eof":
        patch(img, off, ">Q", 1 << 40)
    elif kind == "table-too-small":
        patch(img, off + 8, ">I", 0)
    else:
        raise AssertionError(kind)


DAMAGE = [
    ("dir-beyond-eof", "bitmap directory (offset 0x10000000000"),
    ("zero-bitmaps", "found bitmaps extension with zero bitmaps"),
    ("reserved", "bitmaps_ext: Reserved field is not zero"),
    ("dir-size", "bitmap directory"),
    ("name-size-0", "has a name of 0 bytes"),
    ("gran-8", "Granularity is under minimum (512 bytes)"),
    ("gran-32", "Granularity exceeds maximum (2147483648 bytes)"),
    ("type-2", "has unknown type 2"),
    ("table-beyond-eof", "lies beyond the end of the image file"),
    ("table-too-small", "has 0 table entries"),
]

# blockd checks every table location at open; QEMU only on load.
QEMU_ACCEPTS = {"table-beyond-eof"}


@pytest.mark.parametrize("kind,message", DAMAGE, ids=[d[0] for d in DAMAGE])
@pytest.mark.parametrize("read_only", [False, True], ids=["rw", "ro"])
def test_damaged_directory_refused(daemon, scratch, kind, message, read_only):
    if kind in QEMU_ACCEPTS and iotests.is_reference():
        pytest.skip("QEMU checks bitmap tables only when it loads a bitmap")
    img = make_image(scratch, bitmaps=[("b", 65536, True)])
    damage(img, kind)
    resp = daemon.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "bad", "read-only": read_only,
        "file": {"driver": "file", "filename": img}})
    assert "error" in resp, resp
    if not iotests.is_reference():
        assert message in resp["error"]["desc"], resp
    daemon.assert_alive()


# --- Storage through the internal API (qcow2-bitmap-tool) -----------------

def ranges_to_str(ranges):
    return ",".join(f"{a}-{b}" for a, b in ranges) or "none"


STORE_CASES = [
    ("empty", 65536, []),
    ("all", 65536, [(0, 255)]),
    ("sparse512", 512, [(0, 5), (100, 200), (32000, 32767)]),
    # With 64 KiB clusters one data cluster holds 524288 bits, more than
    # these 16 MiB disks need: every bitmap is one chunk, all zeroes
    # (table entry 0), all ones (entry 1) or mixed (a data cluster).
    ("edges4k", 4096, [(0, 0), (4095, 4095)]),
    ("ones-then-mixed512", 512, [(0, 16383), (16385, 16385)]),
]


@iotests.blockd_only("drives blockd's storage API through a test tool")
@pytest.mark.parametrize("name,gran,ranges", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_store_load_roundtrip(scratch, name, gran, ranges):
    img = make_image(scratch, bitmaps=[("old", 65536, True)])
    spec = "all" if ranges == [(0, SIZE // gran - 1)] else ranges_to_str(ranges)
    args = ["store", name, gran, "auto"] + ([spec] if ranges else [])
    tool(img, *args)
    flags = bitmap_flags(img)
    assert flags[name] == (gran, {"auto"})
    assert flags["old"] == (65536, {"auto"})
    check_clean(img)
    out = tool(img, "load", name, read_only=True).stdout.split()
    assert out == [str(gran), str(SIZE // gran), ranges_to_str(ranges)]
    # Replace it (manual this time): the old clusters are freed.
    tool(img, "store", name, gran, "manual", "1-2")
    assert bitmap_flags(img)[name] == (gran, set())
    assert tool(img, "load", name).stdout.split()[2] == "1-2"
    check_clean(img)
    tool(img, "remove", name)
    tool(img, "remove", "old")
    assert bitmap_flags(img) == {}
    check_clean(img)


@iotests.blockd_only("drives blockd's storage API through a test tool")
def test_store_into_image_without_bitmaps(scratch):
    img = make_image(scratch, bitmaps=[])
    tool(img, "store", "first", 65536, "manual", "3-7")
    assert bitmap_flags(img) == {"first": (65536, set())}
    check_clean(img)
    # qemu-img can work with it: add a second bitmap, remove the first.
    qemu_img("bitmap", "--add", img, "second")
    qemu_img("bitmap", "--remove", img, "first")
    # Read-only: a read/write open would flag the auto bitmap in_use.
    assert tool(img, "list", read_only=True).stdout.split() == ["second", "65536", "0", "1"]
    check_clean(img)


@iotests.blockd_only("drives blockd's storage API through a test tool")
def test_store_limits(scratch):
    img = make_image(scratch, bitmaps=[])
    cases = [
        (["store", "x" * 1024, 65536, "auto"], "Name length exceeds maximum (1023 characters)"),
        (["store", "g", 256, "auto"], "Granularity is under minimum (512 bytes)"),
        (["store", "g", 3000, "auto"], "Granularity must be power of 2"),
        (["remove", "nope"], "Bitmap 'nope' not found in the image"),
        (["load", "nope"], "Bitmap 'nope' not found in the image"),
    ]
    for args, msg in cases:
        res = tool(img, *args, check=False)
        assert res.returncode == 1 and msg in res.stderr, res
    tool(img, "store", "x" * 1023, 65536, "auto")
    res = tool(img, "store", "ro", 65536, "auto", check=False, read_only=True)
    assert res.returncode == 1 and "read-only" in res.stderr, res
    v2 = make_image(scratch, "v2.qcow2", [], "compat=0.10")
    res = tool(v2, "store", "b", 65536, "auto", check=False)
    assert res.returncode == 1 and "Cannot store dirty bitmaps in qcow2 v2 files" in res.stderr
    check_clean(img)
    check_clean(v2)


@iotests.blockd_only("drives blockd's storage API through a test tool")
def test_stored_auto_bitmap_then_written(scratch):
    """An auto bitmap records the writes of a later open and stays valid."""
    img = make_image(scratch, bitmaps=[])
    tool(img, "store", "a", 65536, "auto", "0-1")
    tool(img, "store", "m", 65536, "manual", "3-3")
    tool(img, "write", 1 << 20, 4096)
    assert bitmap_flags(img) == {"a": (65536, {"auto"}), "m": (65536, set())}
    assert tool(img, "load", "a").stdout.split()[2] == "0-1,16-16"
    assert tool(img, "load", "m").stdout.split()[2] == "3-3"
    check_clean(img)


def qemu_dirty_ranges(daemon_factory, monkeypatch, img, name, gran):
    """The set bits of bitmap ``name`` as qemu-storage-daemon loads it."""
    qsd = "/usr/bin/qemu-storage-daemon"
    if not os.access(qsd, os.X_OK):
        pytest.skip("qemu-storage-daemon not installed")
    monkeypatch.setenv("BLOCKD_BINARY", qsd)
    d = daemon_factory(subdir="qsd")
    monkeypatch.undo()
    d.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "read-only": True,
                               "file": {"driver": "file", "filename": img}})
    sock = d.start_nbd_unix()
    d.command("block-export-add", {"type": "nbd", "id": "e", "node-name": "q",
                                   "bitmaps": [name]})
    opts = (f"driver=nbd,server.type=unix,server.path={sock},export=q,"
            f"x-dirty-bitmap=qemu:dirty-bitmap:{name}")
    out = json.loads(qemu_img("map", "--output=json", "--image-opts", opts).stdout)
    assert d.stop()
    ranges = []
    for ext in out:
        if not ext["data"]:           # dirty areas read as holes
            ranges.append((ext["start"] // gran, (ext["start"] + ext["length"]) // gran - 1))
    return ranges


@iotests.blockd_only("drives blockd's storage API through a test tool")
@pytest.mark.parametrize("cluster,gran,ranges", [
    (65536, 4096, [(0, 5), (100, 100), (2000, 4095)]),
    # 512-byte clusters: 4096 bits per data cluster, 8 chunks.  Chunk 0
    # all ones (table entry 1), 1 and 3 all zeroes (entry 0), 2 mixed (a
    # data cluster), 4 to 7 all ones.
    (512, 512, [(0, 4095), (8192, 8192), (12287, 12287), (16384, 32767)]),
], ids=["64k", "512"])
def test_qemu_reads_what_blockd_stored(scratch, daemon_factory, monkeypatch, cluster, gran,
                                       ranges):
    img = make_image(scratch, "t.qcow2", [], f"cluster_size={cluster}")
    tool(img, "store", "s", gran, "manual", ranges_to_str(ranges))
    check_clean(img)
    assert tool(img, "load", "s").stdout.split()[2] == ranges_to_str(ranges)
    assert qemu_dirty_ranges(daemon_factory, monkeypatch, img, "s", gran) == ranges
    # Replacing and removing it frees every cluster.
    tool(img, "store", "s", gran, "auto", "all")
    check_clean(img)
    tool(img, "remove", "s")
    check_clean(img)


@iotests.blockd_only("drives blockd's storage API through a test tool")
def test_blockd_reads_what_qemu_recorded(scratch, daemon_factory, monkeypatch):
    qsd = "/usr/bin/qemu-storage-daemon"
    if not os.access(qsd, os.X_OK):
        pytest.skip("qemu-storage-daemon not installed")
    img = make_image(scratch, bitmaps=[("rec", 65536, True)])
    monkeypatch.setenv("BLOCKD_BINARY", qsd)
    d = daemon_factory(subdir="qsd")
    monkeypatch.undo()
    resp = d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q",
                                  "file": {"driver": "file", "filename": img}})
    assert "return" in resp, resp
    sock = d.start_nbd_unix()
    d.export("q", writable=True)
    qemu_io_cmds(nbd_uri(sock, "q"), ["write -q -P 1 0 1", "write -q -P 2 1M 200k",
                                      "write -q -P 3 16320k 64k"])
    assert d.stop()
    out = tool(img, "load", "rec").stdout.split()
    assert out == ["65536", "256", "0-0,16-19,255-255"]
