"""Client-side rate limits per budget, shared by every process through Redis: one Lua
script checks a budget's requests and tokens per minute together and books the earliest slot
that fits both (GCRA), a 429 penalizes the budget, and with Redis away requests go through.
Why GCRA and not the ``limits`` library, and the tuning: docs/design.md, "Rate limits"."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis

from batchgen.llm.limits import learned
from batchgen.llm.limits import rules as limits
from batchgen.state import shared

__all__ = ["RateLimiter", "RateLimitTimeout", "all_limiter_stats", "estimate_tokens",
           "get_rate_limiter", "key_fingerprint"]

logger = logging.getLogger(__name__)

# At most one second's worth of the limit goes at once: OpenAI says a per-minute limit
# may be enforced per second ("60,000 requests/minute may be enforced as 1,000
# requests/second"), so a larger burst can draw 429s below the minute's limit, and what the
# burst takes is taken from the steady rate (any 60 s window stays under the limit).
BURST_SECONDS = 1.0
SAFETY_MARGIN = 0.03
TPM_BURST_TOKENS = 2048
TPM_MAX_BURST_FRACTION = 0.15
STATS_TTL_SECONDS = 7 * 24 * 3600
_DOWN = object()  # what shared.attempt returns while Redis is unreachable

# Shared by both scripts: the clock is the caller's (tests inject one) or, when its argument
# is empty, the Redis server's, the one clock every machine agrees on.
_CLOCK_LUA = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function put(key, value, now)
  -- Lua numbers would be truncated to integers on the way back; keep state as strings.
  local ttl = math.ceil((value - now + 180) * 1000)
  redis.call('SET', key, string.format('%.6f', value), 'PX', math.max(ttl, 1000))
end
"""

# A function, so that the script before a request (``batchgen.llm.gate``) books with the same
# text as ``RateLimiter.acquire``.
# K: rpm TAT, tpm TAT, blocked-until, stats.
# A: now, rpm interval, rpm burst seconds, tpm interval, tpm burst seconds, tokens, max_wait,
# stats ttl, provider, fingerprint. An interval of 0 means that budget is not limited.
ACQUIRE_LUA = _CLOCK_LUA + """
local function budget_acquire(K, A)
  local now = clock(A[1])
  local s = math.max(now, tonumber(redis.call('GET', K[3]) or '0'))
  local costs = {1, tonumber(A[6])}
  local tats = {}
  for i = 1, 2 do
    local interval = tonumber(A[2 * i])
    if interval > 0 then
      tats[i] = tonumber(redis.call('GET', K[i]) or '0')
      s = math.max(s, tats[i] + costs[i] * interval - tonumber(A[2 * i + 1]))
    end
  end
  if s - now < 0.001 then s = now end  -- float dust from the stored TATs, not a real wait
  local wait = s - now
  redis.call('HSET', K[4], 'provider', A[9], 'key', A[10])
  if wait > tonumber(A[7]) then
    redis.call('HINCRBY', K[4], 'timeouts', 1)
    redis.call('EXPIRE', K[4], A[8])
    return {0, string.format('%.6f', wait), string.format('%.6f', s)}
  end
  for i = 1, 2 do
    if tats[i] then
      put(K[i], math.max(tats[i], s) + costs[i] * tonumber(A[2 * i]), now)
    end
  end
  redis.call('HINCRBY', K[4], 'acquired', 1)
  if wait > 0 then
    redis.call('HINCRBY', K[4], 'waits', 1)
    redis.call('HINCRBYFLOAT', K[4], 'wait_seconds', string.format('%.6f', wait))
  end
  redis.call('EXPIRE', K[4], A[8])
  return {1, string.format('%.6f', wait), string.format('%.6f', s)}
end
"""

_ACQUIRE_LUA = ACQUIRE_LUA + """
return budget_acquire(KEYS, ARGV)
"""

