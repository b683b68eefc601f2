"""The fake provider's prompt cache: a prompt whose start repeats reports cached tokens, as
OpenAI documents it (docs/design.md, "The fake prompt cache")."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

MIN_TOKENS = 1024
STEP_TOKENS = 128
CHARS_PER_TOKEN = 4
_PRUNE_EVERY = 10_000  # entries added between sweeps of the expired ones


class PrefixCache:
    """Per scope (a provider and a model: caches are not shared between them)."""

    def __init__(self, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._seen: dict[tuple[str, bytes], float] = {}
        self._added = 0

    def cached_tokens(self, scope: str, text: str) -> int:
        """Tokens of ``text``'s longest start seen in ``scope`` within ``ttl_s``, in whole
        steps (0 below ``MIN_TOKENS``); every step of ``text`` is remembered from now."""
        now = self._clock()
        digest = hashlib.sha256(scope.encode())
        hit, matching, done = 0, True, 0
        for tokens in range(MIN_TOKENS, len(text) // CHARS_PER_TOKEN + 1, STEP_TOKENS):
            end = tokens * CHARS_PER_TOKEN
            digest.update(text[done:end].encode())  # each step extends the previous hash
            done = end
            key = (scope, digest.copy().digest())
            seen = self._seen.get(key)
            matching = matching and seen is not None and now - seen <= self.ttl_s
            if matching:
                hit = tokens
            self._seen[key] = now  # a hit refreshes the prefix, as the providers' caches do
            self._added += 1
        if self._added >= _PRUNE_EVERY:
            self._prune(now)
        return hit

    def _prune(self, now: float) -> None:
        self._seen = {k: t for k, t in self._seen.items() if now - t <= self.ttl_s}
        self._added = 0
