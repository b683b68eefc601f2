"""The operator's console: failures by cause, requeue and pause from the dashboard and the
admin, search, live progress and the effective setting (issue 23)."""

from __future__ import annotations

import re
from decimal import Decimal
from html import unescape

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from batchgen.dashboard import console, failures, queries, run_detail, search
from batchgen.models import BatchRun, Bot, Generation, Message, QueueItem
from tests.factories import make_bot, make_chat, make_item, make_run, set_batch_mode

pytestmark = pytest.mark.django_db
Status = QueueItem.Status


def died(kind: str = "server_error", provider: str = "openai", chat=None, **fields) -> QueueItem:
    """A dead item whose last try failed with ``kind`` on ``provider``."""
    item = make_item(chat=chat, status=Status.DEAD, attempts=3, finished_at=timezone.now(),
                     last_error=fields.pop("last_error", f"gave up after 3 attempts: {kind}: x"),
                     **fields)
    Generation.objects.create(batch_run=make_run(), queue_item=item, bot=item.bot,
                              chat=item.chat, ok=False, error_kind=kind, provider=provider)
    return item


def test_failures_are_grouped_by_kind_provider_and_chat_with_counts() -> None:
    chat, other = make_chat(title="traders"), make_chat(title="news")
    died(chat=chat), died(chat=chat), died("timeout", "groq", chat=chat), died(chat=other)
    died(chat=chat, last_error="telegram: Bad Request: chat not found")

    groups, total = failures.failures_by_cause()

    found = {(g.cause, g.provider, g.chat): g.count for g in groups}
    assert found == {("server_error", "openai", "traders"): 2, ("timeout", "groq", "traders"): 1,
                     ("server_error", "openai", "news"): 1, ("telegram", "openai", "traders"): 1}
    assert total == 5
    assert groups[0].count == 2  # largest first


def test_a_group_links_to_exactly_its_items_in_the_queue_list(staff_client) -> None:
    chat = make_chat(title="traders")
    mine = [died(chat=chat).id, died(chat=chat).id]
    died("timeout", chat=chat), died(), make_item(chat=chat)
    [group] = [g for g in failures.failures_by_cause()[0]
               if g.cause == "server_error" and g.chat == "traders"]

    page = staff_client.get(group.list_url)

    assert page.status_code == 200
    assert sorted(item.id for item in page.context["cl"].result_list) == sorted(mine)


def test_the_dashboard_requeues_one_group(staff_client) -> None:
    chat = make_chat()
    grouped, kept = died(chat=chat), died("timeout", chat=chat)

    response = staff_client.post("/dashboard/requeue/", {
        "cause": "server_error", "provider": "openai", "chat": str(chat.id)}, follow=True)

    assert {i.id: i.status for i in QueueItem.objects.all()} == {grouped.id: Status.PENDING,
                                                                  kept.id: Status.DEAD}
    assert "Requeued 1 item." in response.content.decode()


def test_the_dashboard_requeues_every_dead_item(staff_client) -> None:
    died(), died("timeout")

    staff_client.post("/dashboard/requeue/", {})

    assert set(QueueItem.objects.values_list("status", flat=True)) == {Status.PENDING}


def test_a_bad_requeue_selection_names_the_field_and_changes_nothing(staff_client) -> None:
    died()

    response = staff_client.post("/dashboard/requeue/", {"chat": "abc", "cause": "x"}, follow=True)

    assert "chat must be a chat&#x27;s number or &#x27;none&#x27;" in response.content.decode()
    assert QueueItem.objects.get().status == Status.DEAD


def test_the_admin_action_requeues_and_the_list_shows_the_error(staff_client) -> None:
    item = died(last_error="gave up after 3 attempts: server_error: upstream 502")

    listing = staff_client.get("/admin/batchgen/queueitem/").content.decode()
    staff_client.post("/admin/batchgen/queueitem/",
                      {"action": "requeue", "_selected_action": [item.id]})
    item.refresh_from_db()

    assert "upstream 502" in listing
    assert item.status == Status.PENDING and item.attempts == 0
    assert item.history[0]["reason"].endswith("upstream 502")


def test_the_queue_list_shows_paused_work_as_paused(staff_client) -> None:
    bot = make_bot()
    make_item(bot=bot)
    staff_client.post("/admin/batchgen/bot/", {"action": "pause", "_selected_action": [bot.id]})

    listing = staff_client.get("/admin/batchgen/queueitem/").content.decode()

    assert Bot.objects.get(id=bot.id).paused_at is not None
    assert '<td class="field-state">paused</td>' in listing


@pytest.mark.parametrize("kind, target", [("bot", "alpha"), ("chat", "-100777"),
                                          ("provider", "groq")])
