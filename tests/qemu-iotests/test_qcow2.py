"""The qcow2 format driver, interoperating both ways with qemu-img and qemu-io.

Images are created by qemu-img, written through the daemon's NBD export by
qemu-io, and then checked offline with ``qemu-img check`` (no corruption)
and ``qemu-img compare`` against a raw image built from an in-test model.
Images written by qemu-io directly are read back through the daemon.  A
``kill -9`` loop checks that a crash at any moment leaves at worst leaked
clusters, and damaged images must be refused at blockdev-add.

iotests groups: rw, quick (the kill loop is slow)
"""

import json
import os
import random
import shutil
import struct
import time

import pytest

from iotests import (KiB, MiB, Reference, compare_images, nbd_uri, qemu_img, qemu_io_cmds,
                     qemu_io_popen, wait_all)

pytestmark = [pytest.mark.rw]

SIZE = 16 * MiB


def add_qcow2(daemon, img, node="d", **opts):
    """blockdev-add a qcow2 node (discard=unmap) over a file node."""
    args = {"driver": "qcow2", "node-name": node, "discard": "unmap",
            "file": {"driver": "file", "filename": img}}
    args.update({k.replace("_", "-"): v for k, v in opts.items()})
    return daemon.cmd("blockdev-add", args)


def export_qcow2(daemon, img, **opts):
    """Open ``img`` as qcow2 and export it writable; returns the NBD URI."""
    resp = add_qcow2(daemon, img, **opts)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("d", writable=True)
    return nbd_uri(sock, "d")


def create_qcow2(path, size=SIZE, *opts):
    args = ["create", "-q", "-f", "qcow2"]
    for o in opts:
        args += ["-o", o]
    qemu_img(*args, path, size)
    return path


def check_image(img, allow_leaks=False):
    """qemu-img check: no corruption; leaks only if allowed (rc 3)."""
    res = qemu_img("check", img, check=False)
    ok = (0, 3) if allow_leaks else (0,)
    assert res.returncode in ok, res
    assert "ERROR" not in res.output, res


def apply(model, ops):
    """Turn (kind, pattern, offset, length) ops into qemu-io commands."""
    cmds = []
    for kind, pat, off, ln in ops:
        if kind == "write":
            cmds.append(f"write -q -P {pat:#x} {off} {ln}")
            model.write(pat, off, ln)
        elif kind == "zero":
            cmds.append(f"write -q -z {off} {ln}")
            model.zero(off, ln)
        elif kind == "zero-unmap":
            cmds.append(f"write -q -z -u {off} {ln}")
            model.zero(off, ln)
        else:
            cmds.append(f"discard -q {off} {ln}")
            model.zero(off, ln)
    return cmds


def patterns_for(cluster):
    """Writes that are unaligned, cross cluster boundaries and are large."""
    return [
        ("write", 0x11, 0, 512),
        ("write", 0x22, 1000, 3000),
        ("write", 0x33, cluster - 7, 20),
        ("write", 0x44, 3 * cluster + 100, min(5 * cluster, 6 * MiB)),
        ("write", 0x55, 2 * MiB + 13, 3 * MiB + 1),
        ("write", 0x66, SIZE - 4096, 4096),
        ("write", 0x77, 2 * MiB + 512, 1024),        # over allocated data
        ("zero", 0, 4 * MiB, MiB),
        ("zero-unmap", 0, 3 * MiB, 512 * KiB),
    ]


@pytest.mark.quick
@pytest.mark.parametrize("create_opts", [
    ("cluster_size=512",),
    ("cluster_size=4096",),
    ("cluster_size=65536",),
    ("cluster_size=2M",),
    ("compat=0.10",),
    ("refcount_bits=1", "cluster_size=4096"),
    ("refcount_bits=64",),
], ids=lambda o: ",".join(o))
def test_write_through_nbd(daemon, scratch, create_opts):
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), SIZE, *create_opts)
    cluster = json.loads(qemu_img("info", "--output=json", img).stdout)["cluster-size"]
    model = Reference(SIZE)
    uri = export_qcow2(daemon, img)
    qemu_io_cmds(uri, apply(model, patterns_for(cluster)))
    compare_images(uri, model.save(os.path.join(scratch, "ref.raw")))
    assert daemon.stop()
    check_image(img)
    compare_images(img, os.path.join(scratch, "ref.raw"), fmt_a="qcow2")


