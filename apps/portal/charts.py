"""Usage charts as server-rendered SVG: pure functions from a series to markup.

Hand-written on purpose: a chart library (matplotlib, pygal) would add a heavy dependency
or client-side script for two small charts; the portal ships no JS framework and no CDN.
The markup is plain SVG with a <title> per mark (read by screen readers and shown as a
tooltip) and every text escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 22  # room for the axis labels


@dataclass(frozen=True)
class Point:
    """One bucket: its label (e.g. "14:00") and its value (an integer count)."""

    label: str
    value: int


def _scale_max(values: list[int]) -> int:
    """A round top for the axis, at least 1 (an all-zero series still draws an axis)."""
    top = max(values, default=0)
    if top <= 0:
        return 1
    magnitude = 10 ** (len(str(top)) - 1)
    for step in (1, 2, 5, 10):
        if top <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _frame(title: str, top: int, unit: str, body: list[str], points: list[Point]) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    base = HEIGHT - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 10}" text-anchor="end">{top:,}</text>',
        f'<text x="{LEFT - 4}" y="{base}" text-anchor="end">0</text>',
    ]
    if unit:
        parts.append(f'<text x="2" y="{TOP + 24}">{escape(unit)}</text>')
    if points:
        # First, middle and last bucket labels: enough to read the time axis at 375 px.
        n = len(points)
        for index in sorted({0, n // 2, n - 1}):
            x = LEFT + plot_w * (index + 0.5) / n
            label = escape(points[index].label)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">{label}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(points: list[Point], *, title: str, unit: str = "") -> str:
    """One bar (rect) per point, heights proportional to the values on a 0-based axis."""
    values = [max(0, int(p.value)) for p in points]
    top = _scale_max(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    body = []
    if points:
        slot = plot_w / len(points)
        bar_w = max(1.0, slot * 0.8)
        for index, (point, value) in enumerate(zip(points, values, strict=True)):
            h = plot_h * value / top
            x = LEFT + slot * index + (slot - bar_w) / 2
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(point.label)}: {value:,} {escape(unit)}</title></rect>"
            )
    return _frame(title, top, unit, body, points)


def line_chart(points: list[Point], *, title: str, unit: str = "") -> str:
    """One path through the points (a level line: storage over time)."""
    values = [max(0, int(p.value)) for p in points]
    top = _scale_max(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM
    body = []
    if points:
        slot = plot_w / len(points)
        coords = [(LEFT + slot * (i + 0.5), base - plot_h * v / top) for i, v in enumerate(values)]
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        body.append(f'<path class="line" d="{d}" fill="none"/>')
        for (x, y), point, value in zip(coords, points, values, strict=True):
            body.append(
                f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(point.label)}: {value:,} {escape(unit)}</title></circle>"
            )
    return _frame(title, top, unit, body, points)
