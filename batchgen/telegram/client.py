"""Sending replies to Telegram: splitting a reply into messages, the per-process pacing
Redis falls back to, and ``TelegramSender``, which sends through ``batchgen.telegram.bot_api``
at most once (Telegram has no idempotency key, so a request that may have arrived is
``send_unknown``, never resent; only one that never left is retried). Plain dataclasses in and
out, no ORM; may import the rest of the telegram package, state and core.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice

import httpx
from django.conf import settings

from batchgen.telegram.bot_api import NOT_SENT, REFUSED_LOCALLY, BotApi, Reply, describe
from batchgen.telegram.pacing import SharedPacer

__all__ = ["ChatPacer", "FittedMessage", "SendResult", "TelegramSender", "fit_message",
           "max_retry_after_s", "split_message"]

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 4096
_PARAGRAPH_GAP = re.compile(r"(\n[ \t]*\n\s*)")
_LINE_GAP = re.compile(r"(\n\s*)")
_SENTENCE_GAP = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]\u00bb]*(\s+)")
_WORD_GAP = re.compile(r"(\s+)")
# Where a cut reply may end: after a sentence's closing punctuation, or at a line break.
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]\u00bb]*(?=\s|$)|(?=\n)")

# --- splitting ----------------------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` UTF-16 code units (Telegram's measure)."""
    if _utf16_len(text[:limit]) == limit:
        return limit  # no characters outside the BMP in the window
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut_point(text: str, end: int) -> tuple[int, int]:
    """(end of this part, start of the next) at the best boundary in ``text[:end]``."""
    window = text[:end]
    for gap in (_PARAGRAPH_GAP, _LINE_GAP, _SENTENCE_GAP, _WORD_GAP):
        last = None
        for match in gap.finditer(window):
            last = match
        # A boundary in the first half would leave a short part: try a finer one instead.
        if last is not None and last.start(1) >= end // 2:
            return last.start(1), last.end(1)
    return end, end


