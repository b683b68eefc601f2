"""The one HTTP client of the Bot API: base URL, timeouts, the pooled httpx client, token
redaction and reading Telegram's answers, used by sending (``batchgen.telegram.client``) and by
the calls intake makes (getMe, getUpdates, setWebhook, getChat). Plain httpx and dicts, no ORM;
may import core. The token is part of every URL, so every error string and the ``httpx``
logger's lines are scrubbed of it here.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from batchgen.core.bot_tokens import token_problem
from batchgen.core.json_input import JsonRefused, parse, top_level

__all__ = ["NOT_SENT", "REFUSED_LOCALLY", "BotApi", "BotApiError", "Reply", "Unreadable",
           "describe", "redact"]

_TOKEN_IN_URL = re.compile(r"/bot[^/\s]+/")
# Failures that happen before any byte of the request leaves: safe to retry.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Refused locally, before sending, and retrying cannot help.
REFUSED_LOCALLY = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError,
                   httpx.InvalidURL)
# Any other transport error (ReadTimeout, WriteTimeout, RemoteProtocolError, ReadError...) may
# come after Telegram got the request.
# 400 descriptions that mean the chat itself is gone; every 403 from sendMessage means the
# bot may no longer write there (blocked, kicked, not a member, user deactivated).
_CHAT_GONE_400 = ("chat not found", "chat was deactivated", "peer_id_invalid",
                  "user is deactivated")
# A getUpdates answer holds up to 100 updates of up to a few tens of KB: past this it is not
# Telegram.
MAX_REPLY_BYTES = 64 << 20


def redact(text: str, token: str = "") -> str:
    """``text`` without ``token`` and without any token in a Bot API URL."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_IN_URL.sub("/bot***/", text)


def describe(exc: Exception, token: str) -> str:
    """A transport error as one line, token scrubbed."""
    return f"{type(exc).__name__}: {redact(str(exc), token)}"


class _RedactBotTokens(logging.Filter):
    """httpx logs every request URL at INFO; the URL holds the bot token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/bot" in message:
            record.msg, record.args = redact(message), None
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactBotTokens) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactBotTokens())


class BotApiError(Exception):
    """A call failed. ``permanent``: Telegram refused it (wrong token, bad request), so
    retrying cannot help; otherwise the network or Telegram had a problem."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Reply:
    """Telegram's answer to one request, read once: ``body`` is None when it is not a JSON
    object, ``description`` Telegram's (or ``HTTP <status>``) with the token scrubbed."""

    status: int
    body: dict[str, Any] | None
    description: str
    retry_after_header: str | None = None
    content: bytes = field(default=b"", repr=False)

    @classmethod
    def read(cls, response: httpx.Response, token: str) -> Reply:
        try:
            # Bounded: nesting past the parser's stack, a 5,000-digit number or NaN is
            # refused here, never a RecursionError or a value no database keeps.
            body = parse(response.content, max_bytes=MAX_REPLY_BYTES, max_depth=None)
        except JsonRefused:
            body = None
        if not isinstance(body, dict):
            body = None
        description = str((body or {}).get("description") or f"HTTP {response.status_code}")
        return cls(response.status_code, body, redact(description, token),
                   response.headers.get("Retry-After"), response.content)

    @property
    def ok(self) -> bool:
        return bool(self.body and self.body.get("ok"))

    @property
    def parameters(self) -> dict[str, Any]:
        parameters = (self.body or {}).get("parameters")
        return parameters if isinstance(parameters, dict) else {}

    def retry_after(self) -> float:
        """A 429's wait: ``parameters.retry_after``, else the header, else 1 s."""
        for value in (self.parameters.get("retry_after"), self.retry_after_header):
            if value is None:
                continue
            try:
                wait = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(wait):
                return max(0.0, wait)
        return 1.0

    def chat_gone(self) -> bool:
        """A send's refusal that means the bot may no longer write in the chat."""
        return self.status == 403 or (self.status == 400 and any(
            reason in self.description.lower() for reason in _CHAT_GONE_400))

    def migrate_to_chat_id(self) -> int | None:
        """The supergroup a group became (a 400 that names it), else None."""
        try:
            return int(self.parameters["migrate_to_chat_id"])
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Unreadable:
    """An update of a getUpdates answer that no parser reads (nested 5,000 deep, a
    5,000-digit number): its update_id when that much can be read, and why."""

    update_id: int | None
    reason: str


def _value(text: str) -> Any:
    return parse(text, max_bytes=MAX_REPLY_BYTES, max_depth=None)


