"""Rate limits as the providers state them and as we infer them: pure rules, no I/O, the clock
an argument (``parse_duration``, ``parse_headers``, ``Aimd``, ``effective_limit``,
``LastReply``; docs/design.md, "Rate-limit rules")."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["Aimd", "AimdState", "LastReply", "RateLimitHeaders", "effective_limit",
           "parse_duration", "parse_headers"]

logger = logging.getLogger(__name__)

MINUTE = 60.0
DAY = 86400.0

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)"
_DURATION = re.compile(rf"(?:{_PART})+")


def parse_duration(text: str) -> float:
    """Seconds in a provider's duration: Go-style units (``6m0s``, ``120ms``) or bare seconds.

    Raises ValueError naming the text and the accepted forms.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.fullmatch(value):
            raise ValueError(f"{text!r} is not a duration (expected forms like 1s, 6m0s, "
                             f"2m59.56s, 120ms or a number of seconds)") from None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(_PART, value))
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{text!r} is not a duration: it must be a non-negative number")
    return seconds


@dataclass(frozen=True)
class RateLimitHeaders:
    """What one reply said about the budget. Figures absent from the reply are None."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None
    retry_after: float | None = None
    requests_window: float = MINUTE  # seconds the request figures count (Groq: a day)

    @property
    def rpm(self) -> int | None:
        """The advertised requests-per-minute limit (None for a per-day request limit)."""
        return self.limit_requests if self.requests_window == MINUTE else None

    @property
    def tpm(self) -> int | None:
        return self.limit_tokens

    @property
    def advertised(self) -> bool:
        return self.rpm is not None or self.tpm is not None


_COUNTS = {"limit_requests": "x-ratelimit-limit-requests",
           "remaining_requests": "x-ratelimit-remaining-requests",
           "limit_tokens": "x-ratelimit-limit-tokens",
           "remaining_tokens": "x-ratelimit-remaining-tokens"}
_DURATIONS = {"reset_requests": "x-ratelimit-reset-requests",
              "reset_tokens": "x-ratelimit-reset-tokens"}


def parse_headers(headers: Mapping[str, str],
                  requests_window: float = MINUTE) -> RateLimitHeaders:
    """The rate-limit figures of one reply's headers (any mapping, names in any case).

    A malformed value is logged, naming the header, and left out: a reply is never lost
    because the provider wrote one header oddly.
    """
    lower = {str(name).lower(): str(value) for name, value in headers.items()}
    found: dict[str, Any] = {}  # RateLimitHeaders' fields: counts are int, durations float
    for field, name in _COUNTS.items():
        if name in lower:
            _keep(found, field, name, lower[name], _count)
    for field, name in _DURATIONS.items():
        if name in lower:
            _keep(found, field, name, lower[name], parse_duration)
    retry_after = _retry_after(lower)
    return RateLimitHeaders(**found, retry_after=retry_after, requests_window=requests_window)


def _count(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def _keep(found: dict, field: str, name: str, text: str,
          parse: Callable[[str], float | int]) -> None:
    try:
        found[field] = parse(text)
    except ValueError as exc:
        logger.warning("ignoring header %s: %s", name, exc)


def _retry_after(lower: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI's, more precise) else ``retry-after`` in seconds or as an
    HTTP date."""
    found: dict[str, float] = {}
    if "retry-after-ms" in lower:
        _keep(found, "ms", "retry-after-ms", lower["retry-after-ms"], parse_duration)
        if "ms" in found:
            return found["ms"] / 1000
    text = lower.get("retry-after")
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        logger.warning("ignoring header retry-after: %r is neither seconds nor a date", text)
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class AimdState:
    """A budget's inferred rate (requests per minute; None until a 429 teaches one)."""

    rate: float | None = None
    step: float = 0.0            # what one increase adds (fixed between decreases)
    changed_at: float = 0.0      # clock of the last change either way
    decreased_at: float = float("-inf")


@dataclass(frozen=True)
class Aimd:
    """Additive increase, multiplicative decrease of a requests-per-minute rate.

    ``decrease``: the factor a 429 applies. One overshoot brings back a 429 from every request
    in flight, so within ``cooldown`` seconds of a decrease further 429s change nothing.
    ``increase``: each ``interval`` of success adds this fraction of the rate set at the last
    decrease (a constant step, so the climb is linear, not compounding).
    """

    decrease: float = 0.8
    increase: float = 0.025
    interval: float = 5.0
    cooldown: float = 5.0
    floor: float = 1.0

    def on_429(self, state: AimdState, now: float, ceiling: float | None = None,
               observed: float | None = None) -> AimdState:
        """After a 429. ``observed``: requests the provider accepted in the last minute,
        the best first guess when no rate is known yet."""
        if state.rate is not None and now - state.decreased_at < self.cooldown:
            return state
        known = [v for v in (state.rate, ceiling, observed) if v is not None and v > 0]
        if not known:
            return state  # nothing to go on: Retry-After alone paces this one
        rate = max(self.floor, min(known) * self.decrease)
        return AimdState(rate=rate, step=max(1.0, rate * self.increase), changed_at=now,
                         decreased_at=now)

    def on_success(self, state: AimdState, now: float,
                   ceiling: float | None = None) -> AimdState:
        """After a reply that was not a 429: one step up per ``interval``, up to ``ceiling``."""
        if state.rate is None or now - state.changed_at < self.interval:
            return state
        rate = state.rate + state.step
        if ceiling is not None:
            rate = min(rate, ceiling)
        return replace(state, rate=rate, changed_at=now)


def effective_limit(configured: int | None, advertised: int | None,
                    inferred: float | None) -> tuple[int | None, str | None]:
    """(limit, source) a budget enforces: the smallest of what is known, with where it came
    from ("configured", "advertised" or "inferred"); (None, None) when nothing is known."""
    candidates = [(configured, "configured"), (advertised, "advertised"),
                  (None if inferred is None else int(inferred), "inferred")]
    known = [(value, source) for value, source in candidates if value is not None and value > 0]
    if not known:
        return None, None
    return min(known, key=lambda pair: pair[0])


class LastReply:
    """The status and headers of the current thread's last HTTP reply.

    An httpx response hook on a provider's shared client fills it: the SDKs parse the body
    and drop the headers of a 200 (OpenAI's ``with_raw_response`` would keep them, but per
    call and per SDK), and every SDK of ours sends through httpx. Each call runs start to
    finish on one thread, so the thread's last reply belongs to that call.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def clear(self) -> None:
        self._local.reply = (0, {})

    def hook(self, response: Any) -> None:
        self._local.reply = (int(response.status_code), dict(response.headers))

    @property
    def status(self) -> int:
        return getattr(self._local, "reply", (0, {}))[0]

    @property
    def headers(self) -> dict[str, str]:
        return getattr(self._local, "reply", (0, {}))[1]
