"""The scrape side of the metrics: ``/metrics`` reads the Redis hashes the write side
(``batchgen.metrics``) keeps, and adds gauges computed on the spot (queue depth from the
database, circuit state per provider). When ``METRICS_TOKEN`` is set a scrape must send
``Authorization: Bearer <token>`` (401 otherwise); unset, the endpoint is open under ``DEBUG``
and refused (403) without it, so production is never exposed by accident.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from batchgen.dashboard.binds import held_families
from batchgen.llm.config import breaker_names
from batchgen.metrics import CIRCUIT_STATE_VALUES, SPECS, _Spec
from batchgen.state import shared
from batchgen.state.breakers import get_circuit_breaker_stats
from batchgen.work.queue import depth_by_status

logger = logging.getLogger(__name__)


class RedisMetricsCollector:
    """Reads the Redis hashes at scrape time, plus gauges computed on the spot."""

    def collect(self) -> Iterator[Metric]:
        raw = self._read_redis()
        yield GaugeMetricFamily("batchgen_metrics_redis_up",
                                "1 when the metrics store (Redis) answered this scrape.",
                                value=0 if raw is None else 1)
        for spec in SPECS.values():
            samples = _decode((raw or {}).get(spec.name, {}))
            if spec.kind == "counter":
                yield _counter_family(spec, samples)
            else:
                yield _histogram_family(spec, samples)
        yield from _queue_gauge()
        yield _circuit_gauge()
        yield from held_families()

    def _read_redis(self) -> dict[str, dict[str, str]] | None:
        # None while Redis is unreachable: the scrape still serves the DB gauges.
        return shared.attempt(_read_all, None, what="metrics")


def _read_all(client: redis.Redis) -> dict[str, dict[str, str]]:
    pipe = client.pipeline(transaction=False)
    for spec in SPECS.values():
        pipe.hgetall(spec.key)
    return dict(zip(SPECS, pipe.execute(), strict=True))


def _decode(hash_: dict[str, str]) -> dict[tuple[str, ...], float]:
    return {tuple(json.loads(field)): float(value) for field, value in hash_.items()}


def _counter_family(spec: _Spec, samples: dict[tuple[str, ...], float]) -> Metric:
    family = CounterMetricFamily(spec.name, spec.documentation, labels=spec.labels)
    for values, amount in sorted(samples.items()):
        family.add_metric(list(values), amount)
    return family


def _histogram_family(spec: _Spec, samples: dict[tuple[str, ...], float]) -> Metric:
    family = HistogramMetricFamily(spec.name, spec.documentation, labels=spec.labels)
    width = len(spec.labels)
    label_sets = sorted({key[:width] for key in samples})
    for values in label_sets:
        running, buckets = 0.0, []
        for upper in [*map(repr, spec.buckets), "+Inf"]:
            running += samples.get((*values, "bucket", upper), 0.0)
            buckets.append((upper, running))
        family.add_metric(list(values), buckets, samples.get((*values, "sum"), 0.0))
    return family


def _queue_gauge() -> Iterator[Metric]:
    family = GaugeMetricFamily("batchgen_queue_items", "Queue items by status.",
                               labels=["status"])
    try:
        counts = depth_by_status()
    except Exception as exc:  # noqa: BLE001
        logger.warning("metrics: cannot count queue items (%s)", type(exc).__name__)
        return
    for status, count in counts.items():
        family.add_metric([status], count)
    yield family


def _circuit_gauge() -> Metric:
    family = GaugeMetricFamily("llm_circuit_state",
                               "Circuit breaker state: 0 closed, 1 half_open, 2 open.",
                               labels=["breaker"])
    for name in breaker_names():
        try:
            state = get_circuit_breaker_stats(name).get("state")
        except Exception:  # noqa: BLE001 - an unknown state is left out, not guessed
            continue
        if state in CIRCUIT_STATE_VALUES:
            family.add_metric([name], CIRCUIT_STATE_VALUES[state])
    return family


REDIS_REGISTRY = CollectorRegistry(auto_describe=False)
REDIS_REGISTRY.register(RedisMetricsCollector())


def _authorized(request: HttpRequest) -> HttpResponse | None:
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEBUG:
            return None
        return HttpResponse("metrics disabled: set METRICS_TOKEN\n", status=403,
                            content_type="text/plain")
    header = request.headers.get("Authorization", "")
    scheme, _, offered = header.partition(" ")
    # Constant-time compare: the token is a secret.
    if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(),
                                                          token.encode()):
        return None
    response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition: the process's default registry (django_prometheus,
    process metrics) followed by the Redis-backed collector's families."""
    # Imported here: botplatform builds the registry once and may import this module.
    from botplatform.prometheus import scrape_registry

    refusal = _authorized(request)
    if refusal is not None:
        return refusal
    body = generate_latest(scrape_registry()) + generate_latest(REDIS_REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
