"""Cost section: work that can wait through the provider Batch API, against the fake.

    python -m bench.cost_section [--items 1000] [--deferrable 0.7] [--turnaround 5]

A backlog of ``--items`` lands at once, ``--deferrable`` of it with a deadline two hours
away (a cadence post) and the rest urgent (a reply to a person), with the batch route on for
OpenAI. Real ``tick --loop`` and ``rqworker`` processes drain it; the fake finishes each
provider batch ``--turnaround`` seconds after it was created. Figures, from the usage the
fake returned (the Generation rows) and the price table:

- cost per deferrable message against the same usage at the synchronous price (target
  ≤ 0.55×), and the urgent messages' cost per message for comparison;
- deferrable items sent after their deadline (target 0), lost items (not sent) and
  duplicate sends (a chat that got two messages; every item has its own chat), counted at
  the fake Telegram;
- time from landing to send for the urgent items (p50, p95), against a second run of the
  same backlog with the batch route off (``--no-baseline`` skips it).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from bench.drain_section import _backlog, _reset_telegram, _start_processes, stop_processes
from bench.harness import configure_fake, fake_llm, percentile, setup_django, start_services
from bench.pipeline_section import set_mode

# rqworker runs the deploy checks (DEBUG is off in the harness): values that pass them.
DEPLOY_CHECKS = {"SECRET_KEY": "bench-" + "k" * 60, "METRICS_TOKEN": "bench-metrics-" + "t" * 30}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--deferrable", type=float, default=0.7)
    parser.add_argument("--turnaround", type=float, default=5.0,
                        help="seconds the fake takes to finish a provider batch")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="sync reply latency (s)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the second run with the batch route off")
    return parser.parse_args(argv)


def deferrable_flags(count: int, share: float) -> list[bool]:
    """``share`` of ``count`` items can wait, spread evenly among the urgent ones."""
    waiting = round(share * count)  # integers: no float rounding moves an item
    return [(n + 1) * waiting // count > n * waiting // count for n in range(count)]


def _land(backlog: tuple[list, list], deferrable: float) -> tuple[list[int], list[int]]:
    """Deferrable items spread evenly among the urgent ones; returns (deferrable, urgent)."""
    from django.utils import timezone

    from batchgen.models import QueueItem
    from batchgen.work import queue

    bots, chats = backlog
    deadline = timezone.now() + timedelta(hours=2)
    waits = deferrable_flags(len(chats), deferrable)
    rows = QueueItem.objects.bulk_create(
        QueueItem(bot=bots[n % len(bots)], chat=chat, recent_messages=["Dolar ne olur?"],
                  deliver_by=deadline if waits[n] else None)
        for n, chat in enumerate(chats))
    queue.nudge()
    return ([r.id for r, w in zip(rows, waits, strict=True) if w],
            [r.id for r, w in zip(rows, waits, strict=True) if not w])


def _wait(ids: list[int], timeout: float) -> None:
    from batchgen.models import QueueItem

    end = time.monotonic() + timeout
    while QueueItem.objects.filter(id__in=ids).exclude(status__in=["done", "dead"]).exists():
        if time.monotonic() > end:
            print(f"timed out after {timeout:.0f}s; figures are for what settled")
            return
        time.sleep(0.5)


def _costs(ids: list[int]) -> dict[str, Any]:
    """What the items' generations cost as billed (batch price for route=batch) and what
    the same usage costs at the synchronous price."""
    from batchgen.core import pricing
    from batchgen.models import Generation

    billed, sync, routes = Decimal(0), Decimal(0), Counter()
    for g in Generation.objects.filter(queue_item_id__in=ids):
        args = (g.model, g.prompt_tokens, g.cached_tokens, g.completion_tokens)
        billed += pricing.cost(*args, route=g.route) or Decimal(0)
        sync += pricing.cost(*args) or Decimal(0)
        routes[g.route] += 1
    n = max(len(ids), 1)
    return {"per_message": billed / n, "sync_per_message": sync / n,
            "ratio": float(billed / sync) if sync else None, "routes": dict(routes)}


def _deliveries(services: Any, deferrable: list[int], urgent: list[int],
                landed: Any) -> dict[str, Any]:
    from batchgen.models import Message, QueueItem

    every = deferrable + urgent
    sent = {m.queue_item_id: m for m in Message.objects.filter(queue_item_id__in=every,
                                                                status="sent")}
    deadlines = dict(QueueItem.objects.filter(id__in=deferrable)
                     .values_list("id", "deliver_by"))
    late = sum(1 for i in deferrable if i in sent and sent[i].sent_at > deadlines[i])
    at_telegram = Counter(m["chat_id"] for m in httpx.get(
        f"{services.telegram_url}/_messages", timeout=30).raise_for_status().json())
    waits = [(sent[i].sent_at - landed).total_seconds() for i in urgent if i in sent]
    return {"lost": len(every) - len(sent), "late": late,
            "duplicates": sum(n - 1 for n in at_telegram.values() if n > 1),
            "statuses": dict(Counter(QueueItem.objects.filter(id__in=every)
                                     .values_list("status", flat=True))),
            "urgent_p50_s": percentile(waits, 0.5), "urgent_p95_s": percentile(waits, 0.95)}


def run(args: argparse.Namespace, services: Any = None) -> dict[str, Any]:
    """The section; with ``services`` (``make bench``'s) it runs on them and leaves them up."""
    from django.core.management import call_command

    own = services is None
    if own:
        services = start_services()
    try:
        if own:
            setup_django(services)
        call_command("migrate", verbosity=0)
        configure_fake(services, latency=args.latency)
        fake_llm(services, "/_batches", {"turnaround": args.turnaround})
        set_mode(True, args.batch_size)
        figures = _phase(services, args, ["openai"])
        # The same backlog with the route off: what urgent items took before it existed.
        figures["baseline"] = _phase(services, args, []) if args.baseline else None
        return figures
    finally:
        if own:
            services.stop()


def _phase(services: Any, args: argparse.Namespace, providers: list[str]) -> dict[str, Any]:
    from django.utils import timezone

    from batchgen.models import Setting

    Setting.objects.update_or_create(key="batch_route_providers",
                                     defaults={"value": providers})
    backlog = _backlog(args.items)
    _reset_telegram(services)
    procs = _start_processes(services, args.workers, args.batch_size, True, 1.0,
                             BATCH_ROUTE_MIN_SLACK_SECONDS="600",
                             BATCH_ROUTE_FALLBACK_SECONDS="60", **DEPLOY_CHECKS)
    try:
        landed = timezone.now()
        deferrable, urgent = _land(backlog, args.deferrable)
        _wait(deferrable + urgent, timeout=600)
        seconds = (timezone.now() - landed).total_seconds()
    finally:
        stop_processes(procs)
    return {"seconds": seconds, "deferrable": _costs(deferrable), "urgent": _costs(urgent),
            "n_deferrable": len(deferrable), "n_urgent": len(urgent),
            **_deliveries(services, deferrable, urgent, landed)}


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f}s"


