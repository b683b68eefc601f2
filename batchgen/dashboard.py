"""Queries and aggregates behind the staff dashboard; the views only call these.

Every function here runs a fixed number of queries, whatever the number of rows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Count, DecimalField, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from batchgen import charts, queue
from batchgen.models import BatchRun, Bot, Generation, Message, Setting

PAGE_SIZE = 25
BREAKERS = ("openai_api", "gemini_api", "groq_api")
RECENT_BATCHES = 40  # charts and the median throughput look at this many batches
COST_DAYS = 14
EXCERPT_CHARS = 160


def start_of_today(now: datetime | None = None) -> datetime:
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- Overview cards ----------------------------------------------------------

@dataclass
class Overview:
    messages_sent_today: int
    generations_today: int
    success_rate_today: float | None
    median_throughput: float | None
    tokens_today: int
    cost_today: Decimal | None
    unpriced_batches_today: int
    queue_depth: dict[str, int]
    breakers: list[dict[str, Any]]
    batch_mode_enabled: bool
    batch_size: int
    settings_url: str | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_percent(self) -> float | None:
        return None if self.success_rate_today is None else 100 * self.success_rate_today

    @property
    def queue_total(self) -> int:
        return sum(self.queue_depth.values())

    @property
    def key_totals(self) -> dict[str, int]:
        """Limiter waits, 429s and requests returned to the queue, over every key."""
        return {name: sum(row.get(name, 0) for row in self.keys)
                for name in ("waits", "penalties", "timeouts")}


def overview(now: datetime | None = None) -> Overview:
    today = start_of_today(now)
    sent = Message.objects.filter(status=Message.Status.SENT, sent_at__gte=today).count()
    gens = Generation.objects.filter(created_at__gte=today).aggregate(
        total=Count("id"), ok=Count("id", filter=Q(ok=True)))
    runs = BatchRun.objects.filter(created_at__gte=today).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
        cost=Sum("cost_usd", output_field=DecimalField()),
        unpriced=Count("id", filter=Q(cost_usd__isnull=True, prompt_tokens__gt=0)))
    throughputs = list(BatchRun.objects.filter(throughput__isnull=False)
                       .values_list("throughput", flat=True)[:RECENT_BATCHES])
    batch_settings = Setting.load()
    return Overview(
        messages_sent_today=sent,
        generations_today=gens["total"],
        success_rate_today=gens["ok"] / gens["total"] if gens["total"] else None,
        median_throughput=statistics.median(throughputs) if throughputs else None,
        tokens_today=(runs["prompt"] or 0) + (runs["completion"] or 0),
        cost_today=runs["cost"],  # None when no batch today has a known cost
        unpriced_batches_today=runs["unpriced"],
        queue_depth=queue.depth_by_status(),
        breakers=breaker_states(),
        batch_mode_enabled=batch_settings.batch_mode_enabled,
        batch_size=batch_settings.batch_size,
        settings_url=_settings_admin_url(),
        keys=key_states(),
    )


def breaker_states() -> list[dict[str, Any]]:
    """Each provider's breaker; "unknown" when resilience is missing or fails."""
    states = []
    for name in BREAKERS:
        try:
            from batchgen.resilience import get_circuit_breaker_stats  # lazy: optional

            stats = dict(get_circuit_breaker_stats(name))
        except Exception:  # noqa: BLE001 - the dashboard must render regardless
            stats = {}
        state = str(stats.get("state") or "unknown")
        states.append({"name": name, "state": state, "failures": stats.get("failures"),
                       "retry_after": stats.get("retry_after")})
    return states


def key_states() -> list[dict[str, Any]]:
    """Each configured API key (by fingerprint): rotation state and its limiter's counters.

    Redis only (a few calls per provider), no queries; [] when Redis is unreachable.
    """
    try:
        from batchgen.llm.keys import key_health  # lazy: the dashboard renders regardless
        from batchgen.ratelimit import all_limiter_stats

        limiters = {(row["provider"], row["key"]): row for row in all_limiter_stats()}
        rows = key_health()
    except Exception:  # noqa: BLE001 - the dashboard must render regardless
        return []
    for row in rows:
        stats = limiters.get((row["provider"], row["key"]), {})
        waits = stats.get("waits", 0)
        row.update(limited=bool(stats), acquired=stats.get("acquired", 0), waits=waits,
                   mean_wait=stats.get("wait_seconds", 0.0) / waits if waits else None,
                   timeouts=stats.get("timeouts", 0), penalties=stats.get("penalties", 0))
    return rows


def _settings_admin_url() -> str | None:
    try:
        return reverse("admin:batchgen_setting_changelist")
    except NoReverseMatch:  # the Setting admin is not registered
        return None


# --- Charts ------------------------------------------------------------------

CHART_FIELDS = ("id", "created_at", "throughput", "latency_mean_s", "latency_p95_s",
                "successes", "failures")


def build_charts(now: datetime | None = None) -> dict[str, SafeString]:
    """The four dashboard charts, from the most recent batches (two queries)."""
    rows = list(BatchRun.objects.values(*CHART_FIELDS)[:RECENT_BATCHES])[::-1]
    labels = [f"#{r['id']} {timezone.localtime(r['created_at']):%H:%M}" for r in rows]
    return {
        "throughput": charts.line_chart(
            "Throughput per batch", labels,
            [charts.Series("throughput", [r["throughput"] for r in rows])],
            x_label="batch (oldest → newest)", y_label="messages / s", unit=" msg/s"),
        "latency": charts.line_chart(
            "Latency per batch (mean and p95)", labels,
            [charts.Series("mean", [r["latency_mean_s"] for r in rows], "s1"),
             charts.Series("p95", [r["latency_p95_s"] for r in rows], "s2")],
            x_label="batch (oldest → newest)", y_label="seconds", unit=" s"),
        "outcomes": charts.stacked_bar_chart(
            "Successes vs failures per batch", labels,
            [charts.Series("successes", [r["successes"] for r in rows], "ok"),
             charts.Series("failures", [r["failures"] for r in rows], "bad")],
            x_label="batch (oldest → newest)", y_label="items"),
        "cost": _cost_chart(now),
    }


