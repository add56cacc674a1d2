"""Minimal synchronous QMP client for the blockd integration tests.

The client talks to a QMP monitor over a UNIX socket.  It is deliberately
small: one blocking socket, a byte buffer, a line splitter and an event
queue.  Every blocking operation takes a timeout, and nothing sleeps to wait
for readiness; callers wait for the monitor socket (or a pidfile) instead.

QMP framing: the server sends one JSON object per line.  Anything carrying an
"event" key is an asynchronous event and is queued; anything carrying
"return" or "error" is a command response.  The greeting ("QMP") arrives first.

Only the Python standard library is used, so the module also works from
``scripts/demo.py`` and the benchmarks.
"""

import json
import socket
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional

DEFAULT_TIMEOUT = 30.0


class QMPError(Exception):
    """Protocol-level failure: connection closed, timeout, garbage from the server."""


class QMPTimeout(QMPError):
    """No complete message arrived within the timeout."""


class QMPCommandError(QMPError):
    """Raised by :meth:`QMP.command` when the server returns an error."""

    def __init__(self, response: Dict[str, Any]):
        self.response = response
        err = response.get("error", {})
        self.error_class = err.get("class")
        self.desc = err.get("desc")
        super().__init__(f"{self.error_class}: {self.desc}")


class QMP:
    """A QMP connection.

    ``QMP(path)`` connects, reads the greeting (stored in :attr:`greeting`)
    and, unless ``negotiate=False``, sends ``qmp_capabilities``.
    """

    def __init__(self, path: str, negotiate: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, connect_timeout: float = 10.0):
        self.path = path
        self.timeout = timeout
        self._buf = b""
        self._events: Deque[Dict[str, Any]] = deque()
        self._next_id = 0
        self.sock = self._connect(path, connect_timeout)
        self.greeting = self._read_message(timeout)
        if "QMP" not in self.greeting:
            raise QMPError(f"unexpected greeting: {self.greeting!r}")
        if negotiate:
            resp = self.cmd("qmp_capabilities")
            if "return" not in resp:
                raise QMPError(f"qmp_capabilities failed: {resp!r}")

    # -- connection ---------------------------------------------------------

    @staticmethod
    def _connect(path: str, timeout: float) -> socket.socket:
        """Connect, retrying on ECONNREFUSED/ENOENT for at most ``timeout`` s.

        Retries are bounded and spaced by a short back-off; this only covers
        the window between the daemon creating the pidfile and listen().
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except (ConnectionRefusedError, FileNotFoundError) as e:
                s.close()
                if time.monotonic() >= deadline:
                    raise QMPError(f"cannot connect to {path}: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None  # type: ignore[assignment]

    def __enter__(self) -> "QMP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- low level I/O ------------------------------------------------------

    def _recv_more(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QMPTimeout("timed out waiting for QMP data")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout as e:
            raise QMPTimeout("timed out waiting for QMP data") from e
        except OSError as e:
            raise QMPError(f"QMP connection error: {e}") from e
        if not data:
            raise QMPError("QMP connection closed by peer")
        self._buf += data

    def _read_message(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Return the next JSON object from the wire (event or response)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self._parse_buffered()
            if msg is not None:
                return msg
            self._recv_more(deadline)

    def _parse_buffered(self) -> Optional[Dict[str, Any]]:
        """Take one complete JSON object off the buffer, or return None.

        Normally one message is one line.  With ``--monitor ...,pretty=on``
        a message spans lines; then the buffer is decoded as a stream and a
        message is complete once it decodes.
        """
        self._buf = self._buf.lstrip()
        nl = self._buf.find(b"\n")
        if nl < 0:
            return None
        line = self._buf[:nl]
        try:
            msg = json.loads(line)
            self._buf = self._buf[nl + 1:]
        except ValueError:
            try:
                msg, end = json.JSONDecoder().raw_decode(self._buf.decode("utf-8", "replace"))
            except ValueError:
                if len(self._buf) > (64 << 20):
                    raise QMPError(f"server sent invalid JSON: {self._buf[:200]!r}")
                return None          # incomplete multi-line message
            consumed = len(self._buf.decode("utf-8", "replace")[:end].encode("utf-8"))
            self._buf = self._buf[consumed:]
        if not isinstance(msg, dict):
            raise QMPError(f"server sent a non-object: {str(msg)[:200]!r}")
        return msg

    def send_raw(self, data: bytes) -> None:
        """Send bytes as-is (for garbage-input tests)."""
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def read_response(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Return the next non-event message, queueing events seen meanwhile."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = self._read_message(max(0.0, deadline - time.monotonic()))
            if "event" in msg:
                self._events.append(msg)
                continue
            return msg

    # -- commands -----------------------------------------------------------

    def cmd(self, name: str, args: Optional[Dict[str, Any]] = None, /,
            cmd_id: Any = None, timeout: Optional[float] = None,
            **kwargs: Any) -> Dict[str, Any]:
        """Execute ``name`` and return the full response dict.

        Arguments may be given as a dict (``args``) and/or keywords; keyword
        names use ``_`` for ``-`` (``node_name`` → ``node-name``).
        """
        arguments: Dict[str, Any] = dict(args or {})
        for k, v in kwargs.items():
            arguments[k.replace("_", "-")] = v
        req: Dict[str, Any] = {"execute": name}
        if arguments:
            req["arguments"] = arguments
        if cmd_id is not None:
            req["id"] = cmd_id
        self.send_raw(json.dumps(req).encode() + b"\n")
        return self.read_response(timeout)

    def command(self, name: str, args: Optional[Dict[str, Any]] = None, /,
                **kwargs: Any) -> Any:
        """Like :meth:`cmd` but return the ``return`` value or raise QMPCommandError."""
        resp = self.cmd(name, args, **kwargs)
        if "error" in resp:
            raise QMPCommandError(resp)
        if "return" not in resp:
            raise QMPError(f"unexpected response: {resp!r}")
        return resp["return"]

    def cmd_raw(self, data: bytes, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send raw bytes and return the next response (events are queued)."""
        self.send_raw(data)
        return self.read_response(timeout)

    # -- events -------------------------------------------------------------

    def get_events(self, wait: float = 0.0) -> List[Dict[str, Any]]:
        """Return and clear queued events.

        With ``wait`` > 0, first read whatever arrives within ``wait`` seconds.
        Responses read meanwhile are unexpected and raise.
        """
        if wait > 0:
            deadline = time.monotonic() + wait
            while True:
                try:
                    msg = self._read_message(max(0.0, deadline - time.monotonic()))
                except QMPTimeout:
                    break
                if "event" not in msg:
                    raise QMPError(f"unexpected response while reading events: {msg!r}")
                self._events.append(msg)
        else:
            self._drain_nonblocking()
        evs = list(self._events)
        self._events.clear()
        return evs

    def _drain_nonblocking(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    break
                self._buf += data
        finally:
            self.sock.setblocking(True)
        while True:
            msg = self._parse_buffered()
            if msg is None:
                break
            if "event" not in msg:
                raise QMPError(f"unexpected response while reading events: {msg!r}")
            self._events.append(msg)

    def wait_event(self, name: str, timeout: float = DEFAULT_TIMEOUT,
                   match: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Wait for event ``name`` (whose ``data`` contains ``match``, if given).

        Earlier queued events that do not match stay queued.
        """
        def matches(ev: Dict[str, Any]) -> bool:
            if ev.get("event") != name:
                return False
            data = ev.get("data", {})
            return all(data.get(k) == v for k, v in (match or {}).items())

        for ev in list(self._events):
            if matches(ev):
                self._events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QMPTimeout(f"timed out waiting for event {name}")
            msg = self._read_message(remaining)
            if "event" not in msg:
                raise QMPError(f"unexpected response while waiting for {name}: {msg!r}")
            if matches(msg):
                return msg
            self._events.append(msg)


def main() -> int:
    """Tiny CLI: ``python3 qmp.py SOCKET COMMAND [JSON-ARGS]``; prints the response."""
    import sys
    if len(sys.argv) < 3:
        print("usage: qmp.py SOCKET COMMAND [JSON-ARGUMENTS]", file=sys.stderr)
        return 2
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    with QMP(sys.argv[1]) as q:
        resp = q.cmd(sys.argv[2], args)
    print(json.dumps(resp))
    return 0 if "return" in resp else 1


if __name__ == "__main__":
    raise SystemExit(main())
