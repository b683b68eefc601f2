"""Plain-text reports of batch runs for the terminal (demo, operators, benchmark)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from batchgen.models import BatchRun

# No msg/s: a run refills, so its own rate depends on how long it lived, not on how fast the
# platform is (the dashboard's messages-sent-per-minute chart is the throughput view).
COLUMNS = ("batch", "mode", "size", "workers", "status", "sent", "failed", "seconds",
           "mean lat", "p95 lat", "tokens", "cost $")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def batch_rows(runs: Iterable[BatchRun]) -> list[tuple[str, ...]]:
    return [(str(r.id), r.mode, str(r.size), str(r.workers), r.status, str(r.successes),
             str(r.failures), _fmt(r.duration_s, ".2f"),
             _fmt(r.latency_mean_s, ".2f"), _fmt(r.latency_p95_s, ".2f"),
             str(r.prompt_tokens + r.completion_tokens),
             "n/a" if r.cost_usd is None else f"{r.cost_usd:.6f}") for r in runs]


def batch_table(runs: Iterable[BatchRun]) -> str:
    rows = [COLUMNS, *batch_rows(runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def mode_comparison(runs: Iterable[BatchRun]) -> str:
    """One line per mode: batches, messages sent and the batch time they took (no rate, no
    median batch: runs refill, so neither compares the modes)."""
    by_mode: dict[str, list[BatchRun]] = {}
    for run in runs:
        if run.duration_s:
            by_mode.setdefault(run.mode, []).append(run)
    lines = []
    for mode, group in sorted(by_mode.items()):
        sent = sum(r.successes for r in group)
        seconds = sum(r.duration_s or 0.0 for r in group)  # all set: grouped only if so
        lines.append(f"{mode:>9}: {len(group)} batches, {sent} messages sent in "
                     f"{seconds:.2f} s of batch time")
    return "\n".join(lines)


def wait_until_settled(timeout_s: float, poll_s: float = 0.5) -> bool:
    """Wait until no batch is queued or running; False on timeout."""
    deadline = time.monotonic() + timeout_s
    busy = [BatchRun.Status.QUEUED, BatchRun.Status.RUNNING]
    while BatchRun.objects.filter(status__in=busy).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True
