"""RQ entry points: they take ids, never model instances or secrets."""

from __future__ import annotations

from rq import Worker

from batchgen.delivery import runs, workers
from batchgen.state import heartbeats
from batchgen.work import queue

QUEUE_NAME = workers.QUEUE_NAME


class PreloadedWorker(heartbeats.HeartbeatWorkerMixin, Worker):
    """The worker class (settings.RQ["WORKER_CLASS"]) of ``manage.py rqworker``.

    Its heartbeats also go to ``batchgen.state.heartbeats`` (workers alive on the dashboard and
    in /metrics, ``manage.py health --worker``).

    RQ forks a work-horse per job and the horse imports the job's module: the
    pipeline and the three LLM SDKs take ~2 s to import, paid on every job.
    Naming this class imports them once in the parent; horses inherit them.
    """


def run_batch_job(batch_run_id: int) -> dict:
    """The RQ job: run one batch run (it claims and refills itself). Returns a small summary.

    A run that stopped at its bound while work is still pending enqueues its successor at
    once, so a long backlog never waits a tick interval between one run and the next."""
    run = runs.run_batch(batch_run_id)
    if run.size and queue.has_claimable() and runs.breaker_open_until() is None:
        workers.enqueue(runs.open_run())
    return {"batch_run": run.id, "status": run.status, "sent": run.successes,
            "failed": run.failures, "items": run.size}
