"""The providers' Batch APIs (half price, results within 24 h): submit, poll, fetch, cancel.

ORM-free like the rest of the LLM layer: it takes prompts keyed by a ``custom_id`` (the
queue item's id) and hands back GenerationResults keyed the same way; batchgen.batch_route
does the database side. OpenAI and Groq share one shape (Groq's batch endpoint is
OpenAI-compatible and its SDK is generated from the same template): a JSONL file uploaded
with purpose "batch", then ``batches.create`` on it. Results are matched by ``custom_id``,
never by line order, since the output file is not in input order.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from batchgen.llm import errors
from batchgen.llm.client import build_request, judge
from batchgen.llm.errors import ProviderError
from batchgen.llm.registry import get_provider
from batchgen.llm.types import CompletionRequest, GenerationResult

SUPPORTED = ("openai", "groq")
RUNNING, COMPLETED, ENDED = "running", "completed", "ended"  # ended: failed/expired/cancelled
_ENDED = {"failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchState:
    """Where a provider batch stands: ``state`` is RUNNING, COMPLETED or ENDED; an ended
    batch may still have results for some of its requests."""

    state: str
    provider_status: str
    error: str = ""


def check_supported(provider: str) -> str:
    if provider not in SUPPORTED:
        raise ValueError(f"the batch route supports {', '.join(SUPPORTED)}, not {provider!r}")
    return provider


def _client(provider: str) -> tuple[Any, Any]:
    chosen = get_provider(check_supported(provider))
    return chosen, chosen.client()


def _endpoint() -> str:
    # The URL each request line is for, as the provider's batch validator expects it.
    return "/v1/chat/completions"


def request(user_prompt: str, system_prompt: str) -> CompletionRequest:
    """One prompt checked and filtered exactly as the sync path does (secrets redacted,
    whitespace collapsed), with its default sampling; ValueError names an empty prompt."""
    return build_request(user_prompt, system_prompt=system_prompt,
                         temperature=CompletionRequest.temperature,
                         max_tokens=CompletionRequest.max_tokens, top_p=CompletionRequest.top_p,
                         frequency_penalty=CompletionRequest.frequency_penalty)


def submit(provider: str, requests: dict[str, CompletionRequest]) -> str:
    """Upload ``requests`` (custom_id -> request) as one batch; returns the provider's id.
    Raises ProviderError (its kind says whether to retry) when the upload or create fails."""
    chosen, client = _client(provider)
    lines = [json.dumps({"custom_id": custom_id, "method": "POST", "url": _endpoint(),
                         "body": chosen.body(request)})
             for custom_id, request in requests.items()]
    data = ("\n".join(lines) + "\n").encode()
    try:
        uploaded = client.files.create(file=("batch.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=_endpoint(),
                                      completion_window="24h")
    except Exception as exc:
        raise chosen._translate(exc) from None
    return str(batch.id)


def poll(provider: str, batch_id: str) -> BatchState:
    chosen, client = _client(provider)
    try:
        batch = client.batches.retrieve(batch_id)
    except Exception as exc:
        raise chosen._translate(exc) from None
    status = str(batch.status)
    if status == "completed":
        return BatchState(COMPLETED, status)
    if status in _ENDED:
        return BatchState(ENDED, status, _batch_errors(batch))
    return BatchState(RUNNING, status)


def _batch_errors(batch: Any) -> str:
    found = getattr(getattr(batch, "errors", None), "data", None) or []
    return "; ".join(str(getattr(e, "message", e)) for e in found)[:500]


def results(provider: str, batch_id: str,
            max_tokens: int = CompletionRequest.max_tokens) -> dict[str, GenerationResult]:
    """Every result the batch has (custom_id -> result), from its output and error files;
    a request missing from both has no entry (the caller sends it synchronously)."""
    chosen, client = _client(provider)
    try:
        batch = client.batches.retrieve(batch_id)
        lines = [*_lines(client, batch.output_file_id), *_lines(client, batch.error_file_id)]
    except Exception as exc:
        raise chosen._translate(exc) from None
    found: dict[str, GenerationResult] = {}
    for line in lines:
        custom_id = str(line.get("custom_id", ""))
        if custom_id and custom_id not in found:  # a line twice: the first one counts
            found[custom_id] = _result(chosen, line, max_tokens)
    return found


def _lines(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    raw = client.files.content(file_id).read().decode()
    parsed = []
    for text in raw.splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a torn line: its item has no result and goes the sync way
        if isinstance(line, dict):
            parsed.append(line)
    return parsed


def _result(chosen: Any, line: dict[str, Any], max_tokens: int) -> GenerationResult:
    base = {"provider": chosen.name, "model": chosen.model, "attempts": 1}
    response = line.get("response") or {}
    error = line.get("error") or (response.get("body") or {}).get("error")
    status = int(response.get("status_code") or 0)
    if error or status != 200:
        message = error.get("message", "") if isinstance(error, dict) else str(error or "")
        kind = errors.kind_for_status(status) if status else errors.MALFORMED
        return GenerationResult(text=None, error_kind=kind, retryable=True,
                                error_message=chosen.scrub(f"batch request failed: "
                                                           f"HTTP {status} {message}"), **base)
    try:
        completion = chosen.parse(response.get("body"))
    except ProviderError as exc:
        return GenerationResult(text=None, error_kind=exc.kind, error_message=exc.message,
                                retryable=True, **base)
    except Exception as exc:  # a body that does not validate as a chat completion
        return GenerationResult(text=None, error_kind=errors.MALFORMED, retryable=True,
                                error_message=f"unreadable batch result: {exc}"[:300], **base)
    outcome = judge(completion, max_tokens)
    return GenerationResult(
        text=outcome.text, error_kind=outcome.kind, error_message=outcome.message,
        prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
        cached_tokens=completion.cached_tokens,
        retryable=outcome.kind in errors.RETRYABLE_KINDS, **base)


def cancel(provider: str, batch_id: str) -> None:
    """Ask the provider to stop the batch; results it already has stay fetchable."""
    chosen, client = _client(provider)
    try:
        client.batches.cancel(batch_id)
    except Exception as exc:
        raise chosen._translate(exc) from None
