"""Unaligned I/O on an O_DIRECT (cache.direct=on) file node.

NBD clients may write any byte range; with O_DIRECT the file driver must do
read-modify-write of the surrounding aligned blocks, and two such requests
touching the same block must not undo each other.

iotests groups: quick, rw
"""

import os

import pytest

import iotests
from iotests import MiB, Reference, compare_images, create_image, nbd_uri, qemu_io_cmds, \
    qemu_io_popen, wait_all

pytestmark = [pytest.mark.quick, pytest.mark.rw]

SIZE = 2 * MiB
FILL = 0x11


def o_direct_supported(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


@pytest.fixture(params=["threads", "io_uring"])
def direct_export(request, daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), SIZE, patterns=[(FILL, 0, SIZE)])
    if not o_direct_supported(img):
        pytest.skip("scratch filesystem does not support O_DIRECT")
    resp = daemon.cmd("blockdev-add", {"driver": "file", "node-name": "f", "filename": img,
                                       "aio": request.param, "cache": {"direct": True}})
    if "error" in resp and request.param == "io_uring" and iotests.is_reference():
        pytest.skip(f"reference daemon cannot use io_uring here: {resp['error']['desc']}")
    assert "return" in resp, resp
    daemon.command("blockdev-add", driver="raw", node_name="r", file="f")
    node = {n["node-name"]: n for n in daemon.command("query-named-block-nodes")}["f"]
    assert node["cache"]["direct"] is True
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    model = Reference(SIZE)
    model.write(FILL, 0, SIZE)
    return daemon, img, nbd_uri(sock, "r"), model


UNALIGNED = [
    (0x5A, 1, 3),
    (0x6B, 513, 1000),
    (0x7C, 4095, 2),
    (0x8D, 8191, 4098),          # spans three 4K blocks
    (0x9E, 65536 - 7, 14),
    (0xAF, 100000, 1),
    (0xB0, SIZE - 3, 3),         # the last bytes of the image
]


def test_unaligned_writes(direct_export, scratch):
    daemon, img, uri, model = direct_export
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {o} {ln}" for p, o, ln in UNALIGNED])
    for p, o, ln in UNALIGNED:
        model.write(p, o, ln)
    # Read back through the export, unaligned too, including the neighbours.
    qemu_io_cmds(uri, [f"read -q -P {p:#x} {o} {ln}" for p, o, ln in UNALIGNED] +
                 ["read -q -P 0x11 0 1", "read -q -P 0x11 4 509", "read -q -P 0x11 1513 2582"])
    daemon.del_export("e")
    compare_images(img, model.save(os.path.join(scratch, "ref.img")))


def test_unaligned_reads(direct_export):
    daemon, img, uri, model = direct_export
    qemu_io_cmds(uri, ["write -q -P 0x22 4096 4096"])
    qemu_io_cmds(uri, ["read -q -P 0x11 4093 3", "read -q -P 0x22 4096 1",
                       "read -q -P 0x22 4097 4094", "read -q -P 0x11 8192 511",
                       "read -q -P 0x22 5000 3000"])


def test_unaligned_zero_writes(direct_export, scratch):
    daemon, img, uri, model = direct_export
    qemu_io_cmds(uri, ["write -q -z 3 5000", "write -q -z 70001 3"])
    model.zero(3, 5000)
    model.zero(70001, 3)
    daemon.del_export("e")
    model.check_file(img)