def _spans(text: str, limit: int) -> Iterator[tuple[int, int]]:
    """(start, end) in ``text`` of each part ``split_message`` makes, in order."""
    start, stop = len(text) - len(text.lstrip()), len(text.rstrip())
    while start < stop:
        rest = text[start:stop]
        if _utf16_len(rest) <= limit:
            yield start, stop
            return
        cut, resume = _cut_point(rest, _fitting_prefix(rest, limit))
        yield start, start + len(rest[:cut].rstrip())
        start += resume + len(rest[resume:]) - len(rest[resume:].lstrip())


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, stripped, in order.

    Cuts at the last paragraph break that fits, else a line break, a sentence end, a space,
    else anywhere. Empty or whitespace-only text gives ``[]``.
    """
    return [text[start:end] for start, end in _spans(text, limit)]


@dataclass(frozen=True)
class FittedMessage:
    """A reply made to fit in ``max_parts`` messages: ``text`` is what goes out (store it),
    ``parts`` its split, ``cut_chars`` how many characters of the reply were left out."""

    text: str
    parts: list[str]
    cut_chars: int = 0


def fit_message(text: str, max_parts: int | None = None) -> FittedMessage:
    """``text`` as at most ``max_parts`` messages (default ``TELEGRAM_MAX_PARTS``, 4).

    A longer reply ends at the last sentence end or line break of the last part that fits;
    without one, at its last space followed by an ellipsis; an unbroken string anywhere.
    """
    max_parts = max_parts or settings.TELEGRAM_MAX_PARTS
    whole = text.strip()
    spans = list(islice(_spans(whole, MESSAGE_LIMIT), max_parts + 1))
    if len(spans) <= max_parts:
        return FittedMessage(whole, [whole[start:end] for start, end in spans])
    start, end = spans[max_parts - 1]
    kept, ellipsis = _last_part_cut(whole[start:end])
    kept = whole[:start] + kept
    return FittedMessage(kept + ellipsis, split_message(kept + ellipsis), len(whole) - len(kept))


def _last_part_cut(part: str) -> tuple[str, str]:
    """What the last part keeps, and the ellipsis to add when it stops mid-sentence."""
    ends = [match.end() for match in _SENTENCE_END.finditer(part)]
    if ends:
        return part[:ends[-1]].rstrip(), ""
    words = [match.start() for match in _WORD_GAP.finditer(part)]
    # The ellipsis takes the place of the space before the dropped word, so the part fits.
    return (part[:words[-1]].rstrip(), "\u2026") if words else (part, "")


# --- pacing -------------------------------------------------------------------


class ChatPacer:
    """Blocks before each send so it stays under Telegram's limits; thread-safe.

    Per bot, as Telegram counts: about one message a second in a chat, ``group_per_minute``
    in a group chat (chat_id < 0), ``global_per_second`` in all (each bot token has its own
    limits, so fifty bots in one batch do not share them). This is the per-process pacing that
    ``batchgen.telegram.pacing.SharedPacer``
    falls back to while Redis is away; with Redis every worker
    on every machine books one shared budget there. No lock is held while sleeping.
    """

    def __init__(
        self,
        per_chat_interval: float = 1.0,
        group_per_minute: int | None = 20,
        global_per_second: int | None = 30,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.global_per_second = global_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_send: dict[tuple[str, int], float] = {}
        self._group_sends: dict[tuple[str, int], deque[float]] = {}
        self._recent_sends: dict[str, deque[float]] = {}

    def wait(self, chat_id: int, bot: str = "") -> float:
        """Wait until ``bot`` may message ``chat_id``, count it as sent; return seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(chat_id, bot, now)
                if delay <= 0:
                    self._record(chat_id, bot, now)
                    return waited
            # Another thread may take the slot meanwhile: loop and check again.
            self._sleep(delay)
            waited += delay

    def _delay(self, chat_id: int, bot: str, now: float) -> float:
        delays = [self._last_send.get((bot, chat_id), -math.inf) + self.per_chat_interval - now]
        group = self._group_sends.get((bot, chat_id))
        if self.group_per_minute and group is not None:
            while group and group[0] <= now - 60.0:
                group.popleft()
            if len(group) >= self.group_per_minute:
                delays.append(group[0] + 60.0 - now)
        recent = self._recent_sends.setdefault(bot, deque())
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if self.global_per_second and len(recent) >= self.global_per_second:
            delays.append(recent[0] + 1.0 - now)
        return max(delays)

    def _record(self, chat_id: int, bot: str, now: float) -> None:
        if len(self._last_send) > 10_000:  # forget idle chats so the maps stay small
            idle = [chat for chat, last in self._last_send.items() if last < now - 60.0]
            for chat in idle:
                self._last_send.pop(chat, None)
                self._group_sends.pop(chat, None)
        self._last_send[(bot, chat_id)] = now
        if chat_id < 0:
            self._group_sends.setdefault((bot, chat_id), deque()).append(now)
        self._recent_sends[bot].append(now)


# Shared by every worker through Redis; this process's own ChatPacer while Redis is away.
_process_pacer = SharedPacer.like(ChatPacer())


def book_slots(sends: list[tuple[str, int]]) -> list[float] | None:
    """Book each (token, chat id)'s next posting slot in the shared budgets, in one round
    trip: the wall-clock time of each slot, or None while Redis is away."""
    waits = _process_pacer.book_many([(chat_id, _bot_id(token)) for token, chat_id in sends])
    now = time.time()
    return None if waits is None else [now + wait for wait in waits]


# --- sending ------------------------------------------------------------------


