"""Run real `manage.py` processes (tick, rqworker) against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

from bench import harness

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the tests are using (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def process_env(settings, **extra: str) -> dict[str, str]:
    """Environment for a child process that sees what this test configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="botplatform.settings", DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL, LLM_PROVIDER=settings.LLM_PROVIDER,
        LLM_MODEL=settings.LLM_MODEL or "", OPENAI_BASE_URL=settings.OPENAI_BASE_URL,
        OPENAI_API_KEY=settings.OPENAI_API_KEY, OPENAI_TIMEOUT=str(settings.OPENAI_TIMEOUT),
        LLM_MAX_RETRIES=str(settings.LLM_MAX_RETRIES),
        LLM_CIRCUIT_BREAKER_THRESHOLD=str(settings.LLM_CIRCUIT_BREAKER_THRESHOLD),
        TELEGRAM_API_BASE_URL=settings.TELEGRAM_API_BASE_URL,
        BATCH_RETRY_BACKOFF_SECONDS=str(settings.BATCH_RETRY_BACKOFF_SECONDS),
        BATCH_MAX_WORKERS=str(settings.BATCH_MAX_WORKERS or ""), PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start(env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start `manage.py ARGS` in its own process group (so a kill reaches its children)."""
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL a process and its children at once, as a machine dying would (the bench's
    ``kill_hard``), and drain its output pipe."""
    harness.kill_hard(proc)
    proc.communicate(timeout=30)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> str:
    """Signal the whole process group, wait, and return what it printed."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
