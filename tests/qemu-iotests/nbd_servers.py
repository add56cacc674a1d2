"""NBD servers for tests of NBD clients: nbdkit and qemu-nbd processes.

A server listens on a UNIX socket and is ready once it has written its
pidfile (both tools write it after the socket listens).  It can be killed
and started again on the same socket with the same arguments, which is
how reconnection is tested, and it dies with the test process.
"""

import os
import signal
import subprocess
import time
from typing import List, Optional, Sequence

import iotests

READY_TIMEOUT = 15.0


class NbdServer:
    """One server process; ``argv_for(sock, pidfile)`` gives its command line."""

    def __init__(self, scratch: str, name: str):
        self.sockdir = iotests._short_dir()
        self.sock = os.path.join(self.sockdir, f"{name}.sock")
        self.pidfile = os.path.join(scratch, f"{name}.pid")
        self.logfile = os.path.join(scratch, f"{name}.log")
        self.proc: Optional[subprocess.Popen] = None

    def argv_for(self, sock: str, pidfile: str) -> List[str]:
        raise NotImplementedError

    def uri(self, export: str = "") -> str:
        return iotests.nbd_uri(self.sock, export)

    def start(self, wait: bool = True, after: float = 0.0) -> "NbdServer":
        """Start the server; ``after`` seconds later if given.  Unless
        ``wait`` is false, return once it is ready."""
        assert self.proc is None or self.proc.poll() is not None
        for path in (self.pidfile, self.sock):
            if os.path.exists(path):
                os.unlink(path)
        log = open(self.logfile, "ab")
        argv = self.argv_for(self.sock, self.pidfile)
        if after:
            argv = ["sh", "-c", f'sleep {after}; exec "$@"', "sh", *argv]
        self.proc = subprocess.Popen(argv,
                                     stdout=log, stderr=log,
                                     preexec_fn=iotests._die_with_parent)
        log.close()
        if not wait:
            return self
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.proc.args} exited: {self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.proc.args} not ready: {self.log()}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: the server goes away without a word, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


class Nbdkit(NbdServer):
    """``nbdkit PLUGIN ARGS`` with ``filters`` (innermost last)."""

    def __init__(self, scratch: str, plugin_args: Sequence[str],
                 filters: Sequence[str] = (), name: str = "nbdkit"):
        super().__init__(scratch, name)
        iotests.require_tool("nbdkit")
        self.plugin_args = list(plugin_args)
        self.filters = list(filters)

    def argv_for(self, sock: str, pidfile: str) -> List[str]:
        return (["nbdkit", "--foreground", "--unix", sock, "--pidfile", pidfile]
                + [f"--filter={f}" for f in self.filters] + self.plugin_args)


class QemuNbd(NbdServer):
    """``qemu-nbd`` serving ``image`` (raw) as export ``export``."""

    def __init__(self, scratch: str, image: str, export: str = "",
                 name: str = "qemu-nbd", extra_args: Sequence[str] = ()):
        super().__init__(scratch, name)
        iotests.require_tool("qemu-nbd")
        self.image = image
        self.export = export
        self.extra_args = list(extra_args)     # say, --object and --tls-creds

    def argv_for(self, sock: str, pidfile: str) -> List[str]:
        return ["qemu-nbd", "--persistent", "--shared=16", "-f", "raw",
                "-k", sock, "--pid-file", pidfile, "-x", self.export,
                "--cache=writeback", *self.extra_args, self.image]
