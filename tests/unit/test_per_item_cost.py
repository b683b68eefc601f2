"""SQL statements and Redis round trips per delivered message, in an in-process drain (issue 24).

``-s`` prints the figures (``bench.per_item`` counts them; the hotpath bench section prints
them too). The test fails if they grow past what the drain costs now.
"""

from __future__ import annotations

import pytest
from django.db import connection

from batchgen.models import Message, QueueItem
from bench.per_item import per_item_costs
from tests.factories import make_bot, make_chat, make_item

pytestmark = pytest.mark.django_db(transaction=True)

# Per delivered message, measured on 20 and 60 items, 10 in flight: 2.0-3.0 statements on
# PostgreSQL and 3.4-4.2 on SQLite, against 7.8 before issue 24. The history is one statement
# per refill on PostgreSQL (one per item elsewhere), read as the generations start so a reply
# answers the chat as it is then; claim, save, send and settle are a statement per group of
# items, each group's size depending on timing. Redis: 2.2-2.3 round trips in a warm process
# (one before each LLM request, one after, a fraction for the posting slots and the
# push-backs of late sends), about 3.2 before.
MAX_SQL = {"postgresql": 3.5, "sqlite": 4.8}
MAX_REDIS = 2.8


def make_items(count: int) -> None:
    for _ in range(count):
        make_item(make_bot(), make_chat())


def test_sql_and_redis_per_delivered_message_stay_within_their_pins(pipeline_env) -> None:
    _stay_within_their_pins(pipeline_env)


@pytest.mark.postgres
def test_the_pins_hold_on_postgresql_too(pipeline_env) -> None:
    _stay_within_their_pins(pipeline_env)  # its own statements: VALUES lists, LATERAL reads


def _stay_within_their_pins(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    costs = per_item_costs(make_items)
    print("\n" + "\n".join(costs.lines()))

    sent = [m["chat_id"] for m in fake_telegram.messages()]
    assert len(sent) == len(set(sent)) == 82  # every item once, none twice
    assert Message.objects.filter(status="sent").count() == 82
    assert not QueueItem.objects.exclude(status="done").exists()
    assert costs.sql <= MAX_SQL[connection.vendor], costs.lines()
    assert costs.redis <= MAX_REDIS, costs.lines()
