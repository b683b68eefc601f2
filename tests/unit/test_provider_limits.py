"""Provider rate-limit headers, durations, AIMD and which limit wins (no Redis, no Django)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from batchgen.llm.limits.rules import (
    DAY,
    Aimd,
    AimdState,
    LastReply,
    effective_limit,
    parse_duration,
    parse_headers,
)

OPENAI_REPLY = {
    "x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "299",
    "x-ratelimit-reset-requests": "200ms", "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s",
}


@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("2m59.56s", 179.56), ("120ms", 0.12), ("7.66s", 7.66),
    ("1h0m0s", 3600.0), ("1h2m3s", 3723.0), ("0s", 0.0), ("1m", 60.0), ("250us", 0.00025),
    ("30µs", 0.00003), ("500ns", 5e-7), (".5s", 0.5), ("20", 20.0), ("0.25", 0.25),
    (" 3s ", 3.0),
])
def test_every_duration_format_the_providers_use_parses(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 s", "1d", "-1s", "-3", "s", "1s2", "nan"])
def test_a_malformed_duration_is_refused_naming_the_text(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_openai_headers_give_both_limits_and_their_resets():
    limits = parse_headers(httpx.Headers(OPENAI_REPLY))

    assert (limits.rpm, limits.remaining_requests, limits.reset_requests) == (300, 299, 0.2)
    assert (limits.tpm, limits.remaining_tokens, limits.reset_tokens) == (150000, 149984, 360.0)
    assert limits.advertised


def test_header_names_are_matched_in_any_case():
    limits = parse_headers({"X-RateLimit-Limit-Requests": "60", "Retry-After": "2"})

    assert (limits.rpm, limits.retry_after) == (60, 2.0)


def test_groqs_request_limit_is_per_day_so_it_is_no_rpm_ceiling():
    limits = parse_headers({"x-ratelimit-limit-requests": "14400",
                            "x-ratelimit-limit-tokens": "18000",
                            "x-ratelimit-reset-requests": "2m59.56s",
                            "x-ratelimit-reset-tokens": "7.66s"}, requests_window=DAY)

    assert (limits.limit_requests, limits.rpm, limits.tpm) == (14400, None, 18000)
    assert (limits.reset_requests, limits.reset_tokens) == (pytest.approx(179.56), 7.66)


def test_a_gemini_reply_advertises_nothing():
    limits = parse_headers({"content-type": "application/json"})

    assert not limits.advertised and limits.retry_after is None


def test_retry_after_ms_is_preferred_and_an_http_date_is_understood():
    assert parse_headers({"retry-after-ms": "1500", "retry-after": "2"}).retry_after == 1.5
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert 28 <= parse_headers({"retry-after": when}).retry_after <= 30


def test_a_malformed_header_is_logged_and_the_rest_kept(caplog):
    with caplog.at_level(logging.WARNING):
        limits = parse_headers({**OPENAI_REPLY, "x-ratelimit-limit-requests": "lots",
                                "x-ratelimit-reset-tokens": "soon"})

    assert (limits.rpm, limits.reset_tokens, limits.tpm) == (None, None, 150000)
    assert "x-ratelimit-limit-requests" in caplog.text and "x-ratelimit-reset-tokens" in caplog.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_a_first_429_infers_a_rate_below_what_the_provider_accepted():
    aimd, clock = Aimd(decrease=0.8), FakeClock()

    state = aimd.on_429(AimdState(), clock.now, observed=300)

    assert state.rate == pytest.approx(240)


def test_without_any_figure_a_429_leaves_the_rate_unknown():
    assert Aimd().on_429(AimdState(), 0.0).rate is None


def test_429s_within_the_cooldown_count_as_one_overshoot():
    aimd, clock = Aimd(decrease=0.5, cooldown=5.0), FakeClock()
    state = aimd.on_429(AimdState(), clock.now, observed=100)
    state = aimd.on_429(state, clock.advance(1.0))
    assert state.rate == 50

    state = aimd.on_429(state, clock.advance(5.0))
    assert state.rate == 25


def test_the_rate_never_falls_below_the_floor():
    aimd, clock = Aimd(decrease=0.1, floor=6.0, cooldown=0.0), FakeClock()
    state = AimdState(rate=10.0)
    for _ in range(5):
        state = aimd.on_429(state, clock.advance(1.0))

    assert state.rate == 6.0


def test_steady_success_adds_a_fixed_step_per_interval_up_to_the_ceiling():
    aimd, clock = Aimd(decrease=0.5, increase=0.1, interval=5.0), FakeClock()
    state = aimd.on_429(AimdState(), clock.now, observed=200)  # 100, step 10
    rates = []
    for _ in range(8):
        state = aimd.on_success(state, clock.advance(2.5))
        rates.append(state.rate)

    assert rates == [100, 110, 110, 120, 120, 130, 130, 140]
    for _ in range(20):
        state = aimd.on_success(state, clock.advance(5.0), ceiling=150)
    assert state.rate == 150


def test_success_does_not_raise_an_unknown_rate():
    assert Aimd().on_success(AimdState(), 1e9).rate is None


def test_a_provider_that_halves_its_limit_is_followed_down_and_back_up():
    aimd, clock = Aimd(decrease=0.8, increase=0.025, interval=5.0, cooldown=5.0), FakeClock()
    state = AimdState(rate=300.0, step=7.5)
    # The limit drops to 150: 429s keep coming, one decrease per cooldown, until under it.
    while state.rate > 150:
        state = aimd.on_429(state, clock.advance(5.0))
    low = state.rate
    for _ in range(12):  # a minute of success
        state = aimd.on_success(state, clock.advance(5.0))

    assert 0.8 * 150 <= low < 150
    assert state.rate > low


def test_the_smaller_of_configured_and_advertised_wins():
    assert effective_limit(120, 300, None) == (120, "configured")
    assert effective_limit(600, 300, None) == (300, "advertised")
    assert effective_limit(None, 300, None) == (300, "advertised")


def test_an_inferred_rate_below_the_ceiling_wins_and_nothing_known_means_no_limit():
    assert effective_limit(None, 300, 212.7) == (212, "inferred")
    assert effective_limit(None, None, 90.0) == (90, "inferred")
    assert effective_limit(None, None, None) == (None, None)
    assert effective_limit(0, None, None) == (None, None)


def test_the_last_reply_is_kept_per_thread():
    replies = LastReply()
    replies.hook(httpx.Response(429, headers={"x-ratelimit-limit-requests": "60"}))
    seen: list[tuple[int, dict]] = []
    other = threading.Thread(target=lambda: seen.append((replies.status, replies.headers)))
    other.start()
    other.join()

    assert (replies.status, replies.headers["x-ratelimit-limit-requests"]) == (429, "60")
    assert seen == [(0, {})]
    replies.clear()
    assert (replies.status, replies.headers) == (0, {})
