"""The shared circuit breaker: real Redis, two processes, an injected clock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.state.breakers import CircuitBreaker, CircuitOpenError

PROJECT_DIR = Path(__file__).resolve().parents[2]


from tests.unit.test_resilience import FakeClock, _fresh_breakers  # noqa: E402,F401,I001


def test_it_opens_after_threshold_failures_across_two_processes(redis_url: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("openai_api", threshold=5, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    script = (
        "import django; django.setup()\n"
        "from batchgen.state.breakers import CircuitBreaker\n"
        "b = CircuitBreaker('openai_api', threshold=5)\n"
        "for _ in range(3):\n"
        "    b.before_call(); b.record_failure()\n"
        "print(b.get_state()['state'], b.get_state()['backend'])\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "botplatform.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=60, check=True)

    assert done.stdout.split() == ["open", "redis"]
    assert breaker.get_state()["state"] == "open"
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
