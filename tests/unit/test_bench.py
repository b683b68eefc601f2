"""The benchmark's arithmetic and its report (the figures themselves are printed by
``make bench``, never asserted)."""

from __future__ import annotations

import math

from bench import harness, report, run


def make_measure(**overrides: object) -> dict:
    row = {"label": "x", "prompts": 10, "workers": 10, "seconds": 1.0, "ok": 10,
           "mean_latency_per_message_s": 0.1, "mean_call_latency_s": 1.0,
           "p99_call_latency_s": 1.0, "throughput_msg_s": 10.0, "ideal_throughput_msg_s": 10.0,
           "efficiency": 1.0, "configured_latency_s": 1.0, "speedup": 1.0}
    row.update(overrides)
    return row


def test_the_lognormal_sigma_puts_p99_at_four_times_the_mean() -> None:
    sigma = harness.lognormal_sigma_for_p99(4.0)
    mu = -sigma ** 2 / 2  # mean 1
    assert math.isclose(math.exp(mu + 2.3263 * sigma), 4.0, rel_tol=1e-3)


def test_quick_runs_scale_latencies_down_but_not_below_the_floor() -> None:
    full = run.plan(run.parse_args([]))
    quick = run.plan(run.parse_args(["--quick"]))
    assert full["document_latency"] == 2.84 and full["pipeline_latency"] == 1.0
    assert quick["document_latency"] == 0.5 and quick["pipeline_latency"] == 0.25
    assert full["scaling_prompts"] == 1000 and full["memory_items"] == 1000


def test_the_report_shows_the_document_beside_each_row() -> None:
    rows = [{"workers": w, "label": f"{w} workers", "document_seconds": doc,
             "project": make_measure(workers=w), "bare": make_measure(workers=w)}
            for w, doc in ((1, 28.4), (5, 6.2), (10, 3.8))]
    results = {"meta": {"finished_at": "now", "machine": "test", "command": "bench",
                        "wall_s": 1.0},
               "document": {"latency_mean_s": 2.84, "jitter_fraction": 0.1, "prompts": 10,
                            "rows": rows}}
    text = report.markdown(results)
    assert "| 10 workers |" in text and "7.47×" in text


def test_recovery_after_a_halved_limit_is_when_the_trailing_rate_reaches_085_of_it() -> None:
    from bench.ratelimit_scopes_section import recovery

    # 5 replies a second until 60 s, none for 20 s (the provider refuses), then 2.4 a second.
    done = [i / 5 for i in range(300)] + [80 + i / 2.4 for i in range(240)]
    figures = recovery(done, change=60.0, new_rpm=150)

    # 0.85 * 150/min over 30 s is 64 replies: reached 80 + 64/2.4 s = ~106.7 s in, 47 s after.
    assert figures["recovered_after_s"] == 47.0
    assert 0.94 < figures["fraction_of_new_limit_after_60s"] < 1.0


def test_the_scopes_table_quotes_each_case_against_its_target() -> None:
    from bench.ratelimit_scopes_section import table

    rows = table({"no_headers": {"fraction_429": 0.0164, "lost": 0, "prompts": 360,
                                 "fraction_of_limit": 0.9}})

    assert rows[-1] == "| no_headers | 1.64% (< 5%) | 0 of 360 | 0.9 (>= 0.8) |"


def test_the_cost_section_spreads_seventy_percent_deferrable_evenly() -> None:
    from bench.cost_section import deferrable_flags

    flags = deferrable_flags(1000, 0.7)
    assert sum(flags) == 700
    assert all(sum(flags[i:i + 10]) == 7 for i in range(0, 1000, 10))


def test_the_cost_section_fails_on_a_ratio_above_target_or_a_late_item(capsys) -> None:
    from bench import cost_section

    args = cost_section.parse_args(["--items", "10"])
    costs = {"per_message": 1, "sync_per_message": 2, "ratio": 0.5, "routes": {}}
    figures = {"seconds": 1.0, "deferrable": costs, "urgent": costs, "n_deferrable": 7,
               "n_urgent": 3, "lost": 0, "late": 0, "duplicates": 0, "statuses": {},
               "urgent_p50_s": 0.1, "urgent_p95_s": 0.2, "baseline": None}
    assert cost_section.report(args, figures) == 0
    assert "0.500x (target <= 0.55x)" in capsys.readouterr().out
    assert cost_section.report(args, {**figures, "late": 1}) == 1
    assert cost_section.report(args, {**figures, "deferrable": {**costs, "ratio": 0.6}}) == 1
