"""Shared code for the blockd benchmarks (bench/nbd-io, bench/qcow2-io, ...).

A benchmark starts blockd and qemu-storage-daemon in turn with the *same*
command-line options, drives them with the same client (fio), and reports
the median of several interleaved rounds.  Daemons are started and stopped
exactly like the integration tests do it: readiness through --pidfile, stop
through QMP quit (then SIGTERM, then SIGKILL), and the child dies with us.
"""

import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "qemu-iotests"))

from qmp import QMP, QMPError  # noqa: E402  (path set up above)

DEFAULT_BLOCKD = os.path.join(REPO_ROOT, "build", "storage-daemon", "blockd")
DEFAULT_QSD = "/usr/bin/qemu-storage-daemon"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def die(msg: str) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_size(text: str) -> int:
    units = {"k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}
    t = text.strip().lower().rstrip("b").rstrip("i")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)          # PR_SET_PDEATHSIG


def binaries() -> Dict[str, str]:
    """The two daemons to compare: BLOCKD_BINARY (or the build) and QSD_BINARY."""
    found = {"blockd": os.environ.get("BLOCKD_BINARY", DEFAULT_BLOCKD),
             "qsd": os.environ.get("QSD_BINARY", DEFAULT_QSD)}
    for label, path in found.items():
        if not os.access(path, os.X_OK):
            die(f"{label} binary {path} not found (set BLOCKD_BINARY / QSD_BINARY)")
    return found


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        die(f"{tool} is not installed")


def make_workdir(base: Optional[str]) -> str:
    # Short paths: UNIX socket names are limited to 107 bytes.
    return tempfile.mkdtemp(prefix="bench-", dir=base or "/var/tmp")


class Daemon:
    """One daemon process; ``with Daemon(...) as d:`` stops it in all cases."""

    def __init__(self, binary: str, args: Sequence[str], workdir: str, tag: str,
                 timeout: float = 30.0):
        self.pidfile = os.path.join(workdir, f"{tag}.pid")
        self.qmp_path = os.path.join(workdir, f"{tag}.qmp")
        self.log = os.path.join(workdir, f"{tag}.log")
        for p in (self.pidfile, self.qmp_path):
            if os.path.exists(p):
                os.unlink(p)
        argv = [binary, "--chardev", f"socket,id=mon,path={self.qmp_path},server=on,wait=off",
                "--monitor", "chardev=mon", *args, "--pidfile", self.pidfile]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                die(f"{binary} exited during start-up:\n{self.output()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                die(f"{binary} did not start within {timeout}s")
            time.sleep(0.01)
        self.qmp = QMP(self.qmp_path)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the daemon (all its threads) used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            # Fields after the parenthesised command name; utime, stime are 14, 15.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """The daemon's resident set size (VmRSS) now."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KiB
        die(f"no VmRSS in /proc/{self.proc.pid}/status")

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        try:
            self.qmp.cmd("quit", timeout=10)
        except (QMPError, OSError):
            pass
        self.qmp.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def create_qcow2(image: str, size: int, cluster_size: str, prealloc: str = "off") -> None:
    """A new qcow2 image made by qemu-img, so both daemons see identical files."""
    if os.path.exists(image):
        os.unlink(image)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"cluster_size={cluster_size},preallocation={prealloc}",
                    image, str(size)], check=True)


def create_allocated_qcow2(image: str, size: int, cluster_size: str) -> None:
    """A preallocated qcow2 image, written once so reads return data, not
    preallocated zeroes, and no write allocates."""
    create_qcow2(image, size, cluster_size, "falloc")
    subprocess.run(["qemu-io", "-f", "qcow2", "-t", "none", "-c",
                    f"write -q -P 0x5a 0 {size}", image], check=True)


