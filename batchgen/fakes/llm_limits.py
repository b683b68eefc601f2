"""The fake provider's rate limits: sliding windows of requests and tokens, per account by
default or per key, and the headers OpenAI and Groq send about them."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SCOPES = ("account", "key")


def format_duration(seconds: float) -> str:
    """The providers' (Go-style) duration text: ``120ms``, ``1s``, ``7.66s``, ``6m0s``,
    ``2m59.56s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 2), 60)
    text = f"{rest:.2f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass
class Window:
    """What one scope (the account, or one key) sent in the last ``seconds``: (time, tokens)."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def expire(self, now: float, seconds: float) -> None:
        while self.entries and self.entries[0][0] <= now - seconds:
            self.entries.popleft()

    def tokens(self) -> int:
        return sum(tokens for _, tokens in self.entries)

    def wait_for_requests(self, limit: int, now: float, seconds: float) -> float:
        """Seconds until one more request fits under ``limit`` (0 when it fits now).

        After a limit is lowered more than one entry may have to leave first.
        """
        excess = len(self.entries) - limit
        if excess < 0:
            return 0.0
        return self.entries[excess][0] + seconds - now

    def wait_for_tokens(self, limit: int, tokens: int, now: float, seconds: float) -> float:
        """Seconds until ``tokens`` more fit under ``limit`` (a whole window if they never
        can)."""
        if tokens > limit:
            return seconds
        used = self.tokens()
        if used + tokens <= limit:
            return 0.0
        for at, spent in self.entries:
            used -= spent
            if used + tokens <= limit:
                return at + seconds - now
        return seconds


@dataclass(frozen=True)
class Limits:
    rpm: int
    tpm: int
    window: float


def rate_headers(limits: Limits, window: Window, now: float) -> dict[str, str]:
    """``x-ratelimit-*`` as OpenAI and Groq send them, for each limit that is enforced.

    Reset is the time until the oldest counted request leaves the window.
    """
    headers: dict[str, str] = {}
    reset = window.entries[0][0] + limits.window - now if window.entries else 0.0
    if limits.rpm:
        remaining = max(0, limits.rpm - len(window.entries))
        headers.update({"x-ratelimit-limit-requests": str(limits.rpm),
                        "x-ratelimit-remaining-requests": str(remaining),
                        "x-ratelimit-reset-requests": format_duration(reset)})
    if limits.tpm:
        used = window.tokens()
        headers.update({"x-ratelimit-limit-tokens": str(limits.tpm),
                        "x-ratelimit-remaining-tokens": str(max(0, limits.tpm - used)),
                        "x-ratelimit-reset-tokens": format_duration(reset)})
    return headers


def admit(limits: Limits, window: Window, tokens: int, now: float) -> float | None:
    """Count the request and return None, or return the seconds until it would fit."""
    window.expire(now, limits.window)
    wait = 0.0
    if limits.rpm:
        wait = window.wait_for_requests(limits.rpm, now, limits.window)
    if limits.tpm:
        wait = max(wait, window.wait_for_tokens(limits.tpm, tokens, now, limits.window))
    if wait > 0:
        return wait
    window.entries.append((now, tokens))
    return None


def retry_after_seconds(wait: float) -> str:
    """Retry-After is whole seconds, rounded up so a client that obeys it gets through."""
    return str(max(1, math.ceil(wait)))
