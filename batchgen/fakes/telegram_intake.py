"""The fake Telegram's update side (getMe, getUpdates, setWebhook, deleteWebhook, getChat) and
the control endpoints that make people write in chats; docs/design.md, "The fake Telegram's
updates", lists them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from typing import Protocol

import aiohttp
from aiohttp import web

__all__ = ["IntakeState", "add_routes"]

_TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{3,}$")


class IntakeState:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.usernames: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.updates: dict[str, list[dict]] = defaultdict(list)
        self.next_update_id: dict[str, int] = defaultdict(lambda: 1)
        self.webhooks: dict[str, tuple[str, str]] = {}
        self.chats: dict[int, dict] = {}
        self.arrived = asyncio.Event()

    def bot_id(self, token: str) -> int | None:
        match = _TOKEN.match(token)
        return int(match.group(1)) if match and token not in self.revoked else None

    def me(self, token: str) -> dict:
        bot_id = self.bot_id(token)
        username = self.usernames.get(token) or f"bot{bot_id}_bot"
        return {"id": bot_id, "is_bot": True, "first_name": username, "username": username}


INTAKE = web.AppKey("fake_telegram_intake", IntakeState)
class Sent(Protocol):
    """The fake Telegram's sent messages (telegram_server's state, which imports this)."""

    next_message_id: int
    messages: list[dict]


SENT = web.AppKey("fake_telegram_sent", Sent)


def _reply(body: dict, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _update_text(update: dict) -> str:
    """One update as Telegram writes it. A ``raw_text`` update goes out verbatim after its
    update_id: JSON no parser here could read back (nested 5,000 deep, a 5,000-digit
    number), as a real Telegram could relay."""
    if "raw_text" not in update:
        return json.dumps(update)
    rest = update["raw_text"].strip()[1:].strip()
    return f'{{"update_id": {update["update_id"]}{", " if rest != "}" else ""}{rest}'


def _error(status: int, description: str) -> web.Response:
    return _reply({"ok": False, "error_code": status, "description": description}, status)


async def _params(request: web.Request) -> dict:
    params = dict(request.query)
    if request.can_read_body:
        body = await request.json() if request.content_type == "application/json" else \
            dict(await request.post())
        params.update(body if isinstance(body, dict) else {})
    return params


def _authorised(request: web.Request) -> tuple[IntakeState, str] | web.Response:
    state, token = request.app[INTAKE], request.match_info["token"]
    if state.bot_id(token) is None:
        return _error(401, "Unauthorized")
    return state, token


async def get_me(request: web.Request) -> web.Response:
    checked = _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    state, token = checked
    return _reply({"ok": True, "result": state.me(token)})


async def get_updates(request: web.Request) -> web.Response:
    checked = _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    state, token = checked
    if token in state.webhooks:
        return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                           "use deleteWebhook to delete the webhook first")
    params = await _params(request)
    offset, timeout = int(params.get("offset") or 0), float(params.get("timeout") or 0)
    limit = int(params.get("limit") or 100)
    deadline = time.monotonic() + min(timeout, 50)
    while True:
        # Asking with an offset confirms every earlier update: Telegram forgets them.
        state.updates[token] = [u for u in state.updates[token] if u["update_id"] >= offset]
        if state.updates[token] or time.monotonic() >= deadline:
            result = ", ".join(map(_update_text, state.updates[token][:limit]))
            return web.Response(text=f'{{"ok": true, "result": [{result}]}}',
                                content_type="application/json")
        state.arrived.clear()
        try:
            await asyncio.wait_for(state.arrived.wait(), deadline - time.monotonic())
        except TimeoutError:
            pass


async def set_webhook(request: web.Request) -> web.Response:
    checked = _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    state, token = checked
    params = await _params(request)
    url = str(params.get("url") or "")
    if url:
        state.webhooks[token] = (url, str(params.get("secret_token") or ""))
    else:
        state.webhooks.pop(token, None)
    return _reply({"ok": True, "result": True, "description": "Webhook was set"})


async def delete_webhook(request: web.Request) -> web.Response:
    checked = _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    state, token = checked
    state.webhooks.pop(token, None)
    return _reply({"ok": True, "result": True})


async def get_chat(request: web.Request) -> web.Response:
    checked = _authorised(request)
    if isinstance(checked, web.Response):
        return checked
    state, _ = checked
    chat = state.chats.get(int((await _params(request)).get("chat_id") or 0))
    if chat is None:
        return _error(400, "Bad Request: chat not found")
    return _reply({"ok": True, "result": chat})


def _chat(state: IntakeState, body: dict) -> dict:
    chat_id = int(body["chat_id"])
    chat = state.chats.setdefault(chat_id, {
        "id": chat_id, "type": body.get("chat_type") or ("group" if chat_id < 0 else "private"),
        "title": body.get("chat_title") or f"Chat {chat_id}"})
    return dict(chat)


async def _deliver(state: IntakeState, token: str, payload: dict) -> dict:
    update = {"update_id": state.next_update_id[token], **payload}
    state.next_update_id[token] += 1
    hook = state.webhooks.get(token)
    if hook is None:
        state.updates[token].append(update)
        state.arrived.set()
        return {"update_id": update["update_id"], "via": "getUpdates"}
    url, secret = hook
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=_update_text(update).encode(),
                                headers={"X-Telegram-Bot-Api-Secret-Token": secret,
                                         "Content-Type": "application/json"}) as answer:
            return {"update_id": update["update_id"], "via": "webhook", "status": answer.status}


async def inject(request: web.Request) -> web.Response:
    """A person writes in a chat: every listed bot token gets the update."""
    state, body = request.app[INTAKE], await request.json()
    sent = request.app[SENT]
    message_id = sent.next_message_id
    sent.next_message_id += 1
    message = {"message_id": message_id, "date": int(time.time()), "chat": _chat(state, body),
               "from": body.get("from") or {"id": 777, "is_bot": False, "first_name": "Alice"},
               "text": body.get("text", "")}
    replied = next((m for m in sent.messages
                    if m["message_id"] == body.get("reply_to_message_id")), None)
    if replied is not None:
        message["reply_to_message"] = {"message_id": replied["message_id"],
                                       "from": state.me(replied["token"]),
                                       "text": replied["text"]}
    payload = body["raw"] if isinstance(body.get("raw"), dict) else {"message": message}
    if isinstance(body.get("raw_text"), str):
        payload = {"raw_text": body["raw_text"]}
    delivered = {token: await _deliver(state, token, payload) for token in body["tokens"]}
    return _reply({"ok": True, "message_id": message_id, "delivered": delivered})


async def member(request: web.Request) -> web.Response:
    """The bot with ``token`` was added to, removed from or blocked in a chat."""
    state, body = request.app[INTAKE], await request.json()
    token = body["token"]
    change = {"chat": _chat(state, body), "date": int(time.time()),
              "from": {"id": 777, "is_bot": False, "first_name": "Alice"},
              "old_chat_member": {"status": "left", "user": state.me(token)},
              "new_chat_member": {"status": body.get("status", "member"),
                                  "user": state.me(token)}}
    delivered = await _deliver(state, token, {"my_chat_member": change})
    return _reply({"ok": True, "delivered": delivered})


async def bots(request: web.Request) -> web.Response:
    state, body = request.app[INTAKE], await request.json()
    if body.get("revoke"):
        state.revoked.add(body["revoke"])
    if body.get("token"):
        state.usernames[body["token"]] = str(body.get("username") or "")
    return _reply({"ok": True})


def add_routes(app: web.Application, sent: Sent) -> None:
    """Add the intake endpoints; ``sent`` is the fake's sendMessage state, which ``/_inject``
    takes its message ids from."""
    app[INTAKE] = IntakeState()
    app[SENT] = sent
    for method, handler in (("getMe", get_me), ("getUpdates", get_updates),
                            ("setWebhook", set_webhook), ("deleteWebhook", delete_webhook),
                            ("getChat", get_chat)):
        app.router.add_route("*", f"/bot{{token}}/{method}", handler)
    app.router.add_post("/_inject", inject)
    app.router.add_post("/_member", member)
    app.router.add_post("/_bots", bots)
