"""Unit-tier fixtures: shared state in an in-memory Redis (fakeredis), no server, no sleep;
clients logged in as staff."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from batchgen.state import shared


@pytest.fixture(name="memory_redis")
def memory_redis_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[fakeredis.FakeRedis]:
    """Every ``shared.connection()`` of the test answers from one in-memory Redis."""
    client = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(shared, "connection", lambda url=None: client)
    yield client
    client.flushall()


def _logged_in_client(**user_fields: object) -> Client:
    # No password: force_login needs none, and hashing one (PBKDF2) costs ~0.3 s a test.
    user = get_user_model().objects.create_user(password=None, **user_fields)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client() -> Client:
    """A client logged in as the superuser ``staff``: every admin page is open to it."""
    return _logged_in_client(username="staff", email="s@example.invalid", is_staff=True,
                             is_superuser=True)


@pytest.fixture
def operator_client() -> Client:
    """A client logged in as ``operator``, a staff member with no admin permission: what the
    dashboard asks, and no more."""
    return _logged_in_client(username="operator", is_staff=True)
