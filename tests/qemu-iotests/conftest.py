"""pytest fixtures for the blockd integration tests (see docs/devel/testing.rst)."""

import os
from typing import Any, Callable, List

import pytest

import iotests
from iotests import Daemon


def pytest_configure(config: Any) -> None:
    # Registered here as well as in pytest.ini, so that running a single file
    # from another directory does not warn about unknown markers.
    for line in ("quick: fast test (iotests group quick)",
                 "rw: writes and verifies image data (iotests group rw)",
                 "slow: long-running (iotests group slow)",
                 "blockd_only: skipped against qemu-storage-daemon"):
        config.addinivalue_line("markers", line)


def pytest_report_header(config: Any) -> str:
    kind = "reference qemu-storage-daemon" if iotests.is_reference() else "blockd"
    return f"daemon under test: {iotests.daemon_binary()} ({kind})"


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    # A blockd_only marker implies a skip against the reference daemon.
    if not iotests.is_reference():
        return
    for item in items:
        m = item.get_closest_marker("blockd_only")
        if m is not None:
            reason = m.args[0] if m.args else "checks blockd-only behaviour"
            item.add_marker(pytest.mark.skip(reason=f"blockd-only: {reason}"))


@pytest.fixture
def scratch(tmp_path: Any) -> str:
    """Per-test scratch directory for images, pidfiles and logs."""
    return str(tmp_path)


@pytest.fixture
def daemon_factory(scratch: str) -> Callable[..., Daemon]:
    """Start daemons: ``daemon_factory(*args, monitors=1, daemonize=False)``.

    Every daemon started through the factory is stopped at teardown, whatever
    the test outcome (QMP quit, then SIGTERM, then SIGKILL).  A daemon still
    running at teardown must shut down cleanly (exit status 0), so crashes on
    shutdown and sanitizer reports fail the test.
    """
    started: List[Daemon] = []

    def start(*args: str, monitors: int = 1, daemonize: bool = False,
              subdir: str = "") -> Daemon:
        d_scratch = os.path.join(scratch, subdir or f"d{len(started)}")
        os.makedirs(d_scratch, exist_ok=True)
        d = Daemon.__new__(Daemon)
        started.append(d)          # registered before start so teardown sees it
        Daemon.__init__(d, d_scratch, list(args), monitors=monitors, daemonize=daemonize)
        return d

    yield start
    unclean = []
    for d in reversed(started):
        if getattr(d, "argv", None) is not None:
            was_running = d.alive()
            if not d.stop() and was_running:
                unclean.append(f"{d.binary} (rc={d.returncode}): {d.stderr()[-4000:]}")
    if unclean:
        pytest.fail("daemon did not shut down cleanly at teardown:\n" + "\n".join(unclean))


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A daemon with one QMP monitor and nothing else configured."""
    return daemon_factory()