def _cost_chart(now: datetime | None) -> SafeString:
    since = start_of_today(now) - timedelta(days=COST_DAYS - 1)
    per_day = (BatchRun.objects.filter(created_at__gte=since)
               .annotate(day=TruncDate("created_at")).values("day")
               .annotate(cost=Sum("cost_usd", output_field=DecimalField()), n=Count("id"))
               .order_by("day"))
    days = [row for row in per_day if row["n"]]
    return charts.bar_chart(
        f"Cost per day (last {COST_DAYS} days)", [f"{row['day']:%m-%d}" for row in days],
        [float(row["cost"]) if row["cost"] is not None else None for row in days],
        series_name="cost", x_label="day", y_label="USD", unit=" USD")


# --- Batch history -----------------------------------------------------------

# Filters outside this window are refused: a day at either end of Python's date
# range cannot be turned into an aware datetime plus a day (9999-12-31 was a 500).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _within_date_window(day: date) -> None:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise forms.ValidationError(f"must be a date from {FIRST_DAY} to {LAST_DAY}")


class HistoryFilterForm(forms.Form):
    mode = forms.ChoiceField(required=False, choices=[("", "any mode"), *BatchRun.Mode.choices])
    status = forms.ChoiceField(required=False,
                               choices=[("", "any status"), *BatchRun.Status.choices])
    provider = forms.ChoiceField(required=False, choices=[
        ("", "any provider"), *((p, p) for p in settings.LLM_PROVIDERS)])
    date_from = forms.DateField(required=False, label="from", validators=[_within_date_window],
                                widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="to", validators=[_within_date_window],
                              widget=forms.DateInput(attrs={"type": "date"}))
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("'from' must be on or before 'to'.")
        return data


@dataclass
class History:
    form: HistoryFilterForm
    page: Page
    errors: list[str] = field(default_factory=list)

    @property
    def query_string(self) -> str:
        """The active filters without the page, for pagination links."""
        params = self.form.data.copy()
        params.pop("page", None)
        return params.urlencode()

    def page_query(self, number: int) -> str:
        return "&".join(part for part in (self.query_string, f"page={number}") if part)


def history(params: Any) -> History:
    """Filter and paginate batches; invalid filters are reported and ignored."""
    form = HistoryFilterForm(params)
    form.is_valid()
    cleaned = getattr(form, "cleaned_data", {})
    errors = [f"{_field_label(form, name)}: {' '.join(msgs)}"
              for name, msgs in form.errors.items()]
    paginator = Paginator(filter_batches(cleaned), PAGE_SIZE)
    return History(form=form, page=paginator.get_page(cleaned.get("page") or 1), errors=errors)


def _field_label(form: forms.Form, name: str) -> str:
    if name == "__all__":
        return "dates"
    return str(form.fields[name].label or name)


def filter_batches(cleaned: dict[str, Any]) -> QuerySet[BatchRun]:
    runs = BatchRun.objects.all()
    for name in ("mode", "status", "provider"):
        if cleaned.get(name):
            runs = runs.filter(**{name: cleaned[name]})
    if cleaned.get("date_from"):
        runs = runs.filter(created_at__gte=_day_start(cleaned["date_from"]))
    if cleaned.get("date_to"):
        runs = runs.filter(created_at__lt=_day_start(cleaned["date_to"]) + timedelta(days=1))
    return runs


def _day_start(day: Any) -> datetime:
    return timezone.make_aware(datetime(day.year, day.month, day.day))


def batch_as_dict(run: BatchRun) -> dict[str, Any]:
    return {
        "id": run.pk, "mode": run.mode, "status": run.status, "size": run.size,
        "workers": run.workers, "provider": run.provider, "model": run.model,
        "created_at": _iso(run.created_at), "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at), "duration_s": run.duration_s,
        "generation_s": run.generation_s, "successes": run.successes,
        "failures": run.failures, "throughput": run.throughput,
        "latency_mean_s": run.latency_mean_s, "latency_p95_s": run.latency_p95_s,
        "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
        "cached_tokens": run.cached_tokens,
        "cost_usd": str(run.cost_usd) if run.cost_usd is not None else None,
        "error_summary": run.error_summary,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- Batch detail ------------------------------------------------------------

@dataclass
class DetailRow:
    generation: Generation
    message: Message | None
    prompt_excerpt: str
    reply: str
    error: str
    send_error: str


def batch_detail(run_id: int) -> tuple[BatchRun, list[DetailRow]]:
    """The run and one row per generation with its outbox message (three queries)."""
    run = get_object_or_404(BatchRun, pk=run_id)
    generations = list(run.generations.select_related("bot", "chat", "queue_item"))
    # Only this run's messages: an item that failed here may be sent by a later run.
    messages = {m.queue_item_id: m for m in Message.objects.filter(batch_run=run)}
    secrets = _known_secrets(g.bot for g in generations)
    return run, [_detail_row(g, messages.get(g.queue_item_id), secrets) for g in generations]


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
