"""A fake OpenAI / Groq / Gemini server (aiohttp, one process) for tests, the benchmark and the
demo: rate limits with the providers' headers, faults chosen by prompt marker, key or route,
prompt caching and control routes; docs/design.md, "The fake LLM server", lists them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from batchgen.fakes.llm_limits import SCOPES, Limits, Window, admit, rate_headers
from batchgen.fakes.prefix_cache import CHARS_PER_TOKEN, PrefixCache

FAULT_MARKER = re.compile(r"\[\[fault:([a-z_]+|\d{3})(?:x(\d+))?\]\]")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


@dataclass
class FakeLLMConfig:
    latency: float = 0.0            # seconds: fixed part, or the lognormal mean
    jitter: float = 0.0             # seconds: uniform 0..jitter added (fixed mode)
    latency_mode: str = "fixed"     # "fixed" or "lognormal"
    latency_sigma: float = 0.5      # lognormal sigma
    rpm: int = 0                    # requests per rpm_window; 0 = unlimited
    rpm_window: float = 60.0        # sliding window, seconds
    tpm: int = 0                    # tokens per rpm_window; 0 = unlimited
    rate_scope: str = "account"     # "account": one window for all keys; "key": one per key
    rate_headers: bool = True       # x-ratelimit-* on OpenAI/Groq replies while limited
    fault: str | None = None        # a fault for every request without a marker
    retry_after: float = 1.0        # Retry-After (s) on [[fault:429]]
    retry_after_ms: int | None = None  # also send retry-after-ms on 429/5xx (fast SDK retries)
    timeout_seconds: float = 30.0   # how long a "timeout" fault stalls
    key_faults: dict[str, str] = field(default_factory=dict)    # API key -> fault
    route_faults: dict[str, str] = field(default_factory=dict)  # route -> fault
    fault_times: int = 0            # > 0: ``fault`` applies to this many more requests only
    record_arrivals: bool = False   # keep each request's arrival time for /_stats
    cache_ttl: float = 300.0        # s an unused prompt prefix stays cached (prefix_cache.py)

    def latency_sample(self) -> float:
        if self.latency_mode == "lognormal" and self.latency > 0:
            # Parameterised by the mean: mu = ln(mean) - sigma^2 / 2.
            mu = math.log(self.latency) - self.latency_sigma ** 2 / 2
            return random.lognormvariate(mu, self.latency_sigma)
        return self.latency + (random.uniform(0, self.jitter) if self.jitter else 0.0)


@dataclass(frozen=True)
class _Call:
    route: str
    model: str
    text: str          # everything the model would read: system + user
    user_text: str     # the last user message
    api_key: str
    max_tokens: int = 0  # counted against a token limit, as OpenAI counts it
    cached: int = 0      # prompt tokens found in the prompt cache
    cache_key: str = ""  # OpenAI's prompt_cache_key, when sent


class FakeState:
    def __init__(self, config: FakeLLMConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.seen: Counter[str] = Counter()
        self.windows: dict[str, Window] = {}  # "" for the account, else per API key
        self.statuses: dict[str, Counter[str]] = {}
        self.received: Counter[str] = Counter()
        self.in_flight = 0
        self.in_flight_peak = 0
        self.by_key: dict[str, Counter[str]] = {}
        self.arrivals: list[float] = []
        self.prefixes = PrefixCache(self.config.cache_ttl)
        self.cache_keys: Counter[str] = Counter()  # prompt_cache_key -> requests
        self.cached_tokens: Counter[str] = Counter()  # route -> cached prompt tokens reported

    def stats(self) -> dict[str, Any]:
        return {"received": dict(self.received), "total": sum(self.received.values()),
                "requests": {route: dict(c) for route, c in self.statuses.items()},
                "by_key": {key: dict(c) for key, c in self.by_key.items()},
                "arrivals": list(self.arrivals),
                "in_flight": self.in_flight, "in_flight_peak": self.in_flight_peak,
                "cache_keys": dict(self.cache_keys), "cached_tokens": dict(self.cached_tokens),
                "config": dataclasses.asdict(self.config)}

    def record(self, call: _Call | None, status: str) -> None:
        # Keys are counted by the fingerprint batchgen.llm.limits.budgets.key_fingerprint uses.
        key = hashlib.sha256(call.api_key.encode()).hexdigest()[:12] if call else "?"
        self.by_key.setdefault(key, Counter())[status] += 1

    def rate_limit(self, call: _Call) -> tuple[float | None, dict[str, str]]:
        """(seconds until the request fits, or None once it is counted; x-ratelimit-* headers)."""
        config = self.config
        if not (config.rpm or config.tpm):
            return None, {}
        limits = Limits(config.rpm, config.tpm, config.rpm_window)
        window = self.windows.setdefault(call.api_key if config.rate_scope == "key" else "",
                                         Window())
        now = time.monotonic()
        wait = admit(limits, window, _usage(call, "")[0] + call.max_tokens, now)
        if not config.rate_headers or call.route == "gemini":
            return wait, {}  # Gemini says nothing about its limits but the 429
        return wait, rate_headers(limits, window, now)

    def fault_for(self, call: _Call) -> str | None:
        match = FAULT_MARKER.search(call.text)
        if match is None:
            return self.key_or_route_fault(call)
        name, times = match.group(1), match.group(2)
        if times is None:
            return name
        self.seen[call.text] += 1
        return name if self.seen[call.text] <= int(times) else None


    def key_or_route_fault(self, call: _Call) -> str | None:
        config = self.config
        fault = config.key_faults.get(call.api_key) or config.route_faults.get(call.route)
        if fault or not config.fault:
            return fault
        if config.fault_times > 0:
            left = config.fault_times - 1
            self.config = dataclasses.replace(config, fault_times=left,
                                              fault=config.fault if left else None)
        return config.fault


STATE = web.AppKey("state", FakeState)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _openai_call(route: str, body: dict, request: web.Request) -> _Call:
    messages = body.get("messages") or []
    texts = [_content_text(m.get("content")) for m in messages]
    users = [_content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return _Call(route, str(body.get("model", "")), "\n".join(texts),
                 users[-1] if users else "", key, int(max_tokens),
                 cache_key=str(body.get("prompt_cache_key") or ""))


def _gemini_call(body: dict, request: web.Request) -> _Call:
    def parts_text(content: Any) -> str:
        parts = (content or {}).get("parts") or []
        return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))

    contents = body.get("contents") or []
    users = [parts_text(c) for c in contents if c.get("role", "user") == "user"]
    text = "\n".join([parts_text(body.get("systemInstruction"))] + users)
    key = request.headers.get("x-goog-api-key", "") or request.query.get("key", "")
    max_tokens = (body.get("generationConfig") or {}).get("maxOutputTokens") or 0
    return _Call("gemini", request.match_info["model"], text, users[-1] if users else "", key,
                 int(max_tokens))


def _usage(call: _Call, reply: str) -> tuple[int, int, int]:
    prompt = max(1, len(call.text) // CHARS_PER_TOKEN)
    return prompt, max(1, len(reply) // CHARS_PER_TOKEN) if reply else 0, call.cached


def _openai_body(call: _Call, text: str | None, finish: str,
                 refusal: str | None = None) -> dict[str, Any]:
    prompt, completion, cached = _usage(call, text or "")
    return {
        "id": f"chatcmpl-fake-{random.getrandbits(48):x}", "object": "chat.completion",
        "created": int(time.time()), "model": call.model,
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": refusal}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }


def _gemini_body(call: _Call, text: str | None, finish: str,
                 blocked: bool = False) -> dict[str, Any]:
    prompt, completion, cached = _usage(call, text or "")
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": completion,
             "totalTokenCount": prompt + completion, "cachedContentTokenCount": cached}
    if blocked:
        return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage,
                "modelVersion": call.model}
    parts = [{"text": text}] if text is not None else []
    return {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": finish, "index": 0}],
            "usageMetadata": usage, "modelVersion": call.model}


def _error(call: _Call, status: int, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    if call.route == "gemini":
        body = {"error": {"code": status, "message": message,
                          "status": _STATUS_NAMES.get(status, "UNKNOWN")}}
    else:
        body = {"error": {"message": message, "type": "fake_error", "code": str(status)}}
    return web.json_response(body, status=status, headers=headers)


def _retry_headers(config: FakeLLMConfig, seconds: float) -> dict[str, str]:
    headers = {"Retry-After": str(max(1, math.ceil(seconds)))}
    if config.retry_after_ms is not None:
        headers["retry-after-ms"] = str(config.retry_after_ms)
    return headers


def _success(call: _Call, text: str | None, finish: str, **extra: Any) -> web.Response:
    if call.route == "gemini":
        gemini_finish = {"stop": "STOP", "length": "MAX_TOKENS"}.get(finish, finish)
        return web.json_response(_gemini_body(call, text, gemini_finish, **extra))
    return web.json_response(_openai_body(call, text, finish, **extra))


async def _faulted(call: _Call, fault: str, config: FakeLLMConfig) -> web.Response:
    reply = f"Reply to: {call.user_text[:60]}"
    if fault.isdigit():
        status = int(fault)
        if status in (401, 403):
            # Real providers echo (part of) the key: callers must scrub it.
            return _error(call, status, f"Incorrect API key provided: {call.api_key}")
        if status == 429:
            return _error(call, 429, "Rate limit reached (fault)",
                          _retry_headers(config, config.retry_after))
        headers = _retry_headers(config, 1) if status >= 500 and config.retry_after_ms else None
        return _error(call, status, f"fake fault {status}", headers)
    if fault == "timeout":
        await asyncio.sleep(config.timeout_seconds)
        return _success(call, reply, "stop")
    if fault == "empty":
        return _success(call, "", "stop")
    if fault == "length":
        return _success(call, reply[: max(1, len(reply) // 2)], "length")
    if fault == "malformed":
        return web.Response(text='{"choices": [', content_type="application/json")
    if fault == "content_filter":
        if call.route == "gemini":
            return _success(call, None, "SAFETY")
        return _success(call, None, "content_filter")
    if fault == "safety":
        if call.route == "gemini":
            return _success(call, None, "SAFETY", blocked=True)
        return _success(call, None, "stop", refusal="I can't help with that.")
    return _error(call, 400, f"unknown fault {fault!r}")


async def _serve(state: FakeState, call: _Call) -> web.Response:
    config = state.config
    wait, headers = state.rate_limit(call)
    if wait is not None:
        return _error(call, 429, "Rate limit reached for requests",
                      {**_retry_headers(config, wait), **headers})
    fault = state.fault_for(call)
    state.prefixes.ttl_s = config.cache_ttl
    call = dataclasses.replace(call, cached=state.prefixes.cached_tokens(
        f"{call.route}/{call.model}", call.text))
    state.cache_keys[call.cache_key] += 1
    state.cached_tokens[call.route] += call.cached
    delay = config.latency_sample()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault:
        response = await _faulted(call, fault, config)
    else:
        response = _success(call, f"Reply to: {call.user_text[:60]}", "stop")
    response.headers.update(headers)
    return response


async def _handle(request: web.Request, route: str) -> web.Response:
    state = request.app[STATE]
    state.received[route] += 1
    if state.config.record_arrivals:
        state.arrivals.append(time.time())
    state.in_flight += 1
    state.in_flight_peak = max(state.in_flight_peak, state.in_flight)
    status = "cancelled"  # the client hung up (e.g. its timeout) before we answered
    call: _Call | None = None
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            status = "400"
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        call = _gemini_call(body, request) if route == "gemini" else \
            _openai_call(route, body, request)
        response = await _serve(state, call)
        status = str(response.status)
        return response
    finally:
        state.in_flight -= 1
        state.statuses.setdefault(route, Counter())[status] += 1
        state.record(call, status)


async def openai_chat(request: web.Request) -> web.Response:
    return await _handle(request, "openai")


async def groq_chat(request: web.Request) -> web.Response:
    return await _handle(request, "groq")


async def gemini_generate(request: web.Request) -> web.Response:
    return await _handle(request, "gemini")


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    changes = await request.json()
    fields = {f.name for f in dataclasses.fields(FakeLLMConfig)}
    unknown = set(changes) - fields
    if unknown:
        return web.json_response({"error": f"unknown settings {sorted(unknown)}"}, status=400)
    if changes.get("rate_scope", "account") not in SCOPES:
        return web.json_response({"error": f"rate_scope must be one of {list(SCOPES)}, not "
                                           f"{changes['rate_scope']!r}"}, status=400)
    state.config = dataclasses.replace(state.config, **changes)
    return web.json_response(dataclasses.asdict(state.config))


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"ok": True})
