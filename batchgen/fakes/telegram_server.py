"""A fake Telegram Bot API (aiohttp, in memory) for tests and the demo: ``sendMessage`` with
faults on demand (429, migrate, drop...), the intake methods of ``telegram_intake`` and control
routes; docs/design.md, "The fake Telegram", lists them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from batchgen.fakes import telegram_intake

__all__ = ["FakeTelegram", "make_app"]

MESSAGE_LIMIT = 4096
_ERRORS = {
    "400": (400, "Bad Request: chat not found"),
    "401": (401, "Unauthorized"),
    "403": (403, "Forbidden: bot was blocked by the user"),
    "429": (429, "Too Many Requests: retry after {retry_after}"),
    "500": (500, "Internal Server Error"),
    "migrate": (400, "Bad Request: group chat was upgraded to a supergroup chat"),
}
FAULT_KINDS = (*_ERRORS, "drop", "latency")


@dataclass
class Fault:
    kind: str
    remaining: int = 1
    chat_id: int | None = None
    retry_after: int = 1
    latency: float = 0.0
    description: str = ""
    migrate_to_chat_id: int | None = None

    def matches(self, chat_id: int | None) -> bool:
        return self.remaining > 0 and self.chat_id in (None, chat_id)


class FakeTelegram:
    """The fake's state. One event loop serves every request, so no locks are needed."""

    def __init__(self, latency: float = 0.0, chat_limit_per_second: int | None = None) -> None:
        self.initial = (latency, chat_limit_per_second)
        self.reset()

    def reset(self) -> None:
        self.latency, self.chat_limit_per_second = self.initial
        self.messages: list[dict] = []
        self.faults: list[Fault] = []
        self.requests = 0
        self.responses: Counter[str] = Counter()
        self.per_chat_second: Counter[tuple[int, int]] = Counter()
        self.next_message_id = 1

    def take_fault(self, chat_id: int | None) -> Fault | None:
        for fault in self.faults:
            if fault.matches(chat_id):
                fault.remaining -= 1
                self.faults = [f for f in self.faults if f.remaining > 0]
                return fault
        return None

    def over_chat_limit(self, chat_id: int, now: float) -> bool:
        limit = self.chat_limit_per_second
        if not limit:
            return False
        return self.per_chat_second[(chat_id, int(now))] >= limit

    def accept(self, token: str, params: dict, now: float) -> dict:
        chat_id, text = int(params["chat_id"]), str(params["text"])
        others = {key: value for key, value in params.items() if key not in ("chat_id", "text")}
        message = {"token": token, "chat_id": chat_id, "text": text, "time": now,
                   "message_id": self.next_message_id, "params": others}
        self.next_message_id += 1
        self.messages.append(message)
        self.per_chat_second[(chat_id, int(now))] += 1
        return message

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "messages": len(self.messages),
            "responses": dict(self.responses),
            "max_per_chat_per_second": max(self.per_chat_second.values(), default=0),
            "latency": self.latency,
            "chat_limit_per_second": self.chat_limit_per_second,
            "faults": [asdict(fault) for fault in self.faults],
        }


STATE = web.AppKey("fake_telegram", FakeTelegram)


def _reply(state: FakeTelegram, status: int, body: dict) -> web.Response:
    state.responses[str(status)] += 1
    return web.json_response(body, status=status)


def _error(state: FakeTelegram, status: int, description: str, **extra: object) -> web.Response:
    body = {"ok": False, "error_code": status, "description": description, **extra}
    return _reply(state, status, body)


async def _params(request: web.Request) -> dict:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        else:
            params.update(await request.post())
    return params


def _chat_id(value: Any) -> int | None:  # a JSON value or a form field
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _fault_response(state: FakeTelegram, fault: Fault, chat_id: int | None) -> web.Response | None:
    if fault.kind not in _ERRORS:
        return None
    status, description = _ERRORS[fault.kind]
    description = fault.description or description.format(retry_after=fault.retry_after)
    if status == 429:
        return _error(state, 429, description, parameters={"retry_after": fault.retry_after})
    if fault.kind == "migrate":
        new_id = fault.migrate_to_chat_id or int(f"-100{abs(chat_id or 0)}")
        return _error(state, status, description, parameters={"migrate_to_chat_id": new_id})
    return _error(state, status, description)


async def send_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    params = await _params(request)
    chat_id, text = _chat_id(params.get("chat_id")), str(params.get("text") or "")
    fault = state.take_fault(chat_id)
    latency = fault.latency if fault and fault.latency else state.latency
    if latency:
        await asyncio.sleep(latency)
    if fault and (response := _fault_response(state, fault, chat_id)):
        return response
    if chat_id is None:
        return _error(state, 400, "Bad Request: chat_id is empty")
    if not text.strip():
        return _error(state, 400, "Bad Request: message text is empty")
    if len(text.encode("utf-16-le")) // 2 > MESSAGE_LIMIT:
        return _error(state, 400, "Bad Request: message is too long")
    now = time.time()
    if state.over_chat_limit(chat_id, now):
        return _error(state, 429, "Too Many Requests: retry after 1",
                      parameters={"retry_after": 1})
    message = state.accept(request.match_info["token"], params, now)
    if fault and fault.kind == "drop":
        return _drop(state, request)
    result = {"message_id": message["message_id"], "date": int(now),
              "chat": {"id": chat_id, "type": "group" if chat_id < 0 else "private"},
              "text": text}
    return _reply(state, 200, {"ok": True, "result": result})


def _drop(state: FakeTelegram, request: web.Request) -> web.Response:
    """Close the connection without a response, after the message was recorded."""
    state.responses["dropped"] += 1
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=200)  # never reaches the client: the socket is gone


async def list_messages(request: web.Request) -> web.Response:
    messages = request.app[STATE].messages
    chat_id = _chat_id(request.query.get("chat_id"))
    if chat_id is not None:
        messages = [m for m in messages if m["chat_id"] == chat_id]
    return web.json_response(messages)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    request.app[telegram_intake.INTAKE].reset()
    return web.json_response({"ok": True})


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    kind = str(body.get("fault", ""))
    if kind and kind not in FAULT_KINDS:
        return web.json_response({"ok": False, "error": f"fault must be one of {FAULT_KINDS}"},
                                 status=400)
    if body.get("clear_faults"):
        state.faults = []
    if kind:
        state.faults.append(Fault(
            kind=kind, remaining=int(body.get("count", 1)), chat_id=_chat_id(body.get("chat_id")),
            retry_after=int(body.get("retry_after", 1)), latency=float(body.get("latency", 0)),
            description=str(body.get("description", "")),
            migrate_to_chat_id=_chat_id(body.get("migrate_to_chat_id"))))
    else:
        if "latency" in body:
            state.latency = float(body["latency"])
        if "chat_limit_per_second" in body:
            state.chat_limit_per_second = body["chat_limit_per_second"]
    return web.json_response({"ok": True, **state.stats()})


def make_app(latency: float = 0.0, chat_limit_per_second: int | None = None) -> web.Application:
    """The fake as an aiohttp app; ``app[STATE]`` is its FakeTelegram state."""
    app = web.Application()
    app[STATE] = FakeTelegram(latency, chat_limit_per_second)
    app.router.add_route("*", "/bot{token}/sendMessage", send_message)
    telegram_intake.add_routes(app, app[STATE])
    app.router.add_get("/_messages", list_messages)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/_control", control)
    return app
