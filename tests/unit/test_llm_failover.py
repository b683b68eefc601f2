"""LLM_FALLBACK_PROVIDERS: a prompt the primary cannot answer goes to the next provider."""

from __future__ import annotations

import pytest

from batchgen.delivery import scheduler
from batchgen.llm import LLMBatchClient, LLMClient
from batchgen.models import Generation
from batchgen.state.breakers import get_circuit_breaker_stats
from batchgen.work import operator
from tests.factories import make_bot, make_chat, make_item, set_batch_mode
from tests.fakes import TEST_KEYS


def make_prompts(count: int, marker: str = "") -> list[str]:
    return [f"failover prompt {i}{marker}" for i in range(count)]


def routes(fake) -> dict[str, dict[str, int]]:
    return fake.stats()["requests"]


def test_primary_down_opens_its_breaker_and_the_next_provider_answers(llm_env):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq", "gemini"],
                   LLM_CIRCUIT_BREAKER_THRESHOLD=3)
    fake.control(route_faults={"openai": "503"})
    client = LLMClient()

    results = [client.generate_detailed(p) for p in make_prompts(8)]

    assert all(r.ok for r in results)
    assert {(r.provider, r.model, r.failover_from) for r in results} == {
        ("groq", "llama-3.1-8b-instant", "openai")}
    assert get_circuit_breaker_stats("openai_api")["state"] == "open"
    # Three 503s opened the breaker; after that the primary is not even asked.
    assert routes(fake)["openai"] == {"503": 3}
    assert routes(fake)["groq"] == {"200": 8}


def test_a_batch_falls_back_prompt_by_prompt(llm_env):
    fake = llm_env("gemini", LLM_FALLBACK_PROVIDERS=["openai"])
    fake.control(route_faults={"gemini": "500"})

    results = LLMBatchClient(max_workers=8).generate_batch_detailed(make_prompts(12))

    assert [r.text for r in results] == [f"Reply to: {p}" for p in make_prompts(12)]
    assert {(r.provider, r.failover_from) for r in results} == {("openai", "gemini")}
    assert all(r.attempts == 2 for r in results)  # one on gemini, one on openai


def test_retries_are_spent_on_the_primary_before_falling_back(llm_env):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq"], LLM_MAX_RETRIES=2)
    fake.control(route_faults={"openai": "502"}, retry_after_ms=1)

    result = LLMClient().generate_detailed("retry me first")

    assert (result.ok, result.provider, result.attempts) == (True, "groq", 4)
    assert routes(fake)["openai"] == {"502": 3}


@pytest.mark.parametrize("fault, kind", [("400", "bad_request"),
                                         ("content_filter", "content_filter"),
                                         ("safety", "safety_block")])
def test_input_errors_are_not_sent_to_another_provider(llm_env, fault, kind):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq", "gemini"])

    result = LLMClient().generate_detailed(f"bad input [[fault:{fault}]]")

    assert (result.ok, result.error_kind, result.provider, result.failover_from) == (
        False, kind, "openai", "")
    assert set(routes(fake)) == {"openai"}


def test_a_chained_provider_without_a_key_is_skipped(llm_env):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq", "gemini"], GROQ_API_KEY="")
    fake.control(route_faults={"openai": "503"})

    result = LLMClient().generate_detailed("who answers?")

    assert (result.provider, result.failover_from) == ("gemini", "openai")
    assert "groq" not in routes(fake)


def test_when_every_provider_fails_the_last_answer_is_reported(llm_env):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq"])
    fake.control(fault="503")

    result = LLMClient().generate_detailed("nobody home")

    assert (result.ok, result.error_kind, result.retryable) == (False, "server_error", True)
    assert (result.provider, result.failover_from, result.attempts) == ("groq", "openai", 2)


def test_a_limiter_wait_too_long_fails_over_to_the_next_provider(llm_env, settings):
    llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq"], OPENAI_RPM_LIMIT=60,
            LLM_RATE_LIMIT_MAX_WAIT=0.0)
    client = LLMClient()

    providers = [client.generate_detailed(p).provider for p in make_prompts(6)]

    # 60 RPM allows a burst of 1 (one second's worth) at once; the others would wait over a
    # second for the next slot. (At 180 RPM, a burst of 3 and a slot every 0.37 s, six
    # requests under CI's load sometimes took long enough for a fourth slot to come.)
    assert providers == ["openai"] + ["groq"] * 5


def test_without_a_provider_chain_a_limiter_wait_returns_rate_limit_wait(llm_env):
    fake = llm_env("openai", LLM_RPM_LIMIT=180, LLM_RATE_LIMIT_MAX_WAIT=0.0)  # burst of 3
    client = LLMClient()

    results = [client.generate_detailed(p) for p in make_prompts(5)]

    assert [r.error_kind for r in results] == [None] * 3 + ["rate_limit_wait"] * 2
    assert all(r.retryable for r in results[3:])
    assert fake.stats()["total"] == 3  # nothing was sent for the refused ones


def test_no_secret_appears_in_any_failover_error(llm_env):
    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq", "gemini"])
    fake.control(fault="401")

    result = LLMClient().generate_detailed("leak check")

    assert (result.error_kind, result.provider) == ("auth", "gemini")
    assert not any(key in result.error_message for key in TEST_KEYS.values())


@pytest.mark.django_db(transaction=True)
def test_the_pipeline_records_which_provider_answered(pipeline_env, settings):
    fake_llm, _ = pipeline_env
    settings.LLM_FALLBACK_PROVIDERS = ["groq"]
    fake_llm.control(route_faults={"openai": "503"})
    for _ in range(3):
        make_item(make_bot(), make_chat())
    set_batch_mode(5)

    summary = scheduler.tick(sync=True)

    assert (summary.run.successes, summary.run.failures) == (3, 0)
    assert set(Generation.objects.values_list("provider", "model")) == {
        ("groq", "llama-3.1-8b-instant")}


def test_failovers_are_counted_for_metrics(llm_env):
    from prometheus_client import generate_latest

    from batchgen.dashboard.scrape import REDIS_REGISTRY

    fake = llm_env("openai", LLM_FALLBACK_PROVIDERS=["groq"])
    fake.control(route_faults={"openai": "503"})
    for prompt in make_prompts(2):
        LLMClient().generate_detailed(prompt)

    exposition = generate_latest(REDIS_REGISTRY).decode()
    assert 'llm_failover_total{outcome="ok",primary="openai",provider="groq"} 2.0' in exposition


@pytest.mark.django_db(transaction=True)
def test_a_paused_fallback_provider_is_left_out_of_the_failover_chain(pipeline_env, settings):
    fake_llm, _ = pipeline_env
    settings.LLM_FALLBACK_PROVIDERS = ["groq", "gemini"]
    fake_llm.control(route_faults={"openai": "503"})
    operator.set_provider_paused("groq", True)
    make_item(make_bot(), make_chat())

    scheduler.tick(sync=True)

    assert set(Generation.objects.values_list("provider", flat=True)) == {"gemini"}
    assert "groq" not in routes(fake_llm)
