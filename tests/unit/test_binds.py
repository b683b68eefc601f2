"""What limits throughput now (batchgen.dashboard.binds): the share of the last 10 minutes
each limit held work back, the most-paced chats by title, and the same on /metrics."""

from __future__ import annotations

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from batchgen import metrics
from batchgen.dashboard import binds
from batchgen.models import Chat
from batchgen.state import shared

pytestmark = pytest.mark.django_db

T0 = 29_000_000 * 60.0 + 30  # mid-minute, on a fake clock
NOW = T0 + 9 * 60


def hold(reason: str, seconds: float, chat: str = "", minutes_ago: int = 0) -> None:
    metrics.observe_held(reason, seconds, chat, now=NOW - 60 * minutes_ago)


def shares(card: binds.Binds) -> dict[str, tuple[int, int]]:
    """reason -> (percent, seconds), rounded as the card shows them."""
    return {h.reason: (round(h.percent), round(h.seconds)) for h in card.holds}


def test_each_reason_gets_its_share_of_the_held_time(memory_redis: fakeredis.FakeRedis) -> None:
    hold("pacing", 20.0, "-1001", minutes_ago=9)  # the window's first minute
    hold("pacing", 220.0, "-1002", minutes_ago=1)
    hold("rate_budget", 60.0, minutes_ago=5)
    hold("slots", 40.0)
    hold("idle", 60.0, minutes_ago=3)
    hold("cap", 999.0, minutes_ago=12)  # before the window: not counted
    hold("cap", 40.0, minutes_ago=9)  # began before the window: its last 30 s count

    card = binds.what_binds(now=NOW)

    assert shares(card) == {"pacing": (56, 240), "rate_budget": (14, 60), "cap": (7, 30),
                            "slots": (9, 40), "idle": (14, 60)}
    assert card.binding.label == "Telegram pacing"
    assert [h.label for h in card.holds] == ["Telegram pacing", "LLM rate budget", "caps",
                                             "in-flight slots", "idle (nothing to do)"]


def test_the_most_paced_chats_show_their_title_when_known(
        memory_redis: fakeredis.FakeRedis) -> None:
    Chat.objects.create(telegram_chat_id=-1002, title="Traders lounge")
    for n, seconds in enumerate((5.0, 80.0, 30.0, 1.0, 2.0, 3.0, 60.0)):
        hold("pacing", seconds, str(-1000 - n), minutes_ago=n)

    card = binds.what_binds(now=NOW)

    assert [(c.title, round(c.seconds)) for c in card.chats] == [
        ("-1001", 80), ("-1006", 60), ("Traders lounge", 30), ("-1000", 5), ("-1005", 3)]


def test_nothing_held_reads_nothing_not_a_share(memory_redis: fakeredis.FakeRedis) -> None:
    hold("slots", 30.0, minutes_ago=15)  # long ago

    card = binds.what_binds(now=NOW)

    assert card.available and card.binding is None and card.total_seconds == 0
    assert all(h.share == 0 for h in card.holds)


def test_an_unreachable_store_reads_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str | None = None) -> redis.Redis:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(shared, "connection", unreachable)

    card = binds.what_binds(now=NOW)

    assert not card.available and card.binding is None


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


def test_metrics_export_the_totals_the_shares_and_the_top_chats(
        memory_redis: fakeredis.FakeRedis, client, settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings.DEBUG, settings.METRICS_TOKEN = True, ""
    monkeypatch.setattr(binds.time, "time", lambda: NOW)
    hold("pacing", 30.0, "-1001")
    for n in range(binds.METRICS_TOP_CHATS + 5):
        hold("pacing", 1.0, str(-2000 - n), minutes_ago=2)
    hold("rate_budget", 55.0, minutes_ago=4)
    hold("idle", 100.0, minutes_ago=30)  # counted in the total, not in the last 10 minutes

    samples = scrape(client)

    assert samples[("batchgen_held_seconds_total", (("reason", "pacing"),))] == 45.0
    assert samples[("batchgen_held_seconds_total", (("reason", "idle"),))] == 100.0
    assert samples[("batchgen_held_share", (("reason", "pacing"),))] == 0.45
    assert samples[("batchgen_held_share", (("reason", "rate_budget"),))] == 0.55
    assert samples[("batchgen_held_share", (("reason", "idle"),))] == 0.0
    paced = {labels[0][1]: value for (name, labels), value in samples.items()
             if name == "batchgen_pacing_held_seconds"}
    assert len(paced) == binds.METRICS_TOP_CHATS and paced["-1001"] == 30.0
