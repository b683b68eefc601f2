"""Every provider through its real SDK over real HTTP against the fake server."""

from __future__ import annotations

import pytest

from batchgen.llm import LLMClient
from tests.fakes import TEST_KEYS

PROVIDERS = ["openai", "groq", "gemini"]


def make_client(llm_env, provider: str, **overrides: object) -> LLMClient:
    llm_env(provider, **overrides)
    return LLMClient()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_it_returns_the_fake_reply_with_token_usage(llm_env, provider):
    result = make_client(llm_env, provider).generate_detailed(
        "Say hello to the group about the weather today please")

    assert result.ok and result.error_kind is None
    assert result.text == "Reply to: Say hello to the group about the weather today please"
    assert result.prompt_tokens > 8 and result.completion_tokens > 0
    assert result.cached_tokens == 0  # a short prompt, never seen before: nothing cached
    assert (result.provider, result.attempts) == (provider, 1)
    assert result.model == {"openai": "gpt-4o-mini", "groq": "llama-3.1-8b-instant",
                            "gemini": "gemini-2.5-flash"}[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_it_sends_each_provider_to_its_own_route(llm_env, provider):
    fake = llm_env(provider)
    LLMClient().generate("hello")

    assert fake.stats()["received"] == {provider: 1}


FAULTS = [
    ("500", "server_error", True),
    ("503", "server_error", True),
    ("429", "rate_limited", True),
    ("401", "auth", False),
    ("400", "bad_request", False),
    ("404", "not_found", False),
    ("empty", "empty", True),
    ("length", "truncated", False),
    ("content_filter", "content_filter", False),
    ("safety", "safety_block", False),
    ("malformed", "malformed", True),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("fault", "kind", "retryable"), FAULTS)
def test_each_failure_ends_as_none_with_its_reason(llm_env, provider, fault, kind, retryable):
    result = make_client(llm_env, provider).generate_detailed(f"hello [[fault:{fault}]]")

    assert result.text is None
    assert (result.error_kind, result.retryable) == (kind, retryable)
    assert result.error_message
    assert TEST_KEYS[provider] not in result.error_message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stalled_reply_ends_as_timeout(llm_env, provider):
    client = make_client(llm_env, provider, OPENAI_TIMEOUT=0.2, GROQ_TIMEOUT=0.2,
                         GEMINI_TIMEOUT=0.2)
    result = client.generate_detailed("hello [[fault:timeout]]")

    assert (result.text, result.error_kind, result.retryable) == (None, "timeout", True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_transient_500_is_retried_and_the_attempts_counted(llm_env, provider):
    fake = llm_env(provider, LLM_MAX_RETRIES=2)
    fake.control(retry_after_ms=1)

    result = LLMClient().generate_detailed("hello [[fault:500x1]]")

    assert result.ok
    assert result.attempts == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_401_message_never_carries_the_api_key(llm_env, provider):
    result = make_client(llm_env, provider).generate_detailed("hi [[fault:401]]")

    assert result.error_kind == "auth"
    assert "SECRET" not in result.error_message and "[redacted]" in result.error_message


@pytest.mark.parametrize(("provider", "variable"), [
    ("openai", "OPENAI_API_KEY"), ("groq", "GROQ_API_KEY"), ("gemini", "GEMINI_API_KEY")])
def test_a_missing_key_names_the_variable_and_sends_nothing(llm_env, provider, variable):
    fake = llm_env(provider, **{variable: ""})

    result = LLMClient().generate_detailed("hello")

    assert (result.text, result.error_kind, result.retryable) == (None, "config", False)
    assert variable in result.error_message
    assert fake.stats()["total"] == 0


def test_an_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="unknown LLM provider 'mystery'"):
        LLMClient("mystery")


def test_the_system_prompt_and_the_prompt_are_filtered_before_sending(llm_env):
    token = "123456789:" + "A" * 35
    text = LLMClient().generate(f"tell   me\x00 about\n\nbots {token}")

    assert text == "Reply to: tell me about bots [redacted]"


@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_a_status_error_reads_as_the_sdk_wrote_it(llm_env, provider):
    # The OpenAI-compatible providers POST directly on the SDK's pool; the text is the SDK's.
    result = make_client(llm_env, provider).generate_detailed("hello [[fault:503]]")

    assert result.error_message.startswith("HTTP 503: Error code: 503 - ")
