"""batchgen.llm.config: every provider's settings in one typed object, read when used."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from batchgen.llm import config


def test_limits_read_the_provider_variable_then_the_shared_one(settings) -> None:
    settings.LLM_RPM_LIMIT = 100
    settings.LLM_TPM_LIMIT = None
    settings.GROQ_RPM_LIMIT = 30
    settings.GEMINI_RPM_LIMIT = 0  # explicitly unlimited for this provider
    settings.OPENAI_RPM_LIMIT = None

    assert (config.provider_settings("groq").rpm_limit,
            config.provider_settings("groq").tpm_limit) == (30, None)
    assert config.provider_settings("openai").rpm_limit == 100
    assert config.provider_settings("gemini").rpm_limit is None


def test_settings_are_read_when_used_so_overrides_apply(settings) -> None:
    settings.GOOGLE_GEMINI_BASE_URL = "http://127.0.0.1:9/gemini/"
    settings.GEMINI_TIMEOUT = 7.5
    settings.GEMINI_API_KEYS = "k1, k2"
    settings.GEMINI_API_KEY = "k1"

    gemini = config.provider_settings("gemini")

    assert (gemini.base_url, gemini.timeout, gemini.api_keys) == (
        "http://127.0.0.1:9/gemini", 7.5, ("k1", "k2"))
    assert (gemini.key_variable, gemini.breaker) == ("GEMINI_API_KEY", "gemini_api")


def test_an_unknown_provider_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown LLM provider 'mistral'.*'gemini'"):
        config.provider_settings("mistral")


def test_breaker_names_are_the_documented_ones() -> None:
    assert config.breaker_names() == ("openai_api", "gemini_api", "groq_api")


def test_the_provider_chain_skips_providers_without_a_key(settings) -> None:
    settings.LLM_FALLBACK_PROVIDERS = ["groq", "gemini"]
    settings.GROQ_API_KEY, settings.GROQ_API_KEYS = "", ()
    settings.GEMINI_API_KEY = "g-key"

    assert config.provider_chain("openai") == ("openai", "gemini")


def test_a_missing_key_names_its_variables(settings) -> None:
    settings.LLM_PROVIDER = "groq"
    settings.LLM_FALLBACK_PROVIDERS = ()
    settings.GROQ_API_KEY, settings.GROQ_API_KEYS = "", ()

    with pytest.raises(ImproperlyConfigured, match="GROQ_API_KEY \\(or GROQ_API_KEYS\\)"):
        config.check_configured()


def test_a_changed_rate_limit_applies_without_a_reset(llm_env, settings) -> None:
    from batchgen.llm import LLMClient, registry

    llm_env("openai")
    LLMClient().generate_detailed("before the limit")
    provider = registry.get_provider("openai")
    settings.LLM_TPM_LIMIT, settings.LLM_RATE_LIMIT_MAX_WAIT = 2000, 0.0

    # A burst of 300 tokens: the first ~206 fit, the second has to wait, which it may not.
    first = LLMClient().generate_detailed("x" * 100, max_tokens=100)
    second = LLMClient().generate_detailed("x" * 100, max_tokens=100)

    assert registry.get_provider("openai") is provider  # same clients, new limit
    assert (first.ok, second.error_kind) == (True, "rate_limit_wait")
