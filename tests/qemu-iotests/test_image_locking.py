"""Image locking between processes.

blockd advertises the permissions its users take on a file with QEMU's
byte-lock protocol, so QEMU's tools refuse what would conflict with an
export (an NBD export lets others write, but not resize the image), and
may go ahead once the export is gone.  Both daemons must behave the same.
blockd's side of the check (refusing what another process holds) is
covered by tests/unit/test-file-lock.c.

iotests groups: quick, rw
"""

import os

import pytest

from iotests import MiB, create_image, nbd_uri, qemu_img, qemu_io, qemu_io_cmds

pytestmark = [pytest.mark.quick, pytest.mark.rw]


def virtual_size(img):
    return int(qemu_img("info", "-U", "--output=json", img).stdout.split(
        '"virtual-size": ')[1].split(",")[0])


def test_resize_refused_while_exported(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r")
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)

    res = qemu_img("resize", "-f", "raw", img, "2M", check=False)
    assert res.returncode != 0
    assert 'Failed to get "resize" lock' in res.stderr
    assert "Is another process using the image" in res.stderr
    assert virtual_size(img) == MiB

    # Writers are shared: a second writer and the export see each other.
    qemu_io("-f", "raw", "-c", "write -q -P 0x11 0 512", img)
    qemu_io_cmds(nbd_uri(sock, "r"), ["read -q -P 0x11 0 512"])


def test_locks_follow_the_export(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r")
    # A node nobody uses takes no permissions, hence no locks.
    qemu_img("resize", "-f", "raw", img, "2M")
    daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    assert qemu_img("resize", "-f", "raw", img, "3M", check=False).returncode != 0
    daemon.del_export("e")
    qemu_img("resize", "-f", "raw", img, "3M")
    assert virtual_size(img) == 3 * MiB


def test_read_only_qcow2_beside_a_writer(daemon_factory, scratch):
    """A read-only qcow2 never lets others write its file: QEMU's message.

    Within one daemon and from a second one, the first conflict reported is
    the "write" sharing, as QEMU checks every permission taken before every
    one not shared.
    """
    img = os.path.join(scratch, "a.qcow2")
    qemu_img("create", "-f", "qcow2", img, str(MiB))
    writer = daemon_factory()
    writer.command("blockdev-add", {"driver": "qcow2", "node-name": "w",
                                    "file": {"driver": "file", "filename": img}})
    reader = daemon_factory()
    for d in (writer, reader):
        resp = d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "r", "read-only": True,
                                      "file": {"driver": "file", "filename": img,
                                               "read-only": True}})
        assert resp["error"]["desc"] == 'Failed to get shared "write" lock', resp
    # qemu-img without -U is refused the same way; with -U it reads.
    res = qemu_img("info", img, check=False)
    assert res.returncode != 0 and 'Failed to get shared "write" lock' in res.stderr
    qemu_img("info", "-U", img)
