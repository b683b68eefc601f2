"""observe_held (batchgen.metrics): held seconds per reason and per paced chat, in per-minute
buckets that expire, one Redis round trip per call, and never an exception."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from batchgen import metrics
from batchgen.dashboard.binds import read_held
from batchgen.metrics import HELD_CHATS_KEPT, HELD_TTL_SECONDS, held_chats_key, held_key
from batchgen.state import shared

MINUTE = 29_000_000  # a minute number: the fake clock runs from its start
T0 = MINUTE * 60.0
GROUP = "-1001234567890"


def test_a_wait_counts_in_each_minute_it_lasted(memory_redis: fakeredis.FakeRedis) -> None:
    metrics.observe_held("pacing", 90.0, GROUP, now=T0 + 30)

    assert float(memory_redis.hget(held_key(MINUTE), "pacing")) == 30.0
    assert float(memory_redis.hget(held_key(MINUTE - 1), "pacing")) == 60.0
    assert memory_redis.zscore(held_chats_key(MINUTE - 1), GROUP) == 60.0
    assert read_held(now=T0 + 30) == ({"pacing": 90.0, "rate_budget": 0.0, "cap": 0.0,
                                       "slots": 0.0, "idle": 0.0}, {GROUP: 90.0})


def test_only_the_last_ten_minutes_are_read(memory_redis: fakeredis.FakeRedis) -> None:
    metrics.observe_held("slots", 5.0, now=T0 - 10 * 60 + 30)  # the 11th minute back
    metrics.observe_held("slots", 7.0, now=T0 - 9 * 60 + 30)  # the 10th
    metrics.observe_held("idle", 3.0, now=T0 + 1)

    reasons, _ = read_held(now=T0 + 1)

    assert (reasons["slots"], reasons["idle"]) == (7.0, 3.0)


def test_buckets_expire_and_the_total_counter_does_not(memory_redis: fakeredis.FakeRedis) -> None:
    metrics.observe_held("pacing", 2.0, GROUP, now=T0 + 10)
    metrics.observe_held("rate_budget", 4.5, now=T0 + 20)

    assert 0 < memory_redis.ttl(held_key(MINUTE)) <= HELD_TTL_SECONDS
    assert 0 < memory_redis.ttl(held_chats_key(MINUTE)) <= HELD_TTL_SECONDS
    total = memory_redis.hgetall(metrics.SPECS["batchgen_held_seconds_total"].key)
    assert total == {'["pacing"]': "2", '["rate_budget"]': "4.5"}
    assert memory_redis.ttl(metrics.SPECS["batchgen_held_seconds_total"].key) == -1


def test_the_chats_kept_per_minute_are_bounded_to_the_most_paced(
        memory_redis: fakeredis.FakeRedis) -> None:
    metrics.observe_held("pacing", 50.0, GROUP, now=T0 + 55)
    for n in range(HELD_CHATS_KEPT + 40):
        metrics.observe_held("pacing", 0.5, str(-5000 - n), now=T0 + 55)

    assert memory_redis.zcard(held_chats_key(MINUTE)) == HELD_CHATS_KEPT
    assert memory_redis.zscore(held_chats_key(MINUTE), GROUP) == 50.0
    # The reason's own total keeps every second, trimmed chats included.
    assert read_held(now=T0 + 55)[0]["pacing"] == pytest.approx(50.0 + 0.5 * 140)


def test_a_chat_is_recorded_for_pacing_only(memory_redis: fakeredis.FakeRedis) -> None:
    metrics.observe_held("cap", 12.0, GROUP, now=T0 + 30)

    assert read_held(now=T0 + 30) == ({"pacing": 0.0, "rate_budget": 0.0, "cap": 12.0,
                                       "slots": 0.0, "idle": 0.0}, {})


@pytest.mark.parametrize(("reason", "seconds"), [("weather", 3.0), ("pacing", 0.0),
                                                 ("pacing", -2.0), ("pacing", float("nan")),
                                                 ("pacing", "soon")])
def test_a_bad_sample_records_nothing_and_raises_nothing(
        memory_redis: fakeredis.FakeRedis, reason: str, seconds: float) -> None:
    metrics.observe_held(reason, seconds, GROUP, now=T0)

    assert memory_redis.keys("*") == []


def test_one_call_is_one_round_trip(memory_redis: fakeredis.FakeRedis,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    trips = []
    real_attempt = shared.attempt
    monkeypatch.setattr(shared, "attempt",
                        lambda op, default, what="": trips.append(what) or real_attempt(
                            op, default, what))

    metrics.observe_held("pacing", 150.0, GROUP, now=T0 + 30)  # spans four minutes

    assert trips == ["metrics"]
    assert read_held(now=T0 + 30)[0]["pacing"] == 150.0


def test_samples_are_dropped_while_redis_is_away(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str | None = None) -> redis.Redis:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(shared, "connection", unreachable)

    metrics.observe_held("idle", 5.0, now=T0)  # must not raise

    assert read_held(now=T0) is None
