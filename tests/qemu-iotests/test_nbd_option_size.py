"""NBD handshake options of any size (docs/devel/nbd.rst, "Option sizes").

An option's payload may be up to 32 MiB long.  The server reads (and
discards) what it cannot use, answers with an error reply and the
negotiation goes on, as qemu-storage-daemon 7.2 does.  Longer payloads end
the connection (test_nbd_bad_input.py).

iotests groups: quick
"""

import os
import struct

import pytest

from iotests import MiB, blockd_only, create_image, nbd_uri, qemu_io_cmds
import nbd_client as N
from nbd_client import NBDClient

pytestmark = pytest.mark.quick

SIZE = 1 * MiB
PATTERN = 0x3A


@pytest.fixture
def env(daemon, scratch):
    img = create_image(os.path.join(scratch, "a.img"), SIZE,
                       patterns=[(PATTERN, 0, SIZE)])
    daemon.add_file_raw(img, node="r", file_node="f")
    sock = daemon.start_nbd_unix()
    daemon.export("r", export_id="e", name="disk", writable=True)
    return daemon, sock


def go_and_read(c, structured=False):
    """The negotiation continues: GO succeeds and data can be read."""
    rtype, _ = c.opt_go("disk")
    assert rtype == N.REP_ACK
    if not structured:
        err, data = c.read(0, 4096)
        assert err == 0 and data == bytes([PATTERN]) * 4096


def meta_payload(export, queries):
    e = export.encode()
    head = struct.pack(">I", len(e)) + e + struct.pack(">I", len(queries))
    return head + b"".join(struct.pack(">I", len(q)) + q for q in queries)


@pytest.mark.parametrize("option,length,reply", [
    (99, MiB, N.REP_ERR_UNSUP),                 # unknown
    (99, 32 * MiB, N.REP_ERR_UNSUP),           # the largest allowed
    (N.OPT_GO, MiB, N.REP_ERR_INVALID),         # cannot be that long
    (N.OPT_INFO, MiB, N.REP_ERR_INVALID),
    (N.OPT_LIST, MiB, N.REP_ERR_INVALID),       # must be empty
    (N.OPT_STRUCTURED_REPLY, MiB, N.REP_ERR_INVALID),
])
def test_large_option_answered(env, option, length, reply):
    d, sock = env
    with NBDClient(sock, timeout=30) as c:
        c.handshake_start()
        c.send_option(option, b"\0" * length)
        opt, rtype, _ = c.read_option_reply()
        assert (opt, rtype) == (option, reply)
        go_and_read(c)
    d.assert_alive()


def test_large_export_name_disconnects(env):
    """NBD_OPT_EXPORT_NAME has no error reply: the server hangs up."""
    d, sock = env
    with NBDClient(sock) as c:
        c.handshake_start()
        try:
            c.send_option(N.OPT_EXPORT_NAME, b"a" * MiB)
        except N.Disconnected:
            pass
        assert c.is_closed_by_peer(10)
    qemu_io_cmds(nbd_uri(sock, "disk"), [f"read -P {PATTERN:#x} 0 64k"])


@pytest.mark.parametrize("option", [N.OPT_SET_META_CONTEXT,
                                    N.OPT_LIST_META_CONTEXT])
def test_many_long_meta_queries(env, option):
    """1000 queries of 1000 bytes match nothing and are answered normally."""
    d, sock = env
    name = b"qemu:dirty-bitmap:" + b"b" * (1000 - 18)
    with NBDClient(sock, timeout=30) as c:
        c.handshake_start()
        c.structured_replies()
        c.send_option(option, meta_payload("disk", [name] * 1000))
        opt, rtype, _ = c.read_option_reply()
        assert (opt, rtype) == (option, N.REP_ACK)
        go_and_read(c, structured=True)


def test_meta_query_longer_than_any_name(env):
    """A query past the name limit is skipped; the others still match."""
    d, sock = env
    with NBDClient(sock, timeout=30) as c:
        c.handshake_start()
        c.structured_replies()
        c.send_option(N.OPT_SET_META_CONTEXT,
                      meta_payload("disk", [b"x:" + b"y" * 5000,
                                            b"base:allocation"]))
        opt, rtype, data = c.read_option_reply()
        assert (opt, rtype) == (N.OPT_SET_META_CONTEXT, N.REP_META_CONTEXT)
        assert data[4:] == b"base:allocation"
        assert c.read_option_reply()[1] == N.REP_ACK
        go_and_read(c, structured=True)


@blockd_only("qemu-storage-daemon 7.2 reads meta queries one at a time and "
             "accepts any payload size")
def test_huge_meta_option_too_big(env):
    d, sock = env
    name = b"qemu:dirty-bitmap:" + b"b" * 1000
    with NBDClient(sock, timeout=60) as c:
        c.handshake_start()
        c.structured_replies()
        c.send_option(N.OPT_SET_META_CONTEXT,
                      meta_payload("disk", [name] * 9000))
        opt, rtype, _ = c.read_option_reply()
        assert (opt, rtype) == (N.OPT_SET_META_CONTEXT, N.REP_ERR_TOO_BIG)
        go_and_read(c, structured=True)
