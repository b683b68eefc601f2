"""Dead work grouped by cause (reason kind, provider, chat), and the selections an
operator requeues from the dashboard. A fixed number of queries, whatever the rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Case, Count, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.urls import reverse

from batchgen.models import BATCH_ROUTE_PROVIDERS, Generation, QueueItem

DEAD = QueueItem.Status.DEAD
# Kinds read from the reason an item died with, before the generator's own error kind.
REASON_KINDS = (("telegram", "telegram:"), ("crash", "crashed the worker"),
                ("waited_too_long", "asked to wait"), ("not_saved", "could not save"),
                ("bot_or_chat_gone", " was deleted"), ("bot_inactive", " is inactive"))
# The generator's own kinds (batchgen.llm.errors), then "other" for anything unnamed.
GENERATION_KINDS = ("rate_limited", "server_error", "timeout", "connection", "auth",
                    "bad_request", "not_found", "empty", "truncated", "content_filter",
                    "safety_block", "malformed", "circuit_open", "rate_limit_wait", "config")
CAUSES = (*(kind for kind, _ in REASON_KINDS), *GENERATION_KINDS, "other")
NO_CHAT = "none"
MAX_GROUPS = 30


def with_cause(items: QuerySet[QueueItem]) -> QuerySet[QueueItem]:
    """Annotate ``cause`` (a short kind) and ``cause_provider`` (the provider of its last
    generation, "" when none ran)."""
    last = Generation.objects.filter(queue_item=OuterRef("pk")).order_by("-id")
    return items.annotate(
        last_kind=Subquery(last.filter(ok=False).values("error_kind")[:1]),
        cause_provider=Coalesce(Subquery(last.values("provider")[:1]), Value("")),
    ).annotate(cause=Case(
        *(When(last_error__contains=marker, then=Value(kind)) for kind, marker in REASON_KINDS),
        When(last_kind__gt="", then=F("last_kind")),
        default=Value("other")))


@dataclass(frozen=True)
class FailureGroup:
    cause: str
    provider: str
    chat_id: int | None
    chat: str
    count: int

    @property
    def params(self) -> dict[str, str]:
        return {"cause": self.cause, "provider": self.provider,
                "chat": str(self.chat_id) if self.chat_id else NO_CHAT}

    @property
    def list_url(self) -> str:
        """The queue's admin list, filtered to exactly this group."""
        query: dict[str, Any] = {"status__exact": DEAD, "cause": self.cause,
                                 "cause_provider": self.provider}
        chat = {"chat__id__exact": self.chat_id} if self.chat_id else {"chat__isnull": "True"}
        query.update(chat)
        return f"{reverse('admin:batchgen_queueitem_changelist')}?{urlencode(query)}"


def failures_by_cause() -> tuple[list[FailureGroup], int]:
    """The largest groups of dead items, and how many dead items there are in all."""
    rows = (with_cause(QueueItem.objects.filter(status=DEAD)).order_by()
            # "cause" and "cause_provider" are with_cause's annotations, which the stubs cannot see.
            .values("cause", "cause_provider", "chat_id", "chat__title",  # type: ignore[misc]
                    "chat__telegram_chat_id")
            .annotate(n=Count("id")).order_by("-n", "cause", "chat_id"))[:MAX_GROUPS]
    groups = [FailureGroup(cause=r["cause"], provider=r["cause_provider"], chat_id=r["chat_id"],
                           chat=r["chat__title"] or str(r["chat__telegram_chat_id"] or "(deleted)"),
                           count=r["n"]) for r in rows]
    return groups, QueueItem.objects.filter(status=DEAD).count()


class SelectionError(ValueError):
    """A requeue selection the dashboard refuses; the message names the field and rule."""


def select_dead(params: Any) -> QuerySet[QueueItem]:
    """The dead items a dashboard form selects: every one, or a group (``cause``,
    ``provider``, ``chat``: an id or "none"), or ``ids`` (comma-separated)."""
    items = QueueItem.objects.filter(status=DEAD)
    if ids := params.get("ids", "").strip():
        try:
            return items.filter(id__in=[int(part) for part in ids.split(",")])
        except ValueError:
            raise SelectionError(
                f"ids must be item numbers separated by commas, got {ids!r}") from None
    provider = params.get("provider", "")
    if provider and provider not in BATCH_ROUTE_PROVIDERS:
        raise SelectionError(f"provider must be one of {', '.join(BATCH_ROUTE_PROVIDERS)} "
                             f"or empty, got {provider!r}")
    chat = params.get("chat", "")
    if chat and chat != NO_CHAT and not chat.isdigit():
        raise SelectionError(f"chat must be a chat's number or {NO_CHAT!r}, got {chat!r}")
    if not ("cause" in params or provider or chat):
        return items
    items = with_cause(items).filter(  # type: ignore[misc]  # with_cause's annotations
        cause=params.get("cause", ""), cause_provider=provider)
    if chat:
        items = items.filter(Q(chat__isnull=True) if chat == NO_CHAT else Q(chat_id=int(chat)))
    return items
