"""`make demo` as a user runs it, shared: one live demo process tree per test session (per
xdist worker) for the tests that drive a running demo (``live_demo``, listed in DEMO_TESTS),
since each start costs most of a minute of both cores; a test that stops it leaves the next a
new one. Under `make test` (``--dist loadgroup``) this plugin's scheduler sends those tests to
one worker as one unit, first: the longest unit of the run, so no worker idles at its end.
(xdist's own ``xdist_group`` mark does nothing under pytest 9.2: it renames the node id through
an attribute pytest no longer reads.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from xdist.scheduler import LoadGroupScheduling

from batchgen.fakes.ports import free_port
from tests.processes import ROOT

READY = "demo: Ctrl-C stops everything."
# The tests that use ``live_demo`` (node id prefixes), in the order they run on it: the last
# one stops it (tests/browser/ is collected before tests/integration/).
DEMO_TESTS = (
    "tests/browser/test_demo_browser.py::",
    "tests/integration/test_demo_processes.py::test_the_demo_runs_telegram_poll_",
    "tests/integration/test_demo_processes.py::test_the_demo_compares_",
    "tests/integration/test_demo_processes.py::test_the_demo_stays_alive_",
)


def demo_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST", "DATABASE_URL", "REDIS_URL"))}


def run_demo(tmp_path: Path, port: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The demo, shortened: one tick a mode, a tick a second, and a fake LLM of 0.1-0.2 s
    (its default 0.5 s made the 30 single-mode replies of its start-up take 17 s)."""
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        [sys.executable, "scripts/demo.py", "--port", str(port), "--db",
         str(tmp_path / "demo.sqlite3"), "--single-ticks", "1", "--batch-ticks", "1",
         "--tick-interval", "1", "--latency", "0.1", *extra],
        cwd=ROOT, env=demo_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    return proc, log


@dataclass
class LiveDemo:
    """A started `scripts/demo.py`: the test waits for READY in ``log`` itself."""

    proc: subprocess.Popen
    log: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Demos:
    """The session's demo: the running one, or a new one once a test has stopped it."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.current: LiveDemo | None = None

    def running(self) -> LiveDemo:
        if self.current is None or self.current.proc.poll() is not None:
            port = free_port()
            proc, log = run_demo(self.factory.mktemp("demo"), port)
            self.current = LiveDemo(proc, log, port)
        return self.current


@pytest.fixture(scope="session", name="_demos")
def demos_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demos]:
    demos = Demos(tmp_path_factory)
    yield demos
    if demos.current is not None:
        demos.current.stop()


@pytest.fixture(name="live_demo")
def live_demo_fixture(_demos: Demos, request: pytest.FixtureRequest) -> LiveDemo:
    """The session's live demo, started if none runs (starting one takes most of a minute)."""
    if not request.node.nodeid.startswith(DEMO_TESTS):
        pytest.fail(f"{request.node.nodeid} uses live_demo: add it to DEMO_TESTS in "
                    "tests/demo_support.py, so that xdist runs it on the demo's worker",
                    pytrace=False)
    return _demos.running()


class DemoGroupScheduling(LoadGroupScheduling):
    """xdist's ``loadgroup``: each test a unit of its own, handed to whichever worker is
    free, except that DEMO_TESTS make one unit, which goes first (the largest)."""

    def _split_scope(self, nodeid: str) -> str:
        return "live-demo" if nodeid.startswith(DEMO_TESTS) else super()._split_scope(nodeid)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadGroupScheduling | None:
    if config.getvalue("dist") != "loadgroup":
        return None
    return DemoGroupScheduling(config, log)  # type: ignore[arg-type]
