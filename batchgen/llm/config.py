"""The one place that reads LLM configuration from ``django.conf.settings``: every provider's
variables are named once, in ``VARIABLES``, and read into one typed ``ProviderSettings`` when
used (never at import), so ``override_settings`` works and a missing API key is reported at
call time. Tests that change settings call ``reset()`` (``batchgen.state.shared.reset``) to
drop the cached SDK clients.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from batchgen.state import shared
from batchgen.state.breakers import breaker_name

# The largest worker count BATCH_MAX_WORKERS accepts: every SDK client keeps at
# least this many connections alive, so no pool size waits on a connection.
MAX_POOL_SIZE = 256
RATE_LIMIT_SCOPES = ("account", "key")


@dataclass(frozen=True)
class ProviderVariables:
    """The names of one provider's settings (and environment variables, see the README)."""

    api_key: str
    api_keys: str
    base_url: str
    timeout: str
    rpm_limit: str
    tpm_limit: str
    rate_limit_scope: str


VARIABLES = {
    "openai": ProviderVariables("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_BASE_URL",
                                "OPENAI_TIMEOUT", "OPENAI_RPM_LIMIT", "OPENAI_TPM_LIMIT",
                                "OPENAI_RATE_LIMIT_SCOPE"),
    "gemini": ProviderVariables("GEMINI_API_KEY", "GEMINI_API_KEYS", "GOOGLE_GEMINI_BASE_URL",
                                "GEMINI_TIMEOUT", "GEMINI_RPM_LIMIT", "GEMINI_TPM_LIMIT",
                                "GEMINI_RATE_LIMIT_SCOPE"),
    "groq": ProviderVariables("GROQ_API_KEY", "GROQ_API_KEYS", "GROQ_BASE_URL",
                              "GROQ_TIMEOUT", "GROQ_RPM_LIMIT", "GROQ_TPM_LIMIT",
                              "GROQ_RATE_LIMIT_SCOPE"),
}


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
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def api_key(self) -> str:
        """The first key (the only one unless ``<PROVIDER>_API_KEYS`` lists several)."""
        return self.api_keys[0] if self.api_keys else ""

    @property
    def breaker(self) -> str:
        return breaker_name(self.name)


def check_provider(name: str) -> str:
    """``name`` if it is a known provider, else ValueError naming the choices."""
    if name not in VARIABLES:
        raise ValueError(f"unknown LLM provider {name!r}: choose one of {sorted(VARIABLES)}")
    return name


def breaker_names() -> tuple[str, ...]:
    return tuple(breaker_name(name) for name in VARIABLES)


def provider_names() -> tuple[str, ...]:
    return tuple(getattr(settings, "LLM_PROVIDERS", tuple(VARIABLES)))


def default_provider() -> str:
    return settings.LLM_PROVIDER


def model_for(provider: str) -> str:
    """LLM_MODEL applies to the configured provider; any other gets its default model."""
    if settings.LLM_MODEL and provider == settings.LLM_PROVIDER:
        return settings.LLM_MODEL
    return settings.LLM_DEFAULT_MODELS[provider]


def provider_settings(provider: str) -> ProviderSettings:
    names = VARIABLES[check_provider(provider)]
    return ProviderSettings(
        name=provider,
        key_variable=names.api_key,
        api_keys=api_keys(provider),
        base_url=getattr(settings, names.base_url).rstrip("/"),
        timeout=float(getattr(settings, names.timeout)),
        model=model_for(provider),
        max_retries=int(settings.LLM_MAX_RETRIES),
        # Not an environment variable: tests shorten the back-off with it.
        retry_initial_delay=float(getattr(settings, "LLM_RETRY_INITIAL_DELAY", 0.5)),
        pool_size=MAX_POOL_SIZE,
        rpm_limit=rate_limits(provider)[0],
        tpm_limit=rate_limits(provider)[1],
    )


def rate_limits(provider: str) -> tuple[int | None, int | None]:
    """The configured (RPM, TPM) ceilings of each budget of ``provider`` (see
    ``rate_limit_scope``); read per request, so a changed limit applies
    without rebuilding the provider's clients."""
    names = VARIABLES[check_provider(provider)]
    return _limit(names.rpm_limit, "LLM_RPM_LIMIT"), _limit(names.tpm_limit, "LLM_TPM_LIMIT")


