"""Circuit breakers per LLM provider, shared by every process through Redis: every transition is
one Lua script, no lock is held around the call, and with Redis away each process keeps its
own state. Usage, states and clock: docs/design.md, "Circuit breakers"."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings

from batchgen.state import shared

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "breaker_name",
    "get_circuit_breaker",
    "get_circuit_breaker_stats",
    "open_until",
    "reset_circuit_breakers",
]

logger = logging.getLogger(__name__)

DEFAULT_PROBE_TTL = 90.0  # longer than one provider call with its retries

# One key per breaker, shared.key("circuit", name): a hash with state, failures, opened_at,
# probe, probe_until.
_DOWN = object()  # what shared.attempt returns while Redis is unreachable

# The check and the probe are two functions so that the LLM layer's one script before a
# request (``batchgen.llm.gate``) can check every breaker and the rate budget before it
# writes anything: a probe is taken only for a request that goes.
BREAKER_LUA = """
local function breaker_check(key, now, cooldown)
  local h = redis.call('HMGET', key, 'state', 'opened_at', 'probe_until')
  local state = h[1]
  if (not state) or state == 'closed' then return 'pass', 0 end
  local wait
  if state == 'open' then
    wait = tonumber(h[2]) + cooldown - now
  else
    wait = tonumber(h[3] or '0') - now  -- half_open: a live probe keeps everyone else out
  end
  if wait > 0 then return 'reject', wait end
  return 'probe', 0
end
local function breaker_probe(key, now, token, probe_ttl)
  redis.call('HSET', key, 'state', 'half_open', 'probe', token,
             'probe_until', tostring(now + probe_ttl))
end
"""

_BEFORE_LUA = BREAKER_LUA + """
local now = tonumber(ARGV[1])
local kind, wait = breaker_check(KEYS[1], now, tonumber(ARGV[2]))
if kind == 'probe' then breaker_probe(KEYS[1], now, ARGV[3], tonumber(ARGV[4])) end
return {kind, tostring(wait)}
"""

_SUCCESS_LUA = """
local h = redis.call('HMGET', KEYS[1], 'state', 'probe', 'failures')
if h[1] == 'half_open' then
  -- only the probe's own reply may close; a late reply from before the opening proves little
  if h[2] ~= ARGV[1] then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until', 'opened_at')
  return 1
end
if h[1] == 'closed' and h[3] and h[3] ~= '0' then redis.call('HSET', KEYS[1], 'failures', 0) end
return 0
"""

_FAILURE_LUA = """
local h = redis.call('HMGET', KEYS[1], 'state', 'probe')
local state = h[1] or 'closed'
if state == 'open' then return 0 end  -- late failures of calls started before the opening
if state == 'half_open' and h[2] ~= ARGV[3] then return 0 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if state == 'half_open' or failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  return 1
end
if not h[1] then redis.call('HSET', KEYS[1], 'state', 'closed') end
return 0
"""

_IGNORED_LUA = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')  -- still half_open: the next caller probes
end
return 0
"""

_BEFORE = shared.Script(_BEFORE_LUA)
_SUCCESS = shared.Script(_SUCCESS_LUA)
_FAILURE = shared.Script(_FAILURE_LUA)
_IGNORED = shared.Script(_IGNORED_LUA)


_OUTCOMES = {"success": _SUCCESS, "failure": _FAILURE, "ignored": _IGNORED}


class RedisState:
    """The breaker's state in one Redis hash; every transition is one atomic script.

    Each method takes the client ``shared.attempt`` hands it.
    """

    def __init__(self, name: str) -> None:
        self._key = shared.key("circuit", name)

    @property
    def key(self) -> str:
        return self._key

    def queue(self, pipe: redis.client.Pipeline | redis.Redis, op: str, args: list) -> object:
        """Add the ``op`` transition ("success", "failure", "ignored") to a round trip."""
        return _OUTCOMES[op].queue(pipe, [self._key], args)

    def before(self, client: redis.Redis, now: float, cooldown: float, token: str,
               probe_ttl: float) -> tuple[str, float]:
        kind, wait = _BEFORE(client, [self._key], [repr(now), cooldown, token, probe_ttl])
        return kind, float(wait)

    def success(self, client: redis.Redis, token: str) -> bool:
        return bool(_SUCCESS(client, [self._key], [token]))

    def failure(self, client: redis.Redis, now: float, threshold: int, token: str) -> bool:
        return bool(_FAILURE(client, [self._key], [repr(now), threshold, token]))

    def ignored(self, client: redis.Redis, token: str) -> None:
        _IGNORED(client, [self._key], [token])

    def snapshot(self, client: redis.Redis) -> dict:
        return client.hgetall(self._key)

    def reset(self, client: redis.Redis) -> None:
        client.delete(self._key)