def qcow2_export_args(image: str, sock: str) -> List[str]:
    """Daemon options: @image as qcow2 node "disk" on an io_uring, O_DIRECT
    file node, exported writable over NBD on the UNIX socket @sock."""
    return ["--blockdev", f"driver=file,node-name=file0,filename={image},aio=io_uring,"
                          "cache.direct=on",
            "--blockdev", "driver=qcow2,node-name=disk,file=file0",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=exp0,node-name=disk,name=disk,writable=on"]


class FioClient:
    """How fio is run: ``prefix`` (say, setpriv) before its argv, ``env``
    for its environment (None: ours), and ``outdir``, a directory it can
    write its JSON report to (None: the work directory)."""

    def __init__(self, prefix: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 outdir: Optional[str] = None):
        self.prefix = list(prefix)
        self.env = env
        self.outdir = outdir


def run_fio(job: Dict[str, Any], workdir: str, timeout: float,
            client: Optional[FioClient] = None) -> Dict[str, Any]:
    """Run one fio job (options as a dict) and return its parsed JSON job entry."""
    client = client or FioClient()
    out = os.path.join(client.outdir or workdir, "fio.json")
    argv = client.prefix + ["fio", "--output-format=json", f"--output={out}",
                            "--name=bench"]
    argv += [f"--{k}={v}" if v is not True else f"--{k}" for k, v in job.items()]
    res = subprocess.run(argv, capture_output=True, timeout=timeout, env=client.env,
                         preexec_fn=_die_with_parent)
    if res.returncode != 0:
        die(f"fio failed ({res.returncode}): {' '.join(argv)}\n"
            f"{res.stdout.decode(errors='replace')}{res.stderr.decode(errors='replace')}")
    with open(out) as f:
        data = json.load(f)
    j = data["jobs"][0]
    if j.get("error"):
        die(f"fio job error {j['error']}")
    return j


def fio_result(job: Dict[str, Any], direction: str) -> Dict[str, float]:
    d = job[direction]
    clat = d.get("clat_ns", {})
    return {"iops": float(d["iops"]), "bw": float(d["bw_bytes"]),
            "lat_us": float(clat.get("mean", 0.0)) / 1000.0,
            "p50_us": float(clat.get("percentile", {}).get("50.000000", 0.0)) / 1000.0,
            "p99_us": float(clat.get("percentile", {}).get("99.000000", 0.0)) / 1000.0}


def measure(binary: str, args: Sequence[str], job: Dict[str, Any], direction: str,
            workdir: str, tag: str, timeout: float,
            client: Optional[FioClient] = None,
            setup: Optional[Callable[[Daemon], None]] = None) -> Dict[str, float]:
    """Start a daemon, call @setup on it if given, run one fio job against
    it with @client (see FioClient), stop it.

    Returns fio_result() plus ``cpu_us``: the daemon's CPU time (user +
    system, all threads) per request.  The CPU time is sampled just before
    and after fio, so it also covers fio's ramp time, which fio leaves out
    of its request count; the requests of the ramp are estimated from the
    measured rate.
    """
    with Daemon(binary, args, workdir, tag) as daemon:
        if setup is not None:
            setup(daemon)
        cpu_before = daemon.cpu_seconds()
        job_result = run_fio(job, workdir, timeout, client)
        cpu = daemon.cpu_seconds() - cpu_before
    res = fio_result(job_result, direction)
    runtime_s = job_result["job_runtime"] / 1000.0
    requests = res["iops"] * (runtime_s + float(job.get("ramp_time", 0)))
    res["cpu_us"] = cpu * 1e6 / requests if requests else float("nan")
    return res


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def median_ratio(runs_a: List[Dict[str, float]], runs_b: List[Dict[str, float]],
                 key: str) -> float:
    """Median over the rounds of a[key] / b[key]; runs_a[i] and runs_b[i]
    come from the same round (NaN if there are none)."""
    return median([ra[key] / rb[key] for ra, rb in zip(runs_a, runs_b) if rb[key]])


def median_row(name: str, samples: Dict[str, List[Dict[str, float]]],
               labels: Sequence[str] = ("blockd", "qsd")) -> Dict[str, Any]:
    """Medians over the rounds of one workload.

    {"name": name, label: {metric: median}, "ratio": {metric: median a/b}}.
    The ratio is the median of the per-round ratios, not the ratio of the
    medians: the daemons run back to back within a round, so each pair
    saw the same state of the machine, while load from outside moves
    whole rounds up and down.
    """
    a, b = labels
    row: Dict[str, Any] = {"name": name}
    for label in labels:
        runs = samples[label]
        row[label] = {key: median([r[key] for r in runs]) for key in runs[0]} if runs else {}
    row["ratio"] = {key: median_ratio(samples[a], samples[b], key) for key in row[a]}
    return row


# Table columns: metric key, heading, format, scale.  Each metric shows
# both daemons and their ratio a/b.
METRIC_COLUMNS = {
    "iops": ("IOPS", "{:.0f}", 1.0),
    "bw": ("MiB/s", "{:.1f}", 1.0 / MiB),
    "p50_us": ("p50 us", "{:.1f}", 1.0),
    "p99_us": ("p99 us", "{:.1f}", 1.0),
    "cpu_us": ("CPU us/req", "{:.1f}", 1.0),
}


def print_table(rows: List[Dict[str, Any]], metrics: Sequence[str] = ("iops", "bw"),
                labels: Sequence[str] = ("blockd", "qsd")) -> None:
    """One line per workload: for each metric, a's and b's medians and a/b
    (see median_row())."""
    a, b = labels
    width = max([20] + [len(r["name"]) for r in rows])
    group = f"{'':<{width}}"
    head = f"{'workload':<{width}}"
    for m in metrics:
        group += f" | {METRIC_COLUMNS[m][0]:<24}"
        head += f" | {a:>9} {b:>8} {'a/b':>5}"
    print(group.rstrip())
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['name']:<{width}}"
        for m in metrics:
            _, fmt, scale = METRIC_COLUMNS[m]
            va, vb = r[a].get(m, float("nan")), r[b].get(m, float("nan"))
            ratio = r["ratio"].get(m, float("nan"))
            line += f" | {fmt.format(va * scale):>9} {fmt.format(vb * scale):>8} {ratio:5.2f}"
        print(line)


def goal_mark(value: float, minimum: Optional[float] = None,
              maximum: Optional[float] = None) -> str:
    """"ok" or "MISS" for @value against a goal; "" without goal or value."""
    if (minimum is None and maximum is None) or value != value:     # NaN
        return ""
    ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    return "ok" if ok else "MISS"


def fmt(value: Optional[float], spec: str, width: int) -> str:
    """@value formatted, or "-" for a daemon that did not run the case."""
    if value is None or value != value:
        return f"{'-':>{width}}"
    return f"{spec.format(value):>{width}}"
