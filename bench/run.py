"""`make bench`: the source document's performance table, reproduced against the ideal.

    python -m bench.run              # the full run (~10 minutes), latency mean 2.84 s
    python -m bench.run --quick      # ~3 minutes: latency scaled down, 500 prompts in 2-3, 300 in 6
                                     # (+6 minutes for "scopes": its limits are per minute)
    python -m bench.run --only document,tails --latency 1.0

Offline: a private redis-server (or fakeredis), a SQLite file in a temporary
directory, the project's fake LLM provider and fake Telegram, and a real
``rqworker`` for the pipeline. Writes bench/results/latest.{json,md} and
throughput.png (git-ignored); ``--publish`` also writes bench/README.md and
bench/throughput.png for the project README to show.

Sections other than the first run at latencies scaled by ``--latency`` / 2.84,
never below a floor (0.2-0.25 s) so that the client's own CPU per request does
not become what is measured.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    cache_section,
    chat_section,
    cost_section,
    drain_section,
    harness,
    hotpath_section,
    llm_sections,
    pipeline_section,
    ratelimit_scopes_section,
    report,
)

RESULTS = harness.ROOT / "bench" / "results"
SECTIONS = ("document", "targets", "scaling", "tails", "ratelimit", "scopes", "pipeline",
            "drain", "chats", "cost", "cache", "hotpath")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a ~3-minute run (latency 0.5 s, smaller volumes)")
    parser.add_argument("--latency", type=float, default=None,
                        help="mean latency of section 1 in seconds (default 2.84, quick 0.5)")
    parser.add_argument("--jitter", type=float, default=0.1,
                        help="fixed-latency jitter as a fraction of the mean (uniform ±half)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--rpm", type=int, default=600, help="section 4's rate limit")
    parser.add_argument("--drain-items", type=int, default=None,
                        help="section 7's backlog (default 2000, quick 400)")
    parser.add_argument("--drain-batch", type=int, default=20,
                        help="section 7's batch_size: prompts each run keeps in flight")
    parser.add_argument("--drain-latency", type=float, default=1.0,
                        help="section 7's mean LLM latency in seconds (lognormal, sigma 0.6)")
    parser.add_argument("--drain-rpm", type=int, default=1200,
                        help="section 7's binding rate limit (requests a minute)")
    parser.add_argument("--publish", action="store_true",
                        help="also write bench/README.md and bench/throughput.png")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--postgres", default="", metavar="URL",
                        help="run on a fresh database on this PostgreSQL server (postgres://"
                             "user@host:5432/any) instead of SQLite, as production does")
    args = parser.parse_args(argv)
    args.latency = args.latency or (0.5 if args.quick else llm_sections.DOCUMENT_LATENCY)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    return args


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Latencies and sizes per section, from --latency and --quick."""
    factor = args.latency / llm_sections.DOCUMENT_LATENCY
    one_second = max(0.25, round(1.0 * factor, 3))
    return {
        "document_latency": args.latency, "jitter": args.jitter,
        "targets_latency": one_second,
        "scaling_latency": max(0.2, round(0.5 * factor, 3)),
        "scaling_prompts": 500 if args.quick else 1000,
        "scaling_single_cap": 20 if args.quick else 30,
        "tails_mean": one_second, "tails_prompts": 500 if args.quick else 1000,
        "ratelimit_prompts": 200 if args.quick else 600,
        "pipeline_latency": one_second, "pipeline_items": 50,
        "memory_items": 300 if args.quick else 1000,
        # The drain: lognormal latency, mean 1 s, sigma 0.6, at tick's default interval.
        "drain_items": args.drain_items or (400 if args.quick else 2000),
        "drain_latency": args.drain_latency, "drain_sigma": 0.6, "drain_interval": 5.0,
        "drain_batch": args.drain_batch, "drain_rpm": args.drain_rpm,
        "drain_lockstep_items": 100 if args.quick else 200,
    }


