"""Health: /healthz for load balancers, heartbeats, the dashboard's card and the gauges."""

from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection
from django.template.loader import render_to_string
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from batchgen.dashboard import health
from batchgen.models import QueueItem
from batchgen.state import shared
from botplatform.prometheus import scrape_registry
from tests.factories import make_item

pytestmark = pytest.mark.django_db

T0 = 1_800_000_000.0


def at(seconds: float):
    return lambda: T0 + seconds


@pytest.fixture
def fresh_shared(redis_url: str):
    shared.reset()
    yield
    shared.reset()


def test_healthz_answers_200_when_the_database_and_redis_answer(client, fresh_shared) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_answers_503_naming_redis_when_redis_is_down(client, settings) -> None:
    from batchgen.fakes.ports import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/5"  # nothing listens there
    shared.reset()
    try:
        response = client.get("/healthz")
    finally:
        shared.reset()
    assert response.status_code == 503
    assert response.json()["redis"] == "down: ConnectionError"
    assert response.json()["database"] == "ok"


def test_healthz_answers_503_naming_the_database_when_it_is_down(
        client, fresh_shared, monkeypatch) -> None:
    def refuse() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "ensure_connection", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "down", "database": "down: OperationalError",
                               "redis": "ok"}


def test_healthz_needs_no_login_and_is_not_redirected_to_https(client, settings,
                                                               fresh_shared) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/dashboard/").status_code == 301  # everything else is redirected


def test_a_tick_heartbeat_goes_stale_after_the_threshold(settings, fresh_shared) -> None:
    settings.HEALTH_TICK_STALE_SECONDS = 60
    assert health.status(at(0)).tick_age is None and health.status(at(0)).tick_stale
    health.beat("tick", at(0))
    fresh = health.status(at(59))
    assert fresh.tick_age == pytest.approx(59) and not fresh.tick_stale
    assert health.status(at(61)).tick_stale


def test_workers_count_as_alive_until_their_heartbeat_is_stale(settings, fresh_shared) -> None:
    settings.HEALTH_WORKER_STALE_SECONDS = 90
    health.beat_worker("w1", at(0))
    health.beat_worker("w2", at(50))
    assert health.status(at(80)).workers_alive == 2
    later = health.status(at(120))
    assert later.workers_alive == 1 and not later.workers_stale
    gone = health.status(at(200))
    assert gone.workers_alive == 0 and gone.workers_stale


def test_an_rq_worker_with_the_mixin_beats_on_rqs_own_heartbeat(redis_url, fresh_shared) -> None:
    class HeartbeatWorker(health.HeartbeatWorkerMixin, Worker):
        pass

    worker = HeartbeatWorker(["default"], connection=shared.connection(), name="w-test")
    assert health.workers_alive() == 0
    worker.heartbeat()
    assert health.workers_alive() == 1
    # An idle worker beats once per wait for work: a third of the threshold, not 405 s.
    assert worker.dequeue_timeout == 30


def test_the_oldest_claimable_item_goes_stale_after_the_threshold(settings, fresh_shared) -> None:
    settings.HEALTH_PENDING_STALE_SECONDS = 300
    now = timezone.now()
    old = make_item()
    QueueItem.objects.filter(id=old.id).update(created_at=now - timedelta(seconds=400))
    backed_off = make_item()  # waiting for its back-off: not yet claimable, not counted
    QueueItem.objects.filter(id=backed_off.id).update(
        created_at=now - timedelta(days=1), available_at=now + timedelta(minutes=5))
    found = health.status(lambda: now.timestamp())
    assert found.oldest_pending_age == pytest.approx(400, abs=2) and found.pending_stale
    QueueItem.objects.filter(id=old.id).update(status=QueueItem.Status.DONE)
    assert health.status(lambda: now.timestamp()).oldest_pending_age is None


def test_the_dashboard_card_shows_stale_parts_in_the_warning_colour(settings,
                                                                    fresh_shared) -> None:
    settings.HEALTH_TICK_STALE_SECONDS = 60
    health.beat("tick", at(0))
    health.beat_worker("w1", at(0))
    html = render_to_string("dashboard/_health.html", {"health": health.status(at(75))})
    assert 'state-open" data-health="tick"' in html and "75 s ago" in html
    assert 'state-closed" data-health="workers"' in html
    fresh = render_to_string("dashboard/_health.html", {"health": health.status(at(5))})
    assert 'state-closed" data-health="tick"' in fresh and "5 s ago" in fresh


def test_metrics_expose_the_last_tick_workers_and_oldest_pending_age(fresh_shared) -> None:
    health.beat("tick", at(0))
    health.beat_worker("w1")
    make_item()
    body = generate_latest(scrape_registry()).decode()
    values = {sample.name: sample.value for family in text_string_to_metric_families(body)
              for sample in family.samples}
    assert values["batchgen_last_tick_timestamp_seconds"] == T0
    assert values["batchgen_workers_alive"] == 1
    assert 0 <= values["batchgen_oldest_pending_age_seconds"] < 60


def test_the_health_command_fails_naming_a_stale_tick_or_silent_worker(fresh_shared) -> None:
    with pytest.raises(CommandError, match="tick: no heartbeat"):
        call_command("health", "--tick")
    health.beat("tick")
    health.beat_worker("worker-a")
    out = StringIO()
    call_command("health", "--tick", "--worker", "worker-a", stdout=out)
    assert out.getvalue().strip() == "healthy"
    with pytest.raises(CommandError, match="worker worker-b: no heartbeat"):
        call_command("health", "--worker", "worker-b")
    health.beat("tick", lambda: time.time() - 10_000)
    with pytest.raises(CommandError, match=r"tick: last heartbeat \d+s ago \(limit 60s\)"):
        call_command("health", "--tick")
