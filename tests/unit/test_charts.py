"""Server-side SVG charts (batchgen.dashboard.charts)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from batchgen.dashboard import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse_svg(html: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg.*</svg>", html, re.S).group(0))


def test_line_chart_has_title_axis_labels_and_a_tooltip_per_point() -> None:
    html = charts.line_chart("Throughput", ["#1", "#2", "#3"],
                             [charts.Series("throughput", [1.0, 2.5, 4.0])],
                             x_label="batch", y_label="messages / s", unit=" msg/s")

    svg = parse_svg(html)
    tips = [c.find(f"{SVG}title").text for c in svg.iter(f"{SVG}circle")]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "<figcaption>Throughput</figcaption>" in html
    assert tips == ["#1 — throughput: 1 msg/s", "#2 — throughput: 2.5 msg/s",
                    "#3 — throughput: 4 msg/s"]
    assert "batch" in texts and "messages / s" in texts
    assert len(list(svg.iter(f"{SVG}polyline"))) == 1


def test_a_missing_value_breaks_the_line_instead_of_dropping_to_zero() -> None:
    html = charts.line_chart("Latency", ["a", "b", "c", "d", "e"],
                             [charts.Series("p95", [1.0, 2.0, None, 3.0, 4.0])],
                             x_label="batch", y_label="s")

    svg = parse_svg(html)
    assert len(list(svg.iter(f"{SVG}polyline"))) == 2
    assert len(list(svg.iter(f"{SVG}circle"))) == 4


def test_stacked_bars_stack_each_series_with_tooltips() -> None:
    html = charts.stacked_bar_chart(
        "Outcomes", ["#1", "#2"],
        [charts.Series("successes", [8, 10], "ok"), charts.Series("failures", [2, 0], "bad")],
        x_label="batch", y_label="items")

    rects = list(parse_svg(html).iter(f"{SVG}rect"))
    tips = [r.find(f"{SVG}title").text for r in rects]
    assert tips == ["#1 — successes: 8", "#1 — failures: 2", "#2 — successes: 10",
                    "#2 — failures: 0"]
    success, failure = rects[0], rects[1]
    # The failure bar sits directly on top of the success bar.
    assert float(failure.get("y")) + float(failure.get("height")) == float(success.get("y"))


def test_unknown_bar_values_are_marked_na_not_zero() -> None:
    html = charts.bar_chart("Cost", ["05-01", "05-02"], [0.5, None], series_name="cost",
                            x_label="day", y_label="USD")

    svg = parse_svg(html)
    assert len(list(svg.iter(f"{SVG}rect"))) == 1
    assert "05-02 — cost: unknown" in html


def test_no_data_gives_a_titled_empty_state() -> None:
    for html in (charts.line_chart("Throughput", [], [charts.Series("t", [])],
                                   x_label="batch", y_label="msg/s"),
                 charts.bar_chart("Cost", ["05-01"], [None], series_name="cost",
                                  x_label="day", y_label="USD")):
        assert "No data yet" in html and "<svg" not in html
        assert "<figcaption>" in html


def test_labels_are_escaped() -> None:
    html = charts.line_chart("<b>x</b>", ["<script>"], [charts.Series("s&p", [1.0])],
                             x_label="a", y_label="b")

    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "s&amp;p" in html


def test_nice_ceiling_rounds_up_to_a_readable_axis_top() -> None:
    assert [charts.nice_ceiling(v) for v in (0, 0.7, 3.2, 7, 23, 240)] == [
        1.0, 1.0, 5.0, 10.0, 25.0, 250.0]


def tick_texts(html: str) -> list[str]:
    return [t.text for t in parse_svg(html).iter(f"{SVG}text") if t.get("class") == "tick"]


def test_count_axes_have_whole_number_ticks_only() -> None:
    html = charts.stacked_bar_chart(
        "Outcomes", ["#1", "#2"],
        [charts.Series("successes", [3, 10], "ok"), charts.Series("failures", [0, 0], "bad")],
        x_label="batch", y_label="items", integer=True)

    y_ticks = tick_texts(html)[:charts.Y_TICKS + 1]
    assert all(float(t).is_integer() for t in y_ticks), y_ticks
    assert y_ticks == ["0", "3", "6", "9", "12"]


def test_a_single_item_batch_still_gets_whole_number_ticks() -> None:
    html = charts.stacked_bar_chart("Items", ["#1"], [charts.Series("ok", [1], "ok")],
                                    x_label="batch", y_label="items", integer=True)

    assert tick_texts(html)[:5] == ["0", "1", "2", "3", "4"]


def test_a_log_axis_keeps_a_batch_of_one_and_one_of_thousands_readable() -> None:
    html = charts.line_chart("Throughput", ["#1", "#2", "#3"],
                             [charts.Series("throughput", [0.8, 35.0, 900.0])],
                             x_label="batch", y_label="msg/s", log=True)

    svg = parse_svg(html)
    ys = [float(c.get("cy")) for c in svg.iter(f"{SVG}circle")]
    assert tick_texts(html)[:5] == ["0.1", "1", "10", "100", "1,000"]
    # On a linear axis 0.8 and 35 would sit within 5% of the plot's height of each other.
    assert ys[0] - ys[1] > 0.3 * (charts.HEIGHT - charts.TOP - charts.BOTTOM)


def test_a_log_axis_breaks_the_line_at_zero_instead_of_failing() -> None:
    html = charts.line_chart("Throughput", ["#1", "#2", "#3"],
                             [charts.Series("throughput", [2.0, 0.0, 3.0])],
                             x_label="batch", y_label="msg/s", log=True)

    assert len(list(parse_svg(html).iter(f"{SVG}circle"))) == 2


def test_series_tooltips_can_carry_their_own_text() -> None:
    html = charts.stacked_bar_chart(
        "Outcomes", ["#1"], [charts.Series("successes", [80.0], "ok", tips=["80% (8 of 10)"])],
        x_label="batch", y_label="% of items")

    assert "#1 — successes: 80% (8 of 10)" in html


def test_every_series_is_named_in_the_legend_with_its_style() -> None:
    html = charts.line_chart("Latency", ["#1"], [charts.Series("mean", [1.0], "s1"),
                                                 charts.Series("p95", [2.0], "s2")],
                             x_label="batch", y_label="s")

    assert '<span class="key s1">mean</span>' in html and '<span class="key s2">p95</span>' in html


def test_linear_ticks_are_round_numbers() -> None:
    for peak, expected in ((0.45, ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]),
                           (1.7, ["0", "0.5", "1", "1.5", "2"]),
                           (0.08, ["0", "0.02", "0.04", "0.06", "0.08", "0.1"])):
        html = charts.line_chart("Latency", ["#1"], [charts.Series("p95", [peak])],
                                 x_label="batch", y_label="s")
        assert tick_texts(html)[:len(expected)] == expected, peak


def test_tiny_and_huge_axis_labels_stay_short_enough_for_a_phone() -> None:
    assert [charts.tick_label(v) for v in (0.000005, 0.000015, 0.000123, 0.00002, 0.25,
                                           1_000_000)] == [
        "5e-6", "1.5e-5", "0.00012", "0.00002", "0.25", "1e6"]
