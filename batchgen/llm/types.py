"""Plain data passed between the batch client, the providers and the pipeline."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompletionRequest:
    """One chat completion, already filtered: what every provider's ``complete`` takes."""

    user_prompt: str
    system_prompt: str
    temperature: float = 0.7
    max_tokens: int = 220
    top_p: float = 0.95
    frequency_penalty: float = 0.4
    # Groups requests that share a long prefix (one bot's system prompt and persona) on the
    # same cache machine: OpenAI's ``prompt_cache_key``. Not a secret; "" sends none.
    cache_key: str = ""


@dataclass(frozen=True)
class Completion:
    """What a provider returned, before the edge cases are judged.

    ``finish_reason`` is normalised to "stop", "length", "content_filter",
    "safety" or "refusal" (anything else is passed through lower-cased).
    """

    text: str | None
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one prompt; ``text`` is None exactly when ``error_kind`` is set."""

    text: str | None
    error_kind: str | None = None
    error_message: str = ""
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    attempts: int = 0
    provider: str = ""          # the provider that answered (or failed last)
    model: str = ""
    retryable: bool = False
    failover_from: str = ""     # the primary provider, when the prompt failed over
    key: str = ""               # fingerprint of the API key that answered, never the key
    # Seconds to wait before trying again, when known: a server's Retry-After (also one too
    # long to wait in-request, kind "rate_limit_wait"), or for "circuit_open" the time until
    # the breaker half-opens. The pipeline defers the item this long.
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None
