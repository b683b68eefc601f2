"""One error type for every provider, saying whether a retry can help."""

from __future__ import annotations

from batchgen.prompts import REDACTED, redact_secrets

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
CONFIG = "config"

# Provider-side failures that count against the circuit breaker: the service is
# struggling, not our input.
BREAKER_FAILURES = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION})

# Would a later retry of the same queue item help? Sampling can turn an empty or
# malformed reply into a good one; a filter, a refusal, a truncation at the same
# max_tokens or a bad key will most likely happen again.
RETRYABLE_KINDS = BREAKER_FAILURES | {EMPTY, MALFORMED, CIRCUIT_OPEN}

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
    ``status`` is the HTTP status when there was one. The message never holds
    an API key: callers build it through ``scrub``.
    """

    def __init__(self, kind: str, message: str, retryable: bool | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.status = status

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
