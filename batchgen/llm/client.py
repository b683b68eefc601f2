"""LLMClient: one prompt, filtered in, judged and post-processed out, behind the breaker. A
request goes provider breaker -> next key in rotation -> that key's rate limiter -> HTTP with
retries (``attempts.send``); ``execute_chain`` fails a prompt over to the next provider of
``LLM_FALLBACK_PROVIDERS`` when the provider is down, saturated or has no working key. Not
``generate_with_fallback``, which retries failed prompts on the same provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from batchgen import metrics
from batchgen.core.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    filter_content,
    is_blank,
    postprocess_output,
)
from batchgen.llm import attempts, config, errors, registry
from batchgen.llm.attempts import WaitBudget
from batchgen.llm.errors import ProviderError
from batchgen.llm.providers.base import Provider
from batchgen.llm.types import Completion, CompletionRequest, GenerationResult
from batchgen.state import shared
from batchgen.state.breakers import CircuitBreaker, CircuitOpenError, get_circuit_breaker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outcome:
    text: str | None
    kind: str | None = None
    message: str = ""


def build_request(prompt: object, index: int | None = None, *, system_prompt: str | None,
                  temperature: float, max_tokens: int, top_p: float,
                  frequency_penalty: float, cache_key: str | None = None) -> CompletionRequest:
    """Check and filter one prompt; TypeError / ValueError name its index."""
    user_prompt = filter_content(check_prompt(prompt, index))
    system = filter_content(system_prompt) if system_prompt else ""
    return CompletionRequest(
        user_prompt=user_prompt, system_prompt=system or DEFAULT_SYSTEM_PROMPT,
        temperature=temperature, max_tokens=max_tokens, top_p=top_p,
        frequency_penalty=frequency_penalty, cache_key=cache_key or "")


def check_prompt(prompt: object, index: int | None = None) -> str:
    """``build_request``'s checks without its filtering: TypeError / ValueError name the
    prompt's index."""
    where = "prompt" if index is None else f"prompt {index}"
    if not isinstance(prompt, str):
        raise TypeError(f"{where} must be a str, got {type(prompt).__name__}")
    if is_blank(prompt):
        raise ValueError(f"{where} is empty or whitespace only")
    return prompt


def judge(completion: Completion, max_tokens: int) -> _Outcome:
    """Decide whether a parsed reply is sendable.

    A reply cut off at ``max_tokens`` (finish_reason "length") is dropped as
    "truncated", not kept: a chat message that stops mid-sentence looks broken
    to the people in the chat, and the queue item can be retried instead.
    """
    reason = completion.finish_reason
    if reason == "length":
        return _Outcome(None, errors.TRUNCATED, f"reply cut off at max_tokens={max_tokens}")
    if reason == "content_filter":
        return _Outcome(None, errors.CONTENT_FILTER, "reply withheld by the provider's filter")
    if reason in ("safety", "refusal"):
        return _Outcome(None, errors.SAFETY_BLOCK, f"blocked for safety ({reason})")
    if not (completion.text or "").strip():
        return _Outcome(None, errors.EMPTY, "the provider returned no text")
    text = postprocess_output(completion.text)
    if text is None:
        return _Outcome(None, errors.EMPTY, "nothing left after post-processing")
    return _Outcome(text)


def execute(provider: Provider, request: CompletionRequest,
            budget: WaitBudget | None = None) -> GenerationResult:
    """Run one request on one provider, through its breaker and keys; never raises.

    ``budget`` is the wait this prompt may still spend (default LLM_RATE_LIMIT_MAX_WAIT);
    a provider chain passes one budget along.
    """
    started = time.perf_counter()
    budget = budget or WaitBudget(config.rate_limit_max_wait())
    name = provider.config.breaker
    try:
        provider.client()  # a missing key fails here, before the breaker is asked
    except ProviderError as exc:
        return _failure(provider, started, exc, 0)
    breaker = get_circuit_breaker(name)
    # One round trip after the request: both breakers' outcome, what the reply taught the
    # budget and the request's metrics (the one before it is ``attempts.send``'s script).
    round_trip = shared.Round()
    try:
        with metrics.into(round_trip):
            result = _execute(provider, request, budget, breaker, round_trip, started)
    finally:
        round_trip.send("LLM request outcome")
    return result


