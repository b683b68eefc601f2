"""The registry ``/metrics`` exposes: this process's, or every gunicorn worker's summed.

Under gunicorn (``gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR``) prometheus_client
keeps each worker's counters in files; a scrape must read them all through a
``MultiProcessCollector`` on a fresh registry, never the default one, which holds only the
answering worker's view. The health gauges are computed at scrape time and join either way.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from batchgen.dashboard.health import HealthCollector


@functools.cache
def scrape_registry() -> CollectorRegistry:
    """The registry to pass to ``generate_latest`` for ``/metrics`` (built once per process)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    registry.register(HealthCollector())
    return registry
