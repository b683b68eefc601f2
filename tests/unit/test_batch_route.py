"""The provider batch route end to end: tick submits work that can wait, polls, stores the
replies once through the outbox, and sends the rest the sync way before its deadline."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from batchgen.core import pricing
from batchgen.delivery import batch_route, runs, scheduler
from batchgen.llm import batch_api
from batchgen.models import BatchRun, Generation, Message, ProviderBatch, QueueItem, Setting
from batchgen.work import queue
from tests.concurrency import at_once
from tests.factories import make_item

pytestmark = pytest.mark.django_db(transaction=True)
Status = QueueItem.Status


def batches(fake: Any, **changes: object) -> dict:
    return fake._post("/_batches", changes)


@pytest.fixture(name="env")
def env_fixture(pipeline_env: Any, settings: Any) -> Any:
    fake, telegram = pipeline_env
    batches(fake, turnaround=0.0, duplicate_lines=False, end_as="completed", partial_share=0.5)
    settings.BATCH_ROUTE_MIN_SLACK_SECONDS = 600
    settings.BATCH_ROUTE_FALLBACK_SECONDS = 60
    return fake, telegram


def route_on(*providers: str) -> None:
    Setting.objects.update_or_create(key="batch_route_providers",
                                     defaults={"value": list(providers)})


def later(hours: float = 2) -> Any:
    return timezone.now() + timedelta(hours=hours)


def sent_texts(item: QueueItem) -> list[str]:
    return list(Message.objects.filter(queue_item=item, status=Message.Status.SENT)
                .values_list("text", flat=True))


@pytest.mark.parametrize("provider", ["openai", "groq", "gemini"])
def test_work_that_can_wait_goes_through_a_provider_batch_and_is_sent_once(
        env, llm_env, provider) -> None:
    llm_env(provider)
    route_on(provider)
    batches(env[0], turnaround=3600.0)
    waiting = make_item(deliver_by=later(), recent_messages=["can wait"])
    urgent = make_item(recent_messages=["now please"])
    scheduler.tick(sync=True)
    waiting.refresh_from_db(), urgent.refresh_from_db()
    assert waiting.status == Status.BATCHED  # its own state while the provider works
    assert queue.depth_by_status()["batched"] == 1
    assert urgent.status == Status.DONE  # the sync path as before
    batches(env[0], turnaround=0.0)
    scheduler.tick(sync=True)
    waiting.refresh_from_db()
    assert waiting.status == Status.DONE and len(sent_texts(waiting)) == 1
    generation = Generation.objects.get(queue_item=waiting)
    assert generation.route == "batch" and generation.provider == provider
    assert ProviderBatch.objects.get().status == ProviderBatch.Status.DONE


def test_with_the_route_off_work_that_can_wait_goes_the_sync_way(env) -> None:
    item = make_item(deliver_by=later())
    scheduler.tick(sync=True)
    item.refresh_from_db()
    assert item.status == Status.DONE
    assert Generation.objects.get(queue_item=item).route == "sync"


def test_a_result_fetched_twice_is_stored_and_sent_once(env) -> None:
    route_on("openai")
    batches(env[0], duplicate_lines=True)
    item = make_item(deliver_by=later())
    batch_route.submit()
    batch = ProviderBatch.objects.get()
    found = batch_api.results("openai", batch.external_id)
    assert batch_route.store(batch, found) == 1
    assert batch_route.store(batch, found) == 0  # a re-poll, a second tick: taken already
    batch_route.poll(batch)
    assert len(sent_texts(item)) == 1
    assert Generation.objects.filter(queue_item=item).count() == 1


def test_a_request_failed_in_the_batch_is_sent_synchronously_before_its_deadline(env) -> None:
    route_on("openai")
    fine = make_item(deliver_by=later(), recent_messages=["fine"])
    broken = make_item(deliver_by=later(), recent_messages=["broken [[fault:500x1]]"])
    batch_route.submit()
    batch_route.step()
    broken.refresh_from_db()
    assert broken.status == Status.PENDING  # back to the sync path, never a second batch
    QueueItem.objects.filter(id=broken.id).update(available_at=None)
    scheduler.tick(sync=True)
    broken.refresh_from_db()
    assert broken.status == Status.DONE and broken.finished_at < broken.deliver_by
    assert len(sent_texts(broken)) == 1 and len(sent_texts(fine)) == 1
    routes = list(Generation.objects.filter(queue_item=broken).values_list("route", "ok"))
    assert routes == [("batch", False), ("sync", True)]


def test_an_item_whose_deadline_nears_leaves_a_slow_batch_and_its_late_result_is_ignored(
        env, settings) -> None:
    route_on("openai")
    batches(env[0], turnaround=3600.0)
    item = make_item(deliver_by=later())
    batch_route.submit()
    QueueItem.objects.filter(id=item.id).update(deliver_by=timezone.now() + timedelta(seconds=30))
    scheduler.tick(sync=True)  # within BATCH_ROUTE_FALLBACK_SECONDS: sent the sync way
    item.refresh_from_db()
    assert item.status == Status.DONE
    batch = ProviderBatch.objects.get()
    assert batch.status == ProviderBatch.Status.CANCELLED  # nothing waits on it any more
    batches(env[0], turnaround=0.0)
    assert batch_route.store(batch, batch_api.results("openai", batch.external_id)) == 0
    assert len(sent_texts(item)) == 1


def test_an_expired_batch_stores_what_it_finished_and_loses_nothing(env) -> None:
    route_on("openai")
    batches(env[0], end_as="expired", partial_share=0.5)
    items = [make_item(deliver_by=later()) for _ in range(4)]
    batch_route.submit()
    summary = batch_route.step()
    assert (summary.stored, summary.returned) == (2, 2)
    statuses = sorted(QueueItem.objects.filter(id__in=[i.id for i in items])
                      .values_list("status", flat=True))
    assert statuses == ["done", "done", "pending", "pending"]
    assert ProviderBatch.objects.get().status == ProviderBatch.Status.FAILED


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_cancelled_batch_loses_nothing(env, llm_env, provider) -> None:
    llm_env(provider)
    route_on(provider)
    batches(env[0], turnaround=3600.0)
    items = [make_item(deliver_by=later()) for _ in range(3)]
    batch_route.submit()
    batch = ProviderBatch.objects.get()
    assert batch_route.cancel(batch) == (0, 3)
    assert ProviderBatch.objects.get().status == ProviderBatch.Status.CANCELLED
    scheduler.tick(sync=True)
    for item in items:
        item.refresh_from_db()
        assert item.status == Status.DONE and len(sent_texts(item)) == 1


def test_a_batch_the_provider_refuses_leaves_its_items_to_the_sync_path(env, llm_env) -> None:
    llm_env("openai", OPENAI_API_KEY="", OPENAI_API_KEYS=[])
    route_on("openai")
    item = make_item(deliver_by=later())
    assert batch_route.submit() == 0
    item.refresh_from_db()
    assert item.status == Status.PENDING and "not submitted" in item.last_error
    assert ProviderBatch.objects.get().status == ProviderBatch.Status.FAILED


def test_batch_results_are_billed_at_half_the_sync_price(env, settings) -> None:
    route_on("openai")
    make_item(deliver_by=later())
    batch_route.submit()
    batch_route.step()
    g = Generation.objects.get()
    usage = (g.model, g.prompt_tokens, g.cached_tokens, g.completion_tokens)
    sync = pricing.cost(*usage)
    assert g.route == "batch" and sync and pricing.cost(*usage, route="batch") == sync / 2
    assert g.batch_run.cost_usd == pytest.approx(sync / 2, abs=Decimal("1e-6"))


def test_the_admin_setting_names_the_field_and_the_rule_for_an_unknown_provider() -> None:
    from django.core.exceptions import ValidationError

    row = Setting(key="batch_route_providers", value=["openai", "mistral"])
    with pytest.raises(ValidationError, match="batch_route_providers must name only.*mistral"):
        row.clean()


def test_a_sync_run_leaves_work_that_waits_for_the_batch_route(env) -> None:
    route_on("openai")
    waiting = make_item(deliver_by=later())
    soon = make_item(deliver_by=timezone.now() + timedelta(seconds=120))  # no room: sync
    runs.run_batch(runs.open_run().id)  # a run already going when they were queued
    waiting.refresh_from_db(), soon.refresh_from_db()
    assert (waiting.status, soon.status) == (Status.PENDING, Status.DONE)


def test_a_batch_whose_submitter_died_before_the_provider_answered_is_closed(
        env, settings) -> None:
    route_on("openai")
    item = make_item(deliver_by=later())
    batch = ProviderBatch.objects.create(provider="openai")
    queue.hold_for_batch(batch, 10, timezone.now())
    ProviderBatch.objects.filter(id=batch.id).update(
        submitted_at=timezone.now() - timedelta(seconds=settings.BATCH_LEASE_SECONDS + 1))
    QueueItem.objects.filter(id=item.id).update(deliver_by=timezone.now())
    scheduler.tick(sync=True)  # its deadline came: sent the sync way, the batch closed
    item.refresh_from_db()
    assert item.status == Status.DONE and len(sent_texts(item)) == 1
    assert ProviderBatch.objects.get(id=batch.id).status == ProviderBatch.Status.FAILED


def test_a_tick_killed_while_storing_results_loses_nothing_and_sends_nothing_twice(
        env, settings) -> None:
    route_on("openai")
    item = make_item(deliver_by=later())
    batch_route.submit()
    batch = ProviderBatch.objects.get()
    run = BatchRun.objects.create(mode=BatchRun.Mode.BATCH)
    queue.claim_from_batch(batch, run, [item.id])  # taken for storing, then the process died
    QueueItem.objects.filter(id=item.id).update(lease_expires_at=timezone.now())
    scheduler.tick(sync=True)  # the lease is recovered; the batch's result is not stored twice
    scheduler.tick(sync=True)
    item.refresh_from_db()
    assert item.status == Status.DONE and len(sent_texts(item)) == 1
    assert list(Generation.objects.filter(queue_item=item).values_list("route", flat=True)) \
        == ["sync"]


@pytest.mark.postgres
def test_two_ticks_storing_one_batch_at_once_on_postgres_send_each_reply_once(env) -> None:
    route_on("openai")
    items = [make_item(deliver_by=later()) for _ in range(20)]
    batch_route.submit()
    batch = ProviderBatch.objects.get()
    stored = at_once(lambda: batch_route.poll(batch)[0], 2)
    assert sum(stored) == 20
    for item in items:
        item.refresh_from_db()
        assert item.status == Status.DONE and len(sent_texts(item)) == 1
    assert Generation.objects.count() == 20


def test_a_failing_batch_route_never_stops_the_sync_path(env, monkeypatch) -> None:
    route_on("openai")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("batch endpoint exploded")

    monkeypatch.setattr(batch_route, "step", broken)
    urgent = make_item()
    scheduler.tick(sync=True)
    urgent.refresh_from_db()
    assert urgent.status == Status.DONE


def test_a_cap_that_binds_while_a_batch_runs_holds_its_replies_and_skips_its_cadence(
        env) -> None:
    # The chat reached its cap after its work went to the provider: the results are paid
    # for, but nothing goes out there while the cap binds. The reply waits, saved; the
    # cadence post is skipped.
    from batchgen.models.conversations import Trigger

    route_on("openai")
    reply = make_item(deliver_by=later(), recent_messages=["a question"])
    post = make_item(reply.bot, reply.chat, deliver_by=later())
    Trigger.objects.create(key=f"cadence:{post.id}", kind="cadence", bot=post.bot,
                           chat=post.chat, queue_item=post)
    batch_route.submit()
    batch = ProviderBatch.objects.get()
    type(reply.chat).objects.filter(id=reply.chat_id).update(
        cap_reason="chat cap: 20 bot messages an hour reached")

    batch_route.poll(batch)

    reply.refresh_from_db(), post.refresh_from_db()
    assert env[1].messages() == []  # nothing sent to the capped chat
    assert (reply.status, reply.last_error) == (
        "pending", "held: chat cap: 20 bot messages an hour reached")
    assert Message.objects.get(queue_item=reply).status == "pending"  # kept, not generated again
    assert (post.status, post.last_error) == (
        "dead", "skipped: chat cap: 20 bot messages an hour reached")
    assert Generation.objects.filter(queue_item__in=[reply, post]).count() == 2  # billed

    type(reply.chat).objects.filter(id=reply.chat_id).update(cap_reason="")
    scheduler.tick(sync=True)  # the cap lifted: the saved reply goes out, once
    reply.refresh_from_db()
    assert reply.status == "done" and len(sent_texts(reply)) == 1
    assert Generation.objects.filter(queue_item=reply).count() == 1
