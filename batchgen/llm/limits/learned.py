"""Rate-limit budgets scoped as the providers count them (per account and model unless
``<PROVIDER>_RATE_LIMIT_SCOPE=key``), with limits learned from every reply's headers and 429s,
kept in one Redis hash per budget; a reply's news rides on the request's one round trip after
it, and the script before a request checks the limits it books at (docs/design.md, "Learned
limits" and "The hot path")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from django.conf import settings
from redis.typing import EncodableT, FieldT

from batchgen.llm.limits import rules as limits
from batchgen.llm.limits.rules import Aimd, AimdState, RateLimitHeaders
from batchgen.state import shared

__all__ = ["BudgetId", "Learner", "budget_for", "budget_table", "learner_for"]

# Groq's x-ratelimit-limit-requests counts requests per day; OpenAI's per minute.
REQUESTS_WINDOW = {"groq": limits.DAY}
REFRESH = 1.0             # seconds a process trusts its copy of a budget
TTL_SECONDS = 7 * 24 * 3600
BUCKETS = 6               # successes are counted in MINUTE / BUCKETS slices
# The hash fields the enforced limits depend on (``batchgen.llm.gate`` compares them).
LIMIT_FIELDS = ("advertised_rpm", "advertised_tpm", "inferred_rpm")


class _Commands:
    """Pipeline commands kept to be added to a round trip later."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple, dict]] = []

    def add(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.commands.append((name, args, kwargs))

    def __call__(self, pipe: redis.client.Pipeline) -> None:
        for name, args, kwargs in self.commands:
            getattr(pipe, name)(*args, **kwargs)


@dataclass(frozen=True)
class BudgetId:
    """One budget as the provider counts it: (provider, model), or one key of it."""

    provider: str
    model: str
    key: str = ""  # the key's fingerprint when keys are scoped apart, else ""

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}" + (f":key:{self.key}" if self.key else "")

    @property
    def scope(self) -> str:
        return "key" if self.key else "account"


def budget_for(provider: str, model: str, fingerprint: str, scope: str = "account") -> BudgetId:
    """The budget a request on this key spends: the account's per model, or (scope "key")
    the key's own."""
    return BudgetId(provider, model, fingerprint if scope == "key" else "")


def _hash_key(budget: BudgetId) -> str:
    return shared.key("ratelimit", "learned", budget.name)


def _bucket_key(budget: BudgetId, index: int) -> str:
    return shared.key("ratelimit", "accepted", budget.name, index)


@dataclass(frozen=True)
class Learned:
    """A budget's learned figures, as stored."""

    advertised_rpm: int | None = None
    advertised_tpm: int | None = None
    aimd: AimdState = field(default_factory=AimdState)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Learned:
        def number(name: str, kind: Callable[[str], Any] = float) -> Any:
            return kind(raw[name]) if raw.get(name) not in (None, "") else None

        rate = number("inferred_rpm")
        aimd = AimdState(rate=rate, step=number("step") or 0.0,
                         changed_at=number("changed_at") or 0.0,
                         decreased_at=number("decreased_at") or float("-inf"))
        return cls(number("advertised_rpm", int), number("advertised_tpm", int), aimd)


@dataclass(frozen=True)
class Limits:
    """What the limiter enforces for one budget now, and where each figure came from."""

    rpm: int | None
    rpm_source: str | None
    tpm: int | None
    tpm_source: str | None


def combine(configured_rpm: int | None, configured_tpm: int | None,
            learned: Learned) -> Limits:
    rpm, rpm_source = limits.effective_limit(configured_rpm, learned.advertised_rpm,
                                             learned.aimd.rate)
    tpm, tpm_source = limits.effective_limit(configured_tpm, learned.advertised_tpm, None)
    return Limits(rpm, rpm_source, tpm, tpm_source)


def default_aimd() -> Aimd:
    """Steps and cooldowns of a twelfth of a minute: a sawtooth between 0.8 and 1 of the
    limit takes about 40 s to climb."""
    return Aimd(interval=limits.MINUTE / 12, cooldown=limits.MINUTE / 12)


