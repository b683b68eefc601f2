"""Metrics recorded anywhere (forked children, rqworker work-horses) show at /metrics."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import path
from redis import Redis
from rq import Queue

from batchgen import metrics
from batchgen.dashboard.scrape import metrics_view

# The same store, scrape and label helpers as the unit tests.
from tests.unit.test_metrics import fresh_metrics_store, labels, scrape  # noqa: E402,F401,I001

urlpatterns = [path("metrics", metrics_view)]
pytestmark = [pytest.mark.urls("tests.integration.test_metrics_processes"), pytest.mark.django_db]

PROJECT_DIR = Path(__file__).resolve().parents[2]




def _record_in_child() -> None:
    metrics.observe_batch(2.0, 7, 3, "multi_bot", "openai")
    metrics.observe_send("failed")


def test_samples_recorded_in_a_forked_child_reach_the_parent_scrape(client) -> None:
    metrics.observe_send("failed")  # the parent's connection exists before the fork
    child = multiprocessing.get_context("fork").Process(target=_record_in_child)
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0

    samples = scrape(client)

    assert samples[("batch_generation_success_total",
                    labels(mode="multi_bot", provider="openai"))] == 7
    assert samples[("telegram_sends_total", labels(outcome="failed"))] == 2


def test_a_job_run_by_a_real_rqworker_shows_in_the_web_scrape(client, redis_url) -> None:
    queue = Queue("default", connection=Redis.from_url(redis_url))
    job = queue.enqueue(metrics.observe_batch, 4.2, 11, 2, "batch", "groq")
    env = {**os.environ, "REDIS_URL": redis_url,
           "DJANGO_SETTINGS_MODULE": "botplatform.settings"}

    # The real command: it forks a work-horse for the job, as in production.
    subprocess.run([sys.executable, "manage.py", "rqworker", "default", "--burst"],
                   cwd=PROJECT_DIR, env=env, check=True, capture_output=True, timeout=120)

    job.refresh()
    assert job.is_finished
    samples = scrape(client)
    batch = labels(mode="batch", provider="groq")
    assert samples[("batch_generation_success_total", batch)] == 11
    assert samples[("batch_generation_failure_total", batch)] == 2
    assert samples[("batch_generation_duration_seconds_sum", batch)] == pytest.approx(4.2)
