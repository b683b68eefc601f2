"""What the dashboard shows an operator to act on, and what its buttons do: the queue as it
stands, paused bots, chats and providers, the effective batch setting and the live progress
of running runs. A fixed number of queries, whatever the rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.urls import reverse

from batchgen.core import pricing
from batchgen.core.text import field_with_nul
from batchgen.delivery import live_settings
from batchgen.llm import config as llm_config
from batchgen.models import BatchRun, Bot, Chat, Generation, Message, QueueItem, Setting
from batchgen.work import operator, queue

Status = QueueItem.Status
WAITING = (Status.PENDING, Status.CLAIMED, Status.BATCHED)
PAUSE_KINDS = ("bot", "chat", "provider")


def queue_now() -> dict[str, int]:
    """What waits: pending (claimable now or after a back-off), paused, claimed and batched;
    done and dead are not waiting and are not counted here."""
    counts = dict(QueueItem.objects.filter(status__in=WAITING).values_list("status")
                  .annotate(n=Count("id")))
    paused = queue.paused_items().count()
    return {"pending": counts.get(Status.PENDING, 0) - paused, "paused": paused,
            "claimed": counts.get(Status.CLAIMED, 0), "batched": counts.get(Status.BATCHED, 0)}


def dead_count() -> int:
    return QueueItem.objects.filter(status=Status.DEAD).count()


@dataclass
class Effective:
    """The batch setting as a run applies it, and why it differs from what was typed."""

    batch_mode_enabled: bool
    batch_size: int
    in_flight: int
    reason: str


def effective_setting() -> Effective:
    current = Setting.load()
    mode, in_flight = live_settings.wanted(current)
    reason = ""
    if current.batch_mode_enabled and current.batch_size == 1:
        reason = "batch size 1: runs one at a time, as single mode"
    elif mode == BatchRun.Mode.BATCH:
        reason = live_settings.in_flight_reason(current.batch_size)
    return Effective(current.batch_mode_enabled, current.batch_size, in_flight, reason)


@dataclass
class Paused:
    bots: list[Bot]
    chats: list[Chat]
    providers: list[str]
    primary: str
    all_providers: tuple[str, ...] = operator.PROVIDERS

    @property
    def any(self) -> bool:
        return bool(self.bots or self.chats or self.providers)

    @property
    def primary_paused(self) -> bool:
        return self.primary in self.providers


def paused() -> Paused:
    return Paused(bots=list(Bot.objects.filter(paused_at__isnull=False)[:50]),
                  chats=list(Chat.objects.filter(paused_at__isnull=False)[:50]),
                  providers=Setting.load().paused_providers,
                  primary=llm_config.default_provider())


def back_to_dashboard(params: Any) -> str:
    """Where the dashboard's buttons return: the dashboard with its filters. Not the page the
    form came from, which after an auto-refresh is the bare /dashboard/live/ fragment."""
    query = params.urlencode()
    return reverse("dashboard:index") + (f"?{query}" if query else "")


def refused_field(params: Any) -> str:
    """Why a dashboard form cannot be acted on at all, naming the field ("" when it can): a
    NUL character, which PostgreSQL refuses in any text (a 500 once, not a named error)."""
    name = field_with_nul(params)
    return "" if name is None else f"{name.replace(chr(0), '?')}: must not contain a NUL character"


class ActionError(ValueError):
    """A dashboard action refused; the message names the field and the rule."""


def set_paused(params: Any, paused_now: bool) -> str:
    """Pause or resume what the form names: ``kind`` (bot, chat, provider) and ``target``
    (a bot's name, a chat's title or Telegram id, a provider's name)."""
    kind, target = params.get("kind", ""), params.get("target", "").strip()
    if kind not in PAUSE_KINDS:
        raise ActionError(f"kind must be one of {', '.join(PAUSE_KINDS)}, got {kind!r}")
    if not target:
        raise ActionError(f"target must name the {kind} to "
                          f"{'pause' if paused_now else 'resume'}")
    verb = "Paused" if paused_now else "Resumed"
    if kind == "provider":
        try:
            operator.set_provider_paused(target, paused_now)
        except ValueError as exc:
            raise ActionError(f"target: {exc}") from None
        return f"{verb} provider {target}."
    found = _targets(kind, target)
    if not found.exists():
        raise ActionError(f"target: no {kind} is named {target!r}")
    count = operator.pause(found) if paused_now else operator.resume(found)
    return f"{verb} {kind} {target}" + ("" if count else " (it already was)") + "."


def _targets(kind: str, target: str):
    if kind == "bot":
        return Bot.objects.filter(name=target)
    # A number is a Telegram chat id, never the row's id: a chat's pk can equal another
    # chat's Telegram id (private chats have small positive ids), and the wrong one paused.
    match = Q(title=target)
    if target.lstrip("-").isdigit():
        match |= Q(telegram_chat_id=int(target))
    return Chat.objects.filter(match)


@dataclass
class Progress:
    """A running run so far, from the Generation and Message rows it already saved."""

    generated: int = 0
    failed: int = 0
    sent: int = 0
    tokens: int = 0
    cost: Decimal | None = Decimal(0)
    models: set[str] = field(default_factory=set)


def live_progress(runs: list[BatchRun]) -> dict[int, Progress]:
    """Items done, tokens and cost so far of each running or queued run in ``runs`` (two
    queries); the finished ones carry their recorded figures instead."""
    ids = [run.pk for run in runs if run.status in (BatchRun.Status.RUNNING,
                                                     BatchRun.Status.QUEUED)]
    if not ids:
        return {}
    progress = {run_id: Progress() for run_id in ids}
    rows = (Generation.objects.filter(batch_run_id__in=ids)
            .values("batch_run_id", "model", "route").order_by()
            .annotate(n=Count("id"), ok=Count("id", filter=Q(ok=True)),
                      prompt=Sum("prompt_tokens"), cached=Sum("cached_tokens"),
                      completion=Sum("completion_tokens")))
    for row in rows:
        _add(progress[row["batch_run_id"]], dict(row))
    sent = (Message.objects.filter(batch_run_id__in=ids, status=Message.Status.SENT)
            .values("batch_run_id").order_by().annotate(n=Count("id")))
    for sent_row in sent:
        progress[sent_row["batch_run_id"]].sent = sent_row["n"]
    return progress


def _add(progress: Progress, row: dict[str, Any]) -> None:
    prompt, completion = (int(row[k] or 0) for k in ("prompt", "completion"))
    progress.generated += row["ok"]
    progress.failed += row["n"] - row["ok"]
    progress.tokens += prompt + completion
    cost = pricing.summed_cost(row)
    progress.cost = None if cost is None or progress.cost is None else progress.cost + cost


def attach_progress(runs: list[BatchRun]) -> list[BatchRun]:
    """Each running run in ``runs`` gets ``live``: its Progress (templates read it)."""
    found = live_progress(runs)
    for run in runs:
        run.live = found.get(run.pk)  # type: ignore[attr-defined]  # for the template
    return runs

