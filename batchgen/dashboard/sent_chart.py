"""Messages sent per minute over time, from ``Message.sent_at``: the throughput figure that
still means something once runs refill (a run's own msg/s depends on how long it lived). The
last 60 minutes by default, or a date range bucketed by minute, hour or day (at most
``MAX_POINTS``); a quiet bucket is a 0, not a gap (docs/design.md, "The dashboard and the
admin").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.db.models.functions import TruncDay, TruncHour, TruncMinute
from django.utils import timezone
from django.utils.safestring import SafeString

from batchgen.dashboard import charts
from batchgen.models import Message

RECENT_MINUTES = 60
MAX_POINTS = 400


@dataclass(frozen=True)
class _Step:
    minutes: int
    trunc: Any
    label: str  # strftime of a bucket's start, local time: unique within the span it serves
    max_span: timedelta


STEPS = (
    _Step(1, TruncMinute, "%H:%M", timedelta(hours=3)),
    _Step(60, TruncHour, "%m-%d %H:00", timedelta(days=7)),
    _Step(24 * 60, TruncDay, "%Y-%m-%d", timedelta.max),
)


def sent_per_minute_chart(run_filters: dict[str, Any],
                          span: tuple[datetime | None, datetime | None] | None = None,
                          now: datetime | None = None, empty_note: str = "") -> SafeString:
    """The chart for messages matching ``run_filters`` (ORM filters on the Message, e.g.
    ``batch_run__provider``) in ``span``, or in the last 60 minutes when ``span`` is None.
    Two queries at most."""
    now = now or timezone.now()
    sent = Message.objects.filter(status=Message.Status.SENT, **run_filters)
    start: datetime | None
    if span is None:
        end = now
        start = _floor_minute(now) - timedelta(minutes=RECENT_MINUTES - 1)
        title = f"Messages sent per minute (last {RECENT_MINUTES} minutes)"
    else:
        start, until = span
        end = min(until, now) if until else now
        start = start or sent.filter(sent_at__lt=end).aggregate(first=Min("sent_at"))["first"]
        title = "Messages sent per minute"
    if start is None or start >= end:
        return charts.line_chart(title, [], [], x_label="time", y_label="messages / minute",
                                 empty_note=empty_note)
    step = next(step for step in STEPS if end - start <= step.max_span)
    start = max(start, end - timedelta(minutes=step.minutes * MAX_POINTS))
    if step.minutes > 1:
        title += f" (mean of each {'hour' if step.minutes == 60 else 'day'})"
    return _chart(title, sent.filter(sent_at__gte=start, sent_at__lt=end), step, start, end,
                  empty_note)


def _chart(title: str, sent: Any, step: _Step, start: datetime, end: datetime,
           empty_note: str = "") -> SafeString:
    counts = {f"{timezone.localtime(row['slot']):{step.label}}": row["n"]
              for row in sent.annotate(slot=step.trunc("sent_at")).values("slot")
              .annotate(n=Count("id")).order_by()}
    labels = _bucket_labels(step, start, end)
    if not any(counts.get(label) for label in labels):
        return charts.line_chart(title, [], [], x_label="time", y_label="messages / minute",
                                 empty_note=empty_note)
    values = [counts.get(label, 0) / step.minutes for label in labels]
    tips = [f"{counts.get(label, 0)} sent" + (f" ({value:.2f} / min)" if step.minutes > 1
                                              else "")
            for label, value in zip(labels, values, strict=True)]
    x_label = f"time ({timezone.get_current_timezone_name()})"
    return charts.line_chart(title, labels, [charts.Series("sent", values, tips=tips)],
                             x_label=x_label, y_label="messages / minute")


def _bucket_labels(step: _Step, start: datetime, end: datetime) -> list[str]:
    """Every bucket from the one holding ``start`` to the one holding ``end``, empty ones
    included (a quiet minute is a 0 on the line, not a gap)."""
    moment = timezone.localtime(start)
    labels: list[str] = []
    while moment < end:
        label = f"{moment:{step.label}}"
        if not labels or labels[-1] != label:
            labels.append(label)
        moment += timedelta(minutes=step.minutes)
    last = f"{timezone.localtime(end - timedelta(microseconds=1)):{step.label}}"
    if labels[-1] != last:
        labels.append(last)
    return labels


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
