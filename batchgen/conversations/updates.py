"""One handler for every Telegram update, by webhook or by getUpdates, in two steps:
``accept(bot_id, update)`` keeps the raw update in one INSERT deduplicated on (bot,
update_id), so the webhook answers at once; ``process_pending()`` (tick, and the poller)
handles the pending updates in bulk, a chunk per transaction, and records each one's outcome
word. An update it cannot use is skipped with a logged reason; one bad update never stops the
loop (docs/design.md, "Receiving updates").
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.utils import timezone

from batchgen.conversations import chats
from batchgen.core.json_input import shape_problem, storable_json
from batchgen.core.text import storable
from batchgen.models import Bot, Chat
from batchgen.models.conversations import ChatMessage, ProcessedUpdate

log = logging.getLogger(__name__)

ACCEPTED, STORED, DUPLICATE, MALFORMED, FAILED = (
    "accepted", "stored", "duplicate", "malformed", "failed")
_BIGINT = 2**63  # update_id is a BIGINT column: a larger one cannot be kept
# Telegram's updates nest about 8 levels (a reply's message, its entities); past this one an
# update is not from Telegram, and a deep one costs every walk over it (see core.json_input).
MAX_UPDATE_DEPTH = 64
_DEADLOCK_TRIES = 3
_GATHER_FROM, _GATHER_S = 5, 0.1
# Update kinds that are not new text in a chat: seen, then skipped on purpose.
_SKIPPED_KINDS = ("edited_message", "edited_channel_post", "channel_post", "message_reaction",
                  "callback_query", "inline_query", "chat_member", "chat_join_request")


class Malformed(ValueError):
    """The update lacks a field the handler needs, or has one of the wrong type."""


def webhook_secret(bot_id: int) -> str | None:
    """The HMAC of the active bot's webhook secret ("" when it has none); None when there is
    no such bot. A plain statement: on the webhook's path building the ORM query cost more CPU than
    running it (0.35 ms against 0.06 ms)."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('webhook_secret')} FROM {quote(Bot._meta.db_table)} "
                       f"WHERE {quote('id')} = %s AND {quote('is_active')}", [bot_id])
        row = cursor.fetchone()
    return None if row is None else row[0]


def accept(bot_id: int, update: Any) -> str:
    """Keep ``update`` for the processor: accepted, duplicate (a redelivery), malformed (no
    integer update_id to deduplicate on, so nothing is kept; or nested past the limit, kept
    without its payload), or failed (the database refused it even cleaned: kept, without its
    payload, with the reason). Strings are made storable first: NUL and lone surrogates,
    which PostgreSQL refuses, are replaced, and the row's note says how many."""
    update_id = update.get("update_id") if isinstance(update, dict) else None
    if type(update_id) is not int or not -_BIGINT <= update_id < _BIGINT:
        log.warning("bot %s: malformed update skipped: update_id must be a 64-bit integer",
                    bot_id)
        return MALFORMED
    if problem := shape_problem(update, MAX_UPDATE_DEPTH):
        return refuse(bot_id, update_id, problem)
    update, replaced = storable_json(update)
    note = (f"{replaced} strings had NUL, control characters or lone surrogates, replaced "
            "by U+FFFD") if replaced else ""
    if replaced:
        log.warning("bot %s: update %s: %s", bot_id, update_id, note)
    try:
        with _savepoint():
            inserted = _insert(bot_id, update_id, update, "", note)
    except OperationalError:
        raise  # the database is away: not the update's fault, the caller retries
    except DatabaseError as exc:
        # Still refused: kept as failed with the reason, so the webhook answers 200 (any
        # other answer makes Telegram redeliver it and hold back the bot's next updates)
        # and the poller moves past it.
        reason = storable(f"not storable: {type(exc).__name__}: {exc}".splitlines()[0])[:200]
        log.warning("bot %s: update %s kept as failed: %s", bot_id, update_id, reason)
        return FAILED if _insert(bot_id, update_id, None, FAILED, reason) else DUPLICATE
    return ACCEPTED if inserted else DUPLICATE


