"""NBD clients that stop reading replies, or vanish with requests queued.

A client may queue far more requests in its socket than the server should
ever run, stop reading replies, or close the connection with all of that
still pending.  None of this may cost other clients: the server must drop a
client whose socket failed without running what it had queued, and a client
that does not read must not pin more than a few MiB of the daemon's memory.

The export is a null-co node with read-zeroes=on, so every read really
fills its buffer (32 MiB of memset for the largest read) and touches the
pages it pins, the same in both daemons.  The block status test exports a
raw file whose data and holes alternate, for the largest replies.

iotests groups: quick (block status: slow, a few seconds of CPU)
"""

import os
import shutil
import socket
import struct
import tempfile
import time
from typing import List

import pytest

import iotests
from iotests import MiB, Daemon, blockd_only
import nbd_client as N
from nbd_client import NBDClient


EXPORT_SIZE = 64 * MiB
MAX_READ = 32 * MiB            # the largest read the protocol lets us ask for


@pytest.fixture
def env(daemon):
    daemon.command("blockdev-add", {"driver": "null-co", "node-name": "n",
                                    "size": EXPORT_SIZE, "read-zeroes": True})
    sock = daemon.start_nbd_unix()
    daemon.export("n", name="disk")
    return daemon, sock


@pytest.fixture
def memory_dir(scratch):
    """A directory on tmpfs if there is one: a file there with many extents
    costs nothing to write back or to delete (on ext4, freeing 32768
    extents at the last close kept the daemon busy for many seconds)."""
    if not os.access("/dev/shm", os.W_OK):
        yield scratch
        return
    path = tempfile.mkdtemp(prefix="blockd-test-", dir="/dev/shm")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cpu_seconds(daemon: Daemon) -> float:
    """User plus system CPU time the daemon has used so far."""
    with open(f"/proc/{daemon.pid}/stat") as f:
        stat = f.read()
    # Fields after the command name, which is in parentheses; utime and
    # stime are the 14th and 15th fields of the whole line.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_requests(c: NBDClient, cmd: int, length: int, count: int) -> int:
    """Queue up to ``count`` requests for [0, ``length``) in the socket
    without waiting for the server; returns how many went into the kernel."""
    blob = b"".join(struct.pack(">IHHQQI", N.REQUEST_MAGIC, 0, cmd,
                                i + 1, 0, length) for i in range(count))
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    # Non-blocking sends fill the socket buffer completely; a timeout would
    # poll(), which reports a UNIX socket writable only while it is at most
    # a quarter full.
    c.sock.setblocking(False)
    sent = 0
    try:
        while sent < len(blob):
            sent += c.sock.send(blob[sent:sent + 65536])
    except BlockingIOError:
        pass
    c.sock.settimeout(10)
    return sent // 28


def timed_small_read(sock: str, timeout: float = 30) -> float:
    """Connect, read 4 KiB, disconnect; returns the seconds it took."""
    start = time.monotonic()
    try:
        with NBDClient(sock, timeout=timeout) as c:
            c.connect_export("disk")
            error, data = c.read(0, 4096)
            assert error == 0
            assert data == bytes(4096)
            c.disconnect()
    except socket.timeout:
        pytest.fail(f"a fresh client got no answer within {timeout} s")
    return time.monotonic() - start


def settled_rss_kib(daemon: Daemon, timeout: float = 60) -> int:
    """RSS once the daemon has been idle for a second: it used no CPU time
    and its RSS did not grow, so it has stopped reading requests."""
    deadline = time.monotonic() + timeout
    last = (daemon.rss_kib(), cpu_seconds(daemon))
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < 1.0:
        assert time.monotonic() < deadline, "the daemon never settled"
        time.sleep(0.1)
        now = (daemon.rss_kib(), cpu_seconds(daemon))
        if now[0] > last[0] or now[1] != last[1]:
            stable_since = time.monotonic()
        last = (max(now[0], last[0]), now[1])
    return last[0]


