"""Gemini through the official ``google-genai`` SDK."""

from __future__ import annotations

from typing import Any

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from batchgen.llm import errors
from batchgen.llm.errors import ProviderError
from batchgen.llm.providers.base import Provider
from batchgen.llm.types import Completion, CompletionRequest

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
             "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"}


class GeminiProvider(Provider):
    """``generateContent`` on GOOGLE_GEMINI_BASE_URL (the SDK adds ``/v1beta/models/...``).

    frequency_penalty is not sent: several Gemini models refuse it with a 400.
    """

    name = "gemini"
    http_client_class = httpx2.Client
    httpx_module = httpx2

    def _build_client(self, api_key: str, http_client: Any) -> Any:
        # No HttpRetryOptions: google-genai then retries nothing, and batchgen.llm.attempts
        # retries through the rate limiter instead.
        options = genai_types.HttpOptions(
            base_url=self.config.base_url,
            # Pinned: newer SDKs default to v1, which lacks some fields we send.
            api_version="v1beta",
            timeout=int(self.config.timeout * 1000),  # milliseconds
            httpx_client=http_client,
        )
        return genai.Client(api_key=api_key, http_options=options)

    def _generation_config(self, request: CompletionRequest) -> Any:
        thinking = None
        if "flash" in self.model:
            # 2.5 models think by default and thinking tokens count against
            # max_output_tokens: a 220-token budget would end in MAX_TOKENS, no text.
            thinking = genai_types.ThinkingConfig(thinking_budget=0)
        return genai_types.GenerateContentConfig(
            system_instruction=request.system_prompt,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            top_p=request.top_p,
            thinking_config=thinking,
        )

    def body(self, request: CompletionRequest) -> dict[str, Any]:
        """The REST generateContent request (one line of a batch input file), the same
        settings as ``_generation_config``."""
        config = self._generation_config(request)
        generation = {"temperature": config.temperature,
                      "maxOutputTokens": config.max_output_tokens, "topP": config.top_p}
        if config.thinking_config is not None:
            generation["thinkingConfig"] = {"thinkingBudget": 0}
        return {"contents": [{"role": "user", "parts": [{"text": request.user_prompt}]}],
                "systemInstruction": {"parts": [{"text": request.system_prompt}]},
                "generationConfig": generation}

    def parse(self, response: Any) -> Completion:
        """A generateContent response (a batch output line's, as JSON) as a Completion."""
        return self._parse(genai_types.GenerateContentResponse.model_validate(response))

    def _complete(self, client: Any, request: CompletionRequest) -> Completion:
        try:
            response = client.models.generate_content(
                model=self.model, contents=request.user_prompt,
                config=self._generation_config(request))
        except Exception as exc:  # every SDK error is turned into one type
            raise self._translate(exc) from None
        return self._parse(response)

    def _translate(self, exc: Exception) -> ProviderError:
        if isinstance(exc, genai_errors.APIError):
            status = int(exc.code or 0)
            kind = errors.kind_for_status(status) if status else errors.MALFORMED
            return ProviderError(kind, self.scrub(f"HTTP {status}: {exc.message or exc}"),
                                 retryable=kind in errors.BREAKER_FAILURES, status=status,
                                 retry_after=_retry_after(exc))
        if isinstance(exc, httpx2.TimeoutException):
            return ProviderError(errors.TIMEOUT, f"request timed out after "
                                 f"{self.config.timeout:g}s", retryable=True)
        if isinstance(exc, httpx2.TransportError):
            return ProviderError(errors.CONNECTION, self.scrub(f"connection failed: {exc}"),
                                 retryable=True)
        return ProviderError(errors.MALFORMED, self.scrub(
            f"unreadable response: {type(exc).__name__}: {exc}"), retryable=True)

    def _parse(self, response: Any) -> Completion:
        usage = _usage(getattr(response, "usage_metadata", None))
        feedback = getattr(response, "prompt_feedback", None)
        candidates = getattr(response, "candidates", None) or []
        if not candidates:
            # A blocked prompt: no candidates at all, the reason in prompt_feedback.
            reason = "safety" if getattr(feedback, "block_reason", None) else "stop"
            return Completion(text=None, finish_reason=reason, **usage)
        candidate = candidates[0]
        finish = _finish_name(candidate.finish_reason)
        parts = getattr(candidate.content, "parts", None) or []
        texts = [p.text for p in parts if getattr(p, "text", None) and not p.thought]
        text = "".join(texts) if texts else None
        if finish == "MAX_TOKENS":
            return Completion(text=text, finish_reason="length", **usage)
        if finish in _FILTERED:
            return Completion(text=text, finish_reason="content_filter", **usage)
        return Completion(text=text, finish_reason="stop", **usage)


def _finish_name(reason: Any) -> str:
    return str(getattr(reason, "value", reason) or "STOP").upper()


def _usage(metadata: Any) -> dict[str, int]:
    def count(name: str) -> int:
        return int(getattr(metadata, name, 0) or 0)

    return {"prompt_tokens": count("prompt_token_count"),
            "completion_tokens": count("candidates_token_count"),
            "cached_tokens": count("cached_content_token_count")}


def _retry_after(exc: Any) -> float | None:
    """Retry-After from the headers, else Google's ``RetryInfo.retryDelay`` ("30s") body."""
    seconds = errors.retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))
    if seconds is not None:
        return seconds
    details = (getattr(exc, "details", None) or {})
    details = details.get("error", {}).get("details", []) if isinstance(details, dict) else []
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None
