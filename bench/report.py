"""Turn the benchmark's results dict into Markdown tables and the throughput plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.llm_sections import DOCUMENT_LATENCY, DOCUMENT_ROWS


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}"


def section_document(data: dict[str, Any]) -> list[str]:
    lines = [f"### 1. The document's table: 10 prompts, latency mean "
             f"{data['latency_mean_s']:.2f} s (uniform ±{data['jitter_fraction'] * 50:.0f}%)",
             "", "| Mode | Total | Latency/msg | Throughput | Speedup | Efficiency | "
             "Bare pool: total | speedup | efficiency | Document: total | speedup |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        p, b, doc = row["project"], row["bare"], row["document_seconds"]
        lines.append(
            f"| {row['label']} | {_f(p['seconds'])} s | {_f(p['mean_latency_per_message_s'])} s"
            f" | {_f(p['throughput_msg_s'])} msg/s | {_f(p['speedup'])}× | "
            f"{_f(p['efficiency'])} | {_f(b['seconds'])} s | {_f(b['speedup'])}× | "
            f"{_f(b['efficiency'])} | {doc} s | {DOCUMENT_ROWS[1] / doc:.2f}× |")
    return lines + ["", "Efficiency = throughput / (min(10, workers) / mean latency). "
                    "Both pools warmed first (threads and connections)."]


def section_targets(data: dict[str, Any]) -> list[str]:
    seq = data["sequential"]
    lines = [f"### 1b. Fixed latency {data['latency_s']:.2f} s (the LLM layer's targets)", "",
             "| Run | Total | × one latency | Speedup vs sequential | Efficiency |",
             "|---|---|---|---|---|",
             f"| sequential 10 (LLMClient loop) | {_f(seq['seconds'], 3)} s | – | 1.00× | "
             f"{_f(seq['efficiency'])} |"]
    for run in data["runs"]:
        lines.append(f"| {run['label']} | {_f(run['seconds'], 3)} s | {_f(run['x_ideal'], 3)}× "
                     f"| {_f(run.get('speedup'))}{'×' if run.get('speedup') else ''} | "
                     f"{_f(run['efficiency'])} |")
    return lines


def section_scaling(data: dict[str, Any]) -> list[str]:
    lines = [f"### 2. Scaling: {data['prompts']} prompts through generate_many_detailed, "
             f"latency {data['latency_s']:.2f} s (±{data['jitter_fraction'] * 50:.0f}%)", "",
             "| Workers | Prompts | Total | Throughput | Ideal | Efficiency | Peak in flight |",
             "|---|---|---|---|---|---|---|"]
    for p in data["points"]:
        lines.append(f"| {p['workers']} | {p['prompts']} | {_f(p['seconds'])} s | "
                     f"{_f(p['throughput_msg_s'])} msg/s | {_f(p['ideal_throughput_msg_s'])} msg/s"
                     f" | {_f(p['efficiency'], 3)} | {p['fake_in_flight_peak']} |")
    return lines + ["", f"1 worker: {data['single_worker_prompts']} prompts (its rate does not "
                    "depend on the count; 1,000 would take 1,000 latencies)."]


def section_tails(data: dict[str, Any]) -> list[str]:
    lines = [f"### 3. Long tails: lognormal mean {data['mean_s']:.2f} s, sigma {data['sigma']}"
             f" (p99 ≈ {data['p99_s']:.2f} s), {data['prompts']} prompts, "
             f"{data['workers']} in flight", "",
             "| Way | Total | Throughput | Ideal | Efficiency | Measured p99 call |",
             "|---|---|---|---|---|---|"]
    names = {"lockstep": "lock-step chunks of 50 (document's batch_in_chunks)",
             "continuous": "continuous pool (generate_many_detailed)"}
    for key, name in names.items():
        r = data[key]
        lines.append(f"| {name} | {_f(r['seconds'])} s | {_f(r['throughput_msg_s'])} msg/s | "
                     f"{_f(r['ideal_throughput_msg_s'])} msg/s | {_f(r['efficiency'], 3)} | "
                     f"{_f(r['p99_call_latency_s'])} s |")
    return lines


def section_ratelimit(data: dict[str, Any]) -> list[str]:
    head = "### 4. At a rate limit"
    return [head, "", f"Fake and client limiter both at {data['rpm_limit']} RPM, "
            f"{data['prompts']} prompts, {data['workers']} workers:", "",
            "| Throughput / limit | Requests | Answered 429 | Failed prompts | Total |",
            "|---|---|---|---|---|",
            f"| {_f(data['fraction_of_limit'], 3)} | {data['requests']} | {data['answered_429']} "
            f"({_f(100 * (data['fraction_429'] or 0), 2)}%) | {data['failed']} | "
            f"{_f(data['seconds'], 1)} s |"]


def section_cost(data: dict[str, Any]) -> list[str]:
    return ["### 8. Cost: deferrable work through the provider Batch API", "",
            *(f"- {line}" for line in data["lines"])]


def section_cache(data: dict[str, Any]) -> list[str]:
    from bench.cache_section import table

    return ["### 9. " + table(data)[0].removeprefix("### "), *table(data)[1:]]


def section_hotpath(data: dict[str, Any]) -> list[str]:
    from bench.hotpath_section import table

    return table(data)


def section_scopes(data: dict[str, Any]) -> list[str]:
    from bench.ratelimit_scopes_section import table

    return ["### 4b. Rate limits as the providers count them (account-wide, advertised, "
            "inferred, halved mid-run)", "", *table(data)]


def _run_row(label: str, r: dict[str, Any], unit: str = "s") -> str:
    return (f"| {label} | {_f(r['seconds'], 3)} s | {_f(r['throughput_msg_s'])} msg/s | "
            f"{_f(r['mean_generation_s'], 3)} {unit} | {_f(r['mean_after_generation_s'], 3)} "
            f"{unit} | {_f(r['first_pickup_s'], 3)} s / {_f(r['mean_pickup_s'], 3)} s |")


def section_pipeline(data: dict[str, Any]) -> list[str]:
    b, s, alone, mem = data["batch"], data["single"], data["generate_alone"], data["memory"]
    lines = [f"### 5. End to end: tick → rqworker → save → send, {data['items']} items, "
             f"latency {data['latency_s']:.2f} s", "",
             "| Run | Total | Throughput | Generate+save+send | Record | Tick → job start "
             "(first / mean) |", "|---|---|---|---|---|---|",
             _run_row("pipeline, batch mode (size 50, 50 workers), PreloadedWorker", b),
             _run_row("same, stock `rqworker` (rq.Worker)", data["stock_worker_batch"]),
             f"| generate_batch alone, warm pool | {_f(alone['warm_s'], 3)} s | – | – | – | – |",
             f"| generate_batch alone, fresh process | {_f(alone['cold_s'], 3)} s | – | – | – "
             "| – |",
             _run_row(f"pipeline, single mode ({s['batches']} jobs), PreloadedWorker", s,
                      "s/job"),
             "", f"Ratio pipeline / generate_batch alone: "
             f"**{data['ratio_vs_warm_generate']:.3f}×** (warm), "
             f"{data['ratio_vs_cold_generate']:.3f}× (fresh process). Batch mode is "
             f"**{data['batch_vs_single_speedup']:.1f}×** faster than single mode. Sent: batch "
             f"{b['sent']}/{b['items']}, single {s['sent']}/{s['items']}; "
             f"errors {b['errors'] or 'none'}. Generate+save+send overlap in the job; "
             "Record = writing the run's figures."]
    small, large = mem["horse_peak_kib_small"], mem["horse_peak_kib_large"]
    lines += ["", "### 6. Memory: peak RSS of the RQ work-horse (VmHWM, sampled every 20 ms)",
              "",
              "| Items | Batches | Work-horse peak | rqworker parent peak |", "|---|---|---|---|",
              f"| {mem['small_items']} | 1 | {_mib(small)} | "
              f"{_mib(mem['worker_parent_peak_kib_small'])} |",
              f"| {mem['large_items']} | {mem['large_run']['batches']} | {_mib(large)} | "
              f"{_mib(mem['worker_parent_peak_kib_large'])} |",
              "", f"Ratio {mem['large_items']} / {mem['small_items']} items: "
              f"**{(large / small if small and large else float('nan')):.3f}×** "
              f"({mem['large_run']['sent']}/{mem['large_items']} sent in "
              f"{_f(mem['large_run']['seconds'], 1)} s)."]
    return lines


def _mib(kib: int | None) -> str:
    return "–" if not kib else f"{kib / 1024:.1f} MiB"


def _drain_row(label: str, r: dict[str, Any], against: str = "ceiling") -> str:
    bound = r["limit_msg_s"] if against == "limit" else r["ceiling_msg_s"]
    sizes = "/".join(map(str, r["run_sizes"]))
    total = r["throughput_msg_s"] / bound
    ideal = r.get(f"ideal_vs_{against}")
    vs_ideal = f"{ideal:.2f} / **{total / ideal:.2f}**" if ideal else "— / —"
    return (f"| {label} | {r['items']} | {r['workers']} × {r['in_flight']} | "
            f"{_f(r['seconds'], 1)} s | {_f(r['first_send_s'], 1)} s | "
            f"{_f(r['throughput_msg_s'], 1)} msg/s | "
            f"{_f(r['steady_msg_s'], 1)} msg/s | {_f(bound, 1)} msg/s ({against}) | "
            f"**{total:.2f}** / {r['steady_msg_s'] / bound:.2f} | {vs_ideal} | "
            f"{r['lost']} / {r['duplicates']} | {r['runs']} ({sizes}) |")


def section_drain(data: dict[str, Any]) -> list[str]:
    two, four = data["refilling"]
    lock, limited = data["lockstep"], data["rate_limited"]
    speedup = two["throughput_msg_s"] / lock["throughput_msg_s"]
    lines = [f"### 7. Drain: a backlog through real `tick --loop` and `rqworker`s, latency "
             f"lognormal mean {data['latency_mean_s']:.2f} s σ {data['sigma']}, batch_size "
             f"{data['batch_size']}, tick interval {data['interval_s']:.0f} s", "",
             "| Design | Items | Workers × in flight | Total | First send | Throughput | "
             "Steady | Bound | Ratio (total / steady) | Ideal / ours vs ideal | "
             "Lost / duplicates | Runs (min/median/max size) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|",
             _drain_row("refilling runs", two), _drain_row("refilling runs", four),
             _drain_row("lock-step, one batch per tick (before)", lock),
             _drain_row(f"refilling, rate limit {limited['rate_limit_rpm']} rpm binds", limited,
                        "limit"),
             "", f"A high-priority item pushed a third of the way into the 2-worker drain reached "
             f"Telegram after **{_f(two.get('priority_item_s'), 2)} s** (target: interval + 2 × "
             f"mean latency = {_f(two.get('priority_target_s'), 1)} s). Refilling against "
             f"lock-step at the same size: **{speedup:.1f}×**. Total runs from the moment the "
             f"backlog lands (so it includes the wait for the "
             f"next tick); steady runs from the first send to the last. Ceiling = workers × "
             f"in flight / mean latency. Ideal: a perfect pool of the same slots on the same "
             f"backlog and latency, simulated (a finite backlog ramps up and ends on the slow "
             f"tail, so even it stays under the ceiling); for the rate limit, the limiter's own "
             f"schedule (its burst, then a steady rate kept under the limit in any 60 s)."]
    return lines


def section_chats(data: dict[str, Any]) -> list[str]:
    multi, fresh, burst, kill = (data["multibot"], data["freshness"], data["burst"],
                                 data["kill"])
    return [f"### Chats: chat-aware delivery where Telegram's pacing binds (real `tick --loop` "
            f"and `rqworker`s, LLM latency {data['latency_s']:.2f} s)", "",
            "| Scenario | Figure | Target | Result |", "|---|---|---|---|",
            f"| 3 bots in one group, {multi['items_per_bot']} items each | "
            f"{multi['group_per_minute']:.1f} msgs/min (per bot "
            f"{', '.join(f'{r:.1f}' for r in multi['per_bot_per_minute'])}) | "
            f"{multi['telegram_allows']} (3 × 20) | ratio {multi['ratio']:.2f} |",
            f"| freshness, {fresh['items']} items, {fresh['groups']} groups × "
            f"{fresh['bots_per_group']} bots | sent − generated p50 {fresh['p50_s']:.2f} s, "
            f"p95 **{fresh['p95_s']:.2f} s** | ≤ {fresh['target_s']:.2f} s | "
            f"{'met' if fresh['met'] else 'MISSED'} |",
            f"| burst: {burst['messages']} human messages in {burst['seconds']:.0f} s, 3 bots | "
            f"**{burst['llm_calls']} LLM calls**, {burst['replies_sent']} replies | ≤ "
            f"{burst['capacity_plus_3']} (what the group can take + 3) | "
            f"{'met' if burst['met'] else 'MISSED'}; every bot replied: "
            f"{'yes' if burst['every_bot_replied'] else 'no'} |",
            f"| work-horses killed while {kill.get('waiting_at_kill', '?')} replies waited for "
            f"their slot ({kill.get('claimed_at_kill', '?')} items claimed), {kill['items']} "
            f"items, 5 bots, one group | {kill['delivered_once']} delivered once, "
            f"{kill['lost']} lost, {kill['sent_twice']} sent twice, {kill['send_unknown']} "
            f"send_unknown | 0 lost, 0 twice, unknown ≤ 1 | the killed run's first item out "
            f"{kill.get('first_back_s', float('nan')):.1f} s after the restart (lease 10 s); "
            f"all {kill['seconds_after_restart']:.0f} s, at 20 a minute per bot |"]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"## Benchmark ({meta['finished_at']})", "", f"Machine: {meta['machine']}. "
             f"Command: `{meta['command']}`. Wall time {meta['wall_s']:.0f} s.", ""]
    for key, render in (("document", section_document), ("targets", section_targets),
                        ("scaling", section_scaling), ("tails", section_tails),
                        ("ratelimit", section_ratelimit), ("scopes", section_scopes),
                        ("pipeline", section_pipeline), ("drain", section_drain),
                        ("chats", section_chats),
                        ("cost", section_cost), ("cache", section_cache),
                        ("hotpath", section_hotpath)):
        if key in results:
            lines += render(results[key]) + [""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: the document's table (10 prompts); right: scaling to 1,000 prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ("document", "scaling", "drain") if key in results] or ["document"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key in results:
            {"document": _plot_document, "scaling": _plot_scaling,
             "drain": _plot_drain}[key](ax, results[key])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_document(ax: Any, data: dict[str, Any]) -> None:
    latency = data["latency_mean_s"]
    scale = DOCUMENT_LATENCY / latency  # the document's points, at this run's latency
    workers = [r["workers"] for r in data["rows"]]
    xs = list(range(1, 11))
    ax.plot(xs, [min(10, w) / latency for w in xs], "k--", label="ideal min(10, w) / latency")
    ax.plot(workers, [r["project"]["throughput_msg_s"] for r in data["rows"]], "o-",
            label="this project")
    ax.plot(workers, [r["bare"]["throughput_msg_s"] for r in data["rows"]], "s:",
            label="bare ThreadPoolExecutor")
    doc = [10 / DOCUMENT_ROWS[w] * scale for w in workers]
    ax.plot(workers, doc, "x", markersize=10, mew=2,
            label="source document" + ("" if abs(scale - 1) < 1e-6 else " (scaled)"))
    ax.set(title=f"10 prompts, mean latency {latency:.2f} s", xlabel="workers",
           ylabel="throughput (messages/s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_scaling(ax: Any, data: dict[str, Any]) -> None:
    points = data["points"]
    workers = [p["workers"] for p in points]
    ax.plot([1, max(workers)], [1 / data["latency_s"], max(workers) / data["latency_s"]], "k--",
            label="ideal workers / latency")
    ax.plot(workers, [p["throughput_msg_s"] for p in points], "o-",
            label="generate_many_detailed")
    for p in points:
        ax.annotate(f"{p['efficiency']:.2f}", (p["workers"], p["throughput_msg_s"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set(title=f"{data['prompts']} prompts, latency {data['latency_s']:.2f} s "
           "(labels: efficiency)", xlabel="workers", ylabel="throughput (messages/s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_drain(ax: Any, data: dict[str, Any]) -> None:
    two, four = data["refilling"]
    lock, limited = data["lockstep"], data["rate_limited"]
    labels = ["lock-step\n2 workers", "refilling\n2 workers", "refilling\n4 workers",
              f"refilling, 4 w.\n{limited['rate_limit_rpm']} rpm"]
    rows = [lock, two, four, limited]
    bounds = [r["ceiling_msg_s"] for r in rows[:3]] + [limited["limit_msg_s"]]
    xs = range(len(rows))
    ax.bar(xs, bounds, color="#dddddd", label="ceiling (or the rate limit)")
    ax.bar(xs, [r["throughput_msg_s"] for r in rows], width=0.5, label="measured")
    for x, r, bound in zip(xs, rows, bounds, strict=True):
        ax.annotate(f"{r['throughput_msg_s'] / bound:.2f}", (x, r["throughput_msg_s"]),
                    textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set(title=f"drain of {two['items']} items, latency {data['latency_mean_s']:.1f} s; "
           f"priority item {two.get('priority_item_s', 0):.1f} s",
           ylabel="messages/s")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
