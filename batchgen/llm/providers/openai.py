"""OpenAI chat completions through the official ``openai`` SDK (also the base for Groq): the SDK
builds the client (keys, base URL, organisation headers) and serves the Batch API, but a chat
completion is one POST on the SDK's own connection pool with the SDK's headers, parsed as
JSON, raising the SDK's errors with the SDK's text. Why it skips the SDK's request pipeline:
docs/design.md, "The hot path".
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

from batchgen.llm import errors
from batchgen.llm.errors import ProviderError
from batchgen.llm.providers.base import Provider
from batchgen.llm.types import Completion, CompletionRequest

_FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter"}


class OpenAICompatibleProvider(Provider):
    """Shared by the openai and groq SDKs, which are generated from one template:
    the same exception classes and the same ChatCompletion shape."""

    sdk: Any = openai
    client_class: Any = openai.OpenAI
    http_client_class: Any = openai.DefaultHttpxClient
    httpx_module: Any = httpx2  # the SDK's HTTP library: what a POST on its pool raises
    completion_type: Any = ChatCompletion
    completion_path = "/chat/completions"  # OPENAI_BASE_URL includes /v1

    def body(self, request: CompletionRequest) -> dict[str, Any]:
        """The chat completion request body (also one line of a Batch API input file)."""
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": request.system_prompt},
                         {"role": "user", "content": request.user_prompt}],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "top_p": request.top_p,
            "frequency_penalty": request.frequency_penalty,
            **self._cache_fields(request),
        }

    def _complete(self, client: Any, request: CompletionRequest) -> Completion:
        url, headers = self._endpoint(client)
        content = json.dumps(self.body(request)).encode()
        try:
            response = self._http.post(url, content=content, headers=headers,
                                       timeout=self.config.timeout)
        except self.httpx_module.TimeoutException:
            raise ProviderError(errors.TIMEOUT, f"request timed out after "
                                f"{self.config.timeout:g}s", retryable=True) from None
        except self.httpx_module.TransportError as exc:
            raise ProviderError(errors.CONNECTION, self.scrub(f"connection failed: {exc}"),
                                retryable=True) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            body = json.loads(response.content)
        except ValueError:
            body = response.text  # reported as "not a chat completion" below
        return self._parse_json(body)

    def _endpoint(self, client: Any) -> tuple[str, dict[str, str]]:
        """The URL and the headers the SDK client would send (auth, organisation...)."""
        found = self._endpoints.get(client.api_key)
        if found is None:
            headers = {**client.default_headers, **client.auth_headers}
            found = (str(client.base_url).rstrip("/") + self.completion_path,
                     {name: value for name, value in headers.items() if isinstance(value, str)})
            self._endpoints[client.api_key] = found
        return found

    def _status_error(self, response: Any) -> ProviderError:
        """What the SDK's APIStatusError for this reply translates to."""
        status = response.status_code
        message = f"Error code: {status}"
        try:
            body = json.loads(response.text.strip())
        except ValueError:
            body = None
        error = body.get("error", body) if isinstance(body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
        kind = errors.kind_for_status(status)
        return ProviderError(kind, self.scrub(f"HTTP {status}: {message}"),
                             retryable=kind in errors.BREAKER_FAILURES, status=status,
                             retry_after=errors.retry_after_seconds(response.headers))

    def _parse_json(self, body: Any) -> Completion:
        try:
            choice = body["choices"][0]
            message = choice["message"]
            text = message.get("content")
            reason = choice.get("finish_reason")
            finish = _FINISH_REASONS.get(reason or "", str(reason))
            if message.get("refusal") and not text:
                finish = "refusal"
            usage = body.get("usage")
        except (AttributeError, IndexError, TypeError, KeyError):
            raise ProviderError(errors.MALFORMED, self.scrub(
                f"response is not a chat completion: {str(body)[:200]!r}"),
                retryable=True) from None
        return Completion(text=text, finish_reason=finish, **_usage_fields(usage))

    def _cache_fields(self, request: CompletionRequest) -> dict[str, str]:
        # Groq caches by prefix alone and documents no routing key: send nothing it may refuse.
        return {}

    def _translate(self, exc: Exception) -> ProviderError:
        sdk = self.sdk
        # APITimeoutError subclasses APIConnectionError: test it first.
        if isinstance(exc, sdk.APITimeoutError):
            return ProviderError(errors.TIMEOUT, f"request timed out after "
                                 f"{self.config.timeout:g}s", retryable=True)
        if isinstance(exc, sdk.APIConnectionError):
            return ProviderError(errors.CONNECTION, self.scrub(f"connection failed: {exc}"),
                                 retryable=True)
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            kind = errors.kind_for_status(status)
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return ProviderError(kind, self.scrub(f"HTTP {status}: {exc.message}"),
                                 retryable=kind in errors.BREAKER_FAILURES, status=status,
                                 retry_after=errors.retry_after_seconds(headers))
        # APIResponseValidationError, a body that is not JSON (ValueError), anything odd.
        return ProviderError(errors.MALFORMED, self.scrub(
            f"unreadable response: {type(exc).__name__}: {exc}"), retryable=True)

    def parse(self, response: Any) -> Completion:
        """A chat completion (a Batch API output line's body, validated) as a Completion."""
        return self._parse(self.completion_type.model_validate(response))

    def _parse(self, response: Any) -> Completion:
        try:
            choice = response.choices[0]
            message = choice.message
            text = message.content
            finish = _FINISH_REASONS.get(choice.finish_reason or "", str(choice.finish_reason))
            if getattr(message, "refusal", None) and not text:
                finish = "refusal"
            usage = response.usage
        except (AttributeError, IndexError, TypeError, KeyError):
            # A non-JSON body comes back from the SDK as a plain str.
            raise ProviderError(errors.MALFORMED, self.scrub(
                f"response is not a chat completion: {str(response)[:200]!r}"),
                retryable=True) from None
        return Completion(text=text, finish_reason=finish, **_usage(usage))


class OpenAIProvider(OpenAICompatibleProvider):
    name = "openai"

    def _cache_fields(self, request: CompletionRequest) -> dict[str, str]:
        # OpenAI routes a request to a cache machine by a hash of its first ~256 tokens;
        # prompt_cache_key joins that hash, keeping one bot's prompts on the machines that
        # hold its prefix (chat.completions.create accepts it too).
        return {"prompt_cache_key": request.cache_key} if request.cache_key else {}


def _usage_fields(usage: Any) -> dict[str, int]:
    """Token counts from a reply's JSON ``usage`` (absent or odd: zeros)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    return {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "cached_tokens": int(details.get("cached_tokens") or 0)}


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    details = getattr(usage, "prompt_tokens_details", None)
    return {
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "cached_tokens": int(getattr(details, "cached_tokens", 0) or 0),
    }
