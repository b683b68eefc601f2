"""Queries and aggregates behind the staff dashboard (one run's own page is
``batchgen.dashboard.run_detail``); the views only call these, and every function runs a
fixed number of queries, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import QueryDict
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from batchgen.core import pricing
from batchgen.dashboard import charts, console, search
from batchgen.dashboard.sent_chart import sent_per_minute_chart
from batchgen.llm.limits import learned
from batchgen.models import BatchRun, Generation, Message, Setting

PAGE_SIZE = 25
BREAKERS = ("openai_api", "gemini_api", "groq_api")
RECENT_BATCHES = 40  # the per-batch charts look at this many batches
COST_DAYS = 14


def start_of_today(now: datetime | None = None) -> datetime:
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --- The window every figure covers --------------------------------------------

@dataclass(frozen=True)
class Window:
    """The filters the cards, the charts and the table all follow.

    Without dates the cards cover today, the charts the latest batches and the
    table every batch; each says so through ``label``.
    """

    mode: str = ""
    status: str = ""
    provider: str = ""
    date_from: date | None = None
    date_to: date | None = None
    search: str = ""  # the history table only: a chat, bot, item id or text (see search)

    @classmethod
    def from_cleaned(cls, cleaned: dict[str, Any]) -> Window:
        return cls(mode=cleaned.get("mode") or "", status=cleaned.get("status") or "",
                   provider=cleaned.get("provider") or "",
                   date_from=cleaned.get("date_from") or None,
                   date_to=cleaned.get("date_to") or None,
                   search=cleaned.get("search") or "")

    @property
    def is_filtered(self) -> bool:
        return bool(self.has_dates or self.mode or self.status or self.provider or self.search)

    @property
    def has_dates(self) -> bool:
        return bool(self.date_from or self.date_to)

    def run_filters(self, prefix: str = "") -> dict[str, Any]:
        """Mode, status and provider as ORM filters, through ``prefix`` (e.g. "batch_run__")."""
        return {f"{prefix}{name}": getattr(self, name)
                for name in ("mode", "status", "provider") if getattr(self, name)}

    def span(self, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
        """[start, end) of the dates; today when no date is given (for the cards)."""
        if not self.has_dates:
            return start_of_today(now), None
        end = _day_start(self.date_to) + timedelta(days=1) if self.date_to else None
        return (_day_start(self.date_from) if self.date_from else None), end

    def runs(self) -> QuerySet[BatchRun]:
        return filter_batches(self)

    def label(self, what: str, now: datetime | None = None, searched: bool = False) -> str:
        """"today, 2026-05-01 (UTC) · batch · groq" and the like."""
        if self.has_dates:
            days = f"{self.date_from or '…'} to {self.date_to or 'now'}"
        else:
            days = what.format(today=f"{start_of_today(now):%Y-%m-%d}")
        parts = [days + f" ({timezone.get_current_timezone_name()})",
                 *(str(v) for v in (self.mode, self.status, self.provider) if v),
                 *([f"matching “{self.search}”"] if searched and self.search else [])]
        return " · ".join(parts)


def _within(field_name: str, span: tuple[datetime | None, datetime | None]) -> dict[str, Any]:
    start, end = span
    return {**({f"{field_name}__gte": start} if start else {}),
            **({f"{field_name}__lt": end} if end else {})}


# --- Overview cards ----------------------------------------------------------

@dataclass
class Overview:
    window: str
    messages_sent: int
    generations: int
    success_rate: float | None
    queue_depth: dict[str, int]  # what waits: console.queue_now
    breakers: list[dict[str, Any]]
    batch_mode_enabled: bool
    batch_size: int
    settings_url: str | None = None
    keys: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_percent(self) -> float | None:
        return None if self.success_rate is None else 100 * self.success_rate

    dead: int = 0

    @property
    def queue_total(self) -> int:
        return sum(self.queue_depth.values())

    @property
    def key_totals(self) -> dict[str, int]:
        """Limiter waits, 429s and requests returned to the queue, over every key."""
        return {name: sum(row.get(name, 0) for row in self.keys)
                for name in ("waits", "penalties", "timeouts")}


def overview(window: Window | None = None, now: datetime | None = None) -> Overview:
    window = window or Window()
    span = window.span(now)
    sent = Message.objects.filter(status=Message.Status.SENT, **_within("sent_at", span),
                                  **window.run_filters("batch_run__")).count()
    gens = Generation.objects.filter(**_within("created_at", span),
                                     **window.run_filters("batch_run__")).aggregate(
        total=Count("id"), ok=Count("id", filter=Q(ok=True)))
    batch_settings = Setting.load()
    return Overview(
        window=window.label("today, {today}", now),
        messages_sent=sent,
        generations=gens["total"],
        success_rate=gens["ok"] / gens["total"] if gens["total"] else None,
        queue_depth=console.queue_now(),
        dead=console.dead_count(),
        breakers=breaker_states(),
        batch_mode_enabled=batch_settings.batch_mode_enabled,
        batch_size=batch_settings.batch_size,
        settings_url=_settings_admin_url(),
        keys=key_states(),
        budgets=learned.budget_table(),  # [] while Redis is away
    )


def provider_configured(provider: str) -> bool:
    """Whether the provider has an API key; the one place the dashboard asks config."""
    from batchgen.llm.config import api_keys

    try:
        return bool(api_keys(provider))
    except Exception:  # noqa: BLE001 - a config error must not take the dashboard down
        return False


def breaker_states() -> list[dict[str, Any]]:
    """Each provider's breaker; "unknown" when resilience is missing or fails."""
    states = []
    for name in BREAKERS:
        try:
            from batchgen.state.breakers import get_circuit_breaker_stats  # lazy: optional

            stats = dict(get_circuit_breaker_stats(name))
        except Exception:  # noqa: BLE001 - the dashboard must render regardless
            stats = {}
        state = str(stats.get("state") or "unknown")
        provider = name.removesuffix("_api")
        if not provider_configured(provider):
            # A breaker never tripped because nothing is ever sent reads "closed":
            # true, and misleading.
            state = "not_configured"
        states.append({"name": name, "provider": provider, "state": state,
                       "failures": stats.get("failures"), "retry_after": stats.get("retry_after")})
    return states


