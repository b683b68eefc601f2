"""The fake provider server: routes, faults, rate limit, stats, concurrency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import ClientSession, TCPConnector

from tests.fakes import FakeLLMServer


@pytest.fixture(scope="module")
def fake():
    server = FakeLLMServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()
    fake.control(latency=0.0, jitter=0.0, rpm=0, fault=None, rpm_window=60.0)


def chat(fake: FakeLLMServer, text: str, route: str = "/v1/chat/completions") -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "system", "content": "sys"},
                                       {"role": "user", "content": text}]}
    return httpx.post(fake.base_url + route, json=body, headers={"Authorization": "Bearer k1"})


def gemini(fake: FakeLLMServer, text: str) -> httpx.Response:
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    return httpx.post(f"{fake.base_url}/v1beta/models/gemini-2.5-flash:generateContent",
                      json=body, headers={"x-goog-api-key": "k2"})


def test_it_answers_openai_and_groq_with_usage(fake):
    for route in ("/v1/chat/completions", "/openai/v1/chat/completions"):
        body = chat(fake, "hello there", route).json()
        assert body["choices"][0]["message"]["content"] == "Reply to: hello there"
        assert body["usage"]["prompt_tokens"] > 0
        assert "cached_tokens" in body["usage"]["prompt_tokens_details"]


def test_it_answers_gemini_with_usage_metadata(fake):
    body = gemini(fake, "hello").json()

    assert body["candidates"][0]["content"]["parts"][0]["text"] == "Reply to: hello"
    assert body["usageMetadata"]["promptTokenCount"] > 0


def test_a_counted_fault_fails_only_the_first_time(fake):
    statuses = [chat(fake, "again [[fault:503x1]]").status_code for _ in range(3)]

    assert statuses == [503, 200, 200]


def test_the_rpm_limit_answers_429_with_retry_after(fake):
    fake.control(rpm=2, rpm_window=30.0)
    responses = [chat(fake, f"n{i}") for i in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 429]
    assert 1 <= int(responses[2].headers["Retry-After"]) <= 30


def test_a_global_fault_applies_without_a_marker(fake):
    fake.control(fault="500")

    assert chat(fake, "hi").status_code == 500
    assert gemini(fake, "hi").json()["error"]["status"] == "INTERNAL"


def test_gemini_safety_block_has_no_candidates(fake):
    body = gemini(fake, "x [[fault:safety]]").json()

    assert "candidates" not in body and body["promptFeedback"]["blockReason"] == "SAFETY"


def test_stats_count_requests_per_route_and_status(fake):
    chat(fake, "a")
    chat(fake, "b [[fault:401]]")
    gemini(fake, "c")

    stats = fake.stats()
    assert stats["requests"] == {"openai": {"200": 1, "401": 1}, "gemini": {"200": 1}}
    assert stats["total"] == 3


def test_unknown_control_settings_are_refused(fake):
    response = httpx.post(fake.base_url + "/_control", json={"latncy": 1})

    assert response.status_code == 400 and "latncy" in response.text


def test_it_serves_250_concurrent_connections(fake):
    fake.control(latency=1.0)  # long enough for all 250 to be in flight at once

    async def burst() -> list[int]:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with ClientSession(connector=TCPConnector(limit=0)) as session:
            async def one() -> int:
                async with session.post(fake.base_url + "/v1/chat/completions",
                                        json=body) as response:
                    return response.status
            return await asyncio.gather(*(one() for _ in range(250)))

    # A thread of its own: a Playwright session may hold this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        statuses = pool.submit(asyncio.run, burst()).result(timeout=60)

    assert statuses == [200] * 250
    assert fake.stats()["in_flight_peak"] >= 200
