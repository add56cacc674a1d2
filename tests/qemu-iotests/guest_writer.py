"""A "guest" that keeps writing to an NBD export, with known points in time.

GuestWriter drives one interactive qemu-io over NBD: it sends one write,
waits for its reply, and goes on with the next, until stopped.  The
writes are random extents (4 KiB, 64 KiB or 256 KiB, 4 KiB aligned) with
random pattern bytes inside the writer's region, from a seeded generator.

Holding ``writer.pause`` keeps the writer between two writes; the writes
it completed so far are ``writer.done``, in order.  So a backup started
while all writers are paused has an exact point in time: the disk then
holds exactly the writes listed at that moment (writers with disjoint
regions commute).  ``at_point_in_time()`` does that for a set of writers.

Used by the live-backup iotests and by scripts/demo.py.
"""

import contextlib
import random
import subprocess
import threading
import time
from typing import (Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple,
                    TypeVar)

Write = Tuple[int, int, int]    # pattern byte, offset, length

LENGTHS = (4096, 65536, 262144)
T = TypeVar("T")


class GuestWriter(threading.Thread):
    def __init__(self, uri: str, region: Tuple[int, int], seed: int,
                 pause_s: float = 0.0):
        """Write to [region[0], region[1]) of the export @uri, sleeping
        @pause_s between two writes."""
        super().__init__(daemon=True)
        self.start_offset, self.end_offset = region
        assert self.end_offset - self.start_offset >= max(LENGTHS)
        self.rng = random.Random(seed)
        self.pause_s = pause_s
        self.pause = threading.Lock()
        self.stopping = threading.Event()
        self.done: List[Write] = []
        self.error: Optional[str] = None
        self.proc = subprocess.Popen(["qemu-io", "-f", "raw", uri], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)

    def _next_write(self) -> Write:
        length = self.rng.choice(LENGTHS)
        offset = self.rng.randrange(self.start_offset, self.end_offset - length + 1, 4096)
        return self.rng.randrange(1, 256), offset, length

    def _write(self, w: Write) -> bool:
        """Send @w and wait for its reply; False (with self.error) on failure."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"write -P {w[0]} {w[1]} {w[2]}\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.error = "qemu-io exited"
                return False
            if "wrote" in line:
                return True
            if "error" in line.lower() or "failed" in line.lower():
                self.error = line.strip()
                return False

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.pause:
                w = self._next_write()
                if not self._write(w):
                    return
                self.done.append(w)
            if self.pause_s:
                time.sleep(self.pause_s)

    def stop(self) -> Optional[str]:
        """Stop after the current write; the error that ended it, if any."""
        self.stopping.set()
        self.join(timeout=60)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.error


@contextlib.contextmanager
def writers_paused(writers: Sequence[GuestWriter]) -> Iterator[None]:
    """Every writer is between two writes while the block runs."""
    with contextlib.ExitStack() as stack:
        for w in writers:
            stack.enter_context(w.pause)
        yield


class PointInTime(NamedTuple):
    """How many writes each writer had completed at an instant."""
    writers: Sequence[GuestWriter]
    counts: Sequence[int]

    def writes(self) -> List[Write]:
        """The writes the disk held at that instant (all writers)."""
        return [w for writer, n in zip(self.writers, self.counts) for w in writer.done[:n]]

    def writes_since(self, earlier: "PointInTime") -> List[Write]:
        return [w for writer, start, end in zip(self.writers, earlier.counts, self.counts)
                for w in writer.done[start:end]]


def at_point_in_time(writers: Sequence[GuestWriter],
                     action: Callable[[], T]) -> Tuple[T, PointInTime]:
    """Run @action with every writer paused: its result, and the instant."""
    with writers_paused(writers):
        result = action()
        return result, PointInTime(writers, [len(w.done) for w in writers])
