"""qcow2 compressed clusters: read through NBD, and partial overwrites.

A raw image with a known pattern (repeating bytes, text-like runs that
compress well, random bytes that do not, and zeroes) is converted with
``qemu-img convert -c`` into a compressed qcow2 image, deflate (zlib) or
zstd, at several cluster sizes.  The daemon exports it, and what NBD
reads must equal the raw image.  Then parts are overwritten through NBD
(inside compressed clusters, so the rest of the cluster is decoded for
copy-on-write, across cluster boundaries, whole clusters, zeroes); the
result must equal an in-test model, online and offline, and ``qemu-img
check`` must find no errors.

iotests groups: rw, quick
"""

import os
import random
import struct
from typing import Any

import pytest

from iotests import KiB, MiB, Reference, compare_images, nbd_uri, qemu_img, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 8 * MiB


def patterned_raw(path: str, seed: int = 7) -> Reference:
    """Write the source image; return its model."""
    rng = random.Random(seed)
    ref = Reference(SIZE)
    off = 0
    while off < SIZE:
        ln = min(rng.choice([3000, 40 * KiB, 100 * KiB, 300 * KiB]), SIZE - off)
        kind = rng.choice(["byte", "text", "random", "zero"])
        if kind == "byte":
            ref.data[off:off + ln] = bytes([rng.randrange(1, 256)]) * ln
        elif kind == "text":
            words = b"qcow2 cluster deflate zstd refcount backing "
            ref.data[off:off + ln] = (words * (ln // len(words) + 1))[:ln]
        elif kind == "random":
            ref.data[off:off + ln] = rng.randbytes(ln)
        off += ln
    ref.save(path)
    return ref


def make_compressed(scratch: str, compression: str, cluster_size: int):
    raw = os.path.join(scratch, "src.raw")
    ref = patterned_raw(raw)
    img = os.path.join(scratch, "c.qcow2")
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2",
             "-o", f"compression_type={compression},cluster_size={cluster_size}",
             raw, img)
    out = qemu_img("check", img).stdout
    assert "compressed clusters" in out and " 0.00% compressed" not in out, out
    return img, raw, ref


def export(daemon: Any, img: str, writable: bool) -> str:
    daemon.command("blockdev-add", {
        "driver": "qcow2", "node-name": "q", "read-only": not writable,
        "file": {"driver": "file", "filename": img}})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=writable)
    return nbd_uri(sock, "q")


CASES = [("zlib", 65536), ("zstd", 65536), ("zlib", 4096), ("zstd", 2 * MiB),
         ("zlib", 512)]


@pytest.mark.parametrize("compression,cluster_size", CASES,
                         ids=[f"{c}-{s}" for c, s in CASES])
def test_read_compressed(daemon: Any, scratch: str, compression: str,
                         cluster_size: int) -> None:
    img, raw, _ = make_compressed(scratch, compression, cluster_size)
    uri = export(daemon, img, writable=False)
    compare_images(uri, raw)
    # Unaligned reads within and across compressed clusters.
    res = qemu_io_cmds(uri, ["read -q -P 0 0 0"] +
                       [f"read -q -v {off} 777" for off in (1, cluster_size - 100, 3 * MiB + 5)],
                       extra=["-r"])
    assert res.returncode == 0


@pytest.mark.parametrize("compression,cluster_size", CASES[:3],
                         ids=[f"{c}-{s}" for c, s in CASES[:3]])
def test_overwrite_compressed(daemon: Any, scratch: str, compression: str,
                              cluster_size: int) -> None:
    img, raw, ref = make_compressed(scratch, compression, cluster_size)
    uri = export(daemon, img, writable=True)
    cmds = []
    for pat, off, ln in [(0x11, 100, 200), (0x22, cluster_size - 10, 30),
                         (0x33, 5 * cluster_size, cluster_size),
                         (0x44, MiB + 3, 3 * cluster_size + 1),
                         (0x55, SIZE - 700, 700)]:
        cmds.append(f"write -q -P {pat:#x} {off} {ln}")
        ref.write(pat, off, ln)
    cmds.append(f"write -q -z {2 * MiB + 1000} 5000")
    ref.zero(2 * MiB + 1000, 5000)
    qemu_io_cmds(uri, cmds)
    model = ref.save(os.path.join(scratch, "model.raw"))
    compare_images(uri, model)
    assert daemon.stop()
    res = qemu_img("check", img, check=False)
    assert res.returncode == 0 and "No errors were found" in res.stdout, res
    compare_images(img, model, fmt_a="qcow2")


def first_compressed(img: str):
    """(guest offset, host offset) of the first compressed cluster."""
    with open(img, "rb") as f:
        hdr = f.read(64)
        cluster_bits = struct.unpack(">I", hdr[20:24])[0]
        l1_size, l1_offset = struct.unpack(">IQ", hdr[36:48])
        f.seek(l1_offset)
        l1 = struct.unpack(f">{l1_size}Q", f.read(8 * l1_size))
        entries = 1 << (cluster_bits - 3)
        for i, l1e in enumerate(l1):
            l2_offset = l1e & 0x00fffffffffffe00
            if not l2_offset:
                continue
            f.seek(l2_offset)
            l2 = struct.unpack(f">{entries}Q", f.read(8 * entries))
            for j, l2e in enumerate(l2):
                if l2e & (1 << 62):
                    host = l2e & ((1 << (62 - (cluster_bits - 8))) - 1)
                    return ((i * entries + j) << cluster_bits), host
    raise AssertionError("no compressed cluster")


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_corrupt_compressed_data_is_eio(daemon: Any, scratch: str, compression: str) -> None:
    img, raw, _ = make_compressed(scratch, compression, 65536)
    guest, host = first_compressed(img)
    with open(img, "r+b") as f:
        f.seek(host)
        f.write(b"\xff" * 64)
    uri = export(daemon, img, writable=False)
    res = qemu_io_cmds(uri, [f"read -q {guest} 512"], check=False, extra=["-r"])
    assert "Input/output error" in res.output, res
    # The other clusters still read.
    res = qemu_io_cmds(uri, [f"read -q {guest + 65536} 512"], check=False, extra=["-r"])
    assert "error" not in res.output, res
