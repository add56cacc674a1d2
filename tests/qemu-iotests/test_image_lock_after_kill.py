"""A killed daemon's image locks are gone as soon as it has been reaped.

A supervisor restarts a daemon that died the moment waitpid() returns; if
the dead process's image locks outlived it, even briefly, the new daemon
(or qemu-img) would be refused the image.  So in each round a daemon
exports an image while clients keep writes in flight, is killed with
SIGKILL and reaped, and then, on the first try: no byte lock of the image
protocol is held any more, and qemu-io can open the image for writing.

iotests groups: rw
"""

import fcntl
import os
import struct
import time

import pytest

from iotests import MiB, create_image, nbd_uri, qemu_io, qemu_io_popen

pytestmark = [pytest.mark.rw]

ROUNDS = 40
IMAGE_SIZE = 64 * MiB
WRITERS = 3
WRITES_PER_WRITER = 200
WRITE_SIZE = 64 * 1024
FIRST_WRITE_TIMEOUT = 10.0

# QEMU's lock bytes: one per permission (100 + i) and per unshared
# permission (200 + i).
LOCK_BYTES = [*range(100, 104), *range(200, 204)]
FLOCK = "hh4xqqi4x"      # struct flock on 64-bit Linux


def held_lock_bytes(path):
    """The lock bytes some process holds on ``path`` (F_OFD_GETLK)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        held = []
        for byte in LOCK_BYTES:
            probe = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
            res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
            if struct.unpack(FLOCK, res)[0] != fcntl.F_UNLCK:
                held.append(byte)
        return held
    finally:
        os.close(fd)


def writer_cmds(rnd, w):
    """Writes all over the image, submitted without waiting, then a flush."""
    cmds = []
    for i in range(WRITES_PER_WRITER):
        offset = ((rnd * 7919 + w * 104729 + i * 613) * WRITE_SIZE) % IMAGE_SIZE
        cmds.append(f"aio_write -q -P 0x{w + 1:x} {offset} {WRITE_SIZE}")
    cmds.append("aio_flush")
    return cmds


def wait_for_first_write(img):
    """Return once writes reach the (freshly emptied) image file."""
    deadline = time.monotonic() + FIRST_WRITE_TIMEOUT
    while os.stat(img).st_blocks == 0:
        if time.monotonic() > deadline:
            pytest.fail("no write reached the image")
        time.sleep(0.001)


def test_locks_released_when_killed(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), IMAGE_SIZE)
    failures = []
    for rnd in range(ROUNDS):
        os.truncate(img, 0)
        os.truncate(img, IMAGE_SIZE)
        d = daemon_factory(subdir=f"r{rnd}")
        d.add_file_raw(img, node="r")
        sock = d.start_nbd_unix()
        d.export("r", writable=True)
        writers = [qemu_io_popen(nbd_uri(sock, "r"), writer_cmds(rnd, w))
                   for w in range(WRITERS)]
        try:
            wait_for_first_write(img)
            d.kill()                      # SIGKILL, then waitpid()
            held = held_lock_bytes(img)
            res = qemu_io("-f", "raw", "-c", "write -q 0 512", img, check=False)
        finally:
            for p in writers:
                p.kill()
                p.wait()
        if held or res.returncode != 0:
            failures.append(f"round {rnd}: bytes still locked: {held}, "
                            f"qemu-io: {res.stderr.strip()!r}")
    assert not failures, "\n".join(failures)