class MemoryState:
    """The same transitions as the scripts above, per process, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._h: dict[str, Any] = {}  # as the Redis hash holds it: state, times, counts

    def before(
        self, now: float, cooldown: float, token: str, probe_ttl: float
    ) -> tuple[str, float]:
        with self._lock:
            state = self._h.get("state", "closed")
            if state == "closed":
                return "pass", 0.0
            if state == "open":
                wait = float(self._h["opened_at"]) + cooldown - now
            else:
                wait = float(self._h.get("probe_until", 0.0)) - now
            if wait > 0:
                return "reject", wait
            self._h.update(state="half_open", probe=token, probe_until=now + probe_ttl)
            return "probe", 0.0

    def success(self, token: str) -> bool:
        with self._lock:
            state = self._h.get("state", "closed")
            if state == "half_open":
                if self._h.get("probe") != token:
                    return False
                self._h = {"state": "closed", "failures": 0}
                return True
            if state == "closed":
                self._h["failures"] = 0
            return False

    def failure(self, now: float, threshold: int, token: str) -> bool:
        with self._lock:
            state = self._h.get("state", "closed")
            if state == "open" or (state == "half_open" and self._h.get("probe") != token):
                return False
            failures = int(self._h.get("failures", 0)) + 1
            self._h["failures"] = failures
            if state == "half_open" or failures >= threshold:
                self._h.update(state="open", opened_at=now)
                self._h.pop("probe", None)
                self._h.pop("probe_until", None)
                return True
            self._h["state"] = "closed"
            return False

    def ignored(self, token: str) -> None:
        with self._lock:
            if token and self._h.get("probe") == token:
                self._h.pop("probe", None)
                self._h.pop("probe_until", None)

    def snapshot(self) -> dict:
        with self._lock:
            return {key: str(value) for key, value in self._h.items()}

    def reset(self) -> None:
        with self._lock:
            self._h = {}


class CircuitOpenError(Exception):
    """The breaker refused the call: no request was sent."""

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name} is open; retry in {math.ceil(retry_after)}s")


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int | None = None,
        cooldown: float | None = None,
        clock: Callable[[], float] = time.time,
        probe_ttl: float = DEFAULT_PROBE_TTL,
    ) -> None:
        self.name = name
        self.threshold = threshold or settings.LLM_CIRCUIT_BREAKER_THRESHOLD
        self.cooldown = settings.LLM_CIRCUIT_BREAKER_TIMEOUT if cooldown is None else cooldown
        self.probe_ttl = probe_ttl
        self._clock = clock
        self._redis = RedisState(name)
        self._memory = MemoryState()
        self._on_redis = True
        self._switch_lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} threshold={self.threshold} cooldown={self.cooldown}>"

    def before_call(self) -> None:
        """Pass, or raise CircuitOpenError; after the cooldown exactly one caller probes."""
        token, args = self.before_args()
        kind, wait = self._run("before", *args)
        self.admit(kind, wait, token)

    def before_args(self) -> tuple[str, list]:
        """A fresh probe token, and what the check needs: now, cooldown, token, probe TTL.

        For a script that checks this breaker with other state (``batchgen.llm.gate``);
        it then reports what it found with ``admit``."""
        self._local.probe_token = None
        token = uuid.uuid4().hex
        return token, [self._clock(), self.cooldown, token, self.probe_ttl]

    def admit(self, kind: str, wait: float, token: str) -> None:
        """What the check found: "pass", "probe" (this thread holds the probe) or "reject"
        (raises CircuitOpenError)."""
        self._local.probe_token = None
        if kind == "probe":
            self._local.probe_token = token
            logger.info("circuit %s is half-open: this call is the probe", self.name)
        elif kind == "reject":
            raise CircuitOpenError(self.name, wait)

    @property
    def redis_key(self) -> str:
        return self._redis.key

    def queue_outcome(self, round_trip: shared.Round, outcome: str) -> None:
        """``record_<outcome>`` ("success", "failure", "ignored") as part of ``round_trip``,
        from the thread that called ``before_call``: sent with the request's other writes."""
        token = self._take_token()
        by_outcome: dict[str, list[Any]] = {"success": [token], "ignored": [token],
                                            "failure": [self._clock(), self.threshold, token]}
        args = by_outcome[outcome]
        round_trip.add(lambda pipe: self._redis.queue(pipe, outcome, args),
                       done=lambda reply: self._recorded(outcome, reply[0]),
                       down=lambda: self._recorded(outcome, self._fallback(outcome, args)),
                       script=_OUTCOMES[outcome])

    def _fallback(self, outcome: str, args: list) -> object:
        self._on_redis = False
        return getattr(self._memory, outcome)(*args)

    def _recorded(self, outcome: str, changed: object) -> None:
        if isinstance(changed, Exception):
            logger.error("circuit %s: recording a %s failed: %s", self.name, outcome, changed)
            return
        if not self._on_redis and shared.available():
            self._back_on_redis()
        if changed and outcome == "success":
            logger.warning("circuit %s closed: the probe succeeded", self.name)
        elif changed and outcome == "failure":
            logger.warning(
                "circuit %s opened for %ss after %s consecutive failures or a failed probe",
                self.name, self.cooldown, self.threshold,
            )

    def record_success(self) -> None:
        """Reset the failure count; a successful probe closes the circuit."""
        if self._run("success", self._take_token()):
            logger.warning("circuit %s closed: the probe succeeded", self.name)

    def record_failure(self) -> None:
        """Count a retryable provider error; open at the threshold; a failed probe re-opens."""
        if self._run("failure", self._clock(), self.threshold, self._take_token()):
            logger.warning(
                "circuit %s opened for %ss after %s consecutive failures or a failed probe",
                self.name, self.cooldown, self.threshold,
            )

    def record_ignored(self) -> None:
        """A neutral outcome (input error): not counted; a held probe is released."""
        self._run("ignored", self._take_token())

    def get_state(self) -> dict:
        raw = self._run("snapshot")
        now = self._clock()
        state = raw.get("state") or "closed"
        opened_at = float(raw["opened_at"]) if raw.get("opened_at") else None
        retry_after = None
        if state == "open" and opened_at is not None:
            retry_after = max(0.0, opened_at + self.cooldown - now)
        elif state == "half_open":
            retry_after = max(0.0, float(raw.get("probe_until") or 0.0) - now)
        return {
            "name": self.name,
            "state": state,
            "failures": int(raw.get("failures") or 0),
            "retry_after": retry_after,
            "threshold": self.threshold,
            "cooldown": self.cooldown,
            "opened_at": opened_at,
            "backend": "redis" if self._on_redis else "memory",
        }

    def reset(self) -> None:
        self._local.probe_token = None
        self._run("reset")

    def _take_token(self) -> str:
        token = getattr(self._local, "probe_token", None) or ""
        self._local.probe_token = None
        return token

    def _run(self, op: str, *args: object) -> Any:
        """Run one state operation on Redis, or on the in-memory fallback while Redis is down.
        Returns what ``op`` of RedisState and MemoryState returns (the two agree)."""
        result = shared.attempt(lambda client: getattr(self._redis, op)(client, *args), _DOWN,
                                what="circuit breakers")
        if result is _DOWN:
            self._on_redis = False
            return getattr(self._memory, op)(*args)
        if not self._on_redis:
            self._back_on_redis()
        return result

    def _back_on_redis(self) -> None:
        # What this process learnt alone is dropped: the shared state is what every worker saw.
        with self._switch_lock:
            if self._on_redis:
                return
            self._on_redis = True
            self._memory = MemoryState()
        logger.warning("circuit %s: back on the shared state in Redis", self.name)


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_name(provider: str) -> str:
    """The circuit breaker guarding an LLM provider: openai_api, gemini_api, groq_api."""
    return f"{provider}_api"


def get_circuit_breaker(name: str) -> CircuitBreaker:
    """The process-wide breaker called ``name`` (openai_api, gemini_api, groq_api, or any)."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            breaker = _breakers[name] = CircuitBreaker(name)
        return breaker


def get_circuit_breaker_stats(name: str) -> dict:
    """``{"name", "state", "failures", "retry_after", "threshold", "cooldown", ...}``."""
    return get_circuit_breaker(name).get_state()


def open_until(provider: str) -> float | None:
    """Epoch seconds until which ``provider``'s breaker refuses calls (when it half-opens,
    or when a live probe's time runs out), or None when a call may go through now.

    For the scheduler: claiming work for a provider whose breaker is open only defers it.
    """
    breaker = get_circuit_breaker(breaker_name(provider))
    state = breaker.get_state()
    if state["state"] == "closed" or not state["retry_after"]:
        return None
    return breaker._clock() + state["retry_after"]


@shared.on_reset
def reset_circuit_breakers() -> None:
    """Forget the cached breakers (tests; ``shared.reset()`` calls it); Redis state is kept."""
    with _breakers_lock:
        _breakers.clear()
