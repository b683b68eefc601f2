"""One batch run on the dashboard: its items with their outcome, and links onward, in a fixed
number of queries whatever the run's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import NoReverseMatch, reverse

from batchgen.models import BatchRun, Bot, Generation, Message

EXCERPT_CHARS = 160


@dataclass
class DetailRow:
    generation: Generation
    message: Message | None
    prompt_excerpt: str
    reply: str
    error: str
    send_error: str

    @property
    def failed(self) -> bool:
        """The generation failed, or its reply did not reach Telegram."""
        sent = self.message is None or self.message.status in (Message.Status.SENT,
                                                               Message.Status.PENDING,
                                                               Message.Status.SENDING)
        return not self.generation.ok or not sent


def batch_detail(run_id: int) -> tuple[BatchRun, list[DetailRow]]:
    """The run and one row per generation with its outbox message, failures first (three
    queries)."""
    run = get_object_or_404(BatchRun, pk=run_id)
    generations = list(run.generations.select_related("bot", "chat", "queue_item")
                       .order_by("id"))
    # Only this run's messages: an item that failed here may be sent by a later run.
    messages: dict[int | None, Message] = {m.queue_item_id: m
                                           for m in Message.objects.filter(batch_run=run)}
    secrets = _known_secrets(g.bot for g in generations)
    rows = [_detail_row(g, messages.get(g.queue_item_id), secrets) for g in generations]
    # Failed rows first, a reply that generated but did not send included: they are what a
    # reader of a batch's page comes for. (The sort is stable: by id within each.)
    return run, sorted(rows, key=lambda row: not row.failed)


def _detail_row(generation: Generation, message: Message | None,
                secrets: list[str]) -> DetailRow:
    return DetailRow(generation=generation, message=message,
                     prompt_excerpt=redact(_excerpt(generation.prompt), secrets),
                     reply=redact(generation.text, secrets),
                     error=redact(generation.error, secrets),
                     send_error=redact(message.error if message else "", secrets))


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"


def _known_secrets(bots: Any) -> list[str]:
    from batchgen.llm.config import all_api_keys  # every key, *_API_KEYS lists included

    keys = list(all_api_keys())
    tokens = [bot.telegram_token for bot in bots if isinstance(bot, Bot)]
    return sorted({s for s in [*keys, *tokens] if s and len(s) >= 6}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """Defence in depth: stored errors should hold no secret, but never show one."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def run_links(run: BatchRun) -> dict[str, str]:
    """Where to look next: the run's queue items and messages in the admin, and its RQ job
    on django-rq's job page (absent when the run never got a job id, e.g. ``tick --sync``)."""
    links = {}
    for name, model in (("items", "queueitem"), ("messages", "message")):
        links[name] = (f"{reverse(f'admin:batchgen_{model}_changelist')}"
                       f"?batch_run__id__exact={run.pk}")
    if run.rq_job_id:
        links["rq_job"] = _rq_job_url(run.rq_job_id)
    return {name: url for name, url in links.items() if url}


def _rq_job_url(job_id: str) -> str:
    from django_rq.settings import get_queues_map

    from batchgen.delivery.workers import QUEUE_NAME

    index = get_queues_map().get(QUEUE_NAME)
    if index is None:
        return ""
    try:
        return reverse("admin:django_rq_job_detail", args=[index, job_id])
    except NoReverseMatch:  # django-rq's admin pages are not mounted
        return ""
