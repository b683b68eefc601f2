"""The Bot API calls intake makes (getMe, getUpdates, setWebhook, getChat), plain httpx.

No ORM here: callers pass tokens and get plain dicts back. The token is part of every URL,
so every error message goes through ``batchgen.telegram.client``'s redaction.
"""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings

from batchgen.core.bot_tokens import token_problem
from batchgen.telegram.client import _redact

__all__ = ["BotApi", "BotApiError"]


class BotApiError(Exception):
    """A call failed. ``permanent``: Telegram refused it (wrong token, bad request), so
    retrying cannot help; otherwise the network or Telegram had a problem."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class BotApi:
    """One pooled, thread-safe client; one instance may serve every bot."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        self._base_url = (base_url or settings.TELEGRAM_API_BASE_URL).rstrip("/")
        self._timeout = timeout or settings.TELEGRAM_TIMEOUT
        self._client = httpx.Client(timeout=self._timeout)

    def __repr__(self) -> str:
        return f"<BotApi {self._base_url}>"

    def __enter__(self) -> BotApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def call(self, token: str, method: str, params: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """``method``'s ``result``, or BotApiError with Telegram's description."""
        if problem := token_problem(token):  # it goes into the URL: refused before any request
            raise BotApiError(f"{method}: the bot token {problem}", permanent=True)
        url = f"{self._base_url}/bot{token}/{method}"
        try:
            response = self._client.post(url, json=params or {},
                                         timeout=(timeout or 0) + self._timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise BotApiError(f"{method}: {type(exc).__name__}: {_redact(str(exc), token)}"
                              ) from None
        try:
            body = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
            body = None
        if not isinstance(body, dict):
            raise BotApiError(f"{method}: HTTP {response.status_code} without a JSON body",
                              permanent=response.status_code < 500)
        if body.get("ok"):
            return body.get("result")
        description = _redact(str(body.get("description") or f"HTTP {response.status_code}"),
                              token)
        raise BotApiError(f"{method}: {description}", permanent=400 <= response.status_code < 500
                          and response.status_code != 429)

    def get_me(self, token: str) -> dict:
        result = self.call(token, "getMe")
        if not isinstance(result, dict) or "id" not in result:
            raise BotApiError("getMe: the answer has no bot id", permanent=True)
        return result

    def get_updates(self, token: str, offset: int, timeout: float = 0,
                    limit: int = 100) -> list[dict]:
        result = self.call(token, "getUpdates",
                           {"offset": offset, "timeout": int(timeout), "limit": limit,
                            "allowed_updates": ["message", "my_chat_member"]},
                           timeout=timeout)
        return result if isinstance(result, list) else []

    def set_webhook(self, token: str, url: str, secret_token: str) -> None:
        self.call(token, "setWebhook", {"url": url, "secret_token": secret_token,
                                        "allowed_updates": ["message", "my_chat_member"]})

    def delete_webhook(self, token: str) -> None:
        self.call(token, "deleteWebhook")

    def get_chat(self, token: str, chat_id: int) -> dict:
        result = self.call(token, "getChat", {"chat_id": chat_id})
        return result if isinstance(result, dict) else {}
