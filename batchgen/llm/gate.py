"""The one Redis round trip before a request: one script checks the breakers, picks the key and
books the rate budget, writing only for a request that goes (no probe taken, no slot booked
for a refused one) and always at the budget's current learned limits. The round trip after is
a ``shared.Round`` sent by ``client.execute``. All its keys must live on one Redis server.
Why and how: docs/design.md, "The hot path".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from batchgen.llm.keys import ApiKey, KeyRing
from batchgen.llm.limits.budgets import ACQUIRE_LUA, RateLimiter
from batchgen.state import shared
from batchgen.state.breakers import BREAKER_LUA, CircuitBreaker

__all__ = ["Admission", "Skip", "admit"]

# KEYS: the provider's breaker, then per candidate key (7): its breaker, its disabled flag,
# its budget's rpm TAT, tpm TAT, blocked-until and stats, its budget's learned hash.
# ARGV: check the provider's breaker (1|0), its now, cooldown, token, probe TTL, rotates
# (1|0), candidates; then per candidate (17): its breaker's now, cooldown, token, probe TTL,
# the 10 arguments of budget_acquire, the 3 learned fields the limits were computed from.
_GATE_LUA = BREAKER_LUA + ACQUIRE_LUA + """
local n = tonumber(ARGV[7])
for c = 1, n do
  local fields = redis.call('HMGET', KEYS[1 + (c - 1) * 7 + 7],
                            'advertised_rpm', 'advertised_tpm', 'inferred_rpm')
  local a = 7 + (c - 1) * 17
  for i = 1, 3 do
    if ARGV[a + 15] ~= '*' and (fields[i] or '') ~= ARGV[a + 14 + i] then
      return {'stale', tostring(c), redis.call('HGETALL', KEYS[1 + (c - 1) * 7 + 7])}
    end
  end
