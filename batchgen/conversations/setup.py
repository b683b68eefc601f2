"""Checking a bot's token when it is saved, and pointing Telegram's webhook at us."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.urls import reverse

from batchgen.models import Bot
from batchgen.models.secrets import webhook_digest
from batchgen.telegram.bot_api import BotApi, BotApiError


@dataclass(frozen=True)
class Identity:
    telegram_id: int
    username: str


def check_token(token: str, api: BotApi | None = None) -> Identity:
    """Who the token belongs to, from getMe; BotApiError (token redacted) when refused."""
    with api or BotApi() as client:
        me = client.get_me(token)
    if not me.get("is_bot", True):
        raise BotApiError("getMe: this token does not belong to a bot", permanent=True)
    return Identity(int(me["id"]), str(me.get("username") or ""))


def webhook_url(bot: Bot, base_url: str | None = None) -> str:
    base = (base_url or settings.INTAKE_WEBHOOK_BASE_URL).rstrip("/")
    return f"{base}{reverse('intake:webhook', args=[bot.id])}"


def enable_webhook(bot: Bot, base_url: str | None = None, api: BotApi | None = None) -> str:
    """A fresh secret for ``bot`` and setWebhook with it; returns the webhook URL. Only the
    secret's HMAC is kept: Telegram has the secret, the database cannot give it away."""
    secret = secrets.token_urlsafe(32)
    url = webhook_url(bot, base_url)
    with api or BotApi() as client:
        client.set_webhook(bot.telegram_token, url, secret)
    digest = webhook_digest(secret)
    Bot.objects.filter(id=bot.id).update(webhook_secret=digest)
    bot.webhook_secret = digest
    return url


def switch_delivery(bot: Bot, webhook: bool, api: BotApi | None = None) -> str:
    """Point ``bot``'s updates at our webhook, or back to getUpdates; says what it did."""
    if webhook:
        if not settings.INTAKE_WEBHOOK_BASE_URL:
            raise ValueError("INTAKE_WEBHOOK_BASE_URL is empty: set it to this site's public "
                             "https:// address, or keep using telegram_poll")
        return f"updates now arrive at {enable_webhook(bot, api=api)}"
    with api or BotApi() as client:
        client.delete_webhook(bot.telegram_token)
    Bot.objects.filter(id=bot.id).update(webhook_secret="")
    return "webhook removed; telegram_poll fetches the updates"
