"""NBD_FLAG_CAN_MULTI_CONN, as nbdinfo sees it.

QEMU 7.2 advertises it on every export unless the server takes only one
connection; blockd does the same by default (multi-conn=auto), and also
takes multi-conn=on/off (a blockd extension, see
docs/interop/qmp-compatibility.rst).

iotests groups: quick
"""

import json
import os

import pytest

from iotests import MiB, blockd_only, create_image, nbd_uri, require_tool, run

pytestmark = pytest.mark.quick


def can_multi_conn(sock, name):
    require_tool("nbdinfo")
    res = run(["nbdinfo", "--json", nbd_uri(sock, name)])
    return json.loads(res.stdout)["exports"][0]["can_multi_conn"]


def start_server(daemon, scratch, **server_opts):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    daemon.add_file_raw(img, node="r")
    return daemon.start_nbd_unix(**server_opts)


def export(daemon, export_id, writable, **opts):
    daemon.command("block-export-add", {
        "type": "nbd", "id": export_id, "node-name": "r", "name": export_id,
        "writable": writable, **opts})


@pytest.mark.parametrize("server_opts,expected", [
    ({}, True),
    ({"max_connections": 2}, True),
    ({"max_connections": 1}, False),
])
def test_default_follows_server(daemon, scratch, server_opts, expected):
    sock = start_server(daemon, scratch, **server_opts)
    export(daemon, "rw", True)
    export(daemon, "ro", False)
    assert can_multi_conn(sock, "rw") is expected
    assert can_multi_conn(sock, "ro") is expected


@blockd_only("multi-conn is not an export option in QEMU 7.2")
@pytest.mark.parametrize("value,server_opts,expected", [
    ("auto", {}, True),
    ("auto", {"max_connections": 1}, False),
    ("on", {"max_connections": 1}, True),
    ("off", {}, False),
])
def test_multi_conn_option(daemon, scratch, value, server_opts, expected):
    sock = start_server(daemon, scratch, **server_opts)
    for writable in (True, False):
        name = "rw" if writable else "ro"
        export(daemon, name, writable, **{"multi-conn": value})
        assert can_multi_conn(sock, name) is expected


def test_multi_conn_refused_value(daemon, scratch):
    start_server(daemon, scratch)
    resp = daemon.cmd("block-export-add", {
        "type": "nbd", "id": "e", "node-name": "r", "multi-conn": "maybe"})
    assert resp["error"]["class"] == "GenericError"
