"""The write side of the metrics: counters and histograms in Redis (one hash per metric, one
field per label set, atomic ``HINCRBY``/``HINCRBYFLOAT``), because RQ forks a work-horse per job
and workers run on other machines, so in-process counters would never reach ``/metrics``
(``batchgen.dashboard.scrape``). Recording never raises: while Redis is away samples are
dropped. How figures ride on round trips: docs/design.md, "The hot path".
"""

from __future__ import annotations

import atexit
import bisect
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from django.conf import settings

from batchgen.state import shared

logger = logging.getLogger(__name__)

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
BATCH_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
LIMITER_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)

# Why work was held back (DESIGN.md §7, "Say what binds"): Telegram pacing, the LLM rate
# budget, a cap, the run's in-flight slots, or nothing to do.
HOLD_REASONS = ("pacing", "rate_budget", "cap", "slots", "idle")
HELD_BUCKET_SECONDS = 60  # one bucket a minute; the dashboard sums the last 10
HELD_TTL_SECONDS = 15 * 60
HELD_CHATS_KEPT = 100  # most-paced chats kept per minute: the rest is trimmed, so it stays small


class _Spec:
    """One metric's name, kind, help text, label names and (histograms) buckets."""

    def __init__(self, name: str, kind: str, documentation: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...] = ()) -> None:
        self.name, self.kind, self.documentation = name, kind, documentation
        self.labels, self.buckets = labels, buckets

    @functools.cached_property
    def key(self) -> str:
        return shared.key("metrics", self.name)


SPECS = {
    spec.name: spec for spec in (
        _Spec("batch_generation_duration_seconds", "histogram",
              "Wall time of one batch generation.", ("mode", "provider"), BATCH_BUCKETS),
        _Spec("batch_generation_success_total", "counter",
              "Prompts answered successfully in batch generation.", ("mode", "provider")),
        _Spec("batch_generation_failure_total", "counter",
              "Prompts that failed in batch generation.", ("mode", "provider")),
        _Spec("llm_request_duration_seconds", "histogram",
              "Latency of one LLM request, retries included.", ("provider", "outcome"),
              REQUEST_BUCKETS),
        _Spec("llm_tokens_total", "counter", "LLM tokens used.", ("provider", "kind")),
        _Spec("llm_cost_usd_total", "counter",
              "LLM cost in USD (requests whose model has a known price).", ("provider",)),
        _Spec("llm_route_cost_usd_total", "counter",
              "LLM cost in USD of priced replies, by route (sync | batch); divide by "
              "llm_priced_replies_total for the cost per message.", ("provider", "route")),
        _Spec("llm_priced_replies_total", "counter",
              "Replies whose model has a known price, by route.", ("provider", "route")),
        _Spec("llm_saving_usd_total", "counter",
              "What priced replies would have cost more at synchronous, uncached prices.",
              ("provider", "route")),
        _Spec("telegram_sends_total", "counter", "Telegram sends by outcome.", ("outcome",)),
        _Spec("llm_ratelimit_wait_seconds", "histogram",
              "Time a request waited for the client-side rate limiter (waits > 0 only).",
              ("provider",), LIMITER_WAIT_BUCKETS),
        _Spec("llm_ratelimit_timeouts_total", "counter",
              "Requests the limiter would have made wait longer than allowed "
              "(returned to the queue).", ("provider",)),
        _Spec("llm_rate_limited_total", "counter",
              "HTTP 429 answers from a provider, per key fingerprint.", ("provider", "key")),
        _Spec("llm_failover_total", "counter",
              "Prompts failed over to the next provider of the chain (LLM_FALLBACK_PROVIDERS), "
              "by who answered and how.",
              ("primary", "provider", "outcome")),
        _Spec("llm_key_disabled_total", "counter",
              "API keys taken out of rotation after a 401, per key fingerprint.",
              ("provider", "key")),
        _Spec("batchgen_held_seconds_total", "counter",
              "Seconds of work held back, by what held it: pacing (Telegram), rate_budget "
              "(LLM), cap, slots (in flight) or idle (nothing to do).", ("reason",)),
    )
}


_buffer = threading.local()
FLUSH_SECONDS = 1.0  # a killed process loses at most this much of a batched block's figures