# KEYS as above. ARGV: now, rpm interval, rpm burst, tpm interval, tpm burst, retry_after,
# provider, fingerprint, stats ttl.
_PENALIZE_LUA = _CLOCK_LUA + """
local now = clock(ARGV[1])
local block_end = now + tonumber(ARGV[6])
local blocked = math.max(block_end, tonumber(redis.call('GET', KEYS[3]) or '0'))
put(KEYS[3], blocked, now)
for i = 1, 2 do
  local interval = tonumber(ARGV[2 * i])
  if interval > 0 then
    -- Drain the burst allowance: after a 429 the restart is paced, not a burst.
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    put(KEYS[i], math.max(tat, block_end + tonumber(ARGV[2 * i + 1]) - interval), now)
  end
end
redis.call('HINCRBY', KEYS[4], 'penalties', 1)
redis.call('HSET', KEYS[4], 'last_retry_after', ARGV[6], 'provider', ARGV[7], 'key', ARGV[8])
redis.call('EXPIRE', KEYS[4], ARGV[9])
return string.format('%.6f', blocked)
"""


_ACQUIRE = shared.Script(_ACQUIRE_LUA)
_PENALIZE = shared.Script(_PENALIZE_LUA)


class RateLimitTimeout(Exception):
    """The wait for capacity would exceed ``max_wait``; nothing was reserved for this call."""

    def __init__(self, provider: str, fingerprint: str, waited: float, needed: float) -> None:
        self.waited = waited
        self.needed = needed
        super().__init__(
            f"{provider} key {fingerprint}: rate limit needs a {needed:.1f}s wait "
            f"(already waited {waited:.1f}s), more than allowed"
        )


@dataclass(frozen=True)
class Budget:
    """One GCRA budget: seconds per unit, and how many seconds of units may go at once."""

    limit: int
    interval: float
    burst_seconds: float

    @classmethod
    def per_minute(cls, limit: int | None, burst_floor: int = 1) -> Budget | None:
        if not limit or limit <= 0:
            return None
        burst = max(1, math.floor(limit / limits.MINUTE * BURST_SECONDS), burst_floor)
        rate = (limit - burst + 1) * (1 - SAFETY_MARGIN)
        interval = limits.MINUTE / rate
        return cls(limit=limit, interval=interval, burst_seconds=burst * interval)

    def args(self) -> list[float]:
        return [self.interval, self.burst_seconds]


_NO_BUDGET = [0.0, 0.0]


