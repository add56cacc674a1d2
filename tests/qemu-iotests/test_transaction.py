"""The transaction command with dirty-bitmap actions.

Runs against blockd and qemu-storage-daemon with the same expectations:
QEMU's messages, all-or-nothing effects, and one point in time across
actions while a client keeps writing.
"""

import os
import random

import pytest

import iotests
from iotests import nbd_uri, qemu_img, qemu_io_popen, wait_all
from test_dirty_bitmaps import bitmaps, expected_sha256, granules, open_qcow2, sha

MiB = 1024 * 1024
SIZE = 64 * MiB


def action(kind, **data):
    return {"type": kind, "data": data}


def transaction(d, actions, **props):
    args = {"actions": actions}
    if props:
        args["properties"] = props
    return d.cmd("transaction", args)


@pytest.fixture
def img(scratch):
    path = os.path.join(scratch, "a.qcow2")
    qemu_img("create", "-f", "qcow2", path, str(SIZE))
    return path


def state(d, node="q"):
    """Every bitmap of the node: its query entry and its digest."""
    return {b["name"]: (b, sha(d, node, b["name"])) for b in bitmaps(d, node)}


def test_messages(daemon, img):
    open_qcow2(daemon, img)
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "a"})
    add_t1 = action("block-dirty-bitmap-add", node="q", name="t1")
    cases = [
        ([add_t1, action("abort")], {}, "Transaction aborted using Abort action"),
        ([action("abort")], {"completion-mode": "grouped"},
         "Transaction aborted using Abort action"),
        ([add_t1, add_t1], {}, "Bitmap already exists: t1"),
        ([action("block-dirty-bitmap-remove", node="q", name="a"),
          action("block-dirty-bitmap-clear", node="q", name="a")], {},
         "Bitmap 'a' is currently in use by another operation and cannot be used"),
    ]
    for actions, props, msg in cases:
        resp = transaction(daemon, actions, **props)
        assert resp.get("error", {}).get("desc") == msg, (actions, resp)
    resp = transaction(daemon, [action("nosuch")])
    assert resp["error"]["desc"] == "Parameter 'type' does not accept value 'nosuch'"
    assert "return" in transaction(daemon, [])
    # The refused transactions left nothing behind.
    assert [b["name"] for b in bitmaps(daemon, "q")] == ["a"]


@iotests.blockd_only("qemu-storage-daemon 7.2 crashes: the abort step of "
                     "these actions uses the bitmap their prepare did not find")
def test_unknown_bitmap_or_node(daemon, img):
    open_qcow2(daemon, img)
    daemon.command("block-dirty-bitmap-add", {"node": "q", "name": "a"})
    cases = [
        (action("block-dirty-bitmap-enable", node="q", name="nosuch"),
         "Dirty bitmap 'nosuch' not found"),
        (action("block-dirty-bitmap-disable", node="nosuch", name="a"), "Node 'nosuch' not found"),
        (action("block-dirty-bitmap-clear", node="q", name="nosuch"),
         "Dirty bitmap 'nosuch' not found"),
        (action("block-dirty-bitmap-remove", node="q", name="nosuch"),
         "Dirty bitmap 'nosuch' not found"),
        (action("block-dirty-bitmap-merge", node="nosuch", target="a", bitmaps=["a"]),
         "Node 'nosuch' not found"),
        (action("block-dirty-bitmap-merge", node="q", target="a", bitmaps=["nosuch"]),
         "Dirty bitmap 'nosuch' not found"),
    ]
    for act, msg in cases:
        resp = transaction(daemon, [action("block-dirty-bitmap-add", node="q", name="t"), act])
        assert resp.get("error", {}).get("desc") == msg, (act, resp)
    assert [b["name"] for b in bitmaps(daemon, "q")] == ["a"]


def test_failed_transaction_changes_nothing(daemon_factory, img):
    qemu_img("bitmap", "--add", img, "stored")
    d = daemon_factory()
    open_qcow2(d, img)
    sock = d.start_nbd_unix()
    d.export("q", writable=True)
    for name, kw in (("a", {}), ("m", {"granularity": 4096}), ("off", {"disabled": True}),
                     ("on", {})):
        d.command("block-dirty-bitmap-add", {"node": "q", "name": name, **kw})
    iotests.qemu_io_cmds(nbd_uri(sock, "q"), ["write -q -P 1 0 64k", "write -q -P 2 5M 4k"])
    before = state(d)
    every_action = [
        action("block-dirty-bitmap-add", node="q", name="new"),
        action("block-dirty-bitmap-clear", node="q", name="a"),
        action("block-dirty-bitmap-merge", node="q", target="m", bitmaps=["a", "stored"]),
        action("block-dirty-bitmap-disable", node="q", name="on"),
        action("block-dirty-bitmap-enable", node="q", name="off"),
        action("block-dirty-bitmap-remove", node="q", name="stored"),
    ]
    for last in (action("abort"), action("block-dirty-bitmap-clear", node="q", name="nosuch")):
        resp = transaction(d, every_action + [last])
        assert "error" in resp, resp
        assert state(d) == before
    # The persistent bitmap's stored copy is back at the next close.
    assert d.stop()
    out = qemu_img("info", "--output=json", img).stdout
    assert '"name": "stored"' in out


