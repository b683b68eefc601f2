"""Server-side SVG charts for the dashboard, with no JavaScript library and no CDN: each function
returns an escaped ``<figure>`` with a title, axis labels, a legend and a tooltip on every
point or bar, or the same figure with a "No data yet" note. The SVG scales with its box, so
text sizes are set in dashboard.css per screen width, not here (docs/design.md, "The
dashboard and the admin").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 250
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 16, 62
MAX_BAR_W = 48  # one or two bars must not fill the whole plot
MAX_X_TICKS = 4  # labels are large on phones; more would overlap
Y_TICKS = 4
MAX_TICK_CHARS = 7  # what the left margin holds at the phone's label size


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    css_class: str = "s1"  # colour and dash come from static/dashboard/dashboard.css
    tips: Sequence[str] | None = None  # per-point tooltip text, instead of the value


@dataclass(frozen=True)
class _Frame:
    """The plotting area and the value range it maps to (linear, or log10 when
    ``log_min`` is set: the axis then runs from 10^log_min to 10^log_max)."""

    count: int
    y_max: float
    log_min: float | None = None
    linear_steps: int = Y_TICKS

    @property
    def plot_w(self) -> float:
        return WIDTH - LEFT - RIGHT

    @property
    def plot_h(self) -> float:
        return HEIGHT - TOP - BOTTOM

    def x_center(self, index: int) -> float:
        return LEFT + (index + 0.5) * self.plot_w / self.count

    def y(self, value: float) -> float:
        if self.log_min is None:
            return TOP + self.plot_h * (1 - value / self.y_max)
        top = math.log10(self.y_max)
        share = (math.log10(max(value, 10 ** self.log_min)) - self.log_min) / (top - self.log_min)
        return TOP + self.plot_h * (1 - share)

    def y_ticks(self) -> list[float]:
        if self.log_min is None:
            steps = self.linear_steps
            return [self.y_max * step / steps for step in range(steps + 1)]
        return [10.0 ** k for k in range(round(self.log_min), round(math.log10(self.y_max)) + 1)]


def linear_frame(count: int, peak: float, integer: bool = False) -> _Frame:
    """A linear axis from 0; ``integer`` keeps every tick a whole number (for counts).

    Otherwise the top is 1, 2, 2.5 or 5 × 10^k, cut in 4 steps for a 2 and in 5 for the
    others, so every tick is round too (0.1, 0.2 …, never 0.125 or 0.375).
    """
    top = nice_ceiling(peak)
    if integer:
        return _Frame(count, max(1, math.ceil(top / Y_TICKS)) * Y_TICKS)
    mantissa = round(top / 10 ** math.floor(math.log10(top)), 3)
    return _Frame(count, top, linear_steps=4 if mantissa == 2 else 5)


def log_frame(count: int, low: float, peak: float) -> _Frame:
    """Whole decades around the data, at least one: 0.5..40 msg/s gives 0.1..100."""
    bottom = math.floor(math.log10(low))
    top = max(math.ceil(math.log10(peak)), bottom + 1)
    return _Frame(count, 10.0 ** top, log_min=float(bottom))


def format_number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) < 0.001:  # costs per day: "0.00005" reads better than "5e-05"
        decimals = 2 - math.floor(math.log10(abs(value)))  # three significant digits
        return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def tick_label(value: float) -> str:
    """An axis label short enough for the left margin on a phone: a cost of a few millionths
    of a dollar a day reads "1.5e-5", not "0.000015" (cut off at 360 px)."""
    shown = format_number(value)
    if len(shown) <= MAX_TICK_CHARS:
        return shown
    short = f"{value:.2g}"
    if "e" not in short:
        return short
    mantissa, exponent = short.split("e")
    return f"{mantissa}e{int(exponent)}"


def nice_ceiling(value: float) -> float:
    """Smallest of 1, 2, 2.5, 5, 10 × 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0 or math.isnan(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value * (1 - 1e-9):
            return step * magnitude
    return 10 * magnitude


def line_chart(title: str, x_labels: Sequence[str], series: Sequence[Series], *,
               x_label: str, y_label: str, unit: str = "", log: bool = False,
               empty_note: str = "") -> SafeString:
    """Points joined by lines, one colour and dash per series; a None value breaks the line.

    ``log``: a log10 axis, for figures that span decades (a batch of 1 next to one of
    1,000); values at or below 0 cannot be placed on it and break the line too.
    """
    if log:
        series = [Series(s.name, [v if v is not None and v > 0 else None for v in s.values],
                         s.css_class, s.tips) for s in series]
    present = [v for s in series for v in s.values if v is not None]
    if not x_labels or not present:
        return _empty(title, x_label, y_label, empty_note)
    frame = (log_frame(len(x_labels), min(present), max(present)) if log
             else linear_frame(len(x_labels), max(present)))
    marks = [_line_marks(frame, x_labels, s, unit) for s in series]
    return _figure(title, frame, x_labels, "".join(marks), series, x_label, y_label)


def stacked_bar_chart(title: str, x_labels: Sequence[str], series: Sequence[Series], *,
                      x_label: str, y_label: str, unit: str = "",
                      integer: bool = False, empty_note: str = "") -> SafeString:
    """One bar per x label, the series stacked bottom-up in the given order."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(x_labels))]
    if not x_labels or not any(s.values[i] is not None for s in series
                               for i in range(len(x_labels))):
        return _empty(title, x_label, y_label, empty_note)
    frame = linear_frame(len(x_labels), max(totals), integer)
    bar_w = max(1.0, min(frame.plot_w / frame.count * 0.7, MAX_BAR_W))
    parts = []
    for index, label in enumerate(x_labels):
        base = 0.0
        for s in series:
            value = s.values[index]
            if value is None:
                parts.append(_no_value_mark(frame, index, label, s.name))
                continue
            tip = s.tips[index] if s.tips else f"{format_number(value)}{unit}"
            parts.append(_bar(frame, index, bar_w, base, value, f"{label} — {s.name}: {tip}",
                              s.css_class))
            base += value
    return _figure(title, frame, x_labels, "".join(parts), series, x_label, y_label)


def bar_chart(title: str, x_labels: Sequence[str], values: Sequence[float | None], *,
              series_name: str, x_label: str, y_label: str, unit: str = "",
              empty_note: str = "") -> SafeString:
    return stacked_bar_chart(title, x_labels, [Series(series_name, values)],
                             x_label=x_label, y_label=y_label, unit=unit, empty_note=empty_note)


def _line_marks(frame: _Frame, x_labels: Sequence[str], series: Series, unit: str) -> str:
    segments: list[list[str]] = [[]]
    dots = []
    for index, value in enumerate(series.values):
        if value is None:
            segments.append([])
            continue
        x, y = frame.x_center(index), frame.y(value)
        segments[-1].append(f"{x:.1f},{y:.1f}")
        shown = series.tips[index] if series.tips else f"{format_number(value)}{unit}"
        tip = f"{x_labels[index]} — {series.name}: {shown}"
        dots.append(f'<circle class="dot {series.css_class}" cx="{x:.1f}" cy="{y:.1f}" r="3">'
                    f"<title>{escape(tip)}</title></circle>")
    lines = "".join(f'<polyline class="line {series.css_class}" points="{" ".join(points)}"/>'
                    for points in segments if len(points) > 1)
    return lines + "".join(dots)


def _bar(frame: _Frame, index: int, bar_w: float, base: float, value: float, tip: str,
         css_class: str) -> str:
    top, bottom = frame.y(base + value), frame.y(base)
    x = frame.x_center(index) - bar_w / 2
    return (f'<rect class="bar {css_class}" x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" '
            f'height="{max(bottom - top, 0):.1f}"><title>{escape(tip)}</title></rect>')


def _no_value_mark(frame: _Frame, index: int, label: str, name: str) -> str:
    # An unknown value (e.g. a cost with no price) is marked, never drawn as 0.
    x, y = frame.x_center(index), frame.y(0) - 4
    return (f'<text class="na" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">n/a'
            f"<title>{escape(f'{label} — {name}: unknown')}</title></text>")


def _axes(frame: _Frame, x_labels: Sequence[str], x_label: str, y_label: str) -> str:
    parts = []
    for value in frame.y_ticks():
        y = frame.y(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 5:.1f}" '
                     f'text-anchor="end">{escape(tick_label(value))}</text>')
    every = max(1, math.ceil(len(x_labels) / MAX_X_TICKS))
    base_y = HEIGHT - BOTTOM
    for index in range(0, len(x_labels), every):
        parts.append(f'<text class="tick" x="{frame.x_center(index):.1f}" y="{base_y + 22}" '
                     f'text-anchor="middle">{escape(x_labels[index])}</text>')
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base_y}" '
                 f'y2="{base_y}"/><line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" '
                 f'y2="{base_y}"/>')
    parts.append(f'<text class="axis-label" x="{LEFT + frame.plot_w / 2:.1f}" '
                 f'y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
                 f'<text class="axis-label" transform="translate(18 {TOP + frame.plot_h / 2:.1f})'
                 f' rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    return "".join(parts)


def _figure(title: str, frame: _Frame, x_labels: Sequence[str], marks: str,
            series: Sequence[Series], x_label: str, y_label: str) -> SafeString:
    legend = "".join(f'<span class="key {s.css_class}">{escape(s.name)}</span>' for s in series)
    svg = (f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
           f"<title>{escape(title)}</title>{_axes(frame, x_labels, x_label, y_label)}"
           f"{marks}</svg>")
    return mark_safe(  # noqa: S308 - every interpolated text above is escaped
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>{svg}'
        f'<div class="legend">{legend}</div></figure>')


def _empty(title: str, x_label: str, y_label: str, note: str = "") -> SafeString:
    """``note``: why there is nothing (a filter), instead of "after the first batch"."""
    text = escape(note) if note else (f"No data yet — {escape(y_label)} by {escape(x_label)} "
                                      f"appears here after the first batch.")
    return mark_safe(  # noqa: S308 - escaped
        f'<figure class="chart chart-empty"><figcaption>{escape(title)}</figcaption>'
        f'<p class="no-data">{text}</p></figure>')
