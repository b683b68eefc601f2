"""One search for the queue and the history: a chat (title or Telegram id), a bot, an item
id, or text in a prompt or a reply (and, for queue items, in the error they last met)."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from batchgen.models import BatchRun, Generation, QueueItem

MAX_TERM = 200


def _number(term: str) -> int | None:
    try:
        return int(term.removeprefix("#"))
    except ValueError:
        return None


def item_matches(term: str, prefix: str = "") -> Q:
    """Chat title or Telegram id, or bot name; the fields a queue item and a generation
    share (``prefix`` leads to them)."""
    term = term.strip()[:MAX_TERM]
    found = (Q(**{f"{prefix}chat__title__icontains": term})
             | Q(**{f"{prefix}bot__name__icontains": term}))
    number = _number(term)
    if number is not None:
        found |= Q(**{f"{prefix}chat__telegram_chat_id": number})
    return found


def items(queryset: QuerySet[QueueItem], term: str) -> QuerySet[QueueItem]:
    """Queue items matching ``term``: also by id, by their last error and by the text of
    their prompt or reply."""
    term = term.strip()[:MAX_TERM]
    if not term:
        return queryset
    found = item_matches(term) | Q(last_error__icontains=term) | Q(Exists(Generation.objects.filter(
        Q(prompt__icontains=term) | Q(text__icontains=term), queue_item=OuterRef("pk"))))
    number = _number(term)
    if number is not None:
        found |= Q(pk=number)
    return queryset.filter(found)


def runs(queryset: QuerySet[BatchRun], term: str) -> QuerySet[BatchRun]:
    """Batch runs with a generation matching ``term`` (chat, bot, item id, prompt, reply)."""
    term = term.strip()[:MAX_TERM]
    if not term:
        return queryset
    found = item_matches(term) | Q(prompt__icontains=term) | Q(text__icontains=term)
    number = _number(term)
    if number is not None:
        found |= Q(queue_item_id=number)
    return queryset.filter(Exists(Generation.objects.filter(found, batch_run=OuterRef("pk"))))
