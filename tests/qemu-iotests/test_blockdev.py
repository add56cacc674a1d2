"""blockdev-add / blockdev-del / query-named-block-nodes for file, raw and null-co.

iotests groups: quick, rw
"""

import json
import os

import pytest

from iotests import (MiB, Reference, create_image, is_generated_node_name, json_arg,
                     nbd_uri, qemu_io_cmds, filter_qmp)

pytestmark = pytest.mark.quick

GE = "GenericError"


def err(resp):
    assert "error" in resp, f"expected an error, got {resp}"
    assert resp["error"]["class"] == GE
    return resp["error"]["desc"]


def nodes(d, flat=True):
    return {n["node-name"]: n for n in d.command("query-named-block-nodes", flat=flat)}


def check_node(info, drv, size, ro=False):
    assert info["drv"] == drv
    assert info["ro"] is ro
    assert info["image"]["virtual-size"] == size
    assert isinstance(info["image"]["filename"], str)


def test_file_raw_over_qmp(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB)
    daemon.command("blockdev-add", driver="file", node_name="f", filename=img)
    daemon.command("blockdev-add", driver="raw", node_name="r", file="f")
    n = nodes(daemon)
    assert set(n) == {"f", "r"}
    check_node(n["f"], "file", 4 * MiB)
    check_node(n["r"], "raw", 4 * MiB)
    assert n["f"]["image"]["filename"] == img
    assert n["f"]["file"] == img
    # Newest node first.
    assert [x["node-name"] for x in daemon.command("query-named-block-nodes")] == ["r", "f"]


def test_inline_child_gets_generated_name(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "r",
                                    "file": {"driver": "file", "filename": img}})
    names = [x["node-name"] for x in daemon.command("query-named-block-nodes")]
    assert names[0] == "r" and len(names) == 2
    assert is_generated_node_name(names[1]), names
    filtered = filter_qmp(daemon.command("query-named-block-nodes", flat=True), scratch)
    assert filtered[1]["node-name"] == "#blockNNN"
    assert filtered[1]["image"]["filename"] == "SCRATCH/a.img"


def test_file_raw_keyval_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 2 * MiB)
    d = daemon_factory("--blockdev", f"driver=file,node-name=f,filename={img},read-only=on",
                       "--blockdev", "driver=raw,node-name=r,file=f,read-only=on")
    n = nodes(d)
    check_node(n["f"], "file", 2 * MiB, ro=True)
    check_node(n["r"], "raw", 2 * MiB, ro=True)


def test_file_raw_dotted_keyval_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 2 * MiB)
    d = daemon_factory("--blockdev",
                       f"driver=raw,node-name=r,file.driver=file,file.filename={img}")
    n = nodes(d)
    check_node(n["r"], "raw", 2 * MiB)
    assert len(n) == 2


def test_file_raw_json_command_line(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 3 * MiB)
    d = daemon_factory("--blockdev", json_arg({"driver": "file", "node-name": "f",
                                               "filename": img, "aio": "threads"}),
                       "--blockdev", json_arg({"driver": "raw", "node-name": "r",
                                               "file": "f"}))
    n = nodes(d)
    check_node(n["r"], "raw", 3 * MiB)
    check_node(n["f"], "file", 3 * MiB)


def test_null_co(daemon):
    daemon.command("blockdev-add", driver="null-co", node_name="n0")
    daemon.command("blockdev-add", driver="null-co", node_name="n1", size=MiB,
                   read_zeroes=True)
    n = nodes(daemon)
    check_node(n["n0"], "null-co", 1 << 30)
    check_node(n["n1"], "null-co", MiB)
    sock = daemon.start_nbd_unix()
    daemon.export("n1", writable=True)
    # Writes are accepted and discarded; reads return zeroes.
    qemu_io_cmds(nbd_uri(sock, "n1"), ["write -P 0x11 0 64k", "read -P 0 0 64k",
                                       "read -P 0 960k 64k"])


def test_duplicate_node_name(daemon):
    daemon.command("blockdev-add", driver="null-co", node_name="a")
    assert err(daemon.cmd("blockdev-add", driver="null-co", node_name="a")) == \
        "Duplicate nodes with node-name='a'"
    assert len(nodes(daemon)) == 1


def test_missing_file(daemon, scratch):
    path = os.path.join(scratch, "nonexistent.img")
    assert err(daemon.cmd("blockdev-add", driver="file", node_name="f", filename=path)) == \
        f"Could not open '{path}': No such file or directory"
    assert nodes(daemon) == {}


def test_unknown_child_reference(daemon):
    assert err(daemon.cmd("blockdev-add", driver="raw", node_name="r", file="x")) == \
        "Cannot find device='x' nor node-name='x'"
    assert nodes(daemon) == {}


