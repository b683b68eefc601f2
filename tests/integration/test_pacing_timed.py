"""Telegram pacing shared through Redis, timed by the Redis server's clock: real seconds."""

from __future__ import annotations

import pytest

from batchgen.state import shared
from batchgen.telegram.client import ChatPacer
from batchgen.telegram.pacing import BOT_BURST, SharedPacer

# The gaps are real seconds (Redis TIME): alone, after the parallel part.
pytestmark = pytest.mark.serial


def pacer(**options) -> tuple[SharedPacer, list[float]]:
    slept: list[float] = []
    return SharedPacer.like(ChatPacer(), sleep=slept.append, **options), slept


def test_two_workers_sending_for_one_bot_to_one_group_share_its_20_a_minute(redis_url) -> None:
    shared.reset()
    first, _ = pacer()
    second, _ = pacer()  # another process: nothing shared but Redis
    waits = [(first if n % 2 else second).book(-100777, bot="bot0") for n in range(6)]
    # One slot every 3 s for the bot in the group, whichever worker books it.
    assert waits[0] == pytest.approx(0, abs=0.05)
    for earlier, later in zip(waits, waits[1:], strict=False):
        assert later - earlier == pytest.approx(3.0, abs=0.05)


def test_two_bots_in_one_group_each_get_20_a_minute(redis_url) -> None:
    # Telegram counts per bot token: a second bot in the group has a budget of its own.
    shared.reset()
    first, _ = pacer()
    second, _ = pacer()
    alpha = [first.book(-100888, bot="alpha") for _ in range(3)]
    beta = [second.book(-100888, bot="beta") for _ in range(3)]
    assert alpha == pytest.approx([0.0, 3.0, 6.0], abs=0.05)
    assert beta == pytest.approx([0.0, 3.0, 6.0], abs=0.05)


def test_one_bot_in_two_chats_is_paced_per_chat_not_across_them(redis_url) -> None:
    shared.reset()
    one, _ = pacer()
    assert one.book(-100901, bot="alpha") == pytest.approx(0, abs=0.05)
    assert one.book(-100902, bot="alpha") == pytest.approx(0, abs=0.05)
    assert one.book(-100901, bot="alpha") == pytest.approx(3.0, abs=0.05)


def test_private_chats_are_paced_per_chat_and_the_bot_per_its_30_a_second(redis_url) -> None:
    shared.reset()
    one, _ = pacer()
    assert one.book(5001, bot="a") == pytest.approx(0, abs=0.05)
    assert one.book(5001, bot="a") == pytest.approx(1.0, abs=0.05)  # same chat: 1 s
    other_chats = [one.book(6000 + n, bot="b") for n in range(40)]
    # The bot's burst of 10 goes at once (a batch's replies to many chats go together)...
    assert other_chats[:BOT_BURST] == pytest.approx([0] * BOT_BURST, abs=0.05)
    # ...then 30 a second: 40 sends take 30/30 s, so no second holds more than 30 + 10.
    assert other_chats[-1] == pytest.approx(30 / 30, abs=0.1)
    gaps = [b - a for a, b in zip(other_chats[BOT_BURST:], other_chats[BOT_BURST + 1:],
                                 strict=False)]
    assert all(gap == pytest.approx(1 / 30, abs=0.01) for gap in gaps)
    assert one.book(7000, bot="c") == pytest.approx(0, abs=0.05)


def test_a_send_that_went_late_moves_the_bots_next_slot_in_the_chat_back(redis_url) -> None:
    # A reply ready a second after its slot went then: the bot's next post in the group must
    # still come 3 s after it, not 2, or a minute could hold 21.
    shared.reset()
    one, _ = pacer()
    assert one.book(-100950, bot="alpha") == pytest.approx(0, abs=0.05)
    overall = shared.key("pace", "bot", "alpha")
    before = shared.attempt(lambda r: r.get(overall), None, "test")
    one.push_back(-100950, "alpha", 1.0)
    assert shared.attempt(lambda r: r.get(overall), None, "test") == before  # 30/s: as it was
    assert one.book(-100950, bot="alpha") == pytest.approx(4.0, abs=0.05)
