"""Several API keys per provider: taken in turn, each with its own breaker; a key answering
401/403 leaves the rotation of every worker for LLM_KEY_DISABLE_SECONDS; a key is named by its
fingerprint only (docs/design.md, "API keys")."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

import redis

from batchgen import metrics
from batchgen.llm import config
from batchgen.llm.limits.budgets import key_fingerprint
from batchgen.state import shared
from batchgen.state.breakers import CircuitBreaker, breaker_name, get_circuit_breaker

__all__ = ["ApiKey", "KeyRing", "enable_keys", "get_ring", "key_health"]

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class ApiKey:
    """One configured key; only ``fingerprint`` may be shown anywhere."""

    provider: str
    secret: str = field(repr=False)
    fingerprint: str = ""

    @property
    def breaker_name(self) -> str:
        return f"{breaker_name(self.provider)}:{self.fingerprint}"

    def breaker(self) -> CircuitBreaker:
        return get_circuit_breaker(self.breaker_name)


def _flag(provider: str, fingerprint: str) -> str:
    return shared.key("llm", "key_disabled", provider, fingerprint)


class KeyRing:
    """The keys of one provider, in round-robin order, minus those out of rotation."""

    def __init__(self, provider: str, secrets: tuple[str, ...]) -> None:
        self.provider = provider
        self.keys = tuple(ApiKey(provider, secret, key_fingerprint(secret)) for secret in secrets)
        self._turn = itertools.count()  # next() on a count is atomic under the GIL
        self._disabled_until: dict[str, float] = {}
        self._refreshed_at = float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<KeyRing {self.provider} keys={[k.fingerprint for k in self.keys]}>"

    @property
    def rotates(self) -> bool:
        """More than one key: per-key breakers, and 401s take a key out of rotation."""
        return len(self.keys) > 1

    def candidates(self, live: bool = False) -> list[ApiKey]:
        """The keys in rotation, starting with the one whose turn it is.

        ``live=True``: every key, in that order, for a caller whose script reads the flags
        itself (``batchgen.llm.gate``): a key put back by ``enable_keys`` in another process
        is used at once."""
        if not self.rotates:
            return list(self.keys)
        start = next(self._turn) % len(self.keys)
        ordered = self.keys[start:] + self.keys[:start]
        if live:
            return list(ordered)
        self._refresh()
        now = time.time()
        return [key for key in ordered if self._disabled_until.get(key.fingerprint, 0.0) <= now]

    def disable(self, key: ApiKey, status: int | None) -> None:
        """Take ``key`` out of rotation in every worker for LLM_KEY_DISABLE_SECONDS."""
        seconds = config.key_disable_seconds()
        with self._lock:
            self._disabled_until[key.fingerprint] = time.time() + seconds
        # Redis down: this process still skips the key; the others learn by their own 401.
        shared.attempt(lambda client: client.set(_flag(self.provider, key.fingerprint),
                                                 str(status or "auth"), px=int(seconds * 1000)),
                       None, what="API key flags")
        logger.warning("%s key %s answered HTTP %s: out of rotation for %.0fs in every worker",
                       self.provider, key.fingerprint, status or "401", seconds)
        metrics.observe_key_disabled(self.provider, key.fingerprint)

    def note_disabled(self, key: ApiKey, seconds: float) -> None:
        """Another worker took ``key`` out of rotation; it comes back in ``seconds``."""
        with self._lock:
            self._disabled_until[key.fingerprint] = time.time() + seconds

    def flag(self, key: ApiKey) -> str:
        """The Redis key whose presence takes ``key`` out of rotation in every worker."""
        return _flag(self.provider, key.fingerprint)

    def disabled(self) -> dict[str, float]:
        """Fingerprint -> seconds left out of rotation, as this process last read it."""
        self._refresh(force=True)
        now = time.time()
        return {fp: until - now for fp, until in self._disabled_until.items() if until > now}

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._refreshed_at + REFRESH_SECONDS:
            return
        self._refreshed_at = now
        ttls = shared.attempt(self._read_ttls, None, what="API key flags")
        if ttls is None:
            return  # keep what this process knows; the next refresh tries again
        wall = time.time()
        with self._lock:
            self._disabled_until = {key.fingerprint: wall + ttl / 1000
                                    for key, ttl in zip(self.keys, ttls, strict=True) if ttl > 0}


    def _read_ttls(self, client: redis.Redis) -> list[int]:
        pipe = client.pipeline(transaction=False)
        for key in self.keys:
            pipe.pttl(_flag(self.provider, key.fingerprint))
        return pipe.execute()


_rings: dict[tuple[str, tuple[str, ...]], KeyRing] = {}
_rings_lock = threading.Lock()


def get_ring(provider: str, secrets: tuple[str, ...]) -> KeyRing:
    """The process-wide ring for these keys of ``provider``."""
    ring = _rings.get((provider, secrets))
    if ring is None:
        with _rings_lock:
            ring = _rings.setdefault((provider, secrets), KeyRing(provider, secrets))
    return ring


@shared.on_reset
def clear() -> None:
    """Forget the rings (tests change the keys); the Redis flags stay."""
    with _rings_lock:
        _rings.clear()


def enable_keys(provider: str | None = None) -> int:
    """Put every out-of-rotation key (of ``provider``, or all) back; returns how many."""
    def delete_flags(client: redis.Redis) -> int:
        pattern = _flag(provider or "*", "*")
        found = list(client.scan_iter(match=pattern, count=200))
        if found:
            client.delete(*found)
        return len(found)

    enabled = shared.attempt(delete_flags, 0, what="API key flags")
    for ring in list(_rings.values()):
        ring._refresh(force=True)
    return enabled


def key_health() -> list[dict]:
    """One row per configured key: provider, fingerprint, state and seconds left disabled.

    ``state`` is "active", "disabled" (answered 401) or, with several keys, the key's
    breaker state when it is not closed. Bounded: a few Redis calls per provider.
    """
    rows = []
    for provider in config.provider_names():
        ring = get_ring(provider, config.api_keys(provider))
        if not ring.keys:
            continue
        disabled = ring.disabled()
        for key in ring.keys:
            state = "disabled" if key.fingerprint in disabled else "active"
            if state == "active" and ring.rotates:
                breaker_state = key.breaker().get_state().get("state", "closed")
                state = "active" if breaker_state == "closed" else f"breaker {breaker_state}"
            rows.append({"provider": provider, "key": key.fingerprint, "state": state,
                         "disabled_for": disabled.get(key.fingerprint)})
    return rows
