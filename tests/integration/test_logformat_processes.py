"""One log format for the project and RQ: timestamp, level, logger, message; or JSON lines."""

from __future__ import annotations

import json
import re

from tests.processes import manage, process_env

PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) [\w.]+ .+")


def run_burst_worker(settings, **env: str) -> list[str]:
    done = manage(process_env(settings, **env), "rqworker", "--burst", "default")
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def test_rq_worker_lines_carry_timestamp_level_and_logger(settings, redis_url: str) -> None:
    lines = run_burst_worker(settings, LOG_FORMAT="plain")
    assert lines and all(PLAIN_LINE.match(line) for line in lines), lines
    assert any(" INFO rq.worker " in line for line in lines)


def test_log_format_json_gives_one_object_per_line(settings, redis_url: str) -> None:
    lines = run_burst_worker(settings, LOG_FORMAT="json")
    entries = [json.loads(line) for line in lines]
    assert {"timestamp", "level", "logger", "message"} <= set(entries[0])
    assert any(entry["logger"] == "rq.worker" for entry in entries)
    assert all(entry["timestamp"].endswith("+00:00") for entry in entries)
