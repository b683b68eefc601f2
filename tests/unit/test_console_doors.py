"""The dashboard's POST doors (requeue, pause): a value no database could take (a NUL) is a
400 naming the field, never a 500 on PostgreSQL, and a Hypothesis fuzz finds no 500."""

from __future__ import annotations

import os

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.models import Bot, QueueItem
from tests.factories import make_bot, make_item

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("DOORS_FUZZ_EXAMPLES", "150")) // 3
NUL_POSTS = [("/dashboard/requeue/", {"cause": "\0"}, "cause"),
             ("/dashboard/requeue/", {"ids": "1,\0"}, "ids"),
             ("/dashboard/pause/", {"kind": "bot", "target": "al\0pha", "action": "pause"},
              "target"),
             ("/dashboard/pause/", {"kind": "chat", "target": "\0", "action": "resume"},
              "target")]


def answer_to(client: Client, url: str, data: dict[str, str]) -> tuple[int, str]:
    response = client.post(url, data)
    return response.status_code, response.content.decode()


@pytest.mark.parametrize("url, data, field", NUL_POSTS)
def test_a_nul_in_a_dashboard_form_is_a_400_naming_the_field(staff_client, url, data,
                                                             field) -> None:
    status, body = answer_to(staff_client, url, data)
    assert (status, f"{field}: must not contain a NUL character" in body) == (400, True)


@pytest.mark.postgres
@pytest.mark.parametrize("url, data, field", NUL_POSTS)
def test_on_postgresql_a_nul_in_a_dashboard_form_is_a_400_not_a_500(staff_client, url, data,
                                                                    field) -> None:
    make_item(make_bot("alpha"), status=QueueItem.Status.DEAD)
    status, body = answer_to(staff_client, url, data)
    assert (status, f"{field}:" in body) == (400, True)
    assert QueueItem.objects.get().status == QueueItem.Status.DEAD
    assert Bot.objects.get().paused_at is None


def fuzz():
    return settings(max_examples=max(EXAMPLES, 20), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


TEXT = st.text(max_size=40)  # NUL, control characters and surrogates included


def test_no_requeue_or_pause_form_gets_a_500(staff_client) -> None:
    make_item(make_bot("alpha"), status=QueueItem.Status.DEAD)

    @fuzz()
    @given(cause=TEXT, provider=TEXT, chat=TEXT, ids=TEXT, next_=TEXT)
    def requeue(cause: str, provider: str, chat: str, ids: str, next_: str) -> None:
        status, _ = answer_to(staff_client, "/dashboard/requeue/", {
            "cause": cause, "provider": provider, "chat": chat, "ids": ids, "next": next_})
        assert status in (302, 400)

    @fuzz()
    @given(kind=st.one_of(TEXT, st.sampled_from(["bot", "chat", "provider"])), target=TEXT,
           action=TEXT)
    def pause(kind: str, target: str, action: str) -> None:
        status, _ = answer_to(staff_client, "/dashboard/pause/",
                              {"kind": kind, "target": target, "action": action})
        assert status in (302, 400)

    requeue()
    pause()