@pytest.mark.quick
def test_disconnected_clients_queue_is_dropped(env):
    """Clients that queue thousands of 32 MiB reads and then close must not
    make the daemon run those reads: another client is served at once."""
    d, sock = env
    flooders: List[NBDClient] = []
    for _ in range(2):
        c = NBDClient(sock)
        c.connect_export("disk")
        queued = queue_requests(c, N.CMD_READ, MAX_READ, 12000)
        assert queued >= 6000, f"only {queued} requests fit in the socket"
        flooders.append(c)

    cpu_before = cpu_seconds(d)
    start = time.monotonic()
    for c in flooders:
        c.close()
    # Running what they queued would take the daemon many seconds of memset
    # (no answer within 30 s here before the fix).
    latency = timed_small_read(sock)
    assert latency < 2.0, f"a fresh client waited {latency:.1f} s"
    # Whatever is left of a 3 s window after the read: enough to see a
    # daemon that is still working through the dead clients' requests.
    time.sleep(max(0.0, 3.0 - (time.monotonic() - start)))
    burnt = cpu_seconds(d) - cpu_before
    assert burnt < 1.0, f"{burnt:.2f} s of CPU spent after the clients left"
    d.assert_alive()


@pytest.mark.quick
def test_client_that_never_reads(env):
    """A client that sends reads and never reads the replies pins a bounded
    amount of memory, does not hold up others, and is dropped cleanly."""
    d, sock = env
    with NBDClient(sock) as c:
        c.connect_export("disk")
        base = settled_rss_kib(d)
        queued = queue_requests(c, N.CMD_READ, 512 * 1024, 2000)
        assert queued == 2000
        grown = (settled_rss_kib(d) - base) / 1024
        # qemu-storage-daemon: 16 requests in flight, 8 MiB; blockd before
        # the fix kept 64 requests, 32 MiB.
        assert grown < 16 + iotests.sanitizer_rss_slack_mib(), \
            f"RSS grew by {grown:.1f} MiB"
        # Other clients are served while this one is stuck.
        assert timed_small_read(sock) < 2.0
    # It is gone; the daemon goes on serving.
    assert timed_small_read(sock) < 2.0
    d.assert_alive()


@pytest.mark.slow
def test_block_status_that_is_never_read(daemon, memory_dir):
    """Block status replies count too: asking again and again for the map of
    a fragmented image without reading the answers pins bounded memory."""
    # Data and holes alternate every 4 KiB: 65536 extents, the most one
    # reply may carry (512 KiB).
    size = 256 * MiB
    img = os.path.join(memory_dir, "fragmented.img")
    with open(img, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, 8 * 1024):
            os.pwrite(f.fileno(), b"\x5a" * 4096, offset)
    daemon.add_file_raw(img)
    sock = daemon.start_nbd_unix()
    daemon.export("r", name="disk")
    with NBDClient(sock) as c:
        c.handshake_start()
        c.structured_replies()
        assert list(c.set_meta_context("disk", ["base:allocation"])) == \
            ["base:allocation"]
        assert c.opt_go("disk")[0] == N.REP_ACK
        # The premise: one reply really is that big.
        c.send_request(N.CMD_BLOCK_STATUS, 0, size)
        flags, rtype, _, payload = c.read_structured_chunk()
        assert rtype == N.REPLY_TYPE_BLOCK_STATUS
        assert flags & N.REPLY_FLAG_DONE
        assert len(payload) == 4 + 65536 * 8
        base = settled_rss_kib(daemon)
        assert queue_requests(c, N.CMD_BLOCK_STATUS, size, 200) == 200
        grown = (settled_rss_kib(daemon) - base) / 1024
        # qemu-storage-daemon: 16 requests in flight, 8 MiB; blockd before
        # the fix kept 64 requests, 32 MiB.
        assert grown < 16 + iotests.sanitizer_rss_slack_mib(), \
            f"RSS grew by {grown:.1f} MiB"
    daemon.assert_alive()


@pytest.mark.quick
@blockd_only("QEMU 7.2 shuts the socket down on NBD_CMD_DISC, dropping the "
             "replies still in flight; the protocol says the server MUST "
             "handle all outstanding requests")
def test_disconnect_after_requests_in_flight_replies(env):
    """NBD_CMD_DISC is graceful: requests sent before it are answered."""
    d, sock = env
    with NBDClient(sock) as c:
        c.connect_export("disk")
        handles = [c.send_request(N.CMD_READ, i * MiB, MiB) for i in range(8)]
        c.send_request(N.CMD_DISC, 0, 0)
        c.sock.shutdown(socket.SHUT_WR)
        seen = set()
        for _ in handles:
            error, handle, data = c.read_simple_reply(MiB)
            assert error == 0 and data == bytes(MiB)
            seen.add(handle)
        assert seen == set(handles)
        assert c.is_closed_by_peer(10)
    d.assert_alive()