def refuse(bot_id: int, update_id: int | None, problem: str) -> str:
    """Skip an update that cannot be used (nested past the limit, or unreadable): malformed.
    With a 64-bit update_id it is kept without its payload, so a redelivery is a duplicate;
    without one nothing can be kept."""
    if update_id is None or not -_BIGINT <= update_id < _BIGINT:
        log.warning("bot %s: malformed update skipped, no 64-bit update_id: %s", bot_id,
                    problem)
        return MALFORMED
    log.warning("bot %s: malformed update %s skipped: %s", bot_id, update_id, problem)
    return MALFORMED if _insert(bot_id, update_id, None, MALFORMED, problem) else DUPLICATE


def _savepoint() -> Any:
    # Inside a transaction (a test, a caller's atomic block) a refused INSERT would abort it
    # and the failed row could not be written: a savepoint keeps it usable. Outside one, the
    # statement runs alone and costs no extra round trip.
    return transaction.atomic() if connection.in_atomic_block else nullcontext()


def _insert(bot_id: int, update_id: int, update: dict | None, outcome: str,
            note: str) -> bool:
    """One statement, no transaction around it; False when (bot, update_id) is already
    there. Raw SQL because ``bulk_create(ignore_conflicts=True)`` cannot say which, and a
    redelivery's answer says "duplicate". Pending when ``outcome`` is empty."""
    meta, quote = ProcessedUpdate._meta, connection.ops.quote_name
    columns = ("bot_id", "update_id", "outcome", "received_at", "pending", "payload", "note")
    sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(map(quote, columns))}) "
           f"VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT ({quote('bot_id')}, "
           f"{quote('update_id')}) DO NOTHING RETURNING {quote('id')}")
    params = [bot_id, update_id, outcome,
              connection.ops.adapt_datetimefield_value(timezone.now()), not outcome,
              meta.get_field("payload").get_db_prep_save(update, connection), note]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def process_pending(limit: int = 5000, chunk: int = 200, seconds: float = 5.0) -> Counter:
    """Process up to ``limit`` pending updates, lowest (bot, update_id) first, ``chunk`` per
    transaction, starting no chunk after ``seconds`` (so tick's producer is not held back
    by a steady stream; the next call goes on); returns outcome counts. Several processors
    may run at once (tick loops on several machines): each claims its chunk with SKIP
    LOCKED, so none processes an update another one holds, and a processed update is no
    longer pending."""
    outcomes: Counter = Counter()
    # While updates keep arriving the chunks are small; the chats they name are looked up
    # once per call, not once per chunk. A chat row is never re-keyed under a cached id
    # but by a migration, which Telegram follows with updates under the new id.
    chats_seen: dict[tuple, Chat] = {}
    until = time.monotonic() + seconds
    while (left := limit - outcomes.total()) > 0:
        done = _process_chunk(min(chunk, left), chats_seen)
        if not done:
            break
        outcomes.update(done)
        if time.monotonic() >= until:
            break
        if _GATHER_FROM <= done.total() < min(chunk, left) / 2:
            # A stream, and caught up with it: a chunk costs about as much for ten updates
            # as for two hundred, so let the next one fill a little.
            time.sleep(_GATHER_S)
    return outcomes


def _claim(size: int) -> list[ProcessedUpdate]:
    return list(ProcessedUpdate.objects.select_for_update(skip_locked=True)
                .filter(pending=True).order_by("bot_id", "update_id")
                .only("id", "bot_id", "update_id", "payload")[:size])


def _process_chunk(size: int, chats_seen: dict[tuple, Chat]) -> Counter:
    for attempt in range(1, _DEADLOCK_TRIES + 1):
        try:
            with transaction.atomic():
                rows = _claim(size)
                return _process(rows, chats_seen) if rows else Counter()
        except OperationalError as exc:
            chats_seen.clear()  # it may hold rows the rollback undid
            # Two processors creating the same new chats in another order can deadlock:
            # PostgreSQL cancels one, its chunk rolls back and is claimed again.
            if attempt == _DEADLOCK_TRIES:
                raise
            log.warning("processing a chunk of updates failed (%s), trying again", exc)
        except Exception:
            chats_seen.clear()
            # One update breaks something the handler does not expect (a bug, a value the
            # database refuses): redo the chunk one update at a time so only that one fails.
            log.exception("processing a chunk of updates failed; one at a time now")
            return _one_at_a_time(size)
    return Counter()


