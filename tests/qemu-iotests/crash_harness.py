"""Crash-consistency harness: kill -9 the daemon under a recorded workload.

One *round* creates a fresh qcow2 image, opens it in a daemon (with or
without ``discard=unmap``), exports it writable over NBD and drives it
with libnbd's asynchronous commands, several in flight at once: writes,
write-zeroes with and without ``NBD_CMD_FLAG_NO_HOLE``, trims and
flushes, chosen by a seeded random generator.  After a random number of
requests the daemon is killed with SIGKILL while requests are still in
flight.  The image is then judged offline with QEMU's tools, which makes
them an independent oracle:

* ``qemu-img check`` may report leaked clusters, nothing worse;
* every write acknowledged before a flush that was itself acknowledged
  must read back (its own data, or that of a later request to the same
  sector);
* every other sector must hold a value it legitimately had: an earlier
  one, zeroes after a write-zeroes or trim, or the data of a write issued
  to that very sector, acknowledged or not.

Every written 512-byte sector carries its own address and the number of
the write that wrote it (``TAG`` repeated), so any sector read back can be
attributed to the exact request that wrote it.  Data tagged with another
sector's address, or that is not a whole tag pattern at all, is
*foreign data*: a sector exposing what a different guest offset wrote.

Requests in flight never overlap (a request touching a sector another one
still uses waits), so each sector's history is a well-ordered sequence.

Used by ``test_crash_consistency.py`` (a bounded run in ``make check``)
and ``scripts/crash-soak`` (any number of rounds).
"""

import dataclasses
import enum
import os
import random
import shutil
import struct
import time
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import nbd

from iotests import KiB, MiB, Daemon, qemu_img

SECTOR = 512
# (guest byte offset of the sector, number of the write), little-endian.
TAG = struct.Struct("<QQ")
ZERO = 0            # the value of a zeroed sector; write numbers start at 1


class Verdict(enum.IntEnum):
    """The outcome of a round, in increasing order of severity."""
    CLEAN = 0
    LEAKS_ONLY = 1
    LOST_ACKED_WRITES = 2
    FOREIGN_DATA = 3
    CORRUPT = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Config:
    """One cell of the test matrix and its workload shape."""
    cluster_size: int
    discard: bool
    disk_size: int = 4 * MiB
    max_requests: int = 400         # the kill comes after 1/4 to all of them
    max_in_flight: int = 16
    max_sectors: int = 16           # length of a request, in sectors
    # Relative weights of the request kinds.
    weights: Tuple[Tuple[str, int], ...] = (
        ("write", 10), ("zero", 4), ("zero-no-hole", 2), ("trim", 4),
        ("flush", 1))

    @property
    def name(self) -> str:
        size = (f"{self.cluster_size // KiB}k" if self.cluster_size >= KiB
                else str(self.cluster_size))
        return f"cluster={size},discard={'unmap' if self.discard else 'ignore'}"


def matrix() -> List[Config]:
    """The standard matrix: 512 B and 64 KiB clusters, discard on and off."""
    return [Config(cluster_size=cs, discard=d,
                   max_sectors=16 if cs == 512 else 256)
            for cs in (512, 64 * KiB) for d in (True, False)]


