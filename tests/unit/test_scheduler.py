"""The tick: one run per idle worker, nothing claimed for a job that cannot start, a loop
that rides out outages."""

from __future__ import annotations

import django_rq
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Worker
from rq.worker import WorkerStatus

from batchgen import jobs
from batchgen.delivery import scheduler
from batchgen.models import BatchRun, QueueItem
from tests.factories import make_item, set_batch_mode

pytestmark = pytest.mark.django_db(transaction=True)


def register_workers(count: int, state: str = WorkerStatus.IDLE) -> list[Worker]:
    """Workers as ``rqworker`` registers them in Redis (without running them)."""
    rq_queue = django_rq.get_queue(jobs.QUEUE_NAME)
    workers = []
    for n in range(count):
        worker = Worker([rq_queue], connection=rq_queue.connection, name=f"test-worker-{state}-{n}")
        worker.register_birth()
        worker.set_state(state)
        workers.append(worker)
    return workers


def test_a_tick_starts_one_run_per_idle_worker_and_none_while_jobs_wait(
        pipeline_env) -> None:
    for _ in range(20):
        make_item()
    set_batch_mode(5)
    register_workers(3)
    register_workers(1, WorkerStatus.BUSY)  # draining a run already: not counted
    summary = scheduler.tick()
    assert len(summary.runs) == 3
    assert "tick: 3 run(s) queued for idle workers" in summary.line()
    assert "batch, 5 in flight each" in summary.line()
    # Nothing is claimed at tick time: each run claims when a worker starts it.
    assert QueueItem.objects.filter(status="pending").count() == 20
    assert django_rq.get_queue(jobs.QUEUE_NAME).count == 3
    assert scheduler.tick().runs == []  # the three jobs still wait for those workers


def test_with_no_worker_one_run_waits_for_the_first_to_start(pipeline_env) -> None:
    make_item()
    assert len(scheduler.tick().runs) == 1
    assert scheduler.tick().runs == []


def test_nothing_pending_starts_nothing(pipeline_env) -> None:
    register_workers(2)
    summary = scheduler.tick()
    assert summary.runs == [] and "tick: nothing pending" in summary.line()


def test_a_run_whose_job_cannot_be_enqueued_holds_nothing_and_spends_nothing(
        pipeline_env, monkeypatch) -> None:
    item = make_item()
    # No retries: redis-py's default backs off ~4 s before it gives up on a refused port.
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(django_rq, "get_queue",
                        lambda name: django_rq.queues.get_queue(name, connection=dead))
    with pytest.raises(redis.ConnectionError):
        scheduler.tick()
    item.refresh_from_db()
    assert (item.status, item.attempts, item.batch_run_id) == ("pending", 0, None)
    assert not BatchRun.objects.exists()


def test_a_claimed_run_whose_job_cannot_be_enqueued_is_released_at_once(
        pipeline_env, monkeypatch) -> None:
    from batchgen.delivery import runs
    from batchgen.work import queue

    item = make_item()
    run = runs.open_run(BatchRun.Mode.MULTI_BOT, 1)
    queue.claim(1, run)

    def refuse(run: BatchRun) -> None:
        raise redis.ConnectionError("Redis is away")

    monkeypatch.setattr(scheduler.workers, "enqueue", refuse)
    with pytest.raises(redis.ConnectionError):
        scheduler.enqueue(run)
    item.refresh_from_db()
    assert (item.status, item.attempts, item.lease_expires_at) == ("pending", 0, None)
    assert "could not be enqueued: ConnectionError" in item.last_error
    assert BatchRun.objects.get().error_summary == {"enqueue_failed": 1}


def test_every_tick_beats_the_tick_heartbeat_even_with_nothing_pending(pipeline_env) -> None:
    from batchgen.dashboard import health

    assert health.status().tick_age is None
    summary = scheduler.tick()
    assert summary.runs == [] and health.status().tick_age is not None


def test_a_tick_produces_replies_to_a_person_before_it_claims(pipeline_env,
                                                              fake_telegram) -> None:
    from django.utils import timezone

    from batchgen.models import Message
    from batchgen.models.conversations import ChatMessage, Membership
    from tests.factories import make_chat
    from tests.intake_support import make_intake_bot

    bot, chat = make_intake_bot(), make_chat()
    Membership.objects.create(bot=bot, chat=chat)
    ChatMessage.objects.create(chat=chat, telegram_message_id=1, speaker="Alice",
                               from_human=True, text="who is hungry?", sent_at=timezone.now())

    summary = scheduler.tick(sync=True)

    assert summary.produced == 1 and summary.run is not None
    message = Message.objects.get(bot=bot, chat=chat)
    assert message.status == Message.Status.SENT and "who is hungry?" in message.prompt
