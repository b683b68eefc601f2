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


def test_a_budget_binds_for_a_while_after_a_request_waited_on_it(monkeypatch) -> None:
    monkeypatch.setattr(budgets, "_last_wait", [float("-inf")])
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


@pytest.mark.parametrize("share", [0.3, 0.0])
def test_replies_keep_their_share_of_llm_calls_while_the_rate_budget_binds(
        settings, monkeypatch, share: float) -> None:
    # A backlog of cadence posts, and a person writing every second while the LLM rate
    # budget lets two requests through a second (a fake clock; the drain's own refills).
    from concurrent.futures import Future

    from batchgen.core.priorities import URGENT_PRIORITY
    from batchgen.delivery import drain
    from batchgen.delivery.runs import open_run
    from batchgen.models import QueueItem
    from tests.factories import set_batch_mode

    settings.DELIVERY_URGENT_SHARE = share
    settings.BATCH_MAX_WORKERS = None
    monkeypatch.setattr(budgets, "_last_wait", [float("-inf")])  # binding ends with the test
    set_batch_mode(10)
    bot = make_bot()
    for _ in range(60):
        make_item(bot, make_chat(chat_type="private"), priority=CADENCE_PRIORITY)
    started: list[int] = []
    monkeypatch.setattr(drain, "_submitter", lambda run: lambda work: (
        started.append(work.item.priority), Future())[1])
    now = [0.0]
    run = drain.Drain(open_run(), delivery=None, clock=lambda: now[0])
    budgets.note_wait()  # requests wait on the budget: it binds
    run._refill()
    starved, most_non_urgent = 0, 0
    for _ in range(30):
        make_item(bot, make_chat(chat_type="private"), priority=REPLY_PRIORITY)
        for future in list(run._in_flight)[:2]:  # the two the budget let through finish
            del run._in_flight[future]
        budgets.note_wait()
        now[0] += 1.0
        run._refill()
        urgent = sum(1 for work in run._in_flight.values()
                     if work.item.priority >= URGENT_PRIORITY)
        most_non_urgent = max(most_non_urgent, len(run._in_flight) - urgent)
        # A reply waits unstarted while fewer than 3 of the 10 slots serve replies.
        if urgent < 3 and QueueItem.objects.filter(priority=REPLY_PRIORITY).exclude(
                id__in=[work.item.id for work in run._in_flight.values()]).exists():
            starved += 1

    reply_share = started.count(REPLY_PRIORITY) / len(started)
    if share:
        assert most_non_urgent <= 7  # 3 of the 10 slots stay for replies
        assert starved == 0
        assert reply_share >= 0.3
    else:
        assert most_non_urgent == 10  # without the share, cadence takes every slot
        assert starved > 0
