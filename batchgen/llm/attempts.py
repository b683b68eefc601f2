"""The one loop that owns a request's HTTP attempts on one provider: keys, limiter and retries
(the SDKs never retry), a ``Retry-After`` slept here or handed back to the caller, every reply
shown to the budget's learner. Why here: docs/design.md, "Attempts and retries"."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from batchgen import metrics
from batchgen.llm import config, errors, gate, keys
from batchgen.llm.errors import ProviderError
from batchgen.llm.keys import ApiKey
from batchgen.llm.limits.budgets import (
    RateLimiter,
    RateLimitTimeout,
    estimate_tokens,
    get_rate_limiter,
    note_wait,
)
from batchgen.llm.providers.base import Provider
from batchgen.llm.types import Completion, CompletionRequest
from batchgen.state import shared
from batchgen.state.breakers import CircuitBreaker, CircuitOpenError

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
DEFAULT_PENALTY_SECONDS = 1.0  # a 429 without Retry-After still pauses the key this long


class WaitBudget:
    """Seconds one prompt may still spend waiting (limiters, Retry-After), across keys and
    providers."""

    def __init__(self, seconds: float) -> None:
        self.remaining = max(0.0, seconds)
        self._lock = threading.Lock()

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.remaining = max(0.0, self.remaining - seconds)


@dataclass(frozen=True)
class Sent:
    """What the attempts of one request came to: a completion or the last error, and how
    many HTTP requests were made."""

    attempts: int
    completion: Completion | None = None
    error: ProviderError | None = None
    key: ApiKey | None = None


def send(provider: Provider, request: CompletionRequest, budget: WaitBudget,
         breaker: CircuitBreaker | None = None, round_trip: shared.Round | None = None) -> Sent:
    """Try the keys in rotation order until one answers or none is left; never raises
    ProviderError (it comes back in ``Sent.error``).

    ``breaker``: the provider's, checked in the same round trip as the key and the budget
    (``gate``); raises CircuitOpenError when it refuses. ``round_trip``: where the breakers'
    outcomes and what the reply taught the budget go, for the caller to send.
    """
    ring = keys.get_ring(provider.name, provider.config.api_keys)
    tokens = estimate_tokens(request.system_prompt + request.user_prompt) + request.max_tokens
    candidates = ring.candidates(live=True)
    made, reopens = 0, []
    saturated: ProviderError | None = None
    while candidates:
        admission = gate.admit(breaker, ring, candidates,
                               lambda key: _limiter(provider, key, refresh=False), tokens,
                               budget.remaining)
        if admission is None:  # Redis unreachable: each step on its per-process state
            if breaker is not None:
                breaker.before_call()
            return _send_stepwise(provider, request, budget, ring.candidates(), made)
        breaker = None  # passed: the next key after a 401 does not ask again
        for skip in admission.skipped:
            if skip.reason == "disabled":
                ring.note_disabled(skip.key, skip.seconds)
            elif skip.reason == "breaker":
                reopens.append(skip.seconds)  # this key's own breaker is open
            else:
                refused = _refused(_limiter(provider, skip.key, refresh=False), provider.name,
                                   skip.reply)
                if not ring.rotates:
                    return Sent(made, error=refused)
                if saturated is None or _sooner(refused, saturated):
                    saturated = refused  # the key that frees up first says when to come back
        key = admission.key
        if key is None:
            break
        waited = _acquire(admission.limiter, provider.name, tokens, budget,
                          first=(admission.wait, admission.slot))
        sent = (Sent(0, error=waited) if waited is not None
                else _tries(provider, key, request, budget, round_trip, admission.limiter))
        made += sent.attempts
        if ring.rotates:
            _record(key.breaker(), sent.error, round_trip)
        if sent.error is None:
            return Sent(made, sent.completion, key=key)
        if not ring.rotates or sent.error.kind not in (errors.AUTH, errors.RATE_LIMIT_WAIT):
            return Sent(made, error=sent.error, key=key)
        if sent.error.kind == errors.AUTH:
            ring.disable(key, sent.error.status)
        elif saturated is None or _sooner(sent.error, saturated):
            saturated = sent.error
        candidates = candidates[candidates.index(key) + 1:]
    return Sent(made, error=saturated or _no_key_left(provider, ring, reopens))


def _send_stepwise(provider: Provider, request: CompletionRequest, budget: WaitBudget,
                   candidates: list[ApiKey], made: int) -> Sent:
    """``send`` one step at a time: while Redis is away, each step is per-process and free."""
    ring = keys.get_ring(provider.name, provider.config.api_keys)
    reopens = []
    saturated: ProviderError | None = None
    for key in candidates:
        breaker = key.breaker() if ring.rotates else None
        refused_for = None if breaker is None else _refused_for(breaker)
        if refused_for is not None:
            reopens.append(refused_for)  # this key's own breaker is open: the next key's turn
            continue
        sent = _tries(provider, key, request, budget)
        made += sent.attempts
        if breaker is not None:
            _record(breaker, sent.error)
        if sent.error is None:
            return Sent(made, sent.completion, key=key)
        if not ring.rotates or sent.error.kind not in (errors.AUTH, errors.RATE_LIMIT_WAIT):
            return Sent(made, error=sent.error, key=key)
        if sent.error.kind == errors.AUTH:
            ring.disable(key, sent.error.status)
        elif saturated is None or _sooner(sent.error, saturated):
            saturated = sent.error  # the key that frees up first says when to come back
    return Sent(made, error=saturated or _no_key_left(provider, ring, reopens))


def _tries(provider: Provider, key: ApiKey, request: CompletionRequest,
           budget: WaitBudget, round_trip: shared.Round | None = None,
           booked: RateLimiter | None = None) -> Sent:
    """The attempts on one key: book a slot, send, and on a transient error wait and retry.

    ``booked``: the limiter on which the first attempt's slot is booked and waited for
    already (``send``)."""
    tokens = estimate_tokens(request.system_prompt + request.user_prompt) + request.max_tokens
    tries_left, made = provider.config.max_retries + 1, 0
    while True:
        # Per attempt: the last reply may have moved the limits.
        limiter = booked or _limiter(provider, key)
        refused = None if booked else _acquire(limiter, provider.name, tokens, budget)
        booked = None
        if refused is not None:
            return Sent(made, error=refused)
        made += 1
        try:
            completion = provider.complete(request, key.secret)
        except ProviderError as exc:
            error = exc
        else:
            _learn(limiter, provider, 200, round_trip)
            return Sent(made, completion)
        _learn(limiter, provider, error.status)  # now: the next step may depend on it
        if error.kind == errors.RATE_LIMITED:
            # Re-read: this 429 may just have taught the budget its first limit.
            _on_429(_limiter(provider, key), key, error)
        if error.kind not in errors.BREAKER_FAILURES:
            return Sent(made, error=error)  # permanent: a retry would get the same answer
        if error.retry_after is not None and error.retry_after > budget.remaining:
            return Sent(made, error=_too_long(error, budget))
        tries_left -= 1
        if tries_left == 0:
            return Sent(made, error=error)
        _wait_before_retry(provider, error, made, limiter, budget)


def _limiter(provider: Provider, key: ApiKey, refresh: bool = True) -> RateLimiter:
    """The limiter of the budget this key spends, at the configured and learned limits
    (as last read with ``refresh=False``: the gate's script checks them)."""
    return get_rate_limiter(provider.name, key.secret, *config.rate_limits(provider.name),
                            model=provider.model, scope=config.rate_limit_scope(provider.name),
                            refresh=refresh)


def _learn(limiter: RateLimiter, provider: Provider, status: int | None,
           round_trip: shared.Round | None = None) -> None:
    """Every reply with a status (200 or an error) teaches the budget; timeouts do not."""
    if status and limiter.learner is not None:
        limiter.learner.observe(provider.replies.headers, status, round_trip)


def _refused(limiter: RateLimiter, provider: str, reply: tuple) -> ProviderError:
    """The gate found no slot in budget on this key: the limiter's own refusal."""
    try:
        limiter.booked(["0", *reply])
    except RateLimitTimeout as exc:
        return _timed_out(provider, exc)
    raise AssertionError("a refused booking always raises")


def _timed_out(provider: str, exc: RateLimitTimeout) -> ProviderError:
    metrics.observe_limiter_timeout(provider)
    return ProviderError(errors.RATE_LIMIT_WAIT, str(exc), retryable=True,
                         retry_after=max(exc.needed - exc.waited, 0.0))


def _acquire(limiter: RateLimiter | None, provider: str, tokens: int,
             budget: WaitBudget, first: tuple[float, float] | None = None
             ) -> ProviderError | None:
    """Book a slot (or wait for the one booked, ``first``); a "rate_limit_wait" error (with
    the wait needed) when none is in budget."""
    if limiter is None:
        return None
    try:
        waited = limiter.acquire(tokens, budget.remaining, first)
    except RateLimitTimeout as exc:
        return _timed_out(provider, exc)
    if waited > 0:
        budget.spend(waited)
        note_wait()
        metrics.observe_limiter_wait(provider, waited)
    return None


def _on_429(limiter: RateLimiter | None, key: ApiKey, exc: ProviderError) -> None:
    metrics.observe_rate_limited(key.provider, key.fingerprint)
    if limiter is not None:
        # Every worker on this budget pauses; our next _acquire waits the pause out.
        limiter.penalize(exc.retry_after if exc.retry_after is not None
                         else DEFAULT_PENALTY_SECONDS)


def _too_long(exc: ProviderError, budget: WaitBudget) -> ProviderError:
    """The server asks for a longer pause than this prompt may wait: the provider is
    unavailable until then. Retrying earlier would only earn another refusal, and the
    caller defers the prompt by ``retry_after`` without spending an attempt."""
    return ProviderError(
        errors.RATE_LIMIT_WAIT, f"{exc.message}; the server asks to wait "
        f"{exc.retry_after:.0f}s, more than the {budget.remaining:.0f}s left to wait",
        retryable=True, status=exc.status, retry_after=exc.retry_after)


def _wait_before_retry(provider: Provider, exc: ProviderError, made: int,
                       limiter: RateLimiter | None, budget: WaitBudget) -> None:
    """Sleep before the next attempt: the server's Retry-After, else exponential back-off."""
    if exc.kind == errors.RATE_LIMITED and limiter is not None:
        return  # penalize() already pushed the next slot past Retry-After
    if exc.retry_after is not None:
        delay = exc.retry_after
        budget.spend(delay)
    else:
        base = provider.config.retry_initial_delay * 2 ** (made - 1)
        delay = min(base, MAX_BACKOFF_SECONDS) * (1 - 0.25 * random.random())
    logger.debug("%s: %s, retrying in %.2fs", provider.name, exc.kind, delay)
    time.sleep(delay)


def _sooner(error: ProviderError, than: ProviderError) -> bool:
    return (error.retry_after or 0.0) < (than.retry_after or 0.0)


def _refused_for(breaker: CircuitBreaker) -> float | None:
    """None when the breaker lets the call through, else the seconds until it half-opens."""
    try:
        breaker.before_call()
    except CircuitOpenError as exc:
        return exc.retry_after
    return None


def _record(breaker: CircuitBreaker, error: ProviderError | None,
            round_trip: shared.Round | None = None) -> None:
    if error is None:
        outcome = "success"  # a parsed reply: the key works, whatever it says
    elif error.kind in errors.BREAKER_FAILURES:
        outcome = "failure"
    else:
        outcome = "ignored"
    if round_trip is not None:
        breaker.queue_outcome(round_trip, outcome)
    else:
        getattr(breaker, f"record_{outcome}")()


def _no_key_left(provider: Provider, ring: keys.KeyRing,
                 reopens: list[float]) -> ProviderError:
    if reopens:  # the first key whose breaker half-opens says when to come back
        return ProviderError(errors.CIRCUIT_OPEN, f"every {provider.name} key in rotation "
                             f"has its circuit open ({len(reopens)} of {len(ring.keys)})",
                             retryable=True, retry_after=min(reopens))
    return ProviderError(errors.AUTH, f"all {len(ring.keys)} {provider.name} keys are out of "
                         "rotation after answering 401", retryable=False)