def test_raw_window_errors(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB)
    daemon.command("blockdev-add", driver="file", node_name="f", filename=img)
    assert err(daemon.cmd("blockdev-add", driver="raw", node_name="r", file="f",
                          offset=4096, size=8191)) == "Specified size is not multiple of 512"
    assert err(daemon.cmd("blockdev-add", driver="raw", node_name="r", file="f",
                          offset=4096, size=1 << 30)) == (
        "The sum of offset (4096) and size (1073741824) has to be smaller or equal to the "
        " actual size of the containing file (4194304)")
    assert set(nodes(daemon)) == {"f"}


def test_flat_and_nested_queries_agree(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r", file_node="f")
    daemon.command("blockdev-add", driver="null-co", node_name="n", size=2 * MiB)
    flat = daemon.command("query-named-block-nodes", flat=True)
    nested = daemon.command("query-named-block-nodes", flat=False)
    default = daemon.command("query-named-block-nodes")
    assert [x["node-name"] for x in flat] == ["n", "r", "f"]
    assert [x["node-name"] for x in nested] == ["n", "r", "f"]
    assert nested == default
    for a, b in zip(flat, nested):
        for key in ("node-name", "drv", "ro", "file", "encrypted"):
            assert a[key] == b[key]
        assert a["image"]["virtual-size"] == b["image"]["virtual-size"]
        assert "backing-image" not in a["image"]


def test_blockdev_del(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r", file_node="f")
    assert err(daemon.cmd("blockdev-del", node_name="f")) == "Block device f is in use"
    assert err(daemon.cmd("blockdev-del", node_name="zz")) == \
        "Failed to find node with node-name='zz'"
    assert daemon.command("blockdev-del", node_name="r") == {}
    assert set(nodes(daemon)) == {"f"}
    assert daemon.command("blockdev-del", node_name="f") == {}
    assert nodes(daemon) == {}
    # The name can be reused.
    daemon.add_file_raw(img, node="r", file_node="f")
    assert set(nodes(daemon)) == {"r", "f"}


def test_blockdev_del_inline_child_goes_with_parent(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "r",
                                    "file": {"driver": "file", "filename": img}})
    daemon.command("blockdev-del", node_name="r")
    assert nodes(daemon) == {}


def test_blockdev_del_exported(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r", file_node="f")
    daemon.start_nbd_unix()
    daemon.export("r")
    assert err(daemon.cmd("blockdev-del", node_name="r")) == "Node r is in use"
    daemon.del_export("e")
    assert daemon.command("blockdev-del", node_name="r") == {}


def test_read_only_node_refuses_writable_export(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.command("blockdev-add", driver="file", node_name="ro", filename=img,
                   read_only=True)
    assert nodes(daemon)["ro"]["ro"] is True
    daemon.start_nbd_unix()
    assert err(daemon.cmd("block-export-add", type="nbd", id="e", node_name="ro",
                          writable=True)) == "Cannot export read-only node as writable"
    assert daemon.command("query-block-exports") == []
    daemon.export("ro", writable=False)


@pytest.mark.rw
def test_raw_offset_size_window(daemon, scratch):
    size = 4 * MiB
    offset, window = 64 * 1024, MiB
    img = create_image(os.path.join(scratch, "a.img"), size,
                       patterns=[(0x11, 0, size)])
    model = Reference(size)
    model.write(0x11, 0, size)
    daemon.command("blockdev-add", driver="file", node_name="f", filename=img)
    daemon.command("blockdev-add", driver="raw", node_name="w", file="f",
                   offset=offset, size=window)
    assert nodes(daemon)["w"]["image"]["virtual-size"] == window
    sock = daemon.start_nbd_unix()
    daemon.export("w", writable=True)
    uri = nbd_uri(sock, "w")
    qemu_io_cmds(uri, ["read -P 0x11 0 1M", "write -P 0xab 0 4k",
                       "write -P 0xcd 1020k 4k"])
    model.write(0xab, offset, 4096)
    model.write(0xcd, offset + window - 4096, 4096)
    # Past the window is out of range for the client.
    assert qemu_io_cmds(uri, ["write -P 0xee 1M 4k"], check=False).returncode != 0
    assert qemu_io_cmds(uri, ["read 1020k 8k"], check=False).returncode != 0
    daemon.del_export("e")
    daemon.command("blockdev-del", node_name="w")
    daemon.command("blockdev-del", node_name="f")
    model.check_file(img)
    # And the image itself, read with qemu-io directly.
    qemu_io_cmds(img, ["read -P 0x11 0 64k", f"read -P 0xab {offset} 4k",
                       f"read -P 0x11 {offset + 4096} {window - 8192}",
                       f"read -P 0xcd {offset + window - 4096} 4k",
                       f"read -P 0x11 {offset + window} {size - offset - window}"])


def test_query_named_block_nodes_json_roundtrip(daemon):
    """Output is plain JSON objects (no sets, no NaN): dump/load round-trips."""
    daemon.command("blockdev-add", driver="null-co", node_name="n")
    out = daemon.command("query-named-block-nodes", flat=True)
    assert json.loads(json.dumps(out)) == out