end
local pkind = 'pass'
if ARGV[1] == '1' then
  local wait
  pkind, wait = breaker_check(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
  if pkind == 'reject' then return {'reject', tostring(wait)} end
end
local rotates = ARGV[6] == '1'
local skipped = {}
for c = 1, n do
  local k = 1 + (c - 1) * 7
  local a = 7 + (c - 1) * 17
  local reason
  local kkind = 'pass'
  if rotates then
    local ttl = redis.call('PTTL', KEYS[k + 2])
    if ttl > 0 then
      reason = {tostring(c), 'disabled', tostring(ttl / 1000)}
    else
      local kwait
      kkind, kwait = breaker_check(KEYS[k + 1], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]))
      if kkind == 'reject' then reason = {tostring(c), 'breaker', tostring(kwait)} end
    end
  end
  if not reason then
    local A = {}
    for i = 1, 10 do A[i] = ARGV[a + 4 + i] end
    local booked = budget_acquire({KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6]}, A)
    if booked[1] == 1 then
      if pkind == 'probe' then
        breaker_probe(KEYS[1], tonumber(ARGV[2]), ARGV[4], tonumber(ARGV[5]))
      end
      if kkind == 'probe' then
        breaker_probe(KEYS[k + 1], tonumber(ARGV[a + 1]), ARGV[a + 3], tonumber(ARGV[a + 4]))
      end
      return {'go', tostring(c), pkind, kkind, booked[2], booked[3], skipped}
    end
    reason = {tostring(c), 'budget', booked[2], booked[3]}
  end
  skipped[#skipped + 1] = reason
end
return {'none', pkind, 'pass', '0', '0', '0', skipped}
"""

_GATE = shared.Script(_GATE_LUA)
_DOWN = object()
STALE_RETRIES = 3  # limits changed under us this many times in a row: book at the last read


@dataclass(frozen=True)
class Skip:
    """A key passed over: out of rotation ("disabled"), its breaker open ("breaker") or no
    slot within the wait allowed ("budget"); ``seconds``: until that may change."""

    key: ApiKey
    reason: str
    seconds: float
    reply: tuple = ()


@dataclass(frozen=True)
class Admission:
    """What the script found: the key that goes (with the booked wait and slot), or none."""

    provider: str                # the provider's breaker: "pass", "probe" or "reject"
    key: ApiKey | None = None
    key_breaker: str = "pass"
    wait: float = 0.0
    slot: float = 0.0
    retry_after: float = 0.0     # "reject": seconds until the provider's breaker half-opens
    skipped: list[Skip] = field(default_factory=list)
    limiter: RateLimiter | None = None  # the budget the slot was booked on


def admit(breaker: CircuitBreaker | None, ring: KeyRing, candidates: Sequence[ApiKey],
          limiter_for: Callable[[ApiKey], RateLimiter], tokens: int,
          max_wait: float) -> Admission | None:
    """Run the script for ``candidates`` (in turn order); None while Redis is unreachable.

    ``breaker``: the provider's, or None when this request already passed it. A probe taken
    is held by this thread (``CircuitBreaker.admit``), and released by the outcome's
    ``record_*``/``queue_outcome`` like one taken by ``before_call``.
    """
    for _ in range(STALE_RETRIES):
        limiters = [limiter_for(key) for key in candidates]
        try:
            return _run(breaker, ring, candidates, limiters, tokens, max_wait)
        except Stale as stale:
            learner = limiters[stale.index].learner
            assert learner is not None  # only a budget that learns can be stale
            learner.remember(stale.raw)
    limiters = [limiter_for(key) for key in candidates]  # still moving: book at the last read
    return _run(breaker, ring, candidates, limiters, tokens, max_wait, check=False)


def _run(breaker: CircuitBreaker | None, ring: KeyRing, candidates: Sequence[ApiKey],
         limiters: Sequence[RateLimiter], tokens: int, max_wait: float,
         check: bool = True) -> Admission | None:
    keys: list[str] = [breaker.redis_key if breaker else ""]
    args: list = ["0", 0, 0, "", 0]
    held: list[tuple[CircuitBreaker, str]] = []
    if breaker is not None:
        token, before = breaker.before_args()
        held.append((breaker, token))
        args = ["1", *before]
    args += ["1" if ring.rotates else "0", len(candidates)]
    key_breakers = []
    for key, limiter in zip(candidates, limiters, strict=True):
        key_breaker = key.breaker() if ring.rotates else None
        key_breakers.append(key_breaker)
        learner = limiter.learner
        keys += [key_breaker.redis_key if key_breaker else "", ring.flag(key),
                 *limiter.redis_keys, learner.hash_key if learner else ""]
        key_before: list = [0, 0, "", 0]
        if key_breaker is not None:
            token, key_before = key_breaker.before_args()
            held.append((key_breaker, token))
        expected = learner.expected() if learner and check else ["*", "*", "*"]
        args += [*key_before, *limiter.acquire_args(tokens, max_wait), *expected]
    keys = [name or shared.key("unused") for name in keys]
    reply: Any = shared.attempt(lambda client: _GATE(client, keys, args), _DOWN,
                                what="rate limits")
    if reply is _DOWN:
        return None
    admission = _parse(reply, candidates)
    tokens_held = {held_by.name: token for held_by, token in held}
    if breaker is not None:  # raises CircuitOpenError on "reject"
        # No key went: no probe was written, whatever the breaker's check said.
        kind = admission.provider if admission.key or admission.provider == "reject" else "pass"
        breaker.admit(kind, admission.retry_after, tokens_held[breaker.name])
    if admission.key is None:
        return admission
    index = candidates.index(admission.key)
    if ring.rotates:
        chosen = key_breakers[index]
        assert chosen is not None  # a rotating ring gives every key its breaker
        chosen.admit(admission.key_breaker, 0.0, tokens_held[chosen.name])
    return replace(admission, limiter=limiters[index])


class Stale(Exception):
    """The limits changed since this process read them: ``raw`` is the budget's hash."""

    def __init__(self, index: int, raw: dict[str, str]) -> None:
        self.index, self.raw = index, raw
        super().__init__("the budget's limits changed")


def _parse(reply: list, candidates: Sequence[ApiKey]) -> Admission:
    kind = reply[0]
    if kind == "stale":
        flat = reply[2]
        raise Stale(int(reply[1]) - 1, dict(zip(flat[::2], flat[1::2], strict=True)))
    if kind == "reject":
        return Admission("reject", retry_after=float(reply[1]))
    _, index, provider_kind, key_kind, wait, slot, skipped = reply
    skips = [Skip(candidates[int(s[0]) - 1], s[1], float(s[2]), tuple(s[2:]))
             for s in skipped]
    if kind == "none":
        return Admission(provider_kind, skipped=skips)
    return Admission(provider_kind, candidates[int(index) - 1], key_kind, float(wait),
                     float(slot), skipped=skips)
