"""The daemon's command line, start-up, daemonizing and shutdown.

Error messages are checked in the form "--OPTION ARG: MESSAGE"; the program
name in front differs between blockd and qemu-storage-daemon.

iotests groups: quick
"""

import os
import signal

import pytest

import iotests
from iotests import (Daemon, MiB, create_image, nbd_uri, qemu_io_cmds, run,
                     start_daemon_expect_failure)

pytestmark = pytest.mark.quick


def test_help():
    res = run([iotests.require_binary(), "--help"])
    assert res.returncode == 0
    assert res.stdout.startswith("Usage: ")
    for opt in ("--blockdev", "--chardev", "--export", "--monitor", "--nbd-server",
                "--pidfile", "--daemonize", "--version", "--help"):
        assert opt in res.stdout, f"--help does not mention {opt}"
    assert run([iotests.require_binary(), "-h"]).stdout == res.stdout


def test_version():
    res = run([iotests.require_binary(), "--version"])
    assert res.returncode == 0
    assert " version " in res.stdout.splitlines()[0]
    assert run([iotests.require_binary(), "-V"]).stdout == res.stdout


def test_no_arguments_then_quit(daemon):
    # A daemon with only a monitor starts and answers; quit ends it with 0.
    assert daemon.command("query-named-block-nodes") == []
    assert daemon.cmd("quit") == {"return": {}}
    assert daemon.wait_exit() == 0
    assert not os.path.exists(daemon.pidfile), "pidfile is removed at exit"


BAD = [
    (["--bogus"], "--bogus"),
    (["-x"], "x"),
    (["--blockdev"], "--blockdev"),
    (["--pidfile"], "--pidfile"),
    (["extra-arg"], "extra-arg: Unexpected argument"),
    (["--blockdev", "driver=nope,node-name=x"],
     "--blockdev driver=nope,node-name=x: Parameter 'driver' does not accept value 'nope'"),
    (["--blockdev", "{bad"], "--blockdev {bad: JSON parse error, invalid keyword 'bad'"),
    (["--blockdev", "driver=null-co,node-name=n,size=abc"],
     "--blockdev driver=null-co,node-name=n,size=abc: Parameter 'size' expects integer"),
    (["--blockdev", "driver=file,node-name=x,filename=/nonexistent/x.img"],
     "--blockdev driver=file,node-name=x,filename=/nonexistent/x.img: "
     "Could not open '/nonexistent/x.img': No such file or directory"),
    (["--blockdev", "driver=null-co,node-name=a", "--blockdev", "driver=null-co,node-name=a"],
     "--blockdev driver=null-co,node-name=a: Duplicate nodes with node-name='a'"),
    (["--nbd-server", "addr.type=unix"],
     "--nbd-server addr.type=unix: Parameter 'addr.path' is missing"),
    (["--nbd-server", "addr.type=unix,addr.path=/nonexistent/dir/x.sock"],
     "--nbd-server addr.type=unix,addr.path=/nonexistent/dir/x.sock: "
     "Failed to bind socket to /nonexistent/dir/x.sock: No such file or directory"),
    (["--blockdev", "driver=null-co,node-name=n", "--export", "type=nbd,id=e,node-name=n"],
     "--export type=nbd,id=e,node-name=n: NBD server not running"),
    # Options are processed in order: the node does not exist yet.
    (["--export", "type=nbd,id=e,node-name=n", "--blockdev", "driver=null-co,node-name=n"],
     "--export type=nbd,id=e,node-name=n: Cannot find device='' nor node-name='n'"),
    (["--monitor", "nochr"], "--monitor nochr: chardev \"nochr\" not found"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a)[:50] for a, _ in BAD])
def test_bad_arguments(args, message, scratch):
    res = start_daemon_expect_failure(args)
    assert res.returncode == 1, res
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines, "no error message"
    assert message in lines[0], res.stderr


def test_bad_argument_with_daemonize():
    res = start_daemon_expect_failure(["--daemonize", "--blockdev", "driver=nope,node-name=x"])
    assert res.returncode == 1
    assert "Parameter 'driver' does not accept value 'nope'" in res.stderr


