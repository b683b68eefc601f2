from __future__ import annotations

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
