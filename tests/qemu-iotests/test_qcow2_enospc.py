"""qcow2 on a full filesystem: writes fail with ENOSPC, nothing leaks.

The image (512-byte clusters, so that metadata is allocated often) lives
on a 2 MiB tmpfs.  qemu-io writes at random offsets through the NBD
export until well past the point where the filesystem is full; then the
daemon quits cleanly and ``qemu-img check`` must find no leaked cluster:
every cluster allocated for a failed write (data or L2 table) has to be
freed again.

Needs root to mount the tmpfs (skipped otherwise).

iotests groups: rw
"""

import os
import random
import subprocess

import pytest

from iotests import MiB, blockd_only, nbd_uri, qemu_img, qemu_io_cmds

pytestmark = [pytest.mark.rw]

VIRTUAL_SIZE = 64 * MiB


@pytest.fixture
def small_fs(scratch):
    """A 2 MiB tmpfs, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = os.path.join(scratch, "fs")
    os.mkdir(path)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", path],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", path], check=False)


# Seeds whose write sequence leaked clusters before the fix.
@pytest.mark.parametrize("seed", [
    1,
    pytest.param(2, marks=blockd_only("qemu-storage-daemon 7.2 fails its flush at "
                                      "close here and leaks three clusters")),
    4,
])
def test_enospc_leaks_nothing(daemon_factory, small_fs, seed):
    img = os.path.join(small_fs, "full.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, VIRTUAL_SIZE)
    d = daemon_factory()
    d.command("blockdev-add", {"driver": "qcow2", "node-name": "d", "discard": "unmap",
                               "file": {"driver": "file", "filename": img}})
    sock = d.start_nbd_unix()
    d.export("d", writable=True)

    rng = random.Random(seed)
    cmds = [f"write -P 0x33 {rng.randrange(0, VIRTUAL_SIZE // 512) * 512} "
            f"{rng.randint(1, 64) * 512}" for _ in range(400)]
    res = qemu_io_cmds(nbd_uri(sock, "d"), cmds, check=False)
    assert "No space left on device" in res.output, "the filesystem never filled up"
    assert d.stop(), f"unclean shutdown: {d.stderr()}"

    check = qemu_img("check", img, check=False)
    assert check.returncode == 0, check
    assert "No errors were found" in check.output, check