def test_transaction_applies_every_action(daemon, img):
    open_qcow2(daemon, img)
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    for name in ("a", "b", "off"):
        daemon.command("block-dirty-bitmap-add", {"node": "q", "name": name})
    daemon.command("block-dirty-bitmap-disable", {"node": "q", "name": "off"})
    iotests.qemu_io_cmds(nbd_uri(sock, "q"), ["write -q -P 1 1M 64k"])
    resp = transaction(daemon, [
        action("block-dirty-bitmap-add", node="q", name="c", granularity=65536),
        action("block-dirty-bitmap-merge", node="q", target="c", bitmaps=["a"]),
        action("block-dirty-bitmap-clear", node="q", name="a"),
        action("block-dirty-bitmap-enable", node="q", name="off"),
        action("block-dirty-bitmap-disable", node="q", name="b"),
        action("block-dirty-bitmap-remove", node="q", name="b"),
    ])
    assert "return" in resp, resp
    listed = {b["name"]: b for b in bitmaps(daemon, "q")}
    assert set(listed) == {"a", "c", "off"}
    assert sha(daemon, "q", "c") == expected_sha256(SIZE, 65536, {16})
    assert listed["a"]["count"] == 0 and listed["off"]["recording"] is True


def test_one_point_in_time_under_writes(daemon, scratch, img):
    """clear a + add b in one transaction while a client writes: a == b after.

    Writes before the transaction are in neither (a was cleared); writes
    after it are in both.  A write slipping in between the two actions
    would be in a only.  Between them, removing persistent bitmaps of
    another (idle) qcow2 node writes its bitmap directory, so the
    transaction waits for I/O there while the client's writes to the raw
    node could go on.  Failing transactions in between change nothing.
    """
    for i in range(3):
        qemu_img("bitmap", "--add", img, f"p{i}")
    open_qcow2(daemon, img)
    raw = os.path.join(scratch, "r.raw")
    qemu_img("create", "-f", "raw", raw, str(SIZE))
    daemon.command("blockdev-add", {"driver": "raw", "node-name": "r",
                                    "file": {"driver": "file", "filename": raw}})
    sock = daemon.start_nbd_unix()
    daemon.export("r", writable=True)
    daemon.command("block-dirty-bitmap-add", {"node": "r", "name": "a", "granularity": 4096})
    daemon.command("block-dirty-bitmap-add", {"node": "r", "name": "all", "granularity": 4096})
    rng = random.Random(7)
    writes = [(rng.randrange(SIZE // 4096) * 4096, 4096) for _ in range(10000)]
    writer = qemu_io_popen(nbd_uri(sock, "r"),
                           [f"write -q -P {i % 250 + 1} {o} {n}" for i, (o, n) in enumerate(writes)])
    done_ok = 0
    for round_no in range(20):
        resp = transaction(daemon, [
            action("block-dirty-bitmap-clear", node="r", name="all"),
            action("block-dirty-bitmap-add", node="r", name=f"x{round_no}"),
            action("abort"),
        ])
        assert "error" in resp
        if round_no == 2:
            assert writer.poll() is None, "the writer ended too soon"
            resp = transaction(daemon, [
                action("block-dirty-bitmap-clear", node="r", name="a"),
                action("block-dirty-bitmap-remove", node="q", name="p0"),
                action("block-dirty-bitmap-remove", node="q", name="p1"),
                action("block-dirty-bitmap-remove", node="q", name="p2"),
                action("block-dirty-bitmap-add", node="r", name="b", granularity=4096),
            ])
            assert "return" in resp, resp
            assert writer.poll() is None, "the writer ended too soon"
            done_ok += 1
    wait_all([writer])
    assert done_ok == 1
    assert sha(daemon, "r", "a") == sha(daemon, "r", "b")
    # No failed transaction cleared "all": it holds every write exactly.
    assert sha(daemon, "r", "all") == expected_sha256(SIZE, 4096, granules(writes, 4096))
    assert [b["name"] for b in bitmaps(daemon, "r")] == ["b", "all", "a"]
    assert bitmaps(daemon, "q") == []
