"""Messages sent per minute over time (batchgen.dashboard.sent_chart), from Message.sent_at."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from batchgen.dashboard.sent_chart import sent_per_minute_chart
from batchgen.models import Bot, Chat, Message, QueueItem

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 4, 12, 30, 20, tzinfo=UTC)


def send(at: datetime, status: str = "sent", provider: str = "") -> Message:
    bot = Bot.objects.first() or Bot.objects.create(name="b", telegram_token="1:x")
    chat = Chat.objects.first() or Chat.objects.create(telegram_chat_id=-100, title="c")
    item = QueueItem.objects.create(bot=bot, chat=chat)
    return Message.objects.create(queue_item=item, bot=bot, chat=chat, text="hi", status=status,
                                  sent_at=at if status == "sent" else None, provider=provider)


def points(html: str) -> list[str]:
    """Each point's tooltip, as the reader hovers it."""
    return re.findall(r"<circle[^>]*><title>([^<]*)</title>", html)


def test_the_last_hour_has_a_point_a_minute_quiet_minutes_at_zero() -> None:
    for seconds in (5, 10, 15):
        send(NOW - timedelta(minutes=2, seconds=seconds))  # 12:28:xx
    send(NOW - timedelta(seconds=10))  # 12:30:10
    send(NOW - timedelta(minutes=61))  # before the hour
    send(NOW - timedelta(minutes=5), status="failed")

    html = sent_per_minute_chart({}, now=NOW)

    tips = points(html)
    assert "<figcaption>Messages sent per minute (last 60 minutes)</figcaption>" in html
    assert len(tips) == 60
    assert tips[0] == "11:31 — sent: 0 sent"
    assert tips[-3:] == ["12:28 — sent: 3 sent", "12:29 — sent: 0 sent", "12:30 — sent: 1 sent"]


def test_a_window_of_days_has_a_point_an_hour_with_the_mean_per_minute() -> None:
    for minute in range(0, 60, 2):  # 30 messages in the 10:00 hour
        send(NOW.replace(hour=10, minute=minute) - timedelta(days=1))
    span = (NOW.replace(hour=0, minute=0, second=0) - timedelta(days=2), None)

    html = sent_per_minute_chart({}, span, now=NOW)

    assert "Messages sent per minute (mean of each hour)" in html
    assert "05-03 10:00 — sent: 30 sent (0.50 / min)" in points(html)
    # The chosen days up to now, quiet hours at 0: 05-02 00:00 to 05-04 12:00.
    assert len(points(html)) == 48 + 13


def test_a_window_without_a_start_begins_at_its_first_message() -> None:
    send(NOW - timedelta(minutes=90))

    html = sent_per_minute_chart({}, (None, None), now=NOW)

    assert points(html)[0] == "11:00 — sent: 1 sent" and len(points(html)) == 91


def test_the_filters_apply_to_the_messages() -> None:
    send(NOW - timedelta(minutes=1), provider="groq")

    drawn = sent_per_minute_chart({"provider": "groq"}, now=NOW)
    other = sent_per_minute_chart({"provider": "openai"}, now=NOW)

    assert "12:29 — sent: 1 sent" in points(drawn)
    assert points(other) == [] and "No data yet" in other


def test_nothing_sent_reads_no_data_not_a_flat_line() -> None:
    send(NOW - timedelta(hours=3))

    html = sent_per_minute_chart({}, now=NOW)

    assert "No data yet" in html and "<svg" not in html
