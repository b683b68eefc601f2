"""The providers' Batch APIs (half price, results within 24 h): submit, poll, fetch, cancel.
ORM-free like the rest of the LLM layer: it takes prompts keyed by a ``custom_id`` (the queue
item's id) and hands back GenerationResults keyed the same way, matched by key, never by line
order; ``batchgen.delivery.batch_route`` does the database side. Each provider's shape:
docs/design.md, "The provider batch route".
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

SUPPORTED = ("openai", "groq", "gemini")
RUNNING, COMPLETED, ENDED = "running", "completed", "ended"  # ended: failed/expired/cancelled
_ENDED = {"failed", "expired", "cancelled"}
_GEMINI_STATES = {"JOB_STATE_SUCCEEDED": COMPLETED, "JOB_STATE_FAILED": ENDED,
                  "JOB_STATE_CANCELLED": ENDED, "JOB_STATE_EXPIRED": ENDED}


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
    if provider == "gemini":
        return _gemini_submit(chosen, client, requests)
    lines = [json.dumps({"custom_id": custom_id, "method": "POST", "url": _endpoint(),
                         "body": chosen.body(request)})
             for custom_id, request in requests.items()]
    try:
        uploaded = client.files.create(file=("batch.jsonl", io.BytesIO(_jsonl(lines))),
                                       purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=_endpoint(),
                                      completion_window="24h")
    except Exception as exc:
        raise chosen._translate(exc) from None
    return str(batch.id)


def _jsonl(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _gemini_submit(chosen: Any, client: Any, requests: dict[str, CompletionRequest]) -> str:
    lines = [json.dumps({"key": key, "request": chosen.body(request)})
             for key, request in requests.items()]
    try:
        uploaded = client.files.upload(file=io.BytesIO(_jsonl(lines)),
                                       config={"mime_type": "jsonl",
                                               "display_name": "batch.jsonl"})
        job = client.batches.create(model=chosen.model, src=uploaded.name)
    except Exception as exc:
        raise chosen._translate(exc) from None
    return str(job.name)


def poll(provider: str, batch_id: str) -> BatchState:
    chosen, client = _client(provider)
    try:
        batch = client.batches.get(name=batch_id) if provider == "gemini" else \
            client.batches.retrieve(batch_id)
    except Exception as exc:
        raise chosen._translate(exc) from None
    if provider == "gemini":
        state = str(getattr(batch.state, "value", batch.state))
        return BatchState(_GEMINI_STATES.get(state, RUNNING), state,
                          str(getattr(batch.error, "message", "") or ""))
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
        lines = _gemini_lines(client, batch_id) if provider == "gemini" else \
            _openai_lines(client, batch_id)
    except Exception as exc:
        raise chosen._translate(exc) from None
    found: dict[str, GenerationResult] = {}
    for line in lines:
        custom_id = str(line.get("custom_id", ""))
        if custom_id and custom_id not in found:  # a line twice: the first one counts
            found[custom_id] = _result(chosen, line, max_tokens)
    return found


def _openai_lines(client: Any, batch_id: str) -> list[dict[str, Any]]:
    batch = client.batches.retrieve(batch_id)
    return [*_parsed(_content(client, batch.output_file_id)),
            *_parsed(_content(client, batch.error_file_id))]


def _content(client: Any, file_id: str | None) -> str:
    return client.files.content(file_id).read().decode() if file_id else ""


def _gemini_lines(client: Any, batch_id: str) -> list[dict[str, Any]]:
    """Gemini's lines in OpenAI's shape: ``key`` is the custom_id, a ``response`` is a 200."""
    job = client.batches.get(name=batch_id)
    name = getattr(job.dest, "file_name", None) if job.dest else None
    if not name:
        return []
    lines = []
    for line in _parsed(client.files.download(file=name).decode()):
        error = line.get("error")
        lines.append({"custom_id": line.get("key"), "error": error,
                      "response": {"status_code": int((error or {}).get("code") or 500)
                                   if error else 200, "body": line.get("response")}})
    return lines


def _parsed(raw: str) -> list[dict[str, Any]]:
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
        if provider == "gemini":
            client.batches.cancel(name=batch_id)
        else:
            client.batches.cancel(batch_id)
    except Exception as exc:
        raise chosen._translate(exc) from None