def test_concurrent_unaligned_same_block(direct_export, scratch):
    """Two clients write interleaved byte ranges of the same 4K blocks."""
    daemon, img, uri, model = direct_export
    stride, piece = 200, 100
    cmds = {0: [], 1: []}
    for blk in range(4):                       # four 4K blocks
        base = blk * 4096
        for k in range(4096 // stride):
            for who in (0, 1):
                off = base + k * stride + who * piece
                if off + piece > base + 4096:
                    continue
                pat = 0xA0 + who * 0x10 + blk
                cmds[who].append(f"aio_write -q -P {pat:#x} {off} {piece}")
                model.write(pat, off, piece)
    for who in (0, 1):
        cmds[who].append("aio_flush")
    procs = [qemu_io_popen(uri, cmds[0]), qemu_io_popen(uri, cmds[1])]
    wait_all(procs)
    daemon.del_export("e")
    compare_images(img, model.save(os.path.join(scratch, "ref.img")))


def test_concurrent_unaligned_repeated(direct_export, scratch):
    """Repeat the race a few rounds with single-byte writes at odd offsets."""
    daemon, img, uri, model = direct_export
    for rnd in range(3):
        cmds = {0: [], 1: []}
        for i in range(256):
            who = i % 2
            off = 12288 + i * 7 + rnd
            pat = 0x30 + rnd * 2 + who
            cmds[who].append(f"aio_write -q -P {pat:#x} {off} 3")
            model.write(pat, off, 3)
        # Offsets advance by 7 and writes are 3 long: ranges never overlap.
        for who in (0, 1):
            cmds[who].append("aio_flush")
        wait_all([qemu_io_popen(uri, cmds[0]), qemu_io_popen(uri, cmds[1])])
    daemon.del_export("e")
    model.check_file(img)


# Requests that start on a block boundary and end inside a block: the
# middle (the NBD request buffer, which is aligned) goes to the file as it
# is, and only the tail block is bounced, so the file node gets a vector of
# two elements (preadv/pwritev).
ALIGNED_START = [
    (0x3A, 4096, 5000),          # one full block, then 904 bytes
    (0x4B, 16384, 12289),        # three full blocks, then 1 byte
    (0x5C, 65536, 700),          # within the second 512-byte block
]


def test_aligned_start_unaligned_end(direct_export, scratch):
    daemon, img, uri, model = direct_export
    qemu_io_cmds(uri, [f"write -q -P {p:#x} {o} {ln}" for p, o, ln in ALIGNED_START])
    for p, o, ln in ALIGNED_START:
        model.write(p, o, ln)
    qemu_io_cmds(uri, [f"read -q -P {p:#x} {o} {ln}" for p, o, ln in ALIGNED_START] +
                 ["read -q -P 0x11 9096 100", "read -q -P 0x11 28673 511",
                  "read -q -P 0x11 66236 324"])
    daemon.del_export("e")
    compare_images(img, model.save(os.path.join(scratch, "ref.img")))


@pytest.mark.parametrize("aio", ["threads", "io_uring"])
def test_read_across_end_of_file(daemon, scratch, aio):
    """A file whose size is not a multiple of the alignment: a read of its
    last partial block returns short, and the rest (past the end) reads as
    zeroes.  The raw node's offset makes the export end with the file."""
    tail = 100
    img = create_image(os.path.join(scratch, "odd.img"), MiB + 512,
                       patterns=[(0x66, 0, MiB + 512)])
    os.truncate(img, MiB + tail)        # qemu-img rounds sizes up to 512
    if not o_direct_supported(img):
        pytest.skip("scratch filesystem does not support O_DIRECT")
    resp = daemon.cmd("blockdev-add", {"driver": "file", "node-name": "f", "filename": img,
                                       "aio": aio, "cache": {"direct": True}})
    if "error" in resp and aio == "io_uring" and iotests.is_reference():
        pytest.skip(f"reference daemon cannot use io_uring here: {resp['error']['desc']}")
    assert "return" in resp, resp
    daemon.command("blockdev-add", driver="raw", node_name="r", file="f", offset=tail)
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)      # qemu-io opens read-write
    # Export bytes [MiB - 612, MiB) are file bytes [MiB - 512, MiB + 100):
    # an aligned start, and a tail block that the file ends in.
    qemu_io_cmds(nbd_uri(sock, "r"), [f"read -q -P 0x66 {MiB - 612} 612",
                                      f"read -q -P 0x66 {MiB - 5000} 5000"])
