"""Two daemons that open the same image for writing at the same instant.

A writable qcow2 node does not share write access to its file, so of two
daemons started together on one image exactly one may come up; the other
must exit with QEMU's lock error.  Taking the locks first and checking
for conflicts afterwards is what guarantees this: two processes that
both check before either locks would both win.

Between checking and locking there are only a few system calls, so a
plain race almost never hits that window.  The second test widens it:
the daemons run under strace, which delays every fcntl() (the lock
operations) by a few milliseconds, so two daemons started together do
overlap there.  QEMU, which also takes before it checks but does not
serialise its take-and-check with other processes, may then refuse both;
blockd must let exactly one through.

iotests groups: rw
"""

import os
import re
import signal
import subprocess
import time

import pytest

from iotests import (START_TIMEOUT, STOP_TIMEOUT, MiB, _die_with_parent,
                     is_reference, json_arg, qemu_img, require_binary,
                     require_tool, run)

pytestmark = [pytest.mark.rw]

ROUNDS = 30
WIDENED_ROUNDS = 10
FCNTL_DELAY_US = 20000


def start(binary, img, rundir, wrapper=()):
    """Start a daemon that opens ``img`` as writable qcow2.

    It runs in a process group of its own, so that it can be killed
    together with its wrapper.
    """
    pidfile = os.path.join(rundir, "daemon.pid")
    blockdev = {"driver": "qcow2", "node-name": "d",
                "file": {"driver": "file", "filename": img}}
    proc = subprocess.Popen([*wrapper, binary, "--blockdev", json_arg(blockdev),
                             "--pidfile", pidfile],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
                            start_new_session=True)
    return proc, pidfile


def read_pid(pidfile):
    try:
        with open(pidfile) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def wait_started_or_exited(proc, pidfile):
    """True once the daemon wrote its pidfile, False if it exited."""
    deadline = time.monotonic() + START_TIMEOUT
    while proc.poll() is None:
        if read_pid(pidfile):
            return True
        if time.monotonic() > deadline:
            pytest.fail("daemon neither started nor exited")
        time.sleep(0.002)
    return False


def race(binary, img, rundirs, wrapper=()):
    """Start two daemons at once; return [started?] and their stderr."""
    daemons = [start(binary, img, d, wrapper) for d in rundirs]
    try:
        started = [wait_started_or_exited(p, f) for p, f in daemons]
        for (_, pidfile), up in zip(daemons, started):
            if up:
                os.kill(read_pid(pidfile), signal.SIGTERM)
        errors = [p.communicate(timeout=STOP_TIMEOUT)[1].decode(errors="replace")
                  for p, _ in daemons]
    finally:
        for proc, _ in daemons:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
    return started, errors


def race_rounds(scratch, rounds, wrapper=(), exactly_one=True):
    binary = require_binary()
    img = os.path.join(scratch, "a.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, 64 * MiB)
    for rnd in range(rounds):
        rundirs = [os.path.join(scratch, f"r{rnd}-{i}") for i in range(2)]
        for d in rundirs:
            os.makedirs(d)
        started, errors = race(binary, img, rundirs, wrapper)
        assert started.count(True) <= 1, f"round {rnd}: both won"
        if not exactly_one and not any(started):
            continue
        assert started.count(True) == 1, f"round {rnd}: both lost {errors}"
        loser = errors[started.index(False)]
        # Depending on how far the winner got, either side of the write
        # permission is found taken.
        assert re.search(r'Failed to get (shared )?"write" lock', loser), loser
        assert f"Is another process using the image [{img}]?" in loser, loser


def test_one_of_two_racing_daemons_wins(scratch):
    race_rounds(scratch, ROUNDS)


def test_one_wins_with_slow_lock_calls(scratch):
    strace = require_tool("strace")
    if run([strace, "-o", "/dev/null", "true"], check=False).returncode:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    wrapper = [strace, "-f", "-o", "/dev/null", "-e", "trace=fcntl",
               "-e", f"inject=fcntl:delay_exit={FCNTL_DELAY_US}"]
    race_rounds(scratch, WIDENED_ROUNDS, wrapper,
                exactly_one=not is_reference())