def rate_limit_scope(provider: str) -> str:
    """Whose budget a key spends: "account" (every key of the provider, per model, as the
    providers count) or "key" (keys of different organisations). The provider's own variable,
    else ``LLM_RATE_LIMIT_SCOPE``; read per request, like the limits."""
    for name in (VARIABLES[check_provider(provider)].rate_limit_scope, "LLM_RATE_LIMIT_SCOPE"):
        value = getattr(settings, name, None)
        if value:
            if value not in RATE_LIMIT_SCOPES:
                raise ImproperlyConfigured(f"{name}={value!r}: must be one of "
                                           f"{', '.join(RATE_LIMIT_SCOPES)}")
            return value
    return "account"


def _limit(own: str, shared_default: str) -> int | None:
    """The provider's own limit if set (0 = unlimited for that provider), else ``LLM_…``."""
    value = getattr(settings, own, None)
    if value is None or value == "":
        value = getattr(settings, shared_default, None)
    return int(value) if value not in (None, "") and int(value) > 0 else None


def api_keys(provider: str) -> tuple[str, ...]:
    """``<PROVIDER>_API_KEYS`` (comma-separated) then ``<PROVIDER>_API_KEY``, without repeats."""
    names = VARIABLES[check_provider(provider)]
    listed = getattr(settings, names.api_keys, None) or ()
    if isinstance(listed, str):  # a test or a settings file may give the raw string
        listed = listed.split(",")
    single = getattr(settings, names.api_key, "") or ""
    keys = [key.strip() for key in [*listed, single] if key and key.strip()]
    return tuple(dict.fromkeys(keys))


def all_api_keys() -> tuple[str, ...]:
    """Every configured key, so error messages can be scrubbed of them."""
    return tuple(key for provider in VARIABLES for key in api_keys(provider))


# Providers an operator paused (the Setting row, which this layer may not read: the delivery
# layer passes it in as each run starts and whenever the settings change).
_paused: frozenset[str] = frozenset()


def set_paused(providers: Iterable[str]) -> None:
    """The providers an operator paused: left out of the failover chain from now on."""
    global _paused
    _paused = frozenset(providers)


@shared.on_reset
def _forget_paused() -> None:
    set_paused(())


def provider_chain(primary: str) -> tuple[str, ...]:
    """The primary, then each LLM_FALLBACK_PROVIDERS entry that has a key and is not
    paused, in order: where a prompt fails over when the primary is down (not
    ``generate_with_fallback``'s retry). A paused primary stays: while it is paused nothing
    is claimed."""
    configured = getattr(settings, "LLM_FALLBACK_PROVIDERS", ()) or ()
    if isinstance(configured, str):
        configured = configured.split(",")
    chain = [primary]
    for name in (part.strip() for part in configured):
        if name in VARIABLES and name not in chain and name not in _paused \
                and api_keys(name):
            chain.append(name)
    return tuple(chain)


def check_configured(primary: str | None = None) -> tuple[str, ...]:
    """The provider chain, or ImproperlyConfigured naming the missing key variable.

    ``tick`` calls this before claiming work, so a deployment without a key
    stops with a clear error instead of failing every item it claims.
    """
    primary = check_provider(primary or default_provider())
    chain = provider_chain(primary)
    if not any(api_keys(name) for name in chain):
        names = VARIABLES[primary]
        raise ImproperlyConfigured(
            f"{names.api_key} (or {names.api_keys}) is not set: LLM_PROVIDER={primary} "
            "needs an API key")
    return chain


def worst_case_seconds(primary: str | None = None) -> float:
    """How long one prompt may take at worst: every provider of the chain with all
    its retries, plus the rate limiter's longest wait."""
    total = rate_limit_max_wait()
    for name in provider_chain(primary or default_provider()):
        timeout = float(getattr(settings, VARIABLES[name].timeout))
        total += (timeout + 2.0) * (int(settings.LLM_MAX_RETRIES) + 1)
    return total


def rate_limit_max_wait() -> float:
    """Seconds one request may wait for limiter capacity or a server's Retry-After
    (LLM_RATE_LIMIT_MAX_WAIT); a longer wait defers the prompt instead."""
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
    from batchgen.state import shared

    shared.reset()
