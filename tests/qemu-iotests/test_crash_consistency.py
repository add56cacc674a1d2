"""kill -9 at random moments of a recorded NBD workload on qcow2.

A bounded run of crash_harness.py: a few rounds in every cell of its
matrix (512 B and 64 KiB clusters, discard=unmap or not).  Each round
writes, zeroes (with and without NO_HOLE), trims and flushes through
libnbd with several requests in flight, kills the daemon with SIGKILL,
and then requires of the image: at most leaks in ``qemu-img check``,
every write acknowledged before an acknowledged flush still there, and
no sector holding data written for another offset.  ``scripts/crash-soak``
runs the same rounds by the thousand.

iotests groups: rw
"""

import pytest

pytest.importorskip("nbd", reason="needs libnbd's Python binding (python3-libnbd)")

import crash_harness  # noqa: E402  (after the skip: it imports nbd)
from crash_harness import Verdict  # noqa: E402

pytestmark = [pytest.mark.rw]

ROUNDS_PER_CELL = 8


@pytest.mark.parametrize("config", crash_harness.matrix(), ids=lambda c: c.name)
def test_kill9_rounds(scratch, config):
    """Every round ends clean or with leaked clusters only."""
    bad = []
    for i in range(ROUNDS_PER_CELL):
        seed = 1000 * i + crash_harness.matrix().index(config)
        result = crash_harness.run_round(f"{scratch}/round{seed}", config, seed)
        if result.verdict > Verdict.LEAKS_ONLY:
            bad.append(f"seed {seed}: {result.verdict.label}: "
                       + "; ".join(result.details[:5]))
    assert not bad, "\n".join(bad)