def test_pidfile(daemon):
    with open(daemon.pidfile) as f:
        assert f.read().strip() == str(daemon.pid)
    assert daemon.pid == daemon.proc.pid


def test_pidfile_locked(daemon, scratch):
    """A second daemon refuses a pidfile in use."""
    res = start_daemon_expect_failure(["--pidfile", daemon.pidfile])
    assert res.returncode == 1
    assert "pid file" in res.stderr.lower()
    with open(daemon.pidfile) as f:
        assert f.read().strip() == str(daemon.pid)
    daemon.assert_alive()


def test_daemonize(daemon_factory, scratch):
    img = create_image(os.path.join(scratch, "a.img"), MiB)
    sockdir = iotests._short_dir()
    sock = os.path.join(sockdir, "nbd.sock")
    try:
        d = daemon_factory("--blockdev", f"driver=file,node-name=f,filename={img}",
                           "--nbd-server", f"addr.type=unix,addr.path={sock}",
                           "--export", "type=nbd,id=e,node-name=f,writable=on",
                           daemonize=True)
        # The parent has exited (0) and the daemon already serves everything.
        assert d.proc.returncode == 0
        assert d.pid != d.proc.pid
        assert d.alive()
        qemu_io_cmds(nbd_uri(sock, "f"), ["write -q -P 0x7e 0 64k"])
        d.assert_alive()
        # The daemon left the parent's session and has no controlling terminal.
        with open(f"/proc/{d.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) == d.pid or int(fields[2]) != os.getpid()
        assert d.cmd("quit") == {"return": {}}
        d.wait_exit()
        assert not os.path.exists(d.pidfile)
        qemu_io_cmds(img, ["read -q -P 0x7e 0 64k"])
    finally:
        iotests.shutil.rmtree(sockdir, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_shutdown(daemon_factory, scratch, sig):
    img = create_image(os.path.join(scratch, "a.img"), 4 * MiB)
    sockdir = iotests._short_dir()
    sock = os.path.join(sockdir, "nbd.sock")
    try:
        d = daemon_factory("--blockdev", f"driver=file,node-name=f,filename={img}",
                           "--blockdev", "driver=raw,node-name=r,file=f",
                           "--nbd-server", f"addr.type=unix,addr.path={sock}",
                           "--export", "type=nbd,id=e,node-name=r,writable=on")
        qemu_io_cmds(nbd_uri(sock, "r"), ["write -q -P 0x3a 0 1M", "write -q -P 0x3b 3M 4k"])
        d.send_signal(sig)
        assert d.wait_exit() == 0, d.stderr()
        assert not os.path.exists(d.pidfile)
        qemu_io_cmds(img, ["read -q -P 0x3a 0 1M", "read -q -P 0 1M 2M",
                           "read -q -P 0x3b 3M 4k"])
    finally:
        iotests.shutil.rmtree(sockdir, ignore_errors=True)


def test_quit_with_active_client(daemon_factory, scratch):
    """quit while a client is connected: clean exit, client sees EOF."""
    from nbd_client import NBDClient
    d = daemon_factory("--blockdev", "driver=null-co,node-name=n,size=1048576")
    sock = d.start_nbd_unix()
    d.export("n")
    with NBDClient(sock) as c:
        c.connect_export("n")
        assert d.cmd("quit") == {"return": {}}
        assert d.wait_exit() == 0
        assert c.is_closed_by_peer(5)


def test_monitor_keyval_forms(scratch):
    """--monitor accepts the implied chardev= key, mode=control and pretty."""
    sockdir = iotests._short_dir()
    try:
        for mon in ("m0", "chardev=m0", "chardev=m0,mode=control", "m0,pretty=on"):
            path = os.path.join(sockdir, "m.sock")
            d = Daemon(scratch, ["--chardev", f"socket,id=m0,path={path},server=on,wait=off",
                                 "--monitor", mon], monitors=0)
            try:
                from qmp import QMP
                with QMP(path) as q:
                    assert "return" in q.cmd("query-version")
            finally:
                d.stop()
    finally:
        iotests.shutil.rmtree(sockdir, ignore_errors=True)
