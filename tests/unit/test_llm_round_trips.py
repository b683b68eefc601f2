"""Redis round trips per LLM request: one before the HTTP request, one after (issue 24).

Counted at the socket: every ``send_packed_command`` is one round trip, a pipeline too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from batchgen.llm import LLMClient
from batchgen.llm.providers.base import Provider

KEYS = ["sk-first-key-AAAA-SECRET", "sk-second-key-BBBB-SECRET"]


def command_names(packed: bytes | list[bytes]) -> list[str]:
    """The command names in one packed RESP write (one command, or a pipeline's)."""
    data = b"".join(packed) if isinstance(packed, list) else packed
    names, lines = [], data.split(b"\r\n")
    for index, line in enumerate(lines):
        if line.startswith(b"*") and index + 2 < len(lines):
            names.append(lines[index + 2].decode())
    return names


@contextmanager
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Log "redis: CMD CMD..." per round trip and "http" per provider request, in order."""
    log: list[str] = []
    send = redis.connection.Connection.send_packed_command
    complete = Provider.complete

    def spy_send(self, command, check_health=True):  # noqa: ANN001, ANN202
        log.append("redis: " + " ".join(command_names(command)))
        return send(self, command, check_health)

    def spy_complete(self, *args, **kwargs):  # noqa: ANN001, ANN202
        log.append("http")
        return complete(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", spy_send)
    monkeypatch.setattr(Provider, "complete", spy_complete)
    yield log
    monkeypatch.undo()


def shape(log: list[str]) -> list[str]:
    return ["http" if entry == "http" else "redis" for entry in log]


@pytest.mark.parametrize("advertised", [False, True], ids=["no-limit-known", "limit-advertised"])
def test_a_request_makes_one_round_trip_before_and_one_after(llm_env, monkeypatch, advertised):
    fake = llm_env("openai")
    if advertised:
        fake.control(rpm=100000)
    LLMClient().generate("warm up: scripts loaded, budget read")

    with trips(monkeypatch) as log:
        assert LLMClient().generate("count my round trips")

    assert shape(log) == ["redis", "http", "redis"], log


def test_with_several_keys_it_is_still_one_before_and_one_after(llm_env, monkeypatch):
    llm_env("openai", OPENAI_API_KEYS=list(KEYS), OPENAI_API_KEY="")
    for _ in range(2):
        LLMClient().generate("warm up both keys")

    with trips(monkeypatch) as log:
        assert LLMClient().generate("count my round trips")

    assert shape(log) == ["redis", "http", "redis"], log
