"""Fixtures for pipeline tests: the fake LLM and the fake Telegram, settings wired to both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import FakeLLMServer, FakeTelegramServer


@pytest.fixture(scope="module", name="fake_telegram")
def fake_telegram_fixture() -> Iterator[FakeTelegramServer]:
    server = FakeTelegramServer()
    yield server
    server.stop()


@pytest.fixture(name="telegram_env")
def telegram_env_fixture(fake_telegram: FakeTelegramServer, settings: Any) -> Iterator[Any]:
    """Point the outbox's sender at the fake Telegram, no pacing waits between chats."""
    from batchgen.work import outbox

    fake_telegram.reset()
    settings.TELEGRAM_API_BASE_URL = fake_telegram.base_url
    settings.TELEGRAM_TIMEOUT = 2.0
    outbox.sender.cache_clear()
    yield fake_telegram
    outbox.sender.cache_clear()


@pytest.fixture(name="pipeline_env")
def pipeline_env_fixture(llm_env: Any, telegram_env: FakeTelegramServer,
                         settings: Any) -> tuple[FakeLLMServer, FakeTelegramServer]:
    settings.BATCH_RETRY_BACKOFF_SECONDS = 0
    return llm_env(), telegram_env
