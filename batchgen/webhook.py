"""Telegram's webhook: POST /telegram/webhook/<bot id>/ with the bot's secret header.

It checks the secret, keeps the raw update and answers at once (Telegram waits for the
answer before it sends that bot's next update); tick processes what it kept."""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from batchgen.conversations import updates
from batchgen.models.secrets import webhook_secret_matches
from batchgen.work import queue

log = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, bot_id: int) -> HttpResponse:
    digest = updates.webhook_secret(bot_id)
    if digest is None:
        log.warning("webhook: update for unknown or inactive bot %s refused", bot_id)
        return JsonResponse({"ok": False, "error": "unknown bot"}, status=404)
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not webhook_secret_matches(given, digest):
        log.warning("webhook: bot %s: wrong or missing secret token, refused", bot_id)
        return JsonResponse({"ok": False, "error": "wrong secret token"}, status=403)
    try:
        update = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        update = None
    outcome = updates.accept(bot_id, update)  # kept for tick's processor, not handled here
    if outcome == updates.ACCEPTED:
        queue.nudge()  # so tick processes it now, not at its next interval
    # 200 even when skipped: any other answer makes Telegram redeliver the same bad update.
    return JsonResponse({"ok": True, "outcome": outcome})


app_name = "intake"
urlpatterns = [path("webhook/<int:bot_id>/", webhook, name="webhook")]
