"""RQ entry points: they take ids, never model instances or secrets."""

from __future__ import annotations

import django_rq
from django.db import transaction
from rq import Worker
from rq.worker import WorkerStatus

from batchgen import health, pipeline, queue
from batchgen.models import BatchRun

QUEUE_NAME = "default"


class PreloadedWorker(health.HeartbeatWorkerMixin, Worker):
    """The worker class (settings.RQ["WORKER_CLASS"]) of ``manage.py rqworker``.

    Its heartbeats also go to ``batchgen.health`` (workers alive on the dashboard and in
    /metrics, ``manage.py health --worker``).

    RQ forks a work-horse per job and the horse imports the job's module: the
    pipeline and the three LLM SDKs take ~2 s to import, paid on every job.
    Naming this class imports them once in the parent; horses inherit them.
    """


def run_batch_job(batch_run_id: int) -> dict:
    """The RQ job: run one batch run (it claims and refills itself). Returns a small summary.

    A run that stopped at its bound while work is still pending enqueues its successor at
    once, so a long backlog never waits a tick interval between one run and the next."""
    run = pipeline.run_batch(batch_run_id)
    if run.size and queue.has_claimable() and pipeline.breaker_open_until() is None:
        enqueue(pipeline.open_run())
    return {"batch_run": run.id, "status": run.status, "sent": run.successes,
            "failed": run.failures, "items": run.size}


def enqueue(run: BatchRun) -> None:
    """Enqueue the run's job now (the run row must be committed: a worker must see it)."""
    job_id = f"batchrun-{run.id}"  # a fixed id: a second enqueue of one run is visible
    django_rq.get_queue(QUEUE_NAME).enqueue(
        run_batch_job, run.id, job_id=job_id, job_timeout=pipeline.job_timeout(run),
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
