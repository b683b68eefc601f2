"""getUpdates for every active bot without a webhook, in one process: a thread per bot
long-polls (one slow bot holds up no other), and the main thread keeps the raw updates as the
webhook does, moves each bot's offset only after they are kept (a crash repeats updates,
deduplicated, rather than losing them) and then processes what is pending, as tick does.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from batchgen.conversations import updates
from batchgen.models import Bot
from batchgen.telegram.bot_api import BotApi, BotApiError, Unreadable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fetched:
    bot_id: int
    token: str
    offset: int
    updates: list
    error: str = ""


def _fetch(api: BotApi, bot_id: int, token: str, offset: int, timeout: float) -> Fetched:
    try:
        return Fetched(bot_id, token, offset, api.get_updates(token, offset, timeout))
    except BotApiError as exc:
        return Fetched(bot_id, token, offset, [], str(exc))


def poll_once(timeout: float = 0, api: BotApi | None = None) -> Counter:
    """One getUpdates round for every active bot without a webhook, then the pending updates
    processed; outcome counts (duplicates and updates without an id counted as received)."""
    bots = list(Bot.objects.filter(is_active=True, webhook_secret="")
                .values_list("id", "telegram_token", "update_offset"))
    outcomes: Counter = Counter()
    if not bots:
        return outcomes
    client = api or BotApi()
    try:
        with ThreadPoolExecutor(max_workers=min(32, len(bots))) as pool:
            fetched = list(pool.map(lambda b: _fetch(client, b[0], b[1], b[2], timeout), bots))
    finally:
        if api is None:
            client.close()
    for result in fetched:
        outcomes.update(_store(result))
    if outcomes.pop(updates.ACCEPTED, 0):
        outcomes.update(updates.process_pending())
    return outcomes


def _store(result: Fetched) -> Counter:
    outcomes: Counter = Counter()
    if result.error:
        log.warning("getUpdates for bot %s failed: %s", result.bot_id, result.error)
        return Counter(fetch_failed=1)
    offset = result.offset
    for update in result.updates:
        try:
            if isinstance(update, Unreadable):  # recorded, so the offset moves past it
                outcome = updates.refuse(result.bot_id, update.update_id, update.reason)
            else:
                outcome = updates.accept(result.bot_id, update)
            outcomes[outcome] += 1
        except Exception:
            # Not the update's fault (the database went away...): keep the offset before it
            # so the next round fetches it again, and let the other bots carry on.
            log.exception("bot %s: storing an update failed; it will be fetched again",
                          result.bot_id)
            outcomes["store_failed"] += 1
            break
        update_id = (update.update_id if isinstance(update, Unreadable)
                     else update.get("update_id") if isinstance(update, dict) else None)
        if type(update_id) is int:
            offset = max(offset, update_id + 1)
    if offset != result.offset:
        Bot.objects.filter(id=result.bot_id).update(update_offset=offset)
    return outcomes
