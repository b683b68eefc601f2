"""A plugin loaded with ``-p`` (pyproject's addopts), before pytest-django reads the settings:
under pytest-xdist every worker gets a Redis database of its own, counted down from the one
REDIS_URL names, since the tests flush theirs."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw"):
    _base, _, _db = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15").rpartition("/")
    _n = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    os.environ["REDIS_URL"] = f"{_base}/{int(_db or 15) - 1 - _n}"
