from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from batchgen.models import Bot, Chat, QueueItem

pytestmark = pytest.mark.django_db


def test_loading_the_demo_data_twice_leaves_one_copy(capsys: pytest.CaptureFixture) -> None:
    call_command("load_demo_data")
    first = (Bot.objects.count(), Chat.objects.count(), QueueItem.objects.count())
    call_command("load_demo_data")
    assert (Bot.objects.count(), Chat.objects.count(), QueueItem.objects.count()) == first
    assert first[0] >= 5 and first[1] >= 5 and first[2] >= 25
    assert get_user_model().objects.filter(username="demo", is_staff=True).count() == 1
    out = capsys.readouterr().out
    assert "staff login demo / demo-botplatform" in out
    assert all(bot.persona for bot in Bot.objects.all())


def test_top_up_keeps_the_queue_at_the_asked_depth_across_bots_and_chats() -> None:
    call_command("load_demo_data")
    QueueItem.objects.update(status=QueueItem.Status.DONE)
    call_command("demo_feed", "--pending", "12", "--once", stdout=StringIO())
    pending = QueueItem.objects.filter(status=QueueItem.Status.PENDING)
    assert pending.count() == 12
    assert pending.values("bot").distinct().count() > 1
    assert pending.values("chat").distinct().count() > 1
    call_command("demo_feed", "--pending", "12", "--once", stdout=StringIO())
    assert QueueItem.objects.filter(status=QueueItem.Status.PENDING).count() == 12


def test_top_up_does_nothing_without_the_demo_bots() -> None:
    from batchgen.demo.seed import top_up

    assert top_up(10) == 0
    assert QueueItem.objects.count() == 0


def test_claimed_items_count_so_a_fast_tick_loop_builds_no_backlog() -> None:
    call_command("load_demo_data")
    QueueItem.objects.update(status=QueueItem.Status.CLAIMED)
    call_command("demo_feed", "--pending", "12", "--once", stdout=StringIO())
    assert QueueItem.objects.filter(status=QueueItem.Status.PENDING).count() == 0
