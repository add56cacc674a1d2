"""Images left dirty by QEMU with lazy refcounts are repaired at open.

qemu-io writes an image created with ``lazy_refcounts=on`` and is killed
by its ``abort`` command, so the dirty bit stays set and the refcounts on
disk are stale (``qemu-img check`` reports errors).  Opened read/write by
the daemon, the image must read back what qemu-io wrote, take more writes
and, after a clean stop, pass ``qemu-img check`` with the dirty bit
clear.  Read-only opens leave the image as it is.  Run with
``BLOCKD_BINARY=/usr/bin/qemu-storage-daemon`` for QEMU's behaviour.

iotests groups: rw, quick
"""

import json
import os
import struct

import pytest

from iotests import KiB, MiB, Reference, compare_images, nbd_uri, qemu_img, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 16 * MiB


def info(img):
    return json.loads(qemu_img("info", "--output=json", img).stdout)


def dirty_flag(img):
    return info(img)["dirty-flag"]


def make_dirty(img, create_opts, ops, model, compressed=(), prepare=()):
    args = ["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on"]
    for o in create_opts:
        args += ["-o", o]
    qemu_img(*args, img, SIZE)
    for p in prepare:
        qemu_img(*p)
    cmds = []
    # Compressed writes leave refcounts on disk: make them first.
    for pat, off, n in compressed:
        cmds.append(f"write -q -c -P {pat:#x} {off} {n}")
        model.write(pat, off, n)
    for pat, off, n in ops:
        cmds.append(f"write -q -P {pat:#x} {off} {n}")
        model.write(pat, off, n)
    cmds.append("abort")
    res = qemu_io_cmds(img, cmds, fmt="qcow2", check=False)
    assert res.returncode != 0, res
    assert dirty_flag(img)
    res = qemu_img("check", img, check=False)
    assert res.returncode != 0 and "ERROR" in res.output, res


def add(daemon, img, read_only=False):
    args = {"driver": "qcow2", "node-name": "d",
            "file": {"driver": "file", "filename": img}}
    if read_only:
        args["read-only"] = True
    resp = daemon.cmd("blockdev-add", args)
    assert "return" in resp, resp
    sock = daemon.start_nbd_unix()
    daemon.export("d", writable=not read_only)
    return nbd_uri(sock, "d")


OPS = [(0x5a, 0, MiB), (0xa5, 3 * MiB + 17, 70000), (0x3c, 9 * MiB, 300 * KiB)]

CASES = {
    "default": ((), {}),
    "4k-refcount1": (("cluster_size=4096", "refcount_bits=1"), {}),
    "512-refcount64": (("cluster_size=512", "refcount_bits=64"), {}),
    "lost-refblock": (("cluster_size=512", "refcount_bits=64"), {"drop_refblock": True}),
    "compressed": (("cluster_size=4096",),
                   {"compressed": [(0x11, 12 * MiB, 64 * KiB), (0x22, 13 * MiB, 8 * KiB)]}),
    "bitmap": (("cluster_size=65536",),
               {"prepare": [("bitmap", "--add", "-g", "65536"),
                            ("bitmap", "--add", "--disable", "-g", "4096")]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dirty_image_repaired(daemon, scratch, case):
    create_opts, extra = CASES[case]
    img = os.path.join(scratch, "t.qcow2")
    model = Reference(SIZE)
    make_dirty(img, create_opts, OPS, model, compressed=extra.get("compressed", ()),
               prepare=[p + ("-f", "qcow2", img, f"b{i}")
                        for i, p in enumerate(extra.get("prepare", ()))])
    if extra.get("drop_refblock"):
        # Lose a refcount block: the repair must allocate a new one.
        with open(img, "r+b") as f:
            f.seek(48)
            reftable = struct.unpack(">Q", f.read(8))[0]
            f.seek(reftable + 8)
            assert struct.unpack(">Q", f.read(8))[0]
            f.seek(reftable + 8)
            f.write(bytes(8))
    uri = add(daemon, img)
    ref = os.path.join(scratch, "ref.raw")
    compare_images(uri, model.save(ref))
    more = [(0x77, 5 * MiB, 2 * MiB), (0x88, 100, 5000)]
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {o} {n}" for p, o, n in more])
    for p, o, n in more:
        model.write(p, o, n)
    compare_images(uri, model.save(ref))
    assert daemon.stop()
    res = qemu_img("check", img, check=False)
    assert res.returncode == 0 and "No errors" in res.stdout, res
    assert not dirty_flag(img)
    compare_images(img, ref, fmt_a="qcow2")


def test_dirty_image_read_only(daemon, scratch):
    img = os.path.join(scratch, "t.qcow2")
    model = Reference(SIZE)
    make_dirty(img, (), OPS, model)
    before = open(img, "rb").read()
    uri = add(daemon, img, read_only=True)
    compare_images(uri, model.save(os.path.join(scratch, "ref.raw")))
    assert daemon.stop()
    assert dirty_flag(img)
    assert open(img, "rb").read() == before
