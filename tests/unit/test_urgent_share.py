"""While the LLM rate budget binds, replies to people keep a share of a run's slots."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from batchgen.core.priorities import CADENCE_PRIORITY, REPLY_PRIORITY
from batchgen.delivery.drain import Drain
from batchgen.llm.limits import budgets
from batchgen.work import queue
from tests.factories import make_bot, make_chat, make_item, make_run

pytestmark = pytest.mark.django_db


def test_a_budget_binds_for_a_while_after_a_request_waited_on_it() -> None:
    budgets.note_wait(clock=lambda: 100.0)
    assert budgets.binding(within_s=5.0, clock=lambda: 104.0)
    assert not budgets.binding(within_s=5.0, clock=lambda: 106.0)


def test_the_claim_takes_every_urgent_item_but_caps_the_others() -> None:
    bot = make_bot()
    cadence = [make_item(bot, make_chat(), priority=CADENCE_PRIORITY) for _ in range(4)]
    replies = [make_item(bot, make_chat(), priority=REPLY_PRIORITY) for _ in range(3)]

    claimed = queue.claim(10, make_run(), max_non_urgent=1)

    ids = {item.id for item in claimed}
    assert {item.id for item in replies} <= ids
    assert len(ids & {item.id for item in cadence}) == 1


def run_with(in_flight: list[int], ready: list[int], target: int = 10) -> SimpleNamespace:
    work = {n: SimpleNamespace(item=SimpleNamespace(priority=p)) for n, p in enumerate(in_flight)}
    return SimpleNamespace(target=target, _in_flight=work,
                           _ready=[SimpleNamespace(priority=p) for p in ready])


def test_a_run_keeps_30_percent_of_its_slots_for_replies_while_the_budget_binds(
        settings, monkeypatch) -> None:
    settings.DELIVERY_URGENT_SHARE = 0.3
    monkeypatch.setattr(budgets, "binding", lambda: True)
    busy = run_with(in_flight=[CADENCE_PRIORITY] * 5 + [REPLY_PRIORITY] * 2,
                    ready=[CADENCE_PRIORITY])
    # 10 slots, 3 kept for replies: 7 for the rest, 6 of them taken already.
    assert Drain._non_urgent_room(busy) == 1
    monkeypatch.setattr(budgets, "binding", lambda: False)
    assert Drain._non_urgent_room(busy) is None  # the budget has room: no cap
