"""Block status (NBD base:allocation, qemu:allocation-depth) by nbdinfo --map.

The file driver answers from SEEK_DATA/SEEK_HOLE; raw shifts by its offset;
null-co has no data (and reads as zero only with read-zeroes=on); a qcow2
backing chain reports the depth of the layer that allocates each range.

iotests groups: quick
"""

import os

import pytest

from iotests import MiB, create_image, nbd_uri, nbdinfo_map, qemu_io_cmds, run

pytestmark = pytest.mark.quick

HOLE, ZERO = 1, 2


def sparse_file(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
    if writes:
        qemu_io_cmds(path, [f"write -q -P {p:#x} {o} {ln}" for p, o, ln in writes])
    return path


def block_map(uri):
    return nbdinfo_map(uri)


@pytest.fixture
def server(daemon):
    sock = daemon.start_nbd_unix()
    return daemon, sock


def test_sparse_file(server, scratch):
    d, sock = server
    path = sparse_file(os.path.join(scratch, "s.img"), 4 * MiB,
                       [(1, MiB, 64 * 1024), (2, 3 * MiB, 4096)])
    d.add_file_raw(path, node="r")
    d.export("r")
    assert block_map(nbd_uri(sock, "r")) == [
        (0, MiB, HOLE | ZERO),
        (MiB, 64 * 1024, 0),
        (MiB + 64 * 1024, 2 * MiB - 64 * 1024, HOLE | ZERO),
        (3 * MiB, 4096, 0),
        (3 * MiB + 4096, MiB - 4096, HOLE | ZERO),
    ]


def test_fully_sparse_and_fully_allocated(server, scratch):
    d, sock = server
    sparse = sparse_file(os.path.join(scratch, "s.img"), 2 * MiB, [])
    full = create_image(os.path.join(scratch, "f.img"), 2 * MiB, preallocation="full")
    d.add_file_raw(sparse, node="s")
    d.add_file_raw(full, node="f")
    d.export("s", export_id="e1")
    d.export("f", export_id="e2")
    assert block_map(nbd_uri(sock, "s")) == [(0, 2 * MiB, HOLE | ZERO)]
    assert block_map(nbd_uri(sock, "f")) == [(0, 2 * MiB, 0)]


def test_file_node_exported_directly(server, scratch):
    d, sock = server
    path = sparse_file(os.path.join(scratch, "s.img"), MiB, [(7, 512 * 1024, 4096)])
    d.command("blockdev-add", driver="file", node_name="f", filename=path)
    d.export("f")
    assert block_map(nbd_uri(sock, "f")) == [
        (0, 512 * 1024, HOLE | ZERO), (512 * 1024, 4096, 0),
        (512 * 1024 + 4096, 512 * 1024 - 4096, HOLE | ZERO)]


def test_raw_window_shifts_map(server, scratch):
    d, sock = server
    path = sparse_file(os.path.join(scratch, "w.img"), 4 * MiB,
                       [(1, MiB, 64 * 1024), (2, 3 * MiB, 4096)])
    d.command("blockdev-add", driver="file", node_name="wf", filename=path)
    d.command("blockdev-add", driver="raw", node_name="w", file="wf",
              offset=MiB - 64 * 1024, size=MiB)
    d.export("w")
    assert block_map(nbd_uri(sock, "w")) == [
        (0, 64 * 1024, HOLE | ZERO), (64 * 1024, 64 * 1024, 0),
        (128 * 1024, MiB - 128 * 1024, HOLE | ZERO)]


def test_null_co(server):
    d, sock = server
    d.command("blockdev-add", driver="null-co", node_name="n", size=MiB)
    d.command("blockdev-add", driver="null-co", node_name="nz", size=MiB, read_zeroes=True)
    d.export("n", export_id="e1")
    d.export("nz", export_id="e2")
    assert block_map(nbd_uri(sock, "n")) == [(0, MiB, HOLE)]
    assert block_map(nbd_uri(sock, "nz")) == [(0, MiB, HOLE | ZERO)]


def test_map_follows_writes_and_unmap(server, scratch):
    d, sock = server
    path = sparse_file(os.path.join(scratch, "s.img"), 2 * MiB, [])
    d.add_file_raw(path, node="r", discard="unmap", raw_opts={"discard": "unmap"})
    d.export("r", writable=True)
    uri = nbd_uri(sock, "r")
    qemu_io_cmds(uri, ["write -q -P 3 0 1M"])
    assert block_map(uri) == [(0, MiB, 0), (MiB, MiB, HOLE | ZERO)]
    qemu_io_cmds(uri, ["write -q -z -u 256k 256k", "discard -q 768k 256k"])
    assert block_map(uri) == [(0, 256 * 1024, 0), (256 * 1024, 256 * 1024, HOLE | ZERO),
                              (512 * 1024, 256 * 1024, 0),
                              (768 * 1024, MiB + 256 * 1024, HOLE | ZERO)]


def depth_map(uri):
    return nbdinfo_map(uri, "qemu:allocation-depth")


def qcow2_chain(scratch, base_size=4 * MiB):
    """base <- mid <- top, each layer allocating different ranges."""
    base, mid, top = (os.path.join(scratch, f"{n}.qcow2")
                      for n in ("base", "mid", "top"))
    run(["qemu-img", "create", "-q", "-f", "qcow2", base, str(base_size)])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
         mid, str(4 * MiB)])
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2",
         top, str(4 * MiB)])
    if base_size == 4 * MiB:
        run(["qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 4 3M 1M", base])
    else:
        run(["qemu-io", "-c", "write -P 1 0 4k", base])
    run(["qemu-io", "-c", "write -P 2 1M 1M", "-c", "write -z 3M 512k", mid])
    run(["qemu-io", "-c", "write -P 3 2M 512k", top])
    return top


def export_chain(daemon, top):
    daemon.command("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "filename": top}})
    sock = daemon.start_nbd_unix()
    daemon.command("block-export-add", {
        "type": "nbd", "id": "e", "node-name": "top",
        "allocation-depth": True})
    return nbd_uri(sock, "top")


def test_allocation_depth_three_levels(daemon, scratch):
    """Each backing level reports its own depth, as qemu-storage-daemon."""
    uri = export_chain(daemon, qcow2_chain(scratch))
    K = 1024
    assert depth_map(uri) == [
        (0, MiB, 3),                        # base
        (MiB, MiB, 2),                      # mid
        (2 * MiB, 512 * K, 1),              # top
        (2 * MiB + 512 * K, 512 * K, 0),    # nowhere
        (3 * MiB, 512 * K, 2),              # mid's zero clusters
        (3 * MiB + 512 * K, 512 * K, 3),    # base
    ]
    assert block_map(uri) == [
        (0, 2 * MiB + 512 * K, 0),
        (2 * MiB + 512 * K, MiB, HOLE | ZERO),
        (3 * MiB + 512 * K, 512 * K, 0),
    ]


def test_allocation_depth_short_backing(daemon, scratch):
    """Past the end of a short base, its zeroes count as the base's."""
    uri = export_chain(daemon, qcow2_chain(scratch, base_size=2 * MiB))
    K = 1024
    assert depth_map(uri) == [
        (0, 64 * K, 3),                     # base (one cluster)
        (64 * K, MiB - 64 * K, 0),          # nowhere (inside the base)
        (MiB, MiB, 2),                      # mid
        (2 * MiB, 512 * K, 1),              # top
        (2 * MiB + 512 * K, 512 * K, 3),    # past the base's end
        (3 * MiB, 512 * K, 2),              # mid's zero clusters
        (3 * MiB + 512 * K, 512 * K, 3),    # past the base's end
    ]
