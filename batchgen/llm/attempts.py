"""The HTTP attempts of one request on one API key: rate limiter first, then retries.

The SDKs are built with ``max_retries=0`` and this loop retries instead (429, 5xx,
timeouts, connection errors; up to LLM_MAX_RETRIES more times). The SDKs' own retries
happen inside one SDK call, out of the limiter's sight: a retried request would not book
a slot, and a 429 answered to a retry would not slow the other workers down. Here every
attempt books its slot (``acquire(prompt estimate + max_tokens)``), and a 429 passes its
``Retry-After`` to ``penalize``, so every worker on that key pauses and the next attempt's
booking waits it out.

Without a configured limit ``get_rate_limiter`` returns None and nothing here touches
Redis; a 429 then sleeps ``Retry-After`` before the retry, as the SDKs did.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import replace

from batchgen import metrics
from batchgen.llm import errors
from batchgen.llm.errors import ProviderError
from batchgen.llm.keys import ApiKey
from batchgen.llm.providers.base import Provider
from batchgen.llm.types import Completion, CompletionRequest
from batchgen.ratelimit import RateLimiter, RateLimitTimeout, estimate_tokens, get_rate_limiter

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 60.0  # a longer server-asked pause is not waited out in-request
DEFAULT_PENALTY_SECONDS = 1.0  # a 429 without Retry-After still pauses the key this long


class WaitBudget:
    """Seconds one prompt may still spend waiting on limiters, across keys and providers."""

    def __init__(self, seconds: float) -> None:
        self.remaining = max(0.0, seconds)
        self._lock = threading.Lock()

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.remaining = max(0.0, self.remaining - seconds)


def send(provider: Provider, key: ApiKey, request: CompletionRequest,
         budget: WaitBudget) -> Completion:
    """A parsed reply, or ProviderError (``attempts`` = HTTP requests made).

    A limiter wait longer than the budget raises ProviderError("rate_limit_wait").
    """
    limiter = get_rate_limiter(provider.name, key.secret, provider.config.rpm_limit,
                               provider.config.tpm_limit)
    tokens = 0
    if limiter is not None:
        tokens = estimate_tokens(request.system_prompt + request.user_prompt) + request.max_tokens
    retries = provider.config.max_retries
    made = 0
    for attempt in range(retries + 1):
        if limiter is not None:
            _acquire(limiter, provider.name, tokens, budget, made)
        try:
            completion = provider.complete(request, key.secret)
        except ProviderError as exc:
            made += exc.attempts
            exc.attempts = made
            if exc.kind == errors.RATE_LIMITED:
                _on_429(limiter, key, exc)
            if exc.kind not in errors.BREAKER_FAILURES or attempt == retries:
                raise
            _pause(provider, exc, attempt, limiter)
            continue
        return replace(completion, attempts=made + completion.attempts)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _acquire(limiter: RateLimiter, provider: str, tokens: int, budget: WaitBudget,
             made: int) -> None:
    try:
        waited = limiter.acquire(tokens, budget.remaining)
    except RateLimitTimeout as exc:
        metrics.observe_limiter_timeout(provider)
        error = ProviderError(errors.RATE_LIMIT_WAIT, str(exc), retryable=True)
        error.attempts = made
        raise error from None
    if waited > 0:
        budget.spend(waited)
        metrics.observe_limiter_wait(provider, waited)


def _on_429(limiter: RateLimiter | None, key: ApiKey, exc: ProviderError) -> None:
    metrics.observe_rate_limited(key.provider, key.fingerprint)
    if limiter is not None:
        # Every worker on this key pauses; our next _acquire waits the pause out.
        limiter.penalize(exc.retry_after if exc.retry_after is not None
                         else DEFAULT_PENALTY_SECONDS)


def _pause(provider: Provider, exc: ProviderError, attempt: int,
           limiter: RateLimiter | None) -> None:
    """Back off before the next attempt: the server's Retry-After, else exponential."""
    if exc.kind == errors.RATE_LIMITED and limiter is not None:
        return  # penalize() already pushed the next slot past Retry-After
    if exc.retry_after is not None and exc.retry_after <= MAX_RETRY_AFTER_SECONDS:
        delay = exc.retry_after
    else:
        base = provider.config.retry_initial_delay * 2 ** attempt
        delay = min(base, MAX_BACKOFF_SECONDS) * (1 - 0.25 * random.random())
    logger.debug("%s: %s, retrying in %.2fs", provider.name, exc.kind, delay)
    time.sleep(delay)
