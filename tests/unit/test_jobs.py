"""The RQ entry points: a job takes a run id, drains, and reports what it did."""

from __future__ import annotations

import django_rq
import pytest
from rq import SimpleWorker

from batchgen import jobs
from batchgen.delivery import scheduler
from batchgen.models import BatchRun
from tests.factories import make_item, set_batch_mode

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_enqueued_run_claims_and_drains_when_a_worker_takes_it(pipeline_env) -> None:
    _, fake_telegram = pipeline_env
    for _ in range(7):
        make_item()
    set_batch_mode(3)
    [run] = scheduler.tick().runs
    assert BatchRun.objects.get(id=run.id).rq_job_id == f"batchrun-{run.id}"
    worker = django_rq.get_worker(jobs.QUEUE_NAME, worker_class=SimpleWorker)
    worker.work(burst=True)
    job = django_rq.get_queue(jobs.QUEUE_NAME).fetch_job(f"batchrun-{run.id}")
    assert job.return_value() == {"batch_run": run.id, "status": "succeeded", "sent": 7,
                                  "failed": 0, "items": 7}
    assert len(fake_telegram.messages()) == 7


def test_a_job_delivered_twice_does_nothing_the_second_time(pipeline_env) -> None:
    make_item()
    [run] = scheduler.tick().runs
    first = jobs.run_batch_job(run.id)
    assert jobs.run_batch_job(run.id) == first


def test_a_run_that_found_the_queue_dry_leaves_no_history(pipeline_env) -> None:
    make_item()
    [run] = scheduler.tick().runs
    scheduler.tick(sync=True)  # another run got there first
    assert jobs.run_batch_job(run.id)["items"] == 0
    assert not BatchRun.objects.filter(id=run.id).exists()
    assert jobs.run_batch_job(run.id)["items"] == 0  # delivered again: still harmless


def test_a_run_stopped_at_its_bound_hands_the_backlog_to_a_successor_without_a_tick(
        pipeline_env, settings) -> None:
    _, fake_telegram = pipeline_env
    settings.BATCH_DRAIN_MAX_ITEMS = 3
    for _ in range(7):
        make_item()
    set_batch_mode(2)
    assert len(scheduler.tick().runs) == 1
    django_rq.get_worker(jobs.QUEUE_NAME, worker_class=SimpleWorker).work(burst=True)
    assert sorted(BatchRun.objects.values_list("size", flat=True)) == [1, 3, 3]
    assert len(fake_telegram.messages()) == 7
