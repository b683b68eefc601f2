"""Run an aiohttp fake server (LLM providers, Telegram...) in a background thread.

    server = run_in_thread(lambda: make_app(FakeLLMConfig()))
    server.base_url   # "http://127.0.0.1:<free port>"
    server.stop()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class RunningServer:
    base_url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop = field(repr=False)
    runner: web.AppRunner = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_in_thread(app_factory: Callable[[], web.Application],
                  host: str = "127.0.0.1") -> RunningServer:
    """Start the app on a free port in a daemon thread; returns once it accepts connections.

    Handlers are cancelled when their client hangs up (so a stalled "timeout"
    reply does not outlive the test), and the backlog is large enough for
    hundreds of simultaneous connections.
    """
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> None:
        app = app_factory()
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                               shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, host, 0, backlog=1024)
        await site.start()
        port = runner.addresses[0][1]
        started.update(app=app, runner=runner, base_url=f"http://{host}:{port}")

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # report start-up failures to the caller
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name="fake-server", daemon=True)
    thread.start()
    if not ready.wait(timeout=10) or "error" in started:
        raise RuntimeError(f"fake server did not start: {started.get('error')}")
    return RunningServer(base_url=str(started["base_url"]), app=started["app"],  # type: ignore[arg-type]
                         loop=loop, runner=started["runner"], thread=thread)  # type: ignore[arg-type]


class FakeServer:
    """A fake server app running in a thread, with its control endpoints."""

    def __init__(self, app_factory: Callable[[], web.Application]) -> None:
        self.server = run_in_thread(app_factory)
        self.base_url = self.server.base_url

    def control(self, **changes: object) -> dict:
        return self._post("/_control", changes)

    def reset(self) -> None:
        self._post("/_reset", {})

    def stats(self) -> dict:
        return self._get("/_stats")

    def stop(self) -> None:
        self.server.stop()

    def _get(self, path: str) -> Any:
        import httpx

        return httpx.get(f"{self.base_url}{path}", timeout=5).raise_for_status().json()

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        return httpx.post(f"{self.base_url}{path}", json=body, timeout=5).raise_for_status().json()


class FakeLLMServer(FakeServer):
    """The fake LLM provider API (batchgen.fakes.llm_server) running in a thread."""

    def __init__(self, **config: object) -> None:
        from batchgen.fakes.llm_app import FakeLLMConfig, make_app

        super().__init__(lambda: make_app(FakeLLMConfig(**config)))


class FakeTelegramServer(FakeServer):
    """The fake Telegram Bot API (batchgen.fakes.telegram_server) running in a thread."""

    def __init__(self, **config: Any) -> None:
        from batchgen.fakes.telegram_server import make_app

        super().__init__(lambda: make_app(**config))

    def messages(self) -> list[dict]:
        return self._get("/_messages")


TEST_KEYS = {
    "openai": "test-openai-key-0000-SECRET",
    "groq": "test-groq-key-1111-SECRET",
    "gemini": "test-gemini-key-2222-SECRET",
}


def llm_settings(base_url: str, provider: str = "openai", **overrides: object) -> dict:
    """Settings pointing every provider at the fake, with tiny timeouts and back-offs."""
    values: dict[str, object] = {
        "LLM_PROVIDER": provider, "LLM_MODEL": "",
        "OPENAI_BASE_URL": f"{base_url}/v1", "OPENAI_API_KEY": TEST_KEYS["openai"],
        "GROQ_BASE_URL": base_url, "GROQ_API_KEY": TEST_KEYS["groq"],
        "GOOGLE_GEMINI_BASE_URL": base_url, "GEMINI_API_KEY": TEST_KEYS["gemini"],
        "OPENAI_TIMEOUT": 5.0, "GROQ_TIMEOUT": 5.0, "GEMINI_TIMEOUT": 5.0,
        "LLM_MAX_RETRIES": 0, "LLM_RETRY_INITIAL_DELAY": 0.01,
        "LLM_CIRCUIT_BREAKER_THRESHOLD": 1000, "BATCH_MAX_WORKERS": 8,
        # One key each, no fallback, no client-side limit unless a test asks for them.
        "OPENAI_API_KEYS": [], "GROQ_API_KEYS": [], "GEMINI_API_KEYS": [],
        "LLM_FALLBACK_PROVIDERS": [], "LLM_RATE_LIMIT_MAX_WAIT": 30.0,
        "LLM_RPM_LIMIT": None, "LLM_TPM_LIMIT": None, "LLM_RATE_LIMIT_SCOPE": "account",
        **{f"{p.upper()}_RATE_LIMIT_SCOPE": "" for p in TEST_KEYS},
        **{f"{p.upper()}_{kind}_LIMIT": None for p in TEST_KEYS for kind in ("RPM", "TPM")},
    }
    values.update(overrides)
    return values


# Fixtures registered under their short names: a test module imports the
# functions (``from tests.fakes import fake_llm_fixture, llm_env_fixture``) and
# asks for ``fake_llm`` / ``llm_env``.
@pytest.fixture(scope="module", name="fake_llm")
def fake_llm_fixture() -> Iterator[FakeLLMServer]:
    """One fake LLM server per test module."""
    server = FakeLLMServer()
    yield server
    server.stop()


@pytest.fixture(name="llm_env")
def llm_env_fixture(fake_llm: FakeLLMServer, settings: Any, redis_url: str) -> Iterator[Callable]:
    """Point the LLM layer at the fake (reset), breakers closed; call it to switch provider.

        def test_x(llm_env): llm_env("gemini", LLM_MAX_RETRIES=1)
    """
    from batchgen.state import shared

    def configure(provider: str = "openai", **overrides: object) -> FakeLLMServer:
        for name, value in llm_settings(fake_llm.base_url, provider, **overrides).items():
            setattr(settings, name, value)
        shared.reset()
        return fake_llm

    fake_llm.reset()
    fake_llm.control(latency=0.0, jitter=0.0, latency_mode="fixed", rpm=0, fault=None,
                     retry_after=1.0, retry_after_ms=None, timeout_seconds=30.0,
                     key_faults={}, route_faults={}, fault_times=0, record_arrivals=False,
                     rpm_window=60.0, tpm=0, rate_scope="account", rate_headers=True,
                     cache_ttl=300.0)
    configure()
    yield configure
    shared.reset()