def sector_data(offset: int, number: int) -> bytes:
    """The contents write @number gives the sector at byte @offset."""
    return TAG.pack(offset, number) * (SECTOR // TAG.size)


@dataclasses.dataclass
class Request:
    kind: str
    offset: int = 0
    length: int = 0
    number: int = 0                 # write number (writes only)
    acked_at: Optional[int] = None  # completion sequence, if acknowledged
    flush_seen: int = 0             # flushes: completions seen when issued

    def sectors(self) -> range:
        return range(self.offset // SECTOR, (self.offset + self.length) // SECTOR)


class History:
    """What the client sent and what the server acknowledged."""

    def __init__(self, nb_sectors: int):
        self.requests: List[Request] = []
        self.per_sector: Dict[int, List[int]] = {}   # sector -> request indices
        self.completions = 0
        # Completions seen when the last acknowledged flush was issued: every
        # request acknowledged before that is durable.
        self.durable_before = 0
        self.nb_sectors = nb_sectors

    def add(self, req: Request) -> None:
        idx = len(self.requests)
        self.requests.append(req)
        if req.kind != "flush":
            for s in req.sectors():
                self.per_sector.setdefault(s, []).append(idx)

    def complete(self, req: Request, ok: bool) -> None:
        """Record a reply; a failed request may or may not have happened."""
        self.completions += 1
        if not ok:
            return
        req.acked_at = self.completions
        if req.kind == "flush":
            self.durable_before = max(self.durable_before, req.flush_seen)

    def durable(self, req: Request) -> bool:
        return req.acked_at is not None and req.acked_at <= self.durable_before

    def allowed(self, sector: int) -> FrozenSet[int]:
        """The values (ZERO or a write number) the sector may hold.

        Those its requests left, from its last durable request on (or from
        the fresh image, all zeroes).  A trim is advisory: it adds zeroes
        to the values before it instead of replacing them.
        """
        values: Set[int] = {ZERO}
        for idx in self.per_sector.get(sector, []):
            req = self.requests[idx]
            if self.durable(req) and req.kind != "trim":
                values = set()
            values.add(req.number if req.kind == "write" else ZERO)
        return frozenset(values)


@dataclasses.dataclass
class RoundResult:
    verdict: Verdict
    config: Config
    seed: int
    details: List[str]
    image: str


def _random_request(rng: random.Random, cfg: Config, number: int) -> Request:
    kinds = [k for k, _ in cfg.weights]
    kind = rng.choices(kinds, [w for _, w in cfg.weights])[0]
    if kind == "flush":
        return Request("flush")
    nb_sectors = cfg.disk_size // SECTOR
    per_cluster = max(cfg.cluster_size // SECTOR, 1)
    if rng.random() < 0.5:
        # Whole clusters: what frees clusters and allocates them again.
        clusters = max(1, rng.randint(1, cfg.max_sectors) // per_cluster)
        first = rng.randrange(0, nb_sectors // per_cluster - clusters + 1)
        start, count = first * per_cluster, clusters * per_cluster
    else:
        count = rng.randint(1, cfg.max_sectors)
        start = rng.randrange(0, nb_sectors - count + 1)
    return Request(kind, start * SECTOR, count * SECTOR,
                   number if kind == "write" else 0)


def _issue(h: "nbd.NBD", req: Request) -> int:
    if req.kind == "write":
        buf = b"".join(sector_data(req.offset + i * SECTOR, req.number)
                       for i in range(req.length // SECTOR))
        return h.aio_pwrite(buf, req.offset)
    if req.kind == "zero":
        return h.aio_zero(req.length, req.offset)
    if req.kind == "zero-no-hole":
        return h.aio_zero(req.length, req.offset, flags=nbd.CMD_FLAG_NO_HOLE)
    if req.kind == "trim":
        return h.aio_trim(req.length, req.offset)
    return h.aio_flush()


class _Client:
    """Keeps up to max_in_flight non-overlapping requests in flight."""

    def __init__(self, sock: str, history: History):
        self.h = nbd.NBD()
        self.h.set_export_name("d")
        self.h.connect_unix(sock)
        self.history = history
        self.in_flight: Dict[int, Request] = {}
        self.busy: Set[int] = set()

    def reap(self) -> None:
        for cookie, req in list(self.in_flight.items()):
            try:
                done = self.h.aio_command_completed(cookie)
                ok = True
            except nbd.Error:
                done, ok = True, False
            if done:
                del self.in_flight[cookie]
                self.busy.difference_update(req.sectors())
                self.history.complete(req, ok)

    def wait_one(self) -> None:
        count = len(self.in_flight)
        while len(self.in_flight) == count:
            self.h.poll(-1)
            self.reap()

    def submit(self, req: Request, max_in_flight: int) -> None:
        while (len(self.in_flight) >= max_in_flight or
               self.busy.intersection(req.sectors())):
            self.wait_one()
        if req.kind == "flush":
            req.flush_seen = self.history.completions
        self.history.add(req)
        self.busy.update(req.sectors())
        self.in_flight[_issue(self.h, req)] = req
        # Let completions arrive without blocking.
        self.h.poll(0)
        self.reap()


def _start_daemon(workdir: str, img: str, cfg: Config) -> Tuple[Daemon, str]:
    d = Daemon(workdir)
    qcow2 = {"driver": "qcow2", "node-name": "d",
             "file": {"driver": "file", "filename": img}}
    if cfg.discard:
        qcow2["discard"] = "unmap"
    d.command("blockdev-add", qcow2)
    sock = d.start_nbd_unix()
    d.export("d", writable=True)
    return d, sock


def _check(img: str) -> Tuple[int, str]:
    """qemu-img check; waits while the killed daemon's lock lingers."""
    deadline = time.monotonic() + 10
    while True:
        res = qemu_img("check", img, check=False)
        if "lock" not in res.stderr or time.monotonic() > deadline:
            return res.returncode, res.output
        time.sleep(0.1)


def _judge_data(raw: bytes, history: History) -> Tuple[Verdict, List[str]]:
    verdict = Verdict.CLEAN
    details: List[str] = []
    zero = bytes(SECTOR)
    for s in range(history.nb_sectors):
        data = raw[s * SECTOR:(s + 1) * SECTOR]
        if data == zero:
            value = ZERO
        else:
            offset, number = TAG.unpack_from(data)
            if data != sector_data(offset, number) or offset != s * SECTOR:
                verdict = max(verdict, Verdict.FOREIGN_DATA)
                details.append(f"sector {s * SECTOR:#x}: foreign data "
                               f"(tag offset={offset:#x} write={number})")
                continue
            value = number
        allowed = history.allowed(s)
        if value in allowed:
            continue
        writes = {history.requests[i].number
                  for i in history.per_sector.get(s, [])}
        if value != ZERO and value not in writes:
            verdict = max(verdict, Verdict.FOREIGN_DATA)
            details.append(f"sector {s * SECTOR:#x}: write {value} was "
                           "never sent to it")
        else:
            verdict = max(verdict, Verdict.LOST_ACKED_WRITES)
            details.append(f"sector {s * SECTOR:#x}: holds "
                           f"{'zeroes' if value == ZERO else f'write {value}'}"
                           f", allowed {sorted(allowed)}")
    return verdict, details


def run_round(workdir: str, cfg: Config, seed: int) -> RoundResult:
    """Run one round in @workdir (created; removed again if the round is good)."""
    rng = random.Random(seed)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    img = os.path.join(workdir, "crash.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o",
             f"cluster_size={cfg.cluster_size}", img, cfg.disk_size)
    history = History(cfg.disk_size // SECTOR)
    daemon, sock = _start_daemon(workdir, img, cfg)
    try:
        client = _Client(sock, history)
        kill_after = rng.randint(cfg.max_requests // 4, cfg.max_requests)
        for number in range(1, kill_after + 1):
            client.submit(_random_request(rng, cfg, number), cfg.max_in_flight)
        # Requests still in flight stay unacknowledged: they may or may
        # not have happened.
        daemon.kill()
        del client      # closes the connection
    finally:
        daemon.stop()

    rc, output = _check(img)
    if rc not in (0, 3) or "ERROR" in output:
        return RoundResult(Verdict.CORRUPT, cfg, seed, [output.strip()], img)
    raw_path = os.path.join(workdir, "crash.raw")
    qemu_img("convert", "-f", "qcow2", "-O", "raw", img, raw_path)
    with open(raw_path, "rb") as f:
        raw = f.read()
    os.unlink(raw_path)
    verdict, details = _judge_data(raw, history)
    if verdict == Verdict.CLEAN and rc == 3:
        verdict = Verdict.LEAKS_ONLY
    if verdict <= Verdict.LEAKS_ONLY:
        shutil.rmtree(workdir, ignore_errors=True)
    return RoundResult(verdict, cfg, seed, details, img)


def config_for(seed: int, configs: List[Config]) -> Config:
    """The matrix cell of the round with @seed (a seed replays its round)."""
    return configs[seed % len(configs)]
