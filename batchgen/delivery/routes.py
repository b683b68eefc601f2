"""Which route a generation takes: now, through the refilling drain, or later, through the
provider batch route at half price when its deadline leaves room and the admin turned it on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from batchgen.llm import batch_api
from batchgen.llm import config as llm_config
from batchgen.models import Setting


def provider_on() -> str | None:
    """The provider whose batch route is on (the configured one, if the admin enabled it)."""
    provider = llm_config.default_provider()
    enabled = Setting.load().batch_route_providers
    return provider if provider in enabled and provider in batch_api.SUPPORTED else None


def hold_after(now: datetime | None = None) -> datetime | None:
    """Deadlines at or after this time wait for the batch route; None when it is off."""
    if provider_on() is None:
        return None
    return (now or timezone.now()) + timedelta(seconds=settings.BATCH_ROUTE_MIN_SLACK_SECONDS)
