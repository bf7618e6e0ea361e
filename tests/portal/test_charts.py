"""The usage charts' SVG builders (apps/portal/charts.py): pure functions, no Django."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from apps.portal.charts import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, Point, _scale_max, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - our own output, not untrusted input; raises unless well formed


def test_one_bar_per_point_heights_proportional_to_the_values():
    points = [Point("00:00", 0), Point("01:00", 5), Point("02:00", 10)]
    root = _parse(bar_chart(points, title="tx per hour", unit="tx"))
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == 3
    heights = [float(r.get("height")) for r in rects]
    plot_h = HEIGHT - TOP - BOTTOM
    assert heights[0] == 0 and heights[2] == plot_h and abs(heights[1] - plot_h / 2) < 0.11
    # bars stand on the axis: y + height is the base line for every bar
    assert {round(float(r.get("y")) + float(r.get("height")), 1) for r in rects} == {float(HEIGHT - BOTTOM)}
    assert [r.find(f"{SVG}title").text for r in rects] == ["00:00: 0 tx", "01:00: 5 tx", "02:00: 10 tx"]
    assert root.get("role") == "img" and root.get("aria-label") == "tx per hour"


def test_bars_are_left_to_right_and_do_not_overlap():
    root = _parse(bar_chart([Point(str(i), i) for i in range(24)], title="t"))
    xs = [(float(r.get("x")), float(r.get("width"))) for r in root.findall(f"{SVG}rect")]
    assert all(x1 + w1 <= x2 for (x1, w1), (x2, _) in itertools.pairwise(xs))


def test_an_all_zero_or_empty_series_still_draws_axes_without_dividing_by_zero():
    zero = _parse(bar_chart([Point("a", 0), Point("b", 0)], title="none"))
    assert [float(r.get("height")) for r in zero.findall(f"{SVG}rect")] == [0, 0]
    empty = _parse(line_chart([], title="empty"))
    assert len(empty.findall(f"{SVG}line")) == 2 and empty.find(f"{SVG}path") is None


def test_the_axis_top_is_a_round_number_at_or_above_the_largest_value():
    assert [_scale_max(v) for v in ([], [0], [1], [3], [7], [10], [11], [180], [999], [1001])] == [
        1, 1, 1, 5, 10, 10, 20, 200, 1000, 2000,
    ]  # fmt: skip


def test_line_chart_passes_through_each_point():
    root = _parse(line_chart([Point("a", 10), Point("b", 0), Point("c", 10)], title="storage", unit="KiB"))
    d = root.find(f"{SVG}path").get("d")
    ys = [float(y) for y in re.findall(r",([0-9.]+)", d)]
    assert ys == [TOP, HEIGHT - BOTTOM, TOP]
    assert len(root.findall(f"{SVG}circle")) == 3


def test_labels_and_titles_are_escaped():
    svg = bar_chart([Point("<script>", 1)], title='a "b" <c>', unit="&")
    _parse(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


@given(st.lists(st.integers(min_value=0, max_value=10**15), max_size=200))
def test_bars_stay_in_the_plot_and_follow_the_order_of_the_values(values):
    root = _parse(bar_chart([Point(f"h{i}", v) for i, v in enumerate(values)], title="t"))
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == len(values)
    heights = [float(r.get("height")) for r in rects]
    for rect, h in zip(rects, heights, strict=True):
        assert TOP - 0.05 <= float(rect.get("y")) and h <= HEIGHT - TOP - BOTTOM + 0.05
        assert LEFT <= float(rect.get("x")) and float(rect.get("x")) + float(rect.get("width")) <= WIDTH - RIGHT + 0.1
    for (a, ha), (b, hb) in itertools.combinations(zip(values, heights, strict=True), 2):
        if a < b:
            assert ha <= hb + 0.1  # a larger value never draws a visibly shorter bar (rounding: 0.1)


def test_a_point_without_reading_is_a_gap_in_the_line_not_a_zero():
    points = [Point("a", 5), Point("b", None), Point("c", 10), Point("d", 10)]
    root = _parse(line_chart(points, title="storage"))
    d = root.find(f"{SVG}path").get("d")
    assert d.count("M") == 2  # two segments: [a] and [c, d]
    assert len(root.findall(f"{SVG}circle")) == 3
    assert str(HEIGHT - BOTTOM) not in d.split("M")[1]  # "a" is not drawn at zero
    assert line_chart([Point("a", None)], title="none").count("<path") == 0
