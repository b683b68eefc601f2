"""Metrics recorded anywhere show at /metrics. From forked children and rqworker work-horses:
tests/integration/test_metrics_processes.py."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from django.urls import path
from prometheus_client.parser import text_string_to_metric_families

from batchgen import metrics
from batchgen.dashboard import scrape as scrape_side
from batchgen.dashboard.scrape import metrics_view
from batchgen.models import Bot, Chat, QueueItem
from batchgen.state import shared

urlpatterns = [path("metrics", metrics_view)]
pytestmark = [pytest.mark.urls("tests.unit.test_metrics"), pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fresh_metrics_store(redis_url: str, settings) -> None:
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True
    shared.reset()
    yield
    shared.reset()


def scrape(client, **headers: str) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def labels(**values: str) -> tuple:
    return tuple(sorted(values.items()))


def test_recorded_batches_show_as_counters_and_histogram(client) -> None:
    metrics.observe_batch(1.2, 9, 1, "batch", "openai")
    metrics.observe_batch(0.3, 4, 0, "batch", "openai")

    samples = scrape(client)

    batch = labels(mode="batch", provider="openai")
    bucket = lambda le: labels(mode="batch", provider="openai", le=le)  # noqa: E731
    assert samples[("batch_generation_success_total", batch)] == 13
    assert samples[("batch_generation_failure_total", batch)] == 1
    assert samples[("batch_generation_duration_seconds_count", batch)] == 2
    assert samples[("batch_generation_duration_seconds_sum", batch)] == pytest.approx(1.5)
    assert samples[("batch_generation_duration_seconds_bucket", bucket(le="0.5"))] == 1
    assert samples[("batch_generation_duration_seconds_bucket", bucket(le="2.5"))] == 2
    assert samples[("batch_generation_duration_seconds_bucket", bucket(le="+Inf"))] == 2


def test_requests_record_latency_tokens_and_known_cost_only(client) -> None:
    metrics.observe_request("groq", "llama", "ok", 0.2, 100, 40, 0.0012)
    metrics.observe_request("groq", "llama", "error", 3.0, 100, 0, None)

    samples = scrape(client)

    assert samples[("llm_tokens_total", labels(provider="groq", kind="prompt"))] == 200
    assert samples[("llm_tokens_total", labels(provider="groq", kind="completion"))] == 40
    assert samples[("llm_cost_usd_total", labels(provider="groq"))] == pytest.approx(0.0012)
    assert samples[("llm_request_duration_seconds_count",
                    labels(provider="groq", outcome="error"))] == 1


def test_cost_per_message_saving_and_cached_tokens_by_route(client) -> None:
    metrics.observe_request("openai", "m", "ok", 0.2, 1000, 100, 0.0005, cached_tokens=800,
                            route="sync", full_cost_usd=0.0012)
    metrics.observe_request("openai", "m", "ok", 0.2, 1000, 100, 0.0006, route="batch",
                            full_cost_usd=0.0012)
    metrics.observe_request("openai", "new-model", "ok", 0.2, 1000, 100, None)

    samples = scrape(client)

    sync, batch = labels(provider="openai", route="sync"), labels(provider="openai",
                                                                   route="batch")
    assert samples[("llm_tokens_total", labels(provider="openai", kind="cached"))] == 800
    assert samples[("llm_route_cost_usd_total", batch)] == pytest.approx(0.0006)
    assert samples[("llm_priced_replies_total", sync)] == 1  # the unpriced one is not counted
    assert samples[("llm_saving_usd_total", sync)] == pytest.approx(0.0007)
    assert samples[("llm_saving_usd_total", batch)] == pytest.approx(0.0006)


def test_a_request_without_latency_still_counts_its_tokens(client) -> None:
    metrics.observe_request("openai", "gpt-4o-mini", "circuit_open", None, 12, 0,
                            Decimal("0.5"))
    metrics.BATCH_GENERATION_SUCCESS.inc(1.5, provider="openai")
    metrics.BATCH_GENERATION_SUCCESS.inc(2, provider="openai")

    samples = scrape(client)

    assert samples[("llm_tokens_total", labels(provider="openai", kind="prompt"))] == 12
    assert samples[("llm_cost_usd_total", labels(provider="openai"))] == 0.5
    assert ("llm_request_duration_seconds_count",
            labels(provider="openai", outcome="circuit_open")) not in samples
    assert samples[("batch_generation_success_total",
                    labels(mode="batch", provider="openai"))] == 3.5


def test_document_names_record_into_the_same_series(client) -> None:
    with metrics.BATCH_GENERATION_DURATION.time(provider="gemini"):
        pass
    metrics.BATCH_GENERATION_SUCCESS.inc(3, provider="gemini")
    metrics.BATCH_GENERATION_FAILURE.inc(provider="gemini")

    samples = scrape(client)

    batch = labels(mode="batch", provider="gemini")
    assert samples[("batch_generation_success_total", batch)] == 3
    assert samples[("batch_generation_failure_total", batch)] == 1
    assert samples[("batch_generation_duration_seconds_count", batch)] == 1


def test_sends_and_queue_depth_are_exposed(client) -> None:
    metrics.observe_send("sent")
    metrics.observe_send("sent")
    metrics.observe_send("send_unknown")
    bot, chat = Bot.objects.create(name="b", telegram_token="t"), Chat.objects.create(
        telegram_chat_id=1)
    for status in ("pending", "pending", "dead"):
        QueueItem.objects.create(bot=bot, chat=chat, status=status)

    samples = scrape(client)

    assert samples[("telegram_sends_total", labels(outcome="sent"))] == 2
    assert samples[("telegram_sends_total", labels(outcome="send_unknown"))] == 1
    assert samples[("batchgen_queue_items", labels(status="pending"))] == 2
    assert samples[("batchgen_queue_items", labels(status="dead"))] == 1
    assert samples[("batchgen_queue_items", labels(status="claimed"))] == 0


def test_circuit_state_is_a_number_per_breaker(client, monkeypatch) -> None:
    states = {"openai_api": "open", "gemini_api": "half_open", "groq_api": "closed"}
    monkeypatch.setattr(scrape_side, "get_circuit_breaker_stats",
                        lambda name: {"state": states[name], "failures": 0})

    samples = scrape(client)

    assert samples[("llm_circuit_state", labels(breaker="openai_api"))] == 2
    assert samples[("llm_circuit_state", labels(breaker="gemini_api"))] == 1
    assert samples[("llm_circuit_state", labels(breaker="groq_api"))] == 0


def test_recording_with_redis_down_neither_raises_nor_floods_the_log(
        settings, caplog, monkeypatch) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(shared, "RETRY_SECONDS", 0.0)  # every call really tries Redis
    with caplog.at_level(logging.WARNING, logger="batchgen"):
        metrics.observe_batch(1.0, 1, 0, "batch", "openai")
        metrics.observe_request("openai", "m", "ok", 0.1, 1, 1, None)
        metrics.observe_send("sent")

    assert len([r for r in caplog.records if "Redis unreachable" in r.message]) == 1


def test_scrape_with_redis_down_still_serves_db_gauges(client, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    samples = scrape(client)

    assert samples[("batchgen_metrics_redis_up", ())] == 0
    assert ("batchgen_queue_items", labels(status="pending")) in samples


def test_token_protects_the_endpoint(client, settings) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert ok.status_code == 200
    assert b"batch_generation_success_total" in ok.content


def test_production_without_a_token_refuses_to_serve(client, settings) -> None:
    settings.DEBUG = False

    response = client.get("/metrics")

    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content
