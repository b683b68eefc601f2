"""The dashboard's cost panel: cost per message by route and provider, the saving against
synchronous prices and the cache hit rate, in one query whatever the number of rows. Costs
are computed from the recorded tokens and today's price table (``batchgen.core.pricing``),
not summed from stored costs, so a price added later prices old rows too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum

from batchgen.core import pricing
from batchgen.dashboard.queries import Window
from batchgen.models import Generation


@dataclass
class CostRow:
    """One route and provider (or the total): usage, and what it cost."""

    route: str
    provider: str
    replies: int = 0            # generations that produced a message
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)  # of the priced generations only
    full_cost: Decimal = Decimal(0)  # the same at synchronous, uncached prices
    priced_replies: int = 0
    priced_generations: int = 0
    unpriced: int = 0           # generations whose model has no price: "no cost", never 0
    models: set[str] = field(default_factory=set)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def priced(self) -> bool:
        return self.priced_generations > 0

    @property
    def cost_per_message(self) -> Decimal | None:
        return self.cost / self.priced_replies if self.priced_replies else None

    @property
    def saving(self) -> Decimal | None:
        return self.full_cost - self.cost if self.priced else None

    @property
    def saving_percent(self) -> float | None:
        if not self.priced or not self.full_cost:
            return None
        return float(100 * (self.full_cost - self.cost) / self.full_cost)

    @property
    def cache_hit_percent(self) -> float | None:
        if not self.prompt_tokens:
            return None
        return 100 * self.cached_tokens / self.prompt_tokens

    def add(self, model: str, counts: dict[str, int]) -> None:
        usage = (model, counts["prompt"], counts["cached"], counts["completion"])
        self.replies += counts["ok"]
        self.prompt_tokens += counts["prompt"]
        self.cached_tokens += counts["cached"]
        self.completion_tokens += counts["completion"]
        self.models.add(model)
        paid = pricing.cost(*usage, route=self.route or pricing.SYNC)
        if paid is None:
            self.unpriced += counts["n"]
            return
        self.cost += paid
        self.full_cost += pricing.full_cost(*usage) or Decimal(0)  # priced: never None here
        self.priced_replies += counts["ok"]
        self.priced_generations += counts["n"]


@dataclass
class CostReport:
    window: str
    rows: list[CostRow]
    total: CostRow


def cost_report(window: Window | None = None, now: datetime | None = None) -> CostReport:
    """The cost panel for the dashboard's window (today when it has no dates)."""
    window = window or Window()
    start, end = window.span(now)
    within = {**({"created_at__gte": start} if start else {}),
              **({"created_at__lt": end} if end else {})}
    groups = (Generation.objects.filter(**within, **window.run_filters("batch_run__"))
              .values("route", "provider", "model").order_by("route", "provider", "model")
              .annotate(n=Count("id"), ok=Count("id", filter=Q(ok=True)),
                        prompt=Sum("prompt_tokens"), cached=Sum("cached_tokens"),
                        completion=Sum("completion_tokens")))
    rows: dict[tuple[str, str], CostRow] = {}
    for group in groups:
        counts = {name: int(group[name] or 0)
                  for name in ("n", "ok", "prompt", "cached", "completion")}
        route, provider = group["route"] or pricing.SYNC, group["provider"] or "?"
        rows.setdefault((route, provider), CostRow(route, provider)).add(group["model"], counts)
    total = CostRow("", "all")
    for row in rows.values():
        _merge(total, row)
    return CostReport(window.label("today, {today}", now), list(rows.values()), total)


def _merge(total: CostRow, row: CostRow) -> None:
    for name in ("replies", "prompt_tokens", "cached_tokens", "completion_tokens", "cost",
                 "full_cost", "priced_replies", "priced_generations", "unpriced"):
        setattr(total, name, getattr(total, name) + getattr(row, name))
    total.models |= row.models
