"""BLOCK_IMAGE_CORRUPTED: qcow2 reports run-time corruption to QMP.

An L2 entry is pointed at the active L1 table, so that a guest write to
that cluster would overwrite metadata.  The overlap check refuses it,
marks the image corrupt and sends the event with QEMU's members; the
same test runs against qemu-storage-daemon 7.2.

iotests groups: rw, quick
"""

import os
import struct

import pytest

from iotests import MiB, nbd_uri, qemu_img, qemu_io, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

CLUSTER = 64 * 1024
OFFSET_MASK = 0x00fffffffffffe00
COPIED = 1 << 63


def l2_entry_to_l1_table(img):
    """Point guest cluster 0 at the L1 table; return the L1 offset."""
    with open(img, "r+b") as f:
        f.seek(40)
        l1_offset, = struct.unpack(">Q", f.read(8))
        f.seek(l1_offset)
        l2_offset = struct.unpack(">Q", f.read(8))[0] & OFFSET_MASK
        f.seek(l2_offset)
        f.write(struct.pack(">Q", COPIED | l1_offset))
    return l1_offset


def test_overlapping_write_sends_event(daemon, scratch):
    img = os.path.join(scratch, "t.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, 16 * MiB)
    qemu_io("-f", "qcow2", "-c", f"write -q -P 1 0 {CLUSTER}", img)
    l1_offset = l2_entry_to_l1_table(img)

    daemon.command("blockdev-add", {
        "driver": "qcow2", "node-name": "q",
        "file": {"driver": "file", "filename": img}})
    sock = daemon.start_nbd_unix()
    daemon.export("q", name="q", writable=True)
    res = qemu_io_cmds(nbd_uri(sock, "q"), [f"write -P 2 0 {CLUSTER}"],
                       check=False)
    assert "error" in res.output.lower(), res

    ev = daemon.qmp.wait_event("BLOCK_IMAGE_CORRUPTED", timeout=30)
    assert ev["data"] == {
        "device": "", "node-name": "q",
        "msg": "Preventing invalid write on metadata (overlaps with "
               "active L1 table)",
        "offset": l1_offset, "size": CLUSTER, "fatal": True}

    # Reported once: a second refused write sends no second event.
    qemu_io_cmds(nbd_uri(sock, "q"), [f"write -P 3 0 {CLUSTER}"], check=False)
    assert not [e for e in daemon.qmp.get_events(wait=1.0)
                if e["event"] == "BLOCK_IMAGE_CORRUPTED"]