def _update_id(text: str) -> int | None:
    """The update_id of an update the parser refused, read from its top level alone."""
    try:
        members = top_level(text)
        for key, value in zip(members[::2], members[1::2], strict=False):
            if _value(key) == "update_id":
                update_id = _value(value)
                return update_id if type(update_id) is int else None
    except JsonRefused:
        pass
    return None


def _updates_one_by_one(reply: Reply) -> list[Any]:
    """A getUpdates answer the parser refused as a whole, read one update at a time: each
    one it cannot read becomes ``Unreadable``, so the poller records it and moves past it
    instead of failing the whole batch (and fetching it again, for ever)."""
    try:
        members = top_level(reply.content.decode())
        fields = {_value(key): value
                  for key, value in zip(members[::2], members[1::2], strict=False)}
        if fields.get("ok") != "true" or "result" not in fields:
            raise JsonRefused("no ok result")
        items = top_level(fields["result"])
    except (JsonRefused, UnicodeDecodeError, TypeError):  # TypeError: a key that is a list
        raise BotApiError(f"getUpdates: HTTP {reply.status} without a JSON body",
                          permanent=reply.status < 500) from None
    updates: list[Any] = []
    for text in items:
        try:
            updates.append(_value(text))
        except JsonRefused as exc:
            updates.append(Unreadable(_update_id(text), str(exc)))
    return updates


class BotApi:
    """One pooled, thread-safe client; one instance may serve every bot."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        self._base_url = (base_url or settings.TELEGRAM_API_BASE_URL).rstrip("/")
        self._timeout = timeout or settings.TELEGRAM_TIMEOUT
        self._client = httpx.Client(
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )

    def __repr__(self) -> str:
        return f"<BotApi {self._base_url}>"

    def __enter__(self) -> BotApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def post(self, token: str, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Reply:
        """One request, never retried. ``timeout``: how long Telegram may hold it (a long
        poll) on top of the client's. httpx's errors are raised as they are: pass them to
        ``describe`` before showing them, since they may hold the token."""
        response = self._client.post(f"{self._base_url}/bot{token}/{method}",
                                     json=params or {}, timeout=(timeout or 0) + self._timeout)
        return Reply.read(response, token)

    def call(self, token: str, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """``method``'s ``result``, or BotApiError with Telegram's description."""
        return self._result(method, self._ask(token, method, params, timeout))

    def _ask(self, token: str, method: str, params: dict[str, Any] | None,
             timeout: float | None) -> Reply:
        if problem := token_problem(token):  # it goes into the URL: refused before any request
            raise BotApiError(f"{method}: the bot token {problem}", permanent=True)
        try:
            return self.post(token, method, params, timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise BotApiError(f"{method}: {describe(exc, token)}") from None

    @staticmethod
    def _result(method: str, reply: Reply) -> Any:
        if reply.body is None:
            raise BotApiError(f"{method}: HTTP {reply.status} without a JSON body",
                              permanent=reply.status < 500)
        if reply.ok:
            return reply.body.get("result")
        raise BotApiError(f"{method}: {reply.description}",
                          permanent=400 <= reply.status < 500 and reply.status != 429)

    def get_me(self, token: str) -> dict:
        result = self.call(token, "getMe")
        if not isinstance(result, dict) or "id" not in result:
            raise BotApiError("getMe: the answer has no bot id", permanent=True)
        return result

    def get_updates(self, token: str, offset: int, timeout: float = 0,
                    limit: int = 100) -> list[Any]:
        """The updates after ``offset``: each a parsed value, or ``Unreadable`` for one no
        parser reads (the others still arrive)."""
        reply = self._ask(token, "getUpdates",
                          {"offset": offset, "timeout": int(timeout), "limit": limit,
                           "allowed_updates": ["message", "my_chat_member"]}, timeout)
        if reply.body is None and reply.status == 200:
            return _updates_one_by_one(reply)
        result = self._result("getUpdates", reply)
        return result if isinstance(result, list) else []

    def set_webhook(self, token: str, url: str, secret_token: str) -> None:
        self.call(token, "setWebhook", {"url": url, "secret_token": secret_token,
                                        "allowed_updates": ["message", "my_chat_member"]})

    def delete_webhook(self, token: str) -> None:
        self.call(token, "deleteWebhook")

    def get_chat(self, token: str, chat_id: int) -> dict:
        result = self.call(token, "getChat", {"chat_id": chat_id})
        return result if isinstance(result, dict) else {}