def test_the_dashboard_pauses_and_resumes(staff_client, kind: str, target: str) -> None:
    make_bot("alpha"), make_chat(telegram_chat_id=-100777)

    staff_client.post("/dashboard/pause/", {"kind": kind, "target": target, "action": "pause"})
    paused = console.paused()
    assert (len(paused.bots), len(paused.chats), paused.providers) == (
        int(kind == "bot"), int(kind == "chat"), ["groq"] if kind == "provider" else [])

    staff_client.post("/dashboard/pause/", {"kind": kind, "target": target, "action": "resume"})
    assert not console.paused().any


def test_pausing_an_unknown_bot_says_so(staff_client) -> None:
    response = staff_client.post("/dashboard/pause/", {"kind": "bot", "target": "ghost",
                                                       "action": "pause"}, follow=True)

    assert "target: no bot is named &#x27;ghost&#x27;" in response.content.decode()


def test_actions_need_post_and_staff(client) -> None:
    assert client.post("/dashboard/requeue/").status_code == 302  # to the login
    client.force_login(User.objects.create(username="visitor"))
    assert client.post("/dashboard/pause/").status_code == 403


@pytest.mark.parametrize("term", ["traders", "-100555", "alpha", "BIST100", "Markets rose"])
def test_search_finds_items_and_runs_by_chat_bot_or_text(term: str) -> None:
    chat = make_chat(telegram_chat_id=-100555, title="traders")
    item = make_item(bot=make_bot("alpha"), chat=chat)
    run = make_run()
    Generation.objects.create(batch_run=run, queue_item=item, bot=item.bot, chat=chat, ok=True,
                              prompt="Talk about BIST100", text="Markets rose today.")
    make_item(), make_run()

    assert list(search.items(QueueItem.objects.all(), term)) == [item]
    assert list(search.runs(BatchRun.objects.all(), term)) == [run]


def test_search_finds_an_item_by_its_id(staff_client) -> None:
    # Names without digits: a number searched also matches titles and names containing it.
    item = make_item(make_bot(name="alpha"), make_chat(title="room"))
    make_item(make_bot(name="beta"), make_chat(title="hall"))

    page = staff_client.get(f"/admin/batchgen/queueitem/?q={item.id}")

    assert [i.id for i in page.context["cl"].result_list] == [item.id]


def test_the_history_is_filtered_by_search_and_says_so(staff_client) -> None:
    chat = make_chat(title="traders")
    item = make_item(chat=chat)
    run = make_run(status="succeeded")
    Generation.objects.create(batch_run=run, queue_item=item, chat=chat, ok=True)
    make_run(status="succeeded")

    found = queries.history({"search": "traders"})

    assert list(found.page.object_list) == [run]
    assert "matching “traders”" in found.label


def test_an_empty_filtered_history_says_the_filter_not_yet(staff_client) -> None:
    make_run(status="succeeded")

    page = staff_client.get("/dashboard/?search=nothing-like-this").content.decode()

    assert "No batches match these filters" in page and "No batches yet" not in page


def test_a_running_run_shows_progress_from_saved_rows(settings) -> None:
    run = make_run(status=BatchRun.Status.RUNNING, model="gpt-4o-mini")
    for ok in (True, True, False):
        Generation.objects.create(batch_run=run, ok=ok, model="gpt-4o-mini",
                                  prompt_tokens=100, completion_tokens=20)

    progress = console.live_progress([run])[run.pk]

    assert (progress.generated, progress.failed, progress.tokens) == (2, 1, 360)
    assert progress.cost is not None and progress.cost > Decimal(0)


def test_a_running_run_shows_its_progress_on_the_dashboard(staff_client) -> None:
    run = make_run(status=BatchRun.Status.RUNNING, model="gpt-4o-mini")
    Generation.objects.create(batch_run=run, ok=True, model="gpt-4o-mini",
                              prompt_tokens=100, completion_tokens=20)

    page = staff_client.get("/dashboard/").content.decode()

    assert '<td class="n" data-live="tokens">120</td>' in page


def test_the_effective_setting_names_the_cap(settings, staff_client) -> None:
    settings.BATCH_MAX_WORKERS = 10
    set_batch_mode(25)

    page = staff_client.get("/dashboard/").content.decode()

    assert console.effective_setting().in_flight == 10
    assert "batch size 25 → 10 in flight: BATCH_MAX_WORKERS" in page


def test_failed_rows_come_first_in_a_batch_detail() -> None:
    run = make_run()
    for ok in (True, True, False, True):
        Generation.objects.create(batch_run=run, ok=ok, error_kind="" if ok else "timeout")

    _, rows = run_detail.batch_detail(run.pk)

    assert [row.generation.ok for row in rows] == [False, True, True, True]


