"""A run says what held its slots: seconds per reason, flushed to "what binds" once a second."""

from __future__ import annotations

import fakeredis
import pytest

from batchgen.dashboard.binds import read_held
from batchgen.delivery.drain import HeldTime


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_run_times_each_reason_it_was_held_for(memory_redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    held = HeldTime(clock)
    for reason, seconds in (("slots", 0.4), ("pacing", 0.5), ("", 0.2), ("idle", 0.3)):
        held.now_held_by(reason)
        clock.now += seconds
    held.now_held_by("")  # the run ends
    held.flush()

    reasons, _ = read_held()
    assert reasons == pytest.approx({"slots": 0.4, "pacing": 0.5, "idle": 0.3,
                                     "rate_budget": 0.0, "cap": 0.0}, abs=1e-6)


def test_it_writes_at_most_once_a_second(memory_redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    held = HeldTime(clock)
    held.now_held_by("pacing")
    clock.now += 0.5
    held.now_held_by("pacing")
    assert read_held()[0]["pacing"] == 0.0  # not yet written
    clock.now += 0.6
    held.now_held_by("pacing")
    assert read_held()[0]["pacing"] == pytest.approx(1.1, abs=1e-6)
