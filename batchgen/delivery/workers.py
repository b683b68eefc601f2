"""The RQ side of delivery: enqueue a run's job and count the idle workers. The job itself
(``batchgen.jobs.run_batch_job``) is an entry point above this package, so it is named by its
import path, which is also what RQ stores in Redis.
"""

from __future__ import annotations

import django_rq
from django.db import transaction
from rq import Worker
from rq.worker import WorkerStatus

from batchgen.delivery import runs
from batchgen.models import BatchRun

QUEUE_NAME = "default"
RUN_JOB = "batchgen.jobs.run_batch_job"


def enqueue(run: BatchRun) -> None:
    """Enqueue the run's job now (the run row must be committed: a worker must see it)."""
    job_id = f"batchrun-{run.id}"  # a fixed id: a second enqueue of one run is visible
    django_rq.get_queue(QUEUE_NAME).enqueue(
        RUN_JOB, run.id, job_id=job_id, job_timeout=runs.job_timeout(run),
        result_ttl=86400, failure_ttl=7 * 86400,
    )
    BatchRun.objects.filter(id=run.id).update(rq_job_id=job_id)


def enqueue_after_commit(run: BatchRun) -> None:
    """``enqueue`` once the surrounding transaction commits."""
    transaction.on_commit(lambda: enqueue(run))


def idle_capacity() -> int:
    """How many more runs the workers could start right now: idle workers minus jobs
    already waiting. With no worker registered, one job waits for the first to start."""
    rq_queue = django_rq.get_queue(QUEUE_NAME)
    workers = Worker.all(queue=rq_queue)
    waiting = rq_queue.count
    if not workers:
        return 0 if waiting else 1
    idle = sum(1 for worker in workers if worker.get_state() == WorkerStatus.IDLE)
    return max(idle - waiting, 0)