def test_dead_items_are_a_link_to_the_dead_list(staff_client) -> None:
    died()

    page = staff_client.get("/dashboard/").content.decode()

    assert 'href="/admin/batchgen/queueitem/?status__exact=dead">1 dead</a>' in page


def test_an_empty_chart_under_a_filter_names_the_filter_not_the_first_batch(staff_client) -> None:
    make_run(status="succeeded", mode="batch", throughput=3.0)

    page = staff_client.get("/dashboard/?mode=single").content.decode()

    assert "after the first batch" not in page
    assert page.count("No batch matches these filters") == 4


def test_the_paused_count_links_to_the_paused_items(staff_client) -> None:
    bot = make_bot()
    held = make_item(bot=bot)
    make_item()
    Bot.objects.filter(id=bot.id).update(paused_at=timezone.now())

    page = staff_client.get("/dashboard/").content.decode()
    listing = staff_client.get("/admin/batchgen/queueitem/?paused=yes")

    assert 'href="/admin/batchgen/queueitem/?paused=yes">1</a>' in page
    assert [i.id for i in listing.context["cl"].result_list] == [held.id]


def test_a_running_batch_detail_shows_its_progress_so_far(staff_client) -> None:
    run = make_run(status=BatchRun.Status.RUNNING, model="gpt-4o-mini")
    Generation.objects.create(batch_run=run, ok=True, model="gpt-4o-mini",
                              prompt_tokens=100, completion_tokens=20)

    page = staff_client.get(f"/dashboard/batches/{run.pk}/").content.decode()

    assert "so far: <b>1</b> generated, <b>0</b> failed" in page
    assert "<b>120</b> tokens" in page


def test_a_button_refreshed_into_the_page_sends_the_operator_back_to_the_dashboard(
        staff_client) -> None:
    died()
    fragment = staff_client.get("/dashboard/live/?mode=single").content.decode()
    [back] = set(re.findall(r'name="next" value="([^"]*)"', fragment))

    response = staff_client.post("/dashboard/requeue/", {"next": unescape(back)})

    assert unescape(back) == "/dashboard/?mode=single"
    assert response["Location"] == "/dashboard/?mode=single"


def test_django_rqs_pages_say_that_failed_items_are_not_failed_jobs(staff_client) -> None:
    died(), died("timeout")
    dead_list = 'href="/admin/batchgen/queueitem/?status__exact=dead"'

    for page in (staff_client.get("/admin/django_rq/dashboard/"),
                 staff_client.get("/admin/django_rq/dashboard/queues/0/failed/"),
                 staff_client.get(f"/dashboard/batches/{make_run(rq_job_id='job-1').pk}/")):
        text = page.content.decode()
        assert page.status_code == 200
        assert "2 dead items" in text and dead_list in text
        assert "a job succeeds even when items in it die" in text


def test_the_queue_list_search_finds_text_in_the_error(staff_client) -> None:
    wanted = died(last_error="gave up after 3 attempts: server_error: upstream 502 xyzzy")
    died()

    listing = staff_client.get("/admin/batchgen/queueitem/?q=xyzzy")

    assert [item.id for item in listing.context["cl"].result_list] == [wanted.id]


def test_the_settings_page_shows_the_effective_in_flight_and_why(settings, staff_client) -> None:
    settings.BATCH_MAX_WORKERS = 10
    set_batch_mode(25)

    page = staff_client.get("/admin/batchgen/setting/").content.decode()

    assert "batch size 25 → 10 in flight: BATCH_MAX_WORKERS" in page


def test_a_failed_send_comes_first_in_a_batch_detail() -> None:
    run = make_run()
    items = [make_item(batch_run=run) for _ in range(3)]
    for item in items:
        Generation.objects.create(batch_run=run, queue_item=item, ok=True, text="hi")
    for item, status in zip(items, ("sent", "failed", "sent"), strict=True):
        Message.objects.create(queue_item=item, bot=item.bot, chat=item.chat, batch_run=run,
                               text="hi", status=status, error="" if status == "sent" else "403")

    _, rows = run_detail.batch_detail(run.pk)

    assert [row.generation.queue_item_id for row in rows] == [items[1].id, items[0].id,
                                                              items[2].id]


def test_pausing_a_chat_by_a_number_pauses_the_chat_with_that_telegram_id_only(
        staff_client) -> None:
    first = make_chat(title="first")
    wanted = make_chat(title="wanted", telegram_chat_id=first.id)  # its Telegram id: first's pk

    staff_client.post("/dashboard/pause/", {"kind": "chat", "target": str(first.id),
                                            "action": "pause"})

    assert [chat.id for chat in console.paused().chats] == [wanted.id]
