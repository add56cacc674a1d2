"""Shared helpers for the blockd integration tests.

The tests drive a storage daemon over its real interfaces: the command line,
QMP on a UNIX socket and NBD.  The daemon under test is chosen with
``BLOCKD_BINARY`` (default ``<repo>/build/storage-daemon/blockd``); setting it
to ``/usr/bin/qemu-storage-daemon`` runs the very same tests against QEMU's
daemon, which is how compatibility is judged.

Contents:

* :class:`Daemon`: one daemon process with a QMP monitor, started and waited
  for through ``--pidfile`` and the monitor socket, torn down in all cases.
* ``qemu_img``, ``qemu_io``, ``run``: tool wrappers that fail the test on a
  non-zero exit status unless told otherwise.
* ``create_image``, ``Reference``: build images and an independent in-test
  model of what their contents must be.
* ``filter_*``: make QMP output deterministic before it is compared.
* ``blockd_only``: skip marker for behaviour the reference does not share.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

from qmp import QMP, QMPError

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(TESTS_DIR))
DEFAULT_BINARY = os.path.join(REPO_ROOT, "build", "storage-daemon", "blockd")

QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")

# Upper bounds for anything that waits; generous for a loaded 2-core box.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


# ---------------------------------------------------------------------------
# Which daemon is under test

def daemon_binary() -> str:
    return os.environ.get("BLOCKD_BINARY", DEFAULT_BINARY)


def is_reference() -> bool:
    """True when the daemon under test is QEMU's qemu-storage-daemon."""
    return "qemu-storage-daemon" in os.path.basename(daemon_binary())


def blockd_only(reason: str) -> Any:
    """Mark a test as checking blockd-specific behaviour.

    conftest.py skips such tests when the reference daemon is under test;
    ``reason`` says how the reference differs.  ``-m "not blockd_only"``
    deselects them explicitly.
    """
    return pytest.mark.blockd_only(reason)


def slow_enabled() -> bool:
    return os.environ.get("BLOCKD_SLOW_TESTS", "") not in ("", "0")


def sanitizer_rss_slack_mib() -> float:
    """Memory an ASan build keeps on top of what the daemon holds.

    Freed memory waits in ASan's quarantine (``quarantine_size_mb`` in
    ASAN_OPTIONS, set by ``make SANITIZE=1``) before it is reused, so
    bounds on RSS growth allow that much more under ASan.
    """
    m = re.search(r"quarantine_size_mb=(\d+)", os.environ.get("ASAN_OPTIONS", ""))
    return float(m.group(1)) if m else 0.0


def require_binary() -> str:
    binary = daemon_binary()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.skip(f"daemon binary {binary} not built "
                    "(build it, or set BLOCKD_BINARY)")
    return binary


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


# ---------------------------------------------------------------------------
# Process helpers

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ToolResult:
    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return (f"ToolResult({' '.join(self.argv)!r}, rc={self.returncode}, "
                f"stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})")


def run(argv: Sequence[str], check: bool = True, timeout: float = TOOL_TIMEOUT,
        input: Optional[bytes] = None) -> ToolResult:
    """Run a program to completion; fail the test on non-zero exit if ``check``."""
    proc = subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                          timeout=timeout, preexec_fn=_die_with_parent)
    res = ToolResult(argv, proc.returncode, proc.stdout.decode(errors="replace"),
                     proc.stderr.decode(errors="replace"))
    if check and res.returncode != 0:
        pytest.fail(f"command failed: {res!r}")
    return res


def qemu_img(*args: Any, check: bool = True) -> ToolResult:
    return run([QEMU_IMG, *map(str, args)], check=check)


def qemu_io(*args: Any, check: bool = True) -> ToolResult:
    """Run qemu-io; ``args`` are passed as-is (``-f raw``, ``-c CMD``, the image)."""
    return run([QEMU_IO, *map(str, args)], check=check)


