"""One way to show a time and an amount of money, on the dashboard and in the admin: times
24-hour in the configured time zone, with the zone named ("2026-05-01 14:03:09 UTC"); money
to three significant digits at least, so a single send's $0.000031 is not "0.0000".
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from django import template
from django.utils import timezone

register = template.Library()
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
EMPTY = "—"


@register.filter
def local_time(value: datetime | None) -> str:
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime(TIME_FORMAT)


@register.filter
def clock(value: datetime | None) -> str:
    """The time of day alone, for places where the date is already shown."""
    if value is None:
        return EMPTY
    return timezone.localtime(value).strftime("%H:%M:%S %Z")


@register.filter
def usd(value: Decimal | float | None) -> str:
    if value is None:
        return "n/a"
    amount = Decimal(value)
    if amount == 0:
        return "0.00"
    decimals = max(2, 2 - math.floor(math.log10(abs(amount))))
    return f"{amount:,.{decimals}f}"
