"""The fake provider server: routes, faults, rate limit, stats, concurrency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import ClientSession, TCPConnector

from batchgen.fakes.llm_limits import format_duration
from batchgen.llm.limits.rules import parse_duration
from tests.fakes import FakeLLMServer


@pytest.fixture(scope="module")
def fake():
    server = FakeLLMServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.reset()
    fake.control(latency=0.0, jitter=0.0, rpm=0, tpm=0, fault=None, rpm_window=60.0,
                 rate_scope="account", rate_headers=True)


def chat(fake: FakeLLMServer, text: str, route: str = "/v1/chat/completions",
         key: str = "k1", max_tokens: int | None = None) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "system", "content": "sys"},
                                       {"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return httpx.post(fake.base_url + route, json=body, headers={"Authorization": f"Bearer {key}"})


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


def test_a_limited_reply_advertises_the_limit_as_openai_does(fake):
    fake.control(rpm=3, tpm=1000)
    first = chat(fake, "a", max_tokens=100).headers
    second = chat(fake, "b", max_tokens=100).headers

    assert (first["x-ratelimit-limit-requests"], first["x-ratelimit-limit-tokens"]) == ("3", "1000")
    assert [h["x-ratelimit-remaining-requests"] for h in (first, second)] == ["2", "1"]
    assert int(first["x-ratelimit-remaining-tokens"]) > int(second["x-ratelimit-remaining-tokens"])
    assert 59 <= parse_duration(second["x-ratelimit-reset-requests"]) <= 60


def test_an_unlimited_server_sends_no_rate_limit_headers(fake):
    headers = chat(fake, "a").headers

    assert not [name for name in headers if name.startswith("x-ratelimit")]


def test_a_429_carries_the_headers_and_retry_after(fake):
    fake.control(rpm=1, rpm_window=5.0)
    chat(fake, "a")
    refused = chat(fake, "b")

    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["Retry-After"] == "5"


def test_by_default_every_key_of_the_account_shares_one_limit(fake):
    fake.control(rpm=2)

    statuses = [chat(fake, "x", key=key).status_code for key in ("k1", "k2", "k3")]

    assert statuses == [200, 200, 429]


def test_a_per_key_scope_gives_each_key_its_own_limit(fake):
    fake.control(rpm=1, rate_scope="key")

    statuses = [chat(fake, "x", key=key).status_code for key in ("k1", "k2", "k1")]

    assert statuses == [200, 200, 429]


def test_the_token_limit_counts_prompt_and_max_tokens(fake):
    fake.control(tpm=500)

    statuses = [chat(fake, "x", max_tokens=200).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


def test_a_gemini_style_server_answers_a_bare_429(fake):
    fake.control(rpm=1, rate_headers=False)
    chat(fake, "a")
    refused = chat(fake, "b")

    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert not [name for name in refused.headers if name.startswith("x-ratelimit")]


def test_gemini_never_advertises_its_limits(fake):
    fake.control(rpm=5)

    assert not [name for name in gemini(fake, "a").headers if name.startswith("x-ratelimit")]


def test_a_limit_lowered_at_run_time_waits_for_enough_requests_to_leave(fake):
    fake.control(rpm=4, rpm_window=30.0)
    for i in range(4):
        chat(fake, f"n{i}")
    fake.control(rpm=2)
    refused = chat(fake, "more")

    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert 29 <= int(refused.headers["Retry-After"]) <= 30  # the third-newest must leave too


def test_a_bad_rate_scope_is_refused_naming_the_setting(fake):
    response = httpx.post(fake.base_url + "/_control", json={"rate_scope": "org"})

    assert response.status_code == 400 and "rate_scope" in response.text


def test_durations_are_written_as_the_providers_write_them():
    seconds = (0.12, 1, 7.66, 60, 360, 179.56)
    texts = [format_duration(s) for s in seconds]

    assert texts == ["120ms", "1s", "7.66s", "1m0s", "6m0s", "2m59.56s"]
    assert [parse_duration(t) for t in texts] == pytest.approx(seconds)