@pytest.mark.quick
def test_concurrent_writers_same_clusters(daemon, scratch):
    """Several clients write different bytes of the same new clusters."""
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), SIZE, "cluster_size=65536")
    uri = export_qcow2(daemon, img)
    model = Reference(SIZE)
    procs = []
    for w in range(4):
        cmds = []
        for i in range(32):
            off = i * 128 * KiB + w * 16 * KiB + 100
            cmds.append(f"write -q -P {0x40 + w:#x} {off} {8 * KiB}")
            model.write(0x40 + w, off, 8 * KiB)
        procs.append(qemu_io_popen(uri, cmds))
    wait_all(procs)
    compare_images(uri, model.save(os.path.join(scratch, "ref.raw")))
    assert daemon.stop()
    check_image(img)
    compare_images(img, os.path.join(scratch, "ref.raw"), fmt_a="qcow2")


@pytest.mark.quick
def test_read_image_written_by_qemu_io(daemon, scratch):
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), SIZE, "cluster_size=4096")
    ops = [("write", 0x5a, 0, MiB), ("write", 0xa5, 3 * MiB + 17, 70000),
           ("zero", 0, 512 * KiB, 8192), ("zero-unmap", 0, 600 * KiB, 64 * KiB),
           ("discard", 0, 800 * KiB, 16 * KiB)]
    model = Reference(SIZE)
    qemu_io_cmds(img, apply(model, ops), fmt="qcow2")
    resp = add_qcow2(daemon, img, read_only=True)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("d")
    compare_images(nbd_uri(sock, "d"), model.save(os.path.join(scratch, "ref.raw")))
    res = qemu_img("map", "--output=json", "-f", "raw", nbd_uri(sock, "d"))
    assert '"data": true' in res.stdout


def make_chain(scratch):
    base = create_qcow2(os.path.join(scratch, "base.qcow2"), SIZE, "cluster_size=65536")
    qemu_io_cmds(base, ["write -q -P 0xbb 0 4M", "write -q -P 0xcc 10M 1M"], fmt="qcow2")
    top = os.path.join(scratch, "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    model = Reference(SIZE)
    model.write(0xbb, 0, 4 * MiB)
    model.write(0xcc, 10 * MiB, MiB)
    return base, top, model


@pytest.mark.quick
def test_backing_chain(daemon, scratch):
    base, top, model = make_chain(scratch)
    base_before = open(base, "rb").read()
    uri = export_qcow2(daemon, top)
    compare_images(uri, model.save(os.path.join(scratch, "ref0.raw")))
    ops = [("write", 0x01, 100, 10), ("write", 0x02, 65536 * 3 + 5000, 70000),
           ("write", 0x03, 10 * MiB + 512, 512), ("zero", 0, 2 * MiB, 65536),
           ("discard", 0, 3 * MiB, 131072), ("write", 0x04, SIZE - 3, 3)]
    qemu_io_cmds(uri, apply(model, ops))
    ref = model.save(os.path.join(scratch, "ref.raw"))
    compare_images(uri, ref)
    assert daemon.stop()
    check_image(top)
    compare_images(top, ref, fmt_a="qcow2")
    assert open(base, "rb").read() == base_before
    # Only the written clusters were copied up: partial COW.
    res = qemu_img("map", "--output=json", top)
    assert res.stdout.count('"depth": 0') >= 3


@pytest.mark.quick
def test_backing_options(daemon, scratch):
    base, top, model = make_chain(scratch)
    # backing: null hides the base.
    resp = add_qcow2(daemon, top, node="nobase", backing=None, read_only=True)
    assert "return" in resp, resp
    # backing given as an existing node.
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "b", "read-only": True,
                                    "file": {"driver": "file", "filename": base}})
    resp = add_qcow2(daemon, top, node="d", backing="b", read_only=True)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("nobase", export_id="e0", name="nobase")
    daemon.export("d", export_id="e1", name="d")
    compare_images(nbd_uri(sock, "d"), model.save(os.path.join(scratch, "ref.raw")))
    zero = Reference(SIZE).save(os.path.join(scratch, "zero.raw"))
    compare_images(nbd_uri(sock, "nobase"), zero)


