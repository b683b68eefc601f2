"""`manage.py demo_conversation`, as `make demo` runs it, against the fakes."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from batchgen.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_demo_shows_replies_with_context_bot_turns_cadence_and_a_webhook(
        pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    out = StringIO()
    call_command("demo_conversation", stdout=out)
    shown = out.getvalue()
    assert "the first reply's prompt contains the person's message: True" in shown
    assert "Telegram posted update" in shown and "HTTP 200" in shown
    assert 'stored "Dana: @' in shown
    # Three replies to the person and one bot-to-bot answer (K = 4), then one cadence post.
    assert len([m for m in fake_telegram.messages() if m["chat_id"] < 0]) == 5
    assert Message.objects.filter(status="sent").count() == 5
