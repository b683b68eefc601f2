"""Unit-tier fixtures: shared state in an in-memory Redis (fakeredis), no server, no sleep."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from batchgen.state import shared


@pytest.fixture(name="memory_redis")
def memory_redis_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[fakeredis.FakeRedis]:
    """Every ``shared.connection()`` of the test answers from one in-memory Redis."""
    client = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(shared, "connection", lambda url=None: client)
    yield client
    client.flushall()