def random_ops(rng, cluster, count):
    ops = []
    for _ in range(count):
        kind = rng.choice(["write", "write", "write", "zero", "zero-unmap", "discard"])
        if kind == "discard":
            # Discard is advisory for partial clusters: keep it aligned.
            off = rng.randrange(0, SIZE // cluster) * cluster
            ln = rng.randint(1, 8) * cluster
        else:
            off = rng.randrange(0, SIZE - 1)
            ln = rng.randint(1, 3 * cluster)
        ln = min(ln, SIZE - off)
        ops.append((kind, rng.randrange(1, 256), off, ln))
    return ops


@pytest.mark.quick
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_ops_match_model(daemon, scratch, seed):
    rng = random.Random(seed)
    cluster = rng.choice([4096, 65536])
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), SIZE, f"cluster_size={cluster}")
    model = Reference(SIZE)
    uri = export_qcow2(daemon, img)
    qemu_io_cmds(uri, apply(model, random_ops(rng, cluster, 60)))
    ref = model.save(os.path.join(scratch, "ref.raw"))
    compare_images(uri, ref)
    assert daemon.stop()
    check_image(img)
    compare_images(img, ref, fmt_a="qcow2")


@pytest.mark.slow
def test_kill9_leaves_consistent_image(daemon_factory, scratch):
    """SIGKILL during writes: qemu-img check finds no corruption (leaks allowed)."""
    rng = random.Random(42)
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), 256 * MiB, "cluster_size=4096")
    for rnd in range(20):
        d = daemon_factory(subdir=f"r{rnd}")
        uri = export_qcow2(d, img)
        procs = []
        for w in range(3):
            cmds = []
            for _ in range(200):
                op = rng.choice(["write -q -P 0x5 {o} {n}", "write -q -z -u {o} {n}",
                                 "discard -q {o} {n}"])
                cmds.append(op.format(o=rng.randrange(0, 255 * MiB), n=rng.randint(1, 256 * KiB)))
            procs.append(qemu_io_popen(uri, cmds))
        time.sleep(rng.uniform(0.05, 0.6))
        d.kill()
        for p in procs:
            p.kill()
            p.wait()
        check_image(img, allow_leaks=True)


def corrupt_copy(src, dst, patches=(), truncate=None):
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        for off, fmt, val in patches:
            f.seek(off)
            f.write(struct.pack(fmt, val))
        if truncate is not None:
            f.truncate(truncate)
    return dst


