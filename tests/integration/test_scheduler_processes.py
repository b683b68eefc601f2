"""The tick: one run per idle worker, nothing claimed for a job that cannot start, a loop
that rides out outages."""

from __future__ import annotations

import signal
import time

import pytest

from tests.factories import make_item
from tests.processes import process_env, start, stop

# The tick loop backs off in real seconds: alone, after the parallel part.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.serial]


def test_tick_loop_logs_each_failure_backs_off_and_goes_on_until_a_signal(
        pipeline_env, settings) -> None:
    item = make_item()
    env = process_env(settings, REDIS_URL="redis://127.0.0.1:1/0")  # Redis is away
    loop = start(env, "tick", "--loop", "--interval", "0.1")
    time.sleep(4)
    assert loop.poll() is None, "the loop exited on an outage"
    out = stop(loop, signal.SIGTERM)
    assert loop.returncode == 0, out
    failures = [line for line in out.splitlines() if line.startswith("tick failed (")]
    assert 2 <= len(failures) < 40, out  # backing off, not spinning
    assert "ConnectionError" in failures[0] and "retrying in " in failures[0]
    item.refresh_from_db()
    assert (item.status, item.attempts) == ("pending", 0)


def test_tick_loop_exits_on_a_configuration_error(pipeline_env, settings) -> None:
    make_item()
    env = process_env(settings, OPENAI_API_KEY="", OPENAI_API_KEYS="")
    loop = start(env, "tick", "--loop", "--interval", "0.1")
    out, _ = loop.communicate(timeout=60)
    assert loop.returncode != 0 and "configuration error" in out


def test_a_pushed_item_wakes_a_sleeping_tick_loop_before_its_interval(pipeline_env,
                                                                      settings) -> None:
    import threading

    from batchgen.work import queue
    from tests.factories import make_bot, make_chat

    loop = start(process_env(settings), "tick", "--loop", "--interval", "60")
    try:
        assert "tick: nothing pending" in loop.stdout.readline()
        second: list[str] = []
        reader = threading.Thread(target=lambda: second.append(loop.stdout.readline()))
        reader.start()
        pushed = time.monotonic()
        queue.push(make_bot(), make_chat())  # commits at once: the nudge goes out
        reader.join(timeout=15)
        woke_after = time.monotonic() - pushed
    finally:
        stop(loop)
    assert second and "run(s) queued" in second[0], second
    assert woke_after < 10  # not the 60 s interval