@dataclass(frozen=True)
class SendResult:
    """The outcome of one ``send``.

    ``status``: ``sent`` (every part), ``failed`` (Telegram refused a part, or it could not be
    sent at all) or ``send_unknown`` (a part may have been delivered: do not resend it).
    ``message_ids``: the parts accepted by this call. ``parts_sent``: how many parts are now
    delivered counting from part 0, so ``start_part=parts_sent`` continues. ``retryable``: the
    failed part certainly did not reach Telegram and trying later may help (429, refused).
    ``cut_chars``: characters left out of a reply too long for ``TELEGRAM_MAX_PARTS`` messages.
    ``retry_after_s``: a 429's flood wait exactly as Telegram asked, however long: the caller
    defers the message until then. A wait beyond ``max_retry_after_s()`` comes back with
    ``retryable=False`` and an error saying so, for the caller to end the message dead.
    ``migrate_to_chat_id``: the group became this supergroup; nothing was delivered, so
    resending there is safe. ``chat_gone``: the bot was blocked or removed, or the chat no
    longer exists: stop sending to it.
    """

    status: str
    message_ids: list[int] = field(default_factory=list)
    parts_sent: int = 0
    error: str = ""
    retryable: bool = False
    parts_total: int = 0
    cut_chars: int = 0
    retry_after_s: float | None = None
    migrate_to_chat_id: int | None = None
    chat_gone: bool = False


@dataclass(frozen=True)
class _PartOutcome:
    status: str
    message_id: int | None = None
    error: str = ""
    retryable: bool = False
    wait: float | None = None  # a 429's retry_after
    migrate_to_chat_id: int | None = None
    chat_gone: bool = False


def max_retry_after_s() -> float:
    """The longest flood wait a message is deferred for: ``BATCH_MAX_DEFER_SECONDS``, the one
    ceiling for every wait a server asks for (default a day), read when used."""
    return settings.BATCH_MAX_DEFER_SECONDS