def key_states() -> list[dict[str, Any]]:
    """Each configured API key (by fingerprint): rotation state and its limiter's counters.

    Redis only (a few calls per provider), no queries; [] when Redis is unreachable.
    """
    try:
        from batchgen.llm.keys import key_health  # lazy: the dashboard renders regardless
        from batchgen.llm.limits.budgets import all_limiter_stats

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

CHART_FIELDS = ("id", "created_at", "size", "latency_mean_s", "latency_p95_s", "successes",
                "failures")
BATCH_AXIS = "batch (oldest → newest)"


def build_charts(window: Window | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The four dashboard charts (four queries at most): messages sent per minute over
    time, then the window's latest batches.

    Runs refill and range from one item to thousands, so no chart plots a raw figure per
    batch: throughput is a time series, latency is per item, outcomes are shares of the batch.
    """
    window = window or Window()
    label = window.label(f"latest {RECENT_BATCHES} batches", now, searched=True)
    # An empty chart under a filter says so, not "after the first batch" (45 exist).
    note = f"No batch matches these filters ({label})." if window.is_filtered else ""
    rows = list(window.runs().values(*CHART_FIELDS)[:RECENT_BATCHES])[::-1]
    labels = [f"#{r['id']} {timezone.localtime(r['created_at']):%H:%M}" for r in rows]
    return {
        "window": label,
        "sent": sent_per_minute_chart(window.run_filters("batch_run__"),
                                      window.span(now) if window.has_dates else None, now,
                                      empty_note=note),
        "latency": charts.line_chart(
            "Latency per item (mean and p95)", labels,
            [charts.Series("mean", [r["latency_mean_s"] for r in rows], "s1"),
             charts.Series("p95", [r["latency_p95_s"] for r in rows], "s2")],
            x_label=BATCH_AXIS, y_label="seconds", unit=" s", empty_note=note),
        "outcomes": _outcomes_chart(rows, labels, note),
        "cost": _cost_chart(window, now, note),
    }


def _outcomes_chart(rows: list[dict[str, Any]], labels: list[str], note: str) -> SafeString:
    done = [r["successes"] + r["failures"] for r in rows]
    series = []
    for name, css in (("successes", "ok"), ("failures", "bad")):
        shares = [100 * r[name] / n if n else None for r, n in zip(rows, done, strict=True)]
        tips = [f"{share or 0:.0f}% ({r[name]} of {n})"
                for r, n, share in zip(rows, done, shares, strict=True)]
        series.append(charts.Series(name, shares, css, tips=tips))
    return charts.stacked_bar_chart("Outcomes per batch (share of its items)", labels, series,
                                    x_label=BATCH_AXIS, y_label="% of items", integer=True,
                                    empty_note=note)


def _cost_chart(window: Window, now: datetime | None, note: str) -> SafeString:
    """Cost per day, priced from the generations as the Cost panel is (running runs count
    from their first reply; a run's own cost_usd is written only when it ends)."""
    last = window.date_to or start_of_today(now).date()
    since = _day_start(last) - timedelta(days=COST_DAYS - 1)
    if window.date_from:
        since = max(since, _day_start(window.date_from))
    rows = (Generation.objects.filter(batch_run__in=window.runs(), created_at__gte=since,
                                      created_at__lt=_day_start(last) + timedelta(days=1))
            .annotate(day=TruncDate("created_at")).values("day", "route", "model")
            .annotate(prompt=Sum("prompt_tokens"), cached=Sum("cached_tokens"),
                      completion=Sum("completion_tokens")).order_by("day"))
    per_day: dict[date, Decimal | None] = {}
    for row in rows:
        cost = pricing.summed_cost(row)
        known = per_day.get(row["day"])
        per_day[row["day"]] = known if cost is None else (known or Decimal(0)) + cost
    return charts.bar_chart(
        f"Cost per day ({COST_DAYS} days to {last})", [f"{day:%m-%d}" for day in per_day],
        [float(cost) if cost is not None else None for cost in per_day.values()],
        series_name="cost", x_label="day", y_label="USD", unit=" USD", empty_note=note)


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
    search = forms.CharField(
        required=False, max_length=search.MAX_TERM, label="search",
        widget=forms.TextInput(attrs={"type": "search",
                                      "placeholder": "chat, bot, item #, text"}))
    page = forms.IntegerField(required=False, min_value=1, max_value=10**9,
                              widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("'from' must be on or before 'to'.")
        return data


@dataclass
class History:
    form: HistoryFilterForm
    page: Page
    window: Window
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.window.label("all time", searched=True)

    @property
    def query_string(self) -> str:
        """The active filters without the page, for pagination links."""
        params = cast(QueryDict, self.form.data).copy()  # history() is given request.GET
        params.pop("page", None)
        return params.urlencode()

    def page_query(self, number: int) -> str:
        return "&".join(part for part in (self.query_string, f"page={number}") if part)


# The filters are five short fields and a page number; a query string past this is not the
# dashboard's own, and is ignored whole (named in the errors) rather than parsed.
MAX_QUERY_CHARS = 2000


def history(params: Any) -> History:
    """Filter and paginate batches; invalid filters are reported and ignored."""
    pairs = params.lists() if hasattr(params, "lists") else ((k, [v]) for k, v in params.items())
    size = sum(len(key) + len(str(value)) for key, values in pairs for value in values)
    oversized = [f"filters: longer than {MAX_QUERY_CHARS:,} characters ({size:,})"
                 ] if size > MAX_QUERY_CHARS else []
    form = HistoryFilterForm({} if oversized else params)
    form.is_valid()
    cleaned = getattr(form, "cleaned_data", {})
    errors = oversized + [f"{_field_label(form, name)}: {' '.join(str(m) for m in msgs)}"
                          for name, msgs in form.errors.items()]
    window = Window.from_cleaned(cleaned)
    paginator = Paginator(filter_batches(window), PAGE_SIZE)
    return History(form=form, page=paginator.get_page(cleaned.get("page") or 1), window=window,
                   errors=errors)


def _field_label(form: forms.Form, name: str) -> str:
    if name == "__all__":
        return "dates"
    return str(form.fields[name].label or name)


def filter_batches(window: Window) -> QuerySet[BatchRun]:
    runs = BatchRun.objects.filter(**window.run_filters())
    start, end = window.span() if window.has_dates else (None, None)
    return search.runs(runs.filter(**_within("created_at", (start, end))), window.search)


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
