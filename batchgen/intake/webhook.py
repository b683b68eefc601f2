"""Telegram's webhook: POST /telegram/webhook/<bot id>/ with the bot's secret header."""

from __future__ import annotations

import hmac
import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from batchgen.intake import updates
from batchgen.models import Bot

log = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = Bot.objects.filter(id=bot_id, is_active=True).only("id", "webhook_secret").first()
    if bot is None:
        log.warning("webhook: update for unknown or inactive bot %s refused", bot_id)
        return JsonResponse({"ok": False, "error": "unknown bot"}, status=404)
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not bot.webhook_secret or not hmac.compare_digest(given, bot.webhook_secret):
        log.warning("webhook: bot %s: wrong or missing secret token, refused", bot_id)
        return JsonResponse({"ok": False, "error": "wrong secret token"}, status=403)
    try:
        update = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        update = None
    # 200 even when skipped: any other answer makes Telegram redeliver the same bad update.
    return JsonResponse({"ok": True, "outcome": updates.handle(bot, update)})