def key_fingerprint(api_key: str) -> str:
    """A short non-reversible name for an API key, safe for Redis keys, logs and errors."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def estimate_tokens(text: str) -> int:
    """Tokens a provider will count for ``text``: ~4 UTF-8 bytes a token, plus chat overhead.

    Counting bytes rather than characters over-estimates non-Latin text a little, which is
    the safe side: an under-estimate earns 429s, an over-estimate a little throughput.
    """
    return math.ceil(len(text.encode("utf-8")) / 4) + 8


class RateLimiter:
    """RPM + TPM limits for one provider API key, shared through Redis. Thread-safe.

    ``clock`` and ``sleep`` are for tests; with ``clock=None`` time is the Redis server's.
    """

    def __init__(self, provider: str, api_key: str, rpm: int | None, tpm: int | None,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 budget: learned.BudgetId | None = None) -> None:
        self.provider = provider
        # The name of the budget in Redis, stats and errors: the key's fingerprint when the
        # key has a budget of its own, else the account's (provider:model), every key's.
        self.fingerprint = (budget.key or budget.name) if budget else key_fingerprint(api_key)
        self.learner: learned.Learner | None = None
        self.rpm = Budget.per_minute(rpm)
        self.tpm = Budget.per_minute(tpm, min(TPM_BURST_TOKENS,
                                              math.floor((tpm or 0) * TPM_MAX_BURST_FRACTION)))
        self._clock = clock
        self._sleep = sleep
        name = budget.name if budget else self.fingerprint
        slot = f"{{{provider}:{name}}}"  # one hash slot on a cluster
        self._keys = [shared.key("ratelimit", slot, part)
                      for part in ("rpm", "tpm", "blocked", "stats")]
        self._lock = threading.Lock()
        self._local_blocked_until = 0.0

    def __repr__(self) -> str:
        return f"<RateLimiter {self.provider} key {self.fingerprint}>"

    def acquire(self, tokens: int, max_wait: float,
                first: tuple[float, float] | None = None) -> float:
        """Block until one request of ``tokens`` fits both budgets; return the seconds waited.

        ``tokens`` is what the provider counts: prompt estimate + ``max_tokens``. Raises
        ``RateLimitTimeout`` without reserving when the wait would exceed ``max_wait``.
        ``first``: the (wait, slot) of a booking already made (``batchgen.llm.gate``).
        """
        tokens = self._clamp_tokens(tokens)
        waited = 0.0
        while True:
            booked, first = first or self._book(tokens, max_wait - waited, waited), None
            if booked is None:  # Redis down: the local penalty is all we have
                return waited + self._wait_local(max_wait - waited, waited)
            wait, slot = booked
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait
            # A 429 may have arrived while we slept on a slot booked before it: book again.
            if not self._penalized_after(slot):
                return waited

    def penalize(self, retry_after: float) -> None:
        """A 429 came back anyway: no process sends on this budget before now + ``retry_after``."""
        retry_after = max(0.0, float(retry_after))
        with self._lock:
            self._local_blocked_until = max(self._local_blocked_until,
                                            self._local_now() + retry_after)
        args = [self._now_arg(), *self._budget_args(), retry_after, self.provider,
                self.fingerprint, STATS_TTL_SECONDS]
        shared.attempt(lambda client: _PENALIZE(client, self._keys, args), None,
                       what="rate limits")

    def stats(self) -> dict:
        """Counters kept in Redis, so any process (dashboard, /metrics) reads the same."""
        result = {"provider": self.provider, "key": self.fingerprint,
                  "rpm_limit": self.rpm.limit if self.rpm else None,
                  "tpm_limit": self.tpm.limit if self.tpm else None}
        found = shared.attempt(self._read_stats, None, what="rate limits")
        if found is None:
            return {**result, "redis": "down"}
        raw, blocked = found
        return {**result, **_parse_stats(raw), "blocked_until": float(blocked or 0) or None,
                "redis": "up"}

    def _read_stats(self, client: redis.Redis) -> tuple[dict[str, str], str | None]:
        # Text: the shared client decodes replies (decode_responses=True).
        return (cast(dict[str, str], client.hgetall(self._keys[3])),
                cast(str | None, client.get(self._keys[2])))

    @property
    def redis_keys(self) -> list[str]:
        """rpm TAT, tpm TAT, blocked-until, stats: the K of ``budget_acquire``."""
        return list(self._keys)

    def acquire_args(self, tokens: int, max_wait: float) -> list:
        """The A of ``budget_acquire`` (``ACQUIRE_LUA``) for one request of ``tokens``."""
        return [self._now_arg(), *self._budget_args(), self._clamp_tokens(tokens),
                max(max_wait, 0.0), STATS_TTL_SECONDS, self.provider, self.fingerprint]

    def booked(self, reply: list, waited: float = 0.0) -> tuple[float, float]:
        """(wait, slot) from ``budget_acquire``'s reply; RateLimitTimeout when refused."""
        reserved, wait, slot = reply
        if not int(reserved):
            raise RateLimitTimeout(self.provider, self.fingerprint, waited, waited + float(wait))
        return max(float(wait), 0.0), float(slot)

    def _book(self, tokens: int, budget: float, waited: float) -> tuple[float, float] | None:
        """Run the acquire script: (wait, slot) when reserved, None when Redis is down."""
        args = self.acquire_args(tokens, budget)
        booked: Any = shared.attempt(lambda client: _ACQUIRE(client, self._keys, args), _DOWN,
                                what="rate limits")
        if booked is _DOWN:
            return None
        return self.booked(booked, waited)

    def _penalized_after(self, slot: float) -> bool:
        blocked = shared.attempt(lambda client: client.get(self._keys[2]), None,
                                 what="rate limits")
        return float(blocked or 0) > slot

    def _wait_local(self, budget: float, waited: float) -> float:
        wait = self._local_blocked_until - self._local_now()
        if wait <= 0:
            return 0.0
        if wait > budget:
            raise RateLimitTimeout(self.provider, self.fingerprint, waited, waited + wait)
        self._sleep(wait)
        return wait

    def _clamp_tokens(self, tokens: int) -> int:
        tokens = max(int(tokens), 0)
        if self.tpm and tokens > self.tpm.limit:
            # No server accepts it either; booking the whole minute at least lets it through.
            logger.warning("%r: a request of %d tokens exceeds the TPM limit %d",
                           self, tokens, self.tpm.limit)
            return self.tpm.limit
        return tokens

    def _budget_args(self) -> list[float]:
        return [*(self.rpm.args() if self.rpm else _NO_BUDGET),
                *(self.tpm.args() if self.tpm else _NO_BUDGET)]

    def _now_arg(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    def _local_now(self) -> float:
        return time.time() if self._clock is None else self._clock()


def _parse_stats(raw: dict[str, str]) -> dict:
    return {
        "acquired": int(raw.get("acquired", 0)),
        "waits": int(raw.get("waits", 0)),
        "wait_seconds": float(raw.get("wait_seconds", 0.0)),
        "timeouts": int(raw.get("timeouts", 0)),
        "penalties": int(raw.get("penalties", 0)),
        "last_retry_after": float(raw["last_retry_after"]) if "last_retry_after" in raw
        else None,
    }


def all_limiter_stats() -> list[dict]:
    """Stats of every limiter any process has used, for the dashboard and /metrics
    (empty while Redis is unreachable)."""
    return shared.attempt(_read_all_stats, [], what="rate limits")


def _read_all_stats(client: redis.Redis) -> list[dict]:
    found = []
    for key in client.scan_iter(match=shared.key("ratelimit", "*", "stats"), count=200):
        raw = cast(dict[str, str], client.hgetall(key))  # decoded: decode_responses=True
        if raw:
            found.append({"provider": raw.get("provider", "?"), "key": raw.get("key", "?"),
                          **_parse_stats(raw)})
    return sorted(found, key=lambda row: (row["provider"], row["key"]))


_last_wait = [-1e9]  # when a request of this process last waited on a budget (monotonic)


def note_wait(clock: Callable[[], float] = time.monotonic) -> None:
    """A request of this process waited on its rate budget: the budget binds."""
    _last_wait[0] = clock()


def binding(within_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> bool:
    """Did a request of this process wait on a rate budget in the last ``within_s``? Every
    process of a shared budget waits when it binds, so each can tell without a round trip."""
    return clock() - _last_wait[0] <= within_s


_limiters: dict[tuple, RateLimiter] = {}
_limiters_lock = threading.Lock()


def get_rate_limiter(provider: str, api_key: str, rpm: int | None, tpm: int | None,
                     model: str = "", scope: str = "account",
                     refresh: bool = True) -> RateLimiter:
    """The process-wide limiter of the budget this key spends, at the limits known now.

    ``rpm``/``tpm`` are the configured ceilings (``batchgen.llm.config``); the replies'
    headers and 429s may lower them (``learned_limits``). A limiter is returned even when no
    limit is known yet: every reply teaches its budget, and a 429 pauses every worker on it.
    When the limits change, the new limiter keeps the budget's Redis keys and booked slots.
    ``refresh=False``: at the limits as last read (the caller's script checks them).
    """
    budget = learned.budget_for(provider, model, key_fingerprint(api_key), scope)
    learner = learned.learner_for(budget, rpm, tpm)
    enforced = learner.limits(refresh)
    cache_key = (budget, enforced.rpm, enforced.tpm)
    with _limiters_lock:
        limiter = _limiters.get(cache_key)
        if limiter is None:
            limiter = RateLimiter(provider, api_key, enforced.rpm, enforced.tpm, budget=budget)
            limiter.learner = learner
            _limiters[cache_key] = limiter
        return limiter


@shared.on_reset
def forget_limiters() -> None:
    """Forget the process's limiters (tests change limits); their budgets stay in Redis."""
    with _limiters_lock:
        _limiters.clear()
