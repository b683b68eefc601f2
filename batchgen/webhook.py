"""Telegram's webhook: POST /telegram/webhook/<bot id>/ with the bot's secret header. It checks
the secret, keeps the raw update and answers at once (Telegram waits for the answer before it
sends that bot's next update); tick processes what it kept.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from batchgen.conversations import updates
from batchgen.core.json_input import JsonRefused, parse
from batchgen.models.secrets import webhook_secret_matches
from batchgen.work import queue

log = logging.getLogger(__name__)

# Telegram's largest update (4,096 characters of text, entities, a quoted reply) is a few tens
# of KB; a body past this is not Telegram.
MAX_UPDATE_BYTES = 1 << 20
# Bot ids are 64-bit: a larger one from the URL is no bot (SQLite raised OverflowError binding
# it, a 500; PostgreSQL answered 404).
MAX_BOT_ID = 2**63 - 1


def _body(request: HttpRequest) -> bytes:
    """The body, or JsonRefused when it is larger than the limit (read no further)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_UPDATE_BYTES:
        raise JsonRefused(f"longer than {MAX_UPDATE_BYTES:,} bytes")
    return request.read(MAX_UPDATE_BYTES + 1)


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, bot_id: int) -> HttpResponse:
    digest = updates.webhook_secret(bot_id) if bot_id <= MAX_BOT_ID else None
    if digest is None:
        log.warning("webhook: update for unknown or inactive bot %s refused", bot_id)
        return JsonResponse({"ok": False, "error": "unknown bot"}, status=404)
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not webhook_secret_matches(given, digest):
        log.warning("webhook: bot %s: wrong or missing secret token, refused", bot_id)
        return JsonResponse({"ok": False, "error": "wrong secret token"}, status=403)
    try:
        # The depth limit is accept's (the poller's updates need it too); parse refuses what
        # its parser cannot follow, a body past the size limit and numbers no database keeps.
        update = parse(_body(request), max_bytes=MAX_UPDATE_BYTES, max_depth=None)
    except JsonRefused as exc:
        log.warning("webhook: bot %s: malformed update skipped: %s", bot_id, exc)
        outcome = updates.MALFORMED
    else:
        outcome = updates.accept(bot_id, update)  # kept for tick's processor, not handled here
    if outcome == updates.ACCEPTED:
        queue.nudge()  # so tick processes it now, not at its next interval
    # 200 even when skipped: any other answer makes Telegram redeliver the same bad update.
    return JsonResponse({"ok": True, "outcome": outcome})


app_name = "intake"
urlpatterns = [path("webhook/<int:bot_id>/", webhook, name="webhook")]
