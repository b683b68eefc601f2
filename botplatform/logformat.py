"""One log format for every process: ``timestamp level logger message``, or JSON lines.

The project, RQ's worker (``rq.worker``), ``tick`` and gunicorn's workers all log through
the root handler configured here. RQ adds its own handler only to a logger that has none in
its ancestry, so configuring the root is what keeps its lines in the same format.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: timestamp (UTC, ISO 8601), level, logger,
    message, and the exception's traceback as ``exc_info`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """``settings.LOGGING``: the root handler in ``log_format`` ("plain" or "json")."""
    formatter = ({"()": "botplatform.logformat.JsonFormatter"} if log_format == "json"
                 else {"format": PLAIN_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"project": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "project"}},
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "batchgen": {"level": level},
            "rq": {"level": "INFO"},
            # A 4xx is a WARNING here: with LOG_LEVEL=ERROR a scan or a flood of refused
            # webhook posts wrote a line per request. 5xx answers are ERRORs, always kept.
            "django.request": {"level": level},
        },
    }
