"""Server-side SVG charts (batchgen.charts)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from batchgen import charts

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