def _execute(provider: Provider, request: CompletionRequest, budget: WaitBudget,
             breaker: CircuitBreaker, round_trip: shared.Round,
             started: float) -> GenerationResult:
    try:
        sent = attempts.send(provider, request, budget, breaker, round_trip)
    except CircuitOpenError as exc:
        # retry_after: when the breaker half-opens, so the item is deferred until then.
        return _failure(provider, started, ProviderError(
            errors.CIRCUIT_OPEN, f"circuit {breaker.name} is open, retry in "
            f"{exc.retry_after:.0f}s", retryable=True, retry_after=exc.retry_after), 0)
    except Exception as exc:  # a bug must not kill the batch or strand a half-open probe
        breaker.queue_outcome(round_trip, "ignored")
        logger.exception("unexpected error from the %s provider", provider.name)
        return _failure(provider, started, ProviderError(
            errors.MALFORMED, provider.scrub(f"{type(exc).__name__}: {exc}")), 1)
    if sent.error is not None:
        breaker.queue_outcome(round_trip, "failure" if sent.error.kind in
                              errors.BREAKER_FAILURES else "ignored")
        return _failure(provider, started, sent.error, sent.attempts)
    assert sent.completion is not None and sent.key is not None  # sent without an error
    outcome = judge(sent.completion, request.max_tokens)
    # An empty or filtered reply says nothing about the service's health.
    breaker.queue_outcome(round_trip, "success" if outcome.kind is None else "ignored")
    return replace(_result(provider, started, outcome, sent.completion, sent.attempts),
                   key=sent.key.fingerprint)


def execute_chain(providers: Sequence[Provider], request: CompletionRequest) -> GenerationResult:
    """The primary, then each provider of the chain while the failure is one another
    provider may not have (``errors.FAILOVER_KINDS``); never raises (threads call this).

    The result is the last provider's, with ``failover_from`` naming the primary when the
    prompt failed over, ``attempts`` and ``latency_s`` over the whole chain.
    """
    started = time.perf_counter()
    budget = WaitBudget(config.rate_limit_max_wait())
    made = 0
    result: GenerationResult | None = None
    for index, provider in enumerate(providers):
        result = execute(provider, request, budget)
        made += result.attempts
        if result.ok or result.error_kind not in errors.FAILOVER_KINDS:
            break
        if index + 1 < len(providers):
            logger.warning("%s unavailable (%s): prompt fails over to %s", provider.name,
                           result.error_kind, providers[index + 1].name)
    assert result is not None, "a chain has at least its primary"
    if result.provider == providers[0].name:
        return result
    metrics.observe_failover(providers[0].name, result.provider,
                             "ok" if result.ok else str(result.error_kind))
    return replace(result, failover_from=providers[0].name, attempts=made,
                   latency_s=time.perf_counter() - started)


def _result(provider: Provider, started: float, outcome: _Outcome, completion: Completion,
            attempts: int) -> GenerationResult:
    if outcome.kind:
        logger.warning("%s generation failed: %s (%s)", provider.name, outcome.kind,
                       outcome.message)
    return GenerationResult(
        text=outcome.text, error_kind=outcome.kind, error_message=outcome.message,
        latency_s=time.perf_counter() - started, prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens, cached_tokens=completion.cached_tokens,
        attempts=attempts, provider=provider.name, model=provider.model,
        retryable=outcome.kind in errors.RETRYABLE_KINDS)


def _failure(provider: Provider, started: float, error: ProviderError,
             attempts: int) -> GenerationResult:
    message = errors.scrub(error.message, config.all_api_keys())
    logger.warning("%s generation failed: %s (%s)", provider.name, error.kind, message)
    return GenerationResult(
        text=None, error_kind=error.kind, error_message=message,
        latency_s=time.perf_counter() - started, attempts=attempts, provider=provider.name,
        model=provider.model, retryable=error.retryable, retry_after_s=error.retry_after)


class LLMClient:
    """One generation at a time on the shared provider client (kept API: ``compat``)."""

    def __init__(self, provider: str | None = None) -> None:
        self.provider_name = config.check_provider(provider or config.default_provider())

    @property
    def provider(self) -> Provider:
        # Looked up per call, so config.reset() takes effect for existing clients.
        return registry.get_provider(self.provider_name)

    @property
    def chain(self) -> list[Provider]:
        """The provider chain: the primary, then the LLM_FALLBACK_PROVIDERS that have a key."""
        return [registry.get_provider(name) for name in config.provider_chain(self.provider_name)]

    def generate(self, user_prompt: str, system_prompt: str | None = None,
                 temperature: float = 0.7, max_tokens: int = 220, top_p: float = 0.95,
                 frequency_penalty: float = 0.4) -> str | None:
        """The reply text, or None when generation failed (the reason is logged)."""
        return self.generate_detailed(user_prompt, system_prompt, temperature, max_tokens,
                                      top_p, frequency_penalty).text

    def generate_detailed(self, user_prompt: str, system_prompt: str | None = None,
                          temperature: float = 0.7, max_tokens: int = 220,
                          top_p: float = 0.95,
                          frequency_penalty: float = 0.4, *,
                          cache_key: str | None = None) -> GenerationResult:
        """Like ``generate`` but with the reason, latency, tokens and attempts.

        A non-str prompt raises TypeError, an empty one ValueError; provider
        failures never raise, they come back as a result with ``error_kind``.
        """
        request = build_request(user_prompt, system_prompt=system_prompt,
                                temperature=temperature, max_tokens=max_tokens,
                                top_p=top_p, frequency_penalty=frequency_penalty,
                                cache_key=cache_key)
        return execute_chain(self.chain, request)
