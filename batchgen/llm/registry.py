"""The one provider registry: a name to a process-wide, thread-shared provider."""

from __future__ import annotations

import os
import threading

from batchgen.llm import config
from batchgen.llm.providers.base import Provider
from batchgen.llm.providers.gemini import GeminiProvider
from batchgen.llm.providers.groq import GroqProvider
from batchgen.llm.providers.openai import OpenAIProvider
from batchgen.state import shared

PROVIDER_CLASSES: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "gemini": GeminiProvider,
    "groq": GroqProvider,
}

_providers: dict[str, Provider] = {}
_lock = threading.Lock()


def get_provider(name: str | None = None) -> Provider:
    """The shared provider for ``name`` (default LLM_PROVIDER), built once per process.

    Building it reads settings but makes no connection and needs no key yet;
    a missing key is reported by the first call.
    """
    name = config.check_provider(name or config.default_provider())
    provider = _providers.get(name)
    if provider is None:
        with _lock:
            provider = _providers.get(name)
            if provider is None:
                provider = PROVIDER_CLASSES[name](config.provider_settings(name))
                _providers[name] = provider
    return provider


def _forget_in_child() -> None:
    # A forked child (RQ work-horse) must not reuse the parent's sockets: drop
    # the clients without closing them, the parent still owns those connections.
    _providers.clear()


os.register_at_fork(after_in_child=_forget_in_child)


@shared.on_reset
def clear() -> None:
    """Forget every provider and close its connection pool (tests change settings)."""
    with _lock:
        providers = list(_providers.values())
        _providers.clear()
    for provider in providers:
        provider.close()