def qemu_io_cmds(image: str, cmds: Iterable[str], fmt: str = "raw",
                 check: bool = True, extra: Sequence[str] = ()) -> ToolResult:
    """Run several qemu-io commands against ``image`` in one process."""
    argv: List[str] = list(extra)
    if fmt:
        argv += ["-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    argv.append(image)
    return qemu_io(*argv, check=check)


def qemu_io_popen(image: str, cmds: Iterable[str], fmt: str = "raw") -> subprocess.Popen:
    """Start qemu-io in the background (for concurrent clients)."""
    argv = [QEMU_IO, "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    argv.append(image)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_die_with_parent)


def wait_all(procs: Sequence[subprocess.Popen], timeout: float = TOOL_TIMEOUT) -> None:
    """Wait for background tools; fail the test if any of them failed."""
    deadline = time.monotonic() + timeout
    failures = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            failures.append(f"{p.args}: timed out")
            continue
        if p.returncode != 0:
            failures.append(f"{p.args}: rc={p.returncode} {out!r} {err!r}")
    if failures:
        pytest.fail("background commands failed:\n" + "\n".join(failures))


def nbd_uri(sock: str, name: str = "") -> str:
    return f"nbd+unix:///{name}?socket={sock}"


def free_tcp_port() -> int:
    """A currently free TCP port on 127.0.0.1 (best effort, tests retry-free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# Images and the data model

Pattern = Tuple[int, int, int]   # (byte value, offset, length)


def create_image(path: str, size: int, fmt: str = "raw",
                 patterns: Sequence[Pattern] = (), preallocation: Optional[str] = None) -> str:
    """Create an image with qemu-img and fill ``patterns`` with qemu-io."""
    args: List[Any] = ["create", "-q", "-f", fmt]
    if preallocation:
        args += ["-o", f"preallocation={preallocation}"]
    qemu_img(*args, path, size)
    if patterns:
        qemu_io_cmds(path, [f"write -q -P {p:#x} {off} {ln}" for p, off, ln in patterns],
                     fmt=fmt)
    return str(path)


class Reference:
    """An in-test model of a raw image's contents (the independent oracle)."""

    def __init__(self, size: int):
        self.data = bytearray(size)

    def write(self, pattern: int, offset: int, length: int) -> None:
        self.data[offset:offset + length] = bytes([pattern]) * length

    def zero(self, offset: int, length: int) -> None:
        self.write(0, offset, length)

    def save(self, path: str) -> str:
        with open(path, "wb") as f:
            f.write(self.data)
        return str(path)

    def check_file(self, path: str, offset: int = 0) -> None:
        """Assert a raw file holds the model (reporting the first difference)."""
        with open(path, "rb") as f:
            f.seek(offset)
            got = f.read(len(self.data))
        if got != bytes(self.data):
            first = next((i for i in range(min(len(got), len(self.data)))
                          if got[i] != self.data[i]), min(len(got), len(self.data)))
            pytest.fail(f"{path}: content differs from model at offset {first + offset:#x} "
                        f"(len got={len(got)} want={len(self.data)})")


def compare_images(a: str, b: str, fmt_a: str = "raw", fmt_b: str = "raw") -> None:
    """``qemu-img compare``; fails the test if the images differ."""
    res = qemu_img("compare", "-f", fmt_a, "-F", fmt_b, a, b, check=False)
    if res.returncode != 0:
        pytest.fail(f"images differ: {res!r}")


# ---------------------------------------------------------------------------
# Output filters

_TIMESTAMP_RE = re.compile(r"\d+")
_GEN_NODE_RE = re.compile(r"#block\d+")


def nbdinfo_map(uri: str, context: str = "base:allocation") -> List[Tuple[int, int, int]]:
    """nbdinfo's map of ``context`` as (offset, length, type), neighbours of
    the same type merged: servers may split extents differently."""
    require_tool("nbdinfo")
    extents = json.loads(run(["nbdinfo", f"--map={context}", "--json", uri]).stdout)
    out: List[Tuple[int, int, int]] = []
    for e in extents:
        if out and out[-1][2] == e["type"] and out[-1][0] + out[-1][1] == e["offset"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], e["type"])
        else:
            out.append((e["offset"], e["length"], e["type"]))
    return out


def filter_qmp_event(ev: Dict[str, Any]) -> Dict[str, Any]:
    """Replace the event timestamp with a fixed one."""
    ev = dict(ev)
    if "timestamp" in ev:
        ev["timestamp"] = {"seconds": "SECS", "microseconds": "USECS"}
    return ev


def filter_generated_node_ids(text: str) -> str:
    return _GEN_NODE_RE.sub("#blockNNN", text)


def filter_path(text: str, path: str, replacement: str = "SCRATCH") -> str:
    return text.replace(str(path), replacement)


def filter_qmp(obj: Any, scratch: Optional[str] = None) -> Any:
    """Deep-filter a QMP object: timestamps, generated node names, scratch paths."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "timestamp" and isinstance(v, dict):
                out[k] = {"seconds": "SECS", "microseconds": "USECS"}
            else:
                out[k] = filter_qmp(v, scratch)
        return out
    if isinstance(obj, list):
        return [filter_qmp(v, scratch) for v in obj]
    if isinstance(obj, str):
        s = filter_generated_node_ids(obj)
        return filter_path(s, scratch) if scratch else s
    return obj


def is_generated_node_name(name: str) -> bool:
    return bool(re.fullmatch(r"#block\d+", name))


# ---------------------------------------------------------------------------
# The daemon

def _short_dir() -> str:
    """A short directory for UNIX sockets (sun_path is limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="bd-", dir="/tmp")


class Daemon:
    """A running storage daemon with one or more QMP monitors.

    ``Daemon(scratch, args)`` starts ``BLOCKD_BINARY`` with ``args`` plus a
    ``--chardev``/``--monitor`` pair per monitor and ``--pidfile``, waits for
    the pidfile (the daemon writes it once start-up is complete), connects
    to the first monitor and negotiates capabilities (:attr:`qmp`).
    """

    def __init__(self, scratch: str, args: Sequence[str] = (), monitors: int = 1,
                 daemonize: bool = False, sockdir: Optional[str] = None,
                 connect: bool = True):
        self.binary = require_binary()
        self.scratch = str(scratch)
        self.sockdir = sockdir or _short_dir()
        self._own_sockdir = sockdir is None
        self.pidfile = os.path.join(self.scratch, "daemon.pid")
        self.monitor_paths = [os.path.join(self.sockdir, f"qmp{i}.sock")
                              for i in range(monitors)]
        self.stderr_path = os.path.join(self.scratch, "daemon.stderr")
        self.stdout_path = os.path.join(self.scratch, "daemon.stdout")
        self.daemonize = daemonize
        self.proc: Optional[subprocess.Popen] = None
        self.pid: Optional[int] = None
        self.qmp: Optional[QMP] = None
        self.returncode: Optional[int] = None
        argv = [self.binary]
        for i, path in enumerate(self.monitor_paths):
            argv += ["--chardev", f"socket,id=mon{i},path={path},server=on,wait=off",
                     "--monitor", f"chardev=mon{i}"]
        argv += list(args)
        argv += ["--pidfile", self.pidfile]
        if daemonize:
            argv.append("--daemonize")
        self.argv = argv
        self._start()
        if connect and monitors:
            self.qmp = QMP(self.monitor_paths[0])

    # -- start/stop ----------------------------------------------------------

    def _start(self) -> None:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, preexec_fn=_die_with_parent)
        if self.daemonize:
            # The parent returns once the daemon is ready; that is the contract.
            try:
                rc = self.proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                pytest.fail(f"--daemonize parent did not exit: {self.stderr()}")
            if rc != 0:
                pytest.fail(f"daemon failed to start (rc={rc}): {self.stderr()}")
            if not os.path.exists(self.pidfile):
                pytest.fail("--daemonize returned before the pidfile was written")
            self.pid = self._read_pidfile()
            return
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.002
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                pytest.fail(f"daemon exited during start-up (rc={rc}): {self.stderr()}")
            if os.path.exists(self.pidfile):
                pid = self._read_pidfile()
                if pid:
                    self.pid = pid
                    break
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"daemon did not write its pidfile within {START_TIMEOUT}s: "
                            f"{self.stderr()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        assert self.pid == self.proc.pid, "pidfile names another process"

    def _read_pidfile(self) -> Optional[int]:
        try:
            with open(self.pidfile) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def stderr(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.proc is not None and not self.daemonize:
            return self.proc.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # A zombie is not alive.
        try:
            with open(f"/proc/{self.pid}/status") as f:
                return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
        except FileNotFoundError:
            return False

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """Wait for the daemon to exit; return its status (None if daemonized)."""
        if self.proc is not None and not self.daemonize:
            try:
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"daemon did not exit within {timeout}s")
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon did not exit within {timeout}s")
            time.sleep(0.02)
        return None

    def send_signal(self, sig: int) -> None:
        assert self.pid is not None
        os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.pid is not None and self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> bool:
        """Always stops the daemon: QMP quit, then SIGTERM, then SIGKILL.

        Returns True if it shut down by itself (after quit or SIGTERM) with
        exit status 0, which is what a clean shutdown looks like; under
        sanitizers a leak or memory error turns the status non-zero.
        """
        clean = False
        try:
            quit_sent = False
            if self.alive() and self.qmp is not None:
                try:
                    self.qmp.cmd("quit", timeout=5)
                    quit_sent = True
                except (QMPError, OSError):
                    pass
            if self.alive():
                try:
                    if not quit_sent:
                        raise AssertionError("no QMP connection to quit over")
                    self.wait_exit(STOP_TIMEOUT)
                except AssertionError:
                    self.send_signal(signal.SIGTERM)
                    try:
                        self.wait_exit(STOP_TIMEOUT)
                    except AssertionError:
                        pass
            if not self.alive():
                if not self.daemonize:
                    self.returncode = self.proc.wait(timeout=STOP_TIMEOUT)
                clean = self.daemonize or self.returncode == 0
            self.kill()
        finally:
            if self.qmp is not None:
                self.qmp.close()
                self.qmp = None
            if self._own_sockdir:
                shutil.rmtree(self.sockdir, ignore_errors=True)
        return clean

    # -- conveniences --------------------------------------------------------

    def sock(self, name: str) -> str:
        """A path for a UNIX socket, short enough for sun_path."""
        return os.path.join(self.sockdir, name)

    def connect_monitor(self, index: int = 0, negotiate: bool = True) -> QMP:
        return QMP(self.monitor_paths[index], negotiate=negotiate)

    def rss_kib(self) -> int:
        assert self.pid is not None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cmd(self, name: str, args: Optional[Dict[str, Any]] = None, /,
            **kwargs: Any) -> Dict[str, Any]:
        assert self.qmp is not None
        return self.qmp.cmd(name, args, **kwargs)

    def command(self, name: str, args: Optional[Dict[str, Any]] = None, /,
                **kwargs: Any) -> Any:
        """Run a QMP command that must succeed; return its ``return`` value."""
        assert self.qmp is not None
        resp = self.qmp.cmd(name, args, **kwargs)
        assert "return" in resp, f"{name} failed: {resp}"
        return resp["return"]

    def assert_alive(self) -> None:
        """The daemon runs and answers QMP (on the main monitor)."""
        assert self.alive(), f"daemon died: {self.stderr()}"
        assert self.qmp is not None
        resp = self.qmp.cmd("query-version", timeout=10)
        assert "return" in resp, resp

    # Common set-ups -----------------------------------------------------------

    def add_file_raw(self, path: str, node: str = "r", file_node: Optional[str] = None,
                     raw_opts: Optional[Dict[str, Any]] = None, **file_opts: Any) -> None:
        """blockdev-add a file node (``file_opts``, ``_`` for ``-``) and a raw node on it."""
        file_node = file_node or f"{node}-file"
        fopts = {k.replace("_", "-"): v for k, v in file_opts.items()}
        self.command("blockdev-add", {"driver": "file", "node-name": file_node,
                                      "filename": str(path), **fopts})
        self.command("blockdev-add", {"driver": "raw", "node-name": node, "file": file_node,
                                      **(raw_opts or {})})

    def start_nbd_unix(self, name: str = "nbd.sock", **opts: Any) -> str:
        path = self.sock(name)
        extra = {k.replace("_", "-"): v for k, v in opts.items()}
        self.command("nbd-server-start",
                     {"addr": {"type": "unix", "data": {"path": path}}, **extra})
        return path

    def export(self, node: str, export_id: str = "e", name: Optional[str] = None,
               writable: bool = False) -> None:
        args: Dict[str, Any] = {"type": "nbd", "id": export_id, "node-name": node,
                                "writable": writable}
        if name is not None:
            args["name"] = name
        self.command("block-export-add", args)

    def del_export(self, export_id: str = "e", timeout: float = 10.0) -> None:
        """block-export-del and wait for BLOCK_EXPORT_DELETED."""
        assert self.qmp is not None
        self.command("block-export-del", id=export_id)
        self.qmp.wait_event("BLOCK_EXPORT_DELETED", timeout=timeout, match={"id": export_id})


def start_daemon_expect_failure(args: Sequence[str], timeout: float = START_TIMEOUT) -> ToolResult:
    """Run the daemon with ``args`` that must make it exit; return its result."""
    binary = require_binary()
    return run([binary, *args], check=False, timeout=timeout)


def json_arg(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
