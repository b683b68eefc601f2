"""What a generation cost, from its recorded usage and the price table (``LLM_PRICES``): cached
prompt tokens at the cached rate, a Batch API generation at the batch rates, and a model the
table lacks at no cost (None), never 0, so a total is never quietly low.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings

from botplatform.prices import Price, parse_table

SYNC, BATCH = "sync", "batch"
_MILLION = Decimal(1_000_000)


def price_for(model: str) -> Price | None:
    # Read when used, so override_settings and a reloaded table apply at once.
    entry = settings.LLM_PRICES.get(model)
    if entry is None:
        return None
    return parse_table({model: entry}, "LLM_PRICES")[model]


def cost(model: str, prompt: int, cached: int, completion: int,
         route: str = SYNC) -> Decimal | None:
    """USD for one generation's usage on ``route``; None for a model without a price."""
    price = price_for(model)
    if price is None:
        return None
    if route == BATCH:
        per_input, per_cached, per_output = (price.batch_input, price.batch_cached_input,
                                             price.batch_output)
    else:
        per_input, per_cached, per_output = price.input, price.cached_input, price.output
    cached = min(cached, prompt)  # a provider never caches more than it was sent
    return ((prompt - cached) * per_input + cached * per_cached
            + completion * per_output) / _MILLION


def summed_cost(row: Mapping[str, Any]) -> Decimal | None:
    """USD for one row of summed usage (``model``, ``route``, and the sums ``prompt``,
    ``cached``, ``completion`` of a query grouped by model and route); None without a price."""
    return cost(row["model"], int(row["prompt"] or 0), int(row["cached"] or 0),
                int(row["completion"] or 0), route=row["route"] or SYNC)


class Usage(Protocol):
    """What a recorded generation says about its usage (a ``Generation`` row)."""

    ok: bool
    model: str
    route: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


def billed(generations: Iterable[Usage], route: str | None = None) -> Decimal | None:
    """USD for a run's generations: those that answered or were charged for their prompt,
    each on its own route (or on ``route`` for all). None when any has no price."""
    costs = [cost(g.model, g.prompt_tokens, g.cached_tokens, g.completion_tokens,
                  route or g.route)
             for g in generations if g.ok or g.prompt_tokens]
    if any(c is None for c in costs):
        return None
    return sum((c for c in costs if c is not None), Decimal(0))


def full_cost(model: str, prompt: int, cached: int, completion: int) -> Decimal | None:
    """The same usage at synchronous prices with nothing cached: what a saving is
    measured against."""
    return cost(model, prompt, 0, completion, SYNC)