class TelegramSender:
    """Sends plain-text messages, paced; one pooled, thread-safe ``BotApi`` per sender."""

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float | None = None,
        pacer: ChatPacer | None = None,
        max_429_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        *,
        max_connect_retries: int = 3,
        connect_backoff: float = 0.5,
        max_retry_after: float = 60.0,
    ) -> None:
        self._base_url = (base_url or settings.TELEGRAM_API_BASE_URL).rstrip("/")
        self._pacer = pacer or _process_pacer
        self._sleep = sleep
        self.max_429_retries = max_429_retries
        self.max_connect_retries = max_connect_retries
        self.connect_backoff = connect_backoff
        self.max_retry_after = max_retry_after  # a longer flood wait is left to the caller
        self._api = BotApi(self._base_url, timeout)

    def __repr__(self) -> str:
        return f"<TelegramSender {self._base_url}>"

    def __enter__(self) -> TelegramSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()

    def book(self, token: str, chat_id: int) -> float | None:
        """Book the bot's next slot in ``chat_id`` in the shared pacing budgets: seconds until
        it, or None when nothing was booked (Redis away, or a per-process pacer): the send
        then paces itself."""
        book = getattr(self._pacer, "book", None)
        return None if book is None else book(chat_id, _bot_id(token))

    def push_back(self, token: str, chat_id: int, seconds: float) -> None:
        """This bot's send in ``chat_id`` went ``seconds`` after its booked slot: its next
        slots there move back as far (a per-process pacer has nothing to move)."""
        self.push_back_many([(token, chat_id, seconds)])

    def push_back_many(self, pushes: list[tuple[str, int, float]]) -> None:
        """``push_back`` for each (token, chat id, seconds), in one round trip."""
        push_back_many = getattr(self._pacer, "push_back_many", None)
        if push_back_many is not None and pushes:
            push_back_many([(chat_id, _bot_id(token), seconds)
                            for token, chat_id, seconds in pushes])

    def send(
        self,
        token: str,
        chat_id: int,
        text: str,
        *,
        on_part_sent: Callable[[int, int], None] | None = None,
        start_part: int = 0,
        paced: bool = False,
    ) -> SendResult:
        """Send ``text`` (split if long) from parts ``start_part`` on; stop at the first failure.
        ``paced``: the caller booked the slot of the first request (``book``) and waited for it.

        ``on_part_sent(part_index, message_id)`` runs after each accepted part so the caller
        can persist progress before the next part goes. Text longer than ``TELEGRAM_MAX_PARTS``
        messages is cut as ``fit_message`` does; store ``fit_message(text).text`` beforehand
        to keep what was sent.
        """
        fitted = fit_message(text)
        parts = fitted.parts
        if not parts:
            return SendResult("failed", error="message text is empty")
        sent_ids: list[int] = []
        for index in range(start_part, len(parts)):
            outcome = self._send_part(token, chat_id, parts[index],
                                      paced=paced and index == start_part)
            if outcome.message_id is None:
                return SendResult(
                    outcome.status, sent_ids, index, outcome.error, outcome.retryable,
                    len(parts), cut_chars=fitted.cut_chars, retry_after_s=outcome.wait,
                    migrate_to_chat_id=outcome.migrate_to_chat_id, chat_gone=outcome.chat_gone)
            sent_ids.append(outcome.message_id)
            if on_part_sent is not None:
                on_part_sent(index, outcome.message_id)
        return SendResult("sent", sent_ids, len(parts), "", False, len(parts),
                          cut_chars=fitted.cut_chars)

    def _send_part(self, token: str, chat_id: int, text: str,
                   paced: bool = False) -> _PartOutcome:
        rate_limited = 0
        while True:
            outcome = self._post(token, chat_id, text, paced=paced and not rate_limited)
            if outcome.wait is None:
                return outcome
            rate_limited += 1
            if outcome.wait > max_retry_after_s():
                return replace(outcome, retryable=False, error=(
                    f"{outcome.error} (asked to wait {outcome.wait:g}s, beyond "
                    f"BATCH_MAX_DEFER_SECONDS={max_retry_after_s():g})"))
            if rate_limited > self.max_429_retries or outcome.wait > self.max_retry_after:
                return outcome  # the caller defers the message by outcome.wait
            logger.info("telegram 429 for chat %s: waiting %ss", chat_id, outcome.wait)
            self._sleep(outcome.wait)

    def _post(self, token: str, chat_id: int, text: str, paced: bool = False) -> _PartOutcome:
        """One request, retried only while it certainly never left this machine. ``paced``:
        the first try's slot is booked already."""
        payload = {"chat_id": chat_id, "text": text,
                   "link_preview_options": {"is_disabled": True}}
        for attempt in range(self.max_connect_retries + 1):
            if not (paced and attempt == 0):
                self._pacer.wait(chat_id, _bot_id(token))
            try:
                return self._interpret(self._api.post(token, "sendMessage", payload))
            except NOT_SENT as exc:
                error = describe(exc, token)
                if attempt < self.max_connect_retries:
                    logger.info("telegram unreachable (%s); retrying", error)
                    self._sleep(self.connect_backoff * 2**attempt)
            except REFUSED_LOCALLY as exc:
                return _PartOutcome("failed", error=describe(exc, token))
            except httpx.TransportError as exc:
                # ReadTimeout, WriteTimeout, RemoteProtocolError, ReadError...: the request may
                # have been delivered, and Telegram has no idempotency key: never resend.
                logger.warning("telegram send to chat %s is ambiguous: %s", chat_id,
                               describe(exc, token))
                return _PartOutcome("send_unknown", error=describe(exc, token))
        attempts = self.max_connect_retries + 1
        return _PartOutcome("failed", error=f"{error} (after {attempts} attempts)",
                            retryable=True)

    def _interpret(self, reply: Reply) -> _PartOutcome:
        if reply.status == 200 and reply.ok:
            try:
                result = (reply.body or {})["result"]
                return _PartOutcome("sent", message_id=int(result["message_id"]))
            except (KeyError, TypeError, ValueError):
                return _PartOutcome("send_unknown", error="200 with a malformed body")
        if reply.status == 429:
            return _PartOutcome("failed", error=reply.description, retryable=True,
                                wait=reply.retry_after())
        if reply.status >= 500 or reply.status == 200:
            # A gateway error may hide a delivered message: at most once means unknown.
            return _PartOutcome("send_unknown", error=reply.description)
        return _PartOutcome("failed", error=reply.description,
                            migrate_to_chat_id=reply.migrate_to_chat_id(),
                            chat_gone=reply.chat_gone())


def _bot_id(token: str) -> str:
    # The bot id (before the colon) is public; the rest of the token is not.
    return token.split(":", 1)[0]