DAMAGE_BOTH = [
    ("header-truncated", [], 100, "qcow2 header too short"),
    ("version", [(4, ">I", 4)], None, "Unsupported qcow2 version 4"),
    ("cluster-bits", [(20, ">I", 22)], None, "Unsupported cluster size: 2^22"),
    ("absurd-size", [(24, ">Q", 1 << 62)], None, "Image is too big"),
    ("l1-too-large", [(36, ">I", 1 << 30)], None, "Active L1 table too large"),
    ("l1-unaligned", [(40, ">Q", 0x30200)], None, "Active L1 table offset invalid"),
    ("l1-too-small", [(36, ">I", 0)], None, "L1 table is too small"),
    ("reftable-too-large", [(56, ">I", 1 << 30)], None, "Reference count table too large"),
    ("unknown-incompat", [(72, ">Q", 1 << 10)], None,
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 400"),
    ("corrupt-bit", [(72, ">Q", 2)], None,
     "qcow2: Image is corrupt; cannot be opened read/write"),
    ("refcount-order", [(96, ">I", 7)], None, "Reference count entry width too large"),
]

# QEMU opens these (and fails later, or reads zeroes); blockd refuses them.
DAMAGE_BLOCKD = [
    ("l1-beyond-eof", [(40, ">Q", 1 << 40)], None, "Active L1 table"),
    ("reftable-beyond-eof", [(48, ">Q", 1 << 40)], None, "Reference count table"),
    ("reftable-overlaps-l1", [(48, ">Q", 0x30000)], None, "overlaps"),
    ("file-truncated", [], 0x30000 + 512, "beyond the end of the image file"),
]


def damaged_base(scratch):
    img = create_qcow2(os.path.join(scratch, "good.qcow2"), 64 * MiB)
    qemu_io_cmds(img, ["write -q -P 1 0 1M", "write -q -P 2 40M 64k"], fmt="qcow2")
    return img


def expect_refused(daemon, img, message):
    resp = add_qcow2(daemon, img, node="bad")
    assert "error" in resp, resp
    assert message in resp["error"]["desc"], resp
    daemon.assert_alive()


@pytest.mark.quick
@pytest.mark.parametrize("name,patches,trunc,message", DAMAGE_BOTH,
                         ids=[d[0] for d in DAMAGE_BOTH])
def test_damaged_image_refused(daemon, scratch, name, patches, trunc, message):
    img = corrupt_copy(damaged_base(scratch), os.path.join(scratch, f"{name}.qcow2"),
                       patches, trunc)
    expect_refused(daemon, img, message)


@pytest.mark.quick
@pytest.mark.blockd_only("QEMU opens these images and trusts the damaged tables")
@pytest.mark.parametrize("name,patches,trunc,message", DAMAGE_BLOCKD,
                         ids=[d[0] for d in DAMAGE_BLOCKD])
def test_damaged_image_refused_blockd(daemon, scratch, name, patches, trunc, message):
    img = corrupt_copy(damaged_base(scratch), os.path.join(scratch, f"{name}.qcow2"),
                       patches, trunc)
    expect_refused(daemon, img, message)


@pytest.mark.quick
@pytest.mark.blockd_only("QEMU rewrites the whole header and its bitmap directory at close")
def test_unknown_extensions_and_bitmaps_preserved(daemon, scratch):
    """A header with a bitmap survives writes; the bitmap records them.

    blockd maintains bitmaps (test_qcow2_bitmaps.py): it keeps the
    autoclear bit and rewrites only the directory location in the bitmaps
    extension (the bitmap is stored at close in new clusters, with the
    writes recorded and in_use cleared).
    """
    img = create_qcow2(os.path.join(scratch, "t.qcow2"), SIZE)
    qemu_img("bitmap", "--add", img, "b0")
    with open(img, "rb") as f:
        before = f.read(4096)
    uri = export_qcow2(daemon, img)
    qemu_io_cmds(uri, ["write -q -P 9 0 1M"])
    assert daemon.stop()
    with open(img, "rb") as f:
        after = f.read(4096)
    # The bitmaps extension's data: nb_bitmaps, reserved, size, offset.
    pos = struct.unpack(">I", before[100:104])[0]
    while struct.unpack(">I", before[pos:pos + 4])[0] != 0x23852875:
        pos += 8 + (struct.unpack(">I", before[pos + 4:pos + 8])[0] + 7) // 8 * 8
    dir_off = pos + 8 + 16
    # Everything but the refcount table location (48-59) and the
    # directory offset is byte-for-byte the same.
    assert before[:48] == after[:48]
    assert before[60:dir_off] == after[60:dir_off]
    assert before[dir_off + 8:] == after[dir_off + 8:]
    info = json.loads(qemu_img("info", "--output=json", img).stdout)
    bitmaps = info["format-specific"]["data"]["bitmaps"]
    assert [(b["name"], sorted(b["flags"])) for b in bitmaps] == [("b0", ["auto"])]
    check_image(img)