def lines(args: argparse.Namespace, figures: dict[str, Any]) -> list[str]:
    """The section's figures as report lines (``make bench`` and ``python -m``)."""
    deferrable, urgent = figures["deferrable"], figures["urgent"]
    ratio = deferrable["ratio"]
    out = [
        f"cost: {args.items} items ({figures['n_deferrable']} deferrable, "
        f"{figures['n_urgent']} urgent), provider batch turnaround {args.turnaround:g}s, "
        f"all settled in {figures['seconds']:.1f}s",
        f"deferrable: ${deferrable['per_message']:.8f}/message billed vs "
        f"${deferrable['sync_per_message']:.8f} at the sync price = "
        f"{ratio:.3f}x (target <= 0.55x); routes {deferrable['routes']}"
        if ratio is not None else "deferrable: no cost (model not in LLM_PRICES)",
        f"urgent: ${urgent['per_message']:.8f}/message; routes {urgent['routes']}; "
        f"landing to send p50 {_s(figures['urgent_p50_s'])}, p95 {_s(figures['urgent_p95_s'])}",
        f"deferrable sent after their deadline: {figures['late']}; lost: {figures['lost']}; "
        f"duplicate sends at Telegram: {figures['duplicates']}; statuses "
        f"{figures['statuses']}"]
    base = figures["baseline"]
    if base:
        out.append(f"baseline, batch route off (same backlog, same run): urgent landing to "
                   f"send p50 {_s(base['urgent_p50_s'])}, p95 {_s(base['urgent_p95_s'])}; all "
                   f"settled in {base['seconds']:.1f}s; deferrable "
                   f"${base['deferrable']['per_message']:.8f}/message; lost {base['lost']}, "
                   f"duplicates {base['duplicates']}")
    return out


def report(args: argparse.Namespace, figures: dict[str, Any]) -> int:
    print("\n".join(lines(args, figures)))
    ratio = figures["deferrable"]["ratio"]
    ok = (ratio is not None and ratio <= 0.55 and figures["late"] == 0
          and figures["lost"] == 0 and figures["duplicates"] == 0)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return report(args, run(args))


if __name__ == "__main__":
    raise SystemExit(main())
