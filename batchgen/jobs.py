"""RQ entry points: they take ids, never model instances or secrets."""

from __future__ import annotations

import django_rq
from django.db import transaction
from rq import Worker

from batchgen import pipeline
from batchgen.models import BatchRun

QUEUE_NAME = "default"


class PreloadedWorker(Worker):
    """The worker class (settings.RQ["WORKER_CLASS"]) of ``manage.py rqworker``.

    RQ forks a work-horse per job and the horse imports the job's module: the
    pipeline and the three LLM SDKs take ~2 s to import, paid on every job.
    Naming this class imports them once in the parent; horses inherit them.
    """


def run_batch_job(batch_run_id: int) -> dict:
    """The RQ job: run one claimed batch. Returns a small summary for RQ's result."""
    run = pipeline.run_batch(batch_run_id)
    return {"batch_run": run.id, "status": run.status, "sent": run.successes,
            "failed": run.failures}


def enqueue_after_commit(run: BatchRun) -> None:
    """Enqueue the batch's job once the claim is committed (a worker must see it)."""
    timeout = pipeline.job_timeout(run.size, run.workers)
    job_id = f"batchrun-{run.id}"  # a fixed id: a second enqueue of one run is visible

    def enqueue() -> None:
        django_rq.get_queue(QUEUE_NAME).enqueue(
            run_batch_job, run.id, job_id=job_id, job_timeout=timeout,
            result_ttl=86400, failure_ttl=7 * 86400,
        )

    BatchRun.objects.filter(id=run.id).update(rq_job_id=job_id)
    transaction.on_commit(enqueue)
