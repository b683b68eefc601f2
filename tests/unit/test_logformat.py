"""One log format for the project and RQ: timestamp, level, logger, message; or JSON lines."""

from __future__ import annotations

import json
import logging
import sys


def test_json_lines_carry_the_traceback_of_a_logged_exception() -> None:
    from botplatform.logformat import JsonFormatter

    try:
        raise ValueError("bad reply")
    except ValueError:
        record = logging.LogRecord("batchgen.delivery.runs", logging.ERROR, __file__, 1,
                                   "batch %s failed", (7,), exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "batch 7 failed" and entry["level"] == "ERROR"
    assert "ValueError: bad reply" in entry["exc_info"]