class _Pending:
    """The increments of this process's ``batched`` blocks, summed per field and flushed by a
    daemon thread every FLUSH_SECONDS (and when the outermost block ends, and at exit).

    Increments, not totals: every process on every machine adds its own with HINCRBY, so the
    sums at ``/metrics`` are right whatever the number of workers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[tuple[str, str, str], float] = {}
        self._flusher: threading.Thread | None = None

    def add(self, commands: list[tuple[str, str, str, float]]) -> None:
        with self._lock:
            for op, key, field, amount in commands:
                before = self._ops.get((op, key, field), 0)
                # A TTL or a trim length is a setting, not an increment: keep the largest.
                self._ops[op, key, field] = (max(before, amount) if op in ("expire", "ztrim")
                                             else before + amount)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, daemon=True,
                                                 name="metrics-flush")
                self._flusher.start()

    def flush(self) -> None:
        with self._lock:
            ops, self._ops = self._ops, {}
        if ops:
            commands = [(op, key, field, amount) for (op, key, field), amount in ops.items()]
            shared.attempt(lambda client: _apply(client, commands), None, what="metrics")

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


_pending = _Pending()


def _forget_in_child() -> None:
    # The parent flushes what it summed; a forked work-horse starts empty, with no thread.
    global _pending
    _pending = _Pending()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(lambda: _pending.flush())


@contextmanager
def batched() -> Iterator[None]:
    """Sum everything this thread records inside the block in the process (``_Pending``),
    flushed at most once a second and when the block ends, instead of one round trip per
    call: a run's hundreds of replies cost one a second."""
    if getattr(_buffer, "batched", False):  # nested: the outer block flushes
        yield
        return
    _buffer.batched = True
    try:
        yield
    finally:
        _buffer.batched = False
        _pending.flush()


@contextmanager
def into(round_trip: shared.Round) -> Iterator[None]:
    """Add everything this thread records inside the block to ``round_trip`` (an LLM
    request's one round trip after its reply), unless a ``batched`` block has it."""
    if getattr(_buffer, "batched", False) or getattr(_buffer, "ops", None) is not None:
        yield
        return
    _buffer.ops = []
    try:
        yield
    finally:
        ops, _buffer.ops = _buffer.ops, None
        if ops:
            round_trip.add(lambda pipe: _queue(pipe, ops), len(ops))


def _write(commands: list[tuple[str, str, str, float]]) -> None:
    """Apply (op, key, field, amount) atomically; dropped while Redis is unreachable."""
    if getattr(_buffer, "batched", False):
        _pending.add(commands)
        return
    pending = getattr(_buffer, "ops", None)
    if pending is not None:
        pending.extend(commands)
        return
    if commands:
        shared.attempt(lambda client: _apply(client, commands), None, what="metrics")


def _apply(client: redis.Redis, commands: list[tuple[str, str, str, float]]) -> None:
    pipe = client.pipeline(transaction=True)
    _queue(pipe, commands)
    pipe.execute()


def _queue(pipe: redis.client.Pipeline, commands: list[tuple[str, str, str, float]]) -> None:
    for op, key, field, amount in commands:
        if op == "int":
            pipe.hincrby(key, field, int(amount))
        elif op == "float":
            pipe.hincrbyfloat(key, field, float(amount))
        elif op == "zincr":
            pipe.zincrby(key, float(amount), field)
        elif op == "ztrim":  # keep the ``amount`` highest scores
            pipe.zremrangebyrank(key, 0, -int(amount) - 1)
        elif op == "expire":
            pipe.expire(key, int(amount))


@functools.lru_cache(maxsize=4096)  # few label sets, written for every request and send
def _field(values: tuple[str, ...], *extra: str) -> str:
    # JSON keeps any label value (commas, quotes, '=') unambiguous.
    return json.dumps([*values, *extra], separators=(",", ":"))


def _counter_ops(name: str, values: tuple[str, ...], amount: float) -> list:
    if amount <= 0:
        return []
    # Always HINCRBYFLOAT: mixing it with HINCRBY on one field fails once the value
    # holds a fraction, and Redis prints integral floats as plain integers anyway.
    return [("float", SPECS[name].key, _field(values), amount)]