def _one_at_a_time(size: int) -> Counter:
    outcomes: Counter = Counter()
    for _ in range(size):
        with transaction.atomic():
            rows = _claim(1)
            if not rows:
                break
            outcomes.update(_process_or_fail(rows[0]))
    return outcomes


def _process_or_fail(row: ProcessedUpdate) -> Counter:
    try:
        with transaction.atomic():  # a savepoint: a failure undoes this update's writes
            return _process([row], {})
    except OperationalError:
        raise  # the database is away: the update stays pending
    except Exception:
        log.exception("bot %s: update %s failed in the handler, skipped", row.bot_id,
                      row.update_id)
    _mark({FAILED: [row.id]})
    return Counter({FAILED: 1})


@dataclass
class _Chunk:
    """What the updates of one chunk share: chats looked up once (and by the chunks after
    it in the same call), messages inserted once."""

    chats: dict[tuple, Chat]
    messages: list[ChatMessage] = field(default_factory=list)

    def discover(self, rows: list[ProcessedUpdate], bots: dict[int, Bot]) -> None:
        """Look up (or create) the chats and memberships of the chunk's messages first, in
        one order: two processors that both create some of them then wait for each other
        in that order, never in a cycle (a deadlock PostgreSQL would break by cancelling)."""
        wanted: set[tuple[int, str, str, int]] = set()
        for row in rows:
            try:
                message = _field(_pending(row), "message", dict)
                if not _skipped(message):
                    wanted.add((*_chat_fields(message), row.bot_id))
            except Malformed:
                continue  # the handler logs it
        for chat_id, title, chat_type, bot_id in sorted(wanted):
            self.chat(chat_id, title, chat_type, heard_by=bots[bot_id])

    def chat(self, telegram_chat_id: int, title: str, chat_type: str, heard_by: Bot) -> Chat:
        key = (telegram_chat_id, title, chat_type, heard_by.id)
        if key not in self.chats:
            self.chats[key] = chats.discovered(telegram_chat_id, title, chat_type, heard_by)
        return self.chats[key]

    def flush(self) -> None:
        # The same group message arrives once per member bot: stored once. Sorted, so that
        # two processors inserting the same messages take their locks in the same order.
        self.messages.sort(key=lambda m: (m.chat_id, m.telegram_message_id))
        ChatMessage.objects.bulk_create(self.messages, ignore_conflicts=True)


def _process(rows: list[ProcessedUpdate], chats_seen: dict[tuple, Chat]) -> Counter:
    bots = Bot.objects.only("id").in_bulk({row.bot_id for row in rows})
    chunk = _Chunk(chats_seen)
    chunk.discover(rows, bots)
    done: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        done[_outcome(bots[row.bot_id], row, chunk)].append(row.id)
    chunk.flush()
    _mark(done)
    return Counter({outcome: len(ids) for outcome, ids in done.items()})


def _outcome(bot: Bot, row: ProcessedUpdate, chunk: _Chunk) -> str:
    # Malformed is raised before the update writes anything, so no savepoint is needed.
    try:
        outcome = _dispatch(bot, _pending(row), chunk)[:64]
    except Malformed as exc:
        log.warning("bot %s: malformed update %s skipped: %s", bot.id, row.update_id, exc)
        return MALFORMED
    if outcome != STORED:
        log.info("bot %s: update %s %s", bot.id, row.update_id, outcome)
    return outcome


def _mark(done: dict[str, list[int]]) -> None:
    """Record outcomes. The raw payload goes once handled: what it said is stored in the chat
    history, and the row stays as the dedup key (at ~1 KB an update, a busy platform's
    payloads would grow without bound). A failed or malformed update keeps its payload for an
    operator to look at."""
    now = timezone.now()
    for outcome, ids in done.items():
        kept = {} if outcome in (FAILED, MALFORMED) else {"payload": None}
        ProcessedUpdate.objects.filter(id__in=ids).update(outcome=outcome, pending=False,
                                                          processed_at=now, **kept)


