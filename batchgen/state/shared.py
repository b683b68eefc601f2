"""State shared by every process through Redis: one connection factory, one key prefix, and
``attempt``, which returns a default while Redis is away (an outage is remembered for
``RETRY_SECONDS`` and logged once); ``Script`` and ``on_reset`` serve the modules built on it
(docs/design.md, "Shared state")."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from django.conf import settings

__all__ = ["PREFIX", "RETRY_SECONDS", "Round", "Script", "attempt", "available", "connection",
           "key", "mark_down", "mark_up", "on_reset", "reset"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "botplatform"
RETRY_SECONDS = 5.0
# Short timeouts: shared state is never worth stalling an LLM call or a send for long.
CONNECT_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 2.0

_lock = threading.Lock()
_clients: dict[tuple[str, int], redis.Redis] = {}
_down_since: float | None = None
_retry_at = 0.0
_forgetters: list[Callable[[], None]] = []


def connection(url: str | None = None) -> redis.Redis:
    """The process's client for ``url`` (default ``settings.REDIS_URL``), strings decoded.

    One client (one connection pool) per URL and process id: RQ forks a work-horse per job,
    and a child must not share its parent's sockets.
    """
    url = url or settings.REDIS_URL
    slot = (url, os.getpid())
    client = _clients.get(slot)  # every breaker and limiter call comes here: no lock when known
    if client is not None:
        return client
    with _lock:
        client = _clients.get(slot)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                          socket_timeout=SOCKET_TIMEOUT_S,
                                          decode_responses=True)
            _clients[slot] = client
        return client


def key(*parts: object) -> str:
    """``botplatform:<part>:<part>…``: the one prefix every shared key carries."""
    return ":".join([PREFIX, *(str(part) for part in parts)])


def available(clock: Callable[[], float] = time.monotonic) -> bool:
    """False while an outage is remembered (for ``RETRY_SECONDS`` after the last failure)."""
    return _down_since is None or clock() >= _retry_at


def mark_down(exc: BaseException, what: str = "shared state",
              clock: Callable[[], float] = time.monotonic) -> None:
    """Remember an outage; the first failure of an outage is logged (the error's type only:
    a connection error's text may carry the Redis URL and its password)."""
    global _down_since, _retry_at
    with _lock:
        first = _down_since is None
        now = clock()
        if first:
            _down_since = now
        _retry_at = now + RETRY_SECONDS
    if first:
        log.warning("Redis unreachable (%s) for %s: running on per-process state, retrying "
                    "every %.0fs", type(exc).__name__, what, RETRY_SECONDS)


def mark_up(clock: Callable[[], float] = time.monotonic) -> None:
    global _down_since
    with _lock:
        was_down, _down_since = _down_since, None
    if was_down is not None:
        log.info("Redis answers again after %.1fs: shared state resumed", clock() - was_down)


def attempt(operation: Callable[[redis.Redis], T], default: T, what: str = "shared state") -> T:
    """``operation(connection())``, or ``default`` while Redis is unreachable."""
    if not available():
        return default
    try:
        result = operation(connection())
    except redis.RedisError as exc:
        mark_down(exc, what)
        return default
    if _down_since is not None:
        mark_up()
    return result


class Script:
    """A Lua script run by its SHA on any client, loaded on first use on each server.

    Not bound to a client (unlike redis-py's ``register_script``), so one module-level
    instance serves every process and every ``connection()``.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    def queue(self, pipe: redis.client.Pipeline | redis.Redis, keys: list[str],
              args: list[Any]) -> Any:
        """Add the script to ``pipe`` by its SHA (on a client: run it); ``Round`` reruns it
        if the server lacks it."""
        return pipe.evalsha(self.sha, len(keys), *keys, *args)


class Round:
    """Commands of several users sent in one round trip (a pipeline, not a transaction).

    Each ``add`` queues its commands and says what to do with their replies (``done``) or,
    while Redis is unreachable, instead (``down``). A script the server does not know yet
    (after a restart) answers NoScriptError without running: only it is sent again, alone.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[Callable[[Any], Any], int, Callable[[list], None] | None,
                                Callable[[], None] | None, Script | None]] = []

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, queue: Callable[[Any], Any], count: int = 1,
            done: Callable[[list], None] | None = None, down: Callable[[], None] | None = None,
            script: Script | None = None) -> None:
        """``queue(pipe)`` adds ``count`` commands; ``script``: the one script it runs."""
        self._parts.append((queue, count, done, down, script))

    def send(self, what: str = "shared state") -> bool:
        """One round trip for every part added; False (``down`` called) while Redis is away."""
        parts, self._parts = self._parts, []
        if not parts:
            return True
        replies = attempt(lambda client: self._execute(client, parts), None, what=what)
        if replies is None:
            for _, _, _, down, _ in parts:
                if down is not None:
                    down()
            return False
        for (_, _, done, _, _), reply in zip(parts, replies, strict=True):
            if done is not None:
                done(reply)
        return True

    @staticmethod
    def _execute(client: redis.Redis, parts: list) -> list[list]:
        if len(parts) == 1 and parts[0][1] == 1:
            return [Round._one(client, *parts[0])]  # one command: no pipeline to build
        pipe = client.pipeline(transaction=False)
        for queue, _, _, _, _ in parts:
            queue(pipe)
        flat = pipe.execute(raise_on_error=False)
        replies, at = [], 0
        for queue, count, _, _, script in parts:
            reply = flat[at:at + count]
            at += count
            if script is not None and isinstance(reply[0], redis.exceptions.NoScriptError):
                # Not run: the server lost its scripts. Run just this part again, loading it.
                client.script_load(script.source)
                again = client.pipeline(transaction=False)
                queue(again)
                reply = again.execute(raise_on_error=False)
            for value in reply:
                if isinstance(value, redis.exceptions.ConnectionError | redis.TimeoutError):
                    raise value
            replies.append(reply)
        return replies

    @staticmethod
    def _one(client: redis.Redis, queue: Callable[[Any], Any], count: int, done: Any,
             down: Any, script: Script | None) -> list:
        try:
            return [queue(client)]
        except redis.exceptions.NoScriptError:
            if script is None:
                raise
            client.script_load(script.source)
            return [queue(client)]
        except redis.exceptions.ResponseError as exc:  # as a pipeline would hand it back
            return [exc]


def on_reset(forget: Callable[[], None]) -> Callable[[], None]:
    """Register a function that drops a process-wide cache kept on top of this module
    (breakers, limiters, key rings); ``reset()`` calls it. Usable as a decorator."""
    _forgetters.append(forget)
    return forget


def reset() -> None:
    """Forget clients, outages and every cache registered with ``on_reset`` (tests, and
    after settings.REDIS_URL changes). State kept in Redis itself is left alone."""
    global _down_since, _retry_at
    for forget in list(_forgetters):
        forget()
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
        _down_since, _retry_at = None, 0.0