def _histogram_ops(name: str, values: tuple[str, ...], value: float | None) -> list:
    if value is None:  # e.g. a request refused by an open breaker: nothing was timed
        return []
    value = float(value)
    spec = SPECS[name]
    # Store per-bucket (not cumulative) counts: one HINCRBY per sample, summed at scrape.
    index = bisect.bisect_left(spec.buckets, value)
    upper = "+Inf" if index == len(spec.buckets) else repr(spec.buckets[index])
    return [("int", spec.key, _field(values, "bucket", upper), 1),
            ("int", spec.key, _field(values, "count"), 1),
            ("float", spec.key, _field(values, "sum"), value)]


# --- Public recording API (called by the pipeline; never raises) -------------

def _never_raises(record: Callable[..., None]) -> Callable[..., None]:
    """Recording must never break a batch: bad arguments or bugs are logged, not raised
    (Redis errors are already dropped by ``_write``)."""

    @functools.wraps(record)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # noqa: BLE001
            logger.exception("metrics: %s failed", record.__name__)

    return guarded


@_never_raises
def observe_batch(duration_s: float | None, successes: int, failures: int, mode: str,
                  provider: str) -> None:
    """Record one batch generation: its duration and its success / failure counts."""
    values = (str(mode), str(provider))
    _write(_histogram_ops("batch_generation_duration_seconds", values, duration_s)
           + _counter_ops("batch_generation_success_total", values, int(successes))
           + _counter_ops("batch_generation_failure_total", values, int(failures)))


@_never_raises
def observe_request(provider: str, model: str, outcome: str, latency_s: float | None,
                    prompt_tokens: int, completion_tokens: int,
                    cost_usd: float | None, *, cached_tokens: int = 0, route: str = "sync",
                    full_cost_usd: float | None = None) -> None:
    """Record one LLM request. ``model`` is accepted for the caller's convenience but
    not used as a label, to keep the series count small. ``full_cost_usd`` is what the same
    usage costs at synchronous prices with no cache: the saving is the difference. The cache
    hit rate is ``llm_tokens_total{kind="cached"} / llm_tokens_total{kind="prompt"}``."""
    provider, route = str(provider), str(route)
    ops = _histogram_ops("llm_request_duration_seconds", (provider, str(outcome)),
                         latency_s)
    ops += _counter_ops("llm_tokens_total", (provider, "prompt"), int(prompt_tokens or 0))
    ops += _counter_ops("llm_tokens_total", (provider, "cached"), int(cached_tokens or 0))
    ops += _counter_ops("llm_tokens_total", (provider, "completion"),
                        int(completion_tokens or 0))
    if cost_usd is not None:
        ops += _counter_ops("llm_cost_usd_total", (provider,), float(cost_usd))
        ops += _counter_ops("llm_route_cost_usd_total", (provider, route), float(cost_usd))
        if outcome == "ok":
            ops += _counter_ops("llm_priced_replies_total", (provider, route), 1)
        if full_cost_usd is not None:
            ops += _counter_ops("llm_saving_usd_total", (provider, route),
                                max(float(full_cost_usd) - float(cost_usd), 0.0))
    _write(ops)


@_never_raises
def observe_send(outcome: str) -> None:
    """Record one Telegram send: ``sent``, ``failed``, ``send_unknown`` or ``flood_wait`` (a
    429 waited out in the run: the message goes out after it)."""
    _write(_counter_ops("telegram_sends_total", (str(outcome),), 1))


@_never_raises
def observe_limiter_wait(provider: str, seconds: float) -> None:
    """Record one wait on the rate limiter (called only when it was > 0); it is also time
    the rate budget held work back ("what binds"). One round trip."""
    ops = _histogram_ops("llm_ratelimit_wait_seconds", (str(provider),), seconds)
    if 0 < seconds < float("inf"):
        ops += _held_ops("rate_budget", float(seconds), "", time.time())
    _write(ops)


@_never_raises
def observe_limiter_timeout(provider: str) -> None:
    """Record a request refused by the limiter because the wait exceeded its budget."""
    _write(_counter_ops("llm_ratelimit_timeouts_total", (str(provider),), 1))


@_never_raises
def observe_rate_limited(provider: str, key: str) -> None:
    """Record one 429 answer; ``key`` is the key's fingerprint, never the key."""
    _write(_counter_ops("llm_rate_limited_total", (str(provider), str(key)), 1))