def _dispatch(bot: Bot, update: dict, chunk: _Chunk) -> str:
    if "message" in update:
        return _message(bot, _field(update, "message", dict), chunk)
    if "my_chat_member" in update:
        return _membership(bot, _field(update, "my_chat_member", dict))
    kind = next((k for k in _SKIPPED_KINDS if k in update), None)
    return f"skipped:{kind or 'unknown kind'}"


def _field(data: dict, name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise Malformed(f"{name} must be {getattr(kind, '__name__', kind)}")
    if kind is int and not -_BIGINT <= cast(int, value) < _BIGINT:  # ids are BIGINT columns
        raise Malformed(f"{name} must fit in 64 bits")
    return value


def _chat_fields(data: dict) -> tuple[int, str, str]:
    chat = _field(data, "chat", dict)
    title = chat.get("title") or " ".join(
        str(chat.get(k) or "") for k in ("first_name", "last_name")).strip()
    return _field(chat, "id", int), storable(str(title))[:200], str(chat.get("type") or "")


def _membership(bot: Bot, change: dict) -> str:
    # Every field is read before the first write: a Malformed leaves nothing behind.
    status = _field(_field(change, "new_chat_member", dict), "status", str)
    chat = chats.discovered(*_chat_fields(change))
    if status in ("member", "administrator", "creator"):
        chats.joined(bot, chat)
        return STORED
    if status in ("left", "kicked"):
        chat.bot_left(bot, "removed from the chat" if status == "left" else "kicked or blocked")
        return STORED
    return f"skipped:status {status}"


def _skipped(message: dict) -> str:
    """Why ``message`` is not stored, or "" when it is; Malformed when it cannot say."""
    _field(message, "message_id", int)
    sender = _sender(message)
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        return "skipped:not text"
    if len(text) > settings.INTAKE_MAX_MESSAGE_CHARS:
        return f"skipped:text over {settings.INTAKE_MAX_MESSAGE_CHARS} characters"
    if sender.get("is_bot") and Bot.objects.filter(telegram_id=sender.get("id")).exists():
        return "skipped:own bot"  # the platform's sends are already in the history
    _chat_fields(message)
    return ""


def _sender(message: dict) -> dict:
    sender = message.get("from")
    return sender if isinstance(sender, dict) else {}


def _pending(row: ProcessedUpdate) -> dict:
    """A pending update's payload: only a handled one has dropped it."""
    return cast(dict, row.payload)


def _message(bot: Bot, message: dict, chunk: _Chunk) -> str:
    if skipped := _skipped(message):
        return skipped
    sender, text = _sender(message), message["text"]
    chat = chunk.chat(*_chat_fields(message), heard_by=bot)
    chunk.messages.append(ChatMessage(
        chat=chat, telegram_message_id=message["message_id"], speaker=_speaker(sender),
        from_human=not sender.get("is_bot", False), addressed_bot=_addressed(message, text),
        text=storable(text), sent_at=_when(message.get("date"))))
    return STORED


def _speaker(sender: dict) -> str:
    name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
    return storable(name or str(sender.get("username") or "someone"))[:200]


# A later date raises in fromtimestamp (OSError, OverflowError or ValueError by platform).
_LAST_DATE = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())


def _when(date: Any) -> datetime:
    """The message's date, or the time it was heard when that is no date."""
    if isinstance(date, int) and not isinstance(date, bool) and 0 < date <= _LAST_DATE:
        return datetime.fromtimestamp(date, tz=UTC)
    return timezone.now()


def _addressed(message: dict, text: str) -> Bot | None:
    """The platform bot this message mentions by @username, or replies to."""
    replied = message.get("reply_to_message")
    if isinstance(replied, dict) and isinstance(replied.get("from"), dict):
        bot = Bot.objects.filter(telegram_id=replied["from"].get("id")).first()
        if bot is not None:
            return bot
    names = [word[1:].rstrip(".,!?:;").lower() for word in text.split() if word.startswith("@")]
    if not names:
        return None
    return Bot.objects.filter(username__iregex=r"^(" + "|".join(
        _escape(n) for n in names[:5]) + r")$").first()


def _escape(name: str) -> str:
    # Telegram usernames are [A-Za-z0-9_]; anything else cannot match a bot anyway.
    return "".join(c for c in name if c.isalnum() or c == "_") or "_"
