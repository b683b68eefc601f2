"""The one place that reads LLM configuration from ``django.conf.settings``.

Values are read when a provider client is built, not at import, so a missing
API key is reported at call time. Tests that change settings call ``reset()``
(``batchgen.shared.reset``) to drop the cached SDK clients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The largest worker count BATCH_MAX_WORKERS accepts: every SDK client keeps at
# least this many connections alive, so no pool size waits on a connection.
MAX_POOL_SIZE = 256

_KEYS = {"openai": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY", "groq": "GROQ_API_KEY"}
_KEY_LISTS = {"openai": "OPENAI_API_KEYS", "gemini": "GEMINI_API_KEYS",
              "groq": "GROQ_API_KEYS"}
_BASE_URLS = {"openai": "OPENAI_BASE_URL", "gemini": "GOOGLE_GEMINI_BASE_URL",
              "groq": "GROQ_BASE_URL"}
_TIMEOUTS = {"openai": "OPENAI_TIMEOUT", "gemini": "GEMINI_TIMEOUT", "groq": "GROQ_TIMEOUT"}


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    key_variable: str
    base_url: str
    timeout: float
    model: str
    max_retries: int
    retry_initial_delay: float
    pool_size: int
    api_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def api_key(self) -> str:
        """The first key (the only one unless ``<PROVIDER>_API_KEYS`` lists several)."""
        return self.api_keys[0] if self.api_keys else ""


def provider_names() -> tuple[str, ...]:
    return tuple(getattr(settings, "LLM_PROVIDERS", tuple(_KEYS)))


def default_provider() -> str:
    return settings.LLM_PROVIDER


def model_for(provider: str) -> str:
    """LLM_MODEL applies to the configured provider; any other gets its default model."""
    if settings.LLM_MODEL and provider == settings.LLM_PROVIDER:
        return settings.LLM_MODEL
    return settings.LLM_DEFAULT_MODELS[provider]


def provider_settings(provider: str) -> ProviderSettings:
    if provider not in _KEYS:
        raise ValueError(f"unknown LLM provider {provider!r}: choose one of {sorted(_KEYS)}")
    return ProviderSettings(
        name=provider,
        key_variable=_KEYS[provider],
        api_keys=api_keys(provider),
        base_url=getattr(settings, _BASE_URLS[provider]).rstrip("/"),
        timeout=float(getattr(settings, _TIMEOUTS[provider])),
        model=model_for(provider),
        max_retries=int(settings.LLM_MAX_RETRIES),
        # Not an environment variable: tests shorten the SDKs' back-off with it.
        retry_initial_delay=float(getattr(settings, "LLM_RETRY_INITIAL_DELAY", 0.5)),
        pool_size=MAX_POOL_SIZE,
    )


def api_keys(provider: str) -> tuple[str, ...]:
    """``<PROVIDER>_API_KEYS`` (comma-separated) then ``<PROVIDER>_API_KEY``, without repeats."""
    listed = getattr(settings, _KEY_LISTS[provider], None) or ()
    if isinstance(listed, str):  # a test or a settings file may give the raw string
        listed = listed.split(",")
    single = getattr(settings, _KEYS[provider], "") or ""
    keys = [key.strip() for key in [*listed, single] if key and key.strip()]
    return tuple(dict.fromkeys(keys))


def all_api_keys() -> tuple[str, ...]:
    """Every configured key, so error messages can be scrubbed of them."""
    return tuple(key for provider in _KEYS for key in api_keys(provider))


def fallback_chain(primary: str) -> tuple[str, ...]:
    """The primary, then each LLM_FALLBACK_PROVIDERS entry that has a key, in order."""
    configured = getattr(settings, "LLM_FALLBACK_PROVIDERS", ()) or ()
    if isinstance(configured, str):
        configured = configured.split(",")
    chain = [primary]
    for name in (part.strip() for part in configured):
        if name in _KEYS and name not in chain and api_keys(name):
            chain.append(name)
    return tuple(chain)


def check_configured(primary: str | None = None) -> tuple[str, ...]:
    """The provider chain, or ImproperlyConfigured naming the missing key variable.

    ``tick`` calls this before claiming work, so a deployment without a key
    stops with a clear error instead of failing every item it claims.
    """
    primary = primary or default_provider()
    chain = fallback_chain(primary)
    if not any(api_keys(name) for name in chain):
        raise ImproperlyConfigured(
            f"{_KEYS[primary]} (or {_KEY_LISTS[primary]}) is not set: LLM_PROVIDER={primary} "
            "needs an API key")
    return chain


def worst_case_seconds(primary: str | None = None) -> float:
    """How long one prompt may take at worst: every provider of the chain with all
    its retries, plus the rate limiter's longest wait."""
    total = rate_limit_max_wait()
    for name in fallback_chain(primary or default_provider()):
        timeout = float(getattr(settings, _TIMEOUTS[name]))
        total += (timeout + 2.0) * (int(settings.LLM_MAX_RETRIES) + 1)
    return total


def rate_limit_max_wait() -> float:
    """Seconds one request may wait for limiter capacity (LLM_RATE_LIMIT_MAX_WAIT)."""
    return float(getattr(settings, "LLM_RATE_LIMIT_MAX_WAIT", 30.0))


def key_disable_seconds() -> float:
    """How long a key that answered 401 stays out of rotation (LLM_KEY_DISABLE_SECONDS)."""
    return float(getattr(settings, "LLM_KEY_DISABLE_SECONDS", 3600.0))


def default_max_workers() -> int:
    """BATCH_MAX_WORKERS, else ThreadPoolExecutor's own default min(32, cpu + 4)."""
    configured = getattr(settings, "BATCH_MAX_WORKERS", None)
    if configured:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


def reset() -> None:
    """Drop cached provider clients (and their connection pools), key rings, breakers and
    limiters; the next call rebuilds them from the settings. One reset: ``shared.reset``."""
    from batchgen import shared

    shared.reset()