@_never_raises
def observe_failover(primary: str, provider: str, outcome: str) -> None:
    """Record a prompt that failed over from ``primary``; ``provider`` answered last."""
    _write(_counter_ops("llm_failover_total", (str(primary), str(provider), str(outcome)),
                        1))


@_never_raises
def observe_key_disabled(provider: str, key: str) -> None:
    """Record an API key (by fingerprint) taken out of rotation after a 401."""
    _write(_counter_ops("llm_key_disabled_total", (str(provider), str(key)), 1))


def held_key(minute: int) -> str:
    """The hash of one minute's held seconds, one field per reason."""
    return shared.key("held", minute)


def held_chats_key(minute: int) -> str:
    """The sorted set of one minute's pacing seconds, one member per Telegram chat id."""
    return shared.key("held", "chats", minute)


def held_minutes(seconds: float, now: float) -> list[tuple[int, float]]:
    """(minute, seconds) of the interval [now - seconds, now], cut at minute boundaries.

    A 90 s wait counts in the minutes it lasted, so no minute holds more than 60 s of one
    wait; what lies beyond the buckets' lifetime is left out (it would expire unread).
    """
    start, parts = max(now - seconds, now - HELD_TTL_SECONDS), []
    minute = int(now // HELD_BUCKET_SECONDS)
    while start < now:
        begin = max(minute * HELD_BUCKET_SECONDS, start)
        if now > begin:
            parts.append((minute, now - begin))
        now, minute = begin, minute - 1
    return parts


def _held_ops(reason: str, seconds: float, chat: str, now: float) -> list:
    ops = _counter_ops("batchgen_held_seconds_total", (reason,), seconds)
    for minute, part in held_minutes(seconds, now):
        ops += [("float", held_key(minute), reason, part),
                ("expire", held_key(minute), "", HELD_TTL_SECONDS)]
        if reason == "pacing" and chat:
            chats = held_chats_key(minute)
            ops += [("zincr", chats, chat, part), ("ztrim", chats, "", HELD_CHATS_KEPT),
                    ("expire", chats, "", HELD_TTL_SECONDS)]
    return ops


@_never_raises
def observe_held(reason: str, seconds: float, chat: str = "", *,
                 now: float | None = None) -> None:
    """Record ``seconds`` of work held back for ``reason`` (one of ``HOLD_REASONS``),
    ending at ``now`` (default: the wall clock); for ``pacing``, ``chat`` is the Telegram
    chat id that waited. Kept in per-minute buckets for ``HELD_TTL_SECONDS`` (the dashboard's
    "what limits throughput now" sums the last 10) and in ``batchgen_held_seconds_total``.
    One Redis round trip."""
    if reason not in HOLD_REASONS:
        raise ValueError(f"unknown hold reason {reason!r}: one of {', '.join(HOLD_REASONS)}")
    seconds = float(seconds)
    if not seconds > 0 or seconds == float("inf"):  # also refuses NaN
        return
    _write(_held_ops(reason, seconds, str(chat or ""), time.time() if now is None else now))


class _DocumentCounter:
    """The kept ``BATCH_GENERATION_SUCCESS.inc(n)`` (docs/compat.md), backed by Redis."""

    def __init__(self, name: str) -> None:
        self.name = name

    def inc(self, amount: float = 1, mode: str = "batch", provider: str = "") -> None:
        try:
            _write(_counter_ops(self.name, (mode, provider or settings.LLM_PROVIDER), amount))
        except Exception:  # noqa: BLE001
            logger.exception("metrics: %s.inc failed", self.name)


class _DocumentHistogram:
    """The kept ``with BATCH_GENERATION_DURATION.time():`` (docs/compat.md), backed by Redis."""

    name = "batch_generation_duration_seconds"

    def observe(self, value: float, mode: str = "batch", provider: str = "") -> None:
        try:
            _write(_histogram_ops(self.name, (mode, provider or settings.LLM_PROVIDER),
                                  value))
        except Exception:  # noqa: BLE001
            logger.exception("metrics: %s.observe failed", self.name)

    @contextmanager
    def time(self, mode: str = "batch", provider: str = "") -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start, mode, provider)


BATCH_GENERATION_DURATION = _DocumentHistogram()
BATCH_GENERATION_SUCCESS = _DocumentCounter("batch_generation_success_total")
BATCH_GENERATION_FAILURE = _DocumentCounter("batch_generation_failure_total")