def run_sections(args: argparse.Namespace, services: harness.Services,
                 sizes: dict[str, Any]) -> dict[str, Any]:
    chosen = args.only.split(",")
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "document": lambda: llm_sections.document_table(
            services, sizes["document_latency"], sizes["jitter"]),
        "targets": lambda: llm_sections.fixed_latency_targets(
            services, sizes["targets_latency"]),
        "scaling": lambda: llm_sections.scaling(
            services, sizes["scaling_latency"], sizes["jitter"], sizes["scaling_prompts"],
            sizes["scaling_single_cap"]),
        "tails": lambda: llm_sections.tails(services, sizes["tails_mean"],
                                            sizes["tails_prompts"]),
        "ratelimit": lambda: ratelimit(services, args.rpm, sizes["ratelimit_prompts"]),
        "scopes": lambda: ratelimit_scopes_section.scopes(services, args.quick),
        "pipeline": lambda: pipeline_section.end_to_end(
            services, sizes["pipeline_latency"], sizes["jitter"], sizes["pipeline_items"],
            sizes["memory_items"]),
        "drain": lambda: drain_section.drain(
            services, sizes["drain_items"], sizes["drain_latency"], sizes["drain_sigma"],
            sizes["drain_batch"], sizes["drain_interval"], sizes["drain_lockstep_items"],
            sizes["drain_rpm"]),
        "chats": lambda: chat_section.chats(services, sizes["targets_latency"], args.quick),
        "cost": lambda: cost(services, args.quick),
        "cache": lambda: cache_section.cache_section(services, 200 if args.quick else 400, 8),
        "hotpath": lambda: hotpath_section.hotpath(services, args.quick),
    }
    results: dict[str, Any] = {}
    for name in SECTIONS:
        if name not in chosen:
            continue
        print(f"bench: {name} ...", flush=True)
        started = time.perf_counter()
        # The run's private Redis, emptied: what one section's processes learned (the fake's
        # advertised 600 RPM in section 4, say) must not limit the next section.
        harness.flush_redis(services)
        try:
            results[name] = jobs[name]()
        except Exception:  # one broken section must not hide the others' figures
            traceback.print_exc()
            results.setdefault("errors", {})[name] = traceback.format_exc(limit=3)
            continue
        render = getattr(report, f"section_{name}", None)
        if render is not None:
            print("\n".join(render(results[name])), f"\n({time.perf_counter() - started:.0f} s)\n",
                  flush=True)
    return results


def cost(services: harness.Services, quick: bool) -> dict[str, Any]:
    """Issue 13's cost figures; the report lines are computed here, with the options used."""
    args = cost_section.parse_args(["--items", "400" if quick else "1000"])
    figures = cost_section.run(args, services)
    return {"lines": cost_section.lines(args, figures),
            "ratio": figures["deferrable"]["ratio"], "lost": figures["lost"],
            "duplicates": figures["duplicates"], "late": figures["late"]}


def ratelimit(services: harness.Services, rpm: int, prompts: int) -> dict[str, Any]:
    """Section 4 in a child process, the limit in its environment."""
    env = services.env(LLM_RPM_LIMIT=str(rpm), OPENAI_RPM_LIMIT=str(rpm),
                       LLM_MAX_RETRIES="2", BATCH_MAX_WORKERS="50")
    done = subprocess.run([harness.PYTHON, "-m", "bench.ratelimit_section", "--rpm", str(rpm),
                           "--prompts", str(prompts)], cwd=harness.ROOT, env=env,
                          capture_output=True, text=True, timeout=prompts * 60 / rpm * 3 + 120)
    if done.returncode != 0:
        raise RuntimeError(f"ratelimit section failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write(results: dict[str, Any], publish: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2, default=str)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{stamp}.json").write_text(text)
    table = report.markdown(results)
    (RESULTS / "latest.md").write_text(table)
    report.plot(results, RESULTS / "throughput.png")
    if publish:
        shutil.copyfile(RESULTS / "throughput.png", harness.ROOT / "bench" / "throughput.png")
        (harness.ROOT / "bench" / "README.md").write_text(
            "# Benchmark: the latest published run\n\nProduced by `make bench` "
            "(`python -m bench.run --publish`); the figures of every run are written to "
            "`bench/results/` (git-ignored).\n\n" + table + "\n![throughput](throughput.png)\n")
    return RESULTS


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = plan(args)
    started = time.perf_counter()
    services = harness.start_services(args.postgres)
    try:
        harness.setup_django(services)
        results = run_sections(args, services, sizes)
    finally:
        services.stop()
        if not args.keep:
            services.drop_database()
            shutil.rmtree(services.workdir, ignore_errors=True)
        else:
            print(f"bench: logs kept in {services.workdir}, database at "
                  f"{services.database_url}")
    results["meta"] = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": harness.machine(), "database": services.database_url.split(":", 1)[0],
        "wall_s": round(time.perf_counter() - started, 1),
        "command": "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "plan": sizes,
    }
    out = write(results, args.publish)
    print(f"bench: results in {out}/latest.json, latest.md, throughput.png")
    if "errors" in results:
        raise SystemExit(f"bench: sections failed: {sorted(results['errors'])}")


if __name__ == "__main__":
    main()
