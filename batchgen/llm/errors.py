"""One error type for every provider, saying whether a retry can help."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from batchgen.core.prompts import REDACTED, redact_secrets

# The reasons a generation can end without text (GenerationResult.error_kind).
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
AUTH = "auth"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
EMPTY = "empty"
TRUNCATED = "truncated"
CONTENT_FILTER = "content_filter"
SAFETY_BLOCK = "safety_block"
MALFORMED = "malformed"
CIRCUIT_OPEN = "circuit_open"
RATE_LIMIT_WAIT = "rate_limit_wait"  # our own limiter would have made the request wait too long
CONFIG = "config"

# Provider-side failures that count against the circuit breaker: the service is
# struggling, not our input.
BREAKER_FAILURES = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION})

# Would a later retry of the same queue item help? Sampling can turn an empty or
# malformed reply into a good one; a filter, a refusal, a truncation at the same
# max_tokens or a bad key will most likely happen again.
RETRYABLE_KINDS = BREAKER_FAILURES | {EMPTY, MALFORMED, CIRCUIT_OPEN, RATE_LIMIT_WAIT}

# The provider, not the prompt, was unavailable: the item waits without spending an attempt.
UNAVAILABLE_KINDS = frozenset({CIRCUIT_OPEN, RATE_LIMIT_WAIT})

# When the prompt fails over to the next provider of the chain (LLM_FALLBACK_PROVIDERS): the
# primary is down, saturated, or has no working key. 401/403 and a missing key are about our
# credentials at that provider, never about the prompt. Input errors (400, 404, 422, filters,
# safety, truncation) would most likely happen again anywhere, so they are not sent elsewhere.
FAILOVER_KINDS = BREAKER_FAILURES | {CIRCUIT_OPEN, RATE_LIMIT_WAIT, AUTH, CONFIG}

MAX_MESSAGE_CHARS = 500


def scrub(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known secret values and secret-shaped strings, and cap the length."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, REDACTED)
    return redact_secrets(message)[:MAX_MESSAGE_CHARS]


class ProviderError(Exception):
    """A provider call that produced no usable text.

    ``kind`` is one of the error kinds above, ``retryable`` says whether a later
    retry can help (429, 5xx, timeouts: yes; 400, 401, 403, 404, 422: no),
    ``status`` is the HTTP status when there was one, ``retry_after`` the
    server's requested pause (429s, some 5xx). The message never holds
    an API key: callers build it through ``scrub``.
    """

    def __init__(self, kind: str, message: str, retryable: bool | None = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.status = status
        self.retry_after = retry_after  # seconds, from Retry-After / retry-after-ms

    def __repr__(self) -> str:
        return (f"ProviderError(kind={self.kind!r}, status={self.status!r}, "
                f"message={self.message!r})")


def kind_for_status(status: int) -> str:
    """Map an HTTP status to an error kind."""
    if status == 429:
        return RATE_LIMITED
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status in (408, 504):
        return TIMEOUT
    if status >= 500:
        return SERVER_ERROR
    return BAD_REQUEST


def retry_after_seconds(headers: object,
                        now: Callable[[], float] = time.time) -> float | None:
    """``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date) from response headers.

    Any length is returned: the request loop sleeps a short one and hands a long one back
    to the caller, which defers the prompt until then.
    """
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = get(name)
        seconds = None if value is None else _seconds(str(value), divisor, now)
        if seconds is not None:
            return seconds
    return None


def _seconds(value: str, divisor: float, now: Callable[[], float]) -> float | None:
    try:
        seconds = float(value) / divisor
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