class Learner:
    """One process's view of one budget: learns from replies, answers the current limits.

    ``clock`` is wall-clock time (every machine's AIMD timestamps must compare).
    """

    def __init__(self, budget: BudgetId, configured_rpm: int | None = None,
                 configured_tpm: int | None = None, clock: Callable[[], float] = time.time,
                 aimd: Aimd | None = None) -> None:
        self.budget = budget
        self.configured_rpm = configured_rpm
        self.configured_tpm = configured_tpm
        self.aimd = aimd or default_aimd()
        self._clock = clock
        self._hash = _hash_key(budget)
        self._learned = Learned()
        self._seen = ["", "", ""]
        self._read_at = float("-inf")

    def __repr__(self) -> str:
        return f"<Learner {self.budget.name}>"

    def limits(self, refresh: bool = True) -> Limits:
        """The limits to enforce now (re-read from Redis at most once per ``REFRESH``, or
        never with ``refresh=False``: the caller's script checks them, ``expected``)."""
        if refresh and self._clock() - self._read_at >= REFRESH:
            raw = shared.attempt(lambda r: _text_hash(r, self._hash), None, "rate-limit learning")
            self._remember(raw)
        return combine(self.configured_rpm, self.configured_tpm, self._learned)

    def expected(self) -> list[str]:
        """The stored fields the limits depend on, as this process last read them ("" for
        none: before the first read, nothing learned), for ``batchgen.llm.gate`` to compare."""
        return list(self._seen)

    @property
    def hash_key(self) -> str:
        return self._hash

    def remember(self, raw: Mapping[str, str] | None) -> None:
        """Take the budget's hash as read by someone else (``batchgen.llm.gate``)."""
        self._remember(raw)

    def observe(self, headers: Mapping[str, str], status: int,
                round_trip: shared.Round | None = None) -> RateLimitHeaders:
        """Learn from one reply (any status): its advertised limits, a success, a 429.

        Redis hears only news: a changed advertised limit, a success while no request limit
        is known (counted, so that a first 429 can infer one from it), a 429, a due AIMD step.
        Any other reply costs no round trip; ``limits`` re-reads the budget once a second.
        With ``round_trip`` the writes join it instead of going alone.
        """
        parsed = limits.parse_headers(headers, REQUESTS_WINDOW.get(self.budget.provider,
                                                                   limits.MINUTE))
        now = self._clock()
        changes = {name: value for name, value in (("advertised_rpm", parsed.rpm),
                                                   ("advertised_tpm", parsed.tpm))
                   if value is not None and value != getattr(self._learned, name)}
        count = status < 400 and self._rpm_unknown()
        if round_trip is not None and count and not changes and self._read_at > float("-inf"):
            # Only a success to count: the budget's limits are checked before each request.
            queued = self._queue_count(now)
            round_trip.add(queued, len(queued.commands))
        elif (changes or count or self._read_at == float("-inf")) and round_trip is not None:
            queued = self._queue_record(changes, count, now)
            round_trip.add(queued, len(queued.commands),
                           done=lambda reply: self._remember(
                               reply[-1] if isinstance(reply[-1], dict) else None))
        elif changes or count or self._read_at == float("-inf"):
            raw = shared.attempt(lambda r: self._record(r, changes, count, now), None,
                                 "rate-limit learning")
            self._remember(raw)
        if status == 429 and parsed.rpm is None:
            # Nothing advertised: the 429 is all we know. With a limit in the headers, the
            # limit itself is the lesson and the Retry-After pause the remedy.
            self._change(lambda state, observed: self.aimd.on_429(
                state, now, self._ceiling(), observed))
        elif status < 400 and self._increase_due(now):
            self._change(lambda state, observed: self.aimd.on_success(
                state, now, self._ceiling()))
        return parsed

    def _record(self, r: redis.Redis, changes: dict[str, int], count: bool,
                now: float) -> dict[str, str]:
        pipe = r.pipeline(transaction=False)
        self._queue_record(changes, count, now)(pipe)
        return pipe.execute()[-1]

    def _queue_record(self, changes: dict[str, int], count: bool, now: float) -> _Commands:
        commands = self._queue_count(now) if count else _Commands()
        commands.add("hset", self._hash, mapping={**changes, **self._identity()})
        commands.add("expire", self._hash, TTL_SECONDS)
        commands.add("hgetall", self._hash)
        return commands

    def _queue_count(self, now: float) -> _Commands:
        """Count one accepted request in its minute bucket (a first 429 infers from them)."""
        commands = _Commands()
        bucket = _bucket_key(self.budget, int(now // (limits.MINUTE / BUCKETS)))
        commands.add("incr", bucket)
        commands.add("expire", bucket, int(limits.MINUTE * 2) + 1)
        return commands

    def _identity(self) -> dict[str, str]:
        return {"provider": self.budget.provider, "model": self.budget.model,
                "key": self.budget.key}

    def _remember(self, raw: Mapping[str, str] | None) -> None:
        if raw is not None:
            self._learned = Learned.from_hash(raw)
            self._seen = [raw.get(name) or "" for name in LIMIT_FIELDS]
            self._read_at = self._clock()

    def _ceiling(self) -> float | None:
        known = [v for v in (self.configured_rpm, self._learned.advertised_rpm) if v]
        return float(min(known)) if known else None

    def _rpm_unknown(self) -> bool:
        return combine(self.configured_rpm, None, self._learned).rpm is None

    def _increase_due(self, now: float) -> bool:
        state = self._learned.aimd
        return state.rate is not None and now - state.changed_at >= self.aimd.interval

    def _change(self, change: Callable[[AimdState, float], AimdState]) -> None:
        """Apply an AIMD step to the shared state, once even if many workers try at once."""
        def transaction(pipe: redis.client.Pipeline) -> None:
            learned = Learned.from_hash(_text_hash(pipe, self._hash))
            new = change(learned.aimd, self._accepted_last_minute(pipe))
            if new == learned.aimd:
                return
            pipe.multi()
            pipe.hset(self._hash, mapping=_hash_fields(_aimd_fields(new), self._identity()))
            pipe.expire(self._hash, TTL_SECONDS)

        def run(r: redis.Redis) -> None:
            # WATCH: a worker that loses the race re-reads and usually finds nothing to do.
            r.transaction(transaction, self._hash)
            self._remember(_text_hash(r, self._hash))

        shared.attempt(run, None, "rate-limit learning")

    def _accepted_last_minute(self, pipe: redis.client.Pipeline) -> float:
        now_index = int(self._clock() // (limits.MINUTE / BUCKETS))
        keys = [_bucket_key(self.budget, now_index - i) for i in range(BUCKETS)]
        return float(sum(int(value or 0) for value in pipe.mget(keys)))


def _aimd_fields(state: AimdState) -> dict[str, str]:
    return {"inferred_rpm": "" if state.rate is None else f"{state.rate:.3f}",
            "step": f"{state.step:.3f}", "changed_at": f"{state.changed_at:.3f}",
            "decreased_at": "" if state.decreased_at == float("-inf")
            else f"{state.decreased_at:.3f}"}


_learners: dict[tuple, Learner] = {}
_learners_lock = threading.Lock()


@shared.on_reset
def forget_learners() -> None:
    """Forget the process's learners (tests); what they learned stays in Redis."""
    with _learners_lock:
        _learners.clear()


def learner_for(budget: BudgetId, configured_rpm: int | None,
                configured_tpm: int | None) -> Learner:
    """The process-wide learner of ``budget`` (a changed configuration gets a fresh one)."""
    cache_key = (budget, configured_rpm, configured_tpm, settings.REDIS_URL)
    with _learners_lock:
        learner = _learners.get(cache_key)
        if learner is None:
            learner = _learners[cache_key] = Learner(budget, configured_rpm, configured_tpm)
        return learner


def budget_table(configured: Callable[[str], tuple[int | None, int | None]] | None = None
                 ) -> list[dict]:
    """Per budget any process has learned about: the limits enforced and where each came
    from ("configured", "advertised" or "inferred"), for the dashboard and /metrics.

    ``configured(provider)`` gives a provider's configured (rpm, tpm); by default the
    settings' (``batchgen.llm.config.rate_limits``). [] while Redis is unreachable.
    """
    if configured is None:
        from batchgen.llm import config  # here: the LLM layer imports this module

        configured = config.rate_limits

    def scan(r: redis.Redis) -> list[dict[str, str]]:
        pattern = shared.key("ratelimit", "learned", "*")
        return [raw for name in r.scan_iter(match=pattern, count=200)
                if (raw := _text_hash(r, name))]

    rows = []
    none: list[dict[str, str]] = []
    for raw in shared.attempt(scan, none, "rate-limit learning"):
        provider = raw.get("provider", "?")
        learned = Learned.from_hash(raw)
        enforced = combine(*configured(provider), learned)
        rows.append({"provider": provider, "model": raw.get("model", "?"),
                     "scope": "key" if raw.get("key") else "account",
                     "key": raw.get("key", ""),
                     "rpm": enforced.rpm, "rpm_source": enforced.rpm_source,
                     "tpm": enforced.tpm, "tpm_source": enforced.tpm_source,
                     "advertised_rpm": learned.advertised_rpm,
                     "advertised_tpm": learned.advertised_tpm,
                     "inferred_rpm": None if learned.aimd.rate is None
                     else round(learned.aimd.rate, 1)})
    return sorted(rows, key=lambda row: (row["provider"], row["model"], row["key"]))


def _text_hash(r: redis.Redis, name: str) -> dict[str, str]:
    """A hash as text: the shared client decodes replies (decode_responses=True)."""
    return cast(dict[str, str], r.hgetall(name))


def _hash_fields(*parts: Mapping[str, int | str]) -> dict[FieldT, EncodableT]:
    """The fields to HSET, merged, as redis-py types them."""
    return {key: value for part in parts for key, value in part.items()}
