"""Processes and measurements the benchmark sections share.

Every service the benchmark talks to is private to one run: a redis-server on
a free port (never a shared Redis database), a SQLite file in a temporary
directory (or, with ``--postgres``, a fresh database on that server), the fake
LLM provider and the fake Telegram each in their own
process, so they do not compete with the client for its GIL.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batchgen.fakes.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
API_KEY = "bench-key-offline"
# With DEBUG off the deploy checks refuse short or placeholder secrets, as in production.
BENCH_SECRET_KEY = "bench-only-secret-key-" + "x" * 40
BENCH_METRICS_TOKEN = "bench-only-metrics-token"
BENCH_FIELD_KEY = "YmVuY2gtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE="  # a Fernet key, bench only
_FAKE_LLM = ("from batchgen.fakes.llm_app import run; import sys; "
             "run(port=int(sys.argv[1]))")
_FAKE_TELEGRAM = ("from aiohttp import web; import sys; "
                  "from batchgen.fakes.telegram_server import make_app; "
                  "web.run_app(make_app(), host='127.0.0.1', port=int(sys.argv[1]), "
                  "print=None, access_log=None)")


def _wait_or_exit(port: int, what: str) -> None:
    if not wait_for_port(port):
        raise SystemExit(f"bench: {what} did not start on port {port}")


@dataclass
class Services:
    """The private services of one benchmark run, and the environment pointing at them."""

    workdir: Path
    llm_url: str = ""
    telegram_url: str = ""
    redis_url: str = ""
    database_url: str = ""
    children: list[subprocess.Popen] = field(default_factory=list)
    _fake_redis: Any = None
    _drop_database: Callable[[], None] | None = None

    def start(self, args: Sequence[str], env: dict[str, str] | None = None,
              log_name: str | None = None) -> subprocess.Popen:
        out: Any = subprocess.DEVNULL
        if log_name:
            out = open(self.workdir / f"{log_name}.log", "ab")  # noqa: SIM115 (lives with the child)
        proc = subprocess.Popen(list(args), cwd=ROOT, env=env or self.env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(proc)
        return proc

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for Django processes of this run (the worker, manage.py)."""
        env = {k: v for k, v in os.environ.items()
               if not k.endswith(("_API_KEY", "_API_KEYS", "_BASE_URL"))}
        env.update(
            DJANGO_SETTINGS_MODULE="botplatform.settings", DEBUG="false",
            SECRET_KEY=BENCH_SECRET_KEY, METRICS_TOKEN=BENCH_METRICS_TOKEN,
            FIELD_ENCRYPTION_KEYS=BENCH_FIELD_KEY, ALLOWED_HOSTS="127.0.0.1",
            DATABASE_URL=self.database_url, REDIS_URL=self.redis_url,
            LLM_PROVIDER="openai", LLM_MODEL="gpt-4o-mini", OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=f"{self.llm_url}/v1", TELEGRAM_API_BASE_URL=self.telegram_url,
            LLM_CIRCUIT_BREAKER_THRESHOLD="1000", BATCH_RETRY_BACKOFF_SECONDS="0",
            LOG_LEVEL="ERROR", PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def stop(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.children.clear()
        if self._fake_redis is not None:
            self._fake_redis.shutdown()

    def drop_database(self) -> None:
        """Drop the run's PostgreSQL database (``--postgres``), after every process closed."""
        if self._drop_database is not None:
            from django.db import connections

            connections.close_all()
            self._drop_database()
            self._drop_database = None


def start_services(postgres: str = "") -> Services:
    """Redis, the fake LLM and the fake Telegram, each on a free port; a fresh SQLite path,
    or a fresh database on the PostgreSQL server at ``postgres`` (a postgres:// URL)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    services = Services(workdir=workdir, database_url=f"sqlite:///{workdir / 'bench.sqlite3'}")
    if postgres:
        services.database_url, services._drop_database = fresh_postgres(postgres, workdir.name)
    services.redis_url = _start_redis(services)
    llm_port, telegram_port = free_port(), free_port()
    services.start([PYTHON, "-c", _FAKE_LLM, str(llm_port)], log_name="fake-llm")
    services.start([PYTHON, "-c", _FAKE_TELEGRAM, str(telegram_port)], log_name="fake-telegram")
    _wait_or_exit(llm_port, "the fake LLM provider")
    _wait_or_exit(telegram_port, "the fake Telegram")
    services.llm_url = f"http://127.0.0.1:{llm_port}"
    services.telegram_url = f"http://127.0.0.1:{telegram_port}"
    return services


def fresh_postgres(url: str, name: str) -> tuple[str, Callable[[], None]]:
    """A new database on the server at ``url``, its URL, and how to drop it."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"bench: --postgres must be a postgres:// URL, got {parts.scheme}://")
    database = name.replace("-", "_")
    admin = urlunsplit(parts._replace(scheme="postgresql"))

    def execute(sql: str) -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(sql)

    execute(f'CREATE DATABASE "{database}"')
    return (urlunsplit(parts._replace(path=f"/{database}")),
            lambda: execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _start_redis(services: Services) -> str:
    port = free_port()
    server = shutil.which("redis-server")
    if server:
        services.start([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(services.workdir)])
    else:  # a fresh machine without Redis: fakeredis's TCP server in this process
        from fakeredis import TcpFakeServer

        services._fake_redis = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        threading.Thread(target=services._fake_redis.serve_forever, daemon=True).start()
    _wait_or_exit(port, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def flush_redis(services: Services) -> None:
    """Empty the run's private Redis (never a shared one: it was started for this run)."""
    import redis

    from batchgen.state import shared

    client = redis.Redis.from_url(services.redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    shared.reset()  # this process's copies of what was in it


def setup_django(services: Services) -> None:
    """Configure this process like the worker (same database, Redis and fakes)."""
    os.environ.update(services.env())
    import django

    django.setup()


def fake_llm(services: Services, path: str, body: dict | None = None) -> dict:
    url = f"{services.llm_url}{path}"
    if body is None:
        return httpx.get(url, timeout=10).raise_for_status().json()
    return httpx.post(url, json=body, timeout=10).raise_for_status().json()


def configure_fake(services: Services, **config: Any) -> None:
    """Reset the fake's counters and set its latency model (unset fields: no limit, no fault)."""
    base = {"latency": 0.0, "jitter": 0.0, "latency_mode": "fixed", "latency_sigma": 0.5,
            "rpm": 0, "rpm_window": 60.0, "fault": None}
    fake_llm(services, "/_control", {**base, **config})
    fake_llm(services, "/_reset", {})


def fixed_with_jitter(mean: float, jitter_fraction: float) -> dict[str, float]:
    """Fake settings for latency uniform in mean ± jitter_fraction/2 (the fake adds 0..jitter)."""
    jitter = mean * jitter_fraction
    return {"latency": mean - jitter / 2, "jitter": jitter}


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def lognormal_sigma_for_p99(ratio: float) -> float:
    """The sigma whose lognormal has p99 = ratio x mean (mean fixed): solves
    exp(z99*s - s^2/2) = ratio; the smaller root (z99 = 2.3263)."""
    z = 2.3263
    return z - math.sqrt(z * z - 2 * math.log(ratio))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {cpu}, Python {sys.version.split()[0]}, {sys.platform}"


def vm_kib(pid: int, field_name: str) -> int | None:
    """VmHWM (peak RSS) or VmRSS of a process in KiB, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def child_pids(pid: int) -> list[int]:
    """A process's children, forked by any of its threads."""
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except OSError:
        return []


_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL a process and its children at once (an RQ work-horse, in a session of its
    own, included), as a machine dying would, and wait for it."""
    for pid in [*child_pids(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def process_cpu(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU of a process in seconds (0 once it is gone); with
    ``reaped_children``, also that of the children it has waited for (an RQ work-horse,
    which runs in a session of its own, is reaped by its worker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15 if reaped_children else 13]) / _CLOCK_TICK


class RssSampler:
    """Samples the peak RSS (VmHWM) of a process and its children (RQ work-horses).

    A work-horse lives for one job; sampling every 20 ms reads its VmHWM (the
    kernel's high-water mark, not the current RSS) shortly before it exits, so
    only growth in its last few milliseconds can be missed.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.horse_peaks: dict[int, int] = {}
        self.parent_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.parent_peak = max(self.parent_peak, vm_kib(self.pid, "VmHWM") or 0)
            for child in child_pids(self.pid):
                peak = vm_kib(child, "VmHWM")
                if peak:
                    self.horse_peaks[child] = max(self.horse_peaks.get(child, 0), peak)
            self._stop.wait(self.interval)
